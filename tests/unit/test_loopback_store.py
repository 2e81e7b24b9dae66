"""The loopback store (gateway/loopback.py) against a respx-mocked Orthanc HTTP port and a recording in-process
gateway: what goes where, with which credentials, and how it falls back so that no result is lost; and which
configurations choose it (app.Orchestrator._result_store)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from ai_orchestrator.app import Orchestrator
from ai_orchestrator.capabilities import Capabilities
from ai_orchestrator.config import ConfigError, Settings
from ai_orchestrator.gateway.loopback import LoopbackEndpoint, LoopbackStore
from ai_orchestrator.gateway.protocol import OrthancError

PORT = 18042
URL = f"http://127.0.0.1:{PORT}"
DICOM = b"\0" * 128 + b"DICM" + b"\x02" * 64
STORED = {"ID": "i-http", "ParentStudy": "s", "Path": "/instances/i-http", "Status": "Success"}


class InProcess:
    """Records the calls an in-process gateway gets; stores answer ``i-local``."""

    def __init__(self, fail: Exception | None = None):
        self.calls: list[tuple[str, object]] = []
        self.fail = fail

    def get_json(self, uri: str) -> Any:
        self.calls.append(("get_json", uri))
        return {"uri": uri}

    def get_instance_dicom(self, instance_id: str) -> bytes:
        self.calls.append(("get_instance_dicom", instance_id))
        return b"dicom"

    def post_json(self, uri: str, body: Any) -> Any:
        self.calls.append(("post_json", uri))
        return {}

    def post_instance(self, dicom: bytes) -> dict:
        self.calls.append(("post_instance", len(dicom)))
        if self.fail:
            raise self.fail
        return {"ID": "i-local", "ParentStudy": "s"}

    def put(self, uri: str, body: bytes = b"") -> None:
        self.calls.append(("put", uri))

    def delete(self, uri: str) -> None:
        self.calls.append(("delete", uri))


@pytest.fixture
def orthanc_port():
    with respx.mock(base_url=URL, assert_all_called=False) as mock:
        yield mock


def test_a_result_goes_over_loopback_with_the_registered_user_and_nothing_else_does(orthanc_port):
    route = orthanc_port.post("/instances").respond(json=STORED)
    local = InProcess()
    store = LoopbackStore(local, LoopbackEndpoint(PORT, ("admin", "s3cret")))

    assert store.post_instance(DICOM) == STORED
    request = route.calls.last.request
    assert request.content == DICOM
    assert request.headers["Content-Type"] == "application/dicom"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"admin:s3cret").decode()
    assert local.calls == []

    assert store.get_json("/studies/s") == {"uri": "/studies/s"}
    store.get_instance_dicom("i1"), store.post_json("/tools/find", {}), store.put("/x"), store.delete("/instances/i")
    assert [name for name, _ in local.calls] == ["get_json", "get_instance_dicom", "post_json", "put", "delete"]
    assert len(orthanc_port.calls) == 1
    assert store.describe() == {"Mode": "loopback", "Url": URL, "User": "admin",
                                "Stored": {"Loopback": 1, "InProcess": 0}, "LastFallback": None}


def test_without_users_no_credentials_are_sent(orthanc_port):
    route = orthanc_port.post("/instances").respond(json=STORED)
    LoopbackStore(InProcess(), LoopbackEndpoint(PORT)).post_instance(DICOM)
    assert "Authorization" not in route.calls.last.request.headers


@pytest.mark.parametrize("status", [401, 403])
def test_a_refusal_stores_in_process_and_turns_the_loopback_off(orthanc_port, status):
    route = orthanc_port.post("/instances").respond(status, text="Unauthorized")
    local = InProcess()
    store = LoopbackStore(local, LoopbackEndpoint(PORT, ("admin", "wrong")))

    assert store.post_instance(DICOM)["ID"] == "i-local"
    assert store.post_instance(DICOM)["ID"] == "i-local"
    assert route.call_count == 1  # not asked again
    assert local.calls == [("post_instance", len(DICOM))] * 2
    described = store.describe()
    assert described["Mode"].startswith("in-process")
    assert described["Stored"] == {"Loopback": 0, "InProcess": 2}
    assert f"HTTP {status}" in described["LastFallback"]


def test_a_refused_connection_stores_in_process_and_tries_the_loopback_again_next_time(orthanc_port):
    route = orthanc_port.post("/instances")
    route.side_effect = [httpx.ConnectError("Connection refused"), httpx.Response(200, json=STORED)]
    local = InProcess()
    store = LoopbackStore(local, LoopbackEndpoint(PORT))

    assert store.post_instance(DICOM)["ID"] == "i-local"
    assert store.post_instance(DICOM)["ID"] == "i-http"
    described = store.describe()
    assert described["Mode"] == "loopback"
    assert described["Stored"] == {"Loopback": 1, "InProcess": 1}
    assert "Connection refused" in described["LastFallback"]


def test_an_error_orthanc_answers_is_decided_by_the_in_process_call(orthanc_port):
    """A file Orthanc cannot take fails in-process too: that error is the one raised, typed as the gateway's."""
    orthanc_port.post("/instances").respond(400, json={"Message": "Bad file format"})
    local = InProcess(fail=OrthancError("POST /instances: Orthanc error 15 Bad file format"))
    store = LoopbackStore(local, LoopbackEndpoint(PORT))

    with pytest.raises(OrthancError, match="Bad file format"):
        store.post_instance(b"not dicom")
    assert store.describe()["Mode"] == "loopback"  # not a refusal: the next result goes over the loopback again


def _settings(tmp_path: Path, section: dict | None = None, **orthanc: object) -> Settings:
    return Settings.from_orthanc({"HttpPort": PORT, "AiOrchestrator": {"DataDirectory": str(tmp_path),
                                                                       **(section or {})}, **orthanc})


@pytest.mark.parametrize(("section", "orthanc", "capabilities", "why"), [
    ({}, {}, Capabilities(), None),
    ({}, {}, Capabilities(sdk_calls_release_gil=True), "AllowThreads"),
    ({"LoopbackStore": False}, {}, Capabilities(), "LoopbackStore is false"),
    ({}, {"HttpServerEnabled": False}, Capabilities(), "HttpServerEnabled"),
    ({}, {"SslEnabled": True}, Capabilities(), "SslEnabled"),
])
def test_which_configurations_store_over_loopback(tmp_path, section, orthanc, capabilities, why):
    store, note = Orchestrator._result_store(_settings(tmp_path, section, **orthanc), InProcess(), capabilities)
    if why is None:
        assert isinstance(store, LoopbackStore) and note is None
        assert store.endpoint == LoopbackEndpoint(PORT, None)
    else:
        assert store is None and why in note


def test_the_first_registered_user_stores(tmp_path):
    settings = _settings(tmp_path, AuthenticationEnabled=True, RegisteredUsers={"alice": "a", "bob": "b"})
    store, _ = Orchestrator._result_store(settings, InProcess(), Capabilities())
    assert store is not None and store.endpoint.auth == ("alice", "a")


def test_loopback_store_must_be_a_boolean(tmp_path):
    with pytest.raises(ConfigError, match="LoopbackStore"):
        _settings(tmp_path, {"LoopbackStore": "no"})
