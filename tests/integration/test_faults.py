"""Faults against a real Orthanc: kill -9 while a model runs and while studies arrive, the store locked by another
process, a full disk under the data directory, and corrupt, truncated or pixel-less DICOM.

What must hold: every acknowledged workitem is there after a crash, work in progress is recovered, no study is
processed to completion twice, subscribers get RESTARTED and then what happened since; a locked store is waited
for (never a 500); a full disk is a 507 that says so, corrupts nothing and passes once there is room again; a study
the model cannot read ends CANCELED with the reason, and the next study is processed normally.

The models are the test models of ``tests/models`` (each takes MR series whose BodyPartExamined names it):
``SLOW`` (about 4 s, a run to interrupt) and ``QUICK``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from pydicom.uid import JPEGBaseline8Bit, generate_uid
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ai_orchestrator.ups.events import GLOBAL_WORKLIST_UID, EventType
from tests.integration.studies import instances, to_bytes, upload_rest, wait_for, workitems_of
from tests.integration.workitems import DICOM_JSON, ROOT, completion_attributes, new_workitem, state_change, value
from tests.orthanc_server import REPO_DIR, OrthancServer
from tests.tools import require_tool

MODELS_DIR = REPO_DIR / "tests" / "models"
FINAL = ("COMPLETED", "CANCELED")
OUR_MANUFACTURER = "Orthanc AI Orchestrator"


def result_series(server: OrthancServer, study_uid: str) -> list[dict]:
    """The series the plugin wrote into a study (our Manufacturer)."""
    found = server.client.post("/tools/find", json={"Level": "Series", "Expand": True,
                                                    "Query": {"StudyInstanceUID": study_uid}})
    assert found.status_code == 200, found.text
    return [s for s in found.json() if s["MainDicomTags"].get("Manufacturer") == OUR_MANUFACTURER]


def storescu(port: int, datasets, folder: Path) -> int:
    """C-STORE with dcmtk's storescu; answers its exit status (0: every instance acknowledged)."""
    tool = require_tool("storescu")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(to_bytes(ds))
        paths.append(str(path))
    return subprocess.run([tool, "-to", "5", "-ta", "5", "-aec", "ORTHANC", "127.0.0.1", str(port), *paths],
                          capture_output=True, timeout=60).returncode


class Channel:
    """A WebSocket subscriber that reconnects whenever its channel drops, keeping every frame it got, in order."""

    def __init__(self, server: OrthancServer, ae_title: str):
        self.url = f"ws://127.0.0.1:{server.events_port}/ws/subscribers/{ae_title}"
        self.frames: list[tuple[int, dict]] = []  # (connection number, report)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Channel:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with connect(self.url, open_timeout=5) as channel:
                    self.connections += 1
                    while not self._stop.is_set():
                        try:
                            self.frames.append((self.connections, json.loads(channel.recv(timeout=0.5))))
                        except TimeoutError:
                            continue
            except (ConnectionClosed, OSError, TimeoutError):  # Orthanc is down: try again
                time.sleep(0.2)
            except Exception:  # e.g. a refused upgrade while Orthanc starts
                time.sleep(0.2)

    def state_reports(self, uid: str) -> list[str]:
        """The states reported for a workitem, each once (delivery is at least once), in arrival order."""
        states, seen = [], set()
        for _, report in self.frames:
            key = json.dumps(report, sort_keys=True)
            if report["00001002"]["Value"] == [EventType.STATE_REPORT] and report["00001000"]["Value"] == [uid] \
                    and key not in seen:
                seen.add(key)
                states.append(report["00741000"]["Value"][0])
        return states


