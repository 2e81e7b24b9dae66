"""Workitem API benchmark: a store of ``--count`` workitems, timed through Orthanc's HTTP server and directly.

    .venv/bin/python bench/workitems.py [--count 100000] [--samples 200] [--direct-only] [--data-dir DIR]

1. Bulk-fills ``<data_dir>/ai-orchestrator.sqlite`` with the store API (before Orthanc starts).
2. Times on the service (no HTTP): create, Search by state (limit=100), Search by PatientID, Retrieve.
3. Starts Orthanc with the plugin (tests/orthanc_server.py) and times the same requests over HTTP (httpx),
   after a warm-up, then prints p50/p95 of both and the HTTP/direct ratio.
The bench items use their own algorithm code, so the in-process worker never claims them.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "plugin"), str(REPO)]

from ai_orchestrator.manager.service import WorkitemService
from ai_orchestrator.store.workitems import (
    DEFAULT_STORE_FILENAME,
    WorkitemRow,
    WorkitemStore,
)
from ai_orchestrator.ups.constants import CANCELED, COMPLETED, IN_PROGRESS, SCHEDULED  # noqa: E402
from ai_orchestrator.ups.sample import sample_workitem  # noqa: E402

BENCH_CODE = ("bench-noop", "99BENCH", "Benchmark item (no model)")
STATE_MIX = [SCHEDULED] * 70 + [IN_PROGRESS] * 10 + [COMPLETED] * 15 + [CANCELED] * 5
PATIENTS = 20_000  # ~5 workitems per patient at 100,000
PREFIX = "/ai-orchestrator"


def _template() -> dict:
    return sample_workitem(code=BENCH_CODE, label="Benchmark")


def _set(dataset: dict, tag: str, value: str) -> None:
    dataset[tag]["Value"] = [{"Alphabetic": value}] if dataset[tag]["vr"] == "PN" else [value]


def bench_rows(count: int, now: str) -> Iterator[WorkitemRow]:
    """Varied workitems from one template (patients, start times, states, priorities)."""
    template, rng = _template(), random.Random(1)
    for n in range(count):
        ds = copy.deepcopy(template)
        uid, state = f"2.25.{10**20 + n}", STATE_MIX[n % len(STATE_MIX)]
        _set(ds, "00100020", f"BENCH-{n % PATIENTS:05d}")
        _set(ds, "00100010", f"Patient^{n % PATIENTS:05d}")
        _set(ds, "00741000", state)
        _set(ds, "00741200", rng.choice(("HIGH", "MEDIUM", "LOW")))
        _set(ds, "00404005", f"2024{1 + n % 12:02d}{1 + n % 28:02d}{n % 24:02d}0000")
        ds["00080018"] = {"vr": "UI", "Value": [uid]}
        yield WorkitemRow(uid, ds, state, "2.25.1" if state != SCHEDULED else None,
                          created_at=now, modified_at=now)


@dataclass
class Timing:
    name: str
    seconds: list[float]

    def pct(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def rate(self) -> float:
        return len(self.seconds) / sum(self.seconds)


def timed(name: str, call: Callable[[int], object], samples: int, warmup: int = 0) -> Timing:
    for n in range(warmup):
        call(n)
    seconds = []
    for n in range(samples):
        start = time.perf_counter()
        call(n)
        seconds.append(time.perf_counter() - start)
    return Timing(name, seconds)


def _operations(count: int) -> dict[str, Callable[[int], dict]]:
    """Operation name -> n -> query/uid arguments, the same for both sides."""
    rng = random.Random(7)
    patients = [f"BENCH-{rng.randrange(min(count, PATIENTS)):05d}" for _ in range(10_000)]
    uids = [f"2.25.{10**20 + rng.randrange(count)}" for _ in range(10_000)]
    return {
        "search state, limit=100": lambda n: {"query": {"ProcedureStepState": SCHEDULED, "limit": "100"}},
        "search PatientID": lambda n: {"query": {"PatientID": patients[n % len(patients)]}},
        "retrieve": lambda n: {"uid": uids[n % len(uids)]},
    }


def run_direct(service: WorkitemService, count: int, samples: int) -> list[Timing]:
    template = _template()
    results = [timed("create", lambda n: service.create(template), samples)]
    for name, args in _operations(count).items():
        def call(n: int, args=args) -> object:
            a = args(n)
            return service.search(a["query"]) if "query" in a else service.retrieve(a["uid"])
        results.append(timed(name, call, samples, warmup=20))
    return results


def run_http(client, count: int, samples: int) -> list[Timing]:
    import json
    body = json.dumps(_template()).encode()
    headers = {"Content-Type": "application/dicom+json", "Accept": "application/dicom+json"}

    def create(n: int) -> None:
        response = client.post(f"{PREFIX}/workitems", content=body, headers=headers)
        assert response.status_code == 201, response.text

    results = [timed("create", create, samples, warmup=5)]
    for name, args in _operations(count).items():
        def call(n: int, args=args) -> None:
            a = args(n)
            if "query" in a:
                response = client.get(f"{PREFIX}/workitems", params=a["query"], headers=headers)
            else:
                response = client.get(f"{PREFIX}/workitems/{a['uid']}", headers=headers)
            assert response.status_code == 200, response.text
        results.append(timed(name, call, samples, warmup=20))
    return results


def print_table(direct: list[Timing], http: list[Timing] | None) -> None:
    print(f"\n{'operation':<26}{'direct p50':>11}{'p95':>9}{'HTTP p50':>11}{'p95':>9}{'HTTP/direct':>13}")
    for n, d in enumerate(direct):
        h = http[n] if http else None
        row = f"{d.name:<26}{d.pct(.5):>9.2f}ms{d.pct(.95):>7.2f}ms"
        row += f"{h.pct(.5):>9.2f}ms{h.pct(.95):>7.2f}ms{h.pct(.5) / d.pct(.5):>12.1f}x" if h else ""
        print(row)
    for label, timings in (("direct", direct), ("HTTP", http or [])):
        if timings:
            print(f"create rate ({label}): {timings[0].rate:.0f} workitems/s (one fsync'd transaction each)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--direct-only", action="store_true", help="skip the Orthanc/HTTP part")
    parser.add_argument("--data-dir", type=Path, help="default: a new temporary directory")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-workitems-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    store_path = data_dir / DEFAULT_STORE_FILENAME
    if store_path.exists():
        sys.exit(f"{store_path} exists: give an empty --data-dir")

    with WorkitemStore(store_path) as store:
        start = time.perf_counter()
        # modified now: IN PROGRESS rows modified long ago would be lease-expired, and Orthanc's housekeeping
        # would spend the whole HTTP run cancelling and replacing 10,000 of them
        store.insert_many(bench_rows(args.count, datetime.now(UTC).isoformat()))
        fill = time.perf_counter() - start
        print(f"bulk fill: {args.count} workitems in {fill:.1f} s ({args.count / fill:.0f}/s), {store_path}")
        direct = run_direct(WorkitemService(store), args.count, args.samples)

    http = None
    if not args.direct_only:
        from tests.orthanc_server import OrthancServer
        with OrthancServer(data_dir) as orthanc:
            http = run_http(orthanc.client, args.count, args.samples)
    print_table(direct, http)


if __name__ == "__main__":
    main()
