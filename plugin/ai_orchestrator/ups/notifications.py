"""Events the service announces to in-process listeners after each committed change."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

log = logging.getLogger(__name__)


class EventType(StrEnum):
    CREATED = "created"
    STATE_CHANGED = "state_changed"      # also sent when Input Readiness State changes (a State Report)
    PROGRESS = "progress"
    CANCEL_REQUESTED = "cancel_requested"
    ASSIGNED = "assigned"                # Scheduled Station Name or Human Performers changed (UPS Assigned)


@dataclass(frozen=True)
class WorkitemEvent:
    type: EventType
    uid: str
    dataset: dict                 # DICOM JSON after the change, without the Transaction UID
    details: dict | None = None   # Cancel Requested: the request's attributes (DICOM JSON)


Listener = Callable[[WorkitemEvent], None]


class Listeners:
    """A thread-safe listener list; a listener that raises is logged and never breaks the caller."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def add(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def emit(self, events: Iterable[WorkitemEvent]) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for event in events:
            for listener in listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("workitem listener %r failed on %s %s", listener, event.type.value, event.uid)