def test_kill_9_while_a_model_runs_and_studies_arrive(tmp_path):
    env = {"AI_ORCHESTRATOR_MODELS_DIR": str(MODELS_DIR)}
    with OrthancServer(tmp_path / "data", extra_env=env) as server:
        own = httpx.Client(base_url=server.own_port_url, timeout=30)
        wait_for(lambda: _answers(own), timeout=30)
        assert own.post(f"/workitems/{GLOBAL_WORKLIST_UID}/subscribers/CRASHWATCH").status_code == 201
        with Channel(server, "CRASHWATCH") as channel:
            # a model runs ...
            slow_patient = f"SLOW{generate_uid()[-8:]}"
            slow_study = generate_uid()
            upload_rest(server.client, instances("MR_small.dcm", count=1, patient_id=slow_patient,
                                                 study_uid=slow_study, body_part="SLOW"))
            [running] = wait_for(lambda: [i for i in workitems_of(server.client, slow_patient)
                                          if value(i, "00741000") == "IN PROGRESS"], timeout=90, interval=0.1)
            running_uid = value(running, "00080018")
            # ... external engines' workitems are acknowledged (201), one of them claimed ...
            acknowledged = []
            for n in range(5):
                uid = generate_uid()
                answer = server.client.post(f"{ROOT}/workitems", json=new_workitem(
                    uid, patient_id=f"ACK-{n}", label="external-engine").to_json_dict(), headers=DICOM_JSON)
                assert answer.status_code == 201
                acknowledged.append(uid)
            engine_tuid = generate_uid()
            assert server.client.put(f"{ROOT}/workitems/{acknowledged[0]}/state",
                                     json=state_change("IN PROGRESS", engine_tuid), headers=DICOM_JSON
                                     ).status_code == 200
            # ... and studies arrive by C-STORE, one after another, while Orthanc is killed
            arrived: dict[str, int] = {}  # study UID -> storescu's exit status
            stop_sending = threading.Event()

            def send() -> None:
                for n in range(40):
                    if stop_sending.is_set():
                        return
                    study = generate_uid()
                    arrived[study] = storescu(server.dicom_port, instances(
                        "MR_small.dcm", count=2, patient_id=f"QUICK-{n:02d}", study_uid=study, body_part="QUICK"),
                        tmp_path / "sent" / study)
                    time.sleep(0.2)

            sender = threading.Thread(target=send)
            sender.start()
            wait_for(lambda: sum(status == 0 for status in arrived.values()) >= 4, timeout=60, interval=0.05)
            server.stop(signal.SIGKILL)
            stop_sending.set()
            sender.join(120)
            server.start()
            wait_for(lambda: _answers(own), timeout=30)
            stored = [study for study, status in arrived.items() if status == 0]
            assert len(stored) >= 4

            # every acknowledged workitem is there, the engine's lock too
            for uid in acknowledged:
                assert server.client.get(f"{ROOT}/workitems/{uid}").status_code == 200, uid
            assert server.client.put(f"{ROOT}/workitems/{acknowledged[0]}/state", headers=DICOM_JSON, json={
                **state_change("COMPLETED", engine_tuid), **completion_attributes().to_json_dict()}).status_code == 200

            # the interrupted run is recovered and completes, once
            def slow_completed():
                items = workitems_of(server.client, slow_patient)
                return items if items and all(value(i, "00741000") == "COMPLETED" for i in items) else None

            items = wait_for(slow_completed, timeout=120, interval=0.25)
            assert [value(i, "00080018") for i in items] == [running_uid]
            # every study whose C-STORE was acknowledged gets its workitem, processed to completion exactly once
            for study in stored:
                def quick_done(study: str = study):
                    found = server.client.get(f"{ROOT}/workitems", params={"StudyInstanceUID": study,
                                                                           "includefield": "all"}).json()
                    return found if found and all(value(i, "00741000") in FINAL for i in found) else None

                found = wait_for(quick_done, timeout=120, interval=0.25)
                assert [value(i, "00741000") for i in found] == ["COMPLETED"], (study, found)
            for study in [slow_study, *stored]:
                series = result_series(server, study)
                assert [s["MainDicomTags"]["Modality"] for s in series] == ["SR"], (study, series)

            # the subscriber: RESTARTED on its new connection, then what happened since, in order
            wait_for(lambda: channel.state_reports(running_uid)[-1:] == ["COMPLETED"], timeout=60, interval=0.2)
        assert channel.connections >= 2
        restarted = [n for n, (connection, report) in enumerate(channel.frames)
                     if report["00001002"]["Value"] == [EventType.SCP_STATUS_CHANGE]
                     and report["00741242"]["Value"] == ["RESTARTED"]]
        assert restarted, "no RESTARTED report"
        after_restart = [report for _, report in channel.frames[restarted[-1]:]]
        assert any(r["00001000"]["Value"] == [running_uid] and r.get("00741000", {}).get("Value") == ["COMPLETED"]
                   for r in after_restart)
        for uid in acknowledged:  # the State Reports of acknowledged workitems were all kept
            assert channel.state_reports(uid)[:1] == ["SCHEDULED"], uid
        assert channel.state_reports(running_uid) == ["SCHEDULED", "IN PROGRESS", "COMPLETED"]
        own.close()


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/workitems", params={"limit": "1"}).status_code == 200
    except httpx.TransportError:
        return False


