"""Modality Worklist C-FIND from the workitems, without Orthanc: each SCHEDULED workitem as the worklist item it is,
how the store narrows a query down, the calling-AE option, malformed queries. Orthanc's matcher decides the rest
(tests/integration/test_worklist.py runs findscu against the real one); here it is a stand-in."""

from __future__ import annotations

import re
import warnings
from io import BytesIO
from zoneinfo import ZoneInfo

import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

from ai_orchestrator.http.worklist import Worklist, WorklistQueryError, WorklistSettings, step_id
from tests.integration.workitems import code, completion_attributes, new_workitem
from tests.integration.worklist_queries import c_find_identifier

AUCKLAND = ZoneInfo("Pacific/Auckland")  # UTC+13 in January


def everything(_dicom: bytes) -> bool:
    return True


def scheduled(service, patient_id="P1", start="20240115230000", sop_class=CTImageStorage, station=None,
              algorithm=("CTCHEST", "99TEST", "CT chest test algorithm")) -> str:
    item = new_workitem(patient_id=patient_id)
    item.ScheduledProcedureStepStartDateTime = start
    item.PatientBirthDate, item.PatientSex = "19700203", "F"
    item.StudyInstanceUID = generate_uid()
    item.ScheduledWorkitemCodeSequence = [code(*algorithm)]
    request = Dataset()
    request.StudyInstanceUID, request.AccessionNumber = item.StudyInstanceUID, f"ACC-{patient_id}"
    request.RequestedProcedureID, request.RequestedProcedureDescription = "", ""
    item.ReferencedRequestSequence = [request]
    reference = Dataset()
    reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = sop_class, generate_uid()
    source = Dataset()
    source.TypeOfInstances, source.StudyInstanceUID = "DICOM", item.StudyInstanceUID
    source.SeriesInstanceUID, source.ReferencedSOPSequence = generate_uid(), [reference]
    retrieval = Dataset()
    retrieval.RetrieveURL = f"http://localhost:8042/dicom-web/studies/{item.StudyInstanceUID}"
    source.WADORSRetrievalSequence = [retrieval]
    item.InputInformationSequence = [source]
    if station:
        item.ScheduledStationNameCodeSequence = [code(station, "99TEST", "a station")]
    return service.create(item).uid


def query(**keys) -> bytes:
    ds = Dataset()
    steps = {k: v for k, v in keys.items() if k.startswith("ScheduledProcedureStep") or k == "Modality"}
    for keyword, value in keys.items():
        if keyword not in steps:
            setattr(ds, keyword, value)
    if steps:
        step = Dataset()
        for keyword, value in steps.items():
            setattr(step, keyword, value)
        ds.ScheduledProcedureStepSequence = [step]
    return c_find_identifier(ds)


def answers(worklist: Worklist, identifier: bytes, calling_ae: str = "MODALITY", match=everything) -> list[Dataset]:
    found = worklist.find(identifier, calling_ae, match)
    assert found.complete
    return [pydicom.dcmread(BytesIO(dicom)) for dicom in found.datasets]


def test_a_workitem_as_a_worklist_item(service):
    uid = scheduled(service, patient_id="WL1")
    [item] = answers(Worklist(service, zone=AUCKLAND), query(PatientID="WL1"))
    assert (item.PatientName, item.PatientID, item.PatientBirthDate, item.PatientSex) == (
        "Test^Patient", "WL1", "19700203", "F")
    assert item.StudyInstanceUID == value_of(service, uid, "0020000D") and item.AccessionNumber == "ACC-WL1"
    [step] = item.ScheduledProcedureStepSequence
    assert step.ScheduledProcedureStepID == step_id(uid) and item.RequestedProcedureID == step_id(uid)
    assert item.RequestedProcedureDescription == "CT chest test algorithm"
    assert step.ScheduledProcedureStepDescription == "chest-ct-pipeline"  # the Procedure Step Label
    assert step.ScheduledProtocolCodeSequence[0].CodeValue == "CTCHEST"
    # 2024-01-15 23:00 UTC is 2024-01-16 12:00 in Auckland: worklist items are in the server's local time
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == ("20240116", "120000")
    assert step.Modality == "CT" and step.ScheduledProcedureStepStatus == "SCHEDULED"
    assert step.ScheduledStationAETitle == ""  # nobody known performs it
    assert step.CommentsOnTheScheduledProcedureStep == f"UPS workitem {uid}"
    assert item.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.31"


def value_of(service, uid: str, tag: str) -> str:
    return service.retrieve(uid)[tag]["Value"][0]


def test_the_step_id_is_a_16_character_digest_of_the_uid():
    uids = [generate_uid() for _ in range(10_000)]
    ids = {step_id(uid) for uid in uids}
    assert len(ids) == len(uids)
    assert all(re.fullmatch(r"[A-Z2-7]{16}", found) for found in ids)
    assert step_id(uids[0]) == step_id(uids[0])


