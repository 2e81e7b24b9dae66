"""WorkitemService: the UPS transactions and the performer/intake operations on a real store."""

import threading
from datetime import timedelta

import pytest

from ai_orchestrator.manager.service import OPTIMISTIC_TRIES, WorkitemService
from ai_orchestrator.store.workitems import WorkitemStore
from ai_orchestrator.ups.constants import (
    CANCELED,
    COMPLETED,
    IN_PROGRESS,
    PRIVATE_SCHEME,
    SCHEDULED,
    UPS_PUSH_SOP_CLASS_UID,
    Warnings,
)
from ai_orchestrator.ups.errors import UPSError
from ai_orchestrator.ups.notifications import EventType
from ai_orchestrator.ups.sample import completion_attributes, sample_workitem

T1, T2 = "1.2.826.0.1.1", "1.2.826.0.1.2"


@pytest.fixture(autouse=True)
def ticking(clock):
    """Each reading of the service's clock (conftest: from 2024-05-01 12:00 UTC) is a second after the last."""
    clock.tick = timedelta(seconds=1)


@pytest.fixture
def events(service):
    seen = []
    service.add_listener(seen.append)
    return seen


def value(dataset, tag):
    return dataset[tag]["Value"][0]


def state_of(service, uid):
    return value(service.retrieve(uid), "00741000")


def fails(call, http, dicom=None, *words):
    with pytest.raises(UPSError) as info:
        call()
    assert info.value.http_status == http, info.value
    if dicom:
        assert info.value.dicom_status == dicom
    for word in words:
        assert word in info.value.message
    return info.value


def in_progress(service, **args):
    uid = service.create(sample_workitem(**args)).uid
    assert service.claim(uid, T1)
    return uid


# -- Create / Retrieve -------------------------------------------------------------------------------------

def test_create_sets_server_attributes_and_generates_a_uid(service):
    outcome = service.create(sample_workitem())
    ds = service.retrieve(outcome.uid)
    assert outcome.warnings == []
    assert value(ds, "00080018") == outcome.uid
    assert value(ds, "00080016") == UPS_PUSH_SOP_CLASS_UID
    assert value(ds, "00404010").startswith("20240501120001")
    assert value(ds, "00741000") == SCHEDULED and "00081195" not in ds


def test_create_fills_type2_and_warns(service):
    outcome = service.create(sample_workitem(with_type2=False))
    assert outcome.warnings == [Warnings.CREATED_WITH_MODIFICATIONS]
    assert "00741202" in service.retrieve(outcome.uid)  # WorklistLabel, empty


def test_create_with_a_chosen_uid_in_body_or_argument(service):
    body = {**sample_workitem(), "00080018": {"vr": "UI", "Value": ["1.2.3.4"]}}
    assert service.create(body).uid == "1.2.3.4"
    assert service.create(sample_workitem(), "1.2.3.5").uid == "1.2.3.5"
    fails(lambda: service.create({**body, "00080018": {"vr": "UI", "Value": ["1.2.3.6"]}}, "1.2.3.7"), 400,
          None, "1.2.3.6", "1.2.3.7")
    fails(lambda: service.create(sample_workitem(), "1.2.abc"), 400, None, "1.2.abc")


def test_duplicate_uid_is_409_and_changes_nothing(service, events):
    service.create(sample_workitem(patient_id="A"), "1.2.3.4")
    fails(lambda: service.create(sample_workitem(patient_id="B"), "1.2.3.4"), 409, "0111", "1.2.3.4")
    assert value(service.retrieve("1.2.3.4"), "00100020") == "A" and len(events) == 1


def test_create_refuses_other_states_and_a_transaction_uid(service):
    fails(lambda: service.create({**sample_workitem(), "00741000": {"vr": "CS", "Value": [IN_PROGRESS]}}),
          400, "C309")
    fails(lambda: service.create({**sample_workitem(), "00081195": {"vr": "UI", "Value": [T1]}}),
          400, None, "TransactionUID")
    assert service.counts_by_state()[SCHEDULED] == 0


