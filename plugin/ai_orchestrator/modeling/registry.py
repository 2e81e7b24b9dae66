"""The model registry: each ``*.py`` in the models directory declares one model as ``MODEL = ModelSpec(...)``, and
each directory holding ``ai-orchestrator.json`` is a declared model: a MONAI bundle or an ONNX file
(:mod:`.declared`).

Loading never raises: a module that fails to import or declares nonsense, a bundle or ONNX file that does not load,
and a model whose name or algorithm code an earlier one already declared are kept as entries with
``status="error"`` so that ``GET /ai-orchestrator/models`` can show what is wrong with them. Python modules load
first (in name order), then directories (in name order).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.sr.coding import Code

from .api import ModelSpec, thinnest_series
from .declared import DECLARATION, load_declared

DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[3] / "models"
MODULE_PREFIX = "ai_orchestrator_models"

log = logging.getLogger("ai_orchestrator")


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    source: Path
    spec: ModelSpec | None = None
    error: str | None = None
    format: str = "python"  # "python", "monai-bundle" or "onnx"

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
            "format": self.format,
        }


class Registry:
    def __init__(self, entries: Sequence[RegistryEntry] = ()) -> None:
        self.entries: tuple[RegistryEntry, ...] = tuple(entries)

    @classmethod
    def load(cls, models_dir: Path | str | None = None) -> Registry:
        directory = Path(models_dir) if models_dir is not None else DEFAULT_MODELS_DIR
        if not directory.is_dir():
            log.warning("models directory %s does not exist: no models", directory)
            return cls()
        entries: list[RegistryEntry] = []
        for path in sorted(directory.glob("*.py")):
            if not path.name.startswith("_"):
                entries.append(_deduplicated(_load_entry(path), entries))
        for path in sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            entry = _load_directory(path)
            if entry is not None:
                entries.append(_deduplicated(entry, entries))
        return cls(entries)

    @property
    def models(self) -> list[ModelSpec]:
        return [entry.spec for entry in self.entries if entry.spec is not None]

    def get(self, name: str) -> ModelSpec | None:
        return next((model for model in self.models if model.name == name), None)

    def applicable(self, series_list: Sequence[Mapping[str, Any]]) -> list[tuple[ModelSpec, list[Mapping[str, Any]]]]:
        """Each working model with its input series: those it matches, then those it chooses among them
        (``ModelSpec.choose``: by default the thinnest); models with none are left out.

        The caller hands in candidate input series only (the requester leaves our own results out). A model whose
        own ``choose_series`` fails or answers nonsense gets the default choice, and a warning is logged."""
        pairs = []
        for model in self.models:
            matching = [series for series in series_list if model.matches(series)]
            chosen = _chosen(model, matching) if matching else []
            if chosen:
                pairs.append((model, chosen))
        return pairs

    def describe(self) -> list[dict[str, Any]]:
        return [entry.describe() for entry in self.entries]


def _chosen(model: ModelSpec, matching: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    try:
        return model.choose(matching)
    except Exception as error:  # a model's own code must not stop intake for the study
        log.warning("choose_series of model %s failed (%s): the default choice applies", model.name, error)
        return thinnest_series(matching)


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


def _load_directory(path: Path) -> RegistryEntry | None:
    """A declared model (MONAI bundle or ONNX), an error entry for a bundle without its declaration, or None for
    any other directory (weights, data)."""
    if not (path / DECLARATION).is_file():
        if (path / "configs" / "metadata.json").is_file():
            return RegistryEntry(name=path.name, source=path, format="monai-bundle",
                                 error=f"a MONAI bundle without {DECLARATION} beside its configs/: declare which "
                                       f"series it applies to and what its labels mean (see the README)")
        return None
    try:
        model, kind = load_declared(path)
    except Exception as error:  # whatever a bundle's code or ONNX Runtime raises: the model is listed as an error
        log.warning("declared model %s/ failed to load: %s", path.name, error)
        kind = "monai-bundle" if (path / "configs").is_dir() else "onnx"
        return RegistryEntry(name=path.name, source=path, error=f"{type(error).__name__}: {error}", format=kind)
    return RegistryEntry(name=model.name, source=path, spec=model, format=kind)


def _deduplicated(entry: RegistryEntry, earlier: Sequence[RegistryEntry]) -> RegistryEntry:
    """Refuses a model whose name or algorithm code (which labels its workitems and picks who runs them) an earlier
    working model already declares."""
    if entry.spec is None:
        return entry
    error = None
    for other in earlier:
        if other.spec is None:
            continue
        if other.name == entry.name:
            error = f"model name {entry.name!r} is already declared by {other.source.name}"
        elif _code_key(other.spec.algorithm) == _code_key(entry.spec.algorithm):
            code = entry.spec.algorithm
            error = (f"algorithm code ({code.value}, {code.scheme_designator}) is already declared by "
                     f"{other.source.name} (model {other.name!r}): each model needs its own algorithm code")
        if error:
            return RegistryEntry(name=entry.name, source=entry.source, error=error, format=entry.format)
    return entry


def _code_key(code: Code) -> tuple[str, str]:
    return code.value, code.scheme_designator


def _code_json(code: Code) -> dict[str, str]:
    return {"CodeValue": code.value, "CodingSchemeDesignator": code.scheme_designator, "CodeMeaning": code.meaning}
