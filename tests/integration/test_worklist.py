"""Modality Worklist C-FIND with dcmtk's findscu -W against the real Orthanc: SCHEDULED workitems are listed as
worklist items, Orthanc's matcher applies the query's keys (dates, modality, AE title, patient), a malformed query
gets a failure status and Orthanc carries on, and the calling-AE option (another Orthanc) answers each AE its own."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

from ai_orchestrator.http.worklist import step_id
from tests.integration.workitems import DICOM_JSON, ROOT, Ups, code, completion_attributes, new_workitem
from tests.orthanc_server import OrthancServer
from tests.tools import require_tool

SPS = "ScheduledProcedureStepSequence[0]."
RETURN_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "AccessionNumber",
               "RequestedProcedureID", "RequestedProcedureDescription", f"{SPS}ScheduledStationAETitle",
               f"{SPS}ScheduledProcedureStepStartDate", f"{SPS}ScheduledProcedureStepStartTime", f"{SPS}Modality",
               f"{SPS}ScheduledProcedureStepDescription", f"{SPS}ScheduledProcedureStepID")


def findscu(port: int, folder: Path, *keys: str, aet: str = "FINDSCU") -> tuple[list[Dataset], str]:
    """C-FIND on the Modality Worklist with findscu -W; answers the responses and findscu's verbose output."""
    tool = require_tool("findscu")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    asked = {key.split("=")[0] for key in keys}
    arguments = [argument for key in [*keys, *(k for k in RETURN_KEYS if k not in asked)] for argument in ("-k", key)]
    run = subprocess.run([tool, "-v", "-W", "-aet", aet, "-aec", "ORTHANC", "-X", "-od", str(folder),
                          "127.0.0.1", str(port), *arguments], capture_output=True, text=True, timeout=60)
    return [pydicom.dcmread(path) for path in sorted(folder.glob("rsp*.dcm"))], run.stdout + run.stderr


def workitem(patient: str, name: str, start: datetime, sop_class: str, accession: str) -> Dataset:
    """A SCHEDULED workitem for an external engine, as a requester creates it over UPS-RS."""
    ds = new_workitem(patient_id=patient, label="lung-nodule-ai")
    ds.PatientName, ds.PatientBirthDate, ds.PatientSex = name, "19700203", "F"
    ds.ScheduledProcedureStepStartDateTime = start.strftime("%Y%m%d%H%M%S+0000")
    ds.StudyInstanceUID = generate_uid()
    ds.ScheduledWorkitemCodeSequence = [code("LUNGNODULE", "99TEST", "Lung nodule detection")]
    request = Dataset()
    request.StudyInstanceUID, request.AccessionNumber = ds.StudyInstanceUID, accession
    request.RequestedProcedureID, request.RequestedProcedureDescription = "RP-7", "CT chest with AI"
    ds.ReferencedRequestSequence = [request]
    reference = Dataset()
    reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = sop_class, generate_uid()
    retrieval = Dataset()
    retrieval.RetrieveURL = f"http://localhost:8042/dicom-web/studies/{ds.StudyInstanceUID}"
    source = Dataset()
    source.TypeOfInstances, source.StudyInstanceUID = "DICOM", ds.StudyInstanceUID
    source.SeriesInstanceUID, source.ReferencedSOPSequence = generate_uid(), [reference]
    source.WADORSRetrievalSequence = [retrieval]
    ds.InputInformationSequence = [source]
    return ds


def assign_station(ups: Ups, uid: str, ae_title: str) -> None:
    """A UPS-RS Update naming the station that is to perform the SCHEDULED item."""
    update = Dataset()
    update.ScheduledStationNameCodeSequence = [code(ae_title, "99TEST", f"station {ae_title}")]
    answer = ups.update(uid, update)
    assert answer.status_code == 200, answer.text


def local(moment: datetime) -> datetime:
    """The moment in the time zone Orthanc runs in (the tests' own: the fixture passes its environment on)."""
    return moment.astimezone()


@pytest.fixture(scope="module")
def scheduled(orthanc):
    """Three items of one test patient prefix: A (CT, assigned to CTSCAN1), B (MR), and C completed."""
    ups = Ups(orthanc.client)
    prefix = f"WL{generate_uid()[-6:]}"
    starts = {"A": datetime(2030, 1, 2, 10, 0, tzinfo=UTC), "B": datetime(2030, 1, 5, 10, 0, tzinfo=UTC),
              "C": datetime(2030, 1, 2, 11, 0, tzinfo=UTC)}
    items = {"A": workitem(f"{prefix}A", "Doe^Alice", starts["A"], CTImageStorage, f"{prefix}-ACC-A"),
             "B": workitem(f"{prefix}B", "Roe^Bob", starts["B"], MRImageStorage, f"{prefix}-ACC-B"),
             "C": workitem(f"{prefix}C", "Poe^Carl", starts["C"], CTImageStorage, f"{prefix}-ACC-C")}
    for item in items.values():
        assert ups.create(item).status_code == 201
    uids = {key: str(item.SOPInstanceUID) for key, item in items.items()}
    assign_station(ups, uids["A"], "CTSCAN1")
    tuid = generate_uid()
    assert ups.change_state(uids["C"], "IN PROGRESS", tuid).status_code == 200
    assert ups.change_state(uids["C"], "COMPLETED", tuid, completion_attributes()).status_code == 200
    return prefix, uids, starts, items


def ids(answers: list[Dataset]) -> list[str]:
    return sorted(str(answer.PatientID) for answer in answers)


