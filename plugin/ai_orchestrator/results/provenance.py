"""Provenance of what this plugin writes: the attributes every result object shares, and how a series is
recognised as our own result (so that it is never fed back into a model).

Every object carries ``Manufacturer = MANUFACTURER`` (General Equipment Module, PS3.3 C.7.5.1) and names the
plugin and model versions in Software Versions (0018,1020).

Each result series is dated by its creation (Series Date and Time, the server's local time like the Content and
Instance Creation Date and Time highdicom writes), so viewers list it under a date; its Series Description names
the kind, model and version; its Series Number is distinct per model and kind (:func:`series_number`).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import highdicom as hd
from pydicom.uid import generate_uid

from .. import __version__
from ..modeling.api import ModelSpec

MANUFACTURER = "Orthanc AI Orchestrator"
SOFTWARE_NAME = "ai-orchestrator"
KIND_DIGITS = {"SEG": 1, "SR": 2, "SC": 3}
SERIES_NUMBER_BASE = 9_000_000
MODEL_NUMBERS = 100_000  # five digits derived from the model's name


def is_own_result(series_main_tags: Mapping[str, Any]) -> bool:
    """Whether a series (its main DICOM tags by keyword, as Orthanc lists them) was written by this plugin."""
    return str(series_main_tags.get("Manufacturer", "")).strip() == MANUFACTURER


def software_versions(model: ModelSpec) -> list[str]:
    """SoftwareVersions (LO, multi-valued): the plugin's and the model's name and version."""
    return [f"{SOFTWARE_NAME} {__version__}", f"{model.name} {model.version}"[:64]]


def series_number(model_name: str, kind: str) -> int:
    """``9MMMMMK``: 9, then five digits from the model's name (CRC-32 of its UTF-8 bytes mod 100,000), then the
    kind (1 SEG, 2 SR, 3 SC). The same model always writes the same numbers, and two models share them only if
    their names collide mod 100,000 (the built-in models do not; tests check it)."""
    return SERIES_NUMBER_BASE + zlib.crc32(model_name.encode("utf-8")) % MODEL_NUMBERS * 10 + KIND_DIGITS[kind]


def series_description(model: ModelSpec, kind: str) -> str:
    """``AI SEG ct-chest-quant 1.0``: the kind, the model and its version, within LO's 64 characters (a long name
    is shortened, never the version)."""
    suffix = f" {model.version}"[:32]
    return f"AI {kind} {model.name}"[:64 - len(suffix)] + suffix


def provenance(model: ModelSpec, kind: str) -> dict[str, Any]:
    """The attributes every written object shares; series description names model and version."""
    created = datetime.now()  # local time, as highdicom writes Content and Instance Creation Date/Time
    return {
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": model.name[:64],
        "software_versions": software_versions(model),
        "device_serial_number": SOFTWARE_NAME,
        "series_description": series_description(model, kind),
        "series_instance_uid": generate_uid(),
        "series_number": series_number(model.name, kind),
        "series_date": created.date(),
        "series_time": created.time(),
        "sop_instance_uid": generate_uid(),
        "instance_number": 1,
    }


def algorithm_identification(model: ModelSpec) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(name=model.name, family=model.family, version=model.version)