def test_retrieve_unknown_is_404_and_purged_is_410(service, clock):
    fails(lambda: service.retrieve("1.2.404"), 404, "C307", "1.2.404")
    uid = in_progress(service)
    service.change_state(uid, COMPLETED, T1, completion_attributes())
    assert service.purge_final(clock.now + timedelta(seconds=10)) == 1
    fails(lambda: service.retrieve(uid), 410, None, uid)
    fails(lambda: service.create(sample_workitem(), uid), 409)  # a purged UID is not reused


# -- Update -------------------------------------------------------------------------------------------------

def label_update(text):
    return {"00741204": {"vr": "LO", "Value": [text]}}


def test_update_scheduled_needs_no_tuid_and_stamps(service):
    uid = service.create(sample_workitem()).uid
    before = value(service.retrieve(uid), "00404010")
    service.update(uid, label_update("new"), None)
    ds = service.retrieve(uid)
    assert value(ds, "00741204") == "new" and value(ds, "00404010") > before


def test_update_in_progress_needs_the_right_tuid(service):
    uid = in_progress(service)
    fails(lambda: service.update(uid, label_update("x"), None), 400, "C301", Warnings.TUID_MISSING)
    fails(lambda: service.update(uid, label_update("x"), T2), 400, "C301", Warnings.TUID_INCORRECT)
    service.update(uid, label_update("ok"), T1)
    service.update(uid, {**label_update("body"), "00081195": {"vr": "UI", "Value": [T1]}}, None)
    assert value(service.retrieve(uid), "00741204") == "body"


def test_update_of_final_is_400_and_of_state_or_patient_is_400(service):
    uid = service.create(sample_workitem()).uid
    fails(lambda: service.update(uid, {"00741000": {"vr": "CS", "Value": [IN_PROGRESS]}}, None), 400, None,
          "ProcedureStepState")
    fails(lambda: service.update(uid, {"00100020": {"vr": "LO", "Value": ["OTHER"]}}, None), 400, None,
          "PatientID")
    service.request_cancel(uid)
    fails(lambda: service.update(uid, label_update("late"), None), 400, "C300", CANCELED)
    fails(lambda: service.update("1.2.404", label_update("x"), None), 404)


def test_readiness_change_is_a_state_report(service, events):
    uid = service.create(sample_workitem(readiness="INCOMPLETE")).uid
    service.update(uid, label_update("same readiness"), None)
    service.update(uid, {"00404041": {"vr": "CS", "Value": ["READY"]}}, None)
    assert [e.type for e in events] == [EventType.CREATED, EventType.STATE_CHANGED]


# -- Change State ------------------------------------------------------------------------------------------

def test_full_lifecycle_to_completed(service, events):
    uid = service.create(sample_workitem()).uid
    assert service.change_state(uid, IN_PROGRESS, T1).warnings == []
    fails(lambda: service.change_state(uid, COMPLETED, T1), 409, "C304", "PerformedProcedureStepEndDateTime")
    assert state_of(service, uid) == IN_PROGRESS
    service.change_state(uid, COMPLETED, T1, completion_attributes())
    assert state_of(service, uid) == COMPLETED
    assert service.change_state(uid, COMPLETED, T1).warnings == [Warnings.ALREADY_COMPLETED]
    fails(lambda: service.change_state(uid, CANCELED, T1), 409, "C300")
    assert [e.type for e in events] == [EventType.CREATED, EventType.STATE_CHANGED, EventType.STATE_CHANGED]
    assert all("00081195" not in e.dataset for e in events)


@pytest.mark.parametrize("setup, requested, tuid, http, dicom", [
    (SCHEDULED, COMPLETED, T1, 409, "C310"),
    (SCHEDULED, CANCELED, T1, 409, "C310"),
    (SCHEDULED, SCHEDULED, T1, 409, "C303"),
    (SCHEDULED, IN_PROGRESS, None, 400, "C301"),
    (IN_PROGRESS, IN_PROGRESS, T2, 409, "C302"),
    (IN_PROGRESS, CANCELED, T2, 400, "C301"),
    (IN_PROGRESS, CANCELED, None, 400, "C301"),
    (IN_PROGRESS, SCHEDULED, T1, 409, "C303"),
    (CANCELED, IN_PROGRESS, T2, 409, "C300"),
    (CANCELED, COMPLETED, T1, 409, "C300"),
    (CANCELED, SCHEDULED, T1, 409, "C303"),
])
def test_refused_changes_change_nothing(service, setup, requested, tuid, http, dicom):
    uid = service.create(sample_workitem()).uid
    if setup != SCHEDULED:
        service.claim(uid, T1)
    if setup == CANCELED:
        service.change_state(uid, CANCELED, T1)
    before = service.retrieve(uid)
    fails(lambda: service.change_state(uid, requested, tuid), http, dicom)
    assert service.retrieve(uid) == before


