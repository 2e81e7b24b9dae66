import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from pydicom.uid import SecondaryCaptureImageStorage, SegmentationStorage

from ai_orchestrator.modeling.imaging import load_volume
from ai_orchestrator.modeling.registry import Registry
from ai_orchestrator.phantom import make_chest_phantom
from ai_orchestrator.results.preview import write_sc
from ai_orchestrator.results.provenance import MANUFACTURER, is_own_result
from ai_orchestrator.results.seg import write_seg
from ai_orchestrator.results.sr import write_sr
from tests.dicom_checks import content_items, dciodvfy_errors, numeric_items

DEVICE = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="module")
def written(model, tmp_path_factory):
    phantom = make_chest_phantom(None, slices=24, rows=128, seed=11)
    volume = load_volume(phantom.datasets)
    result = model.predict(volume, DEVICE, {})
    seg = write_seg(result, volume.datasets, model)
    objects = {"SEG": seg, "SR": write_sr(result, volume.datasets, model, seg), "SC": write_sc(result, volume.datasets, model)}
    folder = tmp_path_factory.mktemp("results")
    paths = {kind: folder / f"{kind}.dcm" for kind in objects}
    for kind, ds in objects.items():
        ds.save_as(paths[kind], enforce_file_format=True)
    paths["CT"] = folder / "CT.dcm"
    phantom.datasets[12].save_as(paths["CT"], enforce_file_format=True)
    return {"phantom": phantom, "volume": volume, "result": result, "paths": paths}


@pytest.mark.parametrize("kind", ["CT", "SEG", "SR", "SC"])
def test_dciodvfy_finds_no_errors(written, kind):
    assert dciodvfy_errors(written["paths"][kind]) == []


@pytest.mark.parametrize("kind", ["SEG", "SR", "SC"])
def test_common_provenance(written, model, kind):
    ds = pydicom.dcmread(written["paths"][kind])
    source = written["volume"].datasets[0]
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientID == source.PatientID
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert ds.Manufacturer == MANUFACTURER and f"{model.name} {model.version}" in ds.SoftwareVersions
    assert model.name in ds.SeriesDescription and model.version in ds.SeriesDescription
    assert is_own_result({"Manufacturer": ds.Manufacturer, "Modality": ds.Modality})
    assert not is_own_result({"Manufacturer": source.Manufacturer, "Modality": "CT"})


def test_seg_round_trip(written, model):
    ds = pydicom.dcmread(written["paths"]["SEG"])
    assert ds.SOPClassUID == SegmentationStorage and ds.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["Body", "Lungs", "Bone"]
    assert ds.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"  # SCT Lung
    assert ds.SegmentSequence[0].SegmentAlgorithmName == model.name
    assert int(ds.NumberOfFrames) < 3 * 24  # empty frames left out
    seg = hd.seg.Segmentation.from_dataset(ds)
    uids = [source.SOPInstanceUID for source in written["volume"].datasets]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1, 2, 3])
    for index, segment in enumerate(written["result"].segments):
        assert np.array_equal(pixels[..., index].astype(bool), segment.mask)


def test_sr_round_trip(written, model):
    ds = pydicom.dcmread(written["paths"]["SR"])
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    numbers = numeric_items(ds.ContentSequence)
    expected = {m.name.meaning: (m.value, m.unit.value) for m in written["result"].measurements}
    assert numbers.keys() == expected.keys()
    for name, (value, unit) in expected.items():
        assert numbers[name][0] == pytest.approx(value, rel=1e-4) and numbers[name][1] == unit
    seg_uid = pydicom.dcmread(written["paths"]["SEG"]).SOPInstanceUID
    images = [item.ReferencedSOPSequence[0] for item in content_items(ds.ContentSequence) if item.ValueType == "IMAGE"]
    assert any(ref.ReferencedSOPInstanceUID == seg_uid and ref.ReferencedSegmentNumber == 2 for ref in images)
    texts = {item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue
             for item in content_items(ds.ContentSequence) if item.ValueType == "TEXT"}
    assert texts["Device Observer Name"] == model.name


def test_sc_preview(written):
    ds = pydicom.dcmread(written["paths"]["SC"])
    assert ds.SOPClassUID == SecondaryCaptureImageStorage and ds.BurnedInAnnotation == "YES"
    rgb = ds.pixel_array
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[1] >= 512 and rgb.shape[2] == 3
    coloured = (rgb.max(axis=2).astype(int) - rgb.min(axis=2)) > 60
    assert coloured.mean() > 0.05  # the lung and bone overlay
    corner = rgb[: rgb.shape[0] // 8, : rgb.shape[1] // 4]
    assert (corner > 200).all(axis=2).sum() > 100  # burnt-in white text on the dark box


def test_writers_refuse_results_without_content(written, model):
    empty = type(written["result"])()
    with pytest.raises(ValueError):
        write_seg(empty, written["volume"].datasets, model)
    with pytest.raises(ValueError):
        write_sr(empty, written["volume"].datasets, model)


def test_full_size_pipeline_is_true(model):
    """100 slices of 512 x 512: every encoder takes the result, numbers within 5 % of the truth.

    How long this takes is measured by bench/inference.py, not asserted here."""
    phantom = make_chest_phantom(None, slices=100, rows=512, seed=0)
    volume = load_volume(phantom.datasets)
    result = model.predict(volume, DEVICE, {})
    seg = write_seg(result, volume.datasets, model)
    write_sr(result, volume.datasets, model, seg)
    write_sc(result, volume.datasets, model)
    measured = {m.name.meaning: m.value for m in result.measurements}
    assert measured["Volume"] == pytest.approx(phantom.truth.lung_volume_ml, rel=0.05)
    assert measured["Lung volume below -950 HU (percent)"] == pytest.approx(phantom.truth.laa950_percent, rel=0.05)


def test_single_segment_result_sr_references_its_seg(tmp_path):
    """A one-segment SEG keeps segment identification in the shared groups; the SR must still reference it."""
    model = Registry.load().get("learned-lungs")
    phantom = make_chest_phantom(None, slices=16, rows=96, seed=3)
    volume = load_volume(phantom.datasets)
    result = model.predict(volume, DEVICE, {})
    assert len(result.segments) == 1
    seg = write_seg(result, volume.datasets, model)
    sr = write_sr(result, volume.datasets, model, seg)
    images = [item.ReferencedSOPSequence[0] for item in content_items(sr.ContentSequence) if item.ValueType == "IMAGE"]
    assert any(ref.ReferencedSOPInstanceUID == seg.SOPInstanceUID and ref.ReferencedSegmentNumber == 1
               for ref in images)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
