"""Hand-picked hostile requests on both front doors of a real Orthanc: each gets a clear 4xx, and nothing changes.

On top of the fuzzer (test_openapi.py), what a fuzzer driven by the description rarely builds: malformed and deeply
nested JSON, wrong VRs, oversized bodies and headers, invalid UIDs, SQL and path-traversal strings in keys, values
and paths, AE titles with control characters, and floods of the WebSocket channel. "Nothing changes" is checked on
a digest of every workitem (``GET /ai-orchestrator/workitems?includefield=all``) and of the subscription tables,
taken before and after each request, on an Orthanc with no in-process performer (``Workers: 0``) so that only the
requests could change anything.

Orthanc 1.10's HTTP server cuts a path at a percent-encoded NUL (``A%00B`` reaches the plugin as ``A``) before any
plugin sees it, so NUL in a path is only tried on the orchestrator's own port, which refuses it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from ai_orchestrator.ups.events import GLOBAL_WORKLIST_UID
from tests.integration.studies import wait_for
from tests.integration.workitems import DICOM_JSON, ROOT, new_workitem, state_change
from tests.orthanc_server import OrthancServer

GLOBAL = GLOBAL_WORKLIST_UID


@pytest.fixture(scope="module")
def quiet(tmp_path_factory) -> Iterator[OrthancServer]:
    """Orthanc whose store only requests change: no in-process performer, no studies. A few workitems and one
    subscription are there from the start, so that a request that wrongly changed or deleted them would show."""
    env = {"AI_ORCHESTRATOR_SETTINGS": json.dumps({"Workers": 0})}
    with OrthancServer(tmp_path_factory.mktemp("orthanc-hostile"), extra_env=env) as server:
        with httpx.Client(base_url=server.own_port_url, timeout=30) as own:
            wait_for(lambda: _answers(own), timeout=30)
        for n in range(3):
            body = new_workitem(patient_id=f"HOSTILE-{n}", label="external-engine").to_json_dict()
            answer = server.client.post(f"{ROOT}/workitems", json=body, headers=DICOM_JSON)
            assert answer.status_code == 201, answer.text
        in_progress = new_workitem(patient_id="HOSTILE-IP", label="external-engine")
        assert server.client.post(f"{ROOT}/workitems", json=in_progress.to_json_dict(),
                                  headers=DICOM_JSON).status_code == 201
        assert server.client.put(f"{ROOT}/workitems/{in_progress.SOPInstanceUID}/state",
                                 json=state_change("IN PROGRESS", generate_uid()), headers=DICOM_JSON).status_code == 200
        assert server.client.post(f"{ROOT}/workitems/{GLOBAL}/subscribers/KEEPER").status_code == 201
        server.in_progress_uid = str(in_progress.SOPInstanceUID)  # type: ignore[attr-defined]
        yield server


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/workitems", params={"limit": "1"}).status_code == 200
    except httpx.TransportError:
        return False


def digest(server: OrthancServer) -> str:
    """Every workitem as the API answers it, and the subscription tables as stored."""
    answer = server.client.get(f"{ROOT}/workitems", params={"includefield": "all", "limit": "1000"})
    assert answer.status_code == 200, answer.text
    with sqlite3.connect(f"file:{server.data_dir / 'ai-orchestrator.sqlite'}?mode=ro", uri=True) as db:
        subscriptions = db.execute("SELECT ae_title, scope, deletion_lock, filter, suspended FROM subscriptions "
                                   "ORDER BY 1, 2").fetchall()
        reports = db.execute("SELECT e.id, e.ae_title, e.uid, r.report FROM subscriber_events AS e "
                             "JOIN event_reports AS r ON r.id = e.report_id ORDER BY e.id").fetchall()
        tables = db.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()
    return hashlib.sha256(answer.content + repr((subscriptions, reports, tables)).encode()).hexdigest()


@dataclass(frozen=True)
class Hostile:
    """One hostile request: method, path under the door's UPS-RS base (``/workitems...``, or a plugin route for
    Orthanc's door), and what the door must answer."""

    name: str
    method: str
    path: str
    statuses: frozenset[int]
    body: bytes | None = None
    params: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    doors: tuple[str, ...] = ("orthanc", "own")


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _workitem(**attributes: Any) -> bytes:
    """A Create body: a valid workitem with attributes overridden (DICOM JSON keys)."""
    body = new_workitem(patient_id="HOSTILE-NEW", label="hostile").to_json_dict()
    body.update(attributes)
    return _json(body)


