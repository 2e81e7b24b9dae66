"""The store under faults: another process's write lock (waited for, then StoreBusy), a full store (StoreFull,
nothing half-written, writes pass again once there is room), a change and its event reports in one transaction, and
the front doors' answers to each (503 with Retry-After, 507), never a 500."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from pydicom.uid import generate_uid

from ai_orchestrator.http.messages import Request
from ai_orchestrator.http.workitems import WorkitemsApi
from ai_orchestrator.manager.service import WorkitemService
from ai_orchestrator.manager.subscriptions import SubscribeRequest, SubscriptionService
from ai_orchestrator.requester.intake import STABLE_STUDY, IntakeProcessor, IntakeSettings
from ai_orchestrator.requester.matching import RuleMatcher
from ai_orchestrator.store import workitems as store_module
from ai_orchestrator.store.subscriptions import SubscriptionStore
from ai_orchestrator.store.workitems import StoreBusy, StoreFull, WorkitemStore
from ai_orchestrator.ups.events import GLOBAL_WORKLIST_UID
from ai_orchestrator.ups.sample import sample_workitem


def _other_process_lock(path) -> sqlite3.Connection:
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_lock_held_past_the_busy_timeout_is_store_busy_and_a_503(store, service, monkeypatch):
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.2)
    locked = WorkitemStore(store.path)  # connections made now wait 0.2 s
    api = WorkitemsApi(WorkitemService(locked))
    holder = _other_process_lock(store.path)
    try:
        with pytest.raises(StoreBusy):
            WorkitemService(locked).create(sample_workitem())
        answer = api.handle(Request("POST", "/workitems", body=_json(sample_workitem())))
        assert answer.status == 503 and answer.headers["Retry-After"] == "5"
        assert b"busy" in answer.body and b"nothing was changed" in answer.body
        assert api.handle(Request("GET", "/workitems")).status == 200  # reads are not held up (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert api.handle(Request("POST", "/workitems", body=_json(sample_workitem()))).status == 201
    locked.close()


def test_a_lock_released_within_the_timeout_is_waited_for(store, service):
    holder = _other_process_lock(store.path)
    threading.Timer(0.5, lambda: holder.execute("ROLLBACK")).start()
    assert service.create(sample_workitem()).uid  # waited, then written
    holder.close()


def test_a_full_store_is_store_full_and_a_507_and_writes_pass_once_there_is_room(tmp_path):
    small = WorkitemStore(tmp_path / "small.sqlite", max_size_mb=1)
    service = WorkitemService(small)
    api = WorkitemsApi(service, SubscriptionService(SubscriptionStore(small), service))
    created = 0
    answer = None
    for n in range(2000):
        answer = api.handle(Request("POST", "/workitems", body=_json(sample_workitem(patient_id=f"P{n}"))))
        if answer.status != 201:
            break
        created += 1
    assert answer is not None and answer.status == 507, answer.body
    assert b"full" in answer.body and b"nothing was changed" in answer.body
    assert created and service.counts_by_state()["SCHEDULED"] == created  # the refused one is not half there
    with pytest.raises(StoreFull):
        service.create(sample_workitem(patient_id="AGAIN"))
    assert small.reading().execute("PRAGMA integrity_check").fetchone() == ("ok",)
    small.close()
    roomy = WorkitemStore(tmp_path / "small.sqlite", max_size_mb=64)
    assert WorkitemService(roomy).create(sample_workitem(patient_id="AGAIN")).uid
    roomy.close()


def test_a_change_and_its_reports_commit_together_or_not_at_all(store, service):
    reports = SubscriptionStore(store)
    subscriptions = SubscriptionService(reports, service)
    subscriptions.subscribe(SubscribeRequest(GLOBAL_WORKLIST_UID, "WATCHER"))

    def broken(event):
        def write() -> None:  # runs inside the change's transaction, after the workitem is written
            raise StoreFull("no room for the reports")
        return write

    uid = service.create(sample_workitem()).uid
    pending = reports.pending("WATCHER")
    service.add_recorder(broken)
    with pytest.raises(StoreFull):
        service.create(sample_workitem())
    with pytest.raises(StoreFull):
        service.change_state(uid, "IN PROGRESS", generate_uid())
    assert service.counts_by_state()["SCHEDULED"] == 1 and reports.pending("WATCHER") == pending


def test_a_write_inside_a_write_joins_it_and_rolls_back_with_it(store):
    with pytest.raises(RuntimeError):
        with store.writing() as outer:
            with store.writing() as inner:
                assert inner is outer
                inner.execute("INSERT INTO intake_events (kind, resource_id, received_at) VALUES ('k', 'r', 't')")
            raise RuntimeError("the outer write fails")
    assert store.pending_events() == []


def _json(dataset: dict) -> bytes:
    import json

    return json.dumps(dataset).encode()


# -- studies Orthanc received but never reported stable, before a crash ------------------------------------------

class ChangeLog:
    """Orthanc's change log (``/changes``) and the resources it names, as the gateway answers them."""

    def __init__(self, changes: list[tuple[str, str, str, str]]) -> None:
        self.changes = [{"Seq": n + 1, "ChangeType": kind, "ResourceType": level, "ID": resource, "Date": date}
                        for n, (kind, level, resource, date) in enumerate(changes)]
        self.parents = {"series-b": "study-b", "instance-c": "study-c"}

    def get_json(self, uri: str):
        if uri == "/changes?last":
            return {"Changes": self.changes[-1:], "Last": len(self.changes), "Done": True}
        if uri.startswith("/changes?since="):
            since = int(uri.split("since=")[1].split("&")[0])
            return {"Changes": self.changes[since:since + 1000], "Done": True, "Last": len(self.changes)}
        if uri.startswith("/series/"):
            return {"ParentStudy": self.parents[uri.split("/")[2]]}
        if uri.startswith("/instances/"):
            return {"ID": self.parents[uri.split("/")[2]]}
        raise AssertionError(uri)


