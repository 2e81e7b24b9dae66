"""What the running Orthanc offers, used where it exists: labels (Orthanc 1.12), KeepAliveTimeout (1.11.3), the
Python plugin's AllowThreads (4.3, detected; left off in the shipped configuration); a clean exit on SIGTERM.

The same tests run on Debian 12 (Orthanc 1.10.1, Python plugin 4.0) with `make test` and on Debian 13 (Orthanc
1.12.7, plugin 5.0) with `make test-debian13`. What each platform should do is read from Orthanc's own answers
(``/system``, ``/plugins/python``), independently of the plugin's start-up detection, which they check.
"""

from __future__ import annotations

import http.client
import re
import signal
import time

import pytest
from pydicom.uid import generate_uid

from tests.integration.studies import instances, upload_rest, wait_for, workitem_states
from tests.integration.workitems import ROOT, Ups, completion_attributes
from tests.orthanc_server import OrthancServer

NO_LABELS_LOG = "this Orthanc has no labels"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


@pytest.fixture(scope="module")
def versions(orthanc) -> dict[str, tuple[int, ...]]:
    return {"orthanc": _version(orthanc.client.get("/system").json()["Version"]),
            "python_plugin": _version(orthanc.client.get("/plugins/python").json()["Version"])}


@pytest.fixture(scope="module")
def capabilities(orthanc) -> dict:
    return orthanc.client.get(f"{ROOT}/system").json()["Capabilities"]


def _study_labels(client, study_id: str) -> set[str]:
    answer = client.get(f"/studies/{study_id}/labels")
    assert answer.status_code == 200, answer.text
    return set(answer.json())


def _found_with_label(client, label: str) -> set[str]:
    answer = client.post("/tools/find", json={"Level": "Study", "Query": {}, "Labels": [label]})
    assert answer.status_code == 200, answer.text
    return set(answer.json())


def test_capabilities_are_what_the_running_orthanc_offers(versions, capabilities):
    assert capabilities["OrthancLabels"] is (versions["orthanc"] >= (1, 12, 0))
    assert capabilities["KeepAliveTimeout"] is (versions["orthanc"] >= (1, 11, 3))
    assert _version(capabilities["PythonPluginVersion"]) == versions["python_plugin"]  # from Debian's file name
    assert capabilities["SdkCallsReleaseGil"] is False  # the shipped configuration leaves AllowThreads off


def test_an_idle_connection_stays_usable_where_keep_alive_timeout_exists(orthanc, capabilities):
    connection = http.client.HTTPConnection("127.0.0.1", orthanc.http_port, timeout=10)
    try:
        connection.request("GET", "/system")
        assert connection.getresponse().read()
        time.sleep(2.5)  # longer than the ~1 s that Orthanc keeps an idle connection without the option
        if capabilities["KeepAliveTimeout"]:
            connection.request("GET", "/system")
            answer = connection.getresponse()
            assert answer.status == 200 and answer.read()
        else:  # Orthanc 1.10: closed after ~1 s, which is why this project's clients expire theirs after 0.5 s
            with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
                connection.request("GET", "/system")
                connection.getresponse().read()
    finally:
        connection.close()


def _pipeline_study(orthanc) -> tuple[str, str, str]:
    """A study that gets one workitem for an external engine; answers (patient, Orthanc study id, workitem)."""
    patient = f"L{generate_uid()[-10:]}"
    study_id = upload_rest(orthanc.client, instances("MR_small.dcm", count=2, patient_id=patient,
                                                     study_uid=generate_uid()))
    [uid] = wait_for(lambda: list(workitem_states(orthanc.client, patient)))
    return patient, study_id, uid


def test_each_study_carries_its_ai_state_as_a_label(orthanc, capabilities):
    if not capabilities["OrthancLabels"]:
        pytest.skip("Orthanc before 1.12 has no labels: test_labels_are_skipped_and_said_once covers it")
    client, ups = orthanc.client, Ups(orthanc.client)

    patient, done, uid = _pipeline_study(orthanc)
    wait_for(lambda: _study_labels(client, done) == {"ai-scheduled"})
    assert done in _found_with_label(client, "ai-scheduled")
    tuid = generate_uid()
    assert ups.change_state(uid, "IN PROGRESS", tuid).status_code == 200
    assert ups.change_state(uid, "COMPLETED", tuid, completion_attributes()).status_code == 200
    wait_for(lambda: _study_labels(client, done) == {"ai-completed"})
    assert done in _found_with_label(client, "ai-completed")
    assert done not in _found_with_label(client, "ai-scheduled")

    _, failed, uid = _pipeline_study(orthanc)
    assert ups.cancel_request(uid, "no engine for it").status_code == 202
    wait_for(lambda: _study_labels(client, failed) == {"ai-failed"})
    assert _found_with_label(client, "ai-failed") >= {failed}

    # a label of the user's own is left alone; the AI label follows new work on the study
    assert client.put(f"/studies/{done}/labels/reviewed").status_code == 200
    study_uid = client.get(f"/studies/{done}").json()["MainDicomTags"]["StudyInstanceUID"]
    upload_rest(client, instances("MR_small.dcm", count=1, patient_id=patient, study_uid=study_uid))
    wait_for(lambda: _study_labels(client, done) == {"reviewed", "ai-scheduled"})


def test_labels_are_skipped_and_said_once(orthanc, capabilities):
    if capabilities["OrthancLabels"]:
        pytest.skip("this Orthanc has labels: test_each_study_carries_its_ai_state_as_a_label covers it")
    _, study_id, uid = _pipeline_study(orthanc)
    ups, tuid = Ups(orthanc.client), generate_uid()
    assert ups.change_state(uid, "IN PROGRESS", tuid).status_code == 200
    assert ups.change_state(uid, "COMPLETED", tuid, completion_attributes()).status_code == 200
    assert "Labels" not in orthanc.client.get(f"/studies/{study_id}").json()
    log = orthanc.log()
    assert log.count(NO_LABELS_LOG) == log.count("AI orchestrator ready"), "said once per start, not per study"
    assert "labelling" not in log


def test_allow_threads_is_used_where_the_plugin_has_it_and_exit_stays_clean(tmp_path, versions):
    """With "Python": {"AllowThreads": true} (the plugin releases the GIL in SDK calls from 4.3 on), the plugin
    serves and stops as without it. Python plugin 5.0 crashed Orthanc (SIGSEGV) at exit when it held the last
    reference to a REST callback."""
    server = OrthancServer(tmp_path / "data", extra_env={"ORTHANC_SETTINGS": '{"Python": {"AllowThreads": true}}'})
    server.start()
    try:
        system = server.client.get(f"{ROOT}/system")
        assert system.status_code == 200
        releases_gil = versions["python_plugin"] >= (4, 3)
        assert system.json()["Capabilities"]["SdkCallsReleaseGil"] is releases_gil
        # results need the loopback only while orthanc.* calls hold the GIL
        assert system.json()["ResultStore"]["Mode"] == ("in-process" if releases_gil else "loopback")
        assert server.client.get(f"{ROOT}/no-such-route").status_code == 404
    finally:
        code = server.stop(signal.SIGTERM)
        server.client.close()
    assert code == 0, server.log()[-3000:]
