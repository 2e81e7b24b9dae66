"""Housekeeping: not-started and lease-expired items are canceled, lost work is scheduled again, old items purged.

On the real WorkitemService over a store in a temp dir (tests/unit/conftest.py); items age and leases expire by
moving the service's clock, never by sleeping.
"""

from __future__ import annotations

from datetime import timedelta

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
from ai_orchestrator.ups.constants import (
    CANCELED,
    COMPLETED,
    DEFAULT_DISCONTINUATION_REASON,
    IN_PROGRESS,
    SCHEDULED,
)
from ai_orchestrator.ups.errors import UPSError
from ai_orchestrator.ups.sample import completion_attributes
from tests.unit.snapshots import NOW, plan, series, study

HOUR = timedelta(hours=1)
DISCONTINUED = DEFAULT_DISCONTINUATION_REASON[2]  # the code meaning the server adds to every cancel


def items_in(service, *states: str) -> list[str]:
    """One workitem per state, each of its own study, all last changed at the clock's present moment."""
    uids = []
    for n, state in enumerate(states):
        [uid] = apply(plan(study(series(f"{n}.1"), uid=f"1.2.{n}"), []), service)
        tuid = f"2.25.{100 + n}"
        if state in (IN_PROGRESS, COMPLETED):
            assert service.claim(uid, tuid)
        if state == COMPLETED:
            service.change_state(uid, COMPLETED, tuid, completion_attributes())
        if state == CANCELED:
            service.request_cancel(uid)  # a SCHEDULED item: canceled at once
        assert facts(service, uid).state == state
        uids.append(uid)
    return uids


def facts(service, uid: str) -> ItemFacts:
    return ItemFacts.from_json(service.retrieve(uid))


def all_facts(service) -> list[ItemFacts]:
    return [ItemFacts.from_json(item) for item in service.find()]


def test_everything_off_by_default(service, clock):
    items_in(service, SCHEDULED, IN_PROGRESS, COMPLETED)
    before = service.find()
    now = clock.advance(1000 * HOUR)
    assert run_housekeeping(service, now, HousekeepingSettings()) == Report()
    assert run_housekeeping(service, now, HousekeepingSettings(0, 0, 0)) == Report()
    assert service.find() == before  # nothing canceled, created or purged


def test_cutoffs():
    limits = cutoffs(NOW, HousekeepingSettings(scheduled_max_age_s=60, lease_s=0, retention_days=2))
    assert (limits.scheduled, limits.lease, limits.retention) == (NOW - timedelta(seconds=60), None,
                                                                 NOW - timedelta(days=2))


def test_old_scheduled_item_is_canceled_with_the_reason(service, clock):
    [old] = items_in(service, SCHEDULED)
    settings = HousekeepingSettings(scheduled_max_age_s=3600)
    assert run_housekeeping(service, clock.advance(HOUR - timedelta(seconds=1)), settings) == Report()
    report = run_housekeeping(service, clock.advance(timedelta(seconds=2)), settings)
    assert report.not_started == [old] and report.replacements == []
    assert facts(service, old).state == CANCELED
    assert facts(service, old).cancel_reasons == ("not started within 3600 s", DISCONTINUED)
    assert not_started_reason(3600) == "not started within 3600 s"


def test_expired_lease_cancels_and_schedules_the_same_work_again(service, clock):
    [lost] = items_in(service, IN_PROGRESS)
    now = clock.advance(2 * HOUR)
    report = run_housekeeping(service, now, HousekeepingSettings(lease_s=3600))
    assert report.lease_expired == [lost] and len(report.replacements) == 1
    old, new = facts(service, lost), facts(service, report.replacements[0])
    assert old.cancel_reasons == (LEASE_EXPIRED_REASON, DISCONTINUED)
    assert (new.state, new.replaces, new.inputs, new.code) == (SCHEDULED, (lost,), old.inputs, old.code)
    assert Dataset.from_json(service.retrieve(new.uid)).ScheduledProcedureStepStartDateTime == format_dt(now)


def test_recent_progress_keeps_the_lease(service, clock):
    [uid] = items_in(service, IN_PROGRESS)
    clock.advance(HOUR)
    service.report_progress(uid, service.transaction_uid_of(uid), 50, "halfway")  # a progress update an hour later
    settings = HousekeepingSettings(lease_s=3600)
    assert run_housekeeping(service, clock.advance(timedelta(minutes=30)), settings) == Report()
    assert facts(service, uid).state == IN_PROGRESS


