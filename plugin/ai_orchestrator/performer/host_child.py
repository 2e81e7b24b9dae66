"""The model host: where models run, in a child process of the plugin (the venv's Python, not Orthanc's embedded
interpreter), or in a thread of the plugin for debugging (``ModelHost: "thread"``), the same code either way.

It loads the models once from the models directory (its own registry, so whatever a model module loads is loaded
here), warms them up, says ``ready``, then runs one job at a time: parse the input instances the plugin read from
Orthanc, prepare them (a Volume by default), predict, encode the SEG / SR / SC the model declares, and hand back
their Part 10 bytes. Progress reports go to the plugin as they happen; a cancel request from the plugin is seen by
the run's next checkpoint. It imports nothing that talks to Orthanc: the plugin reads the inputs and stores the
results.

    python -m ai_orchestrator.performer.host_child --fd N --models-dir DIR [--device auto] [--no-warm-up]
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import logging
import os
import platform
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import torch
from pydicom import Dataset

from ..modeling import batching
from ..modeling.api import ModelSpec
from ..modeling.device import resolve_device
from ..modeling.imaging import InputError, model_inputs
from ..modeling.registry import Registry
from ..results.encoding import EncodedObject, encode_each, warm_up_encoders
from .host_channel import CANCELED_KIND, CancelRequested, Channel, ChannelClosed
from .timing import StageTimer

log = logging.getLogger("ai_orchestrator.host")

# The warm-up phantom is a study of the usual size (WarmUpSlices): the first study then finds the host's heap grown
# (keep_freed_heap keeps it). Warmed up on 12 slices, the first two 100-slice studies paid 0.5-0.6 s of page faults
# each (first study 1.5-1.6x the steady state on the 2-core test machine; bench/inference.py).
WARM_UP_SLICES = 100
WARM_UP_ROWS = 512  # the usual CT matrix, so the first study meets warm kernels and buffers
# The freed heap is given back to the system once the host has been idle this long, not after every run: studies
# that come one after another reuse it. A run on a heap given back faults all its pages in again: on the 100-slice
# phantom 1.2-1.8 s of system time on the 2-core VM, more than the model itself, so a host keeps its heap through
# the pauses of a normal day's flow (a study every few minutes) and gives it back when the flow stops.
TRIM_AFTER_IDLE_S = 300.0


@dataclass(frozen=True)
class HostOptions:
    models_dir: Path
    device: str = "auto"
    warm_up: bool = True
    warm_up_slices: int = WARM_UP_SLICES
    registry: Registry | None = None  # thread mode: the plugin's own, loaded once; None: loaded here


class HostRunContext(dict):
    """What ``predict`` gets as its third argument (``modeling.api.RunContext``): stage timing, progress reports
    (sent to the plugin) and cancel checkpoints (a cancel request the plugin sent). A mapping with the same keys."""

    def __init__(self, timer: StageTimer, progress: Callable[[float, str], None] = lambda _p, _t: None,
                 canceled: Callable[[], bool] = lambda: False):
        self.timer, self.stage = timer, timer.stage
        self._progress, self._canceled = progress, canceled
        super().__init__(stage=self.stage, progress=self.progress, checkpoint=self.checkpoint, timer=self.timer)

    def progress(self, percent: float, description: str) -> None:
        self._progress(percent, description)

    def checkpoint(self) -> None:
        if self._canceled():
            raise CancelRequested("canceled on request while running")


def run_model(model: ModelSpec, blobs: Iterable[bytes], device: torch.device, context: HostRunContext,
              on_object: Callable[[EncodedObject], None] = lambda _o: None) -> list[EncodedObject]:
    """One run: the instances' bytes in (parsed as they arrive), the result objects' bytes out, each handed to
    ``on_object`` as soon as it is written."""
    timer = context.timer
    with timer.stage("decode"):
        datasets = [pydicom.dcmread(BytesIO(blob)) for blob in blobs]
        volume = model_inputs(model, datasets)
        sources: Sequence[Dataset] = list(getattr(volume, "datasets", datasets))  # in slice order when sorted
    context.checkpoint()
    context.progress(30, f"running {model.name} {model.version} on {device}")
    with timer.stage("model"):
        result = model.predict(volume, device, context)
    context.checkpoint()
    context.progress(80, "writing result series")
    objects = []
    with timer.stage("encode"):
        for dataset in encode_each(result, sources, model):
            objects.append(EncodedObject.of(dataset))
            on_object(objects[-1])
    return objects


class _Job:
    """A run the plugin asked for; its instances arrive one by one while the model host already parses them."""

    def __init__(self, header: dict[str, Any], count: int):
        self.header, self.count = header, count
        self.parts: queue.Queue[bytes | None] = queue.Queue()

    @property
    def id(self) -> str:
        return str(self.header.get("job"))

    def blobs(self) -> Iterator[bytes]:
        for _ in range(self.count):
            part = self.parts.get()
            if part is None:
                raise ChannelClosed("the plugin closed the channel while handing over the instances")
            yield part


class Host:
    """The host's side of the channel: a reader thread takes jobs (and their instances as they arrive) and cancel
    requests; the calling thread runs the jobs, one at a time."""

    def __init__(self, channel: Channel, options: HostOptions, on_closed: Callable[[], None]):
        self.channel, self.options, self.on_closed = channel, options, on_closed
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._canceled: set[str] = set()
        self._reader = threading.Thread(target=self._read, name="ai-host-reader", daemon=True)

    def serve(self) -> None:
        self._reader.start()
        started = time.perf_counter()
        registry = self.options.registry if self.options.registry is not None else Registry.load(
            self.options.models_dir)
        device = resolve_device(self.options.device)
        loaded = time.perf_counter() - started
        warm_up_s = warm_up(registry, device, self.options.warm_up_slices) if self.options.warm_up else 0.0
        self.channel.send({
            "op": "ready", "pid": os.getpid(), "device": str(device), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "load_s": round(loaded, 3),
            "warm_up_s": round(warm_up_s, 3),
            "models": {entry.name: {"status": entry.status, "error": entry.error} for entry in registry.entries},
        })
        log.info("model host ready on %s: models loaded in %.1f s, warmed up in %.1f s", device, loaded, warm_up_s)
        while (job := self._next_job()) is not None:
            self.channel.send(self._run(job, registry, device))
            del job

    def _next_job(self) -> _Job | None:
        """The next job (None: stop); the freed heap goes back to the system if none comes for a while."""
        try:
            return self._jobs.get(timeout=TRIM_AFTER_IDLE_S)
        except queue.Empty:
            _trim_memory()
            return self._jobs.get()

    def _read(self) -> None:
        job: _Job | None = None
        try:
            while True:
                begun = self.channel.receive_header()
                assert begun is not None  # None only with a timeout
                header, sizes = begun
                op = header.get("op")
                if op == "run":
                    job = _Job(header, len(sizes))
                    self._jobs.put(job)
                    for size in sizes:
                        job.parts.put(self.channel.read(size))
                    job = None
                    continue
                for size in sizes:  # no other message has parts; read them anyway, to stay in step
                    self.channel.read(size)
                if op == "cancel":
                    self._canceled.add(str(header.get("job")))
                elif op == "stop":
                    self._jobs.put(None)
                    return
        except ChannelClosed:
            if job is not None:
                job.parts.put(None)
            self._jobs.put(None)
            self.on_closed()  # the plugin is gone: a process host ends here, whatever it was doing

    def _run(self, job: _Job, registry: Registry, device: torch.device) -> dict[str, Any]:
        name = str(job.header.get("model"))
        timer = StageTimer()

        def progress(percent: float, text: str) -> None:
            self.channel.send({"op": "progress", "job": job.id, "percent": percent, "text": text})

        def hand_over(obj: EncodedObject) -> None:
            self.channel.send({"op": "object", "job": job.id, "uids": obj.uids()}, [obj.dicom])

        try:
            model = registry.get(name)
            if model is None:
                entry = next((e for e in registry.entries if e.name == name), None)
                raise LookupError(f"the model host has no model {name!r}"
                                  + (f": it failed to load there: {entry.error}" if entry and entry.error else ""))
            with _device_statistics(device) as statistics:
                objects = run_model(model, job.blobs(), device,
                                    HostRunContext(timer, progress, lambda: job.id in self._canceled), hand_over)
        except CancelRequested as error:
            return {"op": "failed", "job": job.id, "kind": CANCELED_KIND, "message": str(error),
                    "timer": timer.seconds}
        except Exception as error:
            log.warning("job %s (%s) failed: %s: %s", job.id, name, type(error).__name__, error,
                        exc_info=not isinstance(error, (InputError, LookupError)))
            return {"op": "failed", "job": job.id, "kind": type(error).__name__, "message": str(error),
                    "input_error": isinstance(error, InputError), "timer": timer.seconds}
        finally:
            self._canceled.discard(job.id)
        statistics["cpu_seconds"] = {stage: round(seconds, 3) for stage, seconds in timer.cpu_seconds.items()}
        return {"op": "done", "job": job.id, "timer": timer.seconds, "objects": len(objects),
                "statistics": statistics}


@contextmanager
def _device_statistics(device: torch.device) -> Iterator[dict[str, Any]]:
    """What a run used of the device, filled in when it ends: on a GPU the peak memory torch allocated, and the
    batch size slice batching ended with (``modeling.batching``; None when the model does not use it)."""
    statistics: dict[str, Any] = {}
    batching.last_batch_size = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield statistics
    statistics["batch_size"] = batching.last_batch_size
    if device.type == "cuda":
        statistics["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def warm_up(registry: Registry, device: torch.device, slices: int = WARM_UP_SLICES) -> float:
    """Run each model that takes a chest CT twice on a phantom of ``slices`` slices, and the encoders, before the first
    study: imports, torch's first calls, highdicom's tables and the heap a study needs are paid here. Best effort: a
    failure is logged."""
    from ..phantom import make_chest_phantom  # only needed here
    from ..results.encoding import to_bytes

    started = time.perf_counter()
    try:
        warm_up_encoders()
        # which models take the phantom: asked of a tiny one with the same tags, before the real one is drawn
        series = _series_description(make_chest_phantom(slices=2, rows=32, patient_id="WARM-UP").datasets,
                                     slices)
    except Exception:
        log.warning("warming up the encoders failed: the first study will be slower", exc_info=True)
        return time.perf_counter() - started
    blobs: list[bytes] = []
    for model in registry.models:
        try:
            if not model.matches(series):
                continue
            if not blobs:
                phantom = make_chest_phantom(slices=slices, rows=WARM_UP_ROWS, patient_id="WARM-UP")
                blobs = [to_bytes(dataset) for dataset in phantom.datasets]
            # twice: after one pass the first study's encode took 0.55-0.75 s against 0.45-0.55 s for the next
            # ones (9 runs of the phantom), after two passes 0.42-0.71 s (4 runs); it costs about 0.4 s more here
            for _ in range(2):
                run_model(model, list(blobs), device, HostRunContext(StageTimer()))
        except Exception as error:
            log.warning("warming up %s failed (its first study will be slower): %s", model.name, error)
    return time.perf_counter() - started  # what it freed is given back once the host is idle


def _series_description(datasets: Sequence[Dataset], images: int) -> dict[str, Any]:
    """The phantom series, of ``images`` images, as ``ModelSpec.matches`` sees a series (``modeling.api``)."""
    first = datasets[0]
    return {
        "Modality": str(first.Modality), "BodyPartExamined": str(first.get("BodyPartExamined", "")),
        "SeriesDescription": str(first.get("SeriesDescription", "")), "SeriesNumber": first.get("SeriesNumber"),
        "SeriesInstanceUID": str(first.SeriesInstanceUID), "SOPClassUID": str(first.SOPClassUID),
        "instances": [f"{first.SOPInstanceUID}.{n}" for n in range(images)], "frames": images,
        "ImageType": list(first.get("ImageType", [])), "SliceThickness": first.get("SliceThickness"),
        "slice_spacing": None, "orientations": [list(map(float, first.ImageOrientationPatient))],
    }


def keep_freed_heap() -> bool:
    """Serve a study's large arrays from the heap, and keep what a run frees there for the next run (glibc's
    ``mallopt``; False where it is not glibc). By default glibc maps every block over 32 MiB afresh and unmaps it
    when freed, so the kernel zeroes its pages again for each study: 300 MiB on the 100-slice phantom, 0.1-0.7 s of
    system time on the 2-core VM, and the host's encode took 1.75x the same code outside Orthanc. The heap is given
    back when the host is idle (``TRIM_AFTER_IDLE_S``). Process mode only: Orthanc's own allocator is left alone."""
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt = _glibc("mallopt")
    return mallopt is not None and bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(
        mallopt(m_trim_threshold, 2**31 - 1))


