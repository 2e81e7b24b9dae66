"""The model registry: each ``*.py`` in the models directory declares one model as ``MODEL = ModelSpec(...)``.

Loading never raises: a module that fails to import or declares nonsense is kept as an entry with
``status="error"`` so that ``GET /ai-orchestrator/models`` can show what is wrong with it.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from .imaging import load_volume
from .results import is_own_result

if TYPE_CHECKING:
    import torch

OUTPUT_KINDS = frozenset({"SEG", "SR", "SC"})
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
MODULE_PREFIX = "ai_orchestrator_models"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

log = logging.getLogger("ai_orchestrator")


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


PredictFn = Callable[[Any, "torch.device", Mapping[str, Any]], ModelResult]


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
    prepare: Callable[[Sequence[Dataset]], Any] = load_volume
    description: str = ""
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
        for attribute in ("predict", "prepare"):
            if not callable(getattr(self, attribute)):
                raise ModelSpecError(f"{attribute} must be callable")
        if self.series_complete is not None and not callable(self.series_complete):
            raise ModelSpecError("series_complete must be callable or None")
        if isinstance(self.min_instances, bool) or not isinstance(self.min_instances, int) or self.min_instances < 1:
            raise ModelSpecError("min_instances must be a whole number >= 1")
        object.__setattr__(self, "_patterns", _compile_selection(self.applies_to))

    def matches(self, series: Mapping[str, Any]) -> bool:
        """Whether a series (main tags by keyword plus ``instances``) is input for this model."""
        for keyword, pattern in self._patterns.items():
            value = series.get(keyword)
            if value is None or not pattern.search(_as_text(value)):
                return False
        if _instance_count(series) < self.min_instances:
            return False
        return self.series_complete is None or bool(self.series_complete(series))

    def describe_inputs(self) -> dict[str, Any]:
        return {
            "series": dict(self.applies_to),
            "min_instances": self.min_instances,
            "completeness_check": self.series_complete is not None,
        }


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    source: Path
    spec: ModelSpec | None = None
    error: str | None = None

    @property
    def status(self) -> str:
        return "ok" if self.spec is not None else "error"

    def describe(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "name": self.name,
            "version": spec.version if spec else None,
            "description": spec.description if spec else "",
            "algorithm": _code_json(spec.algorithm) if spec else None,
            "inputs": spec.describe_inputs() if spec else None,
            "outputs": sorted(spec.outputs) if spec else [],
            "status": self.status,
            "error": self.error,
            "source": self.source.name,
        }


class Registry:
    def __init__(self, entries: Sequence[RegistryEntry] = ()) -> None:
        self.entries: tuple[RegistryEntry, ...] = tuple(entries)

    @classmethod
    def load(cls, models_dir: Path | str | None = None) -> "Registry":
        directory = Path(models_dir) if models_dir is not None else DEFAULT_MODELS_DIR
        if not directory.is_dir():
            log.warning("models directory %s does not exist: no models", directory)
            return cls()
        entries: list[RegistryEntry] = []
        for path in sorted(directory.glob("*.py")):
            if not path.name.startswith("_"):
                entries.append(_deduplicated(_load_entry(path), entries))
        return cls(entries)

    @property
    def models(self) -> list[ModelSpec]:
        return [entry.spec for entry in self.entries if entry.spec is not None]

    def get(self, name: str) -> ModelSpec | None:
        return next((model for model in self.models if model.name == name), None)

    def applicable(self, series_list: Sequence[Mapping[str, Any]]) -> list[tuple[ModelSpec, list[Mapping[str, Any]]]]:
        """Each working model with the series it applies to; models with none are left out, as are our own results."""
        inputs = [series for series in series_list if not is_own_result(series)]
        pairs = []
        for model in self.models:
            matching = [series for series in inputs if model.matches(series)]
            if matching:
                pairs.append((model, matching))
        return pairs

    def describe(self) -> list[dict[str, Any]]:
        return [entry.describe() for entry in self.entries]


def _load_entry(path: Path) -> RegistryEntry:
    module_name = f"{MODULE_PREFIX}.{path.stem}"
    try:
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"cannot import {path.name}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module  # dataclasses and pickling look the module up here
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:
        sys.modules.pop(module_name, None)
        log.warning("model module %s failed to load: %s", path.name, error)
        return RegistryEntry(name=path.stem, source=path, error=f"{type(error).__name__}: {error}")
    model = getattr(module, "MODEL", None)
    if not isinstance(model, ModelSpec):
        return RegistryEntry(name=path.stem, source=path, error="the module declares no MODEL = ModelSpec(...)")
    return RegistryEntry(name=model.name, source=path, spec=model)


def _deduplicated(entry: RegistryEntry, earlier: Sequence[RegistryEntry]) -> RegistryEntry:
    clash = next((other for other in earlier if other.spec is not None and other.name == entry.name), None)
    if entry.spec is None or clash is None:
        return entry
    return RegistryEntry(name=entry.name, source=entry.source,
                         error=f"model name {entry.name!r} is already declared by {clash.source.name}")


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
    count = series.get("instances", 0)
    return len(count) if isinstance(count, (list, tuple)) else int(count or 0)


def _code_json(code: Code) -> dict[str, str]:
    return {"CodeValue": code.value, "CodingSchemeDesignator": code.scheme_designator, "CodeMeaning": code.meaning}
