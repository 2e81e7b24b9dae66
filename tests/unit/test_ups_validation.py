"""N-CREATE, N-SET and final-state attribute requirements (PS3.4 Table CC.2.5-3)."""

import pytest
from pydicom import Dataset

from ai_orchestrator.ups.constants import CANCELED, COMPLETED
from ai_orchestrator.ups.dicom_json import from_json
from ai_orchestrator.ups.errors import UPSError
from ai_orchestrator.ups.sample import completion_attributes, sample_workitem
from ai_orchestrator.ups.validation import (
    TYPE1,
    TYPE2,
    check_final_requirements,
    validate_create,
    validate_update,
)


def _ds(**changes) -> Dataset:
    ds = from_json(sample_workitem())
    for keyword, value in changes.items():
        if value is ...:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)
    return ds


def _rejects(call, *words, http=400, dicom=None):
    with pytest.raises(UPSError) as info:
        call()
    assert info.value.http_status == http
    if dicom:
        assert info.value.dicom_status == dicom
    for word in words:
        assert word in info.value.message
    return info.value


def test_complete_dataset_is_accepted_unmodified():
    assert validate_create(_ds()) is False


@pytest.mark.parametrize("keyword", list(TYPE1))
def test_type1_missing_is_rejected_naming_it(keyword):
    _rejects(lambda: validate_create(_ds(**{keyword: ...})), keyword)


@pytest.mark.parametrize("keyword", list(TYPE1))
def test_type1_empty_is_rejected(keyword):
    _rejects(lambda: validate_create(_ds(**{keyword: None})), keyword)


@pytest.mark.parametrize("keyword, value", [
    ("ScheduledProcedureStepPriority", "URGENT"), ("InputReadinessState", "MAYBE"), ("PatientSex", "X"),
    ("ScheduledProcedureStepStartDateTime", "2024-01-01"), ("ExpectedCompletionDateTime", "tomorrow"),
    ("PatientBirthDate", "1980"), ("StudyInstanceUID", "1.2.abc"), ("SOPInstanceUID", "01.2"),
])
def test_bad_values_are_rejected_naming_attribute_and_value(keyword, value):
    _rejects(lambda: validate_create(_ds(**{keyword: value})), keyword, value)


@pytest.mark.parametrize("state", ["IN PROGRESS", "COMPLETED", "CANCELED", None])
def test_state_other_than_scheduled_is_c309(state):
    _rejects(lambda: validate_create(_ds(ProcedureStepState=state)), "ProcedureStepState", dicom="C309")


def test_missing_state_is_c309():
    _rejects(lambda: validate_create(_ds(ProcedureStepState=...)), "SCHEDULED", dicom="C309")


def test_non_empty_transaction_uid_is_rejected():
    _rejects(lambda: validate_create(_ds(TransactionUID="1.2.3")), "TransactionUID")


@pytest.mark.parametrize("keyword", TYPE2)
def test_missing_type2_is_added_empty_and_reported(keyword):
    ds = _ds(**{keyword: ...})
    assert validate_create(ds) is True
    assert keyword in ds and ds[keyword].is_empty


@pytest.mark.parametrize("keyword", ["ProcedureStepProgressInformationSequence",
                                     "UnifiedProcedureStepPerformedProcedureSequence"])
def test_progress_and_performed_sequences_must_be_empty_on_create(keyword):
    ds = _ds()
    item = Dataset()
    item.ProcedureStepProgress = 10
    setattr(ds, keyword, [item])
    _rejects(lambda: validate_create(ds), keyword)


def test_patient_id_required_when_patient_name_given():
    _rejects(lambda: validate_create(_ds(PatientID=...)), "PatientID", dicom="0120")
    validate_create(_ds(PatientID=..., PatientName=None))  # no patient: no Patient ID needed


def test_workitem_code_has_one_item_with_value_and_scheme():
    ds = _ds()
    ds.ScheduledWorkitemCodeSequence.append(ds.ScheduledWorkitemCodeSequence[0])
    _rejects(lambda: validate_create(ds), "ScheduledWorkitemCodeSequence", "one item")
    ds = _ds()
    del ds.ScheduledWorkitemCodeSequence[0].CodingSchemeDesignator
    _rejects(lambda: validate_create(ds), "CodingSchemeDesignator")


@pytest.mark.parametrize("keyword", ["TypeOfInstances", "StudyInstanceUID", "SeriesInstanceUID",
                                     "ReferencedSOPSequence", "WADORSRetrievalSequence"])
def test_input_information_items_need_their_attributes(keyword):
    ds = _ds()
    del ds.InputInformationSequence[0][keyword]
    expected = "retrieval sequence" if keyword == "WADORSRetrievalSequence" else keyword
    _rejects(lambda: validate_create(ds), expected, "InputInformationSequence item 1")


def test_referenced_sop_items_need_class_and_instance():
    ds = _ds()
    del ds.InputInformationSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    _rejects(lambda: validate_create(ds), "ReferencedSOPInstanceUID")


# -- N-SET ------------------------------------------------------------------------------------------------

def _changes(**attributes) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize("keyword, value", [
    ("ProcedureStepState", "COMPLETED"), ("PatientName", "Other^Name"), ("PatientID", "P2"),
    ("PatientBirthDate", "19800101"), ("PatientSex", "M"), ("SOPClassUID", "1.2.3"),
])
def test_update_cannot_change_state_patient_or_server_attributes(keyword, value):
    _rejects(lambda: validate_update(_changes(**{keyword: value}), "1.2.3"), keyword)


def test_update_cannot_empty_type1_or_change_the_uid():
    _rejects(lambda: validate_update(_changes(ProcedureStepLabel=None), "1.2.3"), "ProcedureStepLabel")
    _rejects(lambda: validate_update(_changes(SOPInstanceUID="1.2.4"), "1.2.3"), "SOPInstanceUID")


def test_update_checks_values_and_accepts_valid_ones():
    _rejects(lambda: validate_update(_changes(ScheduledProcedureStepPriority="SOON"), "1.2.3"), "SOON")
    validate_update(_changes(ScheduledProcedureStepPriority="HIGH", WorklistLabel="night",
                             InputReadinessState="INCOMPLETE", SOPInstanceUID="1.2.3"), "1.2.3")


# -- final states -----------------------------------------------------------------------------------------

def _completed_ready() -> Dataset:
    ds = _ds()
    for element in from_json(completion_attributes()):
        ds[element.tag] = element
    return ds


def test_completed_requirements_met():
    check_final_requirements("1.2.3", COMPLETED, _completed_ready())


@pytest.mark.parametrize("keyword", ["PerformedStationNameCodeSequence", "PerformedProcedureStepStartDateTime",
                                     "PerformedProcedureStepEndDateTime", "PerformedWorkitemCodeSequence",
                                     "OutputInformationSequence"])
def test_completed_requirement_missing_is_c304_naming_it(keyword):
    ds = _completed_ready()
    del ds.UnifiedProcedureStepPerformedProcedureSequence[0][keyword]
    _rejects(lambda: check_final_requirements("1.2.3", COMPLETED, ds), keyword, http=409, dicom="C304")


def test_completed_without_performed_sequence_is_c304():
    _rejects(lambda: check_final_requirements("1.2.3", COMPLETED, _ds()),
             "UnifiedProcedureStepPerformedProcedureSequence", http=409, dicom="C304")


def test_canceled_requirements():
    ds = _ds()
    _rejects(lambda: check_final_requirements("1.2.3", CANCELED, ds), "ProcedureStepCancellationDateTime",
             "ProcedureStepDiscontinuationReasonCodeSequence", http=409, dicom="C304")
