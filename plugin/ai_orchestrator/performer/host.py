"""The plugin's side of a model host: launches it, hands it jobs, watches it, and restarts it when it dies.

A model host (``host_child``) is a child process running the venv's Python (not Orthanc's embedded interpreter):
it loads the models once, warms them up and runs one job at a time. The plugin keeps reading the inputs from
Orthanc in-process and storing the results; what crosses to the host is bytes on a socket pair
(``host_channel``). What a model does there cannot take Orthanc down:

- the host dies (a signal, an exit): the run fails with a reason naming the signal or exit code;
- a run passes its timeout (the model's ``timeout_s``, else ``ModelTimeoutSeconds``): the host is killed and the
  run fails with "timed out after N s";
- the host's resident memory passes ``HostMemoryLimitMB``: the host is killed and the run fails saying so.

The worker then retries the workitem up to MaxAttempts and cancels it with that reason. The host is launched
again at once after the first failure, then after 1, 2, 4... (at most 60) seconds while failures follow each
other; a run that ends, well or with the model's own error, resets that. When the plugin stops, the host is
stopped (killed if busy): its run is not a failure, the workitem stays IN PROGRESS and is run again at the next
start.

``mode="thread"`` runs the same host code in a thread of the plugin, over the same channel: for debugging only
(a debugger, a profiler); it has no crash isolation, no memory limit, and a timed-out run cannot be killed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..manager.metrics import metric
from ..modeling.imaging import InputError
from ..modeling.registry import Registry
from ..results.encoding import EncodedObject
from ..ups.clock import utc_now
from .host_channel import CANCELED_KIND, CancelRequested, Channel, ChannelClosed, Message, describe_exit

log = logging.getLogger("ai_orchestrator.host")

PLUGIN_DIR = Path(__file__).resolve().parents[2]  # holds the ai_orchestrator package
CHILD_MODULE = "ai_orchestrator.performer.host_child"
TICK_S = 0.1  # how often a run in progress is checked: timeout, memory, cancel request
IDLE_TICK_S = 0.5  # how often an idle host is checked: alive, memory
MAX_BACKOFF_S = 60.0
STOP_GRACE_S = 3.0

# states, as GET /system shows them
STARTING, READY, RUNNING, RESTARTING, STOPPED = "starting", "ready", "running", "restarting", "stopped"


class HostError(RuntimeError):
    """A run failed in or because of the model host. ``kind`` prefixes the message in the workitem's reason
    (the model's own exception class; empty for the host's own failures, whose message says it all)."""

    kind = ""
    retryable = True


class HostDied(HostError):
    """The host process ended (a signal, an exit code) or could not start."""


class ModelTimedOut(HostError):
    """A run took longer than its timeout: the host was killed."""


class HostOutOfMemory(HostError):
    """The host's resident memory passed its limit: the host was killed."""


class HostStopped(HostError):
    """The plugin is stopping: the run was abandoned (not a failure; the workitem is run again at the next start)."""