def _nested_sequences(levels: int) -> dict:
    leaf: dict = {"00080100": {"vr": "SH", "Value": ["X"]}}
    for _ in range(levels):
        leaf = {"00404018": {"vr": "SQ", "Value": [leaf]}}
    return leaf


BAD_REQUEST, NOT_FOUND = frozenset({400}), frozenset({404})
WI = "1.2.826.0.1.3680043.8.498.1"  # a valid UID no workitem has
STATE = {"00741000": {"vr": "CS", "Value": ["IN PROGRESS"]}, "00081195": {"vr": "UI", "Value": ["1.2.3.4"]}}
SQL = "'; DROP TABLE workitems; --"
CASES = [
    # malformed and deeply nested JSON
    Hostile("not JSON", "POST", "/workitems", BAD_REQUEST, b"{not json"),
    Hostile("truncated JSON", "POST", "/workitems", BAD_REQUEST, _workitem()[:-7]),
    Hostile("not UTF-8", "POST", "/workitems", BAD_REQUEST, b'{"00100020": {"vr": "LO", "Value": ["\xff\xfe"]}}'),
    Hostile("JSON with NaN", "POST", "/workitems", BAD_REQUEST,
            _workitem()[:-1] + b', "00741002": {"vr": "SQ", "Value": [{"00741004": {"vr": "DS", "Value": [NaN]}}]}}'),
    Hostile("two datasets", "POST", "/workitems", BAD_REQUEST, b"[" + _workitem() + b"," + _workitem() + b"]"),
    Hostile("a JSON string", "POST", "/workitems", BAD_REQUEST, b'"SCHEDULED"'),
    Hostile("100,000 nested arrays", "POST", "/workitems", BAD_REQUEST, b"[" * 100_000 + b"]" * 100_000),
    Hostile("1,000 nested arrays on a state change", "PUT", f"/workitems/{WI}/state", BAD_REQUEST,
            b"[" * 1000 + b"]" * 1000),
    Hostile("1,000 nested objects on an update", "POST", f"/workitems/{WI}", BAD_REQUEST,
            b'{"a":' * 1000 + b"1" + b"}" * 1000),
    Hostile("20 nested sequences", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"00741210": {"vr": "SQ", "Value": [_nested_sequences(20)]}})),
    Hostile("nested arrays on a cancel request", "POST", f"/workitems/{WI}/cancelrequest", BAD_REQUEST,
            b"[" * 5000 + b"]" * 5000),
    Hostile("nested arrays on a run", "POST", "/studies/0000/run", BAD_REQUEST, b"[" * 5000 + b"]" * 5000,
            doors=("orthanc",)),
    Hostile("a run body that is no JSON", "POST", "/studies/0000/run", BAD_REQUEST, b"model=ct", doors=("orthanc",)),
    # wrong VRs
    Hostile("PatientName as SQ", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"00100010": {"vr": "SQ", "Value": [{}]}})),
    Hostile("ProcedureStepState as US", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"00741000": {"vr": "US", "Value": [1]}})),
    Hostile("a VR that does not exist", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"00100020": {"vr": "ZZ", "Value": ["X"]}})),
    Hostile("no VR", "POST", "/workitems", BAD_REQUEST, _workitem(**{"00100020": {"Value": ["X"]}})),
    Hostile("LO of 100,000 characters", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"00100020": {"vr": "LO", "Value": ["A" * 100_000]}})),
    Hostile("CS in lower case", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"00741200": {"vr": "CS", "Value": ["medium"]}})),
    Hostile("DT that is no date", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"00404005": {"vr": "DT", "Value": ["yesterday"]}})),
    Hostile("DS that is no number", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"00741002": {"vr": "SQ", "Value": [{"00741004": {"vr": "DS", "Value": ["fifty"]}}]}})),
    Hostile("US out of range", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"00280010": {"vr": "US", "Value": [70000]}})),
    Hostile("a sequence item that is a string", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"00404018": {"vr": "SQ", "Value": ["CODE"]}})),
    Hostile("InlineBinary that is not base64", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"00420011": {"vr": "OB", "InlineBinary": "!!not base64!!"}})),
    Hostile("InlineBinary on a text VR", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"00100020": {"vr": "LO", "InlineBinary": base64.b64encode(b"X").decode()}})),
    Hostile("BulkDataURI to a local file", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"00420011": {"vr": "OB", "BulkDataURI": "file:///etc/passwd"}})),
    Hostile("a key that is no tag", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"PatientID": {"vr": "LO", "Value": ["X"]}})),
    Hostile("wrong VR in an update", "POST", f"/workitems/{WI}", BAD_REQUEST,
            _json({"00741002": {"vr": "LO", "Value": ["50"]}})),
    # oversized bodies and headers
    Hostile("a 65 MiB body", "POST", "/workitems", frozenset({413}), b" " * (65 * 1024 * 1024)),
    Hostile("a 100 KB header", "GET", "/workitems", BAD_REQUEST | {413, 431}, headers={"X-Big": "a" * 100_000}),
    Hostile("a 40 KB query", "GET", "/workitems", BAD_REQUEST | {413, 414},
            params={"SOPInstanceUID": "\\".join(f"1.2.{n}" for n in range(4000))}),
    # invalid UIDs
    Hostile("SOPInstanceUID with letters", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"00080018": {"vr": "UI", "Value": ["1.2.abc"]}})),
    Hostile("SOPInstanceUID with a leading zero", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"00080018": {"vr": "UI", "Value": ["1.02.3"]}})),
    Hostile("SOPInstanceUID of 65 characters", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"00080018": {"vr": "UI", "Value": ["1." + "2" * 63]}})),
    Hostile("StudyInstanceUID that is SQL", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"0020000D": {"vr": "UI", "Value": [SQL]}})),
    Hostile("a workitem UID that is no UID", "GET", "/workitems/not-a-uid", NOT_FOUND),
    Hostile("a state change of no UID", "PUT", "/workitems/1.2.abc/state", NOT_FOUND, _json(STATE)),
    Hostile("a Transaction UID that is SQL", "PUT", f"/workitems/{WI}/state", BAD_REQUEST,
            _json({**STATE, "00081195": {"vr": "UI", "Value": [SQL]}})),
    Hostile("?workitem= that is no UID", "POST", "/workitems", BAD_REQUEST, _workitem(),
            params={"workitem": "1.2'--"}, doors=("own",)),
    Hostile("a subscription to no UID", "POST", "/workitems/1.2.abc/subscribers/ME", NOT_FOUND),
    Hostile("a search by a UID list with letters", "GET", "/workitems", BAD_REQUEST,
            params={"SOPInstanceUID": "1.2.3\\1.2.x"}),
    # SQL and path-traversal strings in keys, values and paths
    Hostile("SQL as a search key", "GET", "/workitems", BAD_REQUEST, params={"PatientID' OR 1=1 --": "X"}),
    Hostile("SQL in includefield", "GET", "/workitems", BAD_REQUEST, params={"includefield": SQL}),
    Hostile("SQL as offset", "GET", "/workitems", BAD_REQUEST, params={"offset": "0; DELETE FROM workitems"}),
    Hostile("an offset past SQLite's integers", "GET", "/workitems", BAD_REQUEST,
            params={"offset": "99999999999999999999999"}),
    Hostile("a superscript digit as limit", "GET", "/workitems", BAD_REQUEST, params={"limit": "\u00b2"}),
    Hostile("SQL in a date range", "GET", "/workitems", BAD_REQUEST,
            params={"ScheduledProcedureStepStartDateTime": "2020' OR '1'='1"}),
    Hostile("SQL as a priority", "POST", "/workitems", BAD_REQUEST,
            _workitem(**{"00741200": {"vr": "CS", "Value": ["HIGH' OR 1=1"]}})),
    Hostile("SQL as a DICOM JSON key", "POST", "/workitems", BAD_REQUEST, _workitem(**{SQL: {"vr": "LO"}})),
    Hostile("SQL in a workitem path", "GET", "/workitems/1'%20OR%20'1'%3D'1", NOT_FOUND),
    Hostile("SQL in a state path", "PUT", "/workitems/x%3BDROP%20TABLE%20workitems/state", NOT_FOUND, _json(STATE)),
    Hostile("SQL as an AE title", "POST", f"/workitems/{GLOBAL}/subscribers/'%3B%20DROP%20TABLE%20subscriptions%3B--",
            BAD_REQUEST),
    Hostile("SQL as an AE title to unsubscribe", "DELETE",
            f"/workitems/{GLOBAL}/subscribers/KEEPER'%20OR%20'1'%3D'1", BAD_REQUEST),
    Hostile("SQL as a study", "GET", "/studies/'%20OR%201%3D1--/workitems", NOT_FOUND),
    Hostile("traversal as a workitem UID", "GET", "/workitems/..%2F..%2F..%2Fetc%2Fpasswd", NOT_FOUND),
    Hostile("traversal as a dotted workitem UID", "GET", "/workitems/%2E%2E", NOT_FOUND),
    Hostile("traversal as an AE title", "POST", f"/workitems/{GLOBAL}/subscribers/..%2F..%2Fetc", NOT_FOUND),
    Hostile("traversal as a study", "GET", "/studies/..%2F..%2Fsystem/workitems", NOT_FOUND),
    Hostile("traversal as a model", "POST", "/studies/0000/run", NOT_FOUND,
            _json({"model": "../../../../etc/passwd"}), doors=("orthanc",)),
    Hostile("traversal in includefield", "GET", "/workitems", BAD_REQUEST, params={"includefield": "../../etc/passwd"}),
    Hostile("traversal as a search key", "GET", "/workitems", BAD_REQUEST, params={"../../etc/passwd": "x"}),
    # AE titles with control characters
    *[Hostile(f"AE title with {name}", method, f"/workitems/{GLOBAL}/subscribers/A{escaped}B{tail}", BAD_REQUEST)
      for name, escaped in (("CR", "%0D"), ("LF", "%0A"), ("TAB", "%09"), ("BEL", "%07"), ("ESC", "%1B"),
                            ("DEL", "%7F"))
      for method, tail in (("POST", ""), ("DELETE", ""), ("POST", "/suspend"))],
    # Orthanc's HTTP server turns a backslash in a path into a slash: there it is a path that names no route
    *[Hostile(f"AE title with a backslash{tail}", method, f"/workitems/{GLOBAL}/subscribers/A%5CB{tail}",
              BAD_REQUEST | NOT_FOUND) for method, tail in (("POST", ""), ("DELETE", ""), ("POST", "/suspend"))],
    Hostile("AE title with NUL", "POST", f"/workitems/{GLOBAL}/subscribers/A%00B", BAD_REQUEST, doors=("own",)),
    Hostile("AE title of 17 characters", "POST", f"/workitems/{GLOBAL}/subscribers/{'A' * 17}", BAD_REQUEST),
    Hostile("AE title of spaces", "POST", f"/workitems/{GLOBAL}/subscribers/%20%20", BAD_REQUEST),
    Hostile("AE title outside ASCII", "POST", f"/workitems/{GLOBAL}/subscribers/%C3%89CHO", BAD_REQUEST),
]


