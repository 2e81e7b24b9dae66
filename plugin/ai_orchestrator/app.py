"""The composition root: builds the plugin's objects from settings and routes REST requests to them.

Plain Python (no ``orthanc`` import): the entry module hands it a gateway and forwards callbacks. Everything
that can fail at start-up (settings, store, models, rules) happens in ``__init__``, before any route or
callback is registered, so a failure never leaves the plugin half-started.
"""

from __future__ import annotations

import json
import logging
import platform
import re
from collections import deque
from collections.abc import Callable
from operator import attrgetter
from urllib.parse import quote, urlsplit

import torch

from . import __version__
from .background import PeriodicTask
from .capabilities import Capabilities
from .config import Settings
from .gateway.loopback import LoopbackEndpoint, LoopbackStore
from .gateway.protocol import OrthancGateway
from .http import openapi
from .http.messages import Request, Response
from .http.own_port import Access, OwnPortServer
from .http.studies import StudiesApi
from .http.workitems import WorkitemsApi
from .http.worklist import Worklist, WorklistSettings
from .manager.housekeeping import HousekeepingSettings, run_housekeeping
from .manager.metrics import merged, subscription_metrics, workitem_metrics
from .manager.service import WorkitemService
from .manager.subscriptions import SubscriptionService
from .modeling.device import resolve_device
from .modeling.registry import Registry
from .performer.host import HostSettings, ModelHost
from .performer.publishing import Forwarding, ResultPublisher
from .performer.worker import InferenceWorker
from .requester.intake import (
    DELETED_STUDY,
    STABLE_STUDY,
    IntakeProcessor,
    IntakeSettings,
)
from .requester.labels import StudyLabels
from .requester.manual_run import ManualRunError, schedule_run
from .requester.matching import default_matcher
from .store.claims import ClaimLedger
from .store.subscriptions import SubscriptionStore
from .store.workitems import StoreError, WorkitemStore
from .ups.clock import utc_now
from .ups.events import GOING_DOWN, RESTARTED

log = logging.getLogger("ai_orchestrator")
INTAKE_POLL_S = 1.0
LABELS_RETRY_S = 10.0


def _method_not_allowed(allowed: str) -> Response:
    return Response(405, {"Allow": allowed})


