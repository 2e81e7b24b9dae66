"""Start-up detection of what the running Orthanc offers (the entry module, on a stand-in ``orthanc`` module)."""

from __future__ import annotations

import importlib
import sys
import types

import pytest


def entry_on(monkeypatch, orthanc_version: tuple[int, int, int] | None):
    """The entry module imported against an ``orthanc`` module of that version (None: no CheckVersionAdvanced)."""
    fake = types.ModuleType("orthanc")
    if orthanc_version is not None:
        fake.CheckVersionAdvanced = lambda major, minor, revision: orthanc_version >= (major, minor, revision)
    monkeypatch.setitem(sys.modules, "orthanc", fake)
    return importlib.reload(importlib.import_module("ai_orchestrator.entry"))


MAPS = ("7f1c2a000000-7f1c2a100000 r-xp 00000000 fe:01 123 /usr/lib/x86_64-linux-gnu/libpython3.13.so.1.0\n"
        "7f1c2b000000-7f1c2b100000 r-xp 00000000 fe:01 456 /usr/lib/orthanc/libOrthancPython.so.{}\n")


@pytest.mark.parametrize("orthanc_version, plugin, allow_threads, expected", [
    ((1, 10, 1), "4.0", True, (False, False, False, "4.0")),      # Debian 12
    ((1, 12, 7), "5.0", True, (True, True, True, "5.0")),         # Debian 13
    ((1, 11, 3), "4.2", True, (False, True, False, "4.2")),
    ((1, 12, 0), "4.3", False, (True, True, False, "4.3")),       # AllowThreads not configured
])
def test_capabilities_follow_the_versions(monkeypatch, tmp_path, orthanc_version, plugin, allow_threads, expected):
    entry = entry_on(monkeypatch, orthanc_version)
    maps = tmp_path / "maps"
    maps.write_text(MAPS.format(plugin))
    read = entry._python_plugin_version
    monkeypatch.setattr(entry, "_python_plugin_version", lambda: read(maps))
    capabilities = entry.detect_capabilities({"Python": {"AllowThreads": allow_threads}})
    assert (capabilities.orthanc_labels, capabilities.keep_alive_timeout, capabilities.sdk_calls_release_gil,
            capabilities.python_plugin_version) == expected


def test_nothing_is_assumed_when_nothing_can_be_read(monkeypatch, tmp_path):
    entry = entry_on(monkeypatch, None)
    maps = tmp_path / "maps"
    maps.write_text("7f1c2b000000-7f1c2b100000 r-xp 00000000 fe:01 456 /opt/plugins/libOrthancPython.so\n")
    assert entry._python_plugin_version(maps) is None
    assert entry._python_plugin_version(tmp_path / "absent") is None
    capabilities = entry.detect_capabilities({"Python": {"AllowThreads": True}})
    assert not (capabilities.orthanc_labels or capabilities.keep_alive_timeout or capabilities.sdk_calls_release_gil)


@pytest.fixture(autouse=True)
def fresh_entry_afterwards():
    yield
    sys.modules.pop("ai_orchestrator.entry", None)  # the next importer gets one bound to its own orthanc
