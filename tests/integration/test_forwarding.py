"""Results reach the PACS end to end: a second real Orthanc acts as the PACS, a modality of the first (ForwardTo,
DeleteStudyAfterForward). The SEG, SR and SC arrive there by C-STORE and the Output Information Sequence names them;
while the PACS is down the workitem says it is retrying and why, the study stays, and once the PACS is back the
results arrive and only then does the study leave the first Orthanc."""

from __future__ import annotations

import json
import shutil

import pytest
from pydicom.uid import generate_uid

from ai_orchestrator.phantom import make_chest_phantom
from tests.integration.studies import upload_rest, wait_for, workitems_of
from tests.integration.workitems import value
from tests.orthanc_server import REPO_DIR, OrthancServer

PACS_AET = "PACS"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """The PACS: a plain Orthanc as far as these tests go (no models, no in-process performer)."""
    with OrthancServer(tmp_path_factory.mktemp("pacs-data"), extra_env={
            "AI_ORCHESTRATOR_MODELS_DIR": str(tmp_path_factory.mktemp("pacs-models")),
            "AI_ORCHESTRATOR_SETTINGS": json.dumps({"Workers": 0})}) as server:
        yield server


@pytest.fixture(scope="module")
def ai(tmp_path_factory, pacs):
    """The AI Orthanc: ct-chest-quant only; results forwarded to the PACS, then the study deleted."""
    models = tmp_path_factory.mktemp("ai-models")
    shutil.copy(REPO_DIR / "models" / "ct_chest_quant.py", models)
    settings = {"ForwardTo": "pacs", "DeleteStudyAfterForward": True, "ForwardRetryIntervalSeconds": 2}
    with OrthancServer(tmp_path_factory.mktemp("ai-data"), extra_env={
            "AI_ORCHESTRATOR_MODELS_DIR": str(models), "AI_ORCHESTRATOR_SETTINGS": json.dumps(settings)}) as server:
        answer = server.client.put("/modalities/pacs", json={"AET": PACS_AET, "Host": "127.0.0.1",
                                                             "Port": pacs.dicom_port})
        assert answer.status_code == 200, answer.text
        yield server


def send_phantom(ai) -> tuple[str, str]:
    patient = f"FW{generate_uid()[-8:]}"
    phantom = make_chest_phantom(slices=16, rows=64, patient_id=patient)
    upload_rest(ai.client, phantom.datasets)
    return patient, phantom.study_uid


def the_workitem(client, patient: str, condition) -> dict:
    def found():
        items = workitems_of(client, patient)
        return items[0] if len(items) == 1 and condition(items[0]) else None

    return wait_for(found, timeout=180, interval=0.5)


def completed(item: dict) -> bool:
    return value(item, "00741000") == "COMPLETED"


def progress(item: dict) -> str:
    items = item.get("00741002", {}).get("Value") or [{}]
    return value(items[0], "00741006") or ""


def in_orthanc(server: OrthancServer, uid: str) -> list[dict]:
    return server.client.post("/tools/lookup", content=uid).json()


def outputs_of(item: dict) -> list[dict]:
    return item["00741216"]["Value"][0]["00404033"]["Value"]


def received(pacs: OrthancServer, output: dict) -> dict:
    """What the PACS holds of one output: its modality and how it came."""
    [sop] = output["00081199"]["Value"]
    [found] = in_orthanc(pacs, value(sop, "00081155"))
    assert found["Type"] == "Instance"
    tags = pacs.client.get(f"/instances/{found['ID']}/simplified-tags").json()
    metadata = {name: pacs.client.get(f"/instances/{found['ID']}/metadata/{name}").text
                for name in ("Origin", "RemoteAET")}
    return {"Modality": tags["Modality"], "SOPClassUID": tags["SOPClassUID"],
            "SeriesInstanceUID": tags["SeriesInstanceUID"], **metadata}


def test_seg_sr_and_sc_reach_the_pacs_by_c_store_and_the_output_information_names_them(ai, pacs):
    patient, study_uid = send_phantom(ai)
    item = the_workitem(ai.client, patient, completed)
    outputs = outputs_of(item)
    assert len(outputs) == 3
    at_pacs = [received(pacs, output) for output in outputs]
    assert sorted(found["Modality"] for found in at_pacs) == ["OT", "SEG", "SR"]
    assert all(found["Origin"] == "DicomProtocol" and found["RemoteAET"] == "ORTHANC" for found in at_pacs)
    for output, found in zip(outputs, at_pacs):
        assert value(output, "0020000E") == found["SeriesInstanceUID"]
        assert output["00080054"]["Value"] == [PACS_AET]  # Retrieve AE Title: where the results are kept
    # forwarded, so the study leaves the AI Orthanc (DeleteStudyAfterForward)
    wait_for(lambda: in_orthanc(ai, study_uid) == [], timeout=60)


def test_a_pacs_that_is_down_is_retried_visibly_and_the_study_stays_until_the_results_are_forwarded(ai, pacs):
    pacs.stop()
    try:
        patient, study_uid = send_phantom(ai)
        first = the_workitem(ai.client, patient, lambda item: "failed (attempt 1)" in progress(item))
        assert value(first, "00741000") == "IN PROGRESS"
        text = progress(first)
        assert "forwarding to pacs (PACS) failed" in text and "trying again in" in text and "Reason:" in text
        assert in_orthanc(ai, study_uid) != []  # never deleted before the results are forwarded
        later = the_workitem(ai.client, patient, lambda item: "failed (attempt 3)" in progress(item))
        assert value(later, "00741000") == "IN PROGRESS" and in_orthanc(ai, study_uid) != []
    finally:
        pacs.start()
    item = the_workitem(ai.client, patient, completed)
    outputs = outputs_of(item)
    assert sorted(received(pacs, output)["Modality"] for output in outputs) == ["OT", "SEG", "SR"]
    wait_for(lambda: in_orthanc(ai, study_uid) == [], timeout=60)