def test_cancel_by_performer_gets_server_filled_reason(service):
    uid = in_progress(service)
    service.change_state(uid, CANCELED, T1)
    item = service.retrieve(uid)["00741002"]["Value"][0]
    assert value(item["0074100E"]["Value"][0], "00080100") == "110513"
    assert value(item, "00404052").startswith("2024")
    assert service.change_state(uid, CANCELED, T1).warnings == [Warnings.ALREADY_CANCELED]


# -- Request Cancel ------------------------------------------------------------------------------------------

def reason(text):
    return {"00741238": {"vr": "LT", "Value": [text]}}


def test_request_cancel_of_scheduled_cancels_now(service, events):
    uid = service.create(sample_workitem()).uid
    assert service.request_cancel(uid, reason("patient left")).warnings == []
    ds = service.retrieve(uid)
    assert value(ds, "00741000") == CANCELED
    assert value(ds["00741002"]["Value"][0], "00741238") == "patient left"
    assert events[-1].type == EventType.STATE_CHANGED


def test_request_cancel_of_in_progress_notifies_the_performer(service, events):
    uid = in_progress(service)
    assert not service.is_cancel_requested(uid)
    before = service.retrieve(uid)
    service.request_cancel(uid, reason("wrong study"))
    assert service.is_cancel_requested(uid) and service.retrieve(uid) == before
    assert events[-1].type == EventType.CANCEL_REQUESTED and events[-1].details["00741238"]["Value"] == ["wrong study"]
    service.change_state(uid, CANCELED, T1)  # the performer obeys; the requester's reason is kept
    assert value(service.retrieve(uid)["00741002"]["Value"][0], "00741238") == "wrong study"


def test_request_cancel_of_final_items(service):
    uid = in_progress(service)
    service.change_state(uid, COMPLETED, T1, completion_attributes())
    fails(lambda: service.request_cancel(uid), 409, "C311")
    other = service.create(sample_workitem()).uid
    service.request_cancel(other)
    assert service.request_cancel(other).warnings == [Warnings.ALREADY_CANCELED]
    fails(lambda: service.request_cancel("1.2.404"), 404)


# -- performer operations ------------------------------------------------------------------------------------

def test_claim(service):
    uid = service.create(sample_workitem()).uid
    assert service.claim(uid, T1) is True
    assert service.claim(uid, T2) is False
    assert service.transaction_uid_of(uid) == T1
    assert service.in_progress_held_by([T1, T2]) == [uid] and service.in_progress_held_by([T2]) == []
    fails(lambda: service.claim("1.2.404", T1), 404)


def test_claim_next_order_and_filters(service):
    low_old = service.create(sample_workitem(priority="LOW", start="20240101000000")).uid
    high_new = service.create(sample_workitem(priority="HIGH", start="20240301000000")).uid
    high_old = service.create(sample_workitem(priority="HIGH", start="20240201000000")).uid
    service.create(sample_workitem(priority="HIGH", readiness="INCOMPLETE"))
    other = service.create(sample_workitem(priority="HIGH", code=("other", "99X", "x"), label="Other")).uid
    lung = [("lung-nodules", PRIVATE_SCHEME)]
    assert service.claim_next("1.9.1", lung) == high_old
    assert service.claim_next("1.9.2", lung) == high_new
    assert service.claim_next("1.9.3", lung) == low_old
    assert service.claim_next("1.9.4", lung) is None
    assert service.claim_next("1.9.5", [], labels=["Other"]) == other
    assert service.transaction_uid_of(high_old) == "1.9.1"


