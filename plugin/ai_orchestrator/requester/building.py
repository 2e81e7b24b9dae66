"""The DICOM JSON of a new workitem for a study and an algorithm: complete for N-CREATE (PS3.4 Table CC.2.5-3),
so the service creates it unmodified."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from pydicom import Dataset

from ..gateway.study import SeriesSnapshot, StudySnapshot
from ..manager.scheduling import code_item, reference, scheduled_base, set_replaced
from .matching import Algorithm


def _input_item(study_uid: str, series: SeriesSnapshot, dicomweb_base: str) -> Dataset:
    retrieval = Dataset()
    retrieval.RetrieveURL = f"{dicomweb_base.rstrip('/')}/studies/{study_uid}/series/{series.series_instance_uid}"
    item = Dataset()
    item.TypeOfInstances = "DICOM"
    item.StudyInstanceUID = study_uid
    item.SeriesInstanceUID = series.series_instance_uid
    # Orthanc gives the SOP class of one instance per series: a series holds one kind of object in practice.
    item.ReferencedSOPSequence = [reference(series.sop_class_uid, uid) for uid in series.sop_instance_uids]
    item.WADORSRetrievalSequence = [retrieval]
    return item


def input_information(study_uid: str, series: Sequence[SeriesSnapshot], dicomweb_base: str) -> list[Dataset]:
    ordered = sorted(series, key=lambda s: s.series_instance_uid)
    return [_input_item(study_uid, s, dicomweb_base) for s in ordered]


def _request_item(snapshot: StudySnapshot) -> Dataset:
    item = Dataset()
    item.StudyInstanceUID = snapshot.study_instance_uid
    item.AccessionNumber = snapshot.accession_number
    item.IssuerOfAccessionNumberSequence = []
    item.PlacerOrderNumberImagingServiceRequest = ""
    item.OrderPlacerIdentifierSequence = []
    item.FillerOrderNumberImagingServiceRequest = ""
    item.OrderFillerIdentifierSequence = []
    item.RequestedProcedureID = ""
    item.RequestedProcedureDescription = ""
    item.RequestedProcedureCodeSequence = []
    return item


def build_workitem(snapshot: StudySnapshot, algorithm: Algorithm, series: Sequence[SeriesSnapshot], *,
                   uid: str, dicomweb_base: str, now: datetime, replaces: str | None = None) -> dict:
    """The DICOM JSON of a new workitem; complete for N-CREATE so the server creates it unmodified."""
    ds = scheduled_base(uid, now)
    ds.PatientName = snapshot.patient_name
    ds.PatientID = snapshot.patient_id
    # Malformed values in the images must not block the work: Type 2 allows empty.
    ds.PatientBirthDate = snapshot.patient_birth_date if re.fullmatch(r"\d{8}", snapshot.patient_birth_date) else ""
    ds.PatientSex = snapshot.patient_sex if snapshot.patient_sex in ("M", "F", "O") else ""
    ds.StudyInstanceUID = snapshot.study_instance_uid
    ds.ReferencedRequestSequence = [_request_item(snapshot)]
    ds.ScheduledWorkitemCodeSequence = [code_item(algorithm.code_value, algorithm.scheme, algorithm.meaning)]
    ds.ProcedureStepLabel = algorithm.label
    ds.WorklistLabel = algorithm.worklist_label
    ds.ScheduledProcedureStepPriority = algorithm.priority
    ds.InputInformationSequence = input_information(snapshot.study_instance_uid, series, dicomweb_base)
    set_replaced(ds, replaces)
    return ds.to_json_dict()
