"""The in-process performer end to end: phantom CT in over C-STORE, results back in the same study."""

from __future__ import annotations

import shutil
import textwrap
from io import BytesIO

import pydicom
import pytest
from pydicom.uid import generate_uid

from ai_orchestrator.phantom import make_chest_phantom
from tests.dicom_checks import dciodvfy_errors, numeric_items
from tests.integration.studies import (
    instances,
    upload_rest,
    upload_storescu,
    wait_for,
    workitems_of,
)
from tests.integration.workitems import ROOT, Ups, value
from tests.orthanc_server import REPO_DIR, OrthancServer

FINAL = ("COMPLETED", "CANCELED")


def final_workitems(client, patient_id: str, timeout: float = 120) -> dict[str, dict]:
    """Procedure Step Label (the model name) -> workitem, once every workitem of the patient is final."""
    def done():
        items = workitems_of(client, patient_id)
        return items if items and all(value(item, "00741000") in FINAL for item in items) else None

    return {value(item, "00741204"): item for item in wait_for(done, timeout=timeout, interval=0.5)}


def final_workitem(client, patient_id: str, timeout: float = 120) -> dict:
    [item] = final_workitems(client, patient_id, timeout).values()
    return item


def study_instances(client, study_uid: str, model: str) -> dict[str, list]:
    """Modality -> the pydicom datasets of the study's source series and of ``model``'s result series."""
    [study_id] = client.post("/tools/lookup", content=study_uid).json()
    by_modality: dict[str, list] = {}
    for series in client.get(f"/studies/{study_id['ID']}/series").json():
        description = series["MainDicomTags"].get("SeriesDescription", "")
        if series["MainDicomTags"]["Modality"] != "CT" and model not in description:
            continue
        for instance_id in series["Instances"]:
            blob = client.get(f"/instances/{instance_id}/file").content
            by_modality.setdefault(series["MainDicomTags"]["Modality"], []).append(
                pydicom.dcmread(BytesIO(blob)))
    return by_modality


@pytest.fixture(scope="module")
def phantom_run(orthanc, tmp_path_factory):
    patient = f"PH{generate_uid()[-8:]}"
    phantom = make_chest_phantom(slices=60, rows=256, emphysema_fraction=0.12, patient_id=patient)
    upload_storescu(orthanc.dicom_port, phantom.datasets, tmp_path_factory.mktemp("phantom"))
    return phantom, final_workitems(orthanc.client, patient)


def test_every_applicable_model_gets_a_completed_workitem(phantom_run):
    _phantom, items = phantom_run
    assert set(items) == {"ct-chest-quant", "learned-lungs"}  # the built-in models that apply to chest CT
    assert {value(item, "00741000") for item in items.values()} == {"COMPLETED"}, items


def test_phantom_workitem_completes_with_its_outputs_listed(orthanc, phantom_run):
    phantom, items = phantom_run
    item = items["ct-chest-quant"]
    assert value(item, "00741000") == "COMPLETED", item.get("00741002")
    performed = item["00741216"]["Value"][0]
    outputs = performed["00404033"]["Value"]
    assert len(outputs) == 3
    assert {value(output, "0020000D") for output in outputs} == {phantom.study_uid}
    for output in outputs:  # each listed series is retrievable through DICOMweb
        url = value(output["0040E025"]["Value"][0], "00081190")
        assert orthanc.client.get(url.split(f":{orthanc.http_port}", 1)[1] + "/metadata").status_code == 200


def test_results_are_in_the_same_study_and_agree_with_the_truth(orthanc, phantom_run, tmp_path):
    phantom, _items = phantom_run
    study = study_instances(orthanc.client, phantom.study_uid, "ct-chest-quant")
    [seg], [sr] = study["SEG"], study["SR"]
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Body", "Lungs", "Bone"]
    assert "ct-chest-quant" in seg.SeriesDescription
    numbers = numeric_items(sr.ContentSequence)
    volume = numbers["Volume"][0]
    laa = numbers["Lung volume below -950 HU (percent)"][0]
    assert volume == pytest.approx(phantom.truth.lung_volume_ml, rel=0.05)
    assert laa == pytest.approx(phantom.truth.laa950_percent, rel=0.05)
    previews = [ds for modality, items in study.items() if modality not in ("CT", "SEG", "SR") for ds in items]
    assert len(previews) == 1 and previews[0].SOPClassUID.startswith("1.2.840.10008.5.1.4.1.1.7")
    for number, ds in enumerate([seg, sr, previews[0]]):
        path = tmp_path / f"out{number}.dcm"
        ds.save_as(path)
        assert dciodvfy_errors(path) == [], ds.Modality


def test_results_are_stored_through_orthancs_http_port_on_loopback(orthanc, phantom_run):
    """Plugin 4.0 (and AllowThreads off) holds the GIL in orthanc.* calls: results go through 127.0.0.1:HttpPort,
    so the plugin's routes do not wait while Orthanc stores a SEG (gateway/loopback.py)."""
    phantom, items = phantom_run
    results = sum(len(item["00741216"]["Value"][0]["00404033"]["Value"]) for item in items.values())
    store = orthanc.client.get(f"{ROOT}/system").json()["ResultStore"]
    assert store["Mode"] == "loopback", store
    assert store["Url"] == f"http://127.0.0.1:{orthanc.http_port}"
    assert store["Stored"]["Loopback"] >= results and store["Stored"]["InProcess"] == 0, store
    assert store["LastFallback"] is None


