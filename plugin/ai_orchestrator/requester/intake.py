"""Intake: the durable queue of Orthanc change events, drained into workitems (IHE AIW-I Task Requester).

A stable study is read (:mod:`ai_orchestrator.gateway.study`), matched (:mod:`.matching`), planned and applied
(:mod:`.planning`); a deleted study's open work is canceled. Workitem UIDs are name-based
(:func:`ai_orchestrator.manager.scheduling.workitem_uid`), so two planners racing on the same study create the same
UID and the loser's 409 is a success.

Orthanc keeps the studies it waits on to become stable in memory only: a study whose instances were stored (and
acknowledged to the sender) shortly before Orthanc was killed never gets its STABLE_STUDY event. So the first pass
after a start reads the tail of Orthanc's change log (which Orthanc keeps in its database) and queues every study
changed in the last ``recovery_window_s`` before the last change: planning a study twice changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from ..config import Settings
from ..gateway.protocol import OrthancGateway, ResourceNotFound
from ..gateway.study import orthanc_id_of_study, read_study
from ..manager.scheduling import STUDY_DELETED_REASON, ItemFacts, force_cancel_quietly
from ..store.workitems import IntakeEvent
from ..ups.clock import Clock, utc_now
from ..ups.constants import IN_PROGRESS, SCHEDULED
from .matching import Matcher, is_input_series
from .planning import Defer, PlanService, apply, plan_study

log = logging.getLogger("ai_orchestrator.intake")

STABLE_STUDY, DELETED_STUDY = "stable_study", "deleted_study"


class EventQueue(Protocol):
    """The store's durable queue of Orthanc change events."""

    def enqueue_event(self, kind: str, resource_id: str) -> int: ...

    def pending_events(self, limit: int = 100) -> list[IntakeEvent]: ...

    def ack_event(self, event_id: int) -> None: ...


class IntakeService(PlanService, Protocol):
    """The workitem service as intake uses it."""

    def find(self, study_instance_uid: str | None = None, states: Collection[str] | None = None,
             algorithm_code: tuple[str, str] | None = None) -> list[dict]: ...


@dataclass(frozen=True)
class IntakeSettings:
    dicomweb_base: str  # e.g. http://localhost:8042/dicom-web: the base of each input's RetrieveURL
    retry_initial_s: float = 5.0  # first wait after a failure or a deferral; doubles per attempt
    retry_max_s: float = 600.0
    queue_window: int = 1000  # events read per pass: more than can be waiting on retries at once
    recovery_window_s: float = 0.0  # at start, studies changed this long before Orthanc's last change are queued
    recovery_max_changes: int = 20_000  # ... reading at most this many changes back

    @classmethod
    def from_settings(cls, settings: Settings) -> IntakeSettings:
        return cls(dicomweb_base=settings.dicomweb_url, recovery_window_s=settings.stable_age_s + 60.0)


@dataclass
class _Retry:
    attempts: int = 0
    not_before: float = 0.0


def _superseded_events(events: Sequence[IntakeEvent]) -> set[int]:
    """Events followed by another event of the same kind for the same resource, with none between: redundant."""
    later_kind: dict[str, str] = {}
    redundant = set()
    for event in reversed(events):
        if later_kind.get(event.resource_id) == event.kind:
            redundant.add(event.id)
        later_kind[event.resource_id] = event.kind
    return redundant