def _door(server: OrthancServer, door: str) -> tuple[httpx.Client, str]:
    if door == "orthanc":
        return server.client, ROOT
    return httpx.Client(base_url=server.own_port_url, timeout=60), ""


@pytest.mark.parametrize("case, door", [(case, door) for case in CASES for door in case.doors],
                         ids=[f"{case.name}-{door}" for case in CASES for door in case.doors])
def test_a_hostile_request_gets_a_clear_4xx_and_changes_nothing(quiet, case, door):
    client, base = _door(quiet, door)
    before = digest(quiet)
    answer = client.request(case.method, base + case.path, content=case.body, params=case.params,
                            headers={"Content-Type": "application/dicom+json", **case.headers})
    assert answer.status_code in case.statuses, f"{case.name}: {answer.status_code} {answer.text[:300]}"
    assert answer.text.strip(), "a refusal says why"
    assert digest(quiet) == before, f"{case.name} was refused but changed the store"
    assert quiet.client.get(f"{ROOT}/system").status_code == 200  # Orthanc and the plugin still serve
    if door == "own":
        client.close()


@pytest.mark.parametrize("door", ["orthanc", "own"])
def test_sql_in_search_values_and_the_in_progress_items_lock_is_only_data(quiet, door):
    """SQL in a match value is a value to match: no match, every workitem still there, the lock still holds."""
    client, base = _door(quiet, door)
    before = digest(quiet)
    for key in ("PatientID", "PatientName", "ProcedureStepLabel", "WorklistLabel", "00100020"):
        for text in (SQL, "x' OR '1'='1", "*' OR 1=1 --", '") OR 1=1 --', "%' --"):
            answer = client.get(f"{base}/workitems", params={key: text})
            assert answer.status_code == 200 and answer.json() == [], (key, text, answer.text)
    everything = client.get(f"{base}/workitems", params={"PatientID": "HOSTILE-*", "includefield": "all"})
    assert len(everything.json()) == 4
    assert all("00081195" not in item for item in everything.json())  # the Transaction UID never leaves the store
    guessed = client.put(f"{base}/workitems/{quiet.in_progress_uid}/state",
                         content=_json({"00741000": {"vr": "CS", "Value": ["CANCELED"]},
                                        "00081195": {"vr": "UI", "Value": ["1.2.3"]}}), headers=DICOM_JSON)
    assert guessed.status_code == 400 and "Transaction UID" in guessed.text
    assert digest(quiet) == before
    if door == "own":
        client.close()


