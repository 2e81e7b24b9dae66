"""Against a real Orthanc: the phantom as Enhanced CT and as Legacy Converted Enhanced CT completes like the
single-frame series, with results that reference its frames; a study with a localizer, a coronal reformat and a
1 mm and a 5 mm reconstruction gets one workitem per model, on the 1 mm series."""

from __future__ import annotations

import copy
from io import BytesIO

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from ai_orchestrator.modeling.multiframe import frame_position
from ai_orchestrator.phantom import make_chest_phantom
from tests.dicom_checks import content_items, dciodvfy_errors, numeric_items
from tests.enhanced_ct import enhanced_ct, legacy_converted
from tests.integration.studies import upload_rest, upload_storescu, wait_for, workitems_of
from tests.integration.workitems import value

MODELS = {"ct-chest-quant", "learned-lungs"}  # the built-in models that apply to chest CT
KINDS = ("single", "legacy", "enhanced")


def final_workitems(client, patient_id: str, count: int, timeout: float = 180) -> dict[str, dict]:
    """Procedure Step Label (the model name) -> workitem, once the patient's ``count`` workitems are final."""
    def done():
        items = workitems_of(client, patient_id)
        final = [item for item in items if value(item, "00741000") in ("COMPLETED", "CANCELED")]
        return items if len(items) == count and len(final) == count else None

    return {value(item, "00741204"): item for item in wait_for(done, timeout=timeout, interval=0.5)}


def series_of(client, study_uid: str) -> dict[str, list]:
    """Series Instance UID -> the pydicom datasets of its instances, for every series of the study."""
    [study] = client.post("/tools/lookup", content=study_uid).json()
    found = {}
    for series in client.get(f"/studies/{study['ID']}/series").json():
        found[series["MainDicomTags"]["SeriesInstanceUID"]] = [
            pydicom.dcmread(BytesIO(client.get(f"/instances/{instance}/file").content))
            for instance in series["Instances"]]
    return found


def results_of(client, study_uid: str, model: str) -> dict[str, pydicom.Dataset]:
    """Modality -> the one result object ``model`` wrote into the study."""
    return {datasets[0].Modality: datasets[0] for datasets in series_of(client, study_uid).values()
            if datasets[0].get("Manufacturer") == "Orthanc AI Orchestrator" and model in datasets[0].SeriesDescription}


@pytest.fixture(scope="module")
def runs(orthanc, tmp_path_factory):
    """The same phantom (same pixels) sent three times, each as its own patient: as single-frame slices (C-STORE),
    as a Legacy Converted Enhanced CT (REST) and as an Enhanced CT (C-STORE)."""
    sent = {}
    for kind in KINDS:
        patient = f"MF{kind[:3].upper()}{generate_uid()[-8:]}"
        phantom = make_chest_phantom(slices=24, rows=128, emphysema_fraction=0.12, patient_id=patient)
        datasets = {"single": phantom.datasets, "legacy": [legacy_converted(phantom.datasets)],
                    "enhanced": [enhanced_ct(phantom.datasets)]}[kind]
        if kind == "legacy":
            upload_rest(orthanc.client, datasets)
        else:
            upload_storescu(orthanc.dicom_port, datasets, tmp_path_factory.mktemp(kind))
        sent[kind] = (patient, phantom, datasets)
    return {kind: (phantom, datasets, final_workitems(orthanc.client, patient, len(MODELS)))
            for kind, (patient, phantom, datasets) in sent.items()}


@pytest.mark.parametrize("kind", KINDS)
def test_every_form_completes_with_both_models(runs, kind):
    _phantom, datasets, items = runs[kind]
    assert set(items) == MODELS
    assert {label: value(item, "00741000") for label, item in items.items()} == dict.fromkeys(MODELS, "COMPLETED")
    for item in items.values():
        [inputs] = item["00404021"]["Value"]
        assert value(inputs, "0020000E") == datasets[0].SeriesInstanceUID
        assert [value(ref, "00081155") for ref in inputs["00081199"]["Value"]] == \
            [ds.SOPInstanceUID for ds in datasets]


