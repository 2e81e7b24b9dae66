"""The orchestrator's own port against a real Orthanc: UPS-RS for standard clients and the WebSocket event channel."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from ai_orchestrator.phantom import make_chest_phantom
from ai_orchestrator.ups.events import GLOBAL_WORKLIST_UID, EventType
from tests.integration.studies import upload_rest, wait_for
from tests.integration.workitems import DICOM_JSON, ROOT, completion_attributes, new_workitem, state_change, value
from tests.orthanc_server import OrthancServer

FINAL = ("COMPLETED", "CANCELED")


@contextmanager
def own_port(server: OrthancServer, auth: tuple[str, str] | None = None) -> Iterator[httpx.Client]:
    """A client of the orchestrator's port, once it answers (it starts with Orthanc's ORTHANC_STARTED)."""
    with httpx.Client(base_url=server.own_port_url, auth=auth, timeout=30) as client:
        wait_for(lambda: _answers(client), timeout=30)
        yield client


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/workitems", params={"limit": "1"}).status_code in (200, 401)
    except httpx.TransportError:
        return False


def frames(channel: ClientConnection, until, timeout: float = 60) -> list[dict]:
    """Reports received until ``until(received)`` holds."""
    received: list[dict] = []
    deadline = time.monotonic() + timeout
    while not until(received):
        left = deadline - time.monotonic()
        assert left > 0, f"not all expected reports arrived within {timeout} s: {received}"
        received.append(json.loads(channel.recv(timeout=left)))
    return received


def event_type(report: dict) -> int:
    return report["00001002"]["Value"][0]


def subject(report: dict) -> str:
    return report["00001000"]["Value"][0]


def json_of(ds: Dataset) -> str:
    return json.dumps(ds.to_json_dict())


@pytest.fixture(scope="module")
def port(orthanc):
    with own_port(orthanc) as client:
        yield client


def test_a_standard_client_keeps_the_transaction_uid_in_the_query(orthanc, port):
    """Create with ?workitem=, claim, progress and final attributes by Update with the TUID in the query only."""
    uid, tuid = generate_uid(), generate_uid()
    body = new_workitem(label="external-engine")
    del body.SOPInstanceUID
    created = port.post("/workitems", params={"workitem": uid}, content=json_of(body), headers=DICOM_JSON)
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == f"{orthanc.own_port_url}/workitems/{uid}"
    assert port.put(f"/workitems/{uid}/state", content=json.dumps(state_change("IN PROGRESS", tuid)),
                    headers=DICOM_JSON).status_code == 200
    progress = Dataset()
    progress.ProcedureStepProgressInformationSequence = [Dataset()]
    progress.ProcedureStepProgressInformationSequence[0].ProcedureStepProgress = 50
    answer = port.post(f"/workitems/{uid}", params={"transaction-uid": tuid}, content=json_of(progress),
                       headers=DICOM_JSON)
    assert answer.status_code == 200, answer.text
    answer = port.post(f"/workitems/{uid}", params={"Transaction-uid": tuid},
                       content=json_of(completion_attributes()), headers=DICOM_JSON)
    assert answer.status_code == 200, answer.text
    wrong = port.post(f"/workitems/{uid}", params={"transaction": generate_uid()}, content=json_of(progress),
                      headers=DICOM_JSON)
    assert wrong.status_code == 400 and "Transaction UID" in wrong.text
    assert port.put(f"/workitems/{uid}/state", content=json.dumps(state_change("COMPLETED", tuid)),
                    headers=DICOM_JSON).status_code == 200
    # the same service and store behind Orthanc's routes
    item = orthanc.client.get(f"{ROOT}/workitems/{uid}").json()[0]
    assert value(item, "00741000") == "COMPLETED"
    assert item["00741002"]["Value"][0]["00741004"]["Value"] == [50]


@pytest.mark.parametrize("query", [lambda uid: {"AffectedSOPInstanceUID": uid}, lambda uid: {uid: ""}])
def test_create_takes_the_chosen_uid_in_every_query_form(port, query):
    uid = generate_uid()
    body = new_workitem(label="external-engine")
    del body.SOPInstanceUID
    assert port.post("/workitems", params=query(uid), content=json_of(body), headers=DICOM_JSON).status_code == 201
    assert port.get(f"/workitems/{uid}").status_code == 200


def test_a_global_subscriber_sees_the_state_reports_of_a_study_uploaded_after_it_subscribed(orthanc):
    watcher = f"W{generate_uid()[-10:]}"
    answer = orthanc.client.post(f"{ROOT}/workitems/{GLOBAL_WORKLIST_UID}/subscribers/{watcher}")
    assert answer.status_code == 201, answer.text
    url = answer.headers["Content-Location"]
    assert url == f"ws://127.0.0.1:{orthanc.events_port}/ws/subscribers/{watcher}"
    patient = f"WS{generate_uid()[-8:]}"
    with connect(url) as channel:
        upload_rest(orthanc.client, make_chest_phantom(slices=16, rows=96, patient_id=patient).datasets)
        ours: dict[str, list[str]] = {}
        patients: dict[str, str] = {}  # workitem UID -> PatientID, each looked up once

        def all_final(received: list[dict]) -> bool:
            if received and event_type(received[-1]) == EventType.STATE_REPORT:
                report = received[-1]
                uid = subject(report)
                if uid not in patients:
                    patients[uid] = value(orthanc.client.get(f"{ROOT}/workitems/{uid}").json()[0], "00100020")
                if patients[uid] == patient:
                    ours.setdefault(uid, []).append(report["00741000"]["Value"][0])
            return bool(ours) and all(states[-1] in FINAL for states in ours.values())

        frames(channel, all_final, timeout=120)
    assert ours and all(states == ["SCHEDULED", "IN PROGRESS", "COMPLETED"] for states in ours.values()), ours


def test_a_cancel_request_reaches_the_external_performers_channel(orthanc, port):
    uid, tuid = generate_uid(), generate_uid()
    assert port.post("/workitems", content=json_of(new_workitem(uid, label="external-engine")),
                     headers=DICOM_JSON).status_code == 201
    assert port.put(f"/workitems/{uid}/state", content=json.dumps(state_change("IN PROGRESS", tuid)),
                    headers=DICOM_JSON).status_code == 200
    subscribed = port.post(f"/workitems/{uid}/subscribers/ENGINE1")
    assert subscribed.status_code == 201
    with connect(subscribed.headers["Content-Location"]) as channel:
        first = frames(channel, lambda got: len(got) >= 1)[0]
        assert event_type(first) == EventType.STATE_REPORT and first["00741000"]["Value"] == ["IN PROGRESS"]
        reason = Dataset()
        reason.ReasonForCancellation = "wrong patient"
        assert orthanc.client.post(f"{ROOT}/workitems/{uid}/cancelrequest", content=json_of(reason)).status_code == 202
        [cancel] = frames(channel, lambda got: len(got) >= 1, timeout=10)
    assert event_type(cancel) == EventType.CANCEL_REQUESTED and subject(cancel) == uid
    assert cancel["00741238"]["Value"] == ["wrong patient"]
    assert cancel["00000110"]["vr"] == "US"


def test_bad_subscriptions_get_a_clear_4xx(orthanc, port):
    assert port.post("/workitems/1.2.3.999999/subscribers/X").status_code == 404
    assert port.post(f"/workitems/{GLOBAL_WORKLIST_UID}/subscribers/{'A' * 17}").status_code == 400
    assert port.post(f"/workitems/{GLOBAL_WORKLIST_UID}/subscribers/BAD%5CAE").status_code == 400
    assert port.post(f"/workitems/{GLOBAL_WORKLIST_UID}.1/subscribers/X").status_code == 400  # no match keys
    assert port.post(f"/workitems/{GLOBAL_WORKLIST_UID}.1/subscribers/X",
                     params={"NotAKeyword": "1"}).status_code == 400
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{orthanc.events_port}/ws/subscribers/{'B' * 17}")
    assert refused.value.response.status_code == 400


def test_client_frames_are_ignored_and_an_oversized_frame_closes_the_channel(orthanc, port):
    assert port.post(f"/workitems/{GLOBAL_WORKLIST_UID}/subscribers/TALKER").status_code == 201
    url = f"ws://127.0.0.1:{orthanc.events_port}/ws/subscribers/TALKER"
    with connect(url) as channel:
        channel.send("hello")  # ignored: the service keeps answering
        assert port.get("/workitems", params={"limit": "1"}).status_code == 200
        channel.send("x" * 200_000)
        with pytest.raises(ConnectionClosed):
            while True:
                channel.recv(timeout=10)
        assert channel.close_code == 1009
    assert port.get("/workitems", params={"limit": "1"}).status_code == 200


def test_across_a_restart_the_subscription_survives_and_kept_reports_arrive_after_restarted(tmp_path_factory):
    with OrthancServer(tmp_path_factory.mktemp("orthanc-restart"), stable_age=1) as server:
        with own_port(server) as client:
            assert client.post(f"/workitems/{GLOBAL_WORKLIST_UID}/subscribers/AWAY").status_code == 201
            uid = generate_uid()
            assert client.post("/workitems", content=json_of(new_workitem(uid, label="external-engine")),
                               headers=DICOM_JSON).status_code == 201
        server.restart()
        with own_port(server) as client, connect(f"ws://127.0.0.1:{server.events_port}/ws/subscribers/AWAY") as ch:
            received = frames(ch, lambda got: any(r.get("00741242", {}).get("Value") == ["RESTARTED"] for r in got))
            states = [(subject(r), r["00741000"]["Value"][0]) for r in received if event_type(r) == 1]
            assert (uid, "SCHEDULED") in states
            statuses = [r["00741242"]["Value"][0] for r in received if event_type(r) == EventType.SCP_STATUS_CHANGE]
            assert statuses[-2:] == ["GOING DOWN", "RESTARTED"]
            # still subscribed: a change after the restart arrives too
            tuid = generate_uid()
            assert client.put(f"/workitems/{uid}/state", content=json.dumps(state_change("IN PROGRESS", tuid)),
                              headers=DICOM_JSON).status_code == 200
            [report] = frames(ch, lambda got: len(got) >= 1, timeout=10)
            assert subject(report) == uid and report["00741000"]["Value"] == ["IN PROGRESS"]


def test_with_authentication_on_anonymous_requests_are_refused_on_http_and_websocket(tmp_path_factory):
    users = {"ORTHANC_USERNAME": "reader", "ORTHANC_PASSWORD": "s3cret"}
    with OrthancServer(tmp_path_factory.mktemp("orthanc-auth"), stable_age=1, extra_env=users) as server:
        with own_port(server) as anonymous:
            assert anonymous.get("/workitems").status_code == 401
        with own_port(server, auth=("reader", "wrong")) as wrong:
            assert wrong.get("/workitems").status_code == 401
        with own_port(server, auth=("reader", "s3cret")) as client:
            assert client.get("/workitems").status_code == 200
            assert client.post(f"/workitems/{GLOBAL_WORKLIST_UID}/subscribers/SECURE").status_code == 201
        url = f"ws://127.0.0.1:{server.events_port}/ws/subscribers/SECURE"
        with pytest.raises(InvalidStatus) as refused:
            connect(url)
        assert refused.value.response.status_code == 401
        token = "Basic " + base64.b64encode(b"reader:s3cret").decode()
        with connect(url, additional_headers={"Authorization": token}) as channel, \
                own_port(server, auth=("reader", "s3cret")) as client:
            uid = generate_uid()
            assert client.post("/workitems", content=json_of(new_workitem(uid, label="external-engine")),
                               headers=DICOM_JSON).status_code == 201
            [report] = frames(channel, lambda got: len(got) >= 1)
            assert event_type(report) == EventType.STATE_REPORT and subject(report) == uid


def test_percent_encoded_query_values_match_alike_on_both_front_doors(orthanc, port):
    patient = f"PCT^{generate_uid()[-6:]}"
    uid = generate_uid()
    assert port.post("/workitems", content=json_of(new_workitem(uid, patient_id=patient, label="external-engine")),
                     headers=DICOM_JSON).status_code == 201
    encoded = patient[:-2].replace("^", "%5E") + "%2A"  # PCT^12345* as a client encodes it
    for client, url in ((orthanc.client, f"{ROOT}/workitems?PatientID={encoded}"),
                        (port, f"/workitems?PatientID={encoded}")):
        found = client.get(url)
        assert found.status_code == 200 and [value(item, "00080018") for item in found.json()] == [uid], url
