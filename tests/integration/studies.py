"""Real DICOM studies for the integration tests: pydicom's own CT/MR files re-identified, and upload helpers."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.integration.workitems import ROOT, value
from tests.tools import require_tool


def instances(name: str = "CT_small.dcm", *, count: int = 3, patient_id: str, study_uid: str,
              series_uid: str | None = None, body_part: str | None = None, manufacturer: str | None = None
              ) -> list[Dataset]:
    """``count`` instances of one series built from a pydicom test file, with new UIDs."""
    series_uid = series_uid or generate_uid()
    out = []
    for number in range(count):
        ds = pydicom.dcmread(get_testdata_file(name, download=False))
        ds.PatientID, ds.PatientName = patient_id, f"Test^{patient_id}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = number + 1
        if body_part is not None:
            ds.BodyPartExamined = body_part
        if manufacturer is not None:
            ds.Manufacturer = manufacturer
        out.append(ds)
    return out


def to_bytes(ds: Dataset) -> bytes:
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def upload_rest(client, datasets: Iterable[Dataset]) -> str:
    """POST each instance to /instances; answers the Orthanc study id."""
    study_id = ""
    for ds in datasets:
        answer = client.post("/instances", content=to_bytes(ds))
        assert answer.status_code == 200, answer.text
        study_id = answer.json()["ParentStudy"]
    return study_id


def upload_storescu(port: int, datasets: Iterable[Dataset], folder: Path) -> None:
    """C-STORE the instances with dcmtk's storescu, as a modality would (the test fails when storescu is missing)."""
    storescu = require_tool("storescu")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(to_bytes(ds))
        paths.append(str(path))
    subprocess.run([storescu, "-aec", "ORTHANC", "127.0.0.1", str(port), *paths], check=True,
                   capture_output=True, timeout=60)


def wait_for(condition: Callable[[], object], timeout: float = 30, interval: float = 0.25):
    """Poll until ``condition()`` answers something truthy; answers it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def workitems_of(client, patient_id: str) -> list[dict]:
    answer = client.get(f"{ROOT}/workitems", params={"PatientID": patient_id, "includefield": "all"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def workitem_states(client, patient_id: str) -> dict[str, str]:
    return {value(item, "00080018"): value(item, "00741000") for item in workitems_of(client, patient_id)}
