"""make stress: everything at once against one real Orthanc with the plugin, on loopback, bounded in count and time.

    .venv/bin/python bench/stress.py [--clients 50] [--studies 200] [--subscribers 100] [--per-client 4]
                                     [--think-ms 1000] [--timeout 240] [--json FILE] [--latency-report-only]

The load, all at the same time:
- ``--clients`` HTTP clients, half on Orthanc's routes (/ai-orchestrator), half on the orchestrator's own port, each
  an external AI engine: it creates ``--per-client`` workitems along the way, searches the SCHEDULED ones, claims one
  (half the time the one every other engine also sees first), reports progress and completes it (one in ten it
  cancels), pausing about ``--think-ms`` between steps (engines that poll without pausing saturate any server: then
  every figure below only measures the queue they build);
- ``--studies`` small studies (two 16x16 MR slices each) sent by dcmtk's ``storescu`` from ten senders at once;
  each becomes one ``head-mr-pipeline`` workitem (the plugin runs with ``Workers: 0``: no model runs in process,
  so every workitem is the engines' to take, and no heavy model costs CI time);
- ``--subscribers`` WebSocket subscribers of the global worklist, connected before the load starts;
- a prober, one request at a time from a process of its own: Orthanc's ``GET /system`` and a workitem search on each
  door every 50 ms, and every third round a workitem of its own created, claimed and completed, on one door then the
  other (its workitems are INCOMPLETE, so the engines, who take READY ones, leave them alone).

It holds, or the run fails (exit 1) naming what broke:
- no 5xx answer, on either door, to anyone;
- no study gets two workitems for one model (or pipeline label), and every study gets one;
- exactly one claim of each workitem wins (200), every other claim of it is refused (409);
- every subscriber gets every State Report of every workitem, in order (SCHEDULED, IN PROGRESS, then its final
  state), with Message IDs that only grow (modulo 65536: the Message ID is a US);
- as the prober times them: Orthanc's ``/system`` p95 < 100 ms, and the workitem API's p95 (searches, creates,
  claims and completions, both doors) < 50 ms (with ``--latency-report-only``, as CI runs it, these two are
  printed against their targets without failing the run).

The prober measures the server: its requests wait only for the server. The engines' own timings are printed too,
for what they are: fifty clients in one Python process on the same cores as Orthanc, each timing also its own wait
for that process's event loop. The WebSocket subscribers run in a process of their own as well.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "plugin"), str(REPO)]

from ai_orchestrator.gateway.http_gateway import ORTHANC_CONNECTION_LIMITS  # noqa: E402
from ai_orchestrator.ups.events import GLOBAL_WORKLIST_UID  # noqa: E402
from ai_orchestrator.ups.sample import completion_attributes, sample_workitem  # noqa: E402
from tests.orthanc_server import OrthancServer  # noqa: E402
from tests.tools import tool_path  # noqa: E402

ROOT = "/ai-orchestrator"
DICOM_JSON = {"Content-Type": "application/dicom+json"}
STUDY_LABEL = "head-mr-pipeline"  # what the default rule labels an MR head study
API_LABEL = "stress-api"
API_CODE = ("stress-api", "99STRESS", "Stress test item (no model)")
SENDERS = 10
SYSTEM_TARGET_MS, API_TARGET_MS = 100.0, 50.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its waited-for children so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- studies -----------------------------------------------------------------------------------------------

def write_studies(folder: Path, count: int) -> list[tuple[str, list[Path]]]:
    """``count`` studies of two 16x16 MR head slices each; answers (StudyInstanceUID, files) per study."""
    studies = []
    for number in range(count):
        study_uid, series_uid = generate_uid(), generate_uid()
        files = []
        for slice_number in range(2):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID = MRImageStorage
            ds.PatientID, ds.PatientName = f"STRESS-{number:04d}", f"Stress^{number:04d}"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.StudyDate, ds.Modality, ds.BodyPartExamined = "20260101", "MR", "HEAD"
            ds.SeriesNumber, ds.InstanceNumber = 1, slice_number + 1
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [0, 0, float(slice_number)]
            ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
            ds.Rows = ds.Columns = 16
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.PixelData = bytes(16 * 16 * 2)
            path = folder / f"{number:04d}-{slice_number}.dcm"
            pydicom.dcmwrite(path, ds, enforce_file_format=True)
            files.append(path)
        studies.append((study_uid, files))
    return studies


def send_studies(storescu: str, port: int, studies: list[tuple[str, list[Path]]]) -> dict[str, Any]:
    """C-STORE every study with its own storescu association, from SENDERS senders at once."""
    failures: list[str] = []
    started = time.monotonic()

    def send(study: tuple[str, list[Path]]) -> None:
        run = subprocess.run([storescu, "-aec", "ORTHANC", "127.0.0.1", str(port), *map(str, study[1])],
                             capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            failures.append(f"{study[0]}: storescu exited {run.returncode}: {run.stderr.strip()[-300:]}")

    with ThreadPoolExecutor(SENDERS) as pool:
        list(pool.map(send, studies))
    return {"studies": len(studies), "instances": sum(len(files) for _, files in studies),
            "seconds": time.monotonic() - started, "failures": failures}


# -- the prober and the subscribers, each in its own process ---------------------------------------------------

PROBE_LABEL = "stress-probe"


def run_prober(base_url: str, own_url: str, stop: Any, out: Any) -> None:
    """From a process of its own, one request at a time: Orthanc's /system and a workitem search on each door every
    50 ms, and every third round a workitem of its own created, claimed and completed on one door then the other.
    That is the server's latency under the load, without the engines' own scheduling in it. Its workitems are
    INCOMPLETE (Input Readiness State), so the engines, who look for READY ones, leave them alone."""
    latencies: dict[str, list[float]] = defaultdict(list)
    statuses: Counter = Counter()
    rounds = 0
    with httpx.Client(base_url=base_url, timeout=30, limits=ORTHANC_CONNECTION_LIMITS) as orthanc, \
            httpx.Client(base_url=own_url, timeout=30) as own:
        doors = {"orthanc": (orthanc, ROOT), "own": (own, "")}

        def timed(name: str, door: str, method: str, path: str, expected: int, **kwargs: Any) -> bool:
            client, base = doors[door]
            began = time.perf_counter()
            try:
                answer = client.request(method, (base if name != "system" else "") + path, **kwargs)
            except httpx.HTTPError as error:
                statuses[f"{name} {door} {type(error).__name__}"] += 1
                return False
            latencies[f"{name} {door}"].append(time.perf_counter() - began)
            if answer.status_code != expected:
                statuses[f"{name} {door} {answer.status_code}"] += 1
            return answer.status_code == expected

        while not stop.is_set():
            timed("system", "orthanc", "GET", "/system", 200)
            for door in doors:
                timed("search", door, "GET", "/workitems", 200,
                      params={"ProcedureStepState": "SCHEDULED", "InputReadinessState": "READY", "limit": "10"})
            if rounds % 3 == 0:
                door = "orthanc" if rounds % 2 == 0 else "own"
                uid, tuid = f"2.25.{uuid.uuid4().int}", generate_uid()
                body = sample_workitem(patient_id=f"PROBE-{rounds}", label=PROBE_LABEL, readiness="INCOMPLETE",
                                       study_uid=f"2.25.{uuid.uuid4().int}")
                body["00080018"] = {"vr": "UI", "Value": [uid]}
                if timed("create", door, "POST", "/workitems", 201, content=json.dumps(body), headers=DICOM_JSON) \
                        and timed("claim", door, "PUT", f"/workitems/{uid}/state", 200, headers=DICOM_JSON,
                                  content=json.dumps({"00741000": {"vr": "CS", "Value": ["IN PROGRESS"]},
                                                      "00081195": {"vr": "UI", "Value": [tuid]}})):
                    timed("complete", door, "PUT", f"/workitems/{uid}/state", 200, headers=DICOM_JSON,
                          content=json.dumps({"00741000": {"vr": "CS", "Value": ["COMPLETED"]},
                                              "00081195": {"vr": "UI", "Value": [tuid]}, **completion_attributes()}))
            rounds += 1
            time.sleep(0.05)
    out.put({"latencies": dict(latencies), "statuses": dict(statuses)})


def run_subscribers(events_port: int, titles: list[str], connected: Any, expected_queue: Any, out: Any) -> None:
    out.put(asyncio.run(_subscribers(events_port, titles, connected, expected_queue)))


async def _subscribers(events_port: int, titles: list[str], connected: Any, expected_queue: Any) -> dict:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    received: dict[str, list[tuple[int, str, int, str | None]]] = {title: [] for title in titles}
    reconnects: Counter[str] = Counter()
    finals: dict[str, dict[str, str]] = {title: {} for title in titles}  # title -> uid -> final state seen
    expected: dict[str, str] = {}
    everything = asyncio.Event()
    opened = [0]

    def complete(title: str) -> bool:
        return bool(expected) and all(finals[title].get(uid) == state for uid, state in expected.items())

    async def listen(title: str) -> None:
        first = True
        while not (expected and complete(title)):
            try:
                async with connect(f"ws://127.0.0.1:{events_port}/ws/subscribers/{title}", max_queue=None,
                                   open_timeout=60) as channel:
                    if first:
                        opened[0] += 1
                        if opened[0] == len(titles):
                            connected.set()
                        first = False
                    while not (expected and complete(title)):
                        try:
                            frame = await asyncio.wait_for(channel.recv(), 1.0)
                        except TimeoutError:
                            continue
                        report = json.loads(frame)
                        uid = report["00001000"]["Value"][0]
                        kind = report["00001002"]["Value"][0]
                        state = (report.get("00741000", {}).get("Value") or [None])[0]
                        received[title].append((report["00000110"]["Value"][0], uid, kind, state))
                        if kind == 1 and state in ("COMPLETED", "CANCELED"):
                            finals[title][uid] = state
            except (ConnectionClosed, OSError, TimeoutError):
                reconnects[title] += 1
                await asyncio.sleep(0.2)

    async def await_expected() -> None:
        loop = asyncio.get_running_loop()
        expected.update(await loop.run_in_executor(None, expected_queue.get))
        everything.set()

    waiter = asyncio.create_task(await_expected())
    listeners = [asyncio.create_task(listen(title)) for title in titles]
    await everything.wait()
    await waiter
    done, pending = await asyncio.wait(listeners, timeout=120)
    for task in pending:
        task.cancel()
    return {"received": received, "reconnects": dict(reconnects),
            "incomplete": sorted(title for title in titles if not complete(title))}


# -- the engines --------------------------------------------------------------------------------------------

@dataclass
class Record:
    latencies: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter = field(default_factory=Counter)  # (door, operation, status) -> count
    claims: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))  # uid -> (status, tuid)
    finals: dict[str, str] = field(default_factory=dict)  # uid -> the state its winner put it in
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: bytes


class Engine:
    """One external AI engine on one door."""

    def __init__(self, number: int, door: str, client: aiohttp.ClientSession, record: Record, think_s: float,
                 per_client: int, stop: asyncio.Event) -> None:
        self.number, self.door, self.client, self.record = number, door, client, record
        self.think_s, self.per_client, self.stop = think_s, per_client, stop
        self.base = ROOT if door == "orthanc" else ""
        self.random = random.Random(number)

    async def call(self, operation: str, method: str, path: str, expected: tuple[int, ...] = (200,),
                   **kwargs: Any) -> Answer | None:
        began = time.perf_counter()
        try:
            async with self.client.request(method, self.base + path, **kwargs) as response:
                answer = Answer(response.status, await response.read())
        except (aiohttp.ClientError, TimeoutError) as error:
            self.record.statuses[(self.door, operation, type(error).__name__)] += 1
            self.record.errors.append(f"{self.door} {operation} {path}: {type(error).__name__}: {error}")
            return None
        self.record.latencies[(self.door, operation)].append(time.perf_counter() - began)
        self.record.statuses[(self.door, operation, answer.status_code)] += 1
        if answer.status_code not in expected:
            self.record.errors.append(f"{self.door} {operation} {path}: {answer.status_code} {answer.body[:300]!r}")
        return answer

    async def create(self, n: int) -> None:
        body = sample_workitem(patient_id=f"API-{self.number:02d}-{n}", label=API_LABEL, code=API_CODE,
                               study_uid=f"2.25.{uuid.uuid4().int}")
        await self.call("create", "POST", "/workitems", (201,), data=json.dumps(body), headers=DICOM_JSON)

    async def run(self) -> None:
        await asyncio.sleep(self.think_s * 10 * self.random.random())  # engines come up one after another
        created = 0
        while not self.stop.is_set():
            if created < self.per_client and self.random.random() < 0.3:  # creates spread over the run
                await self.create(created)
                created += 1
            found = await self.call("search", "GET", "/workitems",
                                    params={"ProcedureStepState": "SCHEDULED", "InputReadinessState": "READY",
                                            "limit": "10", "includefield": "ProcedureStepLabel"})
            items = json.loads(found.body) if found is not None and found.status_code == 200 else []
            if items:
                # half the time the first item, which every engine sees first: claims collide
                item = items[0] if self.random.random() < 0.5 else self.random.choice(items)
                await self.work_on(item["00080018"]["Value"][0])
            await asyncio.sleep(self.think_s * (0.5 + self.random.random()))

    async def work_on(self, uid: str) -> None:
        tuid = generate_uid()
        claim = await self.call("claim", "PUT", f"/workitems/{uid}/state", (200, 409), headers=DICOM_JSON,
                                data=json.dumps(
            {"00741000": {"vr": "CS", "Value": ["IN PROGRESS"]}, "00081195": {"vr": "UI", "Value": [tuid]}}))
        if claim is None:
            return
        self.record.claims[uid].append((claim.status_code, tuid))
        if claim.status_code != 200:
            return
        await asyncio.sleep(self.think_s * self.random.random())
        progress = {"00741002": {"vr": "SQ", "Value": [{"00741004": {"vr": "DS", "Value": [50]}}]}}
        await self.update(uid, tuid, progress)
        final = "CANCELED" if self.random.random() < 0.1 else "COMPLETED"
        body = {"00741000": {"vr": "CS", "Value": [final]}, "00081195": {"vr": "UI", "Value": [tuid]}}
        if final == "COMPLETED":
            body |= completion_attributes()
        ended = await self.call("complete", "PUT", f"/workitems/{uid}/state", headers=DICOM_JSON,
                                data=json.dumps(body))
        if ended is not None and ended.status_code == 200:
            self.record.finals[uid] = final

    async def update(self, uid: str, tuid: str, dataset: dict) -> None:
        """The Transaction UID in the body on Orthanc's routes, in the query on the own port (both standard)."""
        if self.door == "orthanc":
            dataset = {**dataset, "00081195": {"vr": "UI", "Value": [tuid]}}
            params = None
        else:
            params = {"transaction-uid": tuid}
        await self.call("update", "POST", f"/workitems/{uid}", params=params, headers=DICOM_JSON,
                        data=json.dumps(dataset))


