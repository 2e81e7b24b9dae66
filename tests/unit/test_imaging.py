import copy
import io
import random

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from ai_orchestrator.modeling.imaging import InputError, load_volume, read_datasets
from ai_orchestrator.phantom import make_chest_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom(None, slices=8, rows=64, seed=2)


@pytest.fixture
def datasets(phantom):
    return [copy.deepcopy(ds) for ds in phantom.datasets]


def test_sorts_slices_along_the_normal_and_rescales(phantom, datasets):
    random.Random(0).shuffle(datasets)
    volume = load_volume(datasets)
    assert volume.hu.dtype == np.float32 and volume.shape == (8, 64, 64)
    assert np.array_equal(volume.hu, phantom.hu.astype(np.float32))
    assert volume.spacing == pytest.approx(phantom.spacing)
    assert [ds.InstanceNumber for ds in volume.datasets] == list(range(1, 9))


def test_affine_maps_indices_to_image_positions(datasets):
    volume = load_volume(datasets)
    last = volume.datasets[-1]
    corner = volume.affine @ np.array([len(datasets) - 1, 0, 0, 1])
    assert corner[:3] == pytest.approx([float(v) for v in last.ImagePositionPatient])
    assert volume.voxel_volume_ml == pytest.approx(np.prod(volume.spacing) / 1000)


def test_rescale_slope_is_applied_per_slice(phantom, datasets):
    datasets[3].RescaleSlope = 2
    volume = load_volume(datasets)
    stored = phantom.hu[3].astype(np.float32) + 1024
    assert np.array_equal(volume.hu[3], stored * 2 - 1024)


def test_real_ct_file():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    volume = load_volume([ds])
    expected = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
    assert np.allclose(volume.hu[0], expected)


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[2].__setattr__("Rows", 32), "Rows"),
    (lambda d: d[2].__setattr__("ImageOrientationPatient", [0, 1, 0, 0, 0, -1]), "ImageOrientationPatient"),
    (lambda d: d[2].__setattr__("ImagePositionPatient", d[1].ImagePositionPatient), "share one slice position"),
    (lambda d: d.pop(4), "irregular"),
    (lambda d: delattr(d[0], "ImagePositionPatient"), "ImagePositionPatient"),
    (lambda d: d[5].__setattr__("PixelData", d[5].PixelData[:100]), "pixel data"),
    (lambda d: d[0].__setattr__("NumberOfFrames", 3), "multi-frame"),
])
def test_broken_series_is_a_clear_input_error(datasets, damage, message):
    damage(datasets)
    with pytest.raises(InputError, match=message):
        load_volume(datasets)


def test_empty_series():
    with pytest.raises(InputError, match="no instances"):
        load_volume([])


def test_read_datasets_from_bytes_and_paths(datasets, tmp_path):
    buffer = io.BytesIO()
    datasets[0].save_as(buffer, enforce_file_format=True)
    path = tmp_path / "one.dcm"
    datasets[1].save_as(path, enforce_file_format=True)
    read = read_datasets([buffer.getvalue(), path])
    assert [ds.SOPInstanceUID for ds in read] == [datasets[0].SOPInstanceUID, datasets[1].SOPInstanceUID]
    with pytest.raises(InputError, match="instance 2"):
        read_datasets([buffer.getvalue(), b"not dicom at all"])