class Orchestrator:
    # REST routes under /ai-orchestrator: (path pattern, handler attribute). The OpenAPI description names each.
    ROUTES: tuple[tuple[str, str], ...] = (
        (r"^/system/?$", "_system"),
        (r"^/openapi\.json$", "_openapi"),
        (r"^/workitems(/.*)?$", "workitems.handle"),
        (r"^/models/?$", "_models"),
        (r"^/studies/(?P<study>[^/]+)/run/?$", "_run"),
        (r"^/studies/(?P<study>[^/]+)/workitems/?$", "studies.workitems"),  # the Explorer panel
        (r"^/studies/(?P<study>[^/]+)/models/?$", "studies.models"),
    )

    def __init__(self, settings: Settings, gateway: OrthancGateway,
                 orthanc_version: Callable[[], str] = lambda: "unknown",
                 capabilities: Capabilities | None = None):
        self.settings, self.gateway, self.orthanc_version = settings, gateway, orthanc_version
        self.capabilities = capabilities = capabilities or Capabilities()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(settings.device)
        self.store = WorkitemStore(settings.store_path, settings.store_max_size_mb)
        self.service = WorkitemService(self.store)
        self.reports = reports = SubscriptionStore(self.store)
        self.subscriptions = SubscriptionService(reports, self.service)
        self.workitems = WorkitemsApi(self.service, self.subscriptions, self._channel_url)
        self.own_port = OwnPortServer(self.workitems.handle, reports, settings.events_port,
                                      Access(settings.remote_access, settings.authentication,
                                             settings.registered_users), settings.ssl_certificate)
        self.own_port_error: str | None = None
        self.subscriptions.add_waker(self.own_port.wake)
        self.registry = Registry.load(settings.models_dir)
        self.intake = IntakeProcessor(self.store, self.service, gateway,
                                      default_matcher(settings.rules, self.registry),
                                      IntakeSettings.from_settings(settings))
        self.housekeeping_settings = HousekeepingSettings.from_settings(settings)
        self.ledger = ClaimLedger(settings.data_dir / "performer.sqlite")
        self.result_store, self.result_store_note = self._result_store(settings, gateway, capabilities)
        publisher = ResultPublisher(self.result_store or gateway, settings.dicomweb_url,
                                    Forwarding(settings.forward_to, settings.delete_study_after_forward))
        self.hosts = self._model_hosts(settings) if settings.workers and self.registry.models else []
        self.worker = InferenceWorker(
            self.service, gateway,
            {(m.algorithm.value, m.algorithm.scheme_designator): m for m in self.registry.models},
            self.ledger, self.device, publisher,
            max_attempts=settings.max_attempts, loaders=settings.workers, forward_retry_s=settings.forward_retry_s,
            forward_retry_interval_s=settings.forward_retry_interval_s,
            hosts=self.hosts, model_timeout_s=settings.model_timeout_s) if settings.workers else None
        self.worklist = Worklist(self.service, WorklistSettings(
            settings.worklist_filter_issuer_aet, settings.dicom_aet,
            frozenset(self.worker.models) if self.worker else frozenset()))
        self._metrics_task: PeriodicTask | None = None
        self._unqueued: deque[tuple[str, str]] = deque()  # change events the store could not take yet
        self._intake_task = PeriodicTask("ai-intake", self._intake_step, INTAKE_POLL_S)
        self._housekeeping_task = PeriodicTask("ai-housekeeping", self._housekeeping_step,
                                               settings.housekeeping_interval_s)
        self._tasks: tuple[PeriodicTask, ...] = (self._intake_task, self._housekeeping_task)
        self.study_labels: StudyLabels | None = None
        if capabilities.orthanc_labels:  # each study carries its AI state as an Orthanc label
            self.study_labels = StudyLabels(gateway, self.service)
            labels_task = PeriodicTask("ai-labels", self.study_labels.apply_pending, LABELS_RETRY_S)
            self.study_labels.add_waker(labels_task.wake)
            self.service.add_listener(self.study_labels.on_workitem_event)
            self._tasks += (labels_task,)
        else:
            log.warning("this Orthanc has no labels (Orthanc 1.12 and later): studies are not labelled with "
                        "their AI state")
        self.studies = StudiesApi(gateway, self.registry, self.service, str(self.device))
        self._routes = [(re.compile(pattern, re.DOTALL), attrgetter(handler)(self))  # a path may hold a newline
                        for pattern, handler in self.ROUTES]

    # REST
    def handle(self, request: Request) -> Response:
        for pattern, handler in self._routes:
            match = pattern.match(request.path)
            if match:
                return handler(request, **match.groupdict())
        return Response.error(404, f"no such route: {request.method} /ai-orchestrator{request.path}")

    def _openapi(self, request: Request) -> Response:
        if request.method != "GET":
            return _method_not_allowed("GET")
        return Response.json(openapi.description(self.settings.events_port))

    def _system(self, request: Request) -> Response:
        if request.method != "GET":
            return _method_not_allowed("GET")
        return Response.json({
            "PluginVersion": __version__,
            "OrthancVersion": self.orthanc_version(),
            "PythonVersion": platform.python_version(),
            "TorchVersion": torch.__version__,
            "InferenceDevice": str(self.device),
            "DataDirectory": str(self.settings.data_dir),
            "ModelsDirectory": str(self.settings.models_dir),
            "Workitems": self.service.counts_by_state(),
            "RecentRuns": self.worker.completed_runs[-10:] if self.worker else [],
            "ModelHosts": [host.describe() for host in self.hosts],
            "OrchestratorPort": {"Port": self.settings.events_port, "Error": self.own_port_error},
            "Capabilities": self.capabilities.describe(),
            "ResultStore": self.result_store.describe() if self.result_store else {"Mode": "in-process",
                                                                                    "Why": self.result_store_note},
        })

    def _models(self, request: Request) -> Response:
        if request.method != "GET":
            return _method_not_allowed("GET")
        timeouts = {model.name: model.timeout_s or self.settings.model_timeout_s for model in self.registry.models}
        return Response.json([{**entry, "device": str(self.device), "timeout_s": timeouts.get(entry["name"]),
                               "hosts": [host.describe_model(entry["name"]) for host in self.hosts]}
                              for entry in self.registry.describe()])

    @staticmethod
    def _result_store(settings: Settings, gateway: OrthancGateway,
                      capabilities: Capabilities) -> tuple[LoopbackStore | None, str | None]:
        """Where results are stored: through Orthanc's HTTP port on loopback while ``orthanc.*`` calls hold the
        GIL (see ``gateway/loopback``), else in-process; and, for in-process, why."""
        if capabilities.sdk_calls_release_gil:
            return None, "the Python plugin releases the GIL during orthanc.* calls (AllowThreads)"
        if not settings.loopback_store:
            return None, "LoopbackStore is false"
        if not settings.http_server_enabled:
            return None, "Orthanc's HTTP server is off (HttpServerEnabled)"
        if settings.ssl_enabled:
            return None, "Orthanc's HTTP port speaks TLS (SslEnabled)"
        auth = next(iter(settings.registered_users.items()), None)  # harmless when authentication is off
        return LoopbackStore(gateway, LoopbackEndpoint(settings.http_port, auth)), None

    def _model_hosts(self, settings: Settings) -> list[ModelHost]:
        """The model hosts: ModelHosts of them on a CPU, one on a GPU (it owns the device)."""
        count = settings.model_hosts
        if self.device.type != "cpu" and count > 1:
            log.warning("ModelHosts is %d, but %s is one device: one model host owns it", count, self.device)
            count = 1
        host_settings = HostSettings(
            settings.models_dir, str(self.device), mode=settings.model_host, python=settings.host_python,
            timeout_s=settings.model_timeout_s, memory_limit_mb=settings.host_memory_limit_mb,
            start_timeout_s=settings.host_start_timeout_s, warm_up_slices=settings.warm_up_slices,
            nice=settings.host_nice,
            registry=self.registry if settings.model_host == "thread" else None)
        return [ModelHost(host_settings, f"model-host-{n + 1}") for n in range(count)]

    def _run(self, request: Request, study: str) -> Response:
        if request.method != "POST":
            return _method_not_allowed("POST")
        try:
            body = json.loads(request.body.decode("utf-8") or "{}")
            model_name = body.get("model") if isinstance(body, dict) else None
            if model_name is not None and not isinstance(model_name, str):
                return Response.error(400, f'"model" must be a model name (a string), not {model_name!r}')
            uid = schedule_run(self.gateway, self.registry, self.service, study, model_name,
                               dicomweb_base=self.settings.dicomweb_url)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return Response.error(400, f"the body is not JSON in UTF-8: {error}")
        except ManualRunError as error:
            return Response.error(error.status, str(error))
        if self.worker:
            self.worker.wake()
        location = f"{request.base_url}/workitems/{uid}"
        return Response.json({"workitem": uid, "location": location}, 201, headers={"Location": location})

    # Change events: record durably and return (the intake thread does the work)
    def on_stable_study(self, orthanc_study_id: str) -> None:
        self._enqueue(STABLE_STUDY, orthanc_study_id)

    def on_deleted_study(self, orthanc_study_id: str) -> None:
        self._enqueue(DELETED_STUDY, orthanc_study_id)

    def _enqueue(self, kind: str, orthanc_study_id: str) -> None:
        """Orthanc sends each change once: one the store cannot take now (a full disk, another process's lock) is
        held in memory and queued by the intake thread as soon as the store takes writes again."""
        try:
            self.store.enqueue_event(kind, orthanc_study_id)
        except StoreError as error:
            log.error("%s of study %s kept in memory until the store takes it: %s", kind, orthanc_study_id, error)
            self._unqueued.append((kind, orthanc_study_id))
        self._intake_task.wake()

    def _intake_step(self) -> None:
        while self._unqueued:
            kind, study = self._unqueued[0]
            self.store.enqueue_event(kind, study)  # raises while the store still refuses: tried at the next step
            self._unqueued.popleft()
        if self.intake.process_pending() and self.worker:
            self.worker.wake()

    def _housekeeping_step(self) -> None:
        report = run_housekeeping(self.service, utc_now(), self.housekeeping_settings,
                                  keep_going=lambda: not self._housekeeping_task.stopping)
        if any(getattr(report, name) for name in ("not_started", "lease_expired", "purged", "errors")):
            log.warning("housekeeping: %s", report)
        if report.replacements and self.worker:
            self.worker.wake()

    # Metrics: published through the setter the entry module hands in (orthanc.SetMetricsValue)
    def report_metrics_to(self, set_value: Callable[[str, float], None]) -> None:
        """Publish :meth:`metrics` every MetricsIntervalSeconds, from start_background on."""
        def publish() -> None:
            for name, value in self.metrics().items():
                set_value(name, value)

        self._metrics_task = PeriodicTask("ai-metrics", publish, self.settings.metrics_interval_s)

    def metrics(self) -> dict[str, float]:
        subscribers, queued_events = self.reports.totals()
        return merged(workitem_metrics(self.service, utc_now()), subscription_metrics(subscribers, queued_events),
                      self.worker.metrics() if self.worker else {})

    def _channel_url(self, request: Request, ae_title: str) -> str:
        """The event channel's URL for a subscriber: under EventsPublicUrl when set (a reverse proxy), else on the
        host the client reached us by, wss:// when the port serves TLS (Orthanc's SslEnabled)."""
        path = f"/ws/subscribers/{quote(ae_title, safe='')}"
        if self.settings.events_public_url:
            return self.settings.events_public_url + path
        host = urlsplit("//" + request.headers.get("host", "localhost")).hostname or "localhost"
        host = f"[{host}]" if ":" in host else host
        scheme = "wss" if self.settings.ssl_certificate else "ws"
        return f"{scheme}://{host}:{self.settings.events_port}{path}"

    # Lifecycle
    def start_background(self) -> None:
        try:
            self.own_port.start()
        except RuntimeError as error:  # the rest of the plugin serves on without it; /system says why
            self.own_port_error = str(error)
            log.error("%s", error)
        self.subscriptions.announce(RESTARTED)
        for task in self._tasks:
            task.start()
        if self._metrics_task:
            self._metrics_task.start()
        if self.worker:
            self.worker.start()

    def stop(self) -> None:
        self.subscriptions.announce(GOING_DOWN)
        self.own_port.drain(timeout=1.0)
        ended = [task.stop() for task in self._tasks]
        if self._metrics_task:
            ended.append(self._metrics_task.stop())
        if self.worker:
            ended.append(self.worker.stop())
        ended.append(self.own_port.stop())
        if self.study_labels and all(ended):
            self._flush_labels()
        if all(ended):
            if self.result_store:
                self.result_store.close()
            self.ledger.close()
            self.store.close()
        else:  # closing under a running thread would only turn its last step into errors; the WAL is durable
            log.warning("background work still running at shutdown: the store is left to close with the process")

    def _flush_labels(self) -> None:
        """The last changes' labels, once nothing changes workitems any more (best effort: Orthanc is stopping)."""
        assert self.study_labels is not None
        try:
            self.study_labels.apply_pending()
        except Exception:
            log.warning("labelling the last studies at shutdown failed", exc_info=True)

    def describe_startup(self) -> str:
        models = ", ".join(f"{entry['name']} ({entry['status']})" for entry in self.registry.describe()) or "none"
        capabilities = ", ".join(name for name, on in self.capabilities.describe().items() if on is True) or "none"
        return (f"plugin {__version__}, device {self.device}, data {self.settings.data_dir}, "
                f"models: {models}, in-process workers: {self.settings.workers}, "
                f"model hosts: {len(self.hosts)} ({self.settings.model_host}), "
                f"Orthanc capabilities used: {capabilities}, results stored "
                f"{'through ' + self.result_store.endpoint.url if self.result_store else 'in-process'}")
