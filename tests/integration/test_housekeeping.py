"""Stale work in a real Orthanc: SCHEDULED items nobody starts, IN PROGRESS items whose performer went silent."""

from __future__ import annotations

import json
import time

import pytest
from pydicom import Dataset

from tests.integration.studies import wait_for
from tests.integration.workitems import Ups, value
from tests.orthanc_server import OrthancServer


@pytest.fixture(scope="module")
def strict_orthanc(tmp_path_factory):
    settings = {"ScheduledMaxAgeSeconds": 3, "LeaseSeconds": 3, "HousekeepingIntervalSeconds": 1, "Workers": 0}
    with OrthancServer(tmp_path_factory.mktemp("strict"),
                       extra_env={"AI_ORCHESTRATOR_SETTINGS": json.dumps(settings)}) as server:
        yield server


def reason(ups: Ups, uid: str) -> str:
    return value(ups.dataset(uid)["00741002"]["Value"][0], "00741238")


def test_a_scheduled_item_nobody_starts_is_canceled_with_a_reason(strict_orthanc):
    ups = Ups(strict_orthanc.client)
    uid = ups.scheduled()
    wait_for(lambda: ups.state(uid) == "CANCELED", timeout=20)
    assert "not started" in reason(ups, uid)


def test_an_expired_lease_is_canceled_and_the_work_rescheduled(strict_orthanc):
    ups = Ups(strict_orthanc.client)
    uid, _tuid = ups.in_progress()
    wait_for(lambda: ups.state(uid) == "CANCELED", timeout=20)
    assert "lease" in reason(ups, uid)

    def found() -> list[dict]:  # the replacement is created just after the cancel, in its own transaction
        return [item for item in ups.search(includefield="all").json()
                if any(value(ref, "00081155") == uid for ref in item.get("00741224", {}).get("Value", []))]

    wait_for(found, timeout=20)
    replacements = found()
    assert len(replacements) == 1
    assert value(replacements[0], "00741204") == value(ups.dataset(uid), "00741204")


def test_progress_keeps_the_lease(strict_orthanc):
    ups = Ups(strict_orthanc.client)
    uid, tuid = ups.in_progress()
    for percent in range(0, 80, 10):  # about 4 s of updates, longer than the 3 s lease
        item = Dataset()
        item.ProcedureStepProgress = percent
        progress = Dataset()
        progress.ProcedureStepProgressInformationSequence = [item]
        assert ups.update(uid, progress, tuid).status_code == 200
        time.sleep(0.5)
    assert ups.state(uid) == "IN PROGRESS"
