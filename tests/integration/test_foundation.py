"""The plugin inside a real Orthanc: system route, Explorer, startup failure, shutdown."""

from __future__ import annotations

import json
import signal

import torch

from tests.orthanc_server import OrthancServer


def test_system_route_describes_the_running_plugin(orthanc):
    answer = orthanc.client.get("/ai-orchestrator/system")
    assert answer.status_code == 200
    system = answer.json()
    assert system["OrthancVersion"] == orthanc.client.get("/system").json()["Version"]
    assert system["TorchVersion"] == torch.__version__
    assert system["InferenceDevice"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert system["DataDirectory"] == str(orthanc.data_dir.resolve())
    assert set(system["Workitems"]) == {"SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED"}
    assert all(isinstance(count, int) for count in system["Workitems"].values())


def test_unknown_route_and_wrong_method_are_clear_errors(orthanc):
    missing = orthanc.client.get("/ai-orchestrator/no-such-thing")
    assert missing.status_code == 404
    assert "no-such-thing" in missing.json()["error"]
    wrong = orthanc.client.delete("/ai-orchestrator/system")
    assert wrong.status_code == 405


def test_orthanc_explorer_and_dicomweb_are_served(orthanc):
    assert orthanc.client.get("/app/explorer.html").status_code == 200
    assert orthanc.client.get("/dicom-web/studies").status_code == 200


def test_plugin_data_lives_in_the_data_dir(orthanc):
    config = json.loads((orthanc.data_dir / "orthanc-runtime.json").read_text())
    assert config["StorageDirectory"].startswith(str(orthanc.data_dir.resolve()))
    assert config["RemoteAccessAllowed"] is False
    assert config["AuthenticationEnabled"] is False


def test_startup_error_is_logged_and_reported_without_half_starting(tmp_path):
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    with OrthancServer(tmp_path / "data", extra_env={"AI_ORCHESTRATOR_DEVICE": "no-such-device:7",
                                                     "AI_ORCHESTRATOR_MODELS_DIR": str(models_dir)}) as server:
        answer = server.client.get("/ai-orchestrator/system")
        assert answer.status_code == 503
        assert "failed to start" in answer.json()["error"]
        assert "no-such-device" in answer.json()["error"]
        # Orthanc itself keeps serving images, and no other plugin route half-works.
        assert server.client.get("/system").status_code == 200
        assert server.client.get("/ai-orchestrator/workitems").status_code == 503
        assert "AI orchestrator failed to start" in server.log()


def test_authentication_when_credentials_are_set(tmp_path):
    env = {"ORTHANC_USERNAME": "demo", "ORTHANC_PASSWORD": "s3cret"}
    with OrthancServer(tmp_path / "data", extra_env=env) as server:
        assert server.client.get("/ai-orchestrator/system").status_code == 401
        assert server.client.get("/ai-orchestrator/system", auth=("demo", "s3cret")).status_code == 200


def test_sigterm_stops_cleanly(tmp_path):
    server = OrthancServer(tmp_path / "data").start()
    try:
        assert server.stop(signal.SIGTERM) == 0
        assert "Orthanc has stopped" in server.log()
    finally:
        server.stop(signal.SIGKILL)
