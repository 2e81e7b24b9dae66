"""Housekeeping: not-started and lease-expired items are canceled, lost work is scheduled again, old items purged."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from pydicom import Dataset

from ai_orchestrator.manager.housekeeping import (
    LEASE_EXPIRED_REASON,
    HousekeepingSettings,
    Report,
    cutoffs,
    not_started_reason,
    run_housekeeping,
)
from ai_orchestrator.manager.scheduling import ItemFacts
from ai_orchestrator.requester.planning import apply
from ai_orchestrator.ups.clock import format_dt
from ai_orchestrator.ups.constants import CANCELED, COMPLETED, IN_PROGRESS, SCHEDULED
from tests.unit.test_intake import NOW, FakeService, plan, series, study

HOUR = timedelta(hours=1)


def service_with(*states: str) -> tuple[FakeService, list[str]]:
    """One item per state, for different studies, all last modified at NOW."""
    service = FakeService()
    for n, state in enumerate(states):
        apply(plan(study(series(f"{n}.1"), uid=f"1.2.{n}"), []), service)
        uid = next(uid for uid in service.items if ItemFacts.from_json(service.items[uid]).study_uid == f"1.2.{n}")
        if state != SCHEDULED:
            service.set_state(uid, state)
    return service, list(service.items)


def test_everything_off_by_default():
    service, _uids = service_with(SCHEDULED, IN_PROGRESS, COMPLETED)
    assert run_housekeeping(service, NOW + 1000 * HOUR, HousekeepingSettings()) == Report()
    assert run_housekeeping(service, NOW + 1000 * HOUR, HousekeepingSettings(0, 0, 0)) == Report()
    assert [c[0] for c in service.calls] == ["create"] * 3


def test_cutoffs():
    limits = cutoffs(NOW, HousekeepingSettings(scheduled_max_age_s=60, lease_s=0, retention_days=2))
    assert (limits.scheduled, limits.lease, limits.retention) == (NOW - timedelta(seconds=60), None,
                                                                 NOW - timedelta(days=2))


def test_old_scheduled_item_is_canceled_with_the_reason():
    service, [old] = service_with(SCHEDULED)
    settings = HousekeepingSettings(scheduled_max_age_s=3600)
    assert run_housekeeping(service, NOW + HOUR - timedelta(seconds=1), settings) == Report()
    report = run_housekeeping(service, NOW + HOUR + timedelta(seconds=1), settings)
    assert report.not_started == [old] and report.replacements == []
    assert service.state(old) == CANCELED
    assert ItemFacts.from_json(service.items[old]).cancel_reasons == ("not started within 3600 s",)
    assert not_started_reason(3600) == "not started within 3600 s"


def test_expired_lease_cancels_and_schedules_the_same_work_again():
    service, [lost] = service_with(IN_PROGRESS)
    report = run_housekeeping(service, NOW + 2 * HOUR, HousekeepingSettings(lease_s=3600))
    assert report.lease_expired == [lost] and len(report.replacements) == 1
    assert ItemFacts.from_json(service.items[lost]).cancel_reasons == (LEASE_EXPIRED_REASON,)
    new = ItemFacts.from_json(service.items[report.replacements[0]])
    old = ItemFacts.from_json(service.items[lost])
    assert (new.state, new.replaces, new.inputs, new.code) == (SCHEDULED, (lost,), old.inputs, old.code)
    assert Dataset.from_json(service.items[new.uid]).ScheduledProcedureStepStartDateTime == \
        format_dt(NOW + 2 * HOUR)


def test_recent_progress_keeps_the_lease():
    service, [uid] = service_with(IN_PROGRESS)
    service.now = NOW + HOUR  # a progress update an hour later
    service.set_state(uid, IN_PROGRESS)
    assert run_housekeeping(service, NOW + HOUR + timedelta(minutes=30), HousekeepingSettings(lease_s=3600)) == \
        Report()


def test_lease_expiry_stops_replacing_after_max_attempts():
    service, [uid] = service_with(IN_PROGRESS)
    settings, now, expired, abandoned = HousekeepingSettings(lease_s=60, max_attempts=3), NOW, [], []
    for _ in range(5):
        now += HOUR
        report = run_housekeeping(service, now, settings)
        expired += report.lease_expired
        abandoned += report.abandoned
        for new in report.replacements:  # a performer claims the replacement, then dies too
            service.now = now
            service.set_state(new, IN_PROGRESS)
    assert len(expired) == 3 and expired[0] == uid and abandoned == [expired[2]]
    assert len(service.items) == 3 and [service.state(u) for u in service.items] == [CANCELED] * 3


def test_final_item_between_selection_and_cancel_gets_no_replacement():
    service, [uid] = service_with(IN_PROGRESS)

    service.force_cancel = lambda uid, reason, reason_code=None: False  # the performer completed just now
    report = run_housekeeping(service, NOW + 2 * HOUR, HousekeepingSettings(lease_s=60))
    assert report == Report() and len(service.items) == 1


def test_old_final_items_are_purged():
    service, [done, canceled, scheduled] = service_with(COMPLETED, CANCELED, SCHEDULED)
    report = run_housekeeping(service, NOW + timedelta(days=8), HousekeepingSettings(retention_days=7))
    assert report.purged == 2 and list(service.items) == [scheduled]


def test_one_failing_item_does_not_stop_the_pass():
    service, [first, second] = service_with(SCHEDULED, SCHEDULED)
    real = service.force_cancel

    def flaky(uid, reason, reason_code=None):
        if uid == first:
            raise OSError("disk full")
        return real(uid, reason)

    service.force_cancel = flaky
    report = run_housekeeping(service, NOW + 2 * HOUR, HousekeepingSettings(scheduled_max_age_s=60))
    assert report.not_started == [second] and report.errors == [f"{first}: disk full"]


@pytest.mark.parametrize("status", [404, 409])
def test_item_gone_or_final_meanwhile_is_not_an_error(status):
    from ai_orchestrator.ups.errors import UPSError

    service, [uid] = service_with(SCHEDULED)

    def refuse(uid, reason, reason_code=None):
        raise UPSError(status, "C300", "final")

    service.force_cancel = refuse
    report = run_housekeeping(service, NOW + 2 * HOUR, HousekeepingSettings(scheduled_max_age_s=60))
    assert report == Report()


# Against the real WorkitemService ---------------------------------------------------------------------------

class MovableClock:
    def __init__(self) -> None:
        self.now = NOW.replace(tzinfo=UTC)

    def __call__(self):
        return self.now


@pytest.fixture
def real(tmp_path):
    from ai_orchestrator.manager.service import WorkitemService
    from ai_orchestrator.store.workitems import WorkitemStore

    clock = MovableClock()
    with WorkitemStore(tmp_path / "workitems.sqlite") as store:
        yield WorkitemService(store, clock=clock), clock


def test_real_service_lease_expiry_reschedules_and_locks_out_the_lost_performer(real):
    service, clock = real
    [uid] = apply(plan(study(series("1.1")), []), service)
    assert service.claim(uid, "2.25.99")
    clock.now += 2 * HOUR
    report = run_housekeeping(service, clock.now, HousekeepingSettings(lease_s=3600, scheduled_max_age_s=60))
    assert report.lease_expired == [uid] and report.not_started == [] and len(report.replacements) == 1
    assert ItemFacts.from_json(service.retrieve(uid)).cancel_reasons[0] == LEASE_EXPIRED_REASON
    new = ItemFacts.from_json(service.retrieve(report.replacements[0]))
    assert (new.state, new.replaces) == (SCHEDULED, (uid,))
    assert not service.claim(uid, "2.25.99")  # the late performer cannot take it back


def test_real_service_not_started_and_purge(real):
    service, clock = real
    [uid] = apply(plan(study(series("1.1")), []), service)
    clock.now += 2 * HOUR
    settings = HousekeepingSettings(scheduled_max_age_s=3600, retention_days=1)
    assert run_housekeeping(service, clock.now, settings).not_started == [uid]
    assert service.retrieve(uid)  # canceled just now: kept for a day
    clock.now += timedelta(days=2)
    assert run_housekeeping(service, clock.now, settings).purged == 1
    assert service.find() == []


def test_a_pass_stops_between_items_when_asked():
    service, uids = service_with(SCHEDULED, SCHEDULED, SCHEDULED)
    answers = iter([True, False])  # yes for the first item, then a shutdown arrives
    report = run_housekeeping(service, NOW + 2 * HOUR, HousekeepingSettings(scheduled_max_age_s=60),
                              keep_going=lambda: next(answers, False))
    assert len(report.not_started) == 1
    assert sum(ItemFacts.from_json(service.items[uid]).state == SCHEDULED for uid in uids) == 2
