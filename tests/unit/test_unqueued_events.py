"""An Orthanc change event the store cannot take when it comes (a full disk) is not lost: the intake thread queues
it once the store takes writes again."""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace

import pytest

from ai_orchestrator.app import Orchestrator
from ai_orchestrator.requester.intake import DELETED_STUDY, STABLE_STUDY
from ai_orchestrator.store.workitems import StoreFull


class Store:
    def __init__(self) -> None:
        self.full, self.events = True, []

    def enqueue_event(self, kind: str, study: str) -> int:
        if self.full:
            raise StoreFull("the disk is full")
        self.events.append((kind, study))
        return len(self.events)


def test_events_the_store_refused_are_queued_in_order_once_it_takes_writes():
    store = Store()
    woken = []
    app = SimpleNamespace(store=store, _unqueued=deque(), _intake_task=SimpleNamespace(wake=lambda: woken.append(1)),
                          intake=SimpleNamespace(process_pending=lambda: 0), worker=None)
    app._enqueue = lambda kind, study: Orchestrator._enqueue(app, kind, study)  # type: ignore[arg-type]
    Orchestrator.on_stable_study(app, "study-1")  # type: ignore[arg-type]
    Orchestrator.on_deleted_study(app, "study-2")  # type: ignore[arg-type]
    assert list(app._unqueued) == [(STABLE_STUDY, "study-1"), (DELETED_STUDY, "study-2")] and len(woken) == 2
    with pytest.raises(StoreFull):  # still full: kept for the next step
        Orchestrator._intake_step(app)  # type: ignore[arg-type]
    assert len(app._unqueued) == 2
    store.full = False
    Orchestrator._intake_step(app)  # type: ignore[arg-type]
    assert store.events == [(STABLE_STUDY, "study-1"), (DELETED_STUDY, "study-2")] and not app._unqueued
