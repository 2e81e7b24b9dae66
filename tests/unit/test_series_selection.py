"""Which series a model gets: localizers and non-axial series never, the thinnest of the rest unless the model
chooses (modeling.api), frames counted as images; what intake reads to know (gateway.study) and the workitem that
names the choice (requester)."""

from __future__ import annotations

import logging
import math

import pytest
from pydicom import Dataset
from pydicom.sr.coding import Code

from ai_orchestrator.gateway.study import SeriesDetails, read_study
from ai_orchestrator.modeling.api import (
    ModelResult,
    ModelSpec,
    ModelSpecError,
    is_axial,
    is_localizer,
    slice_thickness,
    thinnest_series,
)
from ai_orchestrator.modeling.registry import Registry, RegistryEntry
from ai_orchestrator.requester.building import build_workitem
from ai_orchestrator.requester.matching import RegistryMatcher, RuleMatcher, describe, is_input_series
from tests.unit.snapshots import BASE, NOW, series, study

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def tilted(degrees: float) -> tuple[float, ...]:
    """Axial rows, columns tilted about the left-right axis (a gantry tilt)."""
    radians = math.radians(degrees)
    return (1.0, 0.0, 0.0, 0.0, math.cos(radians), math.sin(radians))


def described(uid: str, thickness: float | None = None, frames: int = 60, number: int = 1, spacing=None,
              image_type=("ORIGINAL", "PRIMARY", "AXIAL"), orientations=(AXIAL,)) -> dict:
    return {"Modality": "CT", "BodyPartExamined": "CHEST", "SeriesInstanceUID": uid, "SeriesNumber": str(number),
            "instances": [f"{uid}.{n}" for n in range(frames)], "frames": frames, "ImageType": list(image_type),
            "SliceThickness": thickness, "slice_spacing": spacing, "orientations": [list(o) for o in orientations]}


def model(**overrides) -> ModelSpec:
    spec = {"name": "m", "version": "1", "algorithm": Code("M1", "99TEST", "m"),
            "applies_to": {"Modality": "^CT$"}, "min_instances": 10, "predict": lambda *_: ModelResult()}
    return ModelSpec(**{**spec, **overrides})


# -- the rule ----------------------------------------------------------------------------------------------------

def test_the_thinnest_series_is_chosen():
    thick, thin = described("5mm", 5.0), described("1mm", 1.0, frames=300)
    assert thinnest_series([thick, thin]) == [thin]
    assert thinnest_series([thin, thick]) == [thin]


def test_equal_thickness_goes_to_most_images_then_series_number_then_uid():
    short, long = described("a", 1.0, frames=100), described("b", 1.0, frames=120)
    assert thinnest_series([short, long]) == [long]
    first, second = described("c", 1.0, number=3), described("d", 1.0, number=2)
    assert thinnest_series([first, second]) == [second]
    assert thinnest_series([described("1.9", 1.0), described("1.10", 1.0)])[0]["SeriesInstanceUID"] == "1.10"


def test_thickness_falls_back_to_the_slice_spacing_and_unknown_comes_last():
    assert slice_thickness(described("a", None, spacing=2.5)) == 2.5
    assert slice_thickness(described("a", 0.0, spacing=None)) is None
    known, unknown = described("known", None, spacing=3.0), described("unknown", None, frames=500)
    assert thinnest_series([unknown, known]) == [known]
    assert thinnest_series([]) == []