def test_the_websocket_channel_refuses_what_it_should_and_survives_floods(quiet):
    """Floods of the event channel: upgrades for AE titles nobody subscribed, bad AE titles, a subscriber's
    connection replaced a hundred times, thousands of client frames and oversized ones. Each refusal is a clear
    4xx (or a close code), nothing changes, and the channel still delivers afterwards."""
    events = f"ws://127.0.0.1:{quiet.events_port}/ws/subscribers"
    assert quiet.client.post(f"{ROOT}/workitems/{GLOBAL}/subscribers/FLOODED").status_code == 201
    with connect(f"{events}/FLOODED"):  # the subscription's first reports, then quiet
        wait_for(lambda: _drained(quiet, "FLOODED"), timeout=30)
    before = digest(quiet)

    def refused(url: str) -> int:
        with pytest.raises(InvalidStatus) as refusal:
            connect(url, open_timeout=30)
        return refusal.value.response.status_code

    statuses = [refused(f"{events}/NOSUB{n}") for n in range(100)]  # nobody subscribed these
    assert set(statuses) == {404}
    for bad in ("A%0DB", "A%00B", "A%5CB", "A" * 17, "%20%20", "%C3%89"):
        assert refused(f"{events}/{bad}") == 400, bad

    # a hundred connections of one subscriber at once: each newer one replaces the older
    closes: list[int | None] = []
    opened = threading.Semaphore(0)
    lock = threading.Lock()

    def connect_and_wait() -> None:
        try:
            with connect(f"{events}/FLOODED", open_timeout=30) as replaced:
                opened.release()
                try:
                    replaced.recv(timeout=60)
                except ConnectionClosed:
                    pass
                with lock:
                    closes.append(replaced.close_code)
        except (ConnectionClosed, TimeoutError, OSError):
            opened.release()
            with lock:
                closes.append(None)

    threads = [threading.Thread(target=connect_and_wait) for _ in range(100)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert opened.acquire(timeout=60)
    with connect(f"{events}/FLOODED") as last:  # the newest replaces the one still open
        for thread in threads:
            thread.join(60)
        assert len(closes) == 100 and set(closes) <= {1008, None}, set(closes)
        for n in range(5000):  # a client's frames are ignored, however many
            last.send(f"frame {n}")
        assert quiet.client.get(f"{ROOT}/system").status_code == 200
        assert digest(quiet) == before
        # the channel still delivers: a new workitem's State Report arrives on it
        uid = generate_uid()
        body = new_workitem(uid, patient_id="WS-FLOOD", label="external-engine").to_json_dict()
        assert quiet.client.post(f"{ROOT}/workitems", json=body, headers=DICOM_JSON).status_code == 201
        report = json.loads(last.recv(timeout=30))
        assert report["00001000"]["Value"] == [uid] and report["00741000"]["Value"] == ["SCHEDULED"]
        last.send("x" * 100_000)  # one oversized frame closes the channel with 1009 (message too big)
        with pytest.raises(ConnectionClosed):
            while True:
                last.recv(timeout=10)
        assert last.close_code == 1009
    # Orthanc's door speaks no WebSocket: an upgrade there is a plain 4xx ("Connection: Upgrade" is no keep-alive:
    # Orthanc closes each connection after its answer, so none is reused)
    with httpx.Client(base_url=quiet.base_url, timeout=30,
                      limits=httpx.Limits(max_keepalive_connections=0)) as upgrades:
        for _ in range(20):
            answer = upgrades.get(f"{ROOT}/ws/subscribers/FLOODED",
                                  headers={"Connection": "Upgrade", "Upgrade": "websocket",
                                           "Sec-WebSocket-Version": "13",
                                           "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode()})
            assert answer.status_code == 404
    assert quiet.client.get(f"{ROOT}/system").status_code == 200


def _drained(server: OrthancServer, ae_title: str) -> bool:
    with sqlite3.connect(f"file:{server.data_dir / 'ai-orchestrator.sqlite'}?mode=ro", uri=True) as db:
        return db.execute("SELECT COUNT(*) FROM subscriber_events WHERE ae_title = ?", (ae_title,)).fetchone()[0] == 0
