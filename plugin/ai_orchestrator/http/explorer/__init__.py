"""The Orthanc Explorer extension: ``panel.js``, package data beside this module, which the entry module hands to
``orthanc.ExtendOrthancExplorer``. It reads the routes of :mod:`ai_orchestrator.http.studies`."""

from __future__ import annotations

from importlib.resources import files

PANEL = "panel.js"


def panel_javascript() -> str:
    """The panel's JavaScript, as shipped with the package."""
    return files(__name__).joinpath(PANEL).read_text(encoding="utf-8")
