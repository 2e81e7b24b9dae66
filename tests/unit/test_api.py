"""The UPS-RS REST adapter, called directly with Request values (no Orthanc)."""

import json

import pytest

from ai_orchestrator.http.messages import DICOM_JSON, Request
from ai_orchestrator.http.workitems import WorkitemsApi
from ai_orchestrator.ups.constants import Warnings
from ai_orchestrator.ups.sample import completion_attributes, sample_workitem

BASE = "http://orthanc.example:8042/ai-orchestrator"
TUID = "1.2.826.0.1.77"


@pytest.fixture
def api(service):
    return WorkitemsApi(service, service_name="test-svc")


def call(api, method, path, body=None, query=None, raw=None):
    payload = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    return api.handle(Request(method, path, query or {}, {"content-type": DICOM_JSON}, payload, BASE))


def body_of(response):
    return json.loads(response.body)


def create(api, body=None, query=None):
    response = call(api, "POST", "/workitems", body or sample_workitem(), query)
    assert response.status == 201, response.body
    return response.headers["Location"].rsplit("/", 1)[1]


def state_body(state, tuid=TUID, extra=None):
    return {"00741000": {"vr": "CS", "Value": [state]}, "00081195": {"vr": "UI", "Value": [tuid]}, **(extra or {})}


def test_create_answers_201_with_location_and_no_body(api):
    response = call(api, "POST", "/workitems", sample_workitem())
    assert response.status == 201 and response.body == b"" and "Warning" not in response.headers
    assert response.headers["Location"].startswith(f"{BASE}/workitems/")


def test_create_warning_header(api):
    response = call(api, "POST", "/workitems", [sample_workitem(with_type2=False)])  # one-element array
    assert response.status == 201
    assert response.headers["Warning"] == f"299 test-svc: {Warnings.CREATED_WITH_MODIFICATIONS}"


@pytest.mark.parametrize("query", [{"workitem": "1.2.3.9"}, {"1.2.3.9": ""}, {"AffectedSOPInstanceUID": "1.2.3.9"}])
def test_create_uid_conventions(api, query):
    assert create(api, query=query) == "1.2.3.9"


def test_create_uid_in_body_and_conflicts(api):
    body = {**sample_workitem(), "00080018": {"vr": "UI", "Value": ["1.2.3.8"]}}
    assert create(api, body) == "1.2.3.8"
    response = call(api, "POST", "/workitems", body)
    assert response.status == 409 and body_of(response)["status"] == "0111"
    response = call(api, "POST", "/workitems", sample_workitem(), {"workitem": "1.2.3.1", "1.2.3.2": ""})
    assert response.status == 400 and "1.2.3.1" in body_of(response)["error"]


@pytest.mark.parametrize("raw, words", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "exactly one dataset"),
    (b"\"text\"", "not a DICOM JSON dataset"),
    (b'{"00100020": {"vr": "LO", "Value": "P1"}}', "DICOM JSON"),
])
def test_bad_payloads_are_400_naming_the_problem(api, raw, words):
    response = call(api, "POST", "/workitems", raw=raw)
    assert response.status == 400 and words in body_of(response)["error"]


def test_create_failure_names_the_attribute_with_status(api):
    body = sample_workitem()
    del body["00741204"]
    response = call(api, "POST", "/workitems", body)
    assert response.status == 400
    assert "ProcedureStepLabel" in body_of(response)["error"] and body_of(response)["status"] == "0120"
    assert response.headers["Warning"].startswith("299 test-svc: ")


def test_retrieve_is_an_array_of_one_dataset_without_tuid(api):
    uid = create(api)
    assert call(api, "PUT", f"/workitems/{uid}/state", state_body("IN PROGRESS")).status == 200
    response = call(api, "GET", f"/workitems/{uid}")
    assert response.status == 200 and response.headers["Content-Type"] == DICOM_JSON
    [dataset] = body_of(response)
    assert dataset["00080018"]["Value"] == [uid] and dataset["00741000"]["Value"] == ["IN PROGRESS"]
    assert TUID not in response.body.decode()


def test_retrieve_unknown_is_404(api):
    response = call(api, "GET", "/workitems/1.2.404")
    assert response.status == 404 and body_of(response) == {"error": "Workitem 1.2.404 does not exist",
                                                            "status": "C307"}


@pytest.mark.parametrize("method, query, body_tuid", [
    ("POST", {"transaction-uid": TUID}, False), ("PUT", {"Transaction-uid": TUID}, False),
    ("POST", {"transaction": TUID}, False), ("POST", {}, True)])
def test_update_tuid_conventions(api, method, query, body_tuid):
    uid = create(api)
    call(api, "PUT", f"/workitems/{uid}/state", state_body("IN PROGRESS"))
    body = {"00741204": {"vr": "LO", "Value": ["renamed"]}}
    if body_tuid:
        body["00081195"] = {"vr": "UI", "Value": [TUID]}
    response = call(api, method, f"/workitems/{uid}", body, query)
    assert response.status == 200, response.body
    assert body_of(call(api, "GET", f"/workitems/{uid}"))[0]["00741204"]["Value"] == ["renamed"]


