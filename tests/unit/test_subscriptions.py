"""Subscriptions and event reports (PS3.4 CC.2.3/CC.2.4) on the real service and store, and their REST routes."""

from __future__ import annotations

import orjson
import pytest

from ai_orchestrator.http.messages import Request
from ai_orchestrator.http.workitems import WorkitemsApi
from ai_orchestrator.manager.subscriptions import SubscribeRequest, SubscriptionService
from ai_orchestrator.store.subscriptions import SubscriptionStore
from ai_orchestrator.ups.errors import UPSError
from ai_orchestrator.ups.events import FILTERED_WORKLIST_UID, GLOBAL_WORKLIST_UID, EventType
from ai_orchestrator.ups.sample import completion_attributes, sample_workitem

GLOBAL = GLOBAL_WORKLIST_UID


@pytest.fixture
def reports(store) -> SubscriptionStore:
    return SubscriptionStore(store, max_pending=5)


@pytest.fixture
def subscriptions(reports, service) -> SubscriptionService:
    return SubscriptionService(reports, service)


def _events(reports: SubscriptionStore, ae: str) -> list[tuple[int, str, str | None]]:
    """(event type, workitem UID, state) of each report waiting for ``ae``, in order."""
    out = []
    for pending in reports.pending(ae, limit=1000):
        report = pending.report
        out.append((report["00001002"]["Value"][0], report["00001000"]["Value"][0],
                    report.get("00741000", {}).get("Value", [None])[0]))
    return out


def test_a_global_subscriber_gets_state_reports_of_existing_and_new_workitems(service, subscriptions, reports):
    old = service.create(sample_workitem()).uid
    subscriptions.subscribe(SubscribeRequest(GLOBAL, "WATCHER"))
    new = service.create(sample_workitem(patient_id="P2")).uid
    service.claim(new, "1.2.3.4")
    service.change_state(new, "COMPLETED", "1.2.3.4", completion_attributes())
    assert _events(reports, "WATCHER") == [
        (EventType.STATE_REPORT, old, "SCHEDULED"),
        (EventType.STATE_REPORT, new, "SCHEDULED"),
        (EventType.STATE_REPORT, new, "IN PROGRESS"),
        (EventType.STATE_REPORT, new, "COMPLETED"),
    ]


def test_reports_carry_the_command_attributes(service, subscriptions, reports):
    uid = service.create(sample_workitem()).uid
    subscriptions.subscribe(SubscribeRequest(uid, "ONE"))
    [pending] = reports.pending("ONE")
    assert pending.report["00000002"]["Value"] == ["1.2.840.10008.5.1.4.34.6.4"]
    assert pending.report["00001000"]["Value"] == [uid]
    assert pending.report["00404041"]["Value"] == ["READY"]


def test_one_workitem_subscription_sees_progress_and_cancel_requests_of_that_item_only(service, subscriptions,
                                                                                        reports):
    mine, other = service.create(sample_workitem()).uid, service.create(sample_workitem()).uid
    subscriptions.subscribe(SubscribeRequest(mine, "PERFORMER"))
    for uid in (mine, other):
        service.claim(uid, "1.2.9")
        service.report_progress(uid, "1.2.9", 50, "half way")
        service.request_cancel(uid)
    assert [(kind, uid) for kind, uid, _ in _events(reports, "PERFORMER")] == [
        (EventType.STATE_REPORT, mine), (EventType.STATE_REPORT, mine),
        (EventType.PROGRESS_REPORT, mine), (EventType.CANCEL_REQUESTED, mine)]


def test_a_filtered_subscription_covers_matching_workitems_only(service, subscriptions, reports):
    subscriptions.subscribe(SubscribeRequest(FILTERED_WORKLIST_UID, "LUNGS", filter={"ProcedureStepLabel": "Lungs"}))
    lungs = service.create(sample_workitem(label="Lungs")).uid
    service.create(sample_workitem(label="Liver"))
    assert [uid for _, uid, _ in _events(reports, "LUNGS")] == [lungs]


@pytest.mark.parametrize("request_", [
    SubscribeRequest(FILTERED_WORKLIST_UID, "X"),  # a filter needs match keys
    SubscribeRequest(FILTERED_WORKLIST_UID, "X", filter={"NoSuchKeyword": "1"}),
    SubscribeRequest(GLOBAL, "X", filter={"PatientID": "1"}),  # keys need the filtered worklist
    SubscribeRequest(GLOBAL, "A" * 17),
    SubscribeRequest(GLOBAL, "BACK\\SLASH"),
    SubscribeRequest(GLOBAL, "BELL\x07"),
    SubscribeRequest(GLOBAL, "   "),
])
def test_bad_subscriptions_are_400_and_change_nothing(subscriptions, reports, request_):
    with pytest.raises(UPSError) as raised:
        subscriptions.subscribe(request_)
    assert raised.value.http_status == 400
    assert reports.subscriber_titles() == []


def test_unknown_workitem_is_404_and_unsubscribing_what_was_never_subscribed_is_404(subscriptions):
    for call in (lambda: subscriptions.subscribe(SubscribeRequest("1.2.3.999", "X")),
                 lambda: subscriptions.unsubscribe("1.2.3.999", "X"),
                 lambda: subscriptions.suspend(GLOBAL, "X")):
        with pytest.raises(UPSError) as raised:
            call()
        assert raised.value.http_status == 404