@dataclass
class IntakeProcessor:
    """Drains the durable event queue: each event is acknowledged only once fully handled.

    Events of one resource are handled in order; a failing or deferred event waits (exponential backoff) and
    holds back later events of its resource only, never the whole queue. One thread drains it.
    """

    store: EventQueue
    service: IntakeService
    gateway: OrthancGateway
    matcher: Matcher
    config: IntakeSettings
    clock: Callable[[], float] = time.monotonic  # for retry delays
    now: Clock = utc_now  # for the DateTimes written into workitems
    _retries: dict[int, _Retry] = field(default_factory=dict, init=False)
    _recovered: bool = field(default=False, init=False)

    def process_pending(self) -> int:
        """Handle what is due; answers how many events were acknowledged."""
        if not self._recovered:
            self._recovered = True
            self.recover_unstable_studies()
        events = self.store.pending_events(limit=self.config.queue_window)
        redundant, held, acked = _superseded_events(events), set(), 0
        for event in events:
            if event.resource_id in held:
                continue
            if event.id in redundant or self._handle(event.id, event.kind, event.resource_id):
                self.store.ack_event(event.id)
                self._retries.pop(event.id, None)
                acked += 1
            else:
                held.add(event.resource_id)
        return acked

    def _handle(self, event_id: int, kind: str, resource_id: str) -> bool:
        retry = self._retries.setdefault(event_id, _Retry())
        if self.clock() < retry.not_before:
            return False
        try:
            done = self._dispatch(kind, resource_id)
        except Exception:
            log.exception("intake of %s %s failed (attempt %d); will retry", kind, resource_id, retry.attempts + 1)
            done = False
        if not done:
            retry.attempts += 1
            delay = min(self.config.retry_initial_s * 2 ** (retry.attempts - 1), self.config.retry_max_s)
            retry.not_before = self.clock() + delay
        return done

    def _dispatch(self, kind: str, resource_id: str) -> bool:
        if kind.lower() == STABLE_STUDY:
            return self.stable_study(resource_id)
        if kind.lower() == DELETED_STUDY:
            self.deleted_study(resource_id)
            return True
        log.warning("ignoring intake event of unknown kind %r for %s", kind, resource_id)
        return True

    def stable_study(self, orthanc_study_id: str) -> bool:
        """Plan and apply one study; False when the plan is deferred (to be handled again)."""
        try:
            snapshot = read_study(self.gateway, orthanc_study_id, details_for=is_input_series)
        except ResourceNotFound:
            log.info("study %s is no longer in Orthanc: stable event dropped", orthanc_study_id)
            return True
        matches = self.matcher.match(snapshot)
        if not matches:
            log.info("no algorithm applies to study %s", snapshot.study_instance_uid)
            return True
        existing = self.service.find(study_instance_uid=snapshot.study_instance_uid)
        actions = plan_study(snapshot, matches, existing, dicomweb_base=self.config.dicomweb_base, now=self.now())
        touched = apply(actions, self.service)
        log.info("study %s: %d action(s), workitems %s", snapshot.study_instance_uid, len(actions), touched)
        return not any(isinstance(action, Defer) for action in actions)

    def recover_unstable_studies(self) -> list[str]:
        """Queue the studies changed in Orthanc's last ``recovery_window_s`` before its last change (see the module);
        answers their Orthanc ids. Never raises: what cannot be read is logged, and intake goes on."""
        if self.config.recovery_window_s <= 0:
            return []
        try:
            studies = list(dict.fromkeys(self._recently_changed_studies()))
        except Exception:
            log.warning("reading Orthanc's change log to recover studies received before the start failed",
                        exc_info=True)
            return []
        for study in studies:
            self.store.enqueue_event(STABLE_STUDY, study)
        if studies:
            log.warning("queued %d study(ies) changed shortly before Orthanc last stopped (a study Orthanc had not "
                        "reported stable then never will be): %s", len(studies), ", ".join(studies))
        return studies

    def _recently_changed_studies(self) -> Iterator[str]:
        last = self.gateway.get_json("/changes?last")
        last_seq = int(last.get("Last", 0))
        newest = [change for change in last.get("Changes", []) if change.get("Date")]
        if not last_seq or not newest:
            return
        since = _orthanc_date(newest[-1]["Date"]) - timedelta(seconds=self.config.recovery_window_s)
        changes: list[dict] = []
        upper = last_seq
        while upper > 0 and last_seq - upper < self.config.recovery_max_changes:
            lower = max(0, upper - 1000)
            page = [c for c in self.gateway.get_json(f"/changes?since={lower}&limit=1000").get("Changes", [])
                    if lower < int(c.get("Seq", 0)) <= upper]
            changes[:0] = page
            upper = lower
            if not page or _orthanc_date(page[0].get("Date", "")) < since:
                break
        for change in changes:
            if _orthanc_date(change.get("Date", "")) < since:
                continue
            study = self._study_of(change)
            if study is not None:
                yield study

    def _study_of(self, change: dict) -> str | None:
        """The Orthanc study a logged change is about (None: another level, or gone since)."""
        kind, level, resource = change.get("ChangeType", ""), change.get("ResourceType", ""), change.get("ID", "")
        if kind == "Deleted" or not resource:
            return None
        try:
            if level == "Study":
                return resource
            if level == "Series":
                return str(self.gateway.get_json(f"/series/{resource}")["ParentStudy"])
            if level == "Instance":
                return str(self.gateway.get_json(f"/instances/{resource}/study")["ID"])
        except (ResourceNotFound, KeyError):
            return None
        return None

    def deleted_study(self, orthanc_study_id: str) -> list[str]:
        """Cancel every non-final workitem of the deleted study (found by recomputing Orthanc's study id)."""
        items = map(ItemFacts.from_json, self.service.find(states=[SCHEDULED, IN_PROGRESS]))
        doomed = [f.uid for f in items if orthanc_id_of_study(f.patient_id, f.study_uid) == orthanc_study_id]
        canceled = [uid for uid in doomed if force_cancel_quietly(self.service, uid, STUDY_DELETED_REASON)]
        log.info("study %s deleted: canceled workitems %s", orthanc_study_id, canceled or "none")
        return canceled


def _orthanc_date(text: str) -> datetime:
    """The Date of an Orthanc change (``20261202T020505``, Orthanc's local time); the distant past when unreadable."""
    try:
        return datetime.strptime(text, "%Y%m%dT%H%M%S")
    except ValueError:
        return datetime.min
