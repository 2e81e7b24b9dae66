"""The only module that imports ``orthanc``: wires the plain-Python application into Orthanc.

Everything Orthanc-specific lives here: the REST callback adapter (with the ``SendHttpStatus`` shim),
the in-process gateway, the change-event handlers registered through orthanc-server-extensions'
dispatcher (which owns the single on-change callback), and what the running Orthanc can do: detected once, here,
at start-up, and handed on as :class:`~.capabilities.Capabilities`. Handlers only record work and return.
"""

from __future__ import annotations

import gc
import json
import logging
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from orthanc_ext import event_dispatcher
from orthanc_ext.executor_utilities import inject_with_event_http_client

import orthanc

from .capabilities import Capabilities
from .gateway.protocol import OrthancError, ResourceNotFound
from .http.explorer import panel_javascript
from .http.messages import Request, Response, refused_body, store_failure
from .http.worklist import Worklist, WorklistQueryError

ROOT = "/ai-orchestrator"
log = logging.getLogger("ai_orchestrator")


# The Python plugin raises orthanc.OrthancException for a failed call (PythonLock::RaiseException); its arguments
# name Orthanc's error code, as the code (plugin 4.0: args[0]) or as the code's description (later releases).
_NOT_FOUND_CODES = frozenset({17, 7})  # OrthancPluginErrorCode_UnknownResource, _InexistentItem
_NOT_FOUND_DESCRIPTIONS = frozenset({"Unknown resource", "Accessing an inexistent item"})
_ORTHANC_EXCEPTION: type[Exception] = getattr(orthanc, "OrthancException", Exception)


def _is_not_found(error: Exception) -> bool:
    return any((isinstance(arg, int) and int(arg) in _NOT_FOUND_CODES)
               or (isinstance(arg, str) and arg in _NOT_FOUND_DESCRIPTIONS) for arg in error.args)


@contextmanager
def _typed_errors(what: str) -> Iterator[None]:
    """Raise the gateway's typed errors for what the in-process API raised."""
    try:
        yield
    except _ORTHANC_EXCEPTION as error:
        if _is_not_found(error):
            raise ResourceNotFound(f"{what}: no such resource") from error
        raise OrthancError(f"{what}: Orthanc error {' '.join(map(str, error.args))}") from error


class InProcessGateway:
    """The OrthancGateway over ``orthanc.RestApi*`` calls: no HTTP, no authentication, no copies through a socket."""

    def get_json(self, uri: str) -> Any:
        with _typed_errors(f"GET {uri}"):
            return json.loads(orthanc.RestApiGet(uri))

    def get_instance_dicom(self, instance_id: str) -> bytes:
        with _typed_errors(f"DICOM of instance {instance_id}"):
            return orthanc.GetDicomForInstance(instance_id)

    def post_json(self, uri: str, body: Any) -> Any:
        with _typed_errors(f"POST {uri}"):
            answer = orthanc.RestApiPost(uri, json.dumps(body))
        return json.loads(answer) if answer else None

    def post_instance(self, dicom: bytes) -> dict:
        with _typed_errors("POST /instances"):
            return json.loads(orthanc.RestApiPost("/instances", dicom))

    def put(self, uri: str, body: bytes = b"") -> None:
        with _typed_errors(f"PUT {uri}"):
            orthanc.RestApiPut(uri, body)

    def delete(self, uri: str) -> None:
        with _typed_errors(f"DELETE {uri}"):
            orthanc.RestApiDelete(uri)


# What newer releases offer, and since which version: read here, once, and nowhere else.
LABELS_SINCE = (1, 12, 0)              # Orthanc: labels on resources
KEEP_ALIVE_TIMEOUT_SINCE = (1, 11, 3)  # Orthanc: the "KeepAliveTimeout" option
ALLOW_THREADS_SINCE = (4, 3)           # Python plugin: "Python": {"AllowThreads": true}
_PYTHON_PLUGIN_FILE = re.compile(r"libOrthancPython\.so\.(\d+)\.(\d+)\b")


def _orthanc_at_least(version: tuple[int, int, int]) -> bool:
    """Whether the hosting Orthanc is this version or later (``CheckVersionAdvanced`` answers during init)."""
    check = getattr(orthanc, "CheckVersionAdvanced", None)
    return bool(check(*version)) if check is not None else False


