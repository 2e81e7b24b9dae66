"""The model host without Orthanc: the channel, a real host process (this venv's Python) running the test models of
``tests/models``, and the same host code in a thread."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from pydicom import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from ai_orchestrator.config import ConfigError, Settings
from ai_orchestrator.modeling.api import ModelSpec, ModelSpecError
from ai_orchestrator.modeling.registry import Registry
from ai_orchestrator.performer.host import (
    PLUGIN_DIR,
    HostDied,
    HostOutOfMemory,
    HostResult,
    HostSettings,
    ModelHost,
    ModelRunError,
    ModelTimedOut,
    host_python,
)
from ai_orchestrator.performer.host_channel import CancelRequested, Channel, ChannelClosed, describe_exit
from ai_orchestrator.performer.worker import InferenceWorker, Job
from ai_orchestrator.results.encoding import EncodedObject
from ai_orchestrator.store.claims import Claim
from tests.integration.studies import instances, to_bytes

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
REPO_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def mr_blobs(count: int = 2) -> list[bytes]:
    return [to_bytes(ds) for ds in instances("MR_small.dcm", count=count, patient_id="HOST",
                                             study_uid=generate_uid())]


def test_channel_carries_a_header_and_binary_parts_both_ways():
    left, right = (Channel(end) for end in socket.socketpair())
    big = bytes(range(256)) * 40_000  # 10 MB: more than the socket buffers, so the reader must keep up
    sender = threading.Thread(target=left.send, args=({"op": "run", "job": "1"}, [b"", big, b"x"]))
    sender.start()
    message = right.receive(timeout=5)
    sender.join()
    assert message.op == "run" and message.header == {"op": "run", "job": "1"}
    assert [bytes(part) for part in message.parts] == [b"", big, b"x"]
    assert right.receive(timeout=0.05) is None  # nothing more
    left.close()
    with pytest.raises(ChannelClosed):
        right.receive(timeout=1)


def test_exits_are_described_by_signal_name_or_code():
    assert describe_exit(-signal.SIGABRT).startswith("died of SIGABRT (signal 6")
    assert describe_exit(-signal.SIGKILL).startswith("died of SIGKILL (signal 9: killed from outside")
    assert describe_exit(3) == "exited with code 3"


def test_the_host_runs_the_venvs_python():
    assert Path(host_python()).name.startswith("python")
    assert host_python("/opt/python") == "/opt/python"


@pytest.fixture(scope="module")
def host():
    host = ModelHost(HostSettings(MODELS_DIR, "cpu", memory_limit_mb=1000, warm_up=False))
    host.start()
    yield host
    assert host.stop()


def test_a_run_answers_the_encoded_results_with_progress_and_timings(host):
    reports = []
    outcome = host.run("quick", mr_blobs(3), progress=lambda percent, text: reports.append((percent, text)))
    [sr] = outcome.objects
    assert sr.dicom[128:132] == b"DICM" and sr.sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.88.")
    assert (50.0, "counting") in reports and reports[0][0] == 30
    assert set(outcome.seconds) == {"decode", "model", "encode"}
    state = host.describe()
    assert state["State"] == "ready" and state["Pid"] and state["Device"] == "cpu"
    assert state["ResidentMemoryMB"] > 50 and state["MemoryLimitMB"] == 1000


def test_errors_raised_in_the_host_come_back_with_their_class_name(host):
    with pytest.raises(ModelRunError, match="has no model 'nope'") as error:
        host.run("nope", mr_blobs(1))
    assert error.value.kind == "LookupError"
    with pytest.raises(ModelRunError) as error:
        host.run("quick", [b"not DICOM at all"])
    assert error.value.kind == "InvalidDicomError"
    assert host.describe()["State"] == "ready"  # the host itself is fine


def test_a_cancel_request_reaches_the_models_checkpoint(host):
    asked = threading.Event()
    with pytest.raises(CancelRequested):
        host.run("slow", mr_blobs(1), progress=lambda _p, _t: asked.set(), cancel_requested=asked.is_set)


def test_a_host_that_aborts_is_named_by_its_signal_and_started_again(host):
    before = host.describe()
    with pytest.raises(HostDied, match=r"the model host \(pid \d+\) died of SIGABRT .* while running aborts"):
        host.run("aborts", mr_blobs(1))
    assert host.run("quick", mr_blobs(1)).objects  # a new host took over
    after = host.describe()
    assert after["Restarts"] == before["Restarts"] + 1 and after["Pid"] != before["Pid"]
    assert "SIGABRT" in after["LastFailure"]["Reason"]


def test_a_run_past_its_timeout_kills_the_host(host):
    with pytest.raises(ModelTimedOut, match=r"^hangs 1 timed out after 1.5 s; the model host \(pid \d+\) was killed$"):
        host.run("hangs", mr_blobs(1), timeout_s=1.5, label="hangs 1")
    assert host.run("quick", mr_blobs(1)).objects


def test_a_host_over_its_memory_limit_is_killed(host):
    with pytest.raises(HostOutOfMemory, match=r"used [\d,]+ MiB of memory, over its limit of 1,000 MiB"):
        host.run("hogs-memory", mr_blobs(1))
    assert host.run("quick", mr_blobs(1)).objects


def test_thread_mode_runs_the_same_code_in_this_process():
    registry = Registry.load(MODELS_DIR)
    host = ModelHost(HostSettings(MODELS_DIR, "cpu", mode="thread", warm_up=False, registry=registry))
    host.start()
    try:
        [sr] = host.run("quick", mr_blobs(2)).objects
        assert sr.dicom[128:132] == b"DICM"
        assert host.describe()["Mode"] == "thread" and host.describe()["ResidentMemoryMB"] is None
    finally:
        assert host.stop()


def test_host_settings_are_read_and_checked():
    defaults = Settings.from_orthanc({"AiOrchestrator": {}})
    assert (defaults.model_host, defaults.model_hosts, defaults.model_timeout_s, defaults.host_memory_limit_mb,
            defaults.host_start_timeout_s, defaults.host_python, defaults.warm_up_slices
            ) == ("process", 1, 600, 0, 300, None, 100)
    chosen = Settings.from_orthanc({"AiOrchestrator": {
        "ModelHost": "thread", "ModelHosts": 2, "ModelTimeoutSeconds": 30, "HostMemoryLimitMB": 4096,
        "HostStartTimeoutSeconds": 60, "HostPython": "/opt/venv/bin/python", "WarmUpSlices": 12}})
    assert (chosen.model_host, chosen.model_hosts, chosen.model_timeout_s, chosen.host_memory_limit_mb,
            chosen.host_start_timeout_s, chosen.host_python, chosen.warm_up_slices
            ) == ("thread", 2, 30, 4096, 60, "/opt/venv/bin/python", 12)
    with pytest.raises(ConfigError, match="WarmUpSlices"):
        Settings.from_orthanc({"AiOrchestrator": {"WarmUpSlices": 0}})
    assert (defaults.host_nice, Settings.from_orthanc({"AiOrchestrator": {"HostNice": 0}}).host_nice) == (10, 0)
    for wrong in (-1, 20, True, "10"):
        with pytest.raises(ConfigError, match="HostNice.* from 0 to 19"):
            Settings.from_orthanc({"AiOrchestrator": {"HostNice": wrong}})
    with pytest.raises(ConfigError, match="ModelHost.*'process', 'thread'"):
        Settings.from_orthanc({"AiOrchestrator": {"ModelHost": "docker"}})
    with pytest.raises(ConfigError, match="ModelTimeoutSeconds"):
        Settings.from_orthanc({"AiOrchestrator": {"ModelTimeoutSeconds": 0}})


def test_a_model_may_declare_its_own_timeout():
    declared = dict(name="m", version="1", algorithm=Code("M", "99TEST", "M"), applies_to={"Modality": "CT"},
                    predict=lambda *_: None)
    assert ModelSpec(**declared).timeout_s is None
    assert ModelSpec(**declared, timeout_s=2.5).timeout_s == 2.5
    for wrong in (0, -1, True, "10", float("nan")):
        with pytest.raises(ModelSpecError, match="timeout_s"):
            ModelSpec(**declared, timeout_s=wrong)


def test_each_result_object_is_handed_over_as_soon_as_it_is_written(host):
    seen = []
    outcome = host.run("quick", mr_blobs(1), on_object=seen.append)
    assert seen == outcome.objects and len(seen) == 1


def test_an_object_the_plugin_cannot_store_fails_the_run_once_the_host_has_finished_it(host):
    def refuse(_obj):
        raise OSError("no room left")

    with pytest.raises(OSError, match="no room left"):
        host.run("quick", mr_blobs(1), on_object=refuse)
    assert host.run("quick", mr_blobs(1)).objects  # the channel is still in step


class _Host:
    """Hands over a SEG, then dies or finishes."""

    def __init__(self, dies: bool):
        self.dies = dies

    def run(self, model, blobs, *, on_object, **_options):
        seg = EncodedObject("1.2", "1.2.3", "1.2.840.10008.5.1.4.1.1.66.4", "1.2.3.4", b"SEG")
        on_object(seg)
        if self.dies:
            raise HostDied("the model host (pid 1) died of SIGSEGV (signal 11: a crash in native code)")
        return HostResult([seg], {"decode": 0.1, "model": 0.2, "encode": 0.3}, {})


class _Publisher:
    def __init__(self):
        self.posted, self.discarded = [], []

    def post(self, obj):
        self.posted.append(obj)
        return {"ID": f"orthanc-{len(self.posted)}"}

    def discard(self, stored):
        self.discarded += stored


def _worker_and_job(publisher):
    service = type("Service", (), {"add_listener": lambda self, listener: None})()
    worker = InferenceWorker(service, None, {}, None, torch.device("cpu"), publisher)
    model = type("Model", (), {"name": "m", "version": "1", "timeout_s": None})()
    return worker, Job(Claim("1.2.3", "4.5.6", 1), Dataset(), model, datetime.now(UTC), blobs=[b"CT"])


def test_results_are_stored_as_the_host_hands_them_over_and_its_stages_timed():
    publisher = _Publisher()
    worker, job = _worker_and_job(publisher)
    objects, stored = worker._run_on(_Host(dies=False), job)
    assert [obj.dicom for obj in objects] == [b"SEG"] and stored == [{"ID": "orthanc-1"}]
    assert job.blobs == [] and publisher.discarded == []
    assert {"decode", "model", "encode", "store", "host"} <= set(job.timer.seconds)


def test_an_attempt_that_fails_leaves_none_of_its_results_in_orthanc():
    publisher = _Publisher()
    worker, job = _worker_and_job(publisher)
    with pytest.raises(HostDied, match="SIGSEGV"):
        worker._run_on(_Host(dies=True), job)
    assert publisher.discarded == [{"ID": "orthanc-1"}]


def test_a_frozen_host_times_out_too(host):
    host.run("quick", mr_blobs(1))  # ready
    pid = host.describe()["Pid"]
    os.kill(pid, signal.SIGSTOP)  # it neither reads nor writes any more: the hand-over itself blocks
    with pytest.raises(ModelTimedOut, match=r"^quick 1 timed out after 1 s; the model host \(pid \d+\) was killed$"):
        host.run("quick", mr_blobs(40), timeout_s=1, label="quick 1")  # more than the socket buffers hold
    assert host.run("quick", mr_blobs(1)).objects


def test_a_host_that_cannot_start_fails_the_run_saying_why():
    host = ModelHost(HostSettings(MODELS_DIR, "cpu", python="/nonexistent/python", warm_up=False))
    host.start()
    try:
        with pytest.raises(HostDied, match=r"the model host could not be started: .*/nonexistent/python"):
            host.run("quick", mr_blobs(1))
        assert host.describe()["State"] == "restarting" and host.describe()["Pid"] is None
    finally:
        host.stop()


def test_a_host_whose_models_cannot_load_there_says_so(tmp_path):
    (tmp_path / "broken.py").write_text("raise ImportError('no such runtime here')\n")
    host = ModelHost(HostSettings(tmp_path, "cpu", warm_up=False))
    host.start()
    try:
        with pytest.raises(ModelRunError, match=r"has no model 'broken': it failed to load there: ImportError"):
            host.run("broken", mr_blobs(1))
        assert host.describe_model("broken")["status"] == "error"
    finally:
        host.stop()


def test_the_host_gives_its_freed_memory_back_when_idle_not_between_studies(monkeypatch, tmp_path):
    from ai_orchestrator.performer import host_child

    trims: list[int] = []
    monkeypatch.setattr(host_child, "_trim_memory", lambda: trims.append(1))
    monkeypatch.setattr(host_child, "TRIM_AFTER_IDLE_S", 0.2)
    plugin_end, host_end = socket.socketpair()
    host = host_child.Host(Channel(host_end), host_child.HostOptions(tmp_path), on_closed=lambda: None)
    waiting = host_child._Job({"job": "a"}, 0)
    host._jobs.put(waiting)
    assert host._next_job() is waiting and trims == []  # studies back to back: nothing given back
    later = host_child._Job({"job": "b"}, 0)
    threading.Timer(0.6, host._jobs.put, (later,)).start()
    assert host._next_job() is later and trims == [1]  # idle past the delay: given back once, then it waits on
    plugin_end.close()
    host_end.close()


def test_the_warm_up_runs_each_chest_ct_model_on_a_phantom_of_the_configured_size(monkeypatch):
    from ai_orchestrator.performer import host_child

    runs: list[tuple[str, int]] = []
    monkeypatch.setattr(host_child, "run_model",
                        lambda model, blobs, _device, _context: runs.append((model.name, len(blobs))))
    registry = Registry.load(REPO_MODELS_DIR)
    host_child.warm_up(registry, torch.device("cpu"), slices=14)
    assert runs and {count for _name, count in runs} == {14}
    assert "ct-chest-quant" in {name for name, _count in runs}


HEAP_PROBE = """
import os, sys
import numpy as np
from ai_orchestrator.performer.host_child import keep_freed_heap

def minor_faults():
    return int(open(f"/proc/{os.getpid()}/stat").read().rsplit(")", 1)[1].split()[7])

if sys.argv[1] == "keep":
    assert keep_freed_heap()
faults = []
for _study in range(3):
    before = minor_faults()
    volume = np.ones((50, 512, 512), dtype=np.int64)  # 100 MiB, as a study's arrays are
    del volume
    faults.append(minor_faults() - before)
print(faults[-1])
"""


@pytest.mark.parametrize("policy", ["keep", "default"])
def test_the_host_keeps_a_studys_freed_arrays_for_the_next_one(policy):
    """keep_freed_heap: the third study's 100 MiB array reuses the memory the first two faulted in (glibc's default
    maps and zeroes it again for each)."""
    done = subprocess.run([sys.executable, "-c", HEAP_PROBE, policy], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(PLUGIN_DIR)})
    faults = int(done.stdout.strip())
    if policy == "keep":
        assert faults < 25, faults
    else:  # 25,600 pages of 4 KiB, or 50 huge pages of 2 MiB
        assert faults >= 50, faults
