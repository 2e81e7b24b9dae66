"""The model API: what a model module in the models directory imports and declares.

A model module declares ``MODEL = ModelSpec(...)``. Its ``predict`` takes what ``prepare`` made of the input series
(by default a :class:`ai_orchestrator.modeling.imaging.Volume` in modality units), the torch device and a run
context, and answers a :class:`ModelResult`: segments (written as a DICOM SEG), measurements (a TID 1500 SR) and a
short summary burnt into a preview image. Coded concepts are pydicom ``Code`` values, e.g. from
``pydicom.sr.codedict.codes``.

Which series a model gets (:meth:`ModelSpec.matches`, then :meth:`ModelSpec.choose`): each series is offered as a
mapping of its tags by keyword (Orthanc's main tags: ``Modality``, ``BodyPartExamined``, ``SeriesDescription``,
``SeriesNumber``...; ``SeriesInstanceUID``, ``SOPClassUID``) plus ``instances`` (the SOP Instance UIDs), ``frames``
(images: the frames of a multi-frame instance count one by one), ``ImageType``, ``SliceThickness``,
``slice_spacing`` (mm between slice positions) and ``orientations`` (the distinct ImageOrientationPatient values),
each empty or None where unknown. Localizers and series that are not axial are never a model's input; among the
series that pass ``applies_to``, ``min_instances`` and ``series_complete``, :func:`thinnest_series` chooses unless
the model's own ``choose_series`` does.

This module is the stable surface for model authors: it imports nothing else from the package.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

if TYPE_CHECKING:
    import torch

OUTPUT_KINDS = frozenset({"SEG", "SR", "SC"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RunContext(Protocol):
    """What ``predict`` gets as its third argument: stage timing, progress reports and cancel checkpoints.

    It is also a mapping with the keys ``stage``, ``progress``, ``checkpoint`` and ``timer``.
    """

    def progress(self, percent: float, description: str) -> None: ...

    def checkpoint(self) -> None:
        """Raises when a cancel was requested: call it between long steps."""

    def __getitem__(self, key: str) -> Any: ...


class ModelSpecError(ValueError):
    """A model declaration is invalid; the message names the field."""


@dataclass(frozen=True, eq=False)
class Segment:
    """One segmented structure: a boolean mask [slice, row, col] on the input volume's grid plus its coded meaning.

    A label map converts with one Segment per label value: ``Segment("Lung", label_map == 1, ...)``.
    """

    label: str
    mask: np.ndarray
    category: Code  # Segmented Property Category, e.g. codes.SCT.AnatomicalStructure
    property_type: Code  # Segmented Property Type, e.g. codes.SCT.Lung
    algorithm_type: str = "AUTOMATIC"
    color: tuple[int, int, int] | None = None  # RGB for viewers and the preview; None: a default palette
    preview_outline: bool = False  # draw only the outline in the preview (for large structures such as the body)


@dataclass(frozen=True)
class Measurement:
    name: Code
    value: float
    unit: Code  # UCUM, e.g. Code("ml", "UCUM", "milliliter")
    segment: str | None = None  # label of the Segment it measures; None: the whole image series
    derivation: Code | None = None  # e.g. codes.SCT.Mean


@dataclass(frozen=True, eq=False)
class ModelResult:
    segments: tuple[Segment, ...] = ()
    measurements: tuple[Measurement, ...] = ()
    summary: Mapping[str, float] = field(default_factory=dict)  # short label -> value, burnt into the preview


PredictFn = Callable[[Any, "torch.device", RunContext], ModelResult]
PrepareFn = Callable[[Sequence[Dataset]], Any]
SeriesDescription = Mapping[str, Any]  # a series as models see it: tags by keyword, instances, frames...
ChooseFn = Callable[[Sequence[SeriesDescription]], Sequence[SeriesDescription]]

AXIAL_MAX_DEGREES = 45.0  # a slice normal at most this far from the head-foot axis is axial (gantry tilts included)


def is_localizer(series: SeriesDescription) -> bool:
    """A scout / topogram: ImageType holds LOCALIZER (value 3 of CT images, the Image Flavor of Enhanced CT)."""
    return "LOCALIZER" in {str(value).strip().upper() for value in _as_list(series.get("ImageType"))}


def is_axial(series: SeriesDescription) -> bool:
    """Every orientation of the series' images is axial: its slice normal lies within AXIAL_MAX_DEGREES of the
    patient's head-foot axis. A series of several orientations (a three-plane scout) is not; a series whose
    orientation is unknown is not refused for it."""
    orientations = [_floats(o) for o in _as_list(series.get("orientations"))]
    threshold = np.cos(np.radians(AXIAL_MAX_DEGREES))
    for orientation in orientations:
        if orientation is None or orientation.shape != (6,):
            return False
        normal = np.cross(orientation[:3], orientation[3:])
        length = float(np.linalg.norm(normal))
        if length < 0.5 or abs(normal[2]) / length < threshold:
            return False
    return True


def slice_thickness(series: SeriesDescription) -> float | None:
    """The series' slice thickness in mm: SliceThickness, else the spacing of its slice positions; None: unknown."""
    for key in ("SliceThickness", "slice_spacing"):
        try:
            value = float(series.get(key) or 0)
        except (TypeError, ValueError):
            continue
        if value > 0:
            return value
    return None


