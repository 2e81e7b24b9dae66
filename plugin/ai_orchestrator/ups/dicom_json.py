"""DICOM JSON payloads (PS3.18 Annex F) to and from pydicom datasets, and attribute-name resolution."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from itertools import accumulate
from typing import Any

from pydicom import Dataset
from pydicom.config import RAISE
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import VR, validate_value

from .errors import bad_request

# How deep arrays and objects may nest in a request's JSON. A DICOM JSON dataset nests three levels per sequence
# (attribute, Value, item), so 48 allows 15 levels of sequences; real workitems use 4. Deeper text is refused
# before it is parsed: parsing recurses, and Orthanc runs the plugin's REST callbacks on HTTP threads with 100 KiB
# stacks, where a few hundred levels overflow the stack and kill Orthanc (SIGSEGV), far below Python's own limit.
MAX_JSON_DEPTH = 48
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
_VRS = frozenset(vr.value for vr in VR)
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


def nests_too_deep(text: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects nest deeper than ``limit`` in a JSON text, measured without parsing it
    (nothing recurses; the strings' contents are left out)."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(1 if c in b"[{" else -1 for c in brackets), default=0) > limit


def load_json(text: bytes | str) -> Any:
    """A request's JSON; 400 when it is not JSON in UTF-8 or nests deeper than :data:`MAX_JSON_DEPTH`."""
    if nests_too_deep(text):
        raise bad_request(f"The payload nests arrays and objects deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text or b"{}", parse_constant=_no_constant, parse_float=_finite)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"The payload is not valid JSON: {exc}") from exc
    except _NotANumber as exc:
        raise bad_request(f"The payload is not valid JSON: {exc}") from exc


class _NotANumber(ValueError):
    pass


def _no_constant(name: str) -> float:
    """Python's json reads NaN and Infinity, which JSON (RFC 8259 §6) and so DICOM JSON (PS3.18 §F.2.3) do not
    have: stored, they could not be written back as JSON."""
    raise _NotANumber(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotANumber(f"{text} is beyond the range of a double (FD)")
    return value


def parse_payload(body: bytes | str | dict | list) -> Dataset:
    """Decode a request payload: one DICOM JSON dataset, as an object or a one-element array, whose attributes
    have the VR the DICOM dictionary gives them and values valid for that VR (400 naming the attribute)."""
    payload: Any = load_json(body) if isinstance(body, (bytes, str)) else body
    if isinstance(payload, list):
        if len(payload) != 1:
            raise bad_request(f"The payload must hold exactly one dataset, it holds {len(payload)}")
        payload = payload[0]
    if not isinstance(payload, dict):
        raise bad_request("The payload is not a DICOM JSON dataset (expected a JSON object)")
    _check_encoding(payload)
    ds = from_json(payload)
    check_values(ds)
    return ds


def _check_encoding(payload: dict) -> None:
    """What pydicom would take silently: a key that is no tag, a VR that does not exist or is not the attribute's,
    binary data by reference (BulkDataURI: nothing here fetches it) or inline in something other than base64."""
    pending: list[tuple[dict, str]] = [(payload, "")]
    while pending:
        dataset, where = pending.pop()
        for key, element in dataset.items():
            if not (isinstance(key, str) and len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key)):
                raise bad_request(f"{key!r}{where} is not a DICOM JSON attribute key (eight hex digits)")
            name = describe(int(key, 16)) + where
            if not isinstance(element, dict):
                raise bad_request(f"{name} must be an object with a \"vr\"")
            vr = element.get("vr")
            if not isinstance(vr, str) or vr not in _VRS:
                raise bad_request(f"{name}: {vr!r} is not a DICOM VR")
            expected = _dictionary_vrs(int(key, 16))
            if expected and vr not in expected:
                raise bad_request(f"{name} has the VR {vr}; its VR is {' or '.join(sorted(expected))}")
            if "BulkDataURI" in element:
                raise bad_request(f"{name}: BulkDataURI is not accepted, send the value as InlineBinary")
            if "InlineBinary" in element:
                _check_inline_binary(name, vr, element["InlineBinary"])
            if vr == "SQ" and isinstance(element.get("Value"), list):
                pending.extend((item, f" in {name} item {n + 1}") for n, item in enumerate(element["Value"])
                               if isinstance(item, dict))


def _dictionary_vrs(tag: int) -> frozenset[str]:
    """The VRs the dictionary allows for a tag ("US or SS" is two); empty for private and unknown tags."""
    if (tag >> 16) % 2:
        return frozenset()
    try:
        return frozenset(dictionary_VR(tag).split(" or "))
    except KeyError:
        return frozenset()


def _check_inline_binary(name: str, vr: str, value: object) -> None:
    if vr not in _BINARY_VRS:
        raise bad_request(f"{name}: InlineBinary is for binary VRs (OB, OW, UN...), not {vr}")
    try:
        if not isinstance(value, str):
            raise TypeError("not a string")
        base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise bad_request(f"{name}: InlineBinary is not base64 ({exc})") from exc


def check_values(ds: Dataset, where: str = "") -> None:
    """400 naming the first value that is not valid for its VR (length, characters, range; PS3.5 6.2)."""
    for element in ds:
        name = describe(element.tag) + where
        if element.VR == "SQ":
            for number, item in enumerate(element.value or []):
                check_values(item, f" in {name} item {number + 1}")
            continue
        if element.VR in _BINARY_VRS or element.value is None:
            continue
        values = element.value if isinstance(element.value, (list, tuple, MultiValue)) else [element.value]
        for value in values:
            if value is None or value == "":
                continue
            if element.VR in ("DS", "IS") and isinstance(value, (int, float)):  # a JSON number (PS3.18 F.2.3)
                if not math.isfinite(value):
                    raise bad_request(f"{name} {value!r} is not a valid {element.VR} value: not a finite number")
                continue
            try:
                validate_value(element.VR, value, RAISE)
            except (ValueError, TypeError) as exc:
                reason = str(exc).split(" Please see ")[0]
                raise bad_request(f"{name} {str(value)[:80]!r} is not a valid {element.VR} value: {reason}") from exc


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
    tag = tag_for_keyword(text) if text else None  # pydicom's dictionary has entries without a keyword
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