def _python_plugin_version(maps: Path = Path("/proc/self/maps")) -> tuple[int, int] | None:
    """The loaded Python plugin's version, from its file's name: Debian installs ``libOrthancPython.so.X.Y``
    (the ``orthanc`` module does not say). None when the name carries none."""
    try:
        match = _PYTHON_PLUGIN_FILE.search(maps.read_text())
    except OSError:
        return None
    return (int(match[1]), int(match[2])) if match else None


def detect_capabilities(orthanc_config: Mapping[str, Any]) -> Capabilities:
    python_section = orthanc_config.get("Python")
    allow_threads = isinstance(python_section, dict) and python_section.get("AllowThreads") is True
    plugin_version = _python_plugin_version()
    return Capabilities(
        orthanc_labels=_orthanc_at_least(LABELS_SINCE),
        keep_alive_timeout=_orthanc_at_least(KEEP_ALIVE_TIMEOUT_SINCE),
        sdk_calls_release_gil=allow_threads and plugin_version is not None and plugin_version >= ALLOW_THREADS_SINCE,
        python_plugin_version=".".join(map(str, plugin_version)) if plugin_version else None,
    )


# Every callback handed to orthanc.RegisterRestCallback stays referenced here, for the life of the process. While
# finalizing, the Python plugin 5.0 (Debian 13) drops its own references to them; when that was the last one, the
# callback is freed at that point and Orthanc dies with SIGSEGV (exit 139) instead of stopping cleanly.
_REGISTERED: list[Callable[..., None]] = []


def _register_rest(pattern: str, callback: Callable[..., None]) -> None:
    _REGISTERED.append(callback)
    orthanc.RegisterRestCallback(pattern, callback)


def _send_http_status(output: Any, status: int, body: bytes) -> None:
    """Plugin 4.0 takes (status, str body, byte size); 4.2+ takes (status, bytes body)."""
    if not body:
        output.SendHttpStatusCode(status)
        return
    try:
        output.SendHttpStatus(status, body.decode("utf-8"), len(body))
    except TypeError:
        output.SendHttpStatus(status, body)


def _write(output: Any, response: Response) -> None:
    content_type = response.headers.get("Content-Type", "application/json")
    for name, value in response.headers.items():
        if name != "Content-Type" or response.status != 200:
            output.SetHttpHeader(name, value)
    if response.status == 200:
        output.AnswerBuffer(response.body, content_type)
    elif response.status == 405:
        output.SendMethodNotAllowed(response.headers.get("Allow", "GET"))
    else:
        _send_http_status(output, response.status, response.body)


def _decoded(text: str) -> str:
    """A GET argument as the client meant it. Orthanc 1.10 hands plugins the arguments still percent-encoded
    (``PatientID=AB%2A`` arrives as ``AB%2A``), later releases decode them; decoding what holds no escape changes
    nothing, so one rule serves both (a decoded value that still spells an escape, ``%41``, is the one casualty)."""
    return unquote(text) if "%" in text else text


def _to_request(uri: str, request: dict) -> Request:
    headers = {name.lower(): value for name, value in request.get("headers", {}).items()}
    host = headers.get("host", "localhost")
    body = request.get("body", b"")
    return Request(
        method=request["method"],
        path=uri[len(ROOT):] or "/",
        query={_decoded(name): _decoded(value) for name, value in request.get("get", {}).items()},
        headers=headers,
        body=body.encode() if isinstance(body, str) else body,
        base_url=f"http://{host}{ROOT}",
    )


def _route_to(handle: Callable[[Request], Response]) -> Callable[..., None]:
    def on_rest(output: Any, uri: str, **request: Any) -> None:
        try:
            plain = _to_request(uri, request)
            response = refused_body(plain.body) or handle(plain)
        except Exception as error:  # the plugin must never take Orthanc down
            response = store_failure(error) or Response.error(500, f"internal error: {error}")
            if response.status == 500:
                log.exception("unhandled error on %s %s", request.get("method"), uri)
        _write(output, response)

    return on_rest


# The worklist callback stays referenced here for the life of the process (as the REST callbacks are).
_WORKLIST_CALLBACKS: list[Callable[..., None]] = []


def _register_worklist(worklist: Worklist) -> None:
    """Modality Worklist C-FIND, answered from the SCHEDULED workitems with Orthanc's matcher deciding; an error
    (a malformed query) raised here fails the C-FIND with Failed: UnableToProcess."""
    def on_worklist(answers: Any, query: Any, issuer_aet: str, called_aet: str) -> None:
        try:
            found = worklist.find(query.WorklistGetDicomQuery(), issuer_aet, query.WorklistIsMatch)
        except WorklistQueryError as error:
            orthanc.LogWarning(f"worklist C-FIND from {issuer_aet} refused: {error}")
            raise
        for dicom in found.datasets:
            answers.WorklistAddAnswer(query, dicom)
        if not found.complete:
            answers.WorklistMarkIncomplete()

    _WORKLIST_CALLBACKS.append(on_worklist)
    orthanc.RegisterWorklistCallback(on_worklist)


