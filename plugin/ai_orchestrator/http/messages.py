"""Plain request/response values passed between the entry module and the REST adapters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson  # ten times faster than json.dumps on search answers of 100 workitems

DICOM_JSON = "application/dicom+json"


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
