"""DICOM JSON payloads (PS3.18 Annex F) to and from pydicom datasets, and attribute-name resolution."""

from __future__ import annotations

import json
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from .errors import bad_request


def parse_payload(body: bytes | str | dict | list) -> Dataset:
    """Decode a request payload: one DICOM JSON dataset, as an object or a one-element array."""
    payload: Any = body
    if isinstance(body, (bytes, str)):
        try:
            payload = json.loads(body or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise bad_request(f"The payload is not valid JSON: {exc}") from exc
    if isinstance(payload, list):
        if len(payload) != 1:
            raise bad_request(f"The payload must hold exactly one dataset, it holds {len(payload)}")
        payload = payload[0]
    if not isinstance(payload, dict):
        raise bad_request("The payload is not a DICOM JSON dataset (expected a JSON object)")
    return from_json(payload)


def from_json(data: dict) -> Dataset:
    """A pydicom dataset from a DICOM JSON object; a malformed object is a 400 naming the problem."""
    try:
        return Dataset.from_json(data)
    except Exception as exc:  # pydicom raises several types for malformed DICOM JSON
        raise bad_request(f"The payload is not a valid DICOM JSON dataset: {exc}") from exc


def to_json(ds: Dataset) -> dict:
    return ds.to_json_dict()


def tag_key(tag: int) -> str:
    """The DICOM JSON key of a tag, e.g. ``00100020``."""
    return f"{int(tag):08X}"


def resolve_tag(name: str) -> BaseTag:
    """A tag from a keyword (``PatientID``) or eight hex digits (``00100020``); 400 when it is neither."""
    text = name.strip()
    if len(text) == 8 and all(c in "0123456789abcdefABCDEF" for c in text):
        return Tag(int(text, 16))
    tag = tag_for_keyword(text)
    if tag is None:
        raise bad_request(f"Unknown attribute {name!r}: not a DICOM keyword or tag")
    return Tag(tag)


def describe(attribute: int | str) -> str:
    """``(0010,0020) PatientID`` for messages, from a tag or a keyword."""
    tag = Tag(attribute)
    keyword = keyword_for_tag(tag) or "private/unknown"
    return f"({tag.group:04X},{tag.element:04X}) {keyword}"


def vr_of(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


def has_value(ds: Dataset, keyword: str) -> bool:
    """True when the attribute is present with a non-empty value."""
    return keyword in ds and not ds[keyword].is_empty


def text_value(ds: Dataset, keyword: str) -> str | None:
    """The first value of an attribute as text (``None`` when absent or empty)."""
    if not has_value(ds, keyword):
        return None
    value = ds[keyword].value
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0]
    return str(value)


def first_item(ds: Dataset, keyword: str) -> Dataset | None:
    """The first item of a sequence attribute, or ``None``."""
    if not has_value(ds, keyword):
        return None
    return ds[keyword].value[0]
