"""Multi-frame CT as one volume (modeling.multiframe through load_volume) and results that reference its frames."""

from __future__ import annotations

import copy

import highdicom as hd
import numpy as np
import pytest
import torch
from pydicom.uid import EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage, RLELossless

from ai_orchestrator.modeling.imaging import InputError, load_volume
from ai_orchestrator.modeling.multiframe import (
    frame_position,
    frame_values,
    is_multiframe,
    slice_order,
    with_shared_geometry,
)
from ai_orchestrator.phantom import make_chest_phantom
from ai_orchestrator.results.encoding import encode
from tests.dicom_checks import content_items, dciodvfy_errors, numeric_items
from tests.enhanced_ct import enhanced_ct, legacy_converted


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom(slices=24, rows=128, emphysema_fraction=0.12)


@pytest.fixture(scope="module")
def single(phantom):
    return load_volume(phantom.datasets)


@pytest.fixture(scope="module", params=["legacy", "enhanced"])
def multiframe(request, phantom):
    return (legacy_converted if request.param == "legacy" else enhanced_ct)(phantom.datasets)


def test_test_data_are_the_sop_classes_they_claim(phantom):
    assert legacy_converted(phantom.datasets).SOPClassUID == LegacyConvertedEnhancedCTImageStorage
    enhanced = enhanced_ct(phantom.datasets)
    assert enhanced.SOPClassUID == EnhancedCTImageStorage
    assert int(enhanced.NumberOfFrames) == 24 and is_multiframe(enhanced)
    assert not is_multiframe(phantom.datasets[0])


def test_test_data_pass_dciodvfy(phantom, tmp_path):
    for name, ds in (("legacy", legacy_converted(phantom.datasets)), ("enhanced", enhanced_ct(phantom.datasets))):
        path = tmp_path / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], name


def test_one_multiframe_instance_is_the_same_volume_as_the_single_frame_series(multiframe, single):
    volume = load_volume([multiframe])
    assert np.array_equal(volume.hu, single.hu)  # per-frame rescale of the Enhanced CT included
    assert volume.spacing == pytest.approx(single.spacing)
    assert np.allclose(volume.origin, single.origin) and np.allclose(volume.directions, single.directions)
    assert np.allclose(volume.affine, single.affine)
    assert volume.datasets == (multiframe,)
    assert sorted(volume.frame_numbers) == list(range(1, 25))


def test_frame_numbers_name_the_frame_each_slice_came_from(multiframe, single):
    volume = load_volume([multiframe])
    for index, frame in enumerate(volume.frame_numbers):
        assert np.allclose(frame_position(multiframe, frame), single.affine[:3] @ [index, 0, 0, 1])
        assert np.array_equal(frame_values(multiframe, frame), single.hu[index])
    assert slice_order(multiframe) == volume.frame_numbers


def test_the_two_kinds_store_their_frames_in_other_orders(phantom):
    """The converter writes frames head first, the Enhanced CT shuffled: neither is the volume's order."""
    legacy = load_volume([legacy_converted(phantom.datasets)]).frame_numbers
    enhanced = load_volume([enhanced_ct(phantom.datasets)]).frame_numbers
    assert legacy == tuple(range(24, 0, -1))
    assert enhanced not in (tuple(range(1, 25)), tuple(range(24, 0, -1)))


def test_geometry_agrees_with_highdicom(multiframe):
    ours = load_volume([multiframe])
    theirs = hd.Image.from_dataset(copy.deepcopy(multiframe)).get_volume(dtype=np.float32)
    flipped = theirs.array[::-1] if theirs.affine[2, 0] < 0 else theirs.array  # highdicom may stack head first
    assert np.array_equal(flipped, ours.hu)
    assert theirs.spacing_between_slices == pytest.approx(ours.spacing[0])


def _frames_in_order(ds, order):
    """``ds`` with its frames rearranged: new frame i is old frame order[i] (functional groups and pixels)."""
    out = copy.deepcopy(ds)
    pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    out.PerFrameFunctionalGroupsSequence = [copy.deepcopy(ds.PerFrameFunctionalGroupsSequence[i]) for i in order]
    out.PixelData = pixels[list(order)].tobytes()
    out.NumberOfFrames = len(order)
    return out