def test_result_series_trigger_no_new_workitems(orthanc, phantom_run):
    phantom, items = phantom_run
    study_id = orthanc.client.post("/tools/lookup", content=phantom.study_uid).json()[0]["ID"]
    wait_for(lambda: orthanc.client.get(f"/studies/{study_id}").json().get("IsStable"), timeout=30)
    assert len(workitems_of(orthanc.client, phantom.datasets[0].PatientID)) == len(items)


def test_models_route_is_the_capability_statement(orthanc):
    [model] = [m for m in orthanc.client.get(f"{ROOT}/models").json() if m["name"] == "ct-chest-quant"]
    assert model["status"] == "ok"
    assert model["algorithm"]["CodeValue"] == "CTCHESTQUANT"
    assert set(model["outputs"]) == {"SEG", "SR", "SC"}
    assert model["inputs"]["series"]["Modality"] == "^CT$"
    assert model["device"] in ("cpu", "cuda:0")


def test_manual_run_schedules_a_high_priority_workitem(orthanc, phantom_run):
    phantom, _items = phantom_run
    study_id = orthanc.client.post("/tools/lookup", content=phantom.study_uid).json()[0]["ID"]
    answer = orthanc.client.post(f"{ROOT}/studies/{study_id}/run", json={"model": "ct-chest-quant"})
    assert answer.status_code == 201, answer.text
    uid = answer.json()["workitem"]
    assert answer.headers["Location"].endswith(f"/workitems/{uid}")
    ups = Ups(orthanc.client)
    assert value(ups.dataset(uid), "00741200") == "HIGH"
    wait_for(lambda: ups.state(uid) == "COMPLETED", timeout=120, interval=0.5)

    assert orthanc.client.post(f"{ROOT}/studies/{study_id}/run", json={"model": "nope"}).status_code == 404
    assert orthanc.client.post(f"{ROOT}/studies/{study_id}/run", json={}).status_code == 400
    assert orthanc.client.post(f"{ROOT}/studies/no-such-study/run",
                               json={"model": "ct-chest-quant"}).status_code == 404


RAISING_MODEL = '''
from pydicom.sr.coding import Code
from ai_orchestrator.modeling.api import ModelSpec

def predict(volume, device, context):
    raise RuntimeError("model exploded on purpose")

MODEL = ModelSpec(name="always-fails", version="0.1", algorithm=Code("FAILS", "99TEST", "Always fails"),
                  applies_to={"Modality": "^MR$"}, predict=predict, prepare=list,
                  outputs=frozenset({"SEG"}))
'''


@pytest.fixture(scope="module")
def failing_orthanc(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    shutil.copy(REPO_DIR / "models" / "ct_chest_quant.py", models)
    (models / "always_fails.py").write_text(textwrap.dedent(RAISING_MODEL))
    (models / "does_not_import.py").write_text("import no_such_module_anywhere\n")
    with OrthancServer(tmp_path_factory.mktemp("failing-data"),
                       extra_env={"AI_ORCHESTRATOR_MODELS_DIR": str(models)}) as server:
        yield server


def test_broken_model_modules_are_listed_with_their_error(failing_orthanc):
    listing = {m["name"]: m for m in failing_orthanc.client.get(f"{ROOT}/models").json()}
    assert listing["ct-chest-quant"]["status"] == "ok"
    broken = [m for m in listing.values() if m["status"] == "error"]
    assert len(broken) == 1 and "no_such_module_anywhere" in broken[0]["error"]


def test_a_failing_model_ends_canceled_with_its_error(failing_orthanc):
    patient = f"F{generate_uid()[-8:]}"
    upload_rest(failing_orthanc.client, instances("MR_small.dcm", count=2, patient_id=patient,
                                                  study_uid=generate_uid()))
    item = final_workitem(failing_orthanc.client, patient, timeout=90)
    assert value(item, "00741000") == "CANCELED"
    progress = item["00741002"]["Value"][0]
    assert "failed after 3 attempt(s)" in value(progress, "00741238")
    assert "model exploded on purpose" in value(progress, "00741238")
    assert "0074100E" in progress


def test_a_corrupt_study_ends_canceled_and_others_carry_on(failing_orthanc):
    patient = f"C{generate_uid()[-8:]}"
    phantom = make_chest_phantom(slices=16, rows=64, patient_id=patient)
    broken = phantom.datasets[5]
    broken.PixelData = broken.PixelData[: len(broken.PixelData) // 3]  # truncated pixel data
    upload_rest(failing_orthanc.client, phantom.datasets)
    item = final_workitem(failing_orthanc.client, patient, timeout=90)
    assert value(item, "00741000") == "CANCELED"
    reason = value(item["00741002"]["Value"][0], "00741238")
    assert "InputError" in reason and "attempt(s)" in reason and "failed after 1" in reason  # bad data: no retry
    # Orthanc and the performer are still fine: a good study still completes
    good = make_chest_phantom(slices=16, rows=64, patient_id=patient + "OK")  # only ct-chest-quant is loaded here
    upload_rest(failing_orthanc.client, good.datasets)
    assert value(final_workitem(failing_orthanc.client, patient + "OK", timeout=90), "00741000") == "COMPLETED"