def thinnest_series(candidates: Sequence[SeriesDescription]) -> list[SeriesDescription]:
    """The default choice among the series a model matches: the thinnest (:func:`slice_thickness`; unknown ones
    last), then the one with the most images (``frames``), then the lowest SeriesNumber, then the lowest
    SeriesInstanceUID, so the same study always gives the same choice. One series, or none when there is none."""
    def rank(series: SeriesDescription) -> tuple[float, int, float, str]:
        thickness = slice_thickness(series)
        return (thickness if thickness is not None else float("inf"), -_instance_count(series),
                _number(series.get("SeriesNumber")), str(series.get("SeriesInstanceUID", "")))

    return sorted(candidates, key=rank)[:1]


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """What a model module declares. ``applies_to`` maps DICOM keywords of series tags to regular expressions."""

    name: str
    version: str
    algorithm: Code  # becomes the Scheduled Workitem Code Sequence
    applies_to: Mapping[str, str]
    predict: PredictFn
    outputs: frozenset[str] = OUTPUT_KINDS
    min_instances: int = 1
    series_complete: Callable[[Mapping[str, Any]], bool] | None = None
    prepare: PrepareFn | None = None  # None: the series as a Volume (modeling.imaging.load_volume)
    choose_series: ChooseFn | None = None  # among the matching series, the inputs; None: thinnest_series
    description: str = ""
    # seconds one run (decode, prepare, predict, encode) may take in the model host before it is killed and the
    # attempt fails; None: the plugin's ModelTimeoutSeconds
    timeout_s: float | None = None
    family: Code = codes.DCM.ArtificialIntelligence  # Algorithm Family (CID 7162) in SEG/SR provenance
    procedure: Code = codes.SCT.ImagingProcedure  # Procedure Reported of the SR measurement report
    _patterns: Mapping[str, re.Pattern[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_text(self.name, "name", _NAME)
        _check_text(self.version, "version", re.compile(r"^\S.{0,30}$"))
        for attribute in ("algorithm", "family", "procedure"):
            if not isinstance(getattr(self, attribute), Code):
                raise ModelSpecError(f"{attribute} must be a pydicom Code (CodeValue, scheme, meaning)")
        object.__setattr__(self, "outputs", frozenset(self.outputs))
        if not self.outputs or not self.outputs <= OUTPUT_KINDS:
            raise ModelSpecError(f"outputs must be a non-empty subset of {sorted(OUTPUT_KINDS)}")
        if not callable(self.predict):
            raise ModelSpecError("predict must be callable")
        if self.prepare is not None and not callable(self.prepare):
            raise ModelSpecError("prepare must be callable or None")
        if self.series_complete is not None and not callable(self.series_complete):
            raise ModelSpecError("series_complete must be callable or None")
        if self.choose_series is not None and not callable(self.choose_series):
            raise ModelSpecError("choose_series must be callable or None")
        if isinstance(self.min_instances, bool) or not isinstance(self.min_instances, int) or self.min_instances < 1:
            raise ModelSpecError("min_instances must be a whole number >= 1")
        timeout = self.timeout_s
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0):
            raise ModelSpecError("timeout_s must be a number of seconds > 0, or None")
        object.__setattr__(self, "_patterns", _compile_selection(self.applies_to))

    def matches(self, series: Mapping[str, Any]) -> bool:
        """Whether a series (see the module's docstring) can be input for this model: never a localizer nor a
        series that is not axial; ``applies_to``, ``min_instances`` (counting ``frames``) and ``series_complete``."""
        if is_localizer(series) or not is_axial(series):
            return False
        for keyword, pattern in self._patterns.items():
            value = series.get(keyword)
            if value is None or not pattern.search(_as_text(value)):
                return False
        if _instance_count(series) < self.min_instances:
            return False
        return self.series_complete is None or bool(self.series_complete(series))

    def choose(self, candidates: Sequence[SeriesDescription]) -> list[SeriesDescription]:
        """The inputs among the series this model matches: its ``choose_series``, else :func:`thinnest_series`.
        ModelSpecError when a model's choice is not among the candidates."""
        offered = {str(series.get("SeriesInstanceUID", "")): series for series in candidates}
        chosen = [str(series.get("SeriesInstanceUID", ""))
                  for series in (self.choose_series or thinnest_series)(list(candidates))]
        unknown = [uid for uid in chosen if uid not in offered]
        if unknown:
            raise ModelSpecError(f"choose_series of {self.name} answered series it was not offered: {unknown}")
        return [offered[uid] for uid in dict.fromkeys(chosen)]

    def describe_inputs(self) -> dict[str, Any]:
        return {
            "series": dict(self.applies_to),
            "min_instances": self.min_instances,
            "completeness_check": self.series_complete is not None,
            "series_choice": getattr(self.choose_series, "__name__", "custom") if self.choose_series
            else thinnest_series.__name__,
        }


def _check_text(value: Any, attribute: str, pattern: re.Pattern[str]) -> None:
    if not isinstance(value, str) or not pattern.match(value):
        raise ModelSpecError(f"{attribute} {value!r} is not valid (expected {pattern.pattern})")


def _compile_selection(applies_to: Mapping[str, str]) -> dict[str, re.Pattern[str]]:
    if not isinstance(applies_to, Mapping) or not applies_to:
        raise ModelSpecError("applies_to must map at least one DICOM keyword to a regular expression")
    patterns = {}
    for keyword, expression in applies_to.items():
        if not isinstance(keyword, str) or tag_for_keyword(keyword) is None:
            raise ModelSpecError(f"applies_to: {keyword!r} is not a DICOM keyword")
        try:
            patterns[keyword] = re.compile(expression)
        except (re.error, TypeError) as error:
            raise ModelSpecError(f"applies_to[{keyword!r}]: invalid regular expression: {error}") from error
    return patterns


def _as_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "\\".join(str(item) for item in value)
    return str(value)


def _instance_count(series: Mapping[str, Any]) -> int:
    """Images in the series: ``frames`` when given (a multi-frame instance counts its frames), else ``instances``."""
    frames = series.get("frames")
    if frames is not None:
        return int(frames)
    count = series.get("instances", 0)
    return len(count) if isinstance(count, (list, tuple)) else int(count or 0)


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return value.split("\\")
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _floats(value: Any) -> np.ndarray | None:
    try:
        return np.asarray([float(v) for v in _as_list(value)], dtype=np.float64)
    except (TypeError, ValueError):
        return None


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")
