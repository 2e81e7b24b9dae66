import json
import math

import numpy as np
import pydicom
import pytest

from ai_orchestrator.phantom import LABEL_GAS, LABEL_LUNG, main, make_chest_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom(None, slices=24, rows=128, emphysema_fraction=0.10, seed=1)


def test_series_geometry(phantom):
    datasets = phantom.datasets
    assert len(datasets) == 24 and phantom.hu.shape == (24, 128, 128)
    first = datasets[0]
    assert first.Modality == "CT" and first.BodyPartExamined == "CHEST"
    assert first.SOPClassUID == pydicom.uid.CTImageStorage
    assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    assert np.allclose(np.diff(z), phantom.spacing[0])
    assert float(first.SpacingBetweenSlices) == pytest.approx(phantom.spacing[0], rel=1e-3)
    assert float(first.PixelSpacing[0]) == pytest.approx(phantom.spacing[1], rel=1e-4)
    assert len({ds.SOPInstanceUID for ds in datasets}) == 24
    assert len({(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID) for ds in datasets}) == 1


def test_pixel_data_decodes_to_the_phantom_hu(phantom):
    for index in (0, 12, 23):
        ds = phantom.datasets[index]
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        assert np.array_equal(hu, phantom.hu[index])


def test_truth_matches_the_drawn_anatomy(phantom):
    truth = phantom.truth
    ellipsoids_ml = 2 * 4 / 3 * math.pi * 45 * 65 * 110 / 1000
    assert truth.lung_volume_ml == pytest.approx(ellipsoids_ml, rel=0.03)
    assert truth.lung_voxels == np.count_nonzero(phantom.labels == LABEL_LUNG)
    assert truth.laa950_percent == pytest.approx(10.0, abs=0.5)
    assert -900 < truth.mean_lung_hu < -850
    assert np.count_nonzero(phantom.labels == LABEL_GAS) > 0  # air inside the body that is not lung


def test_emphysema_fraction_and_seed():
    clean = make_chest_phantom(None, slices=12, rows=64, emphysema_fraction=0.0)
    assert clean.truth.laa950_percent == 0.0
    again = make_chest_phantom(None, slices=12, rows=64, emphysema_fraction=0.0)
    assert np.array_equal(clean.hu, again.hu)
    severe = make_chest_phantom(None, slices=12, rows=64, emphysema_fraction=0.3)
    assert severe.truth.laa950_percent == pytest.approx(30.0, abs=1.0)


def test_written_files_and_given_study_uid(tmp_path):
    phantom = make_chest_phantom(tmp_path / "ct", slices=4, rows=64, study_uid="1.2.3.4", patient_id="P7")
    assert len(phantom.paths) == 4 and all(path.exists() for path in phantom.paths)
    ds = pydicom.dcmread(phantom.paths[0])
    assert ds.StudyInstanceUID == "1.2.3.4" and ds.PatientID == "P7"
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.pixel_array.shape == (64, 64)


def test_rejects_nonsense_arguments():
    with pytest.raises(ValueError):
        make_chest_phantom(None, slices=1)
    with pytest.raises(ValueError):
        make_chest_phantom(None, slices=4, rows=64, emphysema_fraction=1.5)


def test_cli_prints_the_truth(tmp_path, capsys):
    assert main([str(tmp_path), "--slices", "6", "--rows", "64", "--seed", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["files"] == 6 and printed["lung_volume_ml"] > 0
    assert len(list(tmp_path.glob("*.dcm"))) == 6
