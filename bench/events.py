"""Event channel and own-port benchmark against a real Orthanc with the plugin.

    .venv/bin/python bench/events.py [--subscribers 100] [--changes 50] [--samples 200]

1. Starts Orthanc (tests/orthanc_server.py) in a temporary directory.
2. ``--subscribers`` WebSocket clients subscribe to the global worklist, each under its own AE title, and connect.
3. ``--changes`` workitems are created one after another on the orchestrator's port; for each, every subscriber
   times the State Report from the moment the Create was sent: event latency p50/p95 over all frames.
4. The workitem API's p50/p95 on the orchestrator's port next to Orthanc's routes (Retrieve, Search limit=10).
The workitems carry an algorithm code no model runs, so nothing but the benchmark changes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "plugin"), str(REPO)]

from ai_orchestrator.ups.events import GLOBAL_WORKLIST_UID  # noqa: E402
from ai_orchestrator.ups.sample import sample_workitem  # noqa: E402
from tests.orthanc_server import OrthancServer  # noqa: E402

BENCH_CODE = ("bench-events", "99BENCH", "Benchmark item (no model)")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def listen(url: str, sent: dict[str, float], latencies: list[float], expected: int, ready: asyncio.Event,
                 counter: list[int], subscribers: int) -> None:
    async with connect(url, max_queue=None) as channel:
        counter[0] += 1
        if counter[0] == subscribers:
            ready.set()
        seen = 0
        while seen < expected:
            report = json.loads(await channel.recv())
            received = time.perf_counter()
            uid = report["00001000"]["Value"][0]
            if uid in sent:
                latencies.append(received - sent[uid])
                seen += 1


async def run_events(server: OrthancServer, subscribers: int, changes: int) -> list[float]:
    sent: dict[str, float] = {}
    latencies: list[float] = []
    ready, counter = asyncio.Event(), [0]
    async with httpx.AsyncClient(base_url=server.own_port_url, timeout=30) as client:
        for n in range(subscribers):
            answer = await client.post(f"/workitems/{GLOBAL_WORKLIST_UID}/subscribers/BENCH{n:03d}")
            answer.raise_for_status()
        listeners = [asyncio.create_task(listen(f"ws://127.0.0.1:{server.events_port}/ws/subscribers/BENCH{n:03d}",
                                                sent, latencies, changes, ready, counter, subscribers))
                     for n in range(subscribers)]
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.sleep(0.5)  # let the RESTARTED and earlier reports drain
        for n in range(changes):
            body = sample_workitem(patient_id=f"EV-{n}", code=BENCH_CODE, label="Benchmark")
            uid = f"2.25.{10**21 + n}"
            sent[uid] = time.perf_counter()
            answer = await client.post("/workitems", params={"workitem": uid}, content=json.dumps(body),
                                       headers={"Content-Type": "application/dicom+json"})
            answer.raise_for_status()
            await asyncio.sleep(0.02)
        await asyncio.wait_for(asyncio.gather(*listeners), 120)
    return latencies


def time_calls(client: httpx.Client, paths: list[tuple[str, dict]], samples: int) -> list[float]:
    out = []
    for n in range(samples):
        path, params = paths[n % len(paths)]
        start = time.perf_counter()
        client.get(path, params=params).raise_for_status()
        out.append(time.perf_counter() - start)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-events-") as data, OrthancServer(Path(data)) as server:
        with httpx.Client(base_url=server.own_port_url, timeout=30) as own:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    own.get("/workitems", params={"limit": "1"})
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            latencies = asyncio.run(run_events(server, args.subscribers, args.changes))
            print(f"event latency, create sent to State Report received, {args.subscribers} subscribers x "
                  f"{args.changes} changes ({len(latencies)} frames): p50 {percentile(latencies, 0.5) * 1000:.1f} ms,"
                  f" p95 {percentile(latencies, 0.95) * 1000:.1f} ms (target p95 < 50 ms)")
            uid = f"2.25.{10**21}"
            calls = {"retrieve": [(f"/workitems/{uid}", {})],
                     "search limit=10": [("/workitems", {"limit": "10", "ProcedureStepLabel": "Benchmark"})]}
            print(f"\n{'operation':<18}{'own port p50':>14}{'p95':>9}{'Orthanc p50':>14}{'p95':>9}")
            for name, paths in calls.items():
                mine = time_calls(own, paths, args.samples)
                theirs = time_calls(server.client, [(f"/ai-orchestrator{p}", q) for p, q in paths], args.samples)
                print(f"{name:<18}{statistics.median(mine) * 1000:>12.2f}ms{percentile(mine, 0.95) * 1000:>7.2f}ms"
                      f"{statistics.median(theirs) * 1000:>12.2f}ms{percentile(theirs, 0.95) * 1000:>7.2f}ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
