"""PS3.4 Table CC.1.1-2, row by row, on the pure state machine."""

import pytest

from ai_orchestrator.ups import state_machine as sm
from ai_orchestrator.ups.constants import (
    CANCELED,
    COMPLETED,
    IN_PROGRESS,
    SCHEDULED,
    STATES,
    Warnings,
)
from ai_orchestrator.ups.errors import UPSError

T1, T2 = "1.2.3.1", "1.2.3.2"


def _fails(call, http, dicom):
    with pytest.raises(UPSError) as info:
        call()
    assert (info.value.http_status, info.value.dicom_status) == (http, dicom)
    return info.value


@pytest.mark.parametrize("current, requested, given, held, http, dicom", [
    # -> IN PROGRESS
    (SCHEDULED, IN_PROGRESS, None, None, 400, "C301"),
    (IN_PROGRESS, IN_PROGRESS, T1, T1, 409, "C302"),
    (IN_PROGRESS, IN_PROGRESS, T2, T1, 409, "C302"),
    (COMPLETED, IN_PROGRESS, T2, T1, 409, "C300"),
    (CANCELED, IN_PROGRESS, T2, T1, 409, "C300"),
    # -> SCHEDULED never
    *[(state, SCHEDULED, T1, T1, 409, "C303") for state in STATES],
    # -> final from SCHEDULED
    (SCHEDULED, COMPLETED, T1, None, 409, "C310"),
    (SCHEDULED, CANCELED, T1, None, 409, "C310"),
    # -> final with a wrong or missing TUID
    (IN_PROGRESS, COMPLETED, T2, T1, 400, "C301"),
    (IN_PROGRESS, CANCELED, T2, T1, 400, "C301"),
    (IN_PROGRESS, COMPLETED, None, T1, 400, "C301"),
    (IN_PROGRESS, CANCELED, "", T1, 400, "C301"),
    (COMPLETED, COMPLETED, T2, T1, 400, "C301"),
    (CANCELED, CANCELED, T2, T1, 400, "C301"),
    # the other final state
    (COMPLETED, CANCELED, T1, T1, 409, "C300"),
    (CANCELED, COMPLETED, T1, T1, 409, "C300"),
])
def test_refused_transitions(current, requested, given, held, http, dicom):
    _fails(lambda: sm.change_state("1.9", current, requested, given, held), http, dicom)


@pytest.mark.parametrize("current, requested, given, held, changes, warning", [
    (SCHEDULED, IN_PROGRESS, T1, None, True, None),
    (IN_PROGRESS, COMPLETED, T1, T1, True, None),
    (IN_PROGRESS, CANCELED, T1, T1, True, None),
    (COMPLETED, COMPLETED, T1, T1, False, Warnings.ALREADY_COMPLETED),  # B306
    (CANCELED, CANCELED, T1, T1, False, Warnings.ALREADY_CANCELED),     # B304
])
def test_allowed_transitions(current, requested, given, held, changes, warning):
    transition = sm.change_state("1.9", current, requested, given, held)
    assert (transition.target, transition.changes, transition.warning) == (requested, changes, warning)
    assert transition.needs_final_requirements == (changes and requested in (COMPLETED, CANCELED))


def test_unknown_state_is_a_bad_request_naming_the_attribute():
    error = _fails(lambda: sm.change_state("1.9", SCHEDULED, "DONE", T1, None), 400, "0106")
    assert "ProcedureStepState" in error.message and "DONE" in error.message


@pytest.mark.parametrize("current, expected", [
    (SCHEDULED, sm.CancelAction.CANCEL_NOW),
    (IN_PROGRESS, sm.CancelAction.NOTIFY_PERFORMER),
    (CANCELED, sm.CancelAction.ALREADY_CANCELED),
])
def test_request_cancel_decisions(current, expected):
    assert sm.request_cancel("1.9", current) is expected


def test_request_cancel_of_completed_is_c311():
    _fails(lambda: sm.request_cancel("1.9", COMPLETED), 409, "C311")


@pytest.mark.parametrize("current, given, held", [
    (SCHEDULED, None, None), (SCHEDULED, T1, None), (IN_PROGRESS, T1, T1)])
def test_update_allowed(current, given, held):
    sm.check_update("1.9", current, given, held)


@pytest.mark.parametrize("current, given, held, http, dicom", [
    (IN_PROGRESS, None, T1, 400, "C301"),
    (IN_PROGRESS, T2, T1, 400, "C301"),
    (COMPLETED, T1, T1, 400, "C300"),
    (CANCELED, T1, T1, 400, "C300"),
])
def test_update_refused(current, given, held, http, dicom):
    _fails(lambda: sm.check_update("1.9", current, given, held), http, dicom)


def test_missing_and_incorrect_tuid_messages_use_the_standard_texts():
    missing = _fails(lambda: sm.check_transaction_uid("1.9", None, T1), 400, "C301")
    wrong = _fails(lambda: sm.check_transaction_uid("1.9", T2, T1), 400, "C301")
    assert missing.message.startswith(Warnings.TUID_MISSING)
    assert wrong.message.startswith(Warnings.TUID_INCORRECT)


@pytest.mark.parametrize("current, allowed", [
    (SCHEDULED, True), (IN_PROGRESS, True), (COMPLETED, False), (CANCELED, False)])
def test_force_cancel_only_non_final(current, allowed):
    assert sm.can_force_cancel(current) is allowed


@pytest.mark.parametrize("current, given, http, dicom", [
    (SCHEDULED, T1, 409, "C310"), (COMPLETED, T1, 409, "C300"), (IN_PROGRESS, T2, 400, "C301")])
def test_progress_needs_in_progress_and_its_tuid(current, given, http, dicom):
    _fails(lambda: sm.check_progress("1.9", current, given, T1), http, dicom)
    sm.check_progress("1.9", IN_PROGRESS, T1, T1)