def test_a_missing_frame_is_refused_saying_so(phantom):
    ds = legacy_converted(phantom.datasets)
    gapped = _frames_in_order(ds, [i for i in range(24) if i != 10])
    with pytest.raises(InputError, match="missing"):
        load_volume([gapped])


def test_two_frames_at_one_position_are_refused(phantom):
    ds = legacy_converted(phantom.datasets)
    doubled = _frames_in_order(ds, list(range(24)) + [5])
    with pytest.raises(InputError, match="share one slice position"):
        load_volume([doubled])


def test_mixed_frame_orientations_are_refused(phantom):
    ds = enhanced_ct(phantom.datasets)  # orientation per frame
    ds.PerFrameFunctionalGroupsSequence[3].PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    with pytest.raises(InputError, match="mixed orientations"):
        load_volume([ds])


def test_missing_functional_groups_are_refused(phantom):
    ds = legacy_converted(phantom.datasets)
    del ds.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence
    with pytest.raises(InputError, match="ImagePositionPatient is missing .* frame 3"):
        load_volume([ds])
    short = legacy_converted(phantom.datasets)
    short.PerFrameFunctionalGroupsSequence = short.PerFrameFunctionalGroupsSequence[:-1]
    with pytest.raises(InputError, match="one item per frame"):
        load_volume([short])


def test_several_multiframe_instances_in_one_series_are_refused(phantom):
    with pytest.raises(InputError, match="expected one multi-frame instance"):
        load_volume([legacy_converted(phantom.datasets), legacy_converted(phantom.datasets)])


def test_per_frame_geometry_is_shared_for_highdicom_without_touching_the_source(phantom):
    ds = enhanced_ct(phantom.datasets)
    assert "PlaneOrientationSequence" not in ds.SharedFunctionalGroupsSequence[0]
    view = with_shared_geometry(ds)
    shared = view.SharedFunctionalGroupsSequence[0]
    assert list(shared.PlaneOrientationSequence[0].ImageOrientationPatient) == [1, 0, 0, 0, 1, 0]
    assert "PixelMeasuresSequence" in shared
    assert "PlaneOrientationSequence" not in ds.SharedFunctionalGroupsSequence[0]
    assert ds.SharedFunctionalGroupsSequence[0] is not shared
    assert view.SOPInstanceUID == ds.SOPInstanceUID and view.file_meta is ds.file_meta
    legacy = legacy_converted(phantom.datasets)
    assert with_shared_geometry(legacy) is legacy  # already shared


@pytest.fixture(scope="module")
def results(model, phantom):
    """ct-chest-quant's SEG, SR and SC of the single-frame series and of both multi-frame forms."""
    out = {}
    for kind, sources in (("single", phantom.datasets), ("legacy", [legacy_converted(phantom.datasets)]),
                          ("enhanced", [enhanced_ct(phantom.datasets)])):
        volume = load_volume(sources)
        result = model.predict(volume, torch.device("cpu"), {})
        out[kind] = (volume, result, {ds.Modality: ds for ds in encode(result, list(volume.datasets), model)})
    return out


