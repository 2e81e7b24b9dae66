"""The result series as viewers list them: dated by their creation, numbered per model and kind, described by model
and version; still dciodvfy-clean, and the SEG and SR still reference their sources."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pydicom
import pytest
import torch

from ai_orchestrator.modeling.imaging import load_volume
from ai_orchestrator.modeling.registry import Registry
from ai_orchestrator.phantom import make_chest_phantom
from ai_orchestrator.results.encoding import encode
from ai_orchestrator.results.provenance import series_description, series_number
from tests.dicom_checks import content_items, dciodvfy_errors

KINDS = ("SEG", "SR", "SC")


@pytest.fixture(scope="module")
def written(model, tmp_path_factory):
    volume = load_volume(make_chest_phantom(None, slices=12, rows=64, seed=3).datasets)
    result = model.predict(volume, torch.device("cpu"), {})
    before = datetime.now()
    objects = encode(result, volume.datasets, model)
    after = datetime.now()
    folder = tmp_path_factory.mktemp("series")
    paths = []
    for index, ds in enumerate(objects):
        paths.append(folder / f"{index}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return volume, [pydicom.dcmread(path) for path in paths], paths, (before, after)


def _moment(date: str, time: str) -> datetime:
    return datetime.strptime(f"{date}{time.split('.')[0]:0<6}", "%Y%m%d%H%M%S")


def test_series_date_and_time_are_the_creation(written):
    _volume, objects, _paths, (before, after) = written
    for ds in objects:
        created = _moment(ds.SeriesDate, ds.SeriesTime)
        assert before.replace(microsecond=0) <= created <= after, ds.Modality
        assert created <= _moment(ds.ContentDate, ds.ContentTime)  # a series is not newer than its content


def test_series_numbers_and_descriptions_name_the_model_and_kind(written, model):
    _volume, objects, _paths, _ = written
    assert [int(ds.SeriesNumber) for ds in objects] == [series_number(model.name, kind) for kind in KINDS]
    assert len({int(ds.SeriesNumber) for ds in objects}) == 3
    assert [ds.SeriesDescription for ds in objects] == [f"AI {kind} {model.name} {model.version}" for kind in KINDS]


def test_every_built_in_model_has_its_own_series_numbers():
    numbers = {model.name: {series_number(model.name, kind) for kind in KINDS} for model in Registry.load().models}
    assert len(numbers) >= 2
    assert len(set().union(*numbers.values())) == 3 * len(numbers)
    assert all(1 <= number < 2**31 for found in numbers.values() for number in found)  # IS, a signed 32-bit value
    assert series_number("ct-chest-quant", "SEG") == series_number("ct-chest-quant", "SEG")  # stable


def test_a_long_model_name_is_shortened_but_the_version_kept(model):
    long = replace(model, name="x" * 64, version="2.3.4")  # the longest name a ModelSpec takes
    description = series_description(long, "SR")
    assert len(description) == 64 and description.endswith(" 2.3.4") and description.startswith("AI SR xxx")


def test_still_dciodvfy_clean(written):
    _volume, _objects, paths, _ = written
    for path in paths:
        assert dciodvfy_errors(path) == [], path.name


def test_seg_and_sr_still_reference_their_sources(written):
    volume, (seg, sr, _sc), _paths, _ = written
    sources = {str(ds.SOPInstanceUID) for ds in volume.datasets}
    referenced = {str(ref.ReferencedSOPInstanceUID)
                  for series in seg.ReferencedSeriesSequence for ref in series.ReferencedInstanceSequence}
    assert referenced == sources
    evidence = {str(ref.ReferencedSOPInstanceUID) for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
    assert sources | {str(seg.SOPInstanceUID)} == evidence
    images = [item.ReferencedSOPSequence[0] for item in content_items(sr.ContentSequence) if item.ValueType == "IMAGE"]
    assert any(ref.ReferencedSOPInstanceUID == seg.SOPInstanceUID for ref in images)
