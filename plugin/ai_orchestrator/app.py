"""The composition root: builds the plugin's objects from settings and routes REST requests to them.

Plain Python (no ``orthanc`` import): the entry module hands it a gateway and forwards callbacks.
"""

from __future__ import annotations

import logging
import platform
import re
from typing import Callable

from . import __version__
from .config import Settings
from .device import resolve_device
from .http_types import Request, Response
from .orthanc_gateway import OrthancGateway

log = logging.getLogger("ai_orchestrator")


class Orchestrator:
    def __init__(self, settings: Settings, gateway: OrthancGateway,
                 orthanc_version: Callable[[], str] = lambda: "unknown"):
        self.settings = settings
        self.gateway = gateway
        self.orthanc_version = orthanc_version
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(settings.device)
        self._routes = [
            (re.compile(r"^/system/?$"), self._system),
        ]

    # REST
    def handle(self, request: Request) -> Response:
        for pattern, handler in self._routes:
            if pattern.match(request.path):
                return handler(request)
        return Response.error(404, f"no such route: {request.method} /ai-orchestrator{request.path}")

    def _system(self, request: Request) -> Response:
        if request.method != "GET":
            return Response(405, {"Allow": "GET"})
        import torch

        return Response.json({
            "PluginVersion": __version__,
            "OrthancVersion": self.orthanc_version(),
            "PythonVersion": platform.python_version(),
            "TorchVersion": torch.__version__,
            "InferenceDevice": str(self.device),
            "DataDirectory": str(self.settings.data_dir),
            "Workitems": {state: 0 for state in ("SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED")},
        })

    # Change events: record and return
    def on_stable_study(self, orthanc_study_id: str) -> None:
        log.info("stable study %s", orthanc_study_id)

    def on_deleted_study(self, orthanc_study_id: str) -> None:
        log.info("deleted study %s", orthanc_study_id)

    # Lifecycle
    def start_background(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def describe_startup(self) -> str:
        return f"plugin {__version__}, device {self.device}, data {self.settings.data_dir}"
