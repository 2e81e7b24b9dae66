"""UPS-RS through Orthanc's HTTP server: every transaction and every row of the state-machine table."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid

from tests.integration.workitems import (
    ROOT,
    Ups,
    completion_attributes,
    new_workitem,
    value,
)

TUID_TAG, STATE_TAG = "00081195", "00741000"


@pytest.fixture
def ups(orthanc) -> Ups:
    return Ups(orthanc.client)


def completed(ups: Ups) -> tuple[str, str]:
    uid, tuid = ups.in_progress()
    assert ups.change_state(uid, "COMPLETED", tuid, completion_attributes()).status_code == 200
    return uid, tuid


def canceled(ups: Ups) -> tuple[str, str]:
    uid, tuid = ups.in_progress()
    assert ups.change_state(uid, "CANCELED", tuid).status_code == 200
    return uid, tuid


def assert_error(answer, status: int, dicom_status: str | None = None, names: str | None = None):
    assert answer.status_code == status, answer.text
    if dicom_status:
        assert answer.json()["status"] == dicom_status
    if names:
        assert names.lower() in answer.json()["error"].lower()


# Create / Retrieve

def test_create_answers_201_with_location_and_fills_type2_with_a_warning(ups, orthanc):
    ds = new_workitem()
    answer = ups.create(ds)
    assert answer.status_code == 201, answer.text
    assert answer.headers["Location"].endswith(f"{ROOT}/workitems/{ds.SOPInstanceUID}")
    assert "created with modifications" in answer.headers.get("Warning", "")
    stored = ups.dataset(ds.SOPInstanceUID)
    assert value(stored, "00080016") == "1.2.840.10008.5.1.4.34.6.1"
    assert value(stored, STATE_TAG) == "SCHEDULED"
    assert "00404010" in stored  # Scheduled Procedure Step Modification DateTime
    assert value(stored, "00100020") == "PAT-1"


def test_create_without_a_uid_generates_one(ups):
    ds = new_workitem()
    del ds.SOPInstanceUID
    answer = ups.create(ds)
    assert answer.status_code == 201
    uid = answer.headers["Location"].rsplit("/", 1)[-1]
    assert ups.state(uid) == "SCHEDULED"


def test_create_refuses_bad_datasets_and_changes_nothing(ups):
    ds = new_workitem()
    ds.ProcedureStepState = "IN PROGRESS"
    assert_error(ups.create(ds), 400, names="ProcedureStepState")
    assert ups.retrieve(ds.SOPInstanceUID).status_code == 404
    missing = new_workitem()
    del missing.ProcedureStepLabel
    assert_error(ups.create(missing), 400, names="ProcedureStepLabel")
    with_tuid = new_workitem()
    with_tuid.TransactionUID = generate_uid()
    assert_error(ups.create(with_tuid), 400, names="TransactionUID")
    garbage = ups.client.post(f"{ROOT}/workitems", content=b"{not json",
                              headers={"Content-Type": "application/dicom+json"})
    assert_error(garbage, 400)


def test_create_twice_is_a_conflict(ups):
    ds = new_workitem()
    assert ups.create(ds).status_code == 201
    assert_error(ups.create(ds), 409)


def test_retrieve_unknown_is_404_and_never_shows_the_transaction_uid(ups):
    assert ups.retrieve(generate_uid()).status_code == 404
    uid, _tuid = ups.in_progress()
    assert TUID_TAG not in ups.dataset(uid)


# Change State: PS3.4 Table CC.1.1-2

def test_scheduled_to_in_progress_records_the_lock(ups):
    uid, tuid = ups.in_progress()
    assert ups.state(uid) == "IN PROGRESS"
    assert_error(ups.change_state(uid, "COMPLETED", generate_uid(), completion_attributes()), 400, "C301")


def test_in_progress_again_is_c302(ups):
    uid, tuid = ups.in_progress()
    assert_error(ups.change_state(uid, "IN PROGRESS", generate_uid()), 409, "C302")


@pytest.mark.parametrize("final", [completed, canceled])
def test_final_to_in_progress_is_c300(ups, final):
    uid, tuid = final(ups)
    assert_error(ups.change_state(uid, "IN PROGRESS", tuid), 409, "C300")


def test_in_progress_without_transaction_uid_is_c301(ups):
    uid = ups.scheduled()
    assert_error(ups.change_state(uid, "IN PROGRESS", None), 400, "C301")
    assert ups.state(uid) == "SCHEDULED"


def test_back_to_scheduled_is_never_allowed(ups):
    uid, tuid = ups.in_progress()
    assert_error(ups.change_state(uid, "SCHEDULED", tuid), 409, "C303")


@pytest.mark.parametrize("state", ["COMPLETED", "CANCELED"])
def test_final_state_from_scheduled_is_c310(ups, state):
    uid = ups.scheduled()
    assert_error(ups.change_state(uid, state, generate_uid(), completion_attributes()), 409, "C310")


def test_completed_without_final_state_attributes_is_c304(ups):
    uid, tuid = ups.in_progress()
    assert_error(ups.change_state(uid, "COMPLETED", tuid), 409, "C304")
    assert ups.state(uid) == "IN PROGRESS"


@pytest.mark.parametrize("state", ["COMPLETED", "CANCELED"])
def test_final_state_with_wrong_or_missing_tuid_is_c301(ups, state):
    uid, _tuid = ups.in_progress()
    assert_error(ups.change_state(uid, state, generate_uid(), completion_attributes()), 400, "C301")
    assert_error(ups.change_state(uid, state, None, completion_attributes()), 400, "C301")
    assert ups.state(uid) == "IN PROGRESS"


def test_complete_then_repeat_warns_and_other_final_state_is_c300(ups):
    uid, tuid = completed(ups)
    assert ups.state(uid) == "COMPLETED"
    again = ups.change_state(uid, "COMPLETED", tuid, completion_attributes())
    assert again.status_code == 200
    assert "already in the requested state of COMPLETED" in again.headers["Warning"]
    assert_error(ups.change_state(uid, "CANCELED", tuid), 409, "C300")


def test_cancel_in_progress_fills_the_cancellation_attributes(ups):
    uid, tuid = canceled(ups)
    progress = ups.dataset(uid)["00741002"]["Value"][0]
    assert "00404052" in progress  # Procedure Step Cancellation DateTime
    assert "0074100E" in progress  # Discontinuation Reason Code Sequence
    again = ups.change_state(uid, "CANCELED", tuid)
    assert again.status_code == 200
    assert "already in the requested state of CANCELED" in again.headers["Warning"]


# Request Cancellation

def test_cancel_request_on_scheduled_cancels_it(ups):
    uid = ups.scheduled()
    assert ups.cancel_request(uid, "not needed").status_code == 202
    assert ups.state(uid) == "CANCELED"


def test_cancel_request_on_in_progress_is_accepted_and_left_to_the_performer(ups):
    uid, _tuid = ups.in_progress()
    assert ups.cancel_request(uid).status_code == 202
    assert ups.state(uid) == "IN PROGRESS"


def test_cancel_request_on_final_items(ups):
    uid, _ = completed(ups)
    assert_error(ups.cancel_request(uid), 409, "C311")
    uid, _ = canceled(ups)
    answer = ups.cancel_request(uid)
    assert answer.status_code == 202
    assert "already in the requested state of CANCELED" in answer.headers["Warning"]
    assert ups.cancel_request(generate_uid()).status_code == 404


# Update (N-SET)

def progress(percent: int) -> Dataset:
    item = Dataset()
    item.ProcedureStepProgress = percent
    ds = Dataset()
    ds.ProcedureStepProgressInformationSequence = [item]
    return ds


def test_update_rules(ups):
    uid = ups.scheduled()
    label = Dataset()
    label.ProcedureStepLabel = "renamed"
    assert ups.update(uid, label).status_code == 200  # SCHEDULED: no lock needed
    assert value(ups.dataset(uid), "00741204") == "renamed"

    uid, tuid = ups.in_progress()
    assert_error(ups.update(uid, progress(10)), 400, "C301")
    assert_error(ups.update(uid, progress(10), generate_uid()), 400, "C301")
    assert ups.update(uid, progress(50), tuid).status_code == 200
    assert ups.dataset(uid)["00741002"]["Value"][0]["00741004"]["Value"][0] == 50

    state = Dataset()
    state.ProcedureStepState = "COMPLETED"
    assert_error(ups.update(uid, state, tuid), 400, names="ProcedureStepState")

    done, done_tuid = completed(ups)
    assert_error(ups.update(done, progress(99), done_tuid), 400)
    assert ups.update(generate_uid(), progress(1)).status_code == 404


def test_put_on_a_workitem_is_update_too(ups):
    uid = ups.scheduled()
    label = Dataset()
    label.ProcedureStepLabel = "via-put"
    answer = ups.client.put(f"{ROOT}/workitems/{uid}", json=label.to_json_dict(),
                            headers={"Content-Type": "application/dicom+json"})
    assert answer.status_code == 200
    assert value(ups.dataset(uid), "00741204") == "via-put"


# Search

def test_search_by_patient_state_and_paging(ups):
    patient = f"SEARCH-{generate_uid()[-8:]}"
    uids = {ups.scheduled(new_workitem(patient_id=patient)) for _ in range(5)}
    found = ups.search(PatientID=patient)
    assert found.status_code == 200
    assert {value(item, "00080018") for item in found.json()} == uids

    first = ups.search(**{"00100020": patient, "limit": "2"})
    assert len(first.json()) == 2
    assert "There are 3 additional results" in first.headers["Warning"]
    rest = ups.search(**{"00100020": patient, "offset": "2", "limit": "10"})
    assert {value(i, "00080018") for i in first.json() + rest.json()} == uids

    none = ups.search(PatientID="NOBODY-" + patient)
    assert none.status_code == 200 and none.json() == []
    assert all(TUID_TAG not in item for item in ups.search(ProcedureStepState="IN PROGRESS").json())


def test_search_refuses_unknown_keys(ups):
    assert_error(ups.search(NoSuchKeyword="x"), 400, names="NoSuchKeyword")
    assert_error(ups.search(TransactionUID="1.2.3"), 400)


def test_wrong_method_is_405(ups):
    answer = ups.client.delete(f"{ROOT}/workitems")
    assert answer.status_code == 405


# Concurrency and durability

def test_two_clients_claiming_at_once_exactly_one_wins(ups):
    for _ in range(5):
        uid = ups.scheduled()
        results: list[int] = []
        barrier = threading.Barrier(4)

        def claim(uid: str = uid, barrier: threading.Barrier = barrier, results: list[int] = results) -> None:
            barrier.wait()
            results.append(ups.change_state(uid, "IN PROGRESS", generate_uid()).status_code)

        threads = [threading.Thread(target=claim) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [200, 409, 409, 409]


def test_workitems_survive_restart_and_kill(orthanc):
    ups = Ups(orthanc.client)
    scheduled = ups.scheduled()
    uid, tuid = ups.in_progress()
    orthanc.restart()
    assert ups.state(scheduled) == "SCHEDULED"
    assert ups.state(uid) == "IN PROGRESS"
    # the lock survives too: only the holder can finish it
    assert_error(ups.change_state(uid, "COMPLETED", generate_uid(), completion_attributes()), 400, "C301")
    acknowledged = ups.scheduled()
    orthanc.stop(signal.SIGKILL)
    orthanc.start()
    assert ups.state(acknowledged) == "SCHEDULED"
    assert ups.change_state(uid, "COMPLETED", tuid, completion_attributes()).status_code == 200


def test_requests_do_not_leak_store_connections(orthanc):
    """Orthanc's HTTP threads get a fresh Python thread state per callback: connections must still be reused."""
    def open_files() -> int:
        return len(list(Path(f"/proc/{orthanc.process.pid}/fd").iterdir()))

    for _ in range(150):  # every HTTP thread of Orthanc's pool has answered at least once
        orthanc.client.get(f"{ROOT}/workitems", params={"PatientID": "NOBODY"})
    before = open_files()
    for _ in range(300):
        orthanc.client.get(f"{ROOT}/workitems", params={"PatientID": "NOBODY"})
    assert open_files() <= before + 4
