"""The model host under faults, against a real Orthanc: a model that aborts the host, one that hangs past its
timeout, one that eats memory past the host's limit, and Orthanc killed or restarted during a run.

The test models are in ``tests/models`` (each takes MR series whose BodyPartExamined names it). Throughout, Orthanc
must keep answering, the failed workitem must end CANCELED after MaxAttempts with a reason a user can act on, and
the next study must be processed normally.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from ai_orchestrator.gateway.http_gateway import ORTHANC_CONNECTION_LIMITS
from tests.integration.studies import instances, upload_rest, wait_for, workitems_of
from tests.integration.workitems import ROOT, value
from tests.orthanc_server import REPO_DIR, OrthancServer

MODELS_DIR = REPO_DIR / "tests" / "models"
MEMORY_LIMIT_MB = 1000  # the test models' host idles at about 400 MiB


@pytest.fixture(scope="module")
def host_orthanc(tmp_path_factory):
    settings = {"HostMemoryLimitMB": MEMORY_LIMIT_MB, "MaxAttempts": 3, "MetricsIntervalSeconds": 1}
    with OrthancServer(tmp_path_factory.mktemp("model-host-data"),
                       extra_env={"AI_ORCHESTRATOR_MODELS_DIR": str(MODELS_DIR),
                                  "AI_ORCHESTRATOR_SETTINGS": json.dumps(settings)}) as server:
        wait_for(lambda: host_state(server)["State"] == "ready", timeout=60, interval=0.2)
        yield server


def host_state(server: OrthancServer) -> dict:
    [host] = server.client.get(f"{ROOT}/system").json()["ModelHosts"]
    return host


class Watch:
    """Polls Orthanc's own /system and the plugin's workitem search every 0.2 s from a thread: every answer must
    be a 200, and Orthanc's process must stay the same one."""

    def __init__(self, server: OrthancServer):
        self.server, self.failures, self.answers = server, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.server.base_url, timeout=10, limits=ORTHANC_CONNECTION_LIMITS) as client:
            while not self._stop.wait(0.2):
                for path in ("/system", f"{ROOT}/workitems?limit=5"):
                    try:
                        status = client.get(path).status_code
                    except httpx.TransportError as error:
                        self.failures.append(f"{path}: {error!r}")
                        continue
                    self.answers += 1
                    if status != 200:
                        self.failures.append(f"{path}: {status}")

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def run_study(server: OrthancServer, body_part: str, timeout: float = 120) -> dict:
    patient = f"{body_part}{generate_uid()[-8:]}"
    upload_rest(server.client, instances("MR_small.dcm", count=2, patient_id=patient, study_uid=generate_uid(),
                                         body_part=body_part))

    def final():
        items = workitems_of(server.client, patient)
        return items if items and value(items[0], "00741000") in ("COMPLETED", "CANCELED") else None

    [item] = wait_for(final, timeout=timeout, interval=0.25)
    return item


def reason_of(item: dict) -> str:
    return value(item["00741002"]["Value"][0], "00741238")


def niceness(pid: int) -> set[int]:
    """The nice values of a process's threads (/proc/PID/task/TID/stat, field 19)."""
    return {int(stat.read_text().rsplit(")", 1)[1].split()[16]) for stat in Path(f"/proc/{pid}/task").glob("*/stat")}


def test_the_host_runs_below_orthancs_cpu_priority_every_thread_of_it(host_orthanc):
    """HostNice (10): on a busy CPU Orthanc's own threads (receiving studies, the workitem API) go first."""
    host = host_state(host_orthanc)
    assert host["Nice"] == 10
    run_study(host_orthanc, "QUICK")  # the model thread and torch's pool exist by now
    threads = niceness(host["Pid"])
    assert threads == {niceness(host_orthanc.process.pid).pop() + 10}, threads
    assert len(list(Path(f"/proc/{host['Pid']}/task").iterdir())) > 1


