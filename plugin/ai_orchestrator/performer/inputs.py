"""Reading a workitem's input instances from Orthanc, in-process (the model host parses and decodes them)."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import Dataset

from ..gateway.protocol import OrthancGateway, ResourceNotFound
from ..gateway.study import orthanc_id_of_series
from .timing import StageTimer


class InputMissing(LookupError):
    """An input named by the workitem is not in Orthanc (any more)."""


@dataclass(frozen=True)
class InputSeries:
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uids: tuple[str, ...]


def input_series(dataset: Dataset) -> list[InputSeries]:
    """The series of a workitem's Input Information Sequence (0040,4021), largest first."""
    found = [
        InputSeries(
            str(dataset.get("PatientID", "")),
            str(item.get("StudyInstanceUID", "")),
            str(item.get("SeriesInstanceUID", "")),
            tuple(str(ref.ReferencedSOPInstanceUID) for ref in item.get("ReferencedSOPSequence", [])),
        )
        for item in dataset.get("InputInformationSequence", [])
    ]
    return sorted(found, key=lambda series: len(series.sop_instance_uids), reverse=True)


def fetch_instances(gateway: OrthancGateway, series: InputSeries, timer: StageTimer) -> list[bytes]:
    """The series' input instances as Orthanc stores them (Part 10 bytes; only those the workitem references, if
    it lists any): what the model host parses and decodes."""
    with timer.stage("fetch"):
        series_id = orthanc_id_of_series(series.patient_id, series.study_instance_uid, series.series_instance_uid)
        try:
            instances = gateway.get_json(f"/series/{series_id}/instances")
        except ResourceNotFound as error:
            raise InputMissing(f"input series {series.series_instance_uid} is not in Orthanc ({error})") from error
        wanted = set(series.sop_instance_uids)
        ids = [instance["ID"] for instance in instances
               if not wanted or instance["MainDicomTags"].get("SOPInstanceUID") in wanted]
        if wanted and len(ids) < len(wanted):
            raise InputMissing(f"{len(wanted) - len(ids)} input instance(s) of series "
                               f"{series.series_instance_uid} are not in Orthanc")
        return [gateway.get_instance_dicom(instance_id) for instance_id in ids]
