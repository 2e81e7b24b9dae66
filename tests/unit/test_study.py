"""read_study against Orthanc 1.10-shaped REST answers (respx + the real HttpGateway)."""

from __future__ import annotations

import hashlib

import httpx
import pytest
import respx

from ai_orchestrator.gateway.http_gateway import HttpGateway
from ai_orchestrator.gateway.protocol import ResourceNotFound
from ai_orchestrator.gateway.study import orthanc_hash, orthanc_id_of_study, read_study

BASE = "http://orthanc.test"
STUDY_ID = "27f7126f-4f66fb14-03f4081b-f9341db2-53925988"
CT, SEG = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.66.4"

STUDY = {
    "ID": STUDY_ID, "Type": "Study", "IsStable": True, "LastUpdate": "20240105T101010",
    "MainDicomTags": {"AccessionNumber": "ACC42", "StudyDate": "20240105", "StudyInstanceUID": "1.2.3",
                      "StudyDescription": "CT THORAX"},
    "PatientMainDicomTags": {"PatientBirthDate": "19700101", "PatientID": "P1", "PatientName": "DOE^JANE",
                             "PatientSex": "F"},
    "ParentPatient": "pat", "Series": ["s-ct", "s-seg"],
}
SERIES = [
    {"ID": "s-ct", "Type": "Series", "ParentStudy": STUDY_ID, "Status": "Unknown", "Instances": ["i2", "i1"],
     "MainDicomTags": {"Modality": "CT", "SeriesInstanceUID": "1.2.3.1", "BodyPartExamined": "CHEST",
                       "Manufacturer": "ACME", "SeriesNumber": "2"}},
    {"ID": "s-seg", "Type": "Series", "ParentStudy": STUDY_ID, "Status": "Unknown", "Instances": ["i3"],
     "MainDicomTags": {"Modality": "SEG", "SeriesInstanceUID": "1.2.3.2",
                       "Manufacturer": "Orthanc AI Orchestrator"}},
]
INSTANCES = [
    {"ID": "i2", "Type": "Instance", "ParentSeries": "s-ct", "IndexInSeries": 10,
     "MainDicomTags": {"InstanceNumber": "10", "SOPInstanceUID": "1.2.3.1.10"}},
    {"ID": "i1", "Type": "Instance", "ParentSeries": "s-ct", "IndexInSeries": 9,
     "MainDicomTags": {"InstanceNumber": "9", "SOPInstanceUID": "1.2.3.1.9"}},
    {"ID": "i3", "Type": "Instance", "ParentSeries": "s-seg",
     "MainDicomTags": {"InstanceNumber": "1", "SOPInstanceUID": "1.2.3.2.1"}},
]


@pytest.fixture
def orthanc():
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        mock.get(f"/studies/{STUDY_ID}").respond(json=STUDY)
        mock.get(f"/studies/{STUDY_ID}/series").respond(json=SERIES)
        mock.get(f"/studies/{STUDY_ID}/instances").respond(json=INSTANCES)
        mock.get("/instances/i1/metadata", params={"expand": ""}).respond(
            json={"SopClassUid": CT, "TransferSyntax": "1.2.840.10008.1.2.1"})
        mock.get("/instances/i3/metadata", params={"expand": ""}).respond(json={"SopClassUid": SEG})
        yield mock


def _gateway() -> HttpGateway:
    return HttpGateway(httpx.Client(base_url=BASE))


def test_read_study_collects_patient_study_and_series(orthanc):
    snapshot = read_study(_gateway(), STUDY_ID)
    assert (snapshot.study_instance_uid, snapshot.accession_number, snapshot.orthanc_id) == \
        ("1.2.3", "ACC42", STUDY_ID)
    assert (snapshot.patient_name, snapshot.patient_id, snapshot.patient_birth_date, snapshot.patient_sex) == \
        ("DOE^JANE", "P1", "19700101", "F")
    ct, seg = snapshot.series
    assert (ct.series_instance_uid, ct.modality, ct.body_part, ct.manufacturer) == ("1.2.3.1", "CT", "CHEST", "ACME")
    assert ct.sop_class_uid == CT and seg.sop_class_uid == SEG
    assert seg.manufacturer == "Orthanc AI Orchestrator" and seg.body_part == ""
    assert ct.main_tags["SeriesNumber"] == "2"


def test_instances_are_in_instance_number_order(orthanc):
    ct = read_study(_gateway(), STUDY_ID).series[0]
    assert ct.sop_instance_uids == ("1.2.3.1.9", "1.2.3.1.10")


def test_read_study_uses_one_metadata_call_per_series(orthanc):
    read_study(_gateway(), STUDY_ID)
    assert orthanc.calls.call_count == 3 + len(SERIES)
    assert not any(call.request.url.path == "/instances/i2/metadata" for call in orthanc.calls)


def test_unknown_study_raises():
    with respx.mock(base_url=BASE) as mock:
        mock.get("/studies/gone").respond(404, json={"Message": "Unknown resource"})
        with pytest.raises(ResourceNotFound, match="/studies/gone"):
            read_study(_gateway(), "gone")


def test_orthanc_hash_matches_orthancs_own_sha1_test_vector():
    # Orthanc's unit test of Toolbox::ComputeSHA1.
    assert orthanc_hash("The quick brown fox jumps over the lazy dog") == \
        "2fd4e1c6-7a2d28fc-ed849ee1-bb76e739-1b93eb12"


def test_orthanc_study_id_hashes_patient_id_pipe_study_uid():
    assert orthanc_id_of_study("P1", "1.2.3") == orthanc_hash("P1|1.2.3")
    assert orthanc_id_of_study("P1", "1.2.3").replace("-", "") == hashlib.sha1(b"P1|1.2.3").hexdigest()
    assert orthanc_id_of_study("P2", "1.2.3") != orthanc_id_of_study("P1", "1.2.3")
