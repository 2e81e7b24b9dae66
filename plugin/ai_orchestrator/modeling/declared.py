"""Models declared by a file instead of Python code: a directory in the models directory holding
``ai-orchestrator.json`` beside a MONAI bundle (``configs/``, ``models/``) or an ONNX file.

The declaration says what the network files cannot: which series the model applies to, what each output label means
as coded concepts, and which results it writes::

    {
      "name": "lungs-monai", "version": "1.0.0", "description": "...",
      "algorithm": {"CodeValue": "LUNGSMONAI", "CodingSchemeDesignator": "99MYORG", "CodeMeaning": "..."},
      "applies_to": {"Modality": "^CT$", "BodyPartExamined": "(?i)chest"},
      "min_instances": 10,
      "outputs": ["SEG", "SR"],
      "segments": {"1": {"label": "Lungs", "category": "SCT.AnatomicalStructure", "type": "SCT.Lung"}},
      "onnx": {"file": "lungs.onnx", "input": {"shape": ["batch", 1, 128, 128], "dtype": "float32"},
               "window": [-1000, 400]}
    }

A code is a name of ``pydicom.sr.codedict.codes`` (``"SCT.Lung"``), or ``{"CodeValue", "CodingSchemeDesignator",
"CodeMeaning"}``. The model segments each declared label and measures its volume (mL) in the SR. Everything is
checked when the registry loads it: a declaration, bundle or ONNX file that does not hold together raises
:class:`DeclarationError` (or the format's own error) with the reason, which ``GET /models`` shows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from .api import Measurement, ModelResult, ModelSpec, ModelSpecError, RunContext, Segment
from .imaging import Volume

DECLARATION = "ai-orchestrator.json"
MILLILITER = Code("ml", "UCUM", "milliliter")
FORMATS = ("monai-bundle", "onnx")
_KEYS = {"name", "version", "description", "algorithm", "applies_to", "min_instances", "outputs", "segments",
         "procedure", "format", "onnx"}


class DeclarationError(ModelSpecError):
    """The declaration, or the files it names, cannot make a model; the message says why."""


@dataclass(frozen=True)
class SegmentMeaning:
    value: int  # the label value in the network's label map
    label: str
    category: Code
    property_type: Code
    color: tuple[int, int, int] | None = None


LabelMapFn = Callable[[Volume, torch.device, RunContext], np.ndarray]


def read_declaration(directory: Path) -> dict[str, Any]:
    path = directory / DECLARATION
    try:
        declaration = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise DeclarationError(f"{directory.name}/ has no {DECLARATION}") from error
    except (OSError, ValueError) as error:
        raise DeclarationError(f"{DECLARATION} is not readable JSON: {error}") from error
    if not isinstance(declaration, dict):
        raise DeclarationError(f"{DECLARATION} must hold a JSON object")
    unknown = set(declaration) - _KEYS
    if unknown:
        raise DeclarationError(f"{DECLARATION}: unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
    return declaration


def declared_format(directory: Path, declaration: Mapping[str, Any]) -> str:
    """``monai-bundle`` or ``onnx``: as declared, else from what the directory holds."""
    kind = declaration.get("format") or ("onnx" if "onnx" in declaration else
                                         "monai-bundle" if (directory / "configs").is_dir() else None)
    if kind not in FORMATS:
        raise DeclarationError(f"{DECLARATION}: format {kind!r} is not one of {list(FORMATS)} (a MONAI bundle has "
                               f"configs/metadata.json, an ONNX model an \"onnx\" section)")
    return str(kind)


def load_declared(directory: Path) -> tuple[ModelSpec, str]:
    """The model a declared directory holds, and its format; raises with the reason when it cannot be one."""
    declaration = read_declaration(directory)
    kind = declared_format(directory, declaration)
    if kind == "onnx":
        from .onnx import onnx_segmenter  # onnxruntime only when an ONNX model is there

        segmenter = onnx_segmenter(directory, declaration.get("onnx"))
        segments = segment_meanings(declaration.get("segments"), segmenter.labels)
        return declared_spec(declaration, segments, segmenter.label_map_for_run), kind
    from .monai_bundle import MonaiBundle  # monai only when a bundle is there

    bundle = MonaiBundle(directory)
    segments = segment_meanings(declaration.get("segments"), bundle.labels)
    bundle.check()
    return declared_spec(declaration, segments, bundle.label_map_for_run), kind


def parse_code(value: Any, where: str) -> Code:
    """A ``codes`` name such as ``SCT.Lung`` or a ``{"CodeValue", "CodingSchemeDesignator", "CodeMeaning"}``."""
    if isinstance(value, str):
        scheme, _, keyword = value.partition(".")
        try:
            code = getattr(getattr(codes, scheme), keyword)
        except (AttributeError, KeyError):
            code = None
        if not isinstance(code, Code):
            raise DeclarationError(f"{where}: {value!r} is not a name in pydicom.sr.codedict.codes "
                                   f"(e.g. \"SCT.Lung\")")
        return code
    if isinstance(value, Mapping):
        try:
            return Code(str(value["CodeValue"]), str(value["CodingSchemeDesignator"]), str(value["CodeMeaning"]))
        except KeyError as error:
            raise DeclarationError(f"{where}: a code needs CodeValue, CodingSchemeDesignator and CodeMeaning; "
                                   f"{error.args[0]} is missing") from error
    raise DeclarationError(f"{where}: expected a code, e.g. \"SCT.Lung\" or {{\"CodeValue\": ...}}, not {value!r}")


def segment_meanings(declared: Any, network_labels: Mapping[int, str] | None) -> tuple[SegmentMeaning, ...]:
    """The coded meaning of each label the network outputs. ``network_labels`` (value -> name, background 0 left
    out) is what the network says it outputs, when it says (a bundle's ``channel_def``): each of those needs a
    meaning, and each meaning must be one of those."""
    if not isinstance(declared, Mapping) or not declared:
        raise DeclarationError(f'{DECLARATION}: "segments" must map each output label value to its meaning, e.g. '
                               f'{{"1": {{"label": "Lungs", "category": "SCT.AnatomicalStructure", '
                               f'"type": "SCT.Lung"}}}}')
    meanings = []
    for key, meaning in declared.items():
        try:
            value = int(key)
        except ValueError as error:
            raise DeclarationError(f"segments: {key!r} is not a label value (a whole number)") from error
        if not 1 <= value <= 255:
            raise DeclarationError(f"segments: label {value} is outside 1..255 (0 is the background)")
        if not isinstance(meaning, Mapping) or not str(meaning.get("label") or "").strip():
            raise DeclarationError(f"segments[{key}]: needs a \"label\" (the segment's name)")
        for required in ("category", "type"):
            if required not in meaning:
                raise DeclarationError(f"segments[{key}] ({meaning['label']}): label with no code: \"{required}\" "
                                       f"is missing (e.g. \"SCT.AnatomicalStructure\", \"SCT.Lung\")")
        color = meaning.get("color")
        if color is not None and (not isinstance(color, list) or len(color) != 3
                                  or not all(isinstance(c, int) and 0 <= c <= 255 for c in color)):
            raise DeclarationError(f"segments[{key}]: color must be [r, g, b] of 0..255")
        meanings.append(SegmentMeaning(value, str(meaning["label"]).strip(),
                                       parse_code(meaning["category"], f"segments[{key}].category"),
                                       parse_code(meaning["type"], f"segments[{key}].type"),
                                       tuple(color) if color else None))
    if len({m.label for m in meanings}) != len(meanings):
        raise DeclarationError("segments: two labels share one name")
    if network_labels is not None:
        declared_values = {m.value for m in meanings}
        uncoded = {value: name for value, name in network_labels.items() if value not in declared_values}
        if uncoded:
            listed = ", ".join(f"{value} ({name!r})" for value, name in sorted(uncoded.items()))
            raise DeclarationError(f"labels with no code: the network outputs label(s) {listed} that \"segments\" "
                                   f"of {DECLARATION} gives no coded meaning")
        unknown = sorted(declared_values - set(network_labels))
        if unknown:
            raise DeclarationError(f"segments: label(s) {unknown} are not among the network's output labels "
                                   f"{dict(sorted(network_labels.items()))}")
    return tuple(sorted(meanings, key=lambda m: m.value))


def declared_spec(declaration: Mapping[str, Any], segments: tuple[SegmentMeaning, ...],
                  label_map: LabelMapFn) -> ModelSpec:
    """A ModelSpec whose predict segments each declared label and measures its volume."""

    def predict(volume: Volume, device: torch.device, context: RunContext) -> ModelResult:
        labels = label_map(volume, device, context)
        found, measured, summary = [], [], {}
        for meaning in segments:
            mask = labels == meaning.value
            millilitres = float(np.count_nonzero(mask)) * volume.voxel_volume_ml
            found.append(Segment(meaning.label, mask, meaning.category, meaning.property_type, color=meaning.color))
            measured.append(Measurement(codes.SCT.Volume, millilitres, MILLILITER, segment=meaning.label))
            summary[f"{meaning.label} volume (mL)"] = millilitres
        return ModelResult(segments=tuple(found), measurements=tuple(measured), summary=summary)

    for required in ("name", "version", "algorithm", "applies_to"):
        if required not in declaration:
            raise DeclarationError(f"{DECLARATION}: \"{required}\" is missing")
    try:
        return ModelSpec(
            name=declaration["name"], version=str(declaration["version"]),
            algorithm=parse_code(declaration["algorithm"], "algorithm"),
            applies_to=declaration["applies_to"], predict=predict,
            outputs=frozenset(declaration.get("outputs", ("SEG", "SR", "SC"))),
            min_instances=declaration.get("min_instances", 1),
            description=str(declaration.get("description", "")),
            procedure=parse_code(declaration["procedure"], "procedure") if "procedure" in declaration
            else codes.SCT.ImagingProcedure,
        )
    except ModelSpecError as error:
        raise DeclarationError(f"{DECLARATION}: {error}") from error
