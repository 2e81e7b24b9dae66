"""Plain request/response values passed between the entry module and the REST adapters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson  # ten times faster than json.dumps on search answers of 100 workitems

from ..store.workitems import StoreBusy, StoreFull
from ..ups.dicom_json import MAX_JSON_DEPTH, nests_too_deep

DICOM_JSON = "application/dicom+json"
MAX_BODY = 64 * 1024 * 1024  # the largest request body either front door takes (413 beyond)
BUSY_RETRY_AFTER_S = 5


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # relative to the plugin root, e.g. "/workitems/1.2.3/state"
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    base_url: str = "http://localhost:8042/ai-orchestrator"  # absolute URL of the plugin root, for Location


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def json(cls, payload: Any, status: int = 200, content_type: str = "application/json",
             headers: dict[str, str] | None = None) -> Response:
        return cls(status, {"Content-Type": content_type, **(headers or {})}, orjson.dumps(payload))

    @classmethod
    def error(cls, status: int, message: str, dicom_status: str | None = None) -> Response:
        payload = {"error": message}
        if dicom_status:
            payload["status"] = dicom_status
        return cls.json(payload, status)


def refused_body(body: bytes) -> Response | None:
    """The answer to a body no route takes, before any route parses it: too large (413), or JSON nesting deeper than
    any dataset does (400; parsing it would recurse past the small stacks of Orthanc's HTTP threads)."""
    if len(body) > MAX_BODY:
        return Response.error(413, f"the request body holds {len(body)} bytes, more than the {MAX_BODY} accepted")
    if nests_too_deep(body):
        return Response.error(400, f"the request body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels")
    return None


def store_failure(error: BaseException) -> Response | None:
    """The answer when the store could not take a change: 507 when its disk is full, 503 (with Retry-After) when
    another process kept it locked; None for any other error. Nothing was written either way."""
    if isinstance(error, StoreFull):
        return Response.error(507, f"Insufficient storage, nothing was changed: {error}")
    if isinstance(error, StoreBusy):
        answer = Response.error(503, f"The workitem store is busy, nothing was changed; try again: {error}")
        answer.headers["Retry-After"] = str(BUSY_RETRY_AFTER_S)
        return answer
    return None