def test_findscu_lists_a_scheduled_workitem_with_everything_a_modality_needs(orthanc, scheduled, tmp_path):
    prefix, uids, starts, items = scheduled
    [answer], output = findscu(orthanc.dicom_port, tmp_path / "a", f"PatientID={prefix}A")
    (tmp_path.parent / "findscu-sample.txt").write_text(output)  # kept next to the test's temp data
    assert (answer.PatientName, answer.PatientID, answer.PatientBirthDate, answer.PatientSex) == (
        "Doe^Alice", f"{prefix}A", "19700203", "F")
    assert answer.StudyInstanceUID == items["A"].StudyInstanceUID
    assert (answer.AccessionNumber, answer.RequestedProcedureID, answer.RequestedProcedureDescription) == (
        f"{prefix}-ACC-A", "RP-7", "CT chest with AI")
    [step] = answer.ScheduledProcedureStepSequence
    assert step.ScheduledProcedureStepID == step_id(uids["A"])
    assert step.ScheduledProcedureStepDescription == "lung-nodule-ai"
    start = local(starts["A"])
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == (
        start.strftime("%Y%m%d"), start.strftime("%H%M%S"))
    assert step.Modality == "CT" and step.ScheduledStationAETitle == "CTSCAN1"


def test_orthanc_s_matcher_applies_dates_modality_ae_title_and_patient(orthanc, scheduled, tmp_path):
    prefix, _uids, starts, _items = scheduled
    day_a, day_b = (local(starts[key]).strftime("%Y%m%d") for key in ("A", "B"))

    def found(*keys: str) -> list[str]:
        answers, output = findscu(orthanc.dicom_port, tmp_path / "q", f"PatientID={prefix}*", *keys)
        assert "Success" in output, output
        return ids(answers)

    assert found() == [f"{prefix}A", f"{prefix}B"]  # C is COMPLETED: not on the worklist
    assert found(f"{SPS}ScheduledProcedureStepStartDate={day_a}") == [f"{prefix}A"]
    assert found(f"{SPS}ScheduledProcedureStepStartDate={day_a}-{day_b}") == [f"{prefix}A", f"{prefix}B"]
    assert found(f"{SPS}ScheduledProcedureStepStartDate={day_b}-") == [f"{prefix}B"]
    assert found(f"{SPS}ScheduledProcedureStepStartDate=20290101-20291231") == []
    assert found(f"{SPS}Modality=MR") == [f"{prefix}B"]
    assert found(f"{SPS}ScheduledStationAETitle=CTSCAN1") == [f"{prefix}A"]
    assert found(f"{SPS}ScheduledStationAETitle=CTSCAN9") == []
    assert found("PatientName=ROE*") == [f"{prefix}B"]  # PN matching is case-insensitive in Orthanc
    assert found(f"AccessionNumber={prefix}-ACC-A") == [f"{prefix}A"]


def test_a_malformed_query_fails_the_c_find_and_orthanc_carries_on(orthanc, scheduled, tmp_path):
    prefix, *_ = scheduled
    answers, output = findscu(orthanc.dicom_port, tmp_path / "bad", f"PatientID={prefix}*",
                              f"{SPS}ScheduledProcedureStepStartDate=2030AB01")
    assert answers == [] and "Failed: UnableToProcess" in output, output
    assert "ScheduledProcedureStepStartDate" in orthanc.log()  # the log says which key
    answers, output = findscu(orthanc.dicom_port, tmp_path / "good", f"PatientID={prefix}A")
    assert ids(answers) == [f"{prefix}A"] and "Success" in output
    assert orthanc.client.get(f"{ROOT}/system").status_code == 200


@pytest.fixture(scope="module")
def filtering_orthanc(tmp_path_factory):
    """An Orthanc answering each calling AE only the items scheduled on it (WorklistFilterIssuerAet)."""
    models = tmp_path_factory.mktemp("no-models")
    with OrthancServer(tmp_path_factory.mktemp("worklist-filter"), extra_env={
            "AI_ORCHESTRATOR_MODELS_DIR": str(models),
            "AI_ORCHESTRATOR_SETTINGS": json.dumps({"WorklistFilterIssuerAet": True, "Workers": 0})}) as server:
        yield server


def test_the_option_answers_the_calling_ae_only_its_own_items(filtering_orthanc, tmp_path):
    ups = Ups(filtering_orthanc.client)
    prefix = f"AE{generate_uid()[-6:]}"
    now = datetime.now(UTC)
    for key, station in (("A", "CTSCAN1"), ("B", "CTSCAN2"), ("C", None)):
        item = workitem(f"{prefix}{key}", f"Test^{key}", now, CTImageStorage, f"{prefix}-{key}")
        assert ups.create(item).status_code == 201
        if station:
            assign_station(ups, str(item.SOPInstanceUID), station)
    port = filtering_orthanc.dicom_port
    assert ids(findscu(port, tmp_path / "1", f"PatientID={prefix}*", aet="CTSCAN1")[0]) == [f"{prefix}A"]
    assert ids(findscu(port, tmp_path / "2", f"PatientID={prefix}*", aet="CTSCAN2")[0]) == [f"{prefix}B"]
    answers, output = findscu(port, tmp_path / "3", f"PatientID={prefix}*", aet="NOBODY")
    assert answers == [] and "Success" in output
    # all three are there over UPS-RS (the "*" left raw: Orthanc 1.10 hands GET arguments on undecoded)
    assert len(filtering_orthanc.client.get(f"{ROOT}/workitems?PatientID={prefix}*", headers=DICOM_JSON).json()) == 3