def _set_metric(name: str, value: float) -> None:
    orthanc.SetMetricsValue(name, float(value), orthanc.MetricsType.DEFAULT)


def _start_failed(error: BaseException) -> None:
    """Log the cause once, loudly, and answer every plugin route with 503 and that cause."""
    message = f"AI orchestrator failed to start: {error}"
    orthanc.LogError(message + "\n" + traceback.format_exc())
    _register_rest(ROOT + "(/.*)?", _route_to(lambda _request: Response.error(503, message)))


class SyncHandlers:
    """orthanc-server-extensions' dispatcher runs each change's handlers through an executor. Its default one calls
    ``asyncio.run`` on every change Orthanc reports, async handlers or none: an event loop made and torn down per
    stored instance (0.3 ms of Python holding the GIL, on the thread Orthanc calls for every change). The handlers
    here are all plain functions that record work and return, so they are called as they are."""

    def __init__(self, sync_client: object, async_client: object = None) -> None:
        self._client = sync_client

    def invoke_all(self, event: object, sync_handlers: list[Callable[[object, object], object]],
                   async_handlers: list[Callable[[object, object], object]]) -> list[object]:
        if async_handlers:
            raise TypeError("the AI orchestrator registers no coroutine handlers for Orthanc's changes")
        return inject_with_event_http_client(sync_handlers, event, self._client)


def _extend_explorer() -> None:
    """The AI panel of Orthanc Explorer (``http/explorer/panel.js``), served in ``/plugins/explorer.js``; registered
    even when the plugin fails to start, so that the panel shows why."""
    try:
        orthanc.ExtendOrthancExplorer(panel_javascript())
    except Exception as error:  # the plugin serves on without its panel
        orthanc.LogError(f"AI orchestrator: the Orthanc Explorer panel is not available: {error}")


def start() -> None:
    from .app import (
        Orchestrator,  # imported here so that an import error is reported like any startup error
    )
    from .config import Settings

    _extend_explorer()
    try:
        orthanc_config = json.loads(orthanc.GetConfiguration())
        capabilities = detect_capabilities(orthanc_config)
        # Orthanc's own REST API is not callable during plugin initialisation: ask for the version later.
        app = Orchestrator(Settings.from_orthanc(orthanc_config), InProcessGateway(),
                           orthanc_version=lambda: json.loads(orthanc.RestApiGet("/system")).get("Version"),
                           capabilities=capabilities)
    except Exception as error:
        _start_failed(error)
        return

    _register_rest(ROOT + "(/.*)?", _route_to(app.handle))
    _register_worklist(app.worklist)
    app.report_metrics_to(_set_metric)
    change = orthanc.ChangeType
    event_dispatcher.register_event_handlers(
        {
            change.STABLE_STUDY: lambda event, _client: app.on_stable_study(event.resource_id),
            change.DELETED: lambda event, _client: (
                app.on_deleted_study(event.resource_id)
                if event.resource_type == orthanc.ResourceType.STUDY else None),
            change.ORTHANC_STARTED: lambda _event, _client: app.start_background(),
            change.ORTHANC_STOPPED: lambda _event, _client: app.stop(),
        },
        orthanc,
        event_dispatcher.create_session(orthanc),
        handler_executor=SyncHandlers,
    )
    # Everything loaded so far (torch, highdicom, the models) lives as long as the process: keep it out of the
    # cyclic garbage collector's full passes, which otherwise stall requests for ~100 ms now and then.
    gc.freeze()
    # Reading a study (GetDicomForInstance in a loop) and storing a result hold the GIL in the C calls of plugin 4.0;
    # each time a REST route's thread gives it back, it waits up to the switch interval to get it again (5 ms by
    # default), and a workitem search convoys to 20-50 ms while a study is read. At 0.5 ms it stays near 8 ms
    # (bench/inference.py). Only this interpreter is concerned: models run in the host, its own process.
    sys.setswitchinterval(0.0005)
    orthanc.LogWarning(f"AI orchestrator ready: {app.describe_startup()}")