# -- the store locked by another process -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def quiet(tmp_path_factory) -> Iterator[OrthancServer]:
    env = {"AI_ORCHESTRATOR_SETTINGS": json.dumps({"Workers": 0})}
    with OrthancServer(tmp_path_factory.mktemp("orthanc-locked"), extra_env=env) as server:
        with httpx.Client(base_url=server.own_port_url, timeout=30) as own:
            wait_for(lambda: _answers(own), timeout=30)
        yield server


LOCK_HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN IMMEDIATE")  # the write lock, as another program writing to the file would hold it
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
print("released", flush=True)
"""


@contextmanager
def store_locked_by_another_process(server: OrthancServer, seconds: float) -> Iterator[subprocess.Popen]:
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(server.data_dir / "ai-orchestrator.sqlite"),
                               str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    try:
        yield holder
    finally:
        holder.wait(60)


def test_a_store_locked_by_another_process_is_waited_for_never_a_500(quiet):
    """Writes on both doors wait for the lock and then succeed; reads go on meanwhile (WAL)."""
    scheduled = new_workitem(patient_id="LOCKED-0", label="external-engine")
    assert quiet.client.post(f"{ROOT}/workitems", json=scheduled.to_json_dict(), headers=DICOM_JSON).status_code == 201
    own = httpx.Client(base_url=quiet.own_port_url, timeout=120)
    results: dict[str, int] = {}

    def attempt(name: str, call) -> None:
        try:
            results[name] = call().status_code
        except httpx.HTTPError as error:
            results[name] = -1
            results[name + " error"] = str(error)  # type: ignore[assignment]

    tuid = generate_uid()
    writes = {
        "create (Orthanc)": lambda: quiet.client.post(f"{ROOT}/workitems", json=new_workitem(
            patient_id="LOCKED-1", label="external-engine").to_json_dict(), headers=DICOM_JSON),
        "create (own port)": lambda: own.post("/workitems", json=new_workitem(
            patient_id="LOCKED-2", label="external-engine").to_json_dict(), headers=DICOM_JSON),
        "claim (own port)": lambda: own.put(f"/workitems/{scheduled.SOPInstanceUID}/state",
                                            json=state_change("IN PROGRESS", tuid), headers=DICOM_JSON),
        "subscribe (Orthanc)": lambda: quiet.client.post(f"{ROOT}/workitems/{GLOBAL_WORKLIST_UID}/subscribers/LOCKED"),
    }
    with store_locked_by_another_process(quiet, 4.0) as holder:
        threads = [threading.Thread(target=attempt, args=item) for item in writes.items()]
        for thread in threads:
            thread.start()
        # reads are not held up by a writer
        search = quiet.client.get(f"{ROOT}/workitems", params={"PatientID": "LOCKED-0"})
        assert search.status_code == 200 and len(search.json()) == 1
        assert own.get(f"/workitems/{scheduled.SOPInstanceUID}").status_code == 200
        assert holder.poll() is None, "the lock was released before the reads: the test proved nothing"
        assert not results, f"a write finished while another process held the lock: {results}"
        for thread in threads:
            thread.join(120)
    assert results == {"create (Orthanc)": 201, "create (own port)": 201, "claim (own port)": 200,
                       "subscribe (Orthanc)": 201}
    assert len(quiet.client.get(f"{ROOT}/workitems", params={"PatientID": "LOCKED-*"}).json()) == 3
    own.close()


# -- a full disk ---------------------------------------------------------------------------------------------

def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@contextmanager
def small_filesystem(folder: Path, megabytes: int) -> Iterator[str]:
    """A real filesystem of ``megabytes`` at ``folder`` (tmpfs), when this machine lets us mount one."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"mounting a tmpfs failed although running as root: {mounted.stderr}")
    try:
        yield "tmpfs"
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> Path:
    """Write a file until the filesystem is full; answers it (removing it frees the space)."""
    filler = folder / "filler.bin"
    block = b"\0" * (1024 * 1024)
    with open(filler, "wb", buffering=0) as out:  # unbuffered: nothing is left to fail at close
        for chunk in (block, b"\0" * 4096, b"\0"):
            try:
                while out.write(chunk):
                    pass
            except OSError:
                pass
    return filler