def test_global_unsubscribe_ends_every_subscription_and_suspend_keeps_the_covered_items(service, subscriptions,
                                                                                        reports):
    first = service.create(sample_workitem()).uid
    subscriptions.subscribe(SubscribeRequest(GLOBAL, "KEEPER"))
    subscriptions.suspend(GLOBAL, "KEEPER")
    service.create(sample_workitem())  # not covered: suspended
    service.claim(first, "1.2.5")  # covered before the suspension
    assert [(uid, state) for _, uid, state in _events(reports, "KEEPER")] == [
        (first, "SCHEDULED"), (first, "IN PROGRESS")]
    subscriptions.subscribe(SubscribeRequest(GLOBAL, "LEAVER"))
    subscriptions.unsubscribe(GLOBAL, "LEAVER")
    before = reports.pending_count("LEAVER")
    service.report_progress(first, "1.2.5", 10, "still going")
    assert reports.pending_count("LEAVER") == before


def test_kept_reports_are_bounded_per_subscriber_oldest_first(service, subscriptions, reports, store):
    uid = service.create(sample_workitem()).uid
    subscriptions.subscribe(SubscribeRequest(uid, "AWAY"))
    service.claim(uid, "1.2.6")
    for percent in range(10):
        service.report_progress(uid, "1.2.6", percent, f"{percent} %")
    kept = reports.pending("AWAY")
    assert len(kept) == 5  # the bound of this store
    last = kept[-1].report["00741002"]["Value"][0]["00741004"]["Value"][0]
    assert last == 9  # the newest kept, the oldest dropped
    # nobody acknowledged anything: the dropped reports' texts went with them
    assert store.reading().execute("SELECT COUNT(*) FROM event_reports").fetchone()[0] == 5


def test_acknowledged_reports_are_gone_and_release_the_deletion_lock(service, subscriptions, reports, clock):
    from datetime import timedelta

    uid = service.create(sample_workitem()).uid
    subscriptions.subscribe(SubscribeRequest(GLOBAL, "LOCKER", deletion_lock=True))
    service.claim(uid, "1.2.7")
    service.change_state(uid, "COMPLETED", "1.2.7", completion_attributes())
    clock.advance(timedelta(days=10))
    assert service.purge_final(clock.now) == 0  # the final report was not delivered yet
    last = reports.pending("LOCKER")[-1].id
    reports.acknowledge("LOCKER", last)
    assert reports.pending("LOCKER") == []
    assert service.purge_final(clock.now) == 1


def test_a_report_is_kept_once_for_all_its_subscribers_until_the_last_has_it(service, subscriptions, reports,
                                                                            store):
    for ae in ("FIRST", "SECOND", "THIRD"):
        subscriptions.subscribe(SubscribeRequest(GLOBAL, ae))
    uid = service.create(sample_workitem()).uid
    stored = store.reading().execute("SELECT COUNT(*) FROM event_reports").fetchone()[0]
    assert stored == 1  # the State Report of the new workitem, once for the three
    rows = reports.since(0)
    assert [ae for ae, _ in rows] == ["FIRST", "SECOND", "THIRD"]
    assert rows[0][1].text is rows[1][1].text is rows[2][1].text  # one text, shared
    assert rows[0][1].report["00001000"]["Value"] == [uid]
    reports.acknowledge_many({"FIRST": rows[0][1].id, "SECOND": rows[1][1].id})
    assert [p.report for p in reports.pending("THIRD")] == [rows[2][1].report]  # still there for the last one
    reports.acknowledge("THIRD", rows[2][1].id)
    assert store.reading().execute("SELECT COUNT(*) FROM event_reports").fetchone()[0] == 0


def test_scp_status_changes_go_to_every_subscriber(service, subscriptions, reports):
    uid = service.create(sample_workitem()).uid
    subscriptions.subscribe(SubscribeRequest(uid, "A"))
    subscriptions.subscribe(SubscribeRequest(GLOBAL, "B"))
    subscriptions.announce("RESTARTED")
    for ae in ("A", "B"):
        last = reports.pending(ae)[-1].report
        assert last["00001002"]["Value"] == [EventType.SCP_STATUS_CHANGE] and last["00741242"]["Value"] == ["RESTARTED"]


def test_ups_assigned_when_an_update_names_the_station(service, subscriptions, reports):
    uid = service.create(sample_workitem()).uid
    subscriptions.subscribe(SubscribeRequest(uid, "A"))
    station = {"00404025": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["GPU-1"]},
                                                    "00080102": {"vr": "SH", "Value": ["99X"]},
                                                    "00080104": {"vr": "LO", "Value": ["GPU 1"]}}]}}
    service.update(uid, station, None)
    assert _events(reports, "A")[-1][0] == EventType.UPS_ASSIGNED


def test_the_rest_routes_subscribe_unsubscribe_and_suspend(service, subscriptions, reports):
    api = WorkitemsApi(service, subscriptions, lambda request, ae: f"ws://example:8765/ws/subscribers/{ae}")
    uid = service.create(sample_workitem()).uid

    def call(method: str, path: str, query: dict | None = None):
        return api.handle(Request(method, path, query or {}))

    answer = call("POST", f"/workitems/{uid}/subscribers/MY%20AE")
    assert answer.status == 201 and answer.headers["Content-Location"] == "ws://example:8765/ws/subscribers/MY AE"
    assert call("POST", f"/workitems/{GLOBAL}/subscribers/G", {"deletionlock": "true"}).status == 201
    assert call("POST", f"/workitems/{GLOBAL}/subscribers/G/suspend").status == 200
    assert call("DELETE", f"/workitems/{uid}/subscribers/MY%20AE").status == 200
    missing = call("DELETE", f"/workitems/{uid}/subscribers/MY%20AE")
    assert missing.status == 404 and "MY AE" in orjson.loads(missing.body)["error"]
    bad = call("POST", f"/workitems/{GLOBAL}/subscribers/G", {"deletionlock": "maybe"})
    assert bad.status == 400
    assert call("GET", f"/workitems/{GLOBAL}/subscribers/G").status == 405