def test_lease_expiry_stops_replacing_after_max_attempts(service, clock):
    [uid] = items_in(service, IN_PROGRESS)
    settings, expired, abandoned = HousekeepingSettings(lease_s=60, max_attempts=3), [], []
    for attempt in range(5):
        report = run_housekeeping(service, clock.advance(HOUR), settings)
        expired += report.lease_expired
        abandoned += report.abandoned
        for new in report.replacements:  # a performer claims the replacement, then dies too
            assert service.claim(new, f"2.25.{200 + attempt}")
    assert len(expired) == 3 and expired[0] == uid and abandoned == [expired[2]]
    assert [f.state for f in all_facts(service)] == [CANCELED] * 3


def test_final_item_between_selection_and_cancel_gets_no_replacement(service, clock, monkeypatch):
    [uid] = items_in(service, IN_PROGRESS)
    tuid, select = service.transaction_uid_of(uid), service.find_stale

    def selected_then_completed(state, modified_before):
        stale = select(state, modified_before)
        if uid in stale:  # the performer completes just after housekeeping picked the item
            service.change_state(uid, COMPLETED, tuid, completion_attributes())
        return stale

    monkeypatch.setattr(service, "find_stale", selected_then_completed)
    report = run_housekeeping(service, clock.advance(2 * HOUR), HousekeepingSettings(lease_s=60))
    assert report == Report() and [(f.uid, f.state) for f in all_facts(service)] == [(uid, COMPLETED)]


def test_old_final_items_are_purged(service, clock):
    _done, _canceled, scheduled = items_in(service, COMPLETED, CANCELED, SCHEDULED)
    report = run_housekeeping(service, clock.advance(timedelta(days=8)), HousekeepingSettings(retention_days=7))
    assert report.purged == 2 and [f.uid for f in all_facts(service)] == [scheduled]


def test_one_failing_item_does_not_stop_the_pass(service, clock, monkeypatch):
    first, second = items_in(service, SCHEDULED, SCHEDULED)
    cancel = service.force_cancel

    def flaky(uid, reason, reason_code=None):
        if uid == first:
            raise OSError("disk full")
        return cancel(uid, reason, reason_code)

    monkeypatch.setattr(service, "force_cancel", flaky)
    report = run_housekeeping(service, clock.advance(2 * HOUR), HousekeepingSettings(scheduled_max_age_s=60))
    assert report.not_started == [second] and report.errors == [f"{first}: disk full"]


@pytest.mark.parametrize("status", [404, 409])
def test_item_gone_or_final_meanwhile_is_not_an_error(service, clock, monkeypatch, status):
    [uid] = items_in(service, SCHEDULED)

    def refuse(uid, reason, reason_code=None):
        raise UPSError(status, "C300", "final")

    monkeypatch.setattr(service, "force_cancel", refuse)
    report = run_housekeeping(service, clock.advance(2 * HOUR), HousekeepingSettings(scheduled_max_age_s=60))
    assert report == Report() and facts(service, uid).state == SCHEDULED


def test_lease_expiry_reschedules_and_locks_out_the_lost_performer(service, clock):
    [uid] = apply(plan(study(series("1.1")), []), service)
    assert service.claim(uid, "2.25.99")
    clock.advance(2 * HOUR)
    report = run_housekeeping(service, clock.now, HousekeepingSettings(lease_s=3600, scheduled_max_age_s=60))
    assert report.lease_expired == [uid] and report.not_started == [] and len(report.replacements) == 1
    assert facts(service, uid).cancel_reasons[0] == LEASE_EXPIRED_REASON
    new = facts(service, report.replacements[0])
    assert (new.state, new.replaces) == (SCHEDULED, (uid,))
    assert not service.claim(uid, "2.25.99")  # the late performer cannot take it back


def test_not_started_and_purge(service, clock):
    [uid] = apply(plan(study(series("1.1")), []), service)
    clock.advance(2 * HOUR)
    settings = HousekeepingSettings(scheduled_max_age_s=3600, retention_days=1)
    assert run_housekeeping(service, clock.now, settings).not_started == [uid]
    assert service.retrieve(uid)  # canceled just now: kept for a day
    clock.advance(timedelta(days=2))
    assert run_housekeeping(service, clock.now, settings).purged == 1
    assert service.find() == []


def test_a_pass_stops_between_items_when_asked(service, clock):
    uids = items_in(service, SCHEDULED, SCHEDULED, SCHEDULED)
    answers = iter([True, False])  # yes for the first item, then a shutdown arrives
    report = run_housekeeping(service, clock.advance(2 * HOUR), HousekeepingSettings(scheduled_max_age_s=60),
                              keep_going=lambda: next(answers, False))
    assert len(report.not_started) == 1
    assert sum(facts(service, uid).state == SCHEDULED for uid in uids) == 2
