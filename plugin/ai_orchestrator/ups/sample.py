"""A valid N-CREATE workitem dataset, for tests, benchmarks and demos."""

from __future__ import annotations

from pydicom import Dataset

from .constants import PRIVATE_SCHEME, SCHEDULED
from .dicom_json import to_json


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def sample_workitem(patient_id: str = "PAT-1", patient_name: str = "Doe^Jane", label: str = "Lung nodules",
                    priority: str = "MEDIUM", start: str = "20240101120000", readiness: str = "READY",
                    code: tuple[str, str, str] = ("lung-nodules", PRIVATE_SCHEME, "Lung nodule detection"),
                    study_uid: str = "1.2.826.0.1.3680043.8.498.1", accession: str = "ACC-1",
                    with_type2: bool = True) -> dict:
    """A complete SCHEDULED workitem as DICOM JSON (without Type 2 extras when ``with_type2`` is False)."""
    ds = Dataset()
    ds.ProcedureStepState = SCHEDULED
    ds.ScheduledProcedureStepPriority = priority
    ds.ProcedureStepLabel = label
    ds.ScheduledProcedureStepStartDateTime = start
    ds.InputReadinessState = readiness
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.ScheduledWorkitemCodeSequence = [_item(CodeValue=code[0], CodingSchemeDesignator=code[1],
                                              CodeMeaning=code[2])]
    ds.InputInformationSequence = [_item(
        TypeOfInstances="DICOM", StudyInstanceUID=study_uid, SeriesInstanceUID=study_uid + ".1",
        ReferencedSOPSequence=[_item(ReferencedSOPClassUID="1.2.840.10008.5.1.4.1.1.2",
                                     ReferencedSOPInstanceUID=study_uid + ".1.1")],
        WADORSRetrievalSequence=[_item(RetrieveURL=f"http://localhost:8042/dicom-web/studies/{study_uid}")])]
    if with_type2:
        ds.PatientName = patient_name
        ds.ReferencedRequestSequence = [_item(AccessionNumber=accession, RequestedProcedureID="RP-1",
                                              StudyInstanceUID=study_uid)]
        for keyword in ("TransactionUID", "WorklistLabel", "PatientBirthDate", "PatientSex",
                        "CommentsOnTheScheduledProcedureStep"):
            setattr(ds, keyword, None)
        for keyword in ("ScheduledStationNameCodeSequence", "ScheduledStationClassCodeSequence",
                        "ScheduledStationGeographicLocationCodeSequence", "ScheduledProcessingParametersSequence",
                        "ProcedureStepProgressInformationSequence", "UnifiedProcedureStepPerformedProcedureSequence"):
            setattr(ds, keyword, [])
    return to_json(ds)


def completion_attributes(start: str = "20240101120000", end: str = "20240101120500") -> dict:
    """The attributes that meet the COMPLETED final-state requirements (DICOM JSON)."""
    ds = Dataset()
    ds.UnifiedProcedureStepPerformedProcedureSequence = [_item(
        PerformedStationNameCodeSequence=[_item(CodeValue="orthanc-ai", CodingSchemeDesignator=PRIVATE_SCHEME,
                                                CodeMeaning="Orthanc AI orchestrator")],
        PerformedProcedureStepStartDateTime=start, PerformedProcedureStepEndDateTime=end,
        PerformedWorkitemCodeSequence=[_item(CodeValue="lung-nodules", CodingSchemeDesignator=PRIVATE_SCHEME,
                                             CodeMeaning="Lung nodule detection")],
        OutputInformationSequence=[])]
    return to_json(ds)
