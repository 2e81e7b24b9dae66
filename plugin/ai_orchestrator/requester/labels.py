"""The Task Requester tracks the outcome of its requests on the study itself: one Orthanc label per AI state.

Orthanc 1.12 and later put labels on resources; ``/tools/find`` with ``"Labels"`` and Orthanc Explorer 2 filter on
them. A study with workitems carries exactly one of:

- ``ai-scheduled``: work is pending (a workitem is SCHEDULED or IN PROGRESS);
- ``ai-failed``: nothing is pending and a workitem ended CANCELED (failed after its attempts, or canceled);
- ``ai-completed``: every workitem ended COMPLETED.

A workitem that another one replaced (lease expired, new inputs) no longer counts: its replacement does. The
workitem service's listener only notes which study changed (it runs on the caller's thread, REST requests
included); :meth:`StudyLabels.apply_pending` relabels those studies from the workitems' state at that moment, on
a background thread. On an Orthanc without labels the entry module says so and none of this is wired.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable
from typing import Any, Protocol

from ..gateway.protocol import OrthancError, ResourceNotFound
from ..gateway.study import orthanc_id_of_study
from ..manager.scheduling import ItemFacts
from ..ups.constants import CANCELED, COMPLETED, IN_PROGRESS, SCHEDULED
from ..ups.notifications import EventType, WorkitemEvent

log = logging.getLogger("ai_orchestrator.labels")

AI_SCHEDULED, AI_COMPLETED, AI_FAILED = "ai-scheduled", "ai-completed", "ai-failed"
AI_LABELS = (AI_SCHEDULED, AI_COMPLETED, AI_FAILED)
_PATIENT_ID, _STUDY_INSTANCE_UID = "00100020", "0020000D"


class LabelGateway(Protocol):
    def get_json(self, uri: str) -> Any: ...

    def put(self, uri: str, body: bytes = b"") -> None: ...

    def delete(self, uri: str) -> None: ...


class StudyWorkitems(Protocol):
    def find(self, study_instance_uid: str | None = None, states: Collection[str] | None = None,
             algorithm_code: tuple[str, str] | None = None) -> list[dict]: ...


def ai_state(items: Iterable[ItemFacts]) -> str | None:
    """The label of a study with these workitems; None when it has none that count."""
    items = list(items)
    replaced = {uid for item in items for uid in item.replaces}
    states = {item.state for item in items if item.uid not in replaced and not item.withdrawn}
    if states & {SCHEDULED, IN_PROGRESS}:
        return AI_SCHEDULED
    if CANCELED in states:
        return AI_FAILED
    if COMPLETED in states:
        return AI_COMPLETED
    return None


def _first_value(dataset: dict, tag: str) -> str:
    values = (dataset.get(tag) or {}).get("Value") or [""]
    return str(values[0] or "")


class StudyLabels:
    def __init__(self, gateway: LabelGateway, service: StudyWorkitems):
        self._gateway, self._service = gateway, service
        self._pending: dict[tuple[str, str], None] = {}  # (PatientID, StudyInstanceUID), in order of arrival
        self._lock = threading.Lock()
        self._wakers: list[Callable[[], None]] = []

    def add_waker(self, wake: Callable[[], None]) -> None:
        """``wake()`` is called when a study waits to be relabelled."""
        self._wakers.append(wake)

    def on_workitem_event(self, event: WorkitemEvent) -> None:
        """The workitem service's listener: note the study (cheap; the caller may be a REST request)."""
        if event.type not in (EventType.CREATED, EventType.STATE_CHANGED):
            return
        study_uid = _first_value(event.dataset, _STUDY_INSTANCE_UID)
        if not study_uid:
            return
        with self._lock:
            self._pending[(_first_value(event.dataset, _PATIENT_ID), study_uid)] = None
        for wake in self._wakers:
            wake()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def apply_pending(self) -> int:
        """Relabel every study noted since the last pass; answers how many were relabelled. A study whose
        relabelling failed is noted again (tried on the next pass)."""
        with self._lock:
            studies, self._pending = list(self._pending), {}
        done = 0
        for patient_id, study_uid in studies:
            try:
                self.label_study(patient_id, study_uid)
                done += 1
            except OrthancError as error:
                log.warning("labelling study %s failed, will retry: %s", study_uid, error)
                with self._lock:
                    self._pending.setdefault((patient_id, study_uid), None)
        return done

    def label_study(self, patient_id: str, study_uid: str) -> str | None:
        """Give the study the label of its workitems' state now, and remove the other AI labels; answers the
        label (None: no workitem counts, or the study is not in Orthanc any more)."""
        items = [ItemFacts.from_json(item) for item in self._service.find(study_instance_uid=study_uid)]
        # The same Study Instance UID under another Patient ID is another Orthanc study.
        wanted = ai_state(item for item in items if item.patient_id == patient_id)
        study = f"/studies/{orthanc_id_of_study(patient_id, study_uid)}/labels"
        try:
            current = set(self._gateway.get_json(study))
            for stale in sorted(current & set(AI_LABELS) - {wanted}):
                self._gateway.delete(f"{study}/{stale}")
            if wanted is not None and wanted not in current:
                self._gateway.put(f"{study}/{wanted}")
        except ResourceNotFound:
            return None  # the study left Orthanc: nothing to label
        return wanted
