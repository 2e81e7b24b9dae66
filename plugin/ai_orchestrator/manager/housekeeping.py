"""Housekeeping: stale work is canceled (and, for lost performers, scheduled again); old final items are purged.

- a SCHEDULED item unchanged for ``scheduled_max_age_s`` → canceled ("not started within N s"): nobody runs
  that algorithm, and an ever-growing worklist helps no one;
- an IN PROGRESS item with no update for ``lease_s`` → canceled ("performer lease expired") — its performer is
  presumed dead; the cancel also locks out a late completion — and a replacement is scheduled (new UID, same
  inputs, ReplacedProcedureStepSequence naming it) so the work still gets done. After ``max_attempts`` expired
  leases in one chain of replacements the work is abandoned: an input that kills its performer must not loop;
- final items older than ``retention_days`` → purged.

Each setting at 0 (or None) disables its step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from ..config import Settings
from ..ups.constants import IN_PROGRESS, SCHEDULED
from ..ups.errors import UPSError
from .scheduling import (
    ItemFacts,
    create_idempotent,
    force_cancel_quietly,
    replacement_of,
)
from .service import WorkitemService

log = logging.getLogger("ai_orchestrator.housekeeping")

LEASE_EXPIRED_REASON = "performer lease expired"


def not_started_reason(max_age_s: int) -> str:
    return f"not started within {max_age_s} s"


@dataclass(frozen=True)
class HousekeepingSettings:
    scheduled_max_age_s: int | None = None
    lease_s: int | None = None
    retention_days: int | None = None
    max_attempts: int = 3  # performer leases that may expire in one chain of replacements

    @classmethod
    def from_settings(cls, settings: Settings) -> HousekeepingSettings:
        return cls(settings.scheduled_max_age_s, settings.lease_s, settings.retention_days, settings.max_attempts)


@dataclass
class Report:
    not_started: list[str] = field(default_factory=list)  # SCHEDULED items canceled
    lease_expired: list[str] = field(default_factory=list)  # IN PROGRESS items canceled
    replacements: list[str] = field(default_factory=list)  # new items doing their work
    abandoned: list[str] = field(default_factory=list)  # lease expired too often: canceled, not replaced
    purged: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Cutoffs:
    """Items last modified before these moments are stale (None: that step is off)."""

    scheduled: datetime | None
    lease: datetime | None
    retention: datetime | None


def _before(now: datetime, age: timedelta) -> datetime | None:
    return now - age if age else None


def cutoffs(now: datetime, settings: HousekeepingSettings) -> Cutoffs:
    return Cutoffs(scheduled=_before(now, timedelta(seconds=settings.scheduled_max_age_s or 0)),
                   lease=_before(now, timedelta(seconds=settings.lease_s or 0)),
                   retention=_before(now, timedelta(days=settings.retention_days or 0)))


def run_housekeeping(service: WorkitemService, now: datetime, settings: HousekeepingSettings,
                     keep_going: Callable[[], bool] = lambda: True) -> Report:
    """One pass over the workitems. Per-item failures are logged and reported; the pass goes on.

    ``keep_going`` is asked before each item, so a shutdown does not wait for a long pass to finish.
    """
    report, limits = Report(), cutoffs(now, settings)
    if limits.scheduled:
        reason = not_started_reason(settings.scheduled_max_age_s or 0)
        for uid in _while(keep_going, service.find_stale(SCHEDULED, limits.scheduled)):
            _guarded(report, uid, partial(_cancel_not_started, service, uid, reason, report))
    if limits.lease:
        for uid in _while(keep_going, service.find_stale(IN_PROGRESS, limits.lease)):
            _guarded(report, uid, partial(_expire_lease, service, uid, now, settings.max_attempts, report))
    if limits.retention and keep_going():
        report.purged = service.purge_final(limits.retention)
    if report != Report():
        log.info("housekeeping: %s", report)
    return report


def _while(keep_going: Callable[[], bool], uids: list[str]) -> Iterator[str]:
    for uid in uids:
        if not keep_going():
            return
        yield uid


def _guarded(report: Report, uid: str, step: Callable[[], None]) -> None:
    try:
        step()
    except Exception as error:  # one bad item must not stop the pass
        log.exception("housekeeping of workitem %s failed", uid)
        report.errors.append(f"{uid}: {error}")


def _cancel_not_started(service: WorkitemService, uid: str, reason: str, report: Report) -> None:
    if force_cancel_quietly(service, uid, reason):
        report.not_started.append(uid)


def _expire_lease(service: WorkitemService, uid: str, now: datetime, max_attempts: int, report: Report) -> None:
    item = service.retrieve(uid)
    if not force_cancel_quietly(service, uid, LEASE_EXPIRED_REASON):
        return  # it reached a final state meanwhile: its performer was alive after all
    report.lease_expired.append(uid)
    if expired_leases_before(service, item) + 1 >= max_attempts:
        log.warning("workitem %s: performer lease expired %d times, work abandoned", uid, max_attempts)
        report.abandoned.append(uid)
        return
    new_uid, dataset = replacement_of(item, now)
    create_idempotent(service, new_uid, dataset)
    report.replacements.append(new_uid)


def expired_leases_before(service: WorkitemService, item: dict) -> int:
    """How many items this one replaces, transitively, that were canceled because their lease expired."""
    count, facts = 0, ItemFacts.from_json(item)
    while facts.replaces:
        try:
            facts = ItemFacts.from_json(service.retrieve(facts.replaces[0]))
        except UPSError:  # purged or unknown: the chain ends here
            break
        if LEASE_EXPIRED_REASON not in facts.cancel_reasons:
            break
        count += 1
    return count