def test_claim_next_without_filters_takes_any_ready(service):
    uid = service.create(sample_workitem()).uid
    assert service.claim_next("1.9.1", algorithm_codes=[]) is None
    assert service.claim_next("1.9.1") == uid


def test_report_progress(service, events):
    uid = in_progress(service)
    service.report_progress(uid, T1, 42.5, "segmenting")
    item = service.retrieve(uid)["00741002"]["Value"][0]
    assert float(value(item, "00741004")) == 42.5 and value(item, "00741006") == "segmenting"
    assert events[-1].type == EventType.PROGRESS
    fails(lambda: service.report_progress(uid, T2, 50, None), 400, "C301")


def test_force_cancel(service):
    scheduled = service.create(sample_workitem()).uid
    running = in_progress(service)
    assert service.force_cancel(scheduled, "study deleted", ("DEL", "99AI", "Study deleted")) is True
    assert service.force_cancel(running, "lease expired") is True
    for uid in (scheduled, running):
        assert state_of(service, uid) == CANCELED
    item = service.retrieve(scheduled)["00741002"]["Value"][0]
    assert value(item, "00741238") == "study deleted"
    assert value(item["0074100E"]["Value"][0], "00080100") == "DEL"
    assert value(service.retrieve(running)["00741002"]["Value"][0], "00741238") == "lease expired"
    before = service.retrieve(running)
    assert service.force_cancel(running, "again") is False and service.retrieve(running) == before


# -- queries and housekeeping --------------------------------------------------------------------------------

def test_find(service):
    a = service.create(sample_workitem(study_uid="1.2.9.1")).uid
    b = service.create(sample_workitem(study_uid="1.2.9.2", code=("liver", "99AI", "Liver"))).uid
    service.claim(b, T1)

    def found(**kw):
        return sorted(value(ds, "00080018") for ds in service.find(**kw))
    assert found() == sorted([a, b])
    assert found(study_instance_uid="1.2.9.1") == [a]
    assert found(states=[IN_PROGRESS]) == [b]
    assert found(algorithm_code=("liver", "99AI")) == [b]
    assert found(states=[]) == []
    assert all("00081195" not in ds for ds in service.find())


def test_find_stale_and_purge(service, clock):
    old = in_progress(service)
    cutoff = clock.now + timedelta(milliseconds=500)
    fresh = in_progress(service)
    assert service.find_stale(IN_PROGRESS, cutoff) == [old]
    assert service.find_stale(IN_PROGRESS, cutoff.replace(tzinfo=None)) == [old]  # naive = UTC
    service.change_state(old, COMPLETED, T1, completion_attributes())
    service.change_state(fresh, CANCELED, T1)
    done_at = clock.now
    assert service.purge_final(done_at - timedelta(milliseconds=500)) == 1
    assert service.counts_by_state() == {SCHEDULED: 0, IN_PROGRESS: 0, COMPLETED: 0, CANCELED: 1}


def test_counts_by_state_includes_zeros(service):
    service.create(sample_workitem())
    assert service.counts_by_state() == {SCHEDULED: 1, IN_PROGRESS: 0, COMPLETED: 0, CANCELED: 0}


def test_a_raising_listener_does_not_break_the_operation(service, events):
    def broken(event):
        raise RuntimeError("listener bug")
    service.add_listener(broken)
    uid = service.create(sample_workitem()).uid
    assert service.claim(uid, T1)
    assert [e.type for e in events] == [EventType.CREATED, EventType.STATE_CHANGED]


# -- concurrency and restart ------------------------------------------------------------------------------

