"""Geometry that cannot be trusted is refused with what is wrong; a gantry tilt is handled, voxels kept as stored."""

import copy
import math
import random

import numpy as np
import pytest

from ai_orchestrator.modeling.geometry import GeometryError, stack_geometry
from ai_orchestrator.modeling.imaging import InputError, load_volume
from ai_orchestrator.phantom import make_chest_phantom

SLICES, ROWS = 12, 64


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom(None, slices=SLICES, rows=ROWS, seed=3)


@pytest.fixture
def datasets(phantom):
    return [copy.deepcopy(ds) for ds in phantom.datasets]


def z_of(ds) -> float:
    return float(ds.ImagePositionPatient[2])


def shift(ds, dx: float = 0.0, dy: float = 0.0, dz: float = 0.0) -> None:
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x + dx, y + dy, z + dz]


def reason(datasets) -> str:
    with pytest.raises(InputError) as raised:
        load_volume(datasets)
    return str(raised.value)


# stacks that are fine

def test_a_straight_stack_is_sorted_and_not_tilted(phantom, datasets):
    random.Random(1).shuffle(datasets)
    volume = load_volume(datasets)
    assert volume.slice_step is None and volume.tilt_degrees == 0.0
    assert volume.spacing == pytest.approx(phantom.spacing)
    assert np.array_equal(volume.hu, phantom.hu.astype(np.float32))


def test_a_single_slice_takes_its_gap_from_spacing_between_slices(datasets):
    datasets[0].SpacingBetweenSlices = 2.5
    assert load_volume(datasets[:1]).spacing[0] == pytest.approx(2.5)


def test_jitter_within_the_tolerances_is_accepted(phantom, datasets):
    gap = phantom.spacing[0]
    for number, ds in enumerate(datasets):
        shift(ds, dx=0.001 * (-1) ** number, dz=0.01 * gap * (-1) ** number)  # rounding of written positions
    volume = load_volume(datasets)
    assert volume.slice_step is None
    assert volume.spacing[0] == pytest.approx(gap, rel=0.05)


# gantry tilt: handled

@pytest.mark.parametrize("degrees", [12.0, -25.0])
def test_a_gantry_tilt_shears_the_grid_and_keeps_the_voxels(phantom, datasets, degrees):
    """Slices stay axial, each one's origin slides along the rows' direction: the sheared stack of a tilted gantry."""
    gap = phantom.spacing[0]
    for number, ds in enumerate(datasets):
        shift(ds, dy=number * gap * math.tan(math.radians(degrees)))
    random.Random(2).shuffle(datasets)
    volume = load_volume(datasets)
    assert volume.tilt_degrees == pytest.approx(abs(degrees), abs=0.01)
    assert np.array_equal(volume.hu, phantom.hu.astype(np.float32))  # as stored: no interpolation
    # each voxel is as big as an untilted one: a shear keeps volumes, so every voxel count measures the same
    assert volume.spacing == pytest.approx(phantom.spacing)
    assert volume.voxel_volume_ml == pytest.approx(np.prod(phantom.spacing) / 1000)
    # and the affine puts every slice where its ImagePositionPatient says
    for index, ds in enumerate(volume.datasets):
        corner = volume.affine @ np.array([index, 0, 0, 1])
        assert corner[:3] == pytest.approx([float(v) for v in ds.ImagePositionPatient], abs=1e-6)


def test_a_tilted_orientation_measures_the_gap_along_its_normal(phantom, datasets):
    """Planes tilted about the patient's x axis, the table moving along z: the gap is the z step x cos(tilt)."""
    tilt = math.radians(20)
    for ds in datasets:
        ds.ImageOrientationPatient = [1, 0, 0, 0, math.cos(tilt), -math.sin(tilt)]
    volume = load_volume(datasets)
    step = phantom.spacing[0]
    assert volume.tilt_degrees == pytest.approx(20, abs=0.01)
    assert volume.spacing[0] == pytest.approx(step * math.cos(tilt))
    assert volume.voxel_volume_ml == pytest.approx(step * math.cos(tilt) * phantom.spacing[1] ** 2 / 1000)
    last = volume.affine @ np.array([SLICES - 1, 0, 0, 1])
    assert last[:3] == pytest.approx([float(v) for v in volume.datasets[-1].ImagePositionPatient], abs=1e-6)


