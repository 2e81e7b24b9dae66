"""How the plain-Python parts of the plugin talk to Orthanc: the gateway protocol and its errors.

Inside Orthanc, the entry module hands out an in-process gateway (``orthanc.RestApiGet`` and friends,
no HTTP, no auth). Tests, benchmarks and external tools use :class:`~.http_gateway.HttpGateway` over Orthanc's
REST API. Both speak Orthanc's own REST URIs (``/studies/{id}``, ``/instances``...) and raise the errors below,
so code written against the protocol runs unchanged in both places.
"""

from __future__ import annotations

from typing import Any, Protocol


class OrthancError(RuntimeError):
    """Orthanc answered a REST call with an error; ``status``: the HTTP status, when it came over HTTP."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ResourceNotFound(OrthancError):
    """Orthanc has no such resource (HTTP 404, or an unknown resource in-process)."""


class OrthancGateway(Protocol):
    def get_json(self, uri: str) -> Any:
        """GET an Orthanc REST URI and decode its JSON answer."""

    def get_instance_dicom(self, instance_id: str) -> bytes:
        """The DICOM file (Part 10 bytes) of an Orthanc instance."""

    def post_json(self, uri: str, body: Any) -> Any:
        """POST a JSON body and decode the JSON answer."""

    def post_instance(self, dicom: bytes) -> dict:
        """Store one DICOM file (POST /instances); answers Orthanc's JSON (``ID``, ``ParentStudy``...)."""

    def put(self, uri: str, body: bytes = b"") -> None:
        """PUT a body (empty for e.g. ``/studies/{id}/labels/{label}``) to an Orthanc REST URI."""

    def delete(self, uri: str) -> None:
        """DELETE an Orthanc REST URI."""
