"""Attribute requirements of the UPS (PS3.4 Table CC.2.5-3): N-CREATE, N-SET and the final states.

Each rule lives here once; a failure is a 400 (or 409 for final-state requirements) naming the attribute.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydicom import Dataset
from pydicom.uid import UID

from .constants import (
    CANCELED,
    COMPLETED,
    INPUT_READINESS_STATES,
    PRIORITIES,
    SCHEDULED,
    Status,
)
from .dicom_json import describe, has_value, text_value
from .errors import UPSError, bad_request, conflict

_DT = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$")
_DA = re.compile(r"^\d{8}$")

# Type 1 on N-CREATE: value required. Also may not be emptied by N-SET. Value -> allowed values (None: any).
TYPE1: dict[str, tuple[str, ...] | None] = {
    "ScheduledProcedureStepPriority": PRIORITIES,
    "ProcedureStepLabel": None,
    "ScheduledProcedureStepStartDateTime": None,
    "InputReadinessState": INPUT_READINESS_STATES,
}
# Type 2 on N-CREATE: present, possibly empty; the server adds what is missing (created with modifications).
TYPE2 = (
    "WorklistLabel", "ScheduledWorkitemCodeSequence", "InputInformationSequence",
    "PatientName", "PatientBirthDate", "PatientSex", "ReferencedRequestSequence",
    "ScheduledStationNameCodeSequence", "ScheduledStationClassCodeSequence",
    "ScheduledStationGeographicLocationCodeSequence", "CommentsOnTheScheduledProcedureStep",
    "ScheduledProcessingParametersSequence", "ProcedureStepProgressInformationSequence",
    "UnifiedProcedureStepPerformedProcedureSequence",
)
# Type 2 on N-CREATE but must be empty then: a new workitem has no progress and no performed procedure.
EMPTY_ON_CREATE = ("ProcedureStepProgressInformationSequence", "UnifiedProcedureStepPerformedProcedureSequence")
# Patient attributes: N-SET may not change them.
PATIENT_ATTRIBUTES = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                      "OtherPatientIDsSequence", "IssuerOfPatientIDQualifiersSequence")
# Set by the server: an N-SET cannot choose them.
SERVER_ATTRIBUTES = ("SOPClassUID", "ScheduledProcedureStepModificationDateTime")
DATETIME_ATTRIBUTES = ("ScheduledProcedureStepStartDateTime", "ExpectedCompletionDateTime")
UID_ATTRIBUTES = ("SOPInstanceUID", "StudyInstanceUID")
RETRIEVAL_SEQUENCES = ("DICOMRetrievalSequence", "DICOMMediaRetrievalSequence", "WADORetrievalSequence",
                       "XDSRetrievalSequence", "WADORSRetrievalSequence")


def _missing(keyword: str, where: str = "", status: str = Status.MISSING_ATTRIBUTE) -> UPSError:
    return bad_request(f"{describe(keyword)} is required{where} and has no value", status)


def validate_create(ds: Dataset) -> bool:
    """Check an N-CREATE dataset and add the missing Type 2 attributes; True when something was added."""
    state = text_value(ds, "ProcedureStepState")
    if state != SCHEDULED:
        raise bad_request(f"(0074,1000) ProcedureStepState must be SCHEDULED on creation, not {state!r}",
                          Status.CREATED_WRONG_STATE)
    if has_value(ds, "TransactionUID"):
        raise bad_request("(0008,1195) TransactionUID must be empty on creation", Status.INVALID_ATTRIBUTE_VALUE)
    for keyword in TYPE1:
        if not has_value(ds, keyword):
            raise _missing(keyword, " on creation (Type 1)")
    for keyword in EMPTY_ON_CREATE:
        if has_value(ds, keyword):
            raise bad_request(f"{describe(keyword)} must be empty on creation")
    if has_value(ds, "PatientName") and not has_value(ds, "PatientID"):
        raise _missing("PatientID", " when (0010,0010) PatientName has a value (Type 1C)")
    validate_values(ds)
    missing = [keyword for keyword in TYPE2 if keyword not in ds]
    for keyword in missing:
        setattr(ds, keyword, [] if keyword.endswith("Sequence") else None)
    return bool(missing)


def validate_update(ds: Dataset, uid: str) -> None:
    """Check an N-SET dataset (the Transaction UID already taken out)."""
    forbidden = [k for k in ("ProcedureStepState", *PATIENT_ATTRIBUTES, *SERVER_ATTRIBUTES) if k in ds]
    if forbidden:
        raise bad_request(f"{describe(forbidden[0])} cannot be changed by an update "
                          f"(use the state transaction for the state; patient attributes are fixed)")
    if "SOPInstanceUID" in ds and text_value(ds, "SOPInstanceUID") != uid:
        raise bad_request(f"(0008,0018) SOPInstanceUID {text_value(ds, 'SOPInstanceUID')!r} does not match "
                          f"the workitem {uid}")
    for keyword in TYPE1:
        if keyword in ds and not has_value(ds, keyword):
            raise _missing(keyword, " (Type 1: an update cannot empty it)")
    validate_values(ds)


def validate_values(ds: Dataset) -> None:
    """Value checks shared by create and update; only attributes that are present are checked."""
    for keyword, allowed in TYPE1.items():
        _check_enumerated(ds, keyword, allowed)
    _check_enumerated(ds, "PatientSex", ("M", "F", "O"))
    for keyword in DATETIME_ATTRIBUTES:
        _check_format(ds, keyword, _DT, "a DICOM DT (YYYYMMDDHHMMSS[.FFFFFF][&ZZXX])")
    _check_format(ds, "PatientBirthDate", _DA, "a DICOM DA (YYYYMMDD)")
    for keyword in UID_ATTRIBUTES:
        value = text_value(ds, keyword)
        if value is not None and not UID(value).is_valid:
            raise bad_request(f"{describe(keyword)} {value!r} is not a valid UID")
    _check_workitem_code(ds)
    for index, item in enumerate(_items(ds, "InputInformationSequence")):
        _check_input_item(item, index)


def _check_enumerated(ds: Dataset, keyword: str, allowed: Iterable[str] | None) -> None:
    value = text_value(ds, keyword)
    if allowed is not None and value is not None and value not in allowed:
        raise bad_request(f"{describe(keyword)} {value!r} is not one of {', '.join(allowed)}")


def _check_format(ds: Dataset, keyword: str, pattern: re.Pattern, what: str) -> None:
    value = text_value(ds, keyword)
    if value is not None and not pattern.match(value):
        raise bad_request(f"{describe(keyword)} {value!r} is not {what}")


def _items(ds: Dataset, keyword: str) -> list[Dataset]:
    return list(ds[keyword].value) if has_value(ds, keyword) else []


def _check_workitem_code(ds: Dataset) -> None:
    items = _items(ds, "ScheduledWorkitemCodeSequence")
    if len(items) > 1:
        raise bad_request("(0040,4018) ScheduledWorkitemCodeSequence may hold only one item")
    for keyword in ("CodeValue", "CodingSchemeDesignator"):
        if items and not has_value(items[0], keyword):
            raise _missing(keyword, " in (0040,4018) ScheduledWorkitemCodeSequence")


def _check_input_item(item: Dataset, index: int) -> None:
    where = f" in (0040,4021) InputInformationSequence item {index + 1}"
    required = ["TypeOfInstances", "ReferencedSOPSequence"]
    if text_value(item, "TypeOfInstances") == "DICOM":
        required += ["StudyInstanceUID", "SeriesInstanceUID"]
    for keyword in required:
        if not has_value(item, keyword):
            raise _missing(keyword, where)
    for ref in item.ReferencedSOPSequence:
        for keyword in ("ReferencedSOPClassUID", "ReferencedSOPInstanceUID"):
            if not has_value(ref, keyword):
                raise _missing(keyword, where + " > (0008,1199) ReferencedSOPSequence")
    if not any(has_value(item, keyword) for keyword in RETRIEVAL_SEQUENCES):
        raise bad_request(f"A retrieval sequence (e.g. (0040,E025) WADORSRetrievalSequence) is required{where}",
                          Status.MISSING_ATTRIBUTE)


# -- final states -----------------------------------------------------------------------------------------

_COMPLETED_VALUES = ("PerformedStationNameCodeSequence", "PerformedProcedureStepStartDateTime",
                     "PerformedProcedureStepEndDateTime", "PerformedWorkitemCodeSequence")
_CANCELED_VALUES = ("ProcedureStepCancellationDateTime", "ProcedureStepDiscontinuationReasonCodeSequence")


def check_final_requirements(uid: str, state: str, ds: Dataset) -> None:
    """409 (C304) unless the dataset meets the requirements to become ``state``."""
    values: tuple[str, ...]
    present: tuple[str, ...]
    if state == COMPLETED:
        sequence, values, present = "UnifiedProcedureStepPerformedProcedureSequence", _COMPLETED_VALUES, \
            ("OutputInformationSequence",)
    elif state == CANCELED:
        sequence, values, present = "ProcedureStepProgressInformationSequence", _CANCELED_VALUES, ()
    else:
        return
    items = _items(ds, sequence)
    item = items[0] if items else Dataset()
    lacking = [k for k in values if not has_value(item, k)] + [k for k in present if k not in item]
    if lacking:
        raise conflict(f"Workitem {uid} cannot become {state}: {describe(sequence)} lacks "
                       f"{', '.join(describe(k) for k in lacking)}", Status.FINAL_REQUIREMENTS_NOT_MET)