class Queue:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def enqueue_event(self, kind: str, resource_id: str) -> int:
        self.events.append((kind, resource_id))
        return len(self.events)

    def pending_events(self, limit: int = 100) -> list:
        return []

    def ack_event(self, event_id: int) -> None:
        pass


def test_the_first_pass_queues_the_studies_changed_just_before_orthanc_stopped():
    log = ChangeLog([
        ("NewStudy", "Study", "study-old", "20260101T100000"),
        ("StableStudy", "Study", "study-old", "20260101T100005"),
        ("NewStudy", "Study", "study-a", "20260101T120000"),  # stable, the plugin may have missed it
        ("StableStudy", "Study", "study-a", "20260101T120002"),
        ("NewSeries", "Series", "series-b", "20260101T120030"),  # a series added, never stable
        ("NewInstance", "Instance", "instance-c", "20260101T120040"),
        ("Deleted", "Study", "study-gone", "20260101T120041"),
        ("NewPatient", "Patient", "patient-d", "20260101T120042"),
    ])
    queue = Queue()
    intake = IntakeProcessor(queue, None, log, RuleMatcher(),  # type: ignore[arg-type]
                             IntakeSettings("http://localhost/dicom-web", recovery_window_s=61))
    intake.process_pending()
    assert queue.events == [(STABLE_STUDY, "study-a"), (STABLE_STUDY, "study-b"), (STABLE_STUDY, "study-c")]
    intake.process_pending()  # only once, at start
    assert len(queue.events) == 3


def test_an_unreadable_change_log_does_not_stop_intake():
    class Down:
        def get_json(self, uri: str):
            raise ConnectionError("Orthanc is not answering")

    queue = Queue()
    intake = IntakeProcessor(queue, None, Down(), RuleMatcher(),  # type: ignore[arg-type]
                             IntakeSettings("http://localhost/dicom-web", recovery_window_s=61))
    assert intake.process_pending() == 0 and queue.events == []
