"""What a request payload must be before anything parses or stores it: JSON no deeper than a dataset nests, attributes
with the dictionary's VR, values valid for their VR, binary data inline in base64; search integers SQLite can hold."""

from __future__ import annotations

import json
import threading

import pytest

from ai_orchestrator.http.messages import MAX_BODY, refused_body
from ai_orchestrator.ups import search
from ai_orchestrator.ups.dicom_json import MAX_JSON_DEPTH, nests_too_deep, parse_payload, resolve_tag
from ai_orchestrator.ups.errors import UPSError


@pytest.mark.parametrize("text, deep", [
    ("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, False),
    ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), True),
    ('{"a": "' + "[{" * 500 + '"}', False),  # brackets inside a string do not nest
    ('{"a": "\\"' + "[" * 500 + '"}', False),  # nor after an escaped quote
    ('[' * 60 + '"\\\\"' + ']' * 60, True),
    ('{"a":' * 100 + "1" + "}" * 100, True),
    ("[]" * 10_000, False),  # many, side by side
])
def test_nesting_is_measured_without_parsing(text, deep):
    assert nests_too_deep(text) is deep
    assert nests_too_deep(text.encode()) is deep


def test_a_deep_body_is_refused_before_parsing_even_on_a_100_kib_stack():
    """Orthanc runs REST callbacks on threads with 100 KiB stacks: the guard itself must not recurse."""
    answers: list = []
    threading.stack_size(100 * 1024)
    try:
        thread = threading.Thread(target=lambda: answers.append(refused_body(b"[" * 1_000_000 + b"]" * 1_000_000)))
        thread.start()
        thread.join()
    finally:
        threading.stack_size(0)
    assert answers[0].status == 400 and b"deeper than" in answers[0].body
    assert refused_body(b" " * (MAX_BODY + 1)).status == 413
    assert refused_body(b'{"00100020": {"vr": "LO", "Value": ["X"]}}') is None


def _refusal(payload) -> str:
    with pytest.raises(UPSError) as refused:
        parse_payload(json.dumps(payload) if not isinstance(payload, bytes) else payload)
    assert refused.value.http_status == 400
    return refused.value.message


@pytest.mark.parametrize("payload, names", [
    ({"00100010": {"vr": "SQ", "Value": [{}]}}, "its VR is PN"),
    ({"00100020": {"vr": "ZZ", "Value": ["X"]}}, "'ZZ' is not a DICOM VR"),
    ({"00100020": {"vr": {"x": 1}, "Value": ["X"]}}, "is not a DICOM VR"),
    ({"00100020": {"Value": ["X"]}}, "None is not a DICOM VR"),
    ({"00100020": "X"}, "must be an object"),
    ({"PatientID": {"vr": "LO", "Value": ["X"]}}, "eight hex digits"),
    ({"00100020": {"vr": "LO", "Value": ["A" * 65]}}, "maximum length of 64"),
    ({"00741200": {"vr": "CS", "Value": ["medium"]}}, "not a valid CS value"),
    ({"00280010": {"vr": "US", "Value": [70000]}}, "between 0 and 65535"),
    ({"00080018": {"vr": "UI", "Value": ["1.02.3"]}}, "not a valid UI value"),
    ({"00741002": {"vr": "SQ", "Value": [{"00741004": {"vr": "DS", "Value": ["NaN"]}}]}}, "not a finite"),
    ({"00741002": {"vr": "SQ", "Value": [{"00741004": {"vr": "LO", "Value": ["5"]}}]}},
     "(0074,1004) ProcedureStepProgress in (0074,1002) ProcedureStepProgressInformationSequence item 1"),
    ({"00420011": {"vr": "OB", "InlineBinary": "!!"}}, "not base64"),
    ({"00100020": {"vr": "LO", "InlineBinary": "AAAA"}}, "binary VRs"),
    ({"00420011": {"vr": "OB", "BulkDataURI": "file:///etc/passwd"}}, "BulkDataURI is not accepted"),
    (b"[" * 100 + b"]" * 100, "deeper than"),
    # JSON has no NaN or infinity (Python's json reads them): stored, they could not be answered as JSON
    (b'{"00189087": {"vr": "FD", "Value": [NaN]}}', "NaN is not a JSON number"),
    (b'{"00189087": {"vr": "FD", "Value": [-Infinity]}}', "-Infinity is not a JSON number"),
    (b'{"00189087": {"vr": "FD", "Value": [1e400]}}', "1e400 is beyond the range of a double"),
])
def test_payloads_pydicom_would_take_are_refused_naming_the_attribute(payload, names):
    assert names in _refusal(payload)


def test_valid_payloads_pass():
    ds = parse_payload(json.dumps({
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00741002": {"vr": "SQ", "Value": [{"00741004": {"vr": "DS", "Value": [50]}}]},
        "00280106": {"vr": "US", "Value": [0]},  # "US or SS" in the dictionary
        "00110010": {"vr": "LO", "Value": ["PRIVATE"]},
        "00111001": {"vr": "UN", "InlineBinary": "AAAA"},  # private: any VR
        "00081195": {"vr": "UI"},
    }))
    assert str(ds.PatientName) == "Doe^Jane"


@pytest.mark.parametrize("query", [{"offset": "99999999999999999999999"}, {"limit": "\u00b2"}, {"limit": "-1"},
                                   {"includefield": "../../etc/passwd"}, {"includefield": "PatientID."}])
def test_search_refuses_integers_sqlite_cannot_hold_and_empty_attribute_names(query):
    with pytest.raises(UPSError) as refused:
        search.parse(query)
    assert refused.value.http_status == 400


def test_an_empty_name_is_no_attribute():
    with pytest.raises(UPSError):
        resolve_tag("")
