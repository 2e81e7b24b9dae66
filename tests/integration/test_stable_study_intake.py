"""STABLE_STUDY → workitems, in a real Orthanc: content, idempotency, new series, own results, deletion."""

from __future__ import annotations

from pydicom.uid import generate_uid

from tests.integration.studies import (
    instances,
    upload_rest,
    upload_storescu,
    wait_for,
    workitem_states,
    workitems_of,
)
from tests.integration.workitems import Ups, completion_attributes, value


def new_patient() -> str:
    return f"P{generate_uid()[-10:]}"


def test_storescu_study_becomes_a_workitem_with_its_inputs(orthanc, tmp_path):
    patient, study_uid = new_patient(), generate_uid()
    series = instances("MR_small.dcm", count=3, patient_id=patient, study_uid=study_uid, body_part="HEAD")
    upload_storescu(orthanc.dicom_port, series, tmp_path)

    [item] = wait_for(lambda: workitems_of(orthanc.client, patient))
    assert value(item, "00741000") == "SCHEDULED"
    assert value(item, "00741204") == "head-mr-pipeline"  # Procedure Step Label, the reference convention
    assert value(item, "0020000D") == study_uid
    assert value(item, "00404041") == "READY"
    assert value(item, "00741200") == "MEDIUM"
    code = item["00404018"]["Value"][0]
    assert code["00080104"]["Value"][0] == "head-mr-pipeline"
    [inputs] = item["00404021"]["Value"]
    assert value(inputs, "0020000E") == str(series[0].SeriesInstanceUID)
    referenced = {value(ref, "00081155") for ref in inputs["00081199"]["Value"]}
    assert referenced == {str(ds.SOPInstanceUID) for ds in series}
    url = value(inputs["0040E025"]["Value"][0], "00081190")
    assert url.endswith(f"/dicom-web/studies/{study_uid}/series/{series[0].SeriesInstanceUID}")
    # the retrieve URL really serves the inputs (WADO-RS metadata through Orthanc's DICOMweb plugin)
    path = url.split(f":{orthanc.http_port}", 1)[1]
    assert orthanc.client.get(path + "/metadata").status_code == 200


def test_repeated_events_and_new_series_keep_one_workitem(orthanc):
    patient, study_uid = new_patient(), generate_uid()
    first = instances("MR_small.dcm", count=2, patient_id=patient, study_uid=study_uid)
    upload_rest(orthanc.client, first)
    [uid] = wait_for(lambda: list(workitem_states(orthanc.client, patient)))

    second = instances("MR_small.dcm", count=2, patient_id=patient, study_uid=study_uid)
    upload_rest(orthanc.client, second)

    def inputs_updated():
        items = workitems_of(orthanc.client, patient)
        return len(items) == 1 and len(items[0]["00404021"]["Value"]) == 2 and items

    [item] = wait_for(inputs_updated)
    assert value(item, "00080018") == uid  # same workitem, its Input Information updated


def test_new_series_after_completion_gives_a_replacement(orthanc):
    patient, study_uid = new_patient(), generate_uid()
    upload_rest(orthanc.client, instances("MR_small.dcm", count=2, patient_id=patient, study_uid=study_uid))
    [old] = wait_for(lambda: list(workitem_states(orthanc.client, patient)))
    ups, tuid = Ups(orthanc.client), generate_uid()
    assert ups.change_state(old, "IN PROGRESS", tuid).status_code == 200
    assert ups.change_state(old, "COMPLETED", tuid, completion_attributes()).status_code == 200

    upload_rest(orthanc.client, instances("MR_small.dcm", count=1, patient_id=patient, study_uid=study_uid))
    states = wait_for(lambda: (s := workitem_states(orthanc.client, patient)) and len(s) == 2 and s)
    [new] = [uid for uid in states if uid != old]
    assert states == {old: "COMPLETED", new: "SCHEDULED"}
    replaced = ups.dataset(new)["00741224"]["Value"][0]  # Replaced Procedure Step Sequence
    assert value(replaced, "00081155") == old


def test_own_result_series_never_trigger_workitems(orthanc):
    patient, study_uid = new_patient(), generate_uid()
    ours = instances("MR_small.dcm", count=2, patient_id=patient, study_uid=study_uid,
                     manufacturer="Orthanc AI Orchestrator")
    upload_rest(orthanc.client, ours)
    # a study that holds only our own series gets nothing; a real series added afterwards does
    upload_rest(orthanc.client, instances("CT_small.dcm", count=1, patient_id=patient, study_uid=study_uid,
                                          body_part="ABDOMEN"))
    [item] = wait_for(lambda: workitems_of(orthanc.client, patient))
    assert value(item, "00741204") == "abdomen-ct-pipeline"
    assert len(item["00404021"]["Value"]) == 1


def test_deleting_the_study_cancels_its_workitems(orthanc):
    patient, study_uid = new_patient(), generate_uid()
    study_id = upload_rest(orthanc.client, instances("MR_small.dcm", count=2, patient_id=patient,
                                                     study_uid=study_uid))
    [uid] = wait_for(lambda: list(workitem_states(orthanc.client, patient)))
    assert orthanc.client.delete(f"/studies/{study_id}").status_code == 200
    wait_for(lambda: workitem_states(orthanc.client, patient) == {uid: "CANCELED"})
    progress = Ups(orthanc.client).dataset(uid)["00741002"]["Value"][0]
    assert "deleted" in value(progress, "00741238").lower()  # Reason For Cancellation


def test_restart_keeps_the_workitem_and_creates_no_duplicate(orthanc):
    patient, study_uid = new_patient(), generate_uid()
    upload_rest(orthanc.client, instances("MR_small.dcm", count=1, patient_id=patient, study_uid=study_uid))
    wait_for(lambda: workitems_of(orthanc.client, patient), timeout=30)
    orthanc.restart()
    assert len(workitems_of(orthanc.client, patient)) == 1