@pytest.mark.parametrize("kind", ["legacy", "enhanced"])
def test_seg_frames_reference_the_source_frames_they_segment(results, kind):
    volume, result, objects = results[kind]
    seg, source = objects["SEG"], volume.datasets[0]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    [instance] = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert instance.ReferencedSOPInstanceUID == source.SOPInstanceUID
    slice_of = {frame: index for index, frame in enumerate(volume.frame_numbers)}
    masks = {number: np.asarray(s.mask, dtype=bool) for number, s in enumerate(result.segments, start=1)}
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    seen = set()
    for frame, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        [reference] = item.DerivationImageSequence[0].SourceImageSequence
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
        source_frame = int(reference.ReferencedFrameNumber)
        assert np.allclose([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
                           frame_position(source, source_frame))
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        assert np.array_equal(pixels[frame].astype(bool), masks[number][slice_of[source_frame]])
        seen.add((number, source_frame))
    nonempty = {(n, volume.frame_numbers[i]) for n, m in masks.items() for i in np.flatnonzero(m.any(axis=(1, 2)))}
    assert seen == nonempty  # every non-empty slice of every segment, nothing else


@pytest.mark.parametrize("kind", ["legacy", "enhanced"])
def test_sr_names_the_source_frames_and_measures_what_the_single_frame_series_measures(results, kind):
    volume, result, objects = results[kind]
    single = numeric_items(results["single"][2]["SR"].ContentSequence)
    measured = numeric_items(objects["SR"].ContentSequence)
    assert measured.keys() == single.keys()
    for name, (value, unit) in measured.items():
        assert (value, unit) == (pytest.approx(single[name][0], rel=1e-9), single[name][1]), name
    lungs = np.asarray(next(s.mask for s in result.segments if s.label == "Lungs"))
    covered = sorted(volume.frame_numbers[i] for i in np.flatnonzero(lungs.any(axis=(1, 2))))
    frames = [[int(n) for n in item.ReferencedSOPSequence[0].ReferencedFrameNumber]
              for item in content_items(objects["SR"].ContentSequence)
              if item.ValueType == "IMAGE"
              and item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == volume.datasets[0].SOPInstanceUID]
    assert covered in frames


@pytest.mark.parametrize("kind", ["legacy", "enhanced"])
def test_preview_shows_the_frame_of_the_single_frame_preview(results, kind):
    single_sc = results["single"][2]["OT"]
    sc = results[kind][2]["OT"]
    assert np.array_equal(sc.pixel_array, single_sc.pixel_array)
    assert list(sc.PixelSpacing) == list(single_sc.PixelSpacing)
    assert list(sc.PatientOrientation) == list(single_sc.PatientOrientation)
    volume = results[kind][0]
    [shown] = sc.SourceImageSequence
    assert shown.ReferencedSOPInstanceUID == volume.datasets[0].SOPInstanceUID
    [single_shown] = single_sc.SourceImageSequence
    index = [ds.SOPInstanceUID for ds in results["single"][0].datasets].index(single_shown.ReferencedSOPInstanceUID)
    assert int(shown.ReferencedFrameNumber) == volume.frame_numbers[index]  # the frame of the same slice


@pytest.mark.parametrize("kind", ["legacy", "enhanced"])
def test_results_of_a_multiframe_source_pass_dciodvfy(results, kind, tmp_path):
    for modality, ds in results[kind][2].items():
        path = tmp_path / f"{modality}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], modality


def test_a_compressed_multiframe_instance_loads_the_same(phantom, single):
    """Encapsulated pixel data (RLE Lossless, which pydicom encodes itself) is decoded frame by frame."""
    ds = enhanced_ct(phantom.datasets)
    ds.compress(RLELossless)
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    volume = load_volume([ds])
    assert np.array_equal(volume.hu, single.hu)
    frame = volume.frame_numbers[5]
    assert np.array_equal(frame_values(ds, frame), single.hu[5])


def test_a_tilted_gantry_multiframe_is_handled_like_a_tilted_series(phantom, single, model):
    """Frames shifted within their plane in step with their depth (15 degrees): the volume keeps the stored voxels,
    its affine the true step, and the SEG frames still lie on the source frames they name."""
    ds = legacy_converted(phantom.datasets)
    shift = np.tan(np.radians(15))
    for item in ds.PerFrameFunctionalGroupsSequence:
        x, y, z = (float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient)
        item.PlanePositionSequence[0].ImagePositionPatient = [x, round(y + shift * z, 4), z]
    volume = load_volume([ds])
    assert volume.tilt_degrees == pytest.approx(15, abs=0.01)
    assert np.array_equal(volume.hu, single.hu) and volume.spacing == pytest.approx(single.spacing)
    assert np.allclose(volume.affine[:3] @ [3, 0, 0, 1], frame_position(ds, volume.frame_numbers[3]))
    seg = encode(model.predict(volume, torch.device("cpu"), {}), list(volume.datasets), model)[0]
    for item in seg.PerFrameFunctionalGroupsSequence:
        frame = int(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
        assert np.allclose([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
                           frame_position(ds, frame))