async def run_engines(server: OrthancServer, clients: int, per_client: int, think_s: float, expected_total: int,
                      deadline: float, record: Record) -> None:
    stop = asyncio.Event()
    # Orthanc 1.10 closes a keep-alive connection idle for about a second, and a busy client cannot promise to reuse
    # it sooner: a request sent on it as it closes fails. Engines on Orthanc's routes open a connection per request.
    # aiohttp, not httpx: the engines share the two cores with Orthanc, and aiohttp's client takes a fraction of
    # httpx's CPU per request (what the engines burn, the server's latency pays)
    timeout = aiohttp.ClientTimeout(total=60)
    orthanc = aiohttp.ClientSession(server.base_url, timeout=timeout, connector=aiohttp.TCPConnector(
        limit=clients, force_close=True))
    own = aiohttp.ClientSession(server.own_port_url, timeout=timeout, connector=aiohttp.TCPConnector(limit=clients))
    engines = [Engine(n, "orthanc" if n % 2 == 0 else "own", orthanc if n % 2 == 0 else own, record, think_s,
                      per_client, stop) for n in range(clients)]
    tasks = [asyncio.create_task(engine.run()) for engine in engines]
    try:
        while time.monotonic() < deadline and len(record.finals) < expected_total:  # every one completed or canceled
            await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await orthanc.close()
        await own.close()


