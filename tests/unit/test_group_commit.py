"""Group commit: many threads write at once, each write returns only once it is durable, a write that fails takes
only itself back, and two claims of one workitem still have exactly one winner."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from ai_orchestrator.manager.service import WorkitemService
from ai_orchestrator.store.workitems import StoreFull, WorkitemStore
from ai_orchestrator.ups.errors import UPSError
from ai_orchestrator.ups.sample import sample_workitem


def _in_parallel(work, count: int) -> list:
    results: list = [None] * count
    barrier = threading.Barrier(count)

    def run(n: int) -> None:
        barrier.wait()
        try:
            results[n] = work(n)
        except BaseException as error:  # noqa: BLE001 - the test looks at every outcome
            results[n] = error

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_every_acknowledged_write_is_committed_when_it_returns(store, service):
    def create(n: int) -> bool:
        uids = [service.create(sample_workitem(patient_id=f"P{n}-{k}")).uid for k in range(10)]
        with sqlite3.connect(store.path) as other:  # another connection sees it: committed, not just written
            return all(other.execute("SELECT 1 FROM workitems WHERE uid = ?", (uid,)).fetchone() for uid in uids)

    assert _in_parallel(create, 20) == [True] * 20
    assert service.counts_by_state()["SCHEDULED"] == 200


def test_a_write_that_fails_takes_only_itself_back(store, service):
    taken = service.create(sample_workitem(patient_id="TAKEN")).uid

    def create(n: int):
        dataset = sample_workitem(patient_id=f"Q{n}")
        if n % 2:
            dataset["00080018"] = {"vr": "UI", "Value": [taken]}  # exists: 409 inside the transaction
        return service.create(dataset).uid

    results = _in_parallel(create, 30)
    assert all(isinstance(r, UPSError) and r.http_status == 409 for r in results[1::2])
    assert all(isinstance(r, str) for r in results[0::2])
    assert service.counts_by_state()["SCHEDULED"] == 16


def test_concurrent_claims_have_exactly_one_winner(service):
    uids = [service.create(sample_workitem(patient_id=f"C{n}")).uid for n in range(5)]
    for uid in uids:
        results = _in_parallel(lambda n, uid=uid: service.claim(uid, f"1.2.3.{n + 1}"), 12)
        assert results.count(True) == 1 and results.count(False) == 11, results


def test_a_full_store_refuses_what_it_cannot_hold_and_keeps_what_it_acknowledged(tmp_path):
    small = WorkitemStore(tmp_path / "small.sqlite", max_size_mb=1)
    service = WorkitemService(small)

    def create(n: int):
        done = []
        for k in range(60):
            try:
                done.append(service.create(sample_workitem(patient_id=f"F{n}-{k}")).uid)
            except StoreFull:
                pass
        return done

    results = _in_parallel(create, 8)
    acknowledged = [uid for done in results for uid in done]
    assert len(acknowledged) < 8 * 60, "the store never filled"
    with sqlite3.connect(small.path) as other:
        stored = {row[0] for row in other.execute("SELECT uid FROM workitems")}
        assert other.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert set(acknowledged) <= stored  # nothing acknowledged is missing
    small.close()


@pytest.mark.parametrize("nested", ["transaction", "writing"])
def test_reads_inside_a_write_see_it(store, nested):
    with store.transaction() as tx:
        tx._conn.execute("INSERT INTO intake_events (kind, resource_id, received_at) VALUES ('k', 'r', 't')")
        assert [event.resource_id for event in store.pending_events()] == ["r"]  # the writer's own connection
        with (store.transaction() if nested == "transaction" else store.writing()):
            pass
    assert [event.resource_id for event in store.pending_events()] == ["r"]
