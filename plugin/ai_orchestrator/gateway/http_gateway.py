"""The Orthanc gateway over Orthanc's HTTP REST API (httpx), for tests, benchmarks and external tools."""

from __future__ import annotations

import json
from typing import Any

import httpx

from .protocol import OrthancError, ResourceNotFound

# Orthanc's HTTP server closes a connection idle for about 1 s (KeepAliveTimeout since 1.11.3, built in before). A
# client that reuses it just then gets "server disconnected"; expiring idle connections sooner avoids that race.
ORTHANC_CONNECTION_LIMITS = httpx.Limits(keepalive_expiry=0.5)


class HttpGateway:
    """The gateway over Orthanc's HTTP REST API (httpx)."""

    def __init__(self, client: httpx.Client):
        self._client = client

    @classmethod
    def connect(cls, base_url: str, auth: tuple[str, str] | None = None, timeout: float = 300.0) -> HttpGateway:
        return cls(httpx.Client(base_url=base_url, auth=auth, timeout=timeout, limits=ORTHANC_CONNECTION_LIMITS))

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code == 404:
            raise ResourceNotFound(f"{response.request.method} {response.request.url.path}: no such resource", 404)
        if response.is_error:
            raise OrthancError(f"{response.request.method} {response.request.url.path}: "
                               f"HTTP {response.status_code} {response.text[:200]}", response.status_code)
        return response

    def get_json(self, uri: str) -> Any:
        return self._check(self._client.get(uri)).json()

    def get_instance_dicom(self, instance_id: str) -> bytes:
        return self._check(self._client.get(f"/instances/{instance_id}/file")).content

    def post_json(self, uri: str, body: Any) -> Any:
        response = self._check(self._client.post(uri, content=json.dumps(body)))
        return response.json() if response.content else None

    def post_instance(self, dicom: bytes) -> dict:
        return self._check(self._client.post("/instances", content=dicom,
                                             headers={"Content-Type": "application/dicom"})).json()

    def put(self, uri: str, body: bytes = b"") -> None:
        self._check(self._client.put(uri, content=body))

    def delete(self, uri: str) -> None:
        self._check(self._client.delete(uri))

    def close(self) -> None:
        self._client.close()