def test_the_performer_ae_when_known(service):
    scheduled(service, patient_id="AE1", algorithm=("CTCHESTQUANT", "99ORTHANC", "Local model"))
    scheduled(service, patient_id="AE2", station="CTSCAN1")
    worklist = Worklist(service, WorklistSettings(local_ae="ORTHANC",
                                                  local_codes=frozenset({("CTCHESTQUANT", "99ORTHANC")})))
    stations = {item.PatientID: item.ScheduledProcedureStepSequence[0].ScheduledStationAETitle
                for item in answers(worklist, query(PatientID="AE*"))}
    assert stations == {"AE1": "ORTHANC", "AE2": "CTSCAN1"}


def test_only_scheduled_workitems_are_answered(service):
    scheduled(service, patient_id="S1")
    done = scheduled(service, patient_id="S1")
    tuid = generate_uid()
    service.change_state(done, "IN PROGRESS", tuid)
    service.change_state(done, "COMPLETED", tuid, completion_attributes())
    assert [item.PatientID for item in answers(Worklist(service), query(PatientID="S1"))] == ["S1"]


def test_the_store_narrows_down_by_patient_accession_and_whole_local_days(service):
    scheduled(service, patient_id="D1", start="20240115230000")  # 2024-01-16 in Auckland
    scheduled(service, patient_id="D2", start="20240116230000")  # 2024-01-17 in Auckland
    worklist = Worklist(service, zone=AUCKLAND)
    assert [item.PatientID for item in answers(worklist, query(PatientID="D2"))] == ["D2"]
    assert [item.PatientID for item in answers(worklist, query(AccessionNumber="ACC-D1"))] == ["D1"]

    def on(dates: str) -> list[str]:
        return sorted(item.PatientID for item in answers(worklist, query(PatientID="D*",
                                                                          ScheduledProcedureStepStartDate=dates)))

    assert on("20240116") == ["D1"] and on("20240117") == ["D2"] and on("20240115") == []
    assert on("20240116-20240117") == ["D1", "D2"] and on("20240117-") == ["D2"] and on("-20240116") == ["D1"]


def test_orthanc_s_matcher_decides(service):
    scheduled(service, patient_id="M1", sop_class=CTImageStorage)
    scheduled(service, patient_id="M2", sop_class=MRImageStorage)

    def modality_ct(dicom: bytes) -> bool:  # what Orthanc's matcher answers for Modality=CT
        return pydicom.dcmread(BytesIO(dicom)).ScheduledProcedureStepSequence[0].Modality == "CT"

    assert [item.PatientID for item in answers(Worklist(service), query(PatientID="M*"), match=modality_ct)] == ["M1"]


def test_the_option_answers_a_calling_ae_only_its_own_items(service):
    scheduled(service, patient_id="C1", station="CTSCAN1")
    scheduled(service, patient_id="C2", station="CTSCAN2")
    scheduled(service, patient_id="C3")
    worklist = Worklist(service, WorklistSettings(filter_issuer_aet=True))
    assert [item.PatientID for item in answers(worklist, query(PatientID="C*"), calling_ae="CTSCAN2")] == ["C2"]
    assert answers(worklist, query(PatientID="C*"), calling_ae="NOBODY") == []
    assert len(answers(Worklist(service), query(PatientID="C*"), calling_ae="NOBODY")) == 3  # option off


def test_past_the_most_answers_the_answer_is_marked_incomplete(service):
    for _ in range(3):
        scheduled(service, patient_id="L1")
    found = Worklist(service, WorklistSettings(max_answers=2)).find(query(PatientID="L1"), "M", everything)
    assert len(found.datasets) == 2 and not found.complete


@pytest.mark.parametrize("keys, named", [
    ({"ScheduledProcedureStepStartDate": "2024AB01"}, "ScheduledProcedureStepStartDate"),
    ({"ScheduledProcedureStepStartDate": "20241301"}, "ScheduledProcedureStepStartDate"),
    ({"ScheduledProcedureStepStartDate": "20240101-20240102-20240103"}, "ScheduledProcedureStepStartDate"),
    ({"ScheduledProcedureStepStartDate": "-"}, "ScheduledProcedureStepStartDate"),
    ({"ScheduledProcedureStepStartTime": "2561"}, "ScheduledProcedureStepStartTime"),
    ({"StudyInstanceUID": "1.2.abc"}, "StudyInstanceUID"),
])
def test_a_malformed_query_is_an_error_naming_the_key(service, keys, named):
    with warnings.catch_warnings():  # pydicom warns about the invalid values this test writes on purpose
        warnings.simplefilter("ignore")
        identifier = query(**keys)
    with pytest.raises(WorklistQueryError, match=named):
        Worklist(service).find(identifier, "M", everything)


def test_bytes_that_are_no_dicom_file_are_an_error(service):
    with pytest.raises(WorklistQueryError, match="cannot be read"):
        Worklist(service).find(b"garbage", "M", everything)
