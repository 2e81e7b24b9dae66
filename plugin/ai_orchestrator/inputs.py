"""Reading a workitem's input instances from Orthanc, in-process."""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

import pydicom
from pydicom import Dataset

from .orthanc_gateway import OrthancGateway
from .timing import StageTimer


class InputMissing(LookupError):
    """An input named by the workitem is not in Orthanc (any more)."""


@dataclass(frozen=True)
class InputSeries:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uids: tuple[str, ...]


def input_series(workitem: dict) -> list[InputSeries]:
    """The series of Input Information Sequence (0040,4021), largest first."""
    dataset = Dataset.from_json(workitem)
    found = [
        InputSeries(
            str(item.get("StudyInstanceUID", "")),
            str(item.get("SeriesInstanceUID", "")),
            tuple(str(ref.ReferencedSOPInstanceUID) for ref in item.get("ReferencedSOPSequence", [])),
        )
        for item in dataset.get("InputInformationSequence", [])
    ]
    return sorted(found, key=lambda series: len(series.sop_instance_uids), reverse=True)


def _orthanc_series_id(gateway: OrthancGateway, series_uid: str) -> str:
    for match in gateway.post_json("/tools/lookup", series_uid) or []:
        if match.get("Type") == "Series":
            return match["ID"]
    raise InputMissing(f"input series {series_uid} is not in Orthanc")


def fetch_series(gateway: OrthancGateway, series: InputSeries, timer: StageTimer) -> list[Dataset]:
    """The series' input instances as pydicom datasets (only those the workitem references, if it lists any)."""
    with timer.stage("fetch"):
        instances = gateway.get_json(f"/series/{_orthanc_series_id(gateway, series.series_instance_uid)}/instances")
        wanted = set(series.sop_instance_uids)
        ids = [instance["ID"] for instance in instances
               if not wanted or instance["MainDicomTags"].get("SOPInstanceUID") in wanted]
        if wanted and len(ids) < len(wanted):
            raise InputMissing(f"{len(wanted) - len(ids)} input instance(s) of series "
                               f"{series.series_instance_uid} are not in Orthanc")
        blobs = [gateway.get_instance_dicom(instance_id) for instance_id in ids]
    with timer.stage("decode"):
        return [pydicom.dcmread(BytesIO(blob)) for blob in blobs]