@pytest.mark.parametrize("round_", range(20))
def test_two_threads_claiming_the_same_item_exactly_one_wins(service, round_):
    uid = service.create(sample_workitem()).uid
    barrier, results = threading.Barrier(2), {}

    def claim(tuid):
        barrier.wait()
        results[tuid] = service.claim(uid, tuid)

    threads = [threading.Thread(target=claim, args=(t,)) for t in (T1, T2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == [False, True]
    winner = next(t for t, won in results.items() if won)
    assert service.transaction_uid_of(uid) == winner


def test_concurrent_claim_next_never_hands_out_an_item_twice(service):
    created = {service.create(sample_workitem()).uid for _ in range(12)}
    claimed, lock = [], threading.Lock()

    def work(n):
        while (uid := service.claim_next(f"1.9.{n}")) is not None:
            with lock:
                claimed.append(uid)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(created)


def _another_write_after_each_read(service, store, monkeypatch, write, times=1):
    """The next ``times`` committed reads of the service are each followed by ``write`` (another client's, landing
    between the service's decision and its own write)."""
    read, left, writing = store.versioned, [times], [False]

    def versioned(uid):
        found = read(uid)
        if left[0] > 0 and not writing[0]:  # not the other write's own read
            left[0], writing[0] = left[0] - 1, True
            write()
            writing[0] = False
        return found
    monkeypatch.setattr(store, "versioned", versioned)


def test_a_decision_overtaken_by_another_write_is_made_again_from_it(service, store, monkeypatch, events):
    uid = in_progress(service)
    _another_write_after_each_read(
        service, store, monkeypatch, lambda: service.report_progress(uid, T1, 40, "another write"))
    service.report_progress(uid, T1, 70, "this write")
    item = service.retrieve(uid)
    progress = item["00741002"]["Value"][0]  # ProcedureStepProgressInformationSequence
    assert progress["00741004"]["Value"] == [70]
    assert [e.type for e in events][-2:] == [EventType.PROGRESS, EventType.PROGRESS]


def test_a_claim_overtaken_by_another_claim_loses(service, store, monkeypatch):
    uid = service.create(sample_workitem()).uid
    _another_write_after_each_read(service, store, monkeypatch, lambda: service.claim(uid, T2))
    assert service.claim(uid, T1) is False
    assert service.transaction_uid_of(uid) == T2


def test_a_decision_overtaken_every_time_is_made_under_the_write_lock(service, store, monkeypatch):
    uid = in_progress(service)
    percent = iter(range(1, 100))
    _another_write_after_each_read(service, store, monkeypatch,
                                   lambda: service.report_progress(uid, T1, next(percent), "another"),
                                   times=OPTIMISTIC_TRIES)
    service.change_state(uid, COMPLETED, T1, completion_attributes())
    assert state_of(service, uid) == COMPLETED
    progress = service.retrieve(uid)["00741002"]["Value"][0]
    assert progress["00741004"]["Value"] == [OPTIMISTIC_TRIES]  # every overtaking write is kept


def test_restart_keeps_everything_acknowledged(tmp_path, clock):
    path = tmp_path / "store.sqlite"
    with WorkitemStore(path) as store:
        service = WorkitemService(store, clock)
        uid = service.create(sample_workitem()).uid
        service.claim(uid, T1)
        service.report_progress(uid, T1, 10, "started")
        snapshot = service.retrieve(uid)
    with WorkitemStore(path) as store:
        service = WorkitemService(store, clock)
        assert service.retrieve(uid) == snapshot
        assert service.transaction_uid_of(uid) == T1
        service.change_state(uid, COMPLETED, T1, completion_attributes())


def test_input_references_are_carried_through_changes_and_an_update_replaces_them(service):
    """The stored InputInformationSequence goes through a claim, a progress report and the completion as it was
    stored (it is never parsed on a write); an N-SET that sets it replaces it; the stored attributes stay in tag
    order."""
    body = sample_workitem()
    references = body["00404021"]["Value"]
    references += [{**references[0], "00081155": {"vr": "UI", "Value": [f"1.2.3.{n}"]}} for n in range(50)]
    uid = service.create(body).uid
    stored = service.retrieve(uid)["00404021"]
    service.change_state(uid, IN_PROGRESS, "1.2.9")
    service.report_progress(uid, "1.2.9", 50, "half way")
    assert service.retrieve(uid)["00404021"] == stored and len(stored["Value"]) == 51
    replaced = {"00404021": {"vr": "SQ", "Value": [references[7]]}}
    service.update(uid, replaced, "1.2.9")
    assert service.retrieve(uid)["00404021"]["Value"] == [references[7]]
    service.change_state(uid, COMPLETED, "1.2.9", completion_attributes())
    done = service.retrieve(uid)
    assert done["00404021"]["Value"] == [references[7]] and value(done, "00741000") == COMPLETED
    assert list(done) == sorted(done)
