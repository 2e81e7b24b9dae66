"""One clock: on a server whose time zone is far from UTC, every DateTime the plugin writes names the right instant.

Orthanc runs with ``TZ=Pacific/Auckland`` (UTC+12/+13). A workitem made by intake and one made by a manual run are
both performed; each DT they carry must hold its UTC offset and fall between the moments before and after the run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydicom.uid import generate_uid
from pydicom.valuerep import DT

from ai_orchestrator.phantom import make_chest_phantom
from tests.integration.studies import upload_rest, wait_for, workitems_of
from tests.integration.workitems import ROOT, value
from tests.orthanc_server import OrthancServer

SLACK = timedelta(seconds=2)  # DT values carry microseconds; the test's own clock reads are taken around them


@pytest.fixture(scope="module")
def auckland(tmp_path_factory):
    with OrthancServer(tmp_path_factory.mktemp("orthanc-auckland"), stable_age=1,
                       extra_env={"TZ": "Pacific/Auckland"}) as server:
        yield server


def _instant(text: str, what: str) -> datetime:
    moment = DT(text)
    assert moment.tzinfo is not None, f"{what} {text!r} has no UTC offset: which instant it names depends on the TZ"
    return moment


def _date_times(item: dict) -> dict[str, str]:
    """The DateTimes a completed workitem carries, by name."""
    performed = item["00741216"]["Value"][0]
    return {
        "ScheduledProcedureStepStartDateTime": value(item, "00404005"),
        "ScheduledProcedureStepModificationDateTime": value(item, "00404010"),
        "PerformedProcedureStepStartDateTime": value(performed, "00404050"),
        "PerformedProcedureStepEndDateTime": value(performed, "00404051"),
    }


def _completed(client, patient_id: str, count: int) -> list[dict]:
    def done():
        items = workitems_of(client, patient_id)
        finished = [item for item in items if value(item, "00741000") in ("COMPLETED", "CANCELED")]
        return items if len(items) >= count and len(finished) == len(items) else None

    items = wait_for(done, timeout=180, interval=0.5)
    assert {value(item, "00741000") for item in items} == {"COMPLETED"}, [item.get("00741002") for item in items]
    return items


def test_automatic_and_manual_workitems_name_the_right_instant(auckland):
    client = auckland.client
    assert client.get("/system").status_code == 200
    patient = f"TZ{generate_uid()[-8:]}"
    phantom = make_chest_phantom(slices=20, rows=128, patient_id=patient)

    before = datetime.now(UTC)
    study_id = upload_rest(client, phantom.datasets)
    automatic = _completed(client, patient, count=1)
    run = client.post(f"{ROOT}/studies/{study_id}/run", json={"model": "ct-chest-quant"})
    assert run.status_code == 201, run.text
    manual_uid = run.json()["workitem"]
    items = _completed(client, patient, count=len(automatic) + 1)
    after = datetime.now(UTC)

    manual = [item for item in items if value(item, "00080018") == manual_uid]
    assert manual and value(manual[0], "00741200") == "HIGH"
    for item in automatic + manual:
        uid = value(item, "00080018")
        for name, text in _date_times(item).items():
            moment = _instant(text, f"{uid} {name}")
            assert before - SLACK <= moment <= after + SLACK, (
                f"{uid} {name} = {text} ({moment.astimezone(UTC)} UTC) is not between "
                f"{before} and {after}: written in the wrong time zone?")
        times = {name: _instant(text, name) for name, text in _date_times(item).items()}
        assert times["ScheduledProcedureStepStartDateTime"] <= times["PerformedProcedureStepStartDateTime"] \
            <= times["PerformedProcedureStepEndDateTime"] <= times["ScheduledProcedureStepModificationDateTime"]
