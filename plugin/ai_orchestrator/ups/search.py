"""Search Workitems query parameters (PS3.18 §11.9) to SQL on the store's search columns.

Every supported key maps to an indexed column (or the accession side table), and every match is decided
by SQL exactly, so ``offset``/``limit`` page straight in the database and stay idempotent.
Wildcards ``*``/``?`` on text VRs (GLOB: literal, case-sensitive), ranges ``from-to`` with open ends on
DA/DT (a single value covers its own precision: ``20240101`` is the whole day), UID lists on UI.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pydicom.datadict import keyword_for_tag
from pydicom.tag import BaseTag
from pydicom.uid import UID

from . import criteria
from .constants import Warnings
from .criteria import MATCH_ALL, Condition
from .dicom_json import describe, resolve_tag, tag_key, vr_of
from .errors import bad_request
from .index import ACCESSION_PATH, COLUMN_PATHS, date_key, datetime_key

MAX_LIMIT = 1000
MAX_INTEGER = 2**63 - 1  # offset and limit go to SQLite, whose integers are 64-bit
CONTROL_KEYS = ("includefield", "fuzzymatching", "offset", "limit")
_TEXT_VRS = frozenset({"AE", "CS", "LO", "PN", "SH", "LT", "ST", "UC"})

_ACCESSION = "accession"
# attribute path (keywords) -> column; the accession side table has its own marker
MATCH_COLUMNS: dict[tuple[str, ...], str] = {
    **{path: column for column, path in COLUMN_PATHS.items()},
    ("SOPInstanceUID",): "uid",
    ACCESSION_PATH: _ACCESSION,
}

# Returned when no includefield asks for more (the Type 1/2 return keys of Table CC.2.5-3, top level).
DEFAULT_RETURN_KEYWORDS = (
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "ScheduledProcedureStepModificationDateTime",
    "ProcedureStepState", "ScheduledProcedureStepPriority", "ProcedureStepLabel", "WorklistLabel",
    "ScheduledProcedureStepStartDateTime", "ExpectedCompletionDateTime", "ScheduledWorkitemCodeSequence",
    "InputReadinessState", "InputInformationSequence", "StudyInstanceUID", "PatientName", "PatientID",
    "PatientBirthDate", "PatientSex", "ReferencedRequestSequence", "ProcedureStepProgressInformationSequence",
)


@dataclass(frozen=True)
class SearchQuery:
    where: Condition
    offset: int
    limit: int
    return_keys: frozenset[str] | None  # DICOM JSON keys; None: every attribute
    warnings: tuple[str, ...] = field(default=())


def parse(query: Mapping[str, str]) -> SearchQuery:
    """Parse the query parameters; 400 naming the key for anything unknown, unsupported or malformed."""
    warnings: list[str] = []
    controls = {k.lower(): v for k, v in query.items() if k.lower() in CONTROL_KEYS}
    parts, returned = [], {tag_key(resolve_tag(k)) for k in DEFAULT_RETURN_KEYWORDS}
    for key, value in query.items():
        if key.lower() in CONTROL_KEYS:
            continue
        path = _match_path(key)
        returned.add(tag_key(resolve_tag(path[0])))
        parts.append(_condition(key, path, value.strip()))
    include = _include(controls.get("includefield", ""))
    limit = _integer(controls, "limit", MAX_LIMIT, minimum=1)
    if limit > MAX_LIMIT:
        warnings.append(Warnings.limit_capped(MAX_LIMIT))
        limit = MAX_LIMIT
    fuzzy = controls.get("fuzzymatching", "false").strip().lower()
    if fuzzy not in ("true", "false"):
        raise bad_request(f"fuzzymatching must be true or false, not {controls['fuzzymatching']!r}")
    if fuzzy == "true":
        warnings.append(Warnings.FUZZY_NOT_SUPPORTED)
    return SearchQuery(criteria.all_of(parts), _integer(controls, "offset", 0, minimum=0), limit,
                       None if include is None else frozenset(returned | include), tuple(warnings))


def _match_path(key: str) -> tuple[str, ...]:
    tags = [resolve_tag(part) for part in key.split(".")]
    path = tuple(keyword_for_tag(tag) for tag in tags)
    if path[0] == "TransactionUID":
        raise bad_request("(0008,1195) TransactionUID cannot be a search key: it is never disclosed")
    sequence_alone = len(path) == 1 and any(len(p) > 1 and p[0] == path[0] for p in MATCH_COLUMNS)
    if path not in MATCH_COLUMNS and not sequence_alone:
        raise bad_request(f"Search key {key!r} ({'.'.join(describe(t) for t in tags)}) is not supported")
    return path


def _condition(key: str, path: tuple[str, ...], value: str) -> Condition:
    if not value or value == "*":
        return MATCH_ALL  # universal matching: returns the attribute, matches everything
    if path not in MATCH_COLUMNS:
        raise bad_request(f"Search key {key!r}: a sequence matches through one of its attributes, e.g. "
                          f"{key}.CodeValue={value}")
    column, vr = MATCH_COLUMNS[path], vr_of(resolve_tag(path[-1]))
    if column == _ACCESSION:
        return criteria.accession(*_pattern(value))
    if vr == "UI":
        return criteria.one_of(column, _uid_list(key, value))
    if vr in ("DA", "DT"):
        return _range(key, column, value, datetime_key if vr == "DT" else date_key)
    pattern, wildcard = _pattern(value)
    return criteria.glob(column, pattern) if wildcard else criteria.equals(column, pattern)


def _pattern(value: str) -> tuple[str, bool]:
    """The GLOB pattern for a DICOM match value (``[`` escaped), and whether it holds wildcards."""
    wildcard = "*" in value or "?" in value
    return (value.replace("[", "[[]") if wildcard else value), wildcard


def _uid_list(key: str, value: str) -> list[str]:
    uids = [u.strip() for u in value.replace("\\", ",").split(",") if u.strip()]
    for uid in uids:
        if not UID(uid).is_valid:
            raise bad_request(f"Search key {key!r}: {uid!r} is not a valid UID")
    return uids


def _range(key: str, column: str, value: str, to_key: Callable[..., str]) -> Condition:
    low, sep, high = value.partition("-")
    if not sep:
        high = low
    for bound in (low, high):
        if bound and not bound.replace(".", "").isdigit():
            raise bad_request(f"Search key {key!r}: {value!r} is not a date/time or a from-to range")
    if not low and not high:
        raise bad_request(f"Search key {key!r}: the range {value!r} has no bound")
    return criteria.between(column, to_key(low) if low else None, to_key(high, upper=True) if high else None)


def _include(value: str) -> set[str] | None:
    """The DICOM JSON keys asked by includefield; None for ``all``."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    if any(n.lower() == "all" for n in names):
        return None
    keys = set()
    for name in names:
        path: list[BaseTag] = [resolve_tag(part) for part in name.split(".")]  # every part names an attribute
        tag = path[0]
        if keyword_for_tag(tag) == "TransactionUID":
            raise bad_request("includefield: (0008,1195) TransactionUID is never returned")
        keys.add(tag_key(tag))
    return keys


def _integer(query: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = query.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or not minimum <= int(raw) <= MAX_INTEGER:
        raise bad_request(f"{name} must be a whole number from {minimum} to {MAX_INTEGER}, not {raw[:40]!r}")
    return int(raw)


def select_attributes(dataset: dict, keys: frozenset[str] | None) -> dict:
    """The part of a stored DICOM JSON dataset a search returns."""
    if keys is None:
        return dataset
    return {k: v for k, v in dataset.items() if k in keys}
