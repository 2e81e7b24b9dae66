"""The three model formats against a real Orthanc: a TorchScript model (Python module), a MONAI bundle and an ONNX
model, each dropped into the models directory as the README says, run on an uploaded study and write their SEG and
SR into it; a bad bundle and a model that reuses another's algorithm code are listed by GET /models with the
reason, and never run."""

from __future__ import annotations

import json
import shutil
from io import BytesIO

import pydicom
import pytest
from pydicom.uid import generate_uid

from ai_orchestrator.phantom import make_chest_phantom
from tests.dicom_checks import numeric_items
from tests.integration.studies import upload_rest, wait_for, workitems_of
from tests.integration.workitems import ROOT, value
from tests.orthanc_server import REPO_DIR, OrthancServer

EXAMPLES = REPO_DIR / "examples" / "models"
FORMATS = {"learned-lungs": "python", "lungs-monai-bundle": "monai-bundle", "lungs-onnx": "onnx"}
SAME_CODE = '''
from pydicom.sr.coding import Code
from ai_orchestrator.modeling.api import ModelResult, ModelSpec

MODEL = ModelSpec(name="copycat", version="1", algorithm=Code("LEARNEDLUNGS", "99ORTHANCAI", "Same code"),
                  applies_to={"Modality": "^CT$"}, predict=lambda *_: ModelResult())
'''


@pytest.fixture(scope="module")
def formats_orthanc(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    shutil.copy(REPO_DIR / "models" / "learned_lungs.py", models)  # TorchScript, its weights beside it
    shutil.copytree(REPO_DIR / "models" / "weights", models / "weights")
    shutil.copytree(EXAMPLES / "lungs-monai-bundle", models / "lungs-monai-bundle")
    shutil.copytree(EXAMPLES / "lungs-onnx", models / "lungs-onnx")
    broken = shutil.copytree(EXAMPLES / "lungs-monai-bundle", models / "mismatched-bundle")
    config = json.loads((broken / "configs" / "inference.json").read_text())
    config["network_def"]["channels"] = [8, 16, 32, 32]
    (broken / "configs" / "inference.json").write_text(json.dumps(config))
    (models / "zz_copycat.py").write_text(SAME_CODE)
    with OrthancServer(tmp_path_factory.mktemp("formats-data"),
                       extra_env={"AI_ORCHESTRATOR_MODELS_DIR": str(models)}) as server:
        yield server


@pytest.fixture(scope="module")
def study_run(formats_orthanc):
    patient = f"FMT{generate_uid()[-8:]}"
    phantom = make_chest_phantom(slices=16, rows=96, emphysema_fraction=0.15, patient_id=patient)
    upload_rest(formats_orthanc.client, phantom.datasets)

    def done():
        items = workitems_of(formats_orthanc.client, patient)
        final = len(items) == len(FORMATS) and all(value(i, "00741000") in ("COMPLETED", "CANCELED") for i in items)
        return items if final else None

    items = wait_for(done, timeout=300, interval=1)
    return phantom, {value(item, "00741204"): item for item in items}


def test_models_route_lists_each_format_and_the_refused_models_with_their_reasons(formats_orthanc):
    listing = {m["source"]: m for m in formats_orthanc.client.get(f"{ROOT}/models").json()}
    for name, kind in FORMATS.items():
        [model] = [m for m in listing.values() if m["name"] == name]
        assert model["status"] == "ok" and model["format"] == kind, model["error"]
    mismatched = listing["mismatched-bundle"]
    assert mismatched["status"] == "error" and mismatched["format"] == "monai-bundle"
    assert "the weights models/model.pt do not match the network" in mismatched["error"]
    copycat = listing["zz_copycat.py"]
    assert copycat["status"] == "error"
    assert "algorithm code (LEARNEDLUNGS, 99ORTHANCAI) is already declared by learned_lungs.py" in copycat["error"]


def test_each_format_completes_one_workitem(study_run):
    _phantom, items = study_run
    assert set(items) == set(FORMATS)  # the refused models get none
    assert {name: value(item, "00741000") for name, item in items.items()} == dict.fromkeys(FORMATS, "COMPLETED")


def test_each_format_writes_seg_and_sr_into_the_study(formats_orthanc, study_run):
    phantom, _items = study_run
    client = formats_orthanc.client
    [study] = client.post("/tools/lookup", content=phantom.study_uid).json()
    results: dict[str, dict[str, pydicom.Dataset]] = {}
    for series in client.get(f"/studies/{study['ID']}/series").json():
        tags = series["MainDicomTags"]
        model = next((name for name in FORMATS if name in tags.get("SeriesDescription", "")), None)
        if model and tags["Modality"] in ("SEG", "SR"):
            blob = client.get(f"/instances/{series['Instances'][0]}/file").content
            results.setdefault(model, {})[tags["Modality"]] = pydicom.dcmread(BytesIO(blob))
    assert set(results) == set(FORMATS)
    for model, objects in results.items():
        assert set(objects) >= {"SEG", "SR"}, model
        assert [s.SegmentLabel for s in objects["SEG"].SegmentSequence] == ["Lungs"], model
        assert str(objects["SEG"].StudyInstanceUID) == phantom.study_uid
        volume = numeric_items(objects["SR"].ContentSequence)["Volume"][0]
        assert volume == pytest.approx(phantom.truth.lung_volume_ml, rel=0.10), model