def test_update_errors(api):
    uid = create(api)
    call(api, "PUT", f"/workitems/{uid}/state", state_body("IN PROGRESS"))
    response = call(api, "POST", f"/workitems/{uid}", {"00741204": {"vr": "LO", "Value": ["x"]}})
    assert response.status == 400 and body_of(response)["status"] == "C301"
    assert Warnings.TUID_MISSING in response.headers["Warning"]
    response = call(api, "POST", f"/workitems/{uid}", {"00741204": {"vr": "LO", "Value": ["x"]}},
                    {"transaction-uid": "1.2.9"})
    assert response.status == 400 and Warnings.TUID_INCORRECT in body_of(response)["error"]
    assert call(api, "POST", "/workitems/1.2.404", {}, {}).status == 404


def test_state_changes_and_warnings(api):
    uid = create(api)
    path = f"/workitems/{uid}/state"
    assert call(api, "PUT", path, state_body("COMPLETED")).status == 409
    assert call(api, "PUT", path, {"00741000": {"vr": "CS", "Value": ["IN PROGRESS"]}}).status == 400
    assert call(api, "PUT", path, state_body("IN PROGRESS")).status == 200
    response = call(api, "PUT", path, state_body("IN PROGRESS", "1.2.9.9"))
    assert response.status == 409 and body_of(response)["status"] == "C302"
    response = call(api, "PUT", path, state_body("COMPLETED", "1.2.9.9"))
    assert response.status == 400 and body_of(response)["status"] == "C301"
    response = call(api, "PUT", path, state_body("COMPLETED"))
    assert response.status == 409 and body_of(response)["status"] == "C304"
    assert call(api, "PUT", path, state_body("COMPLETED", extra=completion_attributes())).status == 200
    response = call(api, "PUT", path, state_body("COMPLETED"))
    assert response.status == 200 and Warnings.ALREADY_COMPLETED in response.headers["Warning"]
    response = call(api, "PUT", path, {"00081195": {"vr": "UI", "Value": [TUID]}})
    assert response.status == 400 and "ProcedureStepState" in body_of(response)["error"]


def test_cancel_request(api):
    scheduled = create(api)
    assert call(api, "POST", f"/workitems/{scheduled}/cancelrequest").status == 202
    response = call(api, "POST", f"/workitems/{scheduled}/cancelrequest",
                    {"00741238": {"vr": "LT", "Value": ["again"]}})
    assert response.status == 202 and Warnings.ALREADY_CANCELED in response.headers["Warning"]
    running = create(api)
    call(api, "PUT", f"/workitems/{running}/state", state_body("IN PROGRESS"))
    assert call(api, "POST", f"/workitems/{running}/cancelrequest").status == 202
    call(api, "PUT", f"/workitems/{running}/state", state_body("COMPLETED", extra=completion_attributes()))
    response = call(api, "POST", f"/workitems/{running}/cancelrequest")
    assert response.status == 409 and body_of(response)["status"] == "C311"


def test_search_answers_an_array_with_paging_warning(api):
    for n in range(3):
        create(api, sample_workitem(patient_id=f"P{n}"))
    response = call(api, "GET", "/workitems", query={"limit": "2", "fuzzymatching": "true"})
    assert response.status == 200 and response.headers["Content-Type"] == DICOM_JSON
    assert len(body_of(response)) == 2
    assert response.headers["Warning"] == (f"299 test-svc: {Warnings.FUZZY_NOT_SUPPORTED}, "
                                           f"299 test-svc: {Warnings.additional_results(1)}")
    response = call(api, "GET", "/workitems", query={"PatientID": "nobody"})
    assert response.status == 200 and body_of(response) == []
    response = call(api, "GET", "/workitems", query={"Modality": "CT"})
    assert response.status == 400 and "Modality" in body_of(response)["error"]


@pytest.mark.parametrize("method, path, allow", [
    ("DELETE", "/workitems", "GET, POST"), ("DELETE", "/workitems/1.2.3", "GET, POST, PUT"),
    ("GET", "/workitems/1.2.3/state", "PUT"), ("PUT", "/workitems/1.2.3/cancelrequest", "POST")])
def test_wrong_method_is_405_with_allow(api, method, path, allow):
    response = call(api, method, path)
    assert response.status == 405 and response.headers["Allow"] == allow


@pytest.mark.parametrize("path", ["/", "/other", "/workitems/1.2.3/nothing", "/workitems/1.2.3/state/x"])
def test_unknown_paths_are_404(api, path):
    assert call(api, "GET", path).status == 404


def test_subscriptions_answer_501_where_no_subscription_service_is_wired(api):
    response = call(api, "POST", "/workitems/1.2.840.10008.5.1.4.34.5/subscribers/MYAE")
    assert response.status == 501 and "subscri" in body_of(response)["error"]


def test_unexpected_exceptions_are_500_with_a_message():
    class Broken:
        def retrieve(self, uid):
            raise KeyError("database on fire")
    response = WorkitemsApi(Broken()).handle(Request("GET", "/workitems/1.2.3"))
    assert response.status == 500 and "database on fire" in body_of(response)["error"]