@pytest.mark.parametrize("full", ["filesystem", "StoreMaxSizeMB"])
def test_a_full_disk_is_a_507_corrupts_nothing_and_passes_once_there_is_room(tmp_path, full):
    """The data directory on a real small filesystem (tmpfs) that fills up; without the right to mount one, and in
    the second case anyway, the store's own size limit (StoreMaxSizeMB: SQLite's max_page_count) is what fills up."""
    data = tmp_path / "data"
    if full == "filesystem" and _can_mount():
        with small_filesystem(data, 48), OrthancServer(data, extra_env={
                "AI_ORCHESTRATOR_SETTINGS": json.dumps({"Workers": 0})}) as server:
            _full_disk_then_room(server, fill=lambda: _fill(data), free=lambda filler: filler.unlink())
    else:
        settings = {"Workers": 0, "StoreMaxSizeMB": 1}
        with OrthancServer(data, extra_env={"AI_ORCHESTRATOR_SETTINGS": json.dumps(settings)}) as server:
            def fill() -> None:
                n = 0
                while server.client.post(f"{ROOT}/workitems", json=new_workitem(
                        patient_id=f"FILL-{n}", label="filler").to_json_dict(), headers=DICOM_JSON).status_code == 201:
                    n += 1

            def free(_: object) -> None:
                server.stop()
                server.extra_env["AI_ORCHESTRATOR_SETTINGS"] = json.dumps({**settings, "StoreMaxSizeMB": 64})
                server.start()

            _full_disk_then_room(server, fill=fill, free=free)


