"""Inference benchmark on the synthetic chest-CT phantom, measured in one run:

(a) the bare pipeline outside Orthanc: read the files, decode, model, encode the outputs;
(b) end to end inside Orthanc: from STABLE_STUDY (the workitem's creation) to COMPLETED, so StableAge is left out;

and the ratio b/a, with the performer's own stage breakdown. Targets (CPU): orchestrator overhead, i.e. b minus the
model and encode stages, under 1 s per 100 slices; b/a under 1.5.

(c) the plugin's API latency while (b) runs against idle: another thread GETs a workitems search every 20 ms. An
``orthanc.*`` call of the performer (reading the inputs, storing the results) holds the GIL unless the Python plugin
releases it ("Python": {"AllowThreads": true}, plugin 4.3+); compare with
``ORTHANC_SETTINGS='{"Python": {"AllowThreads": false}}'``.

    .venv/bin/python bench/inference.py [--slices 100] [--rows 512] [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import pydicom
import torch

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_DIR), str(REPO_DIR / "plugin")]

from ai_orchestrator.gateway.http_gateway import ORTHANC_CONNECTION_LIMITS
from ai_orchestrator.modeling.device import resolve_device
from ai_orchestrator.modeling.imaging import model_inputs
from ai_orchestrator.modeling.registry import Registry
from ai_orchestrator.performer.timing import StageTimer
from ai_orchestrator.phantom import make_chest_phantom  # noqa: E402
from ai_orchestrator.results.encoding import encode, to_bytes
from tests.integration.studies import upload_rest, wait_for, workitems_of  # noqa: E402
from tests.integration.workitems import value  # noqa: E402
from tests.orthanc_server import OrthancServer  # noqa: E402


def bare_pipeline(paths: list[Path], model, device: torch.device) -> dict[str, float]:
    timer = StageTimer()
    with timer.stage("fetch"):
        blobs = [path.read_bytes() for path in paths]
    with timer.stage("decode"):
        from io import BytesIO
        volume = model_inputs(model, [pydicom.dcmread(BytesIO(blob)) for blob in blobs])
    with timer.stage("model"):
        result = model.predict(volume, device, {})
    with timer.stage("encode"):
        [to_bytes(ds) for ds in encode(result, volume.datasets, model)]
    return timer.as_dict()


class LatencyProbe:
    """GETs one plugin route every ``interval_s`` from its own thread and connection; latencies in ms."""

    PATH = "/ai-orchestrator/workitems?limit=10&includefield=00741000"

    def __init__(self, base_url: str, interval_s: float = 0.02):
        self.base_url, self.interval_s, self.samples = base_url, interval_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latency-probe", daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60, limits=ORTHANC_CONNECTION_LIMITS) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                client.get(self.PATH).raise_for_status()
                self.samples.append((time.perf_counter() - started) * 1000)
                self._stop.wait(self.interval_s)

    def __enter__(self) -> LatencyProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def percentiles(samples: list[float]) -> str:
    if len(samples) < 2:
        return "no samples"
    cuts = statistics.quantiles(samples, n=100)
    return f"p50 {cuts[49]:6.1f} ms  p95 {cuts[94]:6.1f} ms  max {max(samples):6.1f} ms  ({len(samples)} requests)"


def _dt(text: str) -> datetime:
    """A DICOM DT with or without fraction; the offset is dropped (both ends are written in UTC)."""
    text = text.split("+")[0].split("-")[0]
    return datetime.strptime(text if "." in text else text + ".0", "%Y%m%d%H%M%S.%f")


def end_to_end(server: OrthancServer, phantom_datasets, patient_id: str) -> tuple[float, dict]:
    upload_rest(server.client, phantom_datasets)

    def completed():
        items = workitems_of(server.client, patient_id)
        return items if items and value(items[0], "00741000") in ("COMPLETED", "CANCELED") else None

    [item] = wait_for(completed, timeout=600, interval=0.2)
    assert value(item, "00741000") == "COMPLETED", item.get("00741002")
    performed = item["00741216"]["Value"][0]
    created = _dt(value(item, "00404005"))  # Scheduled Procedure Step Start: set when STABLE_STUDY was handled
    ended = _dt(value(performed, "00404051"))
    uid = value(item, "00080018")
    stages = next(run for run in server.client.get("/ai-orchestrator/system").json()["RecentRuns"]
                  if run["uid"] == uid)
    return (ended - created).total_seconds(), stages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="ct_chest_quant", help="module name in models/ (the only one loaded)")
    args = parser.parse_args()
    device = resolve_device("auto")
    work = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    models_dir = work / "models"  # this model alone, so no other model's runs share the machine
    models_dir.mkdir()
    shutil.copy(REPO_DIR / "models" / f"{args.model}.py", models_dir)
    [model] = Registry.load(models_dir).models
    print(f"model {model.name} {model.version}, device {device}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, phantom {args.slices} x {args.rows} x {args.rows}")

    bare_runs, e2e_runs = [], []
    idle_latency: list[float] = []
    busy_latency: list[float] = []
    with OrthancServer(work / "orthanc", stable_age=1,
                       extra_env={"AI_ORCHESTRATOR_MODELS_DIR": str(models_dir)}) as server:
        system = server.client.get("/ai-orchestrator/system").json()
        print(f"Orthanc {system['OrthancVersion']}, Python {system['PythonVersion']}, "
              f"capabilities {system.get('Capabilities')}")
        for run in range(args.runs + 1):  # the first run warms up; (a) and (b) alternate so both see the same machine
            patient = f"BENCH{run}"
            phantom = make_chest_phantom(work / f"phantom{run}", slices=args.slices, rows=args.rows, seed=run,
                                         patient_id=patient)
            bare = bare_pipeline(phantom.paths, model, device)
            with LatencyProbe(server.base_url) as idle:
                time.sleep(3)
            with LatencyProbe(server.base_url) as busy:
                total, stages = end_to_end(server, phantom.datasets, patient)
            if run:
                idle_latency += idle.samples
                busy_latency += busy.samples
            print(f"  run {run}{' (warm-up)' if not run else ''}: bare {sum(bare.values()):.3f} s {bare}; "
                  f"in Orthanc {total:.3f} s {stages}")
            if run:
                bare_runs.append(bare)
                e2e_runs.append((total, stages))
    if device.type == "cuda":
        print(f"peak GPU memory in the bare runs {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")

    def median(values):
        return statistics.median(values) if values else 0.0

    bare_total = median([sum(t.values()) for t in bare_runs])
    e2e_total = median([total for total, _ in e2e_runs])
    stage_names = ["fetch", "decode", "to-device", "model", "post-process", "encode", "store", "bookkeeping"]
    print(f"\n{'stage':<14}{'(a) bare s':>12}{'(b) in Orthanc s':>18}")
    for name in stage_names:
        a = median([t.get(name, 0.0) for t in bare_runs])
        b = median([s.get(name, 0.0) for _, s in e2e_runs])
        if a or b:
            print(f"{name:<14}{a:>12.3f}{b:>18.3f}")
    other = median([total - sum(v for k, v in s.items() if k in stage_names) for total, s in e2e_runs])
    print(f"{'other':<14}{0.0:>12.3f}{other:>18.3f}   (intake to claim, hand-over between threads)")
    print(f"{'total':<14}{bare_total:>12.3f}{e2e_total:>18.3f}")
    model_encode = median([s.get("model", 0.0) + s.get("encode", 0.0) for _, s in e2e_runs])
    overhead = e2e_total - model_encode
    per_100 = overhead * 100 / args.slices
    print(f"\nratio b/a = {e2e_total / bare_total:.2f} (target < 1.5)")
    print(f"orchestrator overhead (b - model - encode) = {overhead:.3f} s, {per_100:.3f} s per 100 slices "
          f"(target < 1 s)")
    print(f"\nAPI latency, GET {LatencyProbe.PATH}")
    print(f"  idle:             {percentiles(idle_latency)}")
    print(f"  during inference: {percentiles(busy_latency)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
