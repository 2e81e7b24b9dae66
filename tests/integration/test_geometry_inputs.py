"""Series whose geometry cannot be trusted end CANCELED, the workitem saying what is wrong; a gantry tilt completes.

Each study is the phantom with its positions or orientations changed, sent to a real Orthanc; all are uploaded
first so the performer works through them back to back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from io import BytesIO

import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid

from ai_orchestrator.phantom import make_chest_phantom
from tests.dicom_checks import numeric_items
from tests.integration.studies import upload_rest, wait_for, workitems_of

SLICES, ROWS, SEED = 24, 128, 11
MODEL = "ct-chest-quant"


def shift(ds: Dataset, dx: float = 0.0, dy: float = 0.0, dz: float = 0.0) -> None:
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x + dx, y + dy, z + dz]


def gap(datasets: list[Dataset]) -> float:
    return float(datasets[1].ImagePositionPatient[2]) - float(datasets[0].ImagePositionPatient[2])


def missing_slices(datasets: list[Dataset]) -> None:
    del datasets[10:12]


def non_uniform_spacing(datasets: list[Dataset]) -> None:
    step = gap(datasets)
    for ds in datasets[12:]:
        shift(ds, dz=0.3 * step)


def mixed_orientations(datasets: list[Dataset]) -> None:
    """Two axial orientations, 10 degrees apart, in one series (a series that is not axial is no model's input)."""
    tilt = math.radians(10)
    for ds in datasets[5:8]:
        ds.ImageOrientationPatient = [1, 0, 0, 0, math.cos(tilt), -math.sin(tilt)]


def scattered_positions(datasets: list[Dataset]) -> None:
    shift(datasets[8], dx=4.0)


def gantry_tilt(datasets: list[Dataset]) -> None:
    step = gap(datasets)
    for number, ds in enumerate(datasets):
        shift(ds, dy=number * step * math.tan(math.radians(15)))
        ds.GantryDetectorTilt = 15


FAULTS: dict[str, tuple[Callable[[list[Dataset]], None], str]] = {
    "missing-slices": (missing_slices, "2 slice(s) missing"),
    "non-uniform-spacing": (non_uniform_spacing, "the spacing is not uniform"),
    "mixed-orientations": (mixed_orientations, "mixed orientations: the instances do not share one "
                                               "ImageOrientationPatient (21 axial [1, 0, 0, 0, 1, 0], 3 axial"),
    "scattered-positions": (scattered_positions, "the slice positions do not lie on one line"),
}


def send(client, tag: str, change: Callable[[list[Dataset]], None] | None = None) -> str:
    patient = f"GEO{tag[:10].upper()}{generate_uid()[-6:]}"
    datasets = make_chest_phantom(slices=SLICES, rows=ROWS, seed=SEED, patient_id=patient).datasets
    if change is not None:
        change(datasets)
    upload_rest(client, datasets)
    return patient


def final_workitem(client, patient: str, timeout: float = 300) -> Dataset:
    """The patient's ct-chest-quant workitem, once every workitem of the patient is COMPLETED or CANCELED."""
    def done():
        items = [Dataset.from_json(item) for item in workitems_of(client, patient)]
        final = items and all(item.ProcedureStepState in ("COMPLETED", "CANCELED") for item in items)
        return items if final else None

    [item] = [item for item in wait_for(done, timeout=timeout, interval=0.5) if item.ProcedureStepLabel == MODEL]
    return item


def sr_lung_volume(client, patient: str) -> float:
    [study] = client.post("/tools/find", json={"Level": "Study", "Query": {"PatientID": patient}}).json()
    [sr] = [pydicom.dcmread(BytesIO(client.get(f"/instances/{instance}/file").content))
            for series in client.get(f"/studies/{study}/series").json()
            if series["MainDicomTags"].get("Modality") == "SR"
            and MODEL in series["MainDicomTags"].get("SeriesDescription", "")
            for instance in series["Instances"]]
    return numeric_items(sr.ContentSequence)["Volume"][0]


def sr_series(client, patient: str) -> list[str]:
    [study] = client.post("/tools/find", json={"Level": "Study", "Query": {"PatientID": patient}}).json()
    return [series["ID"] for series in client.get(f"/studies/{study}/series").json()
            if series["MainDicomTags"].get("Modality") == "SR"]


@pytest.fixture(scope="module")
def sent(orthanc) -> dict[str, str]:
    """Case -> patient ID, every study uploaded before any is waited for."""
    cases = {name: change for name, (change, _) in FAULTS.items()}
    return {name: send(orthanc.client, name, change)
            for name, change in {"straight": None, "gantry-tilt": gantry_tilt, **cases}.items()}


@pytest.mark.parametrize("fault", FAULTS)
def test_untrusted_geometry_ends_canceled_saying_what_is_wrong(orthanc, sent, fault):
    item = final_workitem(orthanc.client, sent[fault])
    assert item.ProcedureStepState == "CANCELED"
    reason = item.ProcedureStepProgressInformationSequence[0].ReasonForCancellation
    assert "InputError" in reason and "failed after 1 attempt(s)" in reason  # bad geometry: not retried
    assert FAULTS[fault][1] in reason
    assert not sr_series(orthanc.client, sent[fault])  # no number was published


def test_a_gantry_tilt_completes_with_the_lung_volume_of_the_straight_stack(orthanc, sent):
    """The tilted stack is the straight one sheared: the same voxels, each as big, so the same lung volume."""
    straight, tilted = (final_workitem(orthanc.client, sent[name]) for name in ("straight", "gantry-tilt"))
    assert straight.ProcedureStepState == "COMPLETED", straight.get("ProcedureStepProgressInformationSequence")
    assert tilted.ProcedureStepState == "COMPLETED", tilted.get("ProcedureStepProgressInformationSequence")
    assert sr_lung_volume(orthanc.client, sent["gantry-tilt"]) == pytest.approx(
        sr_lung_volume(orthanc.client, sent["straight"]), rel=1e-9)