@pytest.mark.parametrize("kind", ["legacy", "enhanced"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_sr_lung_volume_is_within_one_percent_of_the_single_frame_result(orthanc, runs, kind, model):
    def lung_volume(run_kind):
        phantom = runs[run_kind][0]
        return numeric_items(results_of(orthanc.client, phantom.study_uid, model)["SR"].ContentSequence)["Volume"][0]

    single = lung_volume("single")
    assert lung_volume(kind) == pytest.approx(single, rel=0.01)
    if model == "ct-chest-quant":
        assert single == pytest.approx(runs["single"][0].truth.lung_volume_ml, rel=0.05)


@pytest.mark.parametrize("kind", ["legacy", "enhanced"])
def test_seg_references_the_multiframe_source_frame_by_frame(orthanc, runs, kind, tmp_path):
    phantom, [source], _items = runs[kind]
    objects = results_of(orthanc.client, phantom.study_uid, "ct-chest-quant")
    seg = objects["SEG"]
    [referenced] = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence] == [source.SOPInstanceUID]
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    frames = int(source.NumberOfFrames)
    lung_frames = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        [reference] = item.DerivationImageSequence[0].SourceImageSequence
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert reference.ReferencedSOPClassUID == source.SOPClassUID
        frame = int(reference.ReferencedFrameNumber)
        assert 1 <= frame <= frames
        assert np.allclose([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
                           frame_position(source, frame))  # the SEG frame lies on the source frame it names
        if int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == 2:  # Lungs
            lung_frames.append(frame)
    # the single-frame run's lungs cover the same slices, found by position
    single = results_of(orthanc.client, runs["single"][0].study_uid, "ct-chest-quant")["SEG"]
    single_z = sorted(float(i.PlanePositionSequence[0].ImagePositionPatient[2])
                      for i in single.PerFrameFunctionalGroupsSequence
                      if int(i.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == 2)
    assert sorted(float(frame_position(source, f)[2]) for f in lung_frames) == pytest.approx(single_z)
    assert seg.pixel_array.astype(bool).sum() == single.pixel_array.astype(bool).sum()

    sr = objects["SR"]
    images = [item for item in content_items(sr.ContentSequence) if item.ValueType == "IMAGE"]
    named = {int(n) for item in images for ref in item.ReferencedSOPSequence
             if ref.ReferencedSOPInstanceUID == source.SOPInstanceUID for n in ref.ReferencedFrameNumber}
    assert set(lung_frames) <= named
    evidence = {ref.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
    assert {source.SOPInstanceUID, seg.SOPInstanceUID} <= evidence

    for modality, ds in objects.items():
        path = tmp_path / f"{modality}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], modality


@pytest.mark.parametrize("kind", ["legacy", "enhanced"])
def test_preview_shows_the_same_slice_as_the_single_frame_preview(orthanc, runs, kind):
    single = results_of(orthanc.client, runs["single"][0].study_uid, "ct-chest-quant")["OT"]
    preview = results_of(orthanc.client, runs[kind][0].study_uid, "ct-chest-quant")["OT"]
    assert np.array_equal(preview.pixel_array, single.pixel_array)
    assert preview.StudyInstanceUID == runs[kind][0].study_uid


def _localizer(datasets, count: int = 12):
    """A scout series that would win the thinness rule if localizers were not refused: axial, 0.5 mm."""
    series_uid, scouts = generate_uid(), []
    for number, source in enumerate(datasets[:count], start=1):
        ds = copy.deepcopy(source)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, 1, "Topogram"
        ds.SliceThickness = 0.5
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = number
        scouts.append(ds)
    return scouts


def _coronal_reformat(datasets, count: int = 20):
    """A coronal reformat of 0.5 mm: thin, complete, but not axial."""
    series_uid, reformats = generate_uid(), []
    for number, source in enumerate(datasets[:count], start=1):
        ds = copy.deepcopy(source)
        ds.ImageType = ["DERIVED", "SECONDARY", "REFORMATTED"]
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, 5, "Coronal MPR"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        ds.ImagePositionPatient = [-180.0, -100.0 + 0.5 * number, 150.0]
        ds.SliceThickness = ds.SpacingBetweenSlices = 0.5
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = number
        reformats.append(ds)
    return reformats


@pytest.fixture(scope="module")
def selection_run(orthanc, tmp_path_factory):
    patient, study_uid = f"SEL{generate_uid()[-8:]}", generate_uid()
    thin = make_chest_phantom(slices=300, rows=64, patient_id=patient, study_uid=study_uid)  # 1 mm
    thick = make_chest_phantom(slices=60, rows=64, patient_id=patient, study_uid=study_uid)  # 5 mm
    for number, phantom in ((3, thin), (4, thick)):
        for ds in phantom.datasets:
            ds.SeriesNumber = number
    everything = _localizer(thin.datasets) + _coronal_reformat(thin.datasets) + thick.datasets + thin.datasets
    upload_storescu(orthanc.dicom_port, everything, tmp_path_factory.mktemp("selection"))
    return thin, thick, final_workitems(orthanc.client, patient, len(MODELS))


def test_one_workitem_per_model_names_the_1_mm_series(selection_run):
    thin, thick, items = selection_run
    assert float(thin.datasets[0].SliceThickness) == 1.0 and float(thick.datasets[0].SliceThickness) == 5.0
    assert set(items) == MODELS
    for label, item in items.items():
        [inputs] = item["00404021"]["Value"]  # Input Information Sequence: the chosen series only
        assert value(inputs, "0020000E") == thin.datasets[0].SeriesInstanceUID, label
        assert [value(ref, "00081155") for ref in inputs["00081199"]["Value"]] == \
            [ds.SOPInstanceUID for ds in thin.datasets]
        retrieve = value(inputs["0040E025"]["Value"][0], "00081190")
        assert retrieve.endswith(f"/series/{thin.datasets[0].SeriesInstanceUID}")
        assert value(item, "00741000") == "COMPLETED", item.get("00741002")


def test_the_results_are_made_from_the_chosen_series(orthanc, selection_run):
    thin, _thick, _items = selection_run
    seg = results_of(orthanc.client, thin.study_uid, "ct-chest-quant")["SEG"]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == thin.datasets[0].SeriesInstanceUID
    sr = results_of(orthanc.client, thin.study_uid, "ct-chest-quant")["SR"]
    assert numeric_items(sr.ContentSequence)["Volume"][0] == pytest.approx(thin.truth.lung_volume_ml, rel=0.05)