def test_localizers_are_never_input_whatever_their_orientation():
    spec = model()
    scout = described("scout", 0.5, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    assert is_localizer(scout) and not spec.matches(scout)
    assert is_localizer({"ImageType": "ORIGINAL\\PRIMARY\\LOCALIZER"})  # as a DICOM JSON-like string
    assert spec.matches(described("axial", 1.0))


@pytest.mark.parametrize("orientations, axial", [
    ((AXIAL,), True),
    ((tilted(20),), True),  # a tilted gantry still scans axially
    ((tilted(60),), False),
    ((CORONAL,), False),
    ((SAGITTAL,), False),
    ((AXIAL, CORONAL, SAGITTAL), False),  # a three-plane scout in one series
    ((), True),  # unknown: not refused for it
])
def test_only_axial_series_are_input(orientations, axial):
    series = described("s", 1.0, orientations=orientations)
    assert is_axial(series) is axial
    assert model().matches(series) is axial


def test_frames_count_toward_min_instances():
    enhanced = {**described("mf", 1.0, frames=24), "instances": ["mf.1"]}
    assert model(min_instances=20).matches(enhanced)
    assert not model(min_instances=25).matches(enhanced)
    assert model(min_instances=2).matches({"Modality": "CT", "instances": ["a", "b"]})  # no frames key: instances


def test_a_model_may_choose_its_own_series():
    def thickest(candidates):
        return sorted(candidates, key=lambda s: -s["SliceThickness"])[:1]

    thick, thin = described("5mm", 5.0), described("1mm", 1.0)
    spec = model(choose_series=thickest)
    assert spec.choose([thin, thick]) == [thick]
    assert model(choose_series=lambda candidates: list(candidates)).choose([thin, thick]) == [thin, thick]
    assert model(choose_series=lambda candidates: []).choose([thin, thick]) == []
    assert spec.describe_inputs()["series_choice"] == "thickest"
    assert model().describe_inputs()["series_choice"] == "thinnest_series"


def test_a_choice_outside_the_candidates_is_an_error_and_the_registry_falls_back(caplog):
    rogue = model(name="rogue", choose_series=lambda candidates: [described("elsewhere", 0.1)])
    thick, thin = described("5mm", 5.0), described("1mm", 1.0)
    with pytest.raises(ModelSpecError, match="elsewhere"):
        rogue.choose([thick, thin])
    failing = model(name="failing", choose_series=lambda candidates: 1 / 0)
    registry = Registry([RegistryEntry(spec.name, None, spec) for spec in (rogue, failing)])
    with caplog.at_level(logging.WARNING, logger="ai_orchestrator"):
        pairs = registry.applicable([thick, thin])
    assert [(spec.name, [s["SeriesInstanceUID"] for s in chosen]) for spec, chosen in pairs] == [
        ("rogue", ["1mm"]), ("failing", ["1mm"])]
    assert "default choice" in caplog.text


def test_choose_series_must_be_callable():
    with pytest.raises(ModelSpecError, match="choose_series"):
        model(choose_series="thinnest")


# -- from the study to the workitem ------------------------------------------------------------------------------

def detailed(uid: str, thickness: float, count: int, image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
             orientations=(AXIAL,), number: int = 2):
    snapshot = series(uid, count=count)
    return type(snapshot)(snapshot.orthanc_id, uid, {**snapshot.main_tags, "SeriesNumber": str(number)},
                          snapshot.sop_class_uid, snapshot.sop_instance_uids,
                          details=SeriesDetails(image_type=tuple(image_type), orientations=tuple(orientations),
                                                slice_thickness=thickness))


def test_localizer_series_are_not_input_series():
    assert not is_input_series(detailed("1.1", 0.5, 12, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")))
    assert is_input_series(detailed("1.2", 1.0, 12))


def test_a_study_with_a_localizer_a_coronal_reformat_and_two_reconstructions_gets_the_thin_one(model):
    localizer = detailed("1.1", 0.5, 12, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), number=1)
    coronal = detailed("1.2", 0.5, 40, image_type=("DERIVED", "SECONDARY", "REFORMATTED"), orientations=(CORONAL,))
    thin, thick = detailed("1.3", 1.0, 300, number=3), detailed("1.4", 5.0, 60, number=4)
    snapshot = study(localizer, coronal, thick, thin)
    registry = Registry([RegistryEntry(model.name, None, model)])
    [(algorithm, chosen)] = RegistryMatcher(registry).match(snapshot)
    assert algorithm.label == "ct-chest-quant" and chosen == [thin]

    workitem = Dataset.from_json(build_workitem(snapshot, algorithm, chosen, uid="1.2.3.4", dicomweb_base=BASE,
                                                now=NOW))
    [item] = workitem.InputInformationSequence
    assert item.SeriesInstanceUID == "1.3"
    assert [ref.ReferencedSOPInstanceUID for ref in item.ReferencedSOPSequence] == list(thin.sop_instance_uids)
    assert item.WADORSRetrievalSequence[0].RetrieveURL.endswith("/series/1.3")


def test_rules_for_external_engines_leave_localizers_out():
    localizer = detailed("1.1", 0.5, 2, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    [(_, group)] = RuleMatcher().match(study(localizer, detailed("1.2", 1.0, 12)))
    assert [s.series_instance_uid for s in group] == ["1.2"]


def test_describe_offers_what_selection_weighs():
    snapshot = detailed("1.3", 1.0, 3)
    offered = describe(snapshot)
    assert offered["SeriesInstanceUID"] == "1.3" and offered["frames"] == 3
    assert offered["instances"] == ["1.3.1", "1.3.2", "1.3.3"]
    assert offered["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"] and offered["SliceThickness"] == 1.0
    assert offered["orientations"] == [list(AXIAL)] and offered["BodyPartExamined"] == "CHEST"


# -- what read_study learns ---------------------------------------------------------------------------------------

class Orthanc:
    """Orthanc 1.10's REST answers for one study, by URI; records the calls."""

    def __init__(self, answers: dict) -> None:
        self.answers, self.calls = answers, []

    def get_json(self, uri: str):
        self.calls.append(uri)
        return self.answers[uri]


def _instance(instance_id: str, series_id: str, number: int, **tags) -> dict:
    return {"ID": instance_id, "ParentSeries": series_id,
            "MainDicomTags": {"InstanceNumber": str(number), "SOPInstanceUID": f"{series_id}.{number}", **tags}}


def _frame(z: float, orientation=AXIAL) -> dict:
    return {"PlanePositionSequence": [{"ImagePositionPatient": f"-100\\-100\\{z}"}],
            "PlaneOrientationSequence": [{"ImageOrientationPatient": "\\".join(str(v) for v in orientation)}]}


def study_answers() -> dict:
    """A single-frame series (positions 2.5 mm apart), a scout and an Enhanced CT of 4 frames 1.25 mm apart, as
    Orthanc 1.10 lists them (IOP/IPP main tags for single-frame instances, NumberOfFrames for multi-frame)."""
    iop = "1\\0\\0\\0\\1\\0"
    axial = [_instance(f"ax{n}", "ax", n, ImageOrientationPatient=iop, ImagePositionPatient=f"0\\0\\{2.5 * n}")
             for n in (1, 2, 3)]
    scout = [_instance("sc1", "sc", 1, ImageOrientationPatient="1\\0\\0\\0\\0\\-1",
                       ImagePositionPatient="0\\0\\0")]
    enhanced = [_instance("mf1", "mf", 1, NumberOfFrames="4")]
    series = [{"ID": sid, "MainDicomTags": {"Modality": "CT", "SeriesInstanceUID": sid, **extra}}
              for sid, extra in (("ax", {"BodyPartExamined": "CHEST"}), ("sc", {}), ("mf", {}))]
    return {
        "/studies/st": {"ID": "st", "MainDicomTags": {"StudyInstanceUID": "1.2"}, "PatientMainDicomTags": {}},
        "/studies/st/series": series,
        "/studies/st/instances": axial + scout + enhanced,
        **{f"/instances/{i}/metadata?expand": {"SopClassUid": "1.2.840.10008.5.1.4.1.1.2"} for i in ("ax1", "sc1")},
        "/instances/mf1/metadata?expand": {"SopClassUid": "1.2.840.10008.5.1.4.1.1.2.1"},
        "/instances/ax1/tags?simplify": {"ImageType": "ORIGINAL\\PRIMARY\\AXIAL", "SliceThickness": "2.5"},
        "/instances/sc1/tags?simplify": {"ImageType": "ORIGINAL\\PRIMARY\\LOCALIZER"},
        "/instances/mf1/tags?simplify": {
            "ImageType": "ORIGINAL\\PRIMARY\\VOLUME\\NONE",
            "SharedFunctionalGroupsSequence": [{
                "PixelMeasuresSequence": [{"SliceThickness": "1.25", "PixelSpacing": "0.7\\0.7"}],
                "FrameAnatomySequence": [{"AnatomicRegionSequence": [
                    {"CodeValue": "816094009", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Chest"}]}]}],
            "PerFrameFunctionalGroupsSequence": [_frame(z) for z in (3.75, 0.0, 2.5, 1.25)]},
    }


def test_read_study_without_details_makes_no_extra_call():
    orthanc = Orthanc(study_answers())
    snapshot = read_study(orthanc, "st")
    assert len(orthanc.calls) == 3 + 3
    axial, scout, enhanced = snapshot.series
    # what the instances' main tags give for free
    assert axial.details.orientations == (AXIAL,) and axial.details.slice_spacing == 2.5
    assert scout.details.orientations == (CORONAL,)
    assert enhanced.frames == 4 and enhanced.frame_count == 4 and axial.frames == 3 and axial.frame_count is None
    assert not scout.is_localizer  # ImageType is not a main tag: unknown without details


def test_read_study_with_details_reads_one_instance_per_selected_series():
    orthanc = Orthanc(study_answers())
    snapshot = read_study(orthanc, "st", details_for=lambda s: s.series_instance_uid != "ax")
    assert len(orthanc.calls) == 3 + 3 + 2
    axial, scout, enhanced = snapshot.series
    assert axial.details.image_type == ()
    assert scout.is_localizer and not is_input_series(scout)
    assert enhanced.details.image_type == ("ORIGINAL", "PRIMARY", "VOLUME", "NONE")
    assert enhanced.details.orientations == (AXIAL,)
    assert enhanced.details.slice_spacing == 1.25 and enhanced.details.slice_thickness == 1.25
    assert enhanced.body_part == "CHEST"  # from the Frame Anatomy code, for want of BodyPartExamined


def test_details_of_a_multiframe_series_feed_the_rule(model):
    snapshot = read_study(Orthanc(study_answers()), "st", details_for=is_input_series)
    axial, scout, enhanced = snapshot.series
    offered = {s.series_instance_uid: describe(s) for s in (axial, enhanced)}
    assert not is_input_series(scout)
    assert offered["mf"]["frames"] == 4 and offered["mf"]["SliceThickness"] == 1.25
    assert offered["ax"]["SliceThickness"] == 2.5
    assert thinnest_series(list(offered.values())) == [offered["mf"]]
    assert not model.matches(offered["mf"])  # ct-chest-quant needs 10 images
