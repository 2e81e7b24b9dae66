"""Provenance of what this plugin writes: the attributes every result object shares, and how a series is
recognised as our own result (so that it is never fed back into a model).

Every object carries ``Manufacturer = MANUFACTURER`` (General Equipment Module, PS3.3 C.7.5.1) and names the
plugin and model versions in Software Versions (0018,1020).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import highdicom as hd
from pydicom.uid import generate_uid

from .. import __version__
from ..modeling.api import ModelSpec

MANUFACTURER = "Orthanc AI Orchestrator"
SOFTWARE_NAME = "ai-orchestrator"
SERIES_NUMBERS = {"SEG": 9001, "SR": 9002, "SC": 9003}


def is_own_result(series_main_tags: Mapping[str, Any]) -> bool:
    """Whether a series (its main DICOM tags by keyword, as Orthanc lists them) was written by this plugin."""
    return str(series_main_tags.get("Manufacturer", "")).strip() == MANUFACTURER


def software_versions(model: ModelSpec) -> list[str]:
    """SoftwareVersions (LO, multi-valued): the plugin's and the model's name and version."""
    return [f"{SOFTWARE_NAME} {__version__}", f"{model.name} {model.version}"[:64]]


def provenance(model: ModelSpec, kind: str) -> dict[str, Any]:
    """The attributes every written object shares; series description names model and version."""
    return {
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": model.name[:64],
        "software_versions": software_versions(model),
        "device_serial_number": SOFTWARE_NAME,
        "series_description": f"AI {kind} {model.name} {model.version}"[:64],
        "series_instance_uid": generate_uid(),
        "series_number": SERIES_NUMBERS[kind],
        "sop_instance_uid": generate_uid(),
        "instance_number": 1,
    }


def algorithm_identification(model: ModelSpec) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(name=model.name, family=model.family, version=model.version)
