"""REST adapter for UPS-RS under ``/workitems``: Request in, Response out; the rules live in the service.

Retrieve answers a JSON array holding the one dataset, as dcm4chee-arc does: the DICOM JSON model
(PS3.18 Annex F) is an array of datasets, and clients that accept either form parse it. Search also
answers an array (``[]`` when nothing matches).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from urllib.parse import unquote

from pydicom.uid import UID

from ..manager.service import Outcome, WorkitemService
from ..manager.subscriptions import SubscribeRequest, SubscriptionService
from ..store.workitems import StoreError
from ..ups.constants import Status
from ..ups.dicom_json import parse_payload, text_value
from ..ups.errors import UPSError, bad_request
from .messages import DICOM_JSON, Request, Response, store_failure

log = logging.getLogger(__name__)

_TUID_QUERY_NAMES = ("transaction-uid", "transaction")
_UID_QUERY_NAMES = ("workitem", "affectedsopinstanceuid")

Handler = Callable[[Request, list[str]], Response]


ChannelUrl = Callable[[Request, str], str]  # (request, AE title) -> the event channel's ws:// URL


class WorkitemsApi:
    """The UPS-RS API behind both front doors (Orthanc's routes and the orchestrator's own port)."""

    def __init__(self, service: WorkitemService, subscriptions: SubscriptionService | None = None,
                 channel_url: ChannelUrl | None = None, service_name: str = "ai-orchestrator") -> None:
        self._service = service
        self._subscriptions = subscriptions
        self._channel_url = channel_url
        self._service_name = service_name
        # (path shape) -> {method: handler}; shape: segment count after "workitems" and the last literal
        self._routes: dict[tuple[int, str | None], dict[str, Handler]] = {
            (0, None): {"GET": self._search, "POST": self._create},
            (1, None): {"GET": self._retrieve, "POST": self._update, "PUT": self._update},
            (2, "state"): {"PUT": self._change_state},
            (2, "cancelrequest"): {"POST": self._request_cancel},
            (3, "subscribers"): {"POST": self._subscribe, "DELETE": self._unsubscribe},
            (4, "suspend"): {"POST": self._suspend},
        }

    def handle(self, request: Request) -> Response:
        """Answer one request; never raises (unexpected failures are a 500 naming the exception)."""
        try:
            return self._dispatch(request)
        except UPSError as error:
            return self._error(error.http_status, error.message, error.dicom_status)
        except StoreError as error:  # full disk, or locked by another process: said as such, never a 500
            answer = store_failure(error)
            if answer is None:
                raise
            log.warning("%s %s refused: %s", request.method, request.path, error)
            return self._with_warnings(answer, [str(error)])
        except Exception as error:  # the HTTP thread must get an answer whatever happens
            log.exception("%s %s failed", request.method, request.path)
            return self._error(500, f"Internal error: {type(error).__name__}: {error}", Status.PROCESSING_FAILURE)

    def _dispatch(self, request: Request) -> Response:
        segments = [s for s in request.path.split("/") if s]
        if not segments or segments[0] != "workitems":
            return self._error(404, f"No such resource: {request.path}")
        args = [unquote(segment) for segment in segments[1:]]
        methods = self._routes.get(_shape(args))
        if methods is None:
            return self._error(404, f"No such resource: {request.path}")
        handler = methods.get(request.method.upper())
        if handler is None:
            allow = ", ".join(sorted(methods))
            response = self._error(405, f"{request.method} is not allowed on {request.path}; use {allow}")
            response.headers["Allow"] = allow
            return response
        return handler(request, args)

    # -- transactions --------------------------------------------------------------------------------
    def _create(self, request: Request, args: list[str]) -> Response:
        outcome = self._service.create(parse_payload(request.body), _uid_from_query(request.query))
        location = f"{request.base_url.rstrip('/')}/workitems/{outcome.uid}"
        return self._with_warnings(Response(201, {"Location": location}), outcome.warnings)

    def _retrieve(self, request: Request, args: list[str]) -> Response:
        return Response.json([self._service.retrieve(args[0])], content_type=DICOM_JSON)

    def _update(self, request: Request, args: list[str]) -> Response:
        tuid = _query_value(request.query, _TUID_QUERY_NAMES)
        return self._ok(200, self._service.update(args[0], parse_payload(request.body), tuid))

    def _change_state(self, request: Request, args: list[str]) -> Response:
        ds = parse_payload(request.body)
        state = text_value(ds, "ProcedureStepState")
        if state is None:
            raise bad_request("(0074,1000) ProcedureStepState is required in the request", Status.MISSING_ATTRIBUTE)
        outcome = self._service.change_state(args[0], state, text_value(ds, "TransactionUID"), ds)
        return self._ok(200, outcome)

    def _request_cancel(self, request: Request, args: list[str]) -> Response:
        dataset = parse_payload(request.body) if request.body.strip() else None
        return self._ok(202, self._service.request_cancel(args[0], dataset))

    def _search(self, request: Request, args: list[str]) -> Response:
        result = self._service.search_json(request.query)
        return self._with_warnings(Response(200, {"Content-Type": DICOM_JSON}, result.body()), result.warnings)

    def _subscribe(self, request: Request, args: list[str]) -> Response:
        subscriptions, ae_title = self._require_subscriptions(), args[2]
        lock = _query_value(request.query, ("deletionlock",)) or "false"
        if lock.lower() not in ("true", "false"):
            raise bad_request(f"deletionlock must be true or false, not {lock!r}")
        match_keys = {key: value for key, value in request.query.items() if key.lower() != "deletionlock"}
        subscriptions.subscribe(SubscribeRequest(args[0], ae_title, lock.lower() == "true", match_keys or None))
        location = self._channel_url(request, ae_title) if self._channel_url else ""
        return Response(201, {"Content-Location": location} if location else {})

    def _unsubscribe(self, request: Request, args: list[str]) -> Response:
        self._require_subscriptions().unsubscribe(args[0], args[2])
        return Response(200)

    def _suspend(self, request: Request, args: list[str]) -> Response:
        self._require_subscriptions().suspend(args[0], args[2])
        return Response(200)

    def _require_subscriptions(self) -> SubscriptionService:
        if self._subscriptions is None:
            raise UPSError(501, Status.PROCESSING_FAILURE, "subscriptions are not served by this instance")
        return self._subscriptions

    # -- responses -----------------------------------------------------------------------------------
    def _ok(self, status: int, outcome: Outcome) -> Response:
        return self._with_warnings(Response(status), outcome.warnings)

    def _error(self, status: int, message: str, dicom_status: str | None = None) -> Response:
        return self._with_warnings(Response.error(status, message, dicom_status), [message])

    def _with_warnings(self, response: Response, warnings: list[str]) -> Response:
        """``Warning: 299 {service}: {text}``, several joined with ", " in one header."""
        if warnings:
            text = ", ".join(f"299 {self._service_name}: {w}" for w in warnings)
            # A header is printable ASCII: a message quoting a client's path or value may hold anything else.
            printable = "".join(c if " " <= c <= "~" else "?" for c in " ".join(text.split()))
            response.headers["Warning"] = printable
        return response


def _shape(args: list[str]) -> tuple[int, str | None]:
    """A route's shape: how many segments follow "workitems", and the literal that names the transaction."""
    literal = {2: 1, 3: 1, 4: 3}.get(len(args))
    return len(args), args[literal] if literal is not None else None


def _query_value(query: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    """The first non-empty value among query names (matched case-insensitively)."""
    for key, value in query.items():
        if key.lower() in names and value.strip():
            return value.strip()
    return None


def _uid_from_query(query: Mapping[str, str]) -> str | None:
    """The workitem UID chosen in the query: ?workitem=, ?AffectedSOPInstanceUID= or a bare ?{uid}."""
    chosen = {v.strip() for k, v in query.items() if k.lower() in _UID_QUERY_NAMES and v.strip()}
    chosen |= {k.strip() for k, v in query.items() if not v and UID(k.strip()).is_valid}
    if len(chosen) > 1:
        raise bad_request(f"The query names several workitem UIDs: {', '.join(sorted(chosen))}")
    return chosen.pop() if chosen else None