def _full_disk_then_room(server: OrthancServer, fill, free) -> None:
    own = httpx.Client(base_url=server.own_port_url, timeout=60)
    wait_for(lambda: _answers(own), timeout=30)
    before = []
    for n in range(3):
        item = new_workitem(patient_id=f"KEPT-{n}", label="external-engine")
        assert server.client.post(f"{ROOT}/workitems", json=item.to_json_dict(), headers=DICOM_JSON).status_code == 201
        before.append(str(item.SOPInstanceUID))
    tuid = generate_uid()
    assert own.put(f"/workitems/{before[0]}/state", json=state_change("IN PROGRESS", tuid),
                   headers=DICOM_JSON).status_code == 200
    kept = server.client.get(f"{ROOT}/workitems", params={"PatientID": "KEPT-*", "includefield": "all"}).json()

    filler = fill()
    refused: dict[str, list[httpx.Response]] = {"Orthanc": [], "own port": []}
    for n in range(30):  # past whatever SQLite still finds room for in pages it already has
        for door, client, base in (("Orthanc", server.client, ROOT), ("own port", own, "")):
            answer = client.post(f"{base}/workitems", json=new_workitem(
                patient_id=f"FULL-{n}", label="external-engine").to_json_dict(), headers=DICOM_JSON)
            assert answer.status_code in (201, 507), answer.text
            if answer.status_code == 507:
                refused[door].append(answer)
    assert all(refused.values()), f"a door never refused a write: the disk never filled ({refused})"
    for answer in refused["Orthanc"] + refused["own port"]:
        assert "full" in answer.json()["error"] and "nothing was changed" in answer.json()["error"]
    claim = own.put(f"/workitems/{before[1]}/state", json=state_change("IN PROGRESS", generate_uid()),
                    headers=DICOM_JSON)
    assert claim.status_code in (200, 507), claim.text
    # reads go on, and what was there is intact
    assert server.client.get(f"{ROOT}/workitems", params={"PatientID": "KEPT-*", "includefield": "all"}
                             ).json()[:1] == kept[:1]
    accepted_while_full = [p for p in server.client.get(f"{ROOT}/workitems", params={"PatientID": "FULL-*"}).json()]
    assert server.client.get("/system").status_code == 200

    free(filler)
    with sqlite3.connect(f"file:{server.data_dir / 'ai-orchestrator.sqlite'}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    for client, base in ((server.client, ROOT), (own, "")):
        again = client.post(f"{base}/workitems", json=new_workitem(patient_id="ROOM-AGAIN",
                                                                   label="external-engine").to_json_dict(),
                            headers=DICOM_JSON)
        assert again.status_code == 201, again.text
    assert own.put(f"/workitems/{before[0]}/state", headers=DICOM_JSON, json={
        **state_change("COMPLETED", tuid), **completion_attributes().to_json_dict()}).status_code == 200
    after = server.client.get(f"{ROOT}/workitems", params={"PatientID": "KEPT-*", "includefield": "all"}).json()
    assert [value(i, "00080018") for i in after] == before
    # what was acknowledged while full is there; what was refused is not
    assert len(server.client.get(f"{ROOT}/workitems", params={"PatientID": "FULL-*"}).json()) == \
        len(accepted_while_full)
    own.close()


# -- DICOM a model cannot read ---------------------------------------------------------------------------------

def _pixel_less(datasets):
    del datasets[1].PixelData
    return datasets


def _truncated(datasets):
    datasets[1].PixelData = datasets[1].PixelData[: len(datasets[1].PixelData) // 3]
    return datasets


def _corrupt(datasets):
    """JPEG Baseline declared, the fragments garbage: Orthanc stores it, no decoder can read it."""
    from pydicom.encaps import encapsulate

    broken = datasets[1]
    broken.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    broken.PixelData = encapsulate([b"\xff\xd8\xff\xe0 certainly not a JPEG " * 10])
    broken["PixelData"].VR = "OB"
    broken.BitsAllocated = broken.BitsStored = 8
    broken.HighBit = 7
    return datasets


@pytest.fixture(scope="module")
def reading_orthanc(tmp_path_factory) -> Iterator[OrthancServer]:
    """The built-in models do not take MR, so the QUICK test model reads these; it loads every slice's pixels."""
    models = tmp_path_factory.mktemp("pixel-models")
    (models / "reads_pixels.py").write_text(READS_PIXELS)
    with OrthancServer(tmp_path_factory.mktemp("orthanc-dicom-faults"),
                       extra_env={"AI_ORCHESTRATOR_MODELS_DIR": str(models)}) as server:
        yield server


READS_PIXELS = '''
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from ai_orchestrator.modeling.api import Measurement, ModelResult, ModelSpec


def predict(volume, device, context):
    return ModelResult(measurements=(Measurement(codes.SCT.Volume, float(volume.hu.size) * volume.voxel_volume_ml,
                                                 Code("ml", "UCUM", "milliliter")),))


MODEL = ModelSpec(name="reads-pixels", version="1", algorithm=Code("READS", "99TEST", "Reads every pixel"),
                  applies_to={"Modality": "^CT$"}, predict=predict, outputs=frozenset({"SR"}))
'''


@pytest.mark.parametrize("fault", [_pixel_less, _truncated, _corrupt], ids=["pixel-less", "truncated", "corrupt"])
def test_dicom_the_model_cannot_read_ends_canceled_with_the_reason_and_the_next_study_completes(
        reading_orthanc, fault, tmp_path):
    from ai_orchestrator.phantom import make_chest_phantom

    patient = f"BAD{generate_uid()[-8:]}"
    phantom = make_chest_phantom(slices=6, rows=32, patient_id=patient)
    datasets = fault(phantom.datasets)
    if fault is _corrupt:  # storescu offers what it can re-encode; the bytes go to Orthanc as they are by REST
        upload_rest(reading_orthanc.client, datasets)
    else:
        assert storescu(reading_orthanc.dicom_port, datasets, tmp_path / "bad") == 0  # Orthanc takes it
    item = wait_for(lambda: next((i for i in workitems_of(reading_orthanc.client, patient)
                                  if value(i, "00741000") in FINAL), None), timeout=120, interval=0.25)
    assert value(item, "00741000") == "CANCELED"
    reason = value(item["00741002"]["Value"][0], "00741238")
    assert reason and "failed after 1 attempt(s)" in reason, reason  # bad data: not tried again
    assert result_series(reading_orthanc, phantom.study_uid) == []
    good = make_chest_phantom(slices=6, rows=32, patient_id=patient + "OK")
    assert storescu(reading_orthanc.dicom_port, good.datasets, tmp_path / "good") == 0
    done = wait_for(lambda: next((i for i in workitems_of(reading_orthanc.client, patient + "OK")
                                  if value(i, "00741000") in FINAL), None), timeout=120, interval=0.25)
    assert value(done, "00741000") == "COMPLETED"


# A site's own Lua filter that keeps POST /instances off Orthanc's REST API (C-STORE only): the plugin's loopback
# store (gateway/loopback.py) is refused with a 403.
REFUSE_REST_STORES = """
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  return not (method == 'POST' and uri == '/instances')
end
"""


def test_a_refused_loopback_store_stores_in_process_and_loses_no_result(tmp_path):
    lua = tmp_path / "refuse-rest-stores.lua"
    lua.write_text(REFUSE_REST_STORES)
    env = {"AI_ORCHESTRATOR_MODELS_DIR": str(MODELS_DIR), "ORTHANC_SETTINGS": json.dumps({"LuaScripts": [str(lua)]})}
    with OrthancServer(tmp_path / "data", extra_env=env) as server:
        studies = []
        for n in range(2):  # the first is refused over HTTP; the second no longer tries
            patient, study_uid = f"LOOP{n}{generate_uid()[-8:]}", generate_uid()
            datasets = instances("MR_small.dcm", count=1, patient_id=patient, study_uid=study_uid, body_part="QUICK")
            assert storescu(server.dicom_port, datasets, tmp_path / f"upload{n}") == 0
            item = wait_for(lambda p=patient: next((i for i in workitems_of(server.client, p)
                                                    if value(i, "00741000") in FINAL), None), timeout=120)
            assert value(item, "00741000") == "COMPLETED", item.get("00741002")
            studies.append(study_uid)
        assert server.client.post("/instances", content=to_bytes(datasets[0])).status_code == 403  # the filter
        for study_uid in studies:
            [sr] = result_series(server, study_uid)
            assert sr["MainDicomTags"]["Modality"] == "SR"
        store = server.client.get(f"{ROOT}/system").json()["ResultStore"]
        assert store["Mode"].startswith("in-process"), store
        assert store["Stored"] == {"Loopback": 0, "InProcess": 2}, store
        assert "HTTP 403" in store["LastFallback"], store
        assert server.log().count("was refused") == 1