def _trim_memory() -> None:
    """Give the freed heap back to the system, so the resident memory the plugin watches is what is in use."""
    malloc_trim = _glibc("malloc_trim")
    if malloc_trim is not None:
        malloc_trim(0)


def _glibc(name: str) -> Callable[..., int] | None:
    """A function of glibc's allocator; None where the C library is another (musl...) or lacks it."""
    try:
        function: Callable[..., int] = getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    return function


def lower_priority(increment: int) -> None:
    """Add ``increment`` to the niceness of every thread of this process. Linux keeps a niceness per thread, and
    importing numpy and torch already started some (OpenBLAS's pool); threads started later inherit it."""
    target = min(19, os.getpriority(os.PRIO_PROCESS, 0) + increment)
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: the process's niceness is one value
        os.nice(target - os.getpriority(os.PRIO_PROCESS, 0))
        return
    for tid in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, target)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ai_orchestrator.performer.host_child", description=__doc__)
    parser.add_argument("--fd", type=int, required=True, help="this end of the socket pair")
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-warm-up", action="store_true")
    parser.add_argument("--warm-up-slices", type=int, default=WARM_UP_SLICES, help="slices of the warm-up phantom")
    parser.add_argument("--nice", type=int, default=0, help="added to the niceness of every thread of this process")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.nice:
        lower_priority(args.nice)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s ai-model-host[%(process)d] %(levelname)s %(name)s: %(message)s")
    logging.getLogger("ai_orchestrator").setLevel(logging.INFO)
    faulthandler.enable()  # a crash in native code prints the Python stack of every thread into Orthanc's log
    if not keep_freed_heap():
        log.info("not glibc: each study's large arrays are mapped afresh")
    os.set_inheritable(args.fd, False)  # a model's own subprocesses must not hold the channel open
    channel = Channel(socket.socket(fileno=args.fd))
    Host(channel, HostOptions(args.models_dir, args.device, not args.no_warm_up, args.warm_up_slices),
         on_closed=lambda: os._exit(0)).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
