"""Search Workitems: every key type, paging, includefield and warnings, on a real store."""

import pytest

from ai_orchestrator.manager.service import WorkitemService
from ai_orchestrator.store.workitems import WorkitemStore
from ai_orchestrator.ups.constants import Warnings
from ai_orchestrator.ups.errors import UPSError
from ai_orchestrator.ups.sample import sample_workitem
from ai_orchestrator.ups.search import MAX_LIMIT

ITEMS = {  # uid -> sample_workitem arguments
    "1.2.3.1": dict(patient_id="PAT-1", patient_name="Doe^Jane", label="Lung nodules", priority="HIGH",
                    start="20240101080000", code=("lung", "99AI", "Lung"), accession="ACC-1",
                    study_uid="1.2.9.1"),
    "1.2.3.2": dict(patient_id="PAT-2", patient_name="Doe^John", label="Liver [v2]", priority="LOW",
                    start="20240102093000", readiness="INCOMPLETE", code=("liver", "99AI", "Liver"),
                    accession="ACC-2", study_uid="1.2.9.2"),
    "1.2.3.3": dict(patient_id="XPAT-3", patient_name="Roe^Richard", label="Lung nodules", priority="MEDIUM",
                    start="20240103120000", code=("lung", "99OTHER", "Lung"), accession="BCC-3",
                    study_uid="1.2.9.3"),
}
EXTRA = {  # uid -> attributes not set by sample_workitem
    "1.2.3.1": {"00741202": {"vr": "LO", "Value": ["night"]}, "00100030": {"vr": "DA", "Value": ["19800101"]},
                "00100040": {"vr": "CS", "Value": ["F"]},
                "00404011": {"vr": "DT", "Value": ["20240101100000"]}},
    "1.2.3.2": {"00741202": {"vr": "LO", "Value": ["day"]}, "00100030": {"vr": "DA", "Value": ["19900615"]},
                "00100040": {"vr": "CS", "Value": ["M"]},
                "00404011": {"vr": "DT", "Value": ["20240102120000"]}},
}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = WorkitemService(WorkitemStore(tmp_path_factory.mktemp("search") / "store.sqlite"))
    for uid, args in ITEMS.items():
        svc.create({**sample_workitem(**args), **EXTRA.get(uid, {})}, uid)
    svc.claim("1.2.3.3", "1.2.5.5")
    return svc


def uids(service, **query):
    return sorted(item["00080018"]["Value"][0] for item in service.search(query).items)


@pytest.mark.parametrize("query, expected", [
    ({"ProcedureStepState": "SCHEDULED"}, ["1.2.3.1", "1.2.3.2"]),
    ({"00741000": "IN PROGRESS"}, ["1.2.3.3"]),
    ({"ScheduledProcedureStepPriority": "HIGH"}, ["1.2.3.1"]),
    ({"ProcedureStepLabel": "Lung nodules"}, ["1.2.3.1", "1.2.3.3"]),
    ({"ProcedureStepLabel": "Lung*"}, ["1.2.3.1", "1.2.3.3"]),
    ({"ProcedureStepLabel": "Liver [v2]"}, ["1.2.3.2"]),
    ({"ProcedureStepLabel": "Liver [v?]"}, ["1.2.3.2"]),  # '[' is literal, not a GLOB class
    ({"ProcedureStepLabel": "lung*"}, []),  # literal matching is case-sensitive
    ({"WorklistLabel": "night"}, ["1.2.3.1"]),
    ({"InputReadinessState": "INCOMPLETE"}, ["1.2.3.2"]),
    ({"PatientName": "Doe^*"}, ["1.2.3.1", "1.2.3.2"]),
    ({"00100010": "Doe^J?hn"}, ["1.2.3.2"]),
    ({"PatientID": "PAT-2"}, ["1.2.3.2"]),
    ({"PatientID": "PAT-*"}, ["1.2.3.1", "1.2.3.2"]),
    ({"00100020": "*PAT-3"}, ["1.2.3.3"]),
    ({"PatientSex": "M"}, ["1.2.3.2"]),
    ({"PatientBirthDate": "19800101"}, ["1.2.3.1"]),
    ({"PatientBirthDate": "19850101-"}, ["1.2.3.2"]),
    ({"PatientBirthDate": "-19850101"}, ["1.2.3.1"]),
    ({"ScheduledProcedureStepStartDateTime": "20240102"}, ["1.2.3.2"]),  # a date covers the whole day
    ({"ScheduledProcedureStepStartDateTime": "20240101-20240102"}, ["1.2.3.1", "1.2.3.2"]),
    ({"ScheduledProcedureStepStartDateTime": "20240102093000-"}, ["1.2.3.2", "1.2.3.3"]),
    ({"00404005": "-20240101235959"}, ["1.2.3.1"]),
    ({"ExpectedCompletionDateTime": "20240102-"}, ["1.2.3.2"]),
    ({"ScheduledWorkitemCodeSequence.CodeValue": "lung"}, ["1.2.3.1", "1.2.3.3"]),
    ({"00404018.00080100": "lung", "00404018.00080102": "99AI"}, ["1.2.3.1"]),
    ({"ScheduledWorkitemCodeSequence.CodingSchemeDesignator": "99OTHER"}, ["1.2.3.3"]),
    ({"ReferencedRequestSequence.AccessionNumber": "ACC-2"}, ["1.2.3.2"]),
    ({"0040A370.00080050": "ACC-*"}, ["1.2.3.1", "1.2.3.2"]),
    ({"SOPInstanceUID": "1.2.3.1,1.2.3.3"}, ["1.2.3.1", "1.2.3.3"]),
    ({"00080018": "1.2.3.2\\1.2.3.3"}, ["1.2.3.2", "1.2.3.3"]),
    ({"StudyInstanceUID": "1.2.9.2"}, ["1.2.3.2"]),
    ({"PatientID": "PAT-1", "ProcedureStepLabel": "Lung*"}, ["1.2.3.1"]),
    ({"PatientID": "", "ScheduledWorkitemCodeSequence": ""}, ["1.2.3.1", "1.2.3.2", "1.2.3.3"]),  # universal
    ({"PatientID": "*"}, ["1.2.3.1", "1.2.3.2", "1.2.3.3"]),
    ({"PatientID": "NOBODY"}, []),
])
def test_matching(service, query, expected):
    assert uids(service, **query) == expected