# -- the run ------------------------------------------------------------------------------------------------

def all_workitems(server: OrthancServer) -> list[dict]:
    items: list[dict] = []
    while True:
        answer = server.client.get(f"{ROOT}/workitems", params={"includefield": "all", "limit": "1000",
                                                                "offset": str(len(items))})
        answer.raise_for_status()
        page = answer.json()
        items += page
        if len(page) < 1000:
            return items


def value(item: dict, tag: str) -> Any:
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--per-client", type=int, default=4, help="workitems each client creates")
    parser.add_argument("--think-ms", type=float, default=1000.0, help="an engine's pause between two steps")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds the load may take at most")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--latency-report-only", action="store_true",
                        help="print the p95 figures against their targets without failing on them (CI: what two "
                             "shared cores of a CI runner time is not a verdict; every other check still fails "
                             "the run)")
    args = parser.parse_args()
    storescu = tool_path("storescu")
    if storescu is None:
        print("stress: storescu (dcmtk, the Debian package) is not installed: install the test tools with "
              "`make install-test`", file=sys.stderr)
        return 1
    started = time.monotonic()
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="stress-") as scratch:
        scratch_dir = Path(scratch)
        (scratch_dir / "studies").mkdir()
        studies = write_studies(scratch_dir / "studies", args.studies)
        env = {"AI_ORCHESTRATOR_SETTINGS": json.dumps({"Workers": 0, "HousekeepingIntervalSeconds": 3600})}
        with OrthancServer(scratch_dir / "data", stable_age=1, extra_env=env) as server:
            with httpx.Client(base_url=server.own_port_url, timeout=30) as own:
                for _ in range(300):
                    try:
                        if own.get("/workitems", params={"limit": "1"}).status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.1)
                titles = [f"STRESS{n:03d}" for n in range(args.subscribers)]
                for title in titles:
                    own.post(f"/workitems/{GLOBAL_WORKLIST_UID}/subscribers/{title}").raise_for_status()
            context = multiprocessing.get_context("spawn")
            connected, stop_probe = context.Event(), context.Event()
            expected_queue, subscriber_out, probe_out = context.Queue(), context.Queue(), context.Queue()
            subscriber_process = context.Process(target=run_subscribers, args=(
                server.events_port, titles, connected, expected_queue, subscriber_out))
            subscriber_process.start()
            if not connected.wait(120):
                print("stress: the WebSocket subscribers did not all connect", file=sys.stderr)
                subscriber_process.terminate()
                return 1
            prober = context.Process(target=run_prober, args=(server.base_url, server.own_port_url, stop_probe, probe_out))
            prober.start()

            load_started = time.monotonic()
            orthanc_cpu = cpu_seconds(server.process.pid)
            clients_cpu = time.process_time()
            sending: dict[str, Any] = {}
            sender = threading.Thread(target=lambda: sending.update(send_studies(storescu, server.dicom_port,
                                                                                 studies)))
            sender.start()
            record = Record()
            expected_total = args.studies + args.clients * args.per_client
            asyncio.run(run_engines(server, args.clients, args.per_client, args.think_ms / 1000, expected_total,
                                    load_started + args.timeout, record))
            sender.join()
            load_seconds = time.monotonic() - load_started
            orthanc_cpu = cpu_seconds(server.process.pid) - orthanc_cpu
            clients_cpu = time.process_time() - clients_cpu
            stop_probe.set()
            probe = probe_out.get(timeout=60)
            prober.join(30)

            items = [item for item in all_workitems(server) if value(item, "00741204") != PROBE_LABEL]
            final_states = {value(item, "00080018"): value(item, "00741000") for item in items}
            expected_queue.put({uid: state for uid, state in final_states.items()
                                if state in ("COMPLETED", "CANCELED")})
            subscribers = subscriber_out.get(timeout=180)
            subscriber_process.join(30)
            log_tail = server.log()[-3000:]

    # -- what must hold ---------------------------------------------------------------------------------------
    if sending.get("failures"):
        failures.append(f"{len(sending['failures'])} C-STORE(s) failed, e.g. {sending['failures'][0]}")
    five_xx = sum(n for (door, op, status), n in record.statuses.items() if isinstance(status, int) and status >= 500)
    transport = sum(n for (door, op, status), n in record.statuses.items() if not isinstance(status, int))
    if five_xx or transport:
        failures.append(f"{five_xx} 5xx answer(s) and {transport} failed connection(s): {record.errors[:3]}")
    if record.errors and not (five_xx or transport):
        failures.append(f"{len(record.errors)} unexpected answer(s) (a create not 201, a claim neither 200 nor 409, "
                        f"another step not 200): {record.errors[:3]}")
    if probe["statuses"]:
        failures.append(f"the prober got answers it did not expect: {probe['statuses']}")
    if len(items) != expected_total:
        failures.append(f"{len(items)} workitems, expected {expected_total} ({args.studies} studies + "
                        f"{args.clients * args.per_client} created by the engines)")
    per_study = Counter((value(item, "0020000D"), value(item, "00741204")) for item in items
                        if value(item, "00741204") == STUDY_LABEL)
    duplicates = {key: n for key, n in per_study.items() if n > 1}
    sent_uids = {uid for uid, _ in studies}
    missing = sent_uids - {study for study, _ in per_study}
    if duplicates:
        failures.append(f"{len(duplicates)} study/model pair(s) with more than one workitem: "
                        f"{list(duplicates.items())[:3]}")
    if missing:
        failures.append(f"{len(missing)} of {len(sent_uids)} studies got no workitem")
    not_final = {uid: state for uid, state in final_states.items() if state not in ("COMPLETED", "CANCELED")}
    if not_final:
        failures.append(f"{len(not_final)} workitem(s) not final within --timeout {args.timeout:.0f} s")
    winners = {uid: [tuid for status, tuid in attempts if status == 200] for uid, attempts in record.claims.items()}
    bad_claims = {uid: attempts for uid, attempts in record.claims.items()
                  if len(winners[uid]) != 1 or any(status not in (200, 409) for status, _ in attempts)}
    contended = sum(1 for attempts in record.claims.values() if len(attempts) > 1)
    if bad_claims:
        failures.append(f"{len(bad_claims)} workitem(s) without exactly one winning claim: "
                        f"{list(bad_claims.items())[:2]}")
    unclaimed = set(final_states) - set(record.claims)
    if unclaimed:
        failures.append(f"{len(unclaimed)} workitem(s) never claimed")
    wrong_final = {uid for uid, state in record.finals.items() if final_states.get(uid) != state}
    if wrong_final:
        failures.append(f"{len(wrong_final)} workitem(s) not in the state their winner put them in")

    frames = sum(len(got) for got in subscribers["received"].values())
    order_faults: list[str] = []
    for title, got in subscribers["received"].items():
        seen: set[int] = set()
        last_id = wraps = previous = 0
        states: dict[str, list[str]] = defaultdict(list)
        for message_id, uid, kind, state in got:
            if message_id < previous - 32768:  # Message ID is US: it wraps at 65536
                wraps += 1
            previous = message_id
            unwrapped = wraps * 65536 + message_id
            if unwrapped in seen:  # at-least-once: a redelivery after a reconnect carries its first Message ID
                continue
            seen.add(unwrapped)
            if unwrapped <= last_id:
                order_faults.append(f"{title}: Message ID {message_id} after {last_id % 65536}")
                break
            last_id = unwrapped
            if kind == 1:
                states[uid].append(state)
        for uid, final in final_states.items():
            if states.get(uid) != ["SCHEDULED", "IN PROGRESS", final]:
                order_faults.append(f"{title}: {uid} reported {states.get(uid)}, expected "
                                    f"['SCHEDULED', 'IN PROGRESS', {final!r}]")
                break
    if subscribers["incomplete"] or order_faults:
        failures.append(f"{len(subscribers['incomplete'])} subscriber(s) incomplete, {len(order_faults)} with "
                        f"State Reports missing or out of order: {order_faults[:3]}")

    probed: dict[str, list[float]] = probe["latencies"]
    api = [latency for name, latencies in probed.items() if not name.startswith("system") for latency in latencies]
    system = probed.get("system orthanc", [])
    system_p95, api_p95 = percentile(system, 0.95) * 1000, percentile(api, 0.95) * 1000
    missed = []
    if not system_p95 < SYSTEM_TARGET_MS:
        missed.append(f"Orthanc's /system p95 {system_p95:.1f} ms, not under {SYSTEM_TARGET_MS:.0f} ms")
    if not api_p95 < API_TARGET_MS:
        missed.append(f"the workitem API's p95 {api_p95:.1f} ms, not under {API_TARGET_MS:.0f} ms")
    if not args.latency_report_only:
        failures += missed

    # -- the summary ----------------------------------------------------------------------------------------
    requests = sum(n for (door, op, status), n in record.statuses.items())
    figures = {
        "load_seconds": round(load_seconds, 1), "total_seconds": round(time.monotonic() - started, 1),
        "clients": args.clients, "studies": args.studies, "instances": sending.get("instances", 0),
        "cstore_seconds": round(sending.get("seconds", 0.0), 1), "subscribers": args.subscribers,
        "workitems": len(items), "requests": requests, "requests_per_second": round(requests / load_seconds, 1),
        "statuses": {f"{door} {op} {status}": n for (door, op, status), n in sorted(
            record.statuses.items(), key=lambda kv: tuple(map(str, kv[0])))},
        "claims": sum(len(attempts) for attempts in record.claims.values()), "contended_workitems": contended,
        "completed": sum(1 for state in final_states.values() if state == "COMPLETED"),
        "canceled": sum(1 for state in final_states.values() if state == "CANCELED"),
        "frames": frames, "reconnects": sum(subscribers["reconnects"].values()),
        "orthanc_cpu_seconds": round(orthanc_cpu, 1), "engines_cpu_seconds": round(clients_cpu, 1),
        "cpu_count": os.cpu_count(), "system_probes": len(system),
        "system_p50_ms": round(percentile(system, 0.5) * 1000, 1), "system_p95_ms": round(system_p95, 1),
        "api_probes": len(api), "api_p50_ms": round(percentile(api, 0.5) * 1000, 1), "api_p95_ms": round(api_p95, 1),
        "prober": {name: {"n": len(latencies), "p50_ms": round(statistics.median(latencies) * 1000, 1),
                          "p95_ms": round(percentile(latencies, 0.95) * 1000, 1)}
                   for name, latencies in sorted(probed.items())},
        "engines": {f"{door} {op}": {"n": len(latencies), "p50_ms": round(statistics.median(latencies) * 1000, 1),
                                     "p95_ms": round(percentile(latencies, 0.95) * 1000, 1)}
                    for (door, op), latencies in sorted(record.latencies.items())},
        "failures": failures, "latency_targets_missed": missed,
    }
    print(f"\nmake stress: {args.clients} HTTP clients (half per door), {args.studies} studies by C-STORE, "
          f"{args.subscribers} WebSocket subscribers, for {load_seconds:.1f} s (whole run {figures['total_seconds']} s)")
    print(f"  CPU during the load: Orthanc {figures['orthanc_cpu_seconds']} s, the engines' process "
          f"{figures['engines_cpu_seconds']} s, of {load_seconds * (os.cpu_count() or 1):.0f} s on "
          f"{os.cpu_count()} cores")
    print(f"  C-STORE: {figures['instances']} instances of {args.studies} studies in {figures['cstore_seconds']} s "
          f"from {SENDERS} storescu senders")
    print(f"  workitems: {len(items)} ({args.studies} from studies, {args.clients * args.per_client} created), "
          f"{figures['completed']} COMPLETED, {figures['canceled']} CANCELED; duplicates per study and model: "
          f"{len(duplicates)}")
    print(f"  requests: {requests} ({figures['requests_per_second']}/s), 5xx: {five_xx}, failed connections: "
          f"{transport}; claims: {figures['claims']} on {len(record.claims)} workitems, {contended} contended, "
          f"winners per workitem: {sorted(Counter(len(w) for w in winners.values()).items())}")
    print(f"  events: {frames} frames to {args.subscribers} subscribers, reconnects {figures['reconnects']}, "
          f"incomplete {len(subscribers['incomplete'])}, out of order {len(order_faults)}")
    print(f"  Orthanc /system, timed by the prober: {figures['system_probes']} requests, p50 "
          f"{figures['system_p50_ms']} ms, p95 {figures['system_p95_ms']} ms (target < {SYSTEM_TARGET_MS:.0f})")
    print(f"  workitem API, timed by the prober (both doors, reads and writes): {figures['api_probes']} requests, "
          f"p50 {figures['api_p50_ms']} ms, p95 {figures['api_p95_ms']} ms (target < {API_TARGET_MS:.0f})")
    print(f"  {'the prober':<24}{'n':>7}{'p50 ms':>9}{'p95 ms':>9}")
    for name, latencies in sorted(probed.items()):
        print(f"  {name:<24}{len(latencies):>7}{statistics.median(latencies) * 1000:>9.1f}"
              f"{percentile(latencies, 0.95) * 1000:>9.1f}")
    print(f"  {'the engines, as they saw it':<24}")
    for (door, op), latencies in sorted(record.latencies.items()):
        print(f"  {door + ' ' + op:<24}{len(latencies):>7}{statistics.median(latencies) * 1000:>9.1f}"
              f"{percentile(latencies, 0.95) * 1000:>9.1f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        print(f"\nOrthanc's log, last lines:\n{log_tail}", file=sys.stderr)
        return 1
    print("\nheld: no 5xx, one workitem per study and model, one winner per claim, every State Report to every "
          "subscriber in order" + (", /system and API p95 under their targets" if not missed else ""))
    if missed:
        print("latency targets missed (reported only, --latency-report-only):\n  " + "\n  ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
