"""The study routes the Orthanc Explorer panel reads: a study's workitems as summaries, and the models that apply to
it; over the real service and the repository's models, with Orthanc's REST answers for one study."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from pydicom.uid import generate_uid

from ai_orchestrator.gateway.protocol import OrthancError, ResourceNotFound
from ai_orchestrator.gateway.study import read_study
from ai_orchestrator.http.explorer import panel_javascript
from ai_orchestrator.http.messages import Request
from ai_orchestrator.http.studies import StudiesApi
from ai_orchestrator.modeling.registry import Registry
from ai_orchestrator.performer.performed import OutputSeries, completed_attributes
from ai_orchestrator.requester.building import build_workitem
from ai_orchestrator.requester.manual_run import applicable_models, schedule_run
from ai_orchestrator.requester.matching import RegistryMatcher
from ai_orchestrator.ups.constants import CANCELED, COMPLETED, IN_PROGRESS

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
STUDY_ID, STUDY_UID, PATIENT = "study-1", "1.2.3", "P1"
CT_UID, SEG_UID, GONE_UID = "1.2.3.1", "1.2.3.9", "1.2.3.99"
T1 = "1.2.3.4.5.6"
WHEN = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class OrthancStudy:
    """Orthanc's REST answers for one study (``modality`` images of ``body_part``, and a SEG of ours)."""

    def __init__(self, modality: str = "CT", body_part: str = "CHEST", images: int = 12) -> None:
        self.series = [
            {"ID": "series-ct", "MainDicomTags": {"SeriesInstanceUID": CT_UID, "Modality": modality,
                                                  "BodyPartExamined": body_part, "SeriesDescription": "Chest axial"}},
            {"ID": "series-seg", "MainDicomTags": {"SeriesInstanceUID": SEG_UID, "Modality": "SEG",
                                                   "Manufacturer": "Orthanc AI Orchestrator",
                                                   "SeriesDescription": "AI SEG ct-chest-quant 1.0.0"}},
        ]
        self.instances = [{"ID": f"ct-{n}", "ParentSeries": "series-ct",
                           "MainDicomTags": {"SOPInstanceUID": f"{CT_UID}.{n}", "InstanceNumber": str(n),
                                             "ImageOrientationPatient": "1\\0\\0\\0\\1\\0",
                                             "ImagePositionPatient": f"0\\0\\{2.5 * n}"}}
                          for n in range(1, images + 1)]
        self.instances.append({"ID": "seg-1", "ParentSeries": "series-seg",
                               "MainDicomTags": {"SOPInstanceUID": f"{SEG_UID}.1", "InstanceNumber": "1"}})
        self.down = False

    def get_json(self, uri: str):
        if self.down:
            raise OrthancError(f"GET {uri}: Orthanc error 500")
        path = uri.split("?")[0]
        if path == f"/studies/{STUDY_ID}":
            return {"ID": STUDY_ID, "MainDicomTags": {"StudyInstanceUID": STUDY_UID, "AccessionNumber": "A1"},
                    "PatientMainDicomTags": {"PatientID": PATIENT, "PatientName": "DOE^JANE"}}
        if path == f"/studies/{STUDY_ID}/series":
            return self.series
        if path == f"/studies/{STUDY_ID}/instances":
            return self.instances
        if path.startswith("/instances/") and path.endswith("/metadata"):
            return {"SopClassUid": SEG if path.startswith("/instances/seg") else CT_IMAGE}
        if path.startswith("/instances/") and path.endswith("/tags"):
            return {"ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "SliceThickness": "2.5"}
        raise ResourceNotFound(f"GET {uri}: no such resource")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load()  # the repository's models: ct-chest-quant and learned-lungs


@pytest.fixture
def orthanc() -> OrthancStudy:
    return OrthancStudy()


@pytest.fixture
def api(orthanc, registry, service) -> StudiesApi:
    return StudiesApi(orthanc, registry, service, device="cpu")


def get(handler, study: str = STUDY_ID):
    response = handler(Request("GET", f"/studies/{study}/..."), study)
    return response.status, json.loads(response.body) if response.body else None


def schedule(orthanc, registry, service, model: str, patient_id: str = PATIENT) -> str:
    snapshot = replace(read_study(orthanc, STUDY_ID), patient_id=patient_id)
    [(algorithm, series)] = [m for m in RegistryMatcher(registry).match(snapshot) if m[0].label == model]
    uid = generate_uid()
    service.create(build_workitem(snapshot, algorithm, series, uid=uid, dicomweb_base="http://x/dicom-web",
                                  now=WHEN), uid)
    return uid


def test_workitems_of_the_study_with_state_progress_reason_and_series(api, orthanc, registry, service):
    done = schedule(orthanc, registry, service, "ct-chest-quant")
    service.change_state(done, IN_PROGRESS, T1)
    outputs = [OutputSeries(STUDY_UID, SEG_UID, ((SEG, f"{SEG_UID}.1"),), "http://x/seg"),
               OutputSeries(STUDY_UID, GONE_UID, ((SEG, f"{GONE_UID}.1"),), "http://x/gone")]
    service.change_state(done, COMPLETED, T1, completed_attributes(WHEN, WHEN, ("CTCHESTQUANT", "99ORTHANCAI", "x"),
                                                                   outputs))
    running = schedule(orthanc, registry, service, "learned-lungs")
    service.change_state(running, IN_PROGRESS, T1 + ".2")
    service.report_progress(running, T1 + ".2", 40, "segmenting")
    service.request_cancel(running)
    failed = schedule(orthanc, registry, service, "learned-lungs")
    service.force_cancel(failed, "3 slices are missing")
    schedule(orthanc, registry, service, "ct-chest-quant", patient_id="OTHER")  # same study UID, another patient

    status, answer = get(api.workitems)
    assert status == 200
    assert (answer["ID"], answer["StudyInstanceUID"], answer["Active"]) == (STUDY_ID, STUDY_UID, True)
    items = {item["Workitem"]: item for item in answer["Workitems"]}
    assert set(items) == {done, running, failed}
    item = items[done]
    assert (item["Model"], item["ModelVersion"], item["Algorithm"], item["State"], item["Priority"]) == (
        "ct-chest-quant", registry.get("ct-chest-quant").version, "CT chest lung and emphysema quantification",
        COMPLETED, "MEDIUM")
    assert (item["Progress"], item["CancelRequested"], item["Reason"]) == (None, False, None)
    assert item["Performer"] == "Orthanc AI Orchestrator in-process performer"
    assert item["Scheduled"].startswith("20240501120000") and item["Ended"].startswith("20240501120000")
    assert item["Inputs"] == [{"SeriesInstanceUID": CT_UID, "ID": "series-ct", "Modality": "CT",
                               "SeriesDescription": "Chest axial", "Instances": 12}]
    assert item["Results"] == [  # the series Orthanc has get its ID (the panel links them); one deleted since
        {"SeriesInstanceUID": SEG_UID, "ID": "series-seg", "Modality": "SEG",
         "SeriesDescription": "AI SEG ct-chest-quant 1.0.0", "Instances": 1},
        {"SeriesInstanceUID": GONE_UID, "ID": None, "Modality": None, "SeriesDescription": None, "Instances": 1}]
    assert (items[running]["State"], items[running]["Progress"], items[running]["ProgressDescription"],
            items[running]["CancelRequested"]) == (IN_PROGRESS, 40.0, "segmenting", True)
    assert (items[failed]["State"], items[failed]["Reason"]) == (CANCELED, "3 slices are missing")
    assert items[running]["ModelVersion"] == registry.get("learned-lungs").version


def test_reason_falls_back_to_the_discontinuation_code_and_a_foreign_model_has_no_version(
        api, orthanc, registry, service):
    uid = schedule(orthanc, registry, service, "ct-chest-quant")
    service.request_cancel(uid)  # SCHEDULED: canceled at once, no reason text given
    other = Registry([entry for entry in registry.entries if entry.name != "ct-chest-quant"])
    _, answer = get(StudiesApi(orthanc, other, service).workitems)
    [item] = answer["Workitems"]
    assert (item["State"], item["Reason"]) == (CANCELED, "Discontinued for unspecified reason")
    assert item["ModelVersion"] is None and answer["Active"] is False


def test_newest_first_and_an_empty_study(api, orthanc, registry, service):
    assert get(api.workitems)[1]["Workitems"] == []
    first = schedule(orthanc, registry, service, "ct-chest-quant")
    second = schedule_run(orthanc, registry, service, STUDY_ID, "learned-lungs", dicomweb_base="http://x",
                          now=lambda: datetime(2024, 5, 2, tzinfo=UTC))
    assert [item["Workitem"] for item in get(api.workitems)[1]["Workitems"]] == [second, first]


def test_models_that_apply_are_what_run_accepts(api, orthanc, registry, service):
    status, models = get(api.models)
    assert status == 200
    assert {model["name"] for model in models} == {"ct-chest-quant", "learned-lungs"}
    for model in models:
        assert model["status"] == "ok" and model["device"] == "cpu" and model["version"]
        assert model["series"] == [{"ID": "series-ct", "SeriesInstanceUID": CT_UID, "Modality": "CT",
                                    "SeriesDescription": "Chest axial", "Images": 12}]
        assert schedule_run(orthanc, registry, service, STUDY_ID, model["name"], dicomweb_base="http://x")
    assert [model for model, _ in applicable_models(orthanc, registry, STUDY_ID)] == registry.models


@pytest.mark.parametrize("study", [OrthancStudy(modality="MR"), OrthancStudy(body_part="HEAD"),
                                   OrthancStudy(images=3)], ids=["MR", "head", "too-few-images"])
def test_no_model_applies(study, registry, service):
    assert get(StudiesApi(study, registry, service).models) == (200, [])


def test_unknown_study_is_404_orthanc_down_is_502_and_only_get(api, orthanc):
    for handler in (api.workitems, api.models):
        status, answer = get(handler, "nope")
        assert status == 404 and "nope" in answer["error"]
        response = handler(Request("POST", "/studies/x"), STUDY_ID)
        assert (response.status, response.headers["Allow"]) == (405, "GET")
    orthanc.down = True
    for handler in (api.workitems, api.models):
        status, answer = get(handler)
        assert status == 502 and "Orthanc error 500" in answer["error"]


def test_the_panel_script_is_package_data_and_calls_these_routes():
    script = panel_javascript()
    for needed in ("'/studies/' + study + '/workitems'", "'/studies/' + study + '/models'",
                   "'/studies/' + shown.study + '/run'", "'/workitems/' + uid + '/cancelrequest'",
                   "var API = '../ai-orchestrator'"):
        assert needed in script