class ModelRunError(HostError):
    """The model (or decoding, or encoding) raised in the host; ``kind`` is the exception's class name."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class HostSettings:
    models_dir: Path
    device: str = "auto"
    mode: str = "process"  # "process", or "thread" (debugging: no isolation)
    python: str | None = None  # the Python the host runs; None: the venv's (host_python)
    timeout_s: float = 600.0  # a run's timeout when the model declares none
    memory_limit_mb: int = 0  # resident memory of the host; 0: no limit (the kernel's OOM killer still applies)
    start_timeout_s: float = 300.0  # loading the models and warming them up
    warm_up: bool = True
    warm_up_slices: int = 100  # the warm-up phantom's slices (WarmUpSlices): a study of the usual size
    nice: int = 10  # process mode: the host's niceness (HostNice), so that Orthanc's threads go first on a busy CPU
    registry: Registry | None = None  # thread mode: the plugin's own registry (loaded once)


@dataclass
class HostResult:
    objects: list[EncodedObject]
    seconds: dict[str, float]  # the host's stage timings (decode, model, encode)
    statistics: dict[str, Any]  # what the run used of the device: batch_size, peak_gpu_memory_mb (on a GPU)


def host_python(configured: str | None = None) -> str:
    """The Python the host runs: ``configured``, else the venv's (``AI_ORCHESTRATOR_VENV``, set by the launcher),
    else this interpreter when it is a Python (outside Orthanc), else the venv that holds torch. Inside Orthanc,
    ``sys.executable`` is Orthanc itself."""
    if configured:
        return configured
    candidates = []
    venv = os.environ.get("AI_ORCHESTRATOR_VENV")
    if venv:
        candidates.append(Path(venv) / "bin" / "python")
    if Path(sys.executable).name.startswith("python"):
        candidates.append(Path(sys.executable))
    torch_spec = importlib.util.find_spec("torch")
    if torch_spec is not None and torch_spec.origin:  # <venv>/lib/pythonX.Y/site-packages/torch/__init__.py
        candidates.append(Path(torch_spec.origin).parents[4] / "bin" / "python")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError("no Python for the model host: set AI_ORCHESTRATOR_VENV or AiOrchestrator.HostPython")


class _Child(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float) -> int | None: ...

    def resident_bytes(self) -> int | None: ...


class _ProcessChild:
    def __init__(self, process: subprocess.Popen):
        self.process, self.pid = process, process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def kill(self) -> None:
        try:
            self.process.kill()
        except OSError:
            pass

    def wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def resident_bytes(self) -> int | None:
        try:
            with open(f"/proc/{self.pid}/statm", "rb") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None


class _ThreadChild:
    """Thread mode: the host's code on a thread of this process. It cannot be killed: "kill" closes its channel,
    so it ends after its current run."""

    def __init__(self, thread: threading.Thread, channel: Channel):
        self.thread, self.channel, self.pid = thread, channel, os.getpid()

    def poll(self) -> int | None:
        return None if self.thread.is_alive() else 0

    def kill(self) -> None:
        self.channel.close()

    def wait(self, timeout: float) -> int | None:
        self.thread.join(timeout)
        return self.poll()

    def resident_bytes(self) -> int | None:
        return None  # the plugin's own memory: no limit in thread mode


class ModelHost:
    """One model host and its supervision. ``run`` is called by one model thread at a time; a monitor thread
    launches, restarts and watches the host between runs; ``describe`` may be called from any thread."""

    def __init__(self, settings: HostSettings, name: str = "model-host-1"):
        self.settings, self.name = settings, name
        self._lock = threading.Lock()  # the child and its channel: held by a run, or by the monitor for a step
        self._stopping = threading.Event()
        self._child: _Child | None = None
        self._channel: Channel | None = None
        self._monitor = threading.Thread(target=self._watch, name=f"ai-{name}", daemon=True)
        self._start_deadline = 0.0
        self._next_launch = 0.0  # time.monotonic() before which no new host is launched (the backoff)
        self._failures_in_row = 0  # host deaths (and start failures) since the last run that ended normally
        self._start_failures_in_row = 0  # of which before the host said ready: the next start skips the warm-up
        # what describe() shows
        self.state = STOPPED
        self.pid: int | None = None
        self.device: str | None = None
        self.models: dict[str, dict[str, Any]] = {}
        self.launches = 0
        self.started_at: str | None = None
        self.ready_at: str | None = None
        self.load_s: float | None = None
        self.warm_up_s: float | None = None
        self.last_failure: dict[str, str] | None = None
        self.running: str | None = None
        self.resident_mb: float | None = None
        self.last_run: dict[str, Any] | None = None  # the last run that ended well: stage timings, device use
        self.threads: int | None = None  # torch's CPU threads in the host

    # lifecycle
    def start(self) -> None:
        """Launch the host (it loads and warms up the models on its own) and start watching it."""
        with self._lock:
            self._launch()
        self._monitor.start()

    def stop(self, timeout: float = STOP_GRACE_S) -> bool:
        """Stop the host: asked politely when idle, killed when busy or slow. Answers whether it ended."""
        self._stopping.set()
        acquired = self._lock.acquire(timeout=timeout)  # a run in progress sees _stopping and kills the host
        try:
            child, channel = self._child, self._channel
            if child is not None and channel is not None and child.poll() is None:
                try:
                    channel.send({"op": "stop"})
                except ChannelClosed:
                    pass
                if child.wait(timeout) is None:
                    child.kill()
                    child.wait(timeout)
            if channel is not None:
                channel.close()
            self.state = STOPPED
            return child is None or child.poll() is not None
        finally:
            if acquired:
                self._lock.release()
            if self._monitor.is_alive():
                self._monitor.join(timeout)

    @property
    def ready(self) -> bool:
        return self.state in (READY, RUNNING)

    # a run
    def run(self, model: str, blobs: Sequence[bytes], *, timeout_s: float | None = None, label: str | None = None,
            progress: Callable[[float, str], None] = lambda _p, _t: None,
            cancel_requested: Callable[[], bool] = lambda: False,
            on_object: Callable[[EncodedObject], None] = lambda _o: None) -> HostResult:
        """Run ``model`` on the instances' bytes in the host; answers the encoded results and the host's stage
        timings. ``on_object`` gets each result object as soon as the host has written it (while it writes the
        next). Raises a HostError (HostDied, ModelTimedOut, HostOutOfMemory, ModelRunError, HostStopped), InputError
        for input the model cannot use, or CancelRequested."""
        timeout = float(timeout_s or self.settings.timeout_s)
        label = label or model
        with self._lock:
            self._await_ready()
            channel, child = self._channel, self._child
            assert channel is not None and child is not None
            job = uuid.uuid4().hex
            self.state, self.running = RUNNING, label
            try:
                return self._follow(channel, child, job, model, blobs, timeout, label, progress, cancel_requested,
                                    on_object)
            finally:
                self.running = None
                if self.state == RUNNING:
                    self.state = READY

    def _follow(self, channel: Channel, child: _Child, job: str, model: str, blobs: Sequence[bytes], timeout: float,
                label: str, progress: Callable[[float, str], None], cancel_requested: Callable[[], bool],
                on_object: Callable[[EncodedObject], None]) -> HostResult:
        deadline = time.monotonic() + timeout
        cancel_sent = False
        objects: list[EncodedObject] = []
        refused: Exception | None = None  # on_object's error: raised once the host has finished the run
        channel.sock.settimeout(timeout)  # a host that stops reading or writing mid-message (frozen) times out too
        try:
            channel.send({"op": "run", "job": job, "model": model}, blobs)
            while True:
                message = channel.receive(timeout=TICK_S)
                if message is not None and message.header.get("job") == job:
                    if message.op == "progress":
                        _call_quietly(progress, float(message.header.get("percent", 0)),
                                      str(message.header.get("text", "")))
                    elif message.op == "object":
                        objects.append(EncodedObject.from_uids(message.header["uids"], message.parts[0]))
                        try:
                            if refused is None:
                                on_object(objects[-1])
                        except Exception as error:
                            refused = error
                    elif message.op in ("done", "failed"):
                        self._failures_in_row = 0  # the host is sound, whatever the model did
                        outcome = _outcome(message, objects)
                        if refused is not None:
                            raise refused
                        self.last_run = {"Model": label, "Seconds": outcome.seconds, **outcome.statistics}
                        return outcome
                if self._stopping.is_set():
                    self._kill(child)
                    raise HostStopped(f"the plugin is stopping: {label} was abandoned, to be run again at start")
                self._check_memory(child, f"while running {label}")
                if time.monotonic() > deadline:
                    raise TimeoutError
                if not cancel_sent and cancel_requested():
                    channel.send({"op": "cancel", "job": job})
                    cancel_sent = True
        except TimeoutError:
            self._kill(child)
            reason = f"{label} timed out after {timeout:g} s; the model host (pid {child.pid}) was killed"
            self._ended(reason)
            raise ModelTimedOut(reason) from None
        except ChannelClosed:
            code = child.wait(5.0)
            if code is None:  # closed its end but lives on: not a host to keep
                self._kill(child)
            if self._stopping.is_set():
                self._ended("stopped with the plugin")
                raise HostStopped(f"the plugin is stopping: {label} was abandoned, to be run again at start") from None
            reason = (f"the model host (pid {child.pid}) {describe_exit(code) if code is not None else 'went away'} "
                      f"while running {label}")
            self._ended(reason)
            raise HostDied(reason) from None
        finally:
            try:
                channel.sock.settimeout(None)
            except OSError:  # closed with its host
                pass

    def _await_ready(self) -> None:
        """Until the host says ready (launching it when due), supervising it meanwhile; the caller holds the lock.
        A launch that fails while waiting fails the run with its reason."""
        failures = self._failures_in_row
        while not self.ready:
            if self._stopping.is_set():
                raise HostStopped("the plugin is stopping")
            self._step(TICK_S)
            if self._failures_in_row > failures and self.last_failure is not None:
                raise HostDied(self.last_failure["Reason"])

    # supervision
    def _watch(self) -> None:
        """The monitor thread: launches and restarts the host, reads its ready message, notices its death and
        watches its memory while no run holds it. It waits outside the lock, so a run never waits on it long."""
        while not self._stopping.is_set():
            if self._lock.acquire(timeout=IDLE_TICK_S):
                try:
                    if not self._stopping.is_set():
                        self._step(TICK_S if self.state == STARTING else 0.0)
                finally:
                    self._lock.release()
            if self.state != STARTING:
                self._stopping.wait(IDLE_TICK_S)

    def _step(self, wait_s: float) -> None:
        """One look at the host (the caller holds the lock): launch it when due, read its ready message, notice
        its death, watch its memory. Waits at most about ``wait_s``."""
        child, channel = self._child, self._channel
        if child is None or channel is None:
            delay = self._next_launch - time.monotonic()
            if delay > 0:
                self.state = RESTARTING
                self._stopping.wait(min(delay, wait_s))
            else:
                self._launch()
            return
        code = child.poll()
        if code is not None:
            self._ended(f"the model host (pid {child.pid}) {describe_exit(code)} "
                        f"{'while starting' if self.state == STARTING else 'while idle'}")
            return
        if self._check_memory(child, "while starting" if self.state == STARTING else "while idle", fail=False):
            return
        if self.state == STARTING and time.monotonic() > self._start_deadline:
            self._kill(child)
            self._ended(f"the model host (pid {child.pid}) did not load and warm up its models within "
                        f"{self.settings.start_timeout_s:g} s (HostStartTimeoutSeconds) and was killed")
            return
        try:
            message = channel.receive(timeout=wait_s)
        except ChannelClosed:
            code = child.wait(5.0)
            self._ended(f"the model host (pid {child.pid}) "
                        f"{describe_exit(code) if code is not None else 'went away'} "
                        f"{'while starting' if self.state == STARTING else 'while idle'}")
            return
        if message is not None and message.op == "ready":
            self._on_ready(message)
        elif message is not None:
            log.warning("%s: unexpected %r message while %s", self.name, message.op, self.state)

    def _launch(self) -> None:
        """Start a host (the caller holds the lock); a failure to start is recorded like a death."""
        if self._stopping.is_set():
            return
        warm_up = self.settings.warm_up and self._start_failures_in_row < 2
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            child = self._spawn(child_end, warm_up)
        except Exception as error:
            parent_end.close()
            child_end.close()
            self._child, self._channel = None, None
            self._ended(f"the model host could not be started: {error}", starting=True)
            return
        self._child, self._channel = child, Channel(parent_end)
        self.launches += 1
        self.state, self.pid, self.device, self.models = STARTING, child.pid, None, {}
        self.started_at, self.ready_at = utc_now().isoformat(), None
        self._start_deadline = time.monotonic() + self.settings.start_timeout_s
        log.warning("%s: started (pid %d, %s mode%s)", self.name, child.pid, self.settings.mode,
                    "" if warm_up or not self.settings.warm_up else ", no warm-up after failed starts")

    def _spawn(self, child_end: socket.socket, warm_up: bool) -> _Child:
        settings = self.settings
        if settings.mode == "thread":
            from .host_child import Host, HostOptions  # the same code, in this process

            channel = Channel(child_end)
            host = Host(channel, HostOptions(settings.models_dir, settings.device, warm_up, settings.warm_up_slices,
                                                  settings.registry),
                        on_closed=lambda: None)
            thread = threading.Thread(target=host.serve, name=f"ai-{self.name}-thread", daemon=True)
            thread.start()
            return _ThreadChild(thread, channel)
        command = [host_python(settings.python), "-m", CHILD_MODULE, "--fd", str(child_end.fileno()),
                   "--models-dir", str(Path(settings.models_dir).resolve()), "--device", settings.device,
                   "--warm-up-slices", str(settings.warm_up_slices), "--nice", str(settings.nice)]
        if not warm_up:
            command.append("--no-warm-up")
        python_path = os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")]))
        # PYTHONSAFEPATH (Python 3.11+): "-m" would put Orthanc's working directory first on sys.path, and a numpy.py
        # or ai_orchestrator/ there would be imported instead of the real ones.
        # OMP_WAIT_POLICY: torch's OpenMP threads sleep when they wait rather than spin. The host shares the CPUs with
        # Orthanc (and often with others): spinning threads burn the CPU that the thread they wait for needs (the
        # model 2-3x slower on the 2-core test machine). One set in the environment wins.
        environment = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONPATH": python_path, "PYTHONSAFEPATH": "1"}
        try:
            process = subprocess.Popen(command, pass_fds=(child_end.fileno(),), stdin=subprocess.DEVNULL,
                                       env=environment,
                                       start_new_session=True)  # Ctrl-C in a terminal is for Orthanc, not the host
        finally:
            child_end.close()
        return _ProcessChild(process)

    def _on_ready(self, message: Message) -> None:
        header = message.header
        self.state, self.ready_at = READY, utc_now().isoformat()
        self.device = str(header.get("device"))
        self.models = dict(header.get("models") or {})
        self.load_s, self.warm_up_s = header.get("load_s"), header.get("warm_up_s")
        self.threads = header.get("threads")
        self._start_failures_in_row = 0
        broken = sorted(name for name, entry in self.models.items() if entry.get("status") != "ok")
        log.warning("%s: ready (pid %s, %s; models loaded in %.1f s, warmed up in %.1f s)%s", self.name, self.pid,
                    self.device, self.load_s or 0.0, self.warm_up_s or 0.0,
                    f"; failed to load here: {', '.join(broken)}" if broken else "")

    def _check_memory(self, child: _Child, doing: str, fail: bool = True) -> bool:
        """Kill the host when its resident memory passes the limit; raise HostOutOfMemory when ``fail``."""
        resident = child.resident_bytes()
        self.resident_mb = round(resident / 2**20, 1) if resident is not None else None
        limit = self.settings.memory_limit_mb
        if not limit or resident is None or resident <= limit * 2**20:
            return False
        self._kill(child)
        reason = (f"the model host (pid {child.pid}) used {resident / 2**20:,.0f} MiB of memory, over its limit of "
                  f"{limit:,} MiB (HostMemoryLimitMB), and was killed {doing}")
        self._ended(reason)
        if fail:
            raise HostOutOfMemory(reason)
        return True

    def _kill(self, child: _Child) -> None:
        child.kill()
        child.wait(5.0)

    def _ended(self, reason: str, starting: bool | None = None) -> None:
        """The host is gone (the caller holds the lock): record why, and when the next one may start."""
        starting = self.state == STARTING if starting is None else starting
        if self._channel is not None:
            self._channel.close()
        self._child, self._channel = None, None
        self.pid, self.resident_mb = None, None
        if self._stopping.is_set():
            self.state = STOPPED
            return
        self._failures_in_row += 1
        self._start_failures_in_row += 1 if starting else 0
        backoff = 0.0 if self._failures_in_row == 1 else min(2.0 ** (self._failures_in_row - 2), MAX_BACKOFF_S)
        self._next_launch = time.monotonic() + backoff
        self.state = RESTARTING
        self.last_failure = {"Reason": reason, "At": utc_now().isoformat()}
        log.error("%s: %s; starting a new one%s", self.name, reason, f" in {backoff:g} s" if backoff else "")

    # what GET /system and /models show
    @property
    def restarts(self) -> int:
        return max(self.launches - 1, 0)

    def describe(self) -> dict[str, Any]:
        return {
            "Name": self.name, "Mode": self.settings.mode, "State": self.state, "Pid": self.pid,
            "Device": self.device, "Threads": self.threads, "ResidentMemoryMB": self.resident_mb,
            "MemoryLimitMB": self.settings.memory_limit_mb or None, "Restarts": self.restarts,
            "Nice": self.settings.nice if self.settings.mode == "process" else None,
            "StartedAt": self.started_at, "ReadyAt": self.ready_at, "LoadSeconds": self.load_s,
            "WarmUpSeconds": self.warm_up_s, "Running": self.running, "LastRun": self.last_run,
            "LastFailure": self.last_failure,
        }

    def metrics(self) -> dict[str, float]:
        """For Prometheus: restarts since Orthanc started, resident memory, whether it is ready."""
        return {
            metric("model_host_restarts_total", host=self.name): float(self.restarts),
            metric("model_host_resident_memory_bytes", host=self.name): (self.resident_mb or 0.0) * 2**20,
            metric("model_host_up", host=self.name): 1.0 if self.ready else 0.0,
        }

    def describe_model(self, name: str) -> dict[str, Any]:
        """This host as one model's entry of GET /models shows it: the host and the model's status there."""
        entry = self.models.get(name)
        return {"name": self.name, "pid": self.pid, "state": self.state, "device": self.device,
                "resident_memory_mb": self.resident_mb, "restarts": self.restarts,
                "last_failure": self.last_failure,
                "status": entry.get("status") if entry else None, "error": entry.get("error") if entry else None}


def _outcome(message: Message, objects: list[EncodedObject]) -> HostResult:
    header = message.header
    if message.op == "done":
        return HostResult(objects, {str(k): float(v) for k, v in (header.get("timer") or {}).items()},
                          dict(header.get("statistics") or {}))
    kind, text = str(header.get("kind", "Exception")), str(header.get("message", ""))
    if kind == CANCELED_KIND:
        raise CancelRequested(text)
    if header.get("input_error"):
        raise InputError(text)  # bad input: not retried
    raise ModelRunError(kind, text)


def _call_quietly(function: Callable[..., object], *args: Any) -> None:
    try:
        function(*args)
    except Exception:
        log.warning("a progress report of the model host was not recorded", exc_info=True)