def test_no_match_is_an_empty_list_without_warning(service):
    result = service.search({"PatientID": "NOBODY"})
    assert result.items == [] and result.warnings == []


def test_default_return_keys_and_includefield(service):
    [item] = service.search({"PatientID": "PAT-1"}).items
    assert "00741000" in item and "00100020" in item and "00404021" in item
    assert "00404025" not in item  # ScheduledStationNameCodeSequence: not a default return key
    [item] = service.search({"PatientID": "PAT-1", "includefield": "ScheduledStationNameCodeSequence,00400400"}).items
    assert "00404025" in item and "00400400" in item
    [item] = service.search({"PatientID": "PAT-1", "includefield": "all"}).items
    assert item == service.retrieve("1.2.3.1")


def test_transaction_uid_is_never_returned(service):
    items = service.search({"includefield": "all"}).items
    assert items and all("00081195" not in item for item in items)
    assert "1.2.5.5" not in repr(items)


def test_paging_is_idempotent_and_warns_about_more(service):
    first = service.search({"limit": "2"})
    assert len(first.items) == 2 and first.warnings == [Warnings.additional_results(1)]
    again = service.search({"limit": "2"})
    assert again.items == first.items
    last = service.search({"limit": "2", "offset": "2"})
    assert len(last.items) == 1 and last.warnings == []
    seen = [i["00080018"]["Value"][0] for i in first.items + last.items]
    assert sorted(seen) == sorted(ITEMS)
    assert service.search({"offset": "5"}).items == []


def test_limit_is_capped_with_a_warning(service):
    result = service.search({"limit": str(MAX_LIMIT + 1)})
    assert len(result.items) == 3
    assert any(str(MAX_LIMIT) in w for w in result.warnings)


def test_fuzzymatching_warns(service):
    assert service.search({"PatientID": "PAT-1", "fuzzymatching": "true"}).warnings == [Warnings.FUZZY_NOT_SUPPORTED]
    assert service.search({"PatientID": "PAT-1", "fuzzymatching": "false"}).warnings == []


@pytest.mark.parametrize("query, named", [
    ({"NoSuchKeyword": "x"}, "NoSuchKeyword"),
    ({"Modality": "CT"}, "Modality"),
    ({"00080060": "CT"}, "00080060"),
    ({"ScheduledWorkitemCodeSequence.CodeMeaning": "Lung"}, "CodeMeaning"),
    ({"TransactionUID": "1.2.5.5"}, "TransactionUID"),
    ({"00081195": "1.2.5.5"}, "TransactionUID"),
    ({"includefield": "TransactionUID"}, "TransactionUID"),
    ({"includefield": "Nonsense"}, "Nonsense"),
    ({"limit": "ten"}, "limit"),
    ({"limit": "0"}, "limit"),
    ({"offset": "-1"}, "offset"),
    ({"fuzzymatching": "maybe"}, "fuzzymatching"),
    ({"ScheduledProcedureStepStartDateTime": "yesterday"}, "ScheduledProcedureStepStartDateTime"),
    ({"ScheduledProcedureStepStartDateTime": "-"}, "ScheduledProcedureStepStartDateTime"),
    ({"SOPInstanceUID": "1.2.x"}, "1.2.x"),
    ({"ScheduledWorkitemCodeSequence": "lung"}, "CodeValue"),
])
def test_bad_queries_are_400_naming_the_key(service, query, named):
    with pytest.raises(UPSError) as info:
        service.search(query)
    assert info.value.http_status == 400 and named in info.value.message
