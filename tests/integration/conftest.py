"""Fixtures shared by the integration tests: a real Orthanc with the plugin loaded, on free ports."""

from __future__ import annotations

import pytest

from tests.orthanc_server import OrthancServer


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory) -> OrthancServer:
    """One Orthanc for the integration tests (short StableAge); its data dir is a temp dir."""
    with OrthancServer(tmp_path_factory.mktemp("orthanc-data"), stable_age=1) as server:
        yield server


@pytest.fixture
def api(orthanc):
    """An httpx client rooted at the plugin's REST API."""
    return orthanc.client