def test_a_model_that_aborts_the_host_is_canceled_after_max_attempts_and_orthanc_carries_on(host_orthanc):
    before = host_state(host_orthanc)
    with Watch(host_orthanc) as watch:
        item = run_study(host_orthanc, "ABORT")
        assert value(item, "00741000") == "CANCELED"
        reason = reason_of(item)
        assert "failed after 3 attempt(s)" in reason and "SIGABRT" in reason, reason
        assert "the model host (pid" in reason and "while running aborts 1" in reason, reason
        # the host was started again after each death, and says what killed it last
        host = wait_for(lambda: (lambda h: h if h["State"] == "ready" else None)(host_state(host_orthanc)),
                        timeout=60, interval=0.2)
        assert host["Restarts"] >= before["Restarts"] + 3
        assert "SIGABRT" in host["LastFailure"]["Reason"]
        assert host["Pid"] != before["Pid"] and host["ResidentMemoryMB"] > 0
        # the next study is processed normally
        assert value(run_study(host_orthanc, "QUICK"), "00741000") == "COMPLETED"
    assert host_orthanc.process.poll() is None
    assert watch.answers > 20 and watch.failures == []
    [model] = [m for m in host_orthanc.client.get(f"{ROOT}/models").json() if m["name"] == "aborts"]
    [host] = model["hosts"]
    assert host["status"] == "ok" and host["pid"] and "SIGABRT" in host["last_failure"]["Reason"]
    assert model["timeout_s"] == 600

    def scraped(name: str) -> float | None:
        for line in host_orthanc.client.get("/tools/metrics-prometheus").text.splitlines():
            if line.startswith(f'ai_orchestrator_{name}{{host="model-host-1"}} '):
                return float(line.split()[1])
        return None

    wait_for(lambda: (scraped("model_host_restarts_total") or 0) >= 3, timeout=15, interval=0.5)
    assert scraped("model_host_up") == 1 and scraped("model_host_resident_memory_bytes") > 2**20


def test_a_model_that_hangs_past_its_timeout_is_killed_and_canceled(host_orthanc):
    started = time.monotonic()
    with Watch(host_orthanc) as watch:
        item = run_study(host_orthanc, "HANG")
    assert value(item, "00741000") == "CANCELED"
    reason = reason_of(item)
    assert "failed after 3 attempt(s)" in reason and "hangs 1 timed out after 3 s" in reason, reason
    assert time.monotonic() - started < 90
    assert watch.failures == []
    assert value(run_study(host_orthanc, "QUICK"), "00741000") == "COMPLETED"


def test_a_model_that_eats_memory_past_the_host_limit_is_killed_and_canceled(host_orthanc):
    with Watch(host_orthanc) as watch:
        item = run_study(host_orthanc, "HOG")
    assert value(item, "00741000") == "CANCELED"
    reason = reason_of(item)
    assert "failed after 3 attempt(s)" in reason, reason
    assert f"over its limit of {MEMORY_LIMIT_MB:,} MiB (HostMemoryLimitMB)" in reason, reason
    assert "while running hogs-memory 1" in reason, reason
    assert watch.failures == []
    assert value(run_study(host_orthanc, "QUICK"), "00741000") == "COMPLETED"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_orthanc_going_down_during_a_run_takes_its_host_along_and_the_run_is_recovered(tmp_path, stop_signal):
    with OrthancServer(tmp_path / "data", extra_env={"AI_ORCHESTRATOR_MODELS_DIR": str(MODELS_DIR)}) as server:
        patient = f"SLOW{generate_uid()[-8:]}"
        upload_rest(server.client, instances("MR_small.dcm", count=1, patient_id=patient, study_uid=generate_uid(),
                                             body_part="SLOW"))
        [item] = wait_for(lambda: [i for i in workitems_of(server.client, patient)
                                   if value(i, "00741000") == "IN PROGRESS"
                                   and host_state(server)["Running"] == "slow 1"], timeout=60, interval=0.1)
        uid, host_pid = value(item, "00080018"), host_state(server)["Pid"]
        server.stop(stop_signal)
        wait_for(lambda: not pid_alive(host_pid), timeout=10, interval=0.1)  # no orphan keeps running the model
        server.start()
        def completed():
            items = workitems_of(server.client, patient)
            return items if items and value(items[0], "00741000") == "COMPLETED" else None

        items = wait_for(completed, timeout=90, interval=0.25)
        assert [value(i, "00080018") for i in items] == [uid]  # recovered, not duplicated
        assert host_state(server)["Pid"] != host_pid
