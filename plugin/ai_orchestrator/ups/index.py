"""The search columns the store keeps beside each workitem's DICOM JSON, and how they are derived.

Written once here; the store fills them on every write and the search builds SQL on them.
Works on DICOM JSON dicts (not pydicom datasets) so bulk writes stay cheap.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydicom.datadict import tag_for_keyword

from .constants import PRIORITIES

# column -> attribute path (keywords; a sequence keyword is followed by an attribute of its first item)
COLUMN_PATHS: dict[str, tuple[str, ...]] = {
    "state": ("ProcedureStepState",),
    "priority": ("ScheduledProcedureStepPriority",),
    "label": ("ProcedureStepLabel",),
    "worklist_label": ("WorklistLabel",),
    "start_datetime": ("ScheduledProcedureStepStartDateTime",),
    "expected_completion": ("ExpectedCompletionDateTime",),
    "input_readiness": ("InputReadinessState",),
    "patient_name": ("PatientName",),
    "patient_id": ("PatientID",),
    "patient_birth_date": ("PatientBirthDate",),
    "patient_sex": ("PatientSex",),
    "study_instance_uid": ("StudyInstanceUID",),
    "code_value": ("ScheduledWorkitemCodeSequence", "CodeValue"),
    "code_scheme": ("ScheduledWorkitemCodeSequence", "CodingSchemeDesignator"),
}
DATETIME_COLUMNS = frozenset({"start_datetime", "expected_completion"})
DATE_COLUMNS = frozenset({"patient_birth_date"})
ACCESSION_PATH = ("ReferencedRequestSequence", "AccessionNumber")


def _key(keyword: str) -> str:
    return f"{tag_for_keyword(keyword):08X}"


def _values(element: dict | None) -> list[Any]:
    return list((element or {}).get("Value") or [])


def _text(value: Any) -> str:
    """A DICOM JSON value as text (PN objects give their alphabetic group)."""
    if isinstance(value, dict):
        return str(value.get("Alphabetic", ""))
    return str(value)


def path_values(dataset: dict, path: tuple[str, ...]) -> list[str]:
    """All values at ``path``: every item of each sequence on the way, every value of the leaf."""
    level = [dataset]
    for keyword in path[:-1]:
        level = [item for ds in level for item in _values(ds.get(_key(keyword)))]
    return [_text(v) for ds in level for v in _values(ds.get(_key(path[-1])))]


def range_key(value: str, width: int, upper: bool = False, fraction: bool = True) -> str:
    """A sortable text key for a DA/DT value or range bound, missing digits padded.

    Lower bounds and stored values pad with 0, upper bounds with 9, so that ``20240101`` as an upper bound
    covers the whole day. A DT with a UTC offset is moved to UTC first (to the minute it names; a value without
    offset is taken as UTC), so that values written in different time zones compare as instants.
    """
    text = value.strip()
    offset = ""
    for sign in "+-":
        if sign in text[4:]:
            cut = 4 + text[4:].index(sign)
            text, offset = text[:cut], text[cut:]
    digits, _, frac = text.partition(".")
    if offset and fraction and len(digits) >= 12 and _is_offset(offset):
        digits = _to_utc(digits, offset)
    pad = "9" if upper else "0"
    key = digits.ljust(width, pad)[:width]
    return f"{key}.{frac.ljust(6, pad)[:6]}" if fraction else key


def _is_offset(offset: str) -> bool:
    return len(offset) == 5 and offset[1:].isdigit() and int(offset[1:3]) <= 14 and int(offset[3:]) < 60


def _to_utc(digits: str, offset: str) -> str:
    """``YYYYMMDDHHMM[SS]`` at UTC ``offset`` (``+hhmm``/``-hhmm``) as the same digits in UTC."""
    try:
        local = datetime.strptime(digits[:12], "%Y%m%d%H%M")
    except ValueError:
        return digits  # not a calendar date: left as written, validation reports it elsewhere
    shift = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
    utc = local - shift if offset[0] == "+" else local + shift
    return utc.strftime("%Y%m%d%H%M") + digits[12:]


def datetime_key(value: str, upper: bool = False) -> str:
    return range_key(value, 14, upper)


def date_key(value: str, upper: bool = False) -> str:
    return range_key(value, 8, upper, fraction=False)


def _normalized(column: str, value: str | None) -> str | None:
    if not value:
        return None
    if column in DATETIME_COLUMNS:
        return datetime_key(value)
    if column in DATE_COLUMNS:
        return date_key(value)
    return value


def index_columns(dataset: dict) -> dict[str, Any]:
    """The search column values of one workitem (DICOM JSON), ``priority_rank`` included."""
    columns: dict[str, Any] = {}
    for column, path in COLUMN_PATHS.items():
        values = path_values(dataset, path)
        columns[column] = _normalized(column, values[0] if values else None)
    priority = columns["priority"]
    columns["priority_rank"] = PRIORITIES.index(priority) if priority in PRIORITIES else len(PRIORITIES)
    return columns


def accession_numbers(dataset: dict) -> list[str]:
    return sorted({v for v in path_values(dataset, ACCESSION_PATH) if v})
