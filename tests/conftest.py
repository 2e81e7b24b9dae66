"""For the whole suite: tests under integration/ are marked ``integration``.

Fixtures live with the tests that share them: tests/integration/conftest.py (a real Orthanc) and
tests/unit/conftest.py (the workitem store and service on a test clock).
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.integration)
