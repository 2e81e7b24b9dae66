"""The attributes a Task Performer sets when it completes or cancels a workitem (PS3.4 CC.2.5.1.3)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydicom import Dataset

from ..ups.attributes import code_item
from ..ups.clock import format_dt
from ..ups.constants import PRIVATE_SCHEME
from ..ups.dicom_json import to_json

PERFORMER_STATION = ("ORTHANC-AI", PRIVATE_SCHEME, "Orthanc AI Orchestrator in-process performer")
MODEL_FAILURE_REASON = ("110513", "DCM", "Discontinued for unspecified reason")
CANCEL_REQUESTED_REASON = ("110500", "DCM", "Doctor canceled procedure")


@dataclass(frozen=True)
class OutputSeries:
    study_instance_uid: str
    series_instance_uid: str
    instances: tuple[tuple[str, str], ...]  # (SOP Class UID, SOP Instance UID)
    retrieve_url: str | None  # WADO-RS, in this Orthanc; None when the results leave it (DeleteStudyAfterForward)
    retrieve_ae_titles: tuple[str, ...] = ()  # the destinations they are C-STOREd to


def completed_attributes(started: datetime, ended: datetime, algorithm: tuple[str, str, str],
                         outputs: list[OutputSeries]) -> dict:
    """UPS Performed Procedure Sequence with everything the COMPLETED state requires, as DICOM JSON."""
    performed = Dataset()
    performed.PerformedStationNameCodeSequence = [code_item(PERFORMER_STATION)]
    performed.PerformedProcedureStepStartDateTime = format_dt(started)
    performed.PerformedProcedureStepEndDateTime = format_dt(ended)
    performed.PerformedWorkitemCodeSequence = [code_item(algorithm)]
    performed.OutputInformationSequence = [_output_item(series) for series in outputs]
    dataset = Dataset()
    dataset.UnifiedProcedureStepPerformedProcedureSequence = [performed]
    return to_json(dataset)


def _output_item(series: OutputSeries) -> Dataset:
    item = Dataset()
    item.TypeOfInstances = "DICOM"
    item.StudyInstanceUID = series.study_instance_uid
    item.SeriesInstanceUID = series.series_instance_uid
    references = []
    for sop_class_uid, sop_instance_uid in series.instances:
        reference = Dataset()
        reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = sop_class_uid, sop_instance_uid
        references.append(reference)
    item.ReferencedSOPSequence = references
    if series.retrieve_ae_titles:
        item.RetrieveAETitle = list(series.retrieve_ae_titles)
    if series.retrieve_url:
        retrieval = Dataset()
        retrieval.RetrieveURL = series.retrieve_url
        item.WADORSRetrievalSequence = [retrieval]
    return item


def canceled_attributes(when: datetime, reason: str, code: tuple[str, str, str] = MODEL_FAILURE_REASON) -> dict:
    """Procedure Step Progress Information with what the CANCELED state requires, as DICOM JSON."""
    progress = Dataset()
    progress.ProcedureStepCancellationDateTime = format_dt(when)
    progress.ProcedureStepDiscontinuationReasonCodeSequence = [code_item(code)]
    progress.ReasonForCancellation = reason[:1024]
    dataset = Dataset()
    dataset.ProcedureStepProgressInformationSequence = [progress]
    return to_json(dataset)
