"""The phantom sent to a real Orthanc in every transfer syntax that Orthanc decodes gives the single-frame result.

One study per syntax, all uploaded first so the performer works through them back to back; each syntax's
ct-chest-quant SR lung volume is then compared with that of the same phantom sent as uncompressed single frames:
equal for the lossless syntaxes (the same voxels), within 1 % for the lossy ones. Signed 16-bit pixels with a
non-unit slope, checked without Orthanc, decode exactly in every lossless syntax.
"""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from ai_orchestrator.modeling.imaging import load_volume
from ai_orchestrator.phantom import RESCALE_INTERCEPT, make_chest_phantom
from tests.dicom_checks import numeric_items
from tests.integration.studies import upload_rest, wait_for, workitems_of
from tests.integration.workitems import value
from tests.transfer_syntaxes import SYNTAXES, Syntax, encode_series

SLICES, ROWS, SEED = 24, 128, 7
MODEL = "ct-chest-quant"


def send_phantom(client, tag: str, encode=None) -> str:
    """Upload the phantom (always the same voxels) as a new patient; answers the patient ID."""
    patient = f"TS{tag}{generate_uid()[-6:]}"
    phantom = make_chest_phantom(slices=SLICES, rows=ROWS, seed=SEED, patient_id=patient)
    upload_rest(client, encode(phantom.datasets) if encode else phantom.datasets)
    return patient


def final_item(client, patient: str, timeout: float = 300) -> dict:
    """The patient's ct-chest-quant workitem once every workitem of the patient is COMPLETED or CANCELED."""
    def done():
        items = workitems_of(client, patient)
        final = items and all(value(item, "00741000") in ("COMPLETED", "CANCELED") for item in items)
        return items if final else None

    return {value(item, "00741204"): item for item in wait_for(done, timeout=timeout, interval=0.5)}[MODEL]


def sr_lung_volume(client, patient: str) -> float:
    """The lung volume (mL) in the ct-chest-quant SR of the patient's study."""
    [study] = client.post("/tools/find", json={"Level": "Study", "Query": {"PatientID": patient}}).json()
    for series in client.get(f"/studies/{study}/series").json():
        tags = series["MainDicomTags"]
        if tags.get("Modality") == "SR" and MODEL in tags.get("SeriesDescription", ""):
            [instance] = series["Instances"]
            sr = pydicom.dcmread(BytesIO(client.get(f"/instances/{instance}/file").content))
            return numeric_items(sr.ContentSequence)["Volume"][0]
    raise AssertionError(f"no {MODEL} SR in the study of {patient}")


def stored_syntaxes(client, patient: str) -> set[str]:
    """The transfer syntaxes of the patient's CT instances as Orthanc stored them (it keeps what it received)."""
    [study] = client.post("/tools/find", json={"Level": "Study", "Query": {"PatientID": patient}}).json()
    return {client.get(f"/instances/{instance}/metadata/TransferSyntax").text
            for series in client.get(f"/studies/{study}/series").json()
            if series["MainDicomTags"].get("Modality") == "CT"
            for instance in series["Instances"]}


@pytest.fixture(scope="module")
def sent(orthanc, tmp_path_factory):
    """Every study uploaded before any is waited for: label -> patient ID, or why the phantom could not be encoded."""
    reference = send_phantom(orthanc.client, "REF")
    patients: dict[str, str] = {}
    problems: dict[str, str] = {}
    for syntax in SYNTAXES:
        work = tmp_path_factory.mktemp(syntax.label)
        try:
            patients[syntax.label] = send_phantom(orthanc.client, syntax.label.upper().replace("-", "")[:8],
                                                  lambda datasets, s=syntax, w=work: encode_series(datasets, s, w))
        except pytest.fail.Exception as missing_tool:  # a test tool is not installed: that syntax's test fails
            problems[syntax.label] = str(missing_tool)
    return reference, patients, problems


@pytest.fixture(scope="module")
def reference_volume(orthanc, sent) -> float:
    reference, _, _ = sent
    item = final_item(orthanc.client, reference)
    assert value(item, "00741000") == "COMPLETED", item.get("00741002")
    return sr_lung_volume(orthanc.client, reference)


@pytest.mark.parametrize("syntax", SYNTAXES, ids=[s.label for s in SYNTAXES])
def test_each_transfer_syntax_gives_the_single_frame_lung_volume(orthanc, sent, reference_volume, syntax: Syntax):
    _, patients, problems = sent
    if syntax.label in problems:
        pytest.fail(problems[syntax.label], pytrace=False)
    patient = patients[syntax.label]
    item = final_item(orthanc.client, patient)
    assert value(item, "00741000") == "COMPLETED", item.get("00741002")
    assert stored_syntaxes(orthanc.client, patient) == {str(syntax.uid)}  # what the performer read, not a transcoding
    volume = sr_lung_volume(orthanc.client, patient)
    if syntax.lossy:
        assert volume == pytest.approx(reference_volume, rel=0.01), syntax.how
    else:
        assert volume == pytest.approx(reference_volume, rel=1e-9)


LOSSLESS = [s for s in SYNTAXES if not s.lossy]


@pytest.mark.parametrize("syntax", LOSSLESS, ids=[s.label for s in LOSSLESS])
def test_signed_pixels_with_a_non_unit_slope_decode_exactly(syntax: Syntax, tmp_path):
    """Stored values signed and 16 bits, rescaled by 0.5: each lossless syntax gives back the very same HU."""
    phantom = make_chest_phantom(slices=3, rows=64, seed=SEED)
    signed = []
    for ds in phantom.datasets:
        hu = ds.pixel_array.astype(np.int32) + RESCALE_INTERCEPT
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 1, 16, 15
        ds.RescaleSlope, ds.RescaleIntercept = 0.5, 0
        ds.PixelData = (hu * 2).astype(np.int16).tobytes()
        signed.append(ds)
    volume = load_volume(encode_series(signed, syntax, tmp_path))
    assert np.array_equal(volume.hu, phantom.hu.astype(np.float32))
