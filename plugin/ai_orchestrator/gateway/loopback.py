"""Storing results through Orthanc's own HTTP server on loopback, while everything else stays in-process.

Before the Python plugin 4.3 (and with its ``AllowThreads`` off), every ``orthanc.*`` call holds the GIL for as
long as Orthanc works on it. Storing a SEG of a 100-slice CT (9 MB) is 60 to 150 ms of Orthanc's own work, and for
all that time no other Python thread runs: the workitem API's routes, the own port and the event channel wait.
Posted to ``127.0.0.1:HttpPort`` instead, the same store runs on one of Orthanc's HTTP threads while this
interpreter only waits on a socket, which releases the GIL. The bytes cross the loopback once: storing a study's
results took as long as in-process (0.08 to 0.16 s for the phantom's SEG, SR and SC, ``bench/inference.py``).

Anything that keeps the loopback from working falls back to the in-process call, so a result is never lost to it:
a refused connection, Orthanc's authentication or an authorization filter refusing the request (after which the
loopback is left off for good), or any other error Orthanc answers (the in-process call then decides).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import httpx

from .http_gateway import ORTHANC_CONNECTION_LIMITS, HttpGateway
from .protocol import OrthancError, OrthancGateway

log = logging.getLogger("ai_orchestrator")

LOOPBACK_HOST = "127.0.0.1"
STORE_TIMEOUT_S = 300.0  # a store of a large result on a busy disk; the in-process call has no limit at all
_REFUSALS = frozenset({401, 403, 407})  # authentication or an authorization plugin / Lua filter said no


@dataclass(frozen=True)
class LoopbackEndpoint:
    """Where Orthanc's own REST API answers on this machine, and as whom the plugin stores there."""

    port: int
    auth: tuple[str, str] | None = None  # a RegisteredUsers entry when Orthanc's authentication is on

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK_HOST}:{self.port}"


class LoopbackStore:
    """An :class:`~.protocol.OrthancGateway` that stores DICOM files (``POST /instances``) over HTTP on loopback
    and passes every other call to the in-process gateway."""

    def __init__(self, in_process: OrthancGateway, endpoint: LoopbackEndpoint):
        self._in_process, self.endpoint = in_process, endpoint
        self._http = HttpGateway(httpx.Client(base_url=endpoint.url, auth=endpoint.auth, timeout=STORE_TIMEOUT_S,
                                              limits=ORTHANC_CONNECTION_LIMITS))
        self._lock = threading.Lock()
        self._enabled = True
        self._counts = {"Loopback": 0, "InProcess": 0}
        self._last_fallback: str | None = None

    def post_instance(self, dicom: bytes) -> dict:
        if self._enabled:
            try:
                answer = self._http.post_instance(dicom)
            except (httpx.HTTPError, OrthancError) as error:
                self._fell_back(error)
            else:
                self._count("Loopback")
                return answer
        answer = self._in_process.post_instance(dicom)
        self._count("InProcess")
        return answer

    def _fell_back(self, error: Exception) -> None:
        refused = isinstance(error, OrthancError) and error.status in _REFUSALS
        reason = f"{type(error).__name__}: {error}"
        with self._lock:
            first_time = reason != self._last_fallback
            self._last_fallback = reason
            if refused:
                self._enabled = False
        if refused:
            log.warning("storing results through Orthanc's HTTP server on %s was refused (%s); they are stored "
                        "in-process from now on, and the workitem API waits for each store", self.endpoint.url, error)
        elif first_time:
            log.warning("storing a result through Orthanc's HTTP server on %s failed (%s); stored in-process",
                        self.endpoint.url, reason)

    def _count(self, path: str) -> None:
        with self._lock:
            self._counts[path] += 1

    def describe(self) -> dict[str, object]:
        """What ``GET /ai-orchestrator/system`` shows as ``ResultStore``."""
        with self._lock:
            return {"Mode": "loopback" if self._enabled else "in-process (the loopback was refused)",
                    "Url": self.endpoint.url, "User": self.endpoint.auth[0] if self.endpoint.auth else None,
                    "Stored": dict(self._counts), "LastFallback": self._last_fallback}

    # Everything else: in-process, as before.
    def get_json(self, uri: str) -> Any:
        return self._in_process.get_json(uri)

    def get_instance_dicom(self, instance_id: str) -> bytes:
        return self._in_process.get_instance_dicom(instance_id)

    def post_json(self, uri: str, body: Any) -> Any:
        return self._in_process.post_json(uri, body)

    def put(self, uri: str, body: bytes = b"") -> None:
        self._in_process.put(uri, body)

    def delete(self, uri: str) -> None:
        self._in_process.delete(uri)

    def close(self) -> None:
        self._http.close()