# geometry that cannot be trusted: refused, saying what is wrong

def test_one_missing_slice(datasets):
    lost = datasets.pop(5)
    text = reason(datasets)
    assert "1 slice(s) missing" in text
    assert f"between {z_of(datasets[4]):.2f} and {z_of(datasets[5]):.2f} mm" in text
    assert f"{z_of(datasets[5]) - z_of(lost):.2f} mm" in text  # the series' step


def test_several_missing_slices_are_counted(datasets):
    del datasets[7:9]
    del datasets[2]
    assert "3 slice(s) missing" in reason(datasets)


def test_non_uniform_spacing(phantom, datasets):
    gap = phantom.spacing[0]
    for ds in datasets[6:]:
        shift(ds, dz=0.4 * gap)  # one gap of 1.4 steps: no whole number of missing slices
    text = reason(datasets)
    assert "spacing is not uniform" in text
    assert f"{1.4 * gap:.2f} mm after {z_of(datasets[5]):.2f} mm" in text


def test_spacing_that_changes_half_way(phantom, datasets):
    gap = phantom.spacing[0]
    for number, ds in enumerate(datasets):
        shift(ds, dz=0.5 * gap * max(0, number - 6))  # 1.5 steps from the 7th slice on
    assert "spacing is not uniform" in reason(datasets)


def test_duplicate_positions(datasets):
    datasets[4].ImagePositionPatient = datasets[3].ImagePositionPatient
    assert "share one slice position" in reason(datasets)
    assert f"{z_of(datasets[3]):.2f} mm" in reason(datasets)


def test_mixed_orientations(datasets):
    datasets[2].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    datasets[9].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    text = reason(datasets)
    assert "mixed orientations" in text
    assert "10 axial" in text and "1 sagittal" in text and "1 coronal" in text


def test_mixed_orientations_are_listed_most_common_first_whatever_the_arrival_order(datasets):
    datasets[0].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    forward, backward = reason(datasets), reason(list(reversed(datasets)))
    assert forward == backward
    assert forward.index("11 axial") < forward.index("1 sagittal")


def test_positions_off_the_line_are_neither_a_stack_nor_a_tilt(datasets):
    shift(datasets[6], dx=5.0)
    text = reason(datasets)
    assert "do not lie on one line" in text and "not a single stack, nor a gantry tilt" in text


def test_a_slide_along_the_plane_beyond_any_gantry_tilt(phantom, datasets):
    for number, ds in enumerate(datasets):
        shift(ds, dx=number * phantom.spacing[0] * 2)  # 63 degrees
    assert "no gantry tilts that far" in reason(datasets)


def test_pixel_spacing_must_be_one_grid(datasets):
    datasets[3].PixelSpacing = [0.8, 0.8]
    assert "differ in PixelSpacing" in reason(datasets)


def test_one_frame_of_reference(datasets):
    datasets[3].FrameOfReferenceUID = "1.2.3.4"
    assert "2 frames of reference" in reason(datasets)


def test_stack_geometry_names_frames_for_multi_frame_callers():
    orientations = np.array([[1, 0, 0, 0, 1, 0]] * 3 + [[0, 1, 0, 0, 0, -1]], dtype=float)
    positions = np.array([[0, 0, z] for z in range(4)], dtype=float)
    with pytest.raises(GeometryError, match="the frames do not share one ImageOrientationPatient"):
        stack_geometry(orientations, positions, pixel_mm=1.0, planes="frames")
