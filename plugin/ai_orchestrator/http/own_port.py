"""The orchestrator's own port: the UPS-RS API for standard clients, and the WebSocket event channel (aiohttp).

Orthanc hands plugins the query string of GET requests only, so a standard UPS-RS client (Transaction UID in the
query of an Update, the chosen UID in the query of a Create) needs a server of our own. It serves the same
:class:`~.workitems.WorkitemsApi` as Orthanc's routes, with the port's root as the UPS-RS base URL, and the event
channel of PS3.18 §11.10 at ``/ws/subscribers/{AETitle}``. It runs its own asyncio loop in one background thread;
the synchronous API runs in the loop's thread pool. Access matches Orthanc's: loopback unless remote access is on,
HTTP basic auth against the same registered users when authentication is on (the WebSocket upgrade included).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from ..store.subscriptions import SubscriptionStore
from ..ups.errors import UPSError
from ..ups.events import check_ae_title, with_message_id
from .messages import Request, Response

log = logging.getLogger("ai_orchestrator.own_port")

MAX_CLIENT_FRAME = 64 * 1024  # a client has nothing to say on the channel: larger frames close it (1009)
MAX_BODY = 64 * 1024 * 1024
SEND_TIMEOUT_S = 5.0  # a consumer that takes longer for one frame is disconnected; its reports stay kept
BATCH = 100

Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Access:
    """Who may connect: Orthanc's RemoteAccessAllowed, AuthenticationEnabled and RegisteredUsers."""

    remote: bool = False
    authentication: bool = False
    users: Mapping[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return "0.0.0.0" if self.remote else "127.0.0.1"

    def allows(self, authorization: str | None) -> bool:
        if not self.authentication:
            return True
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = self.users.get(user)
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())


class _Channels:
    """The connected subscribers, one connection per AE title; woken from any thread when reports wait."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.waiting: dict[str, asyncio.Event] = {}
        self.sockets: dict[str, web.WebSocketResponse] = {}

    def wake(self, titles: Collection[str]) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake, tuple(titles))

    def _wake(self, titles: tuple[str, ...]) -> None:
        for title in titles:
            event = self.waiting.get(title)
            if event is not None:
                event.set()


class OwnPortServer:
    def __init__(self, api: Handler, reports: SubscriptionStore, port: int, access: Access) -> None:
        self._api, self._reports, self._port, self._access = api, reports, port, access
        self._channels = _Channels()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._stop: asyncio.Event | None = None

    @property
    def wake(self) -> Callable[[Collection[str]], None]:
        """Tell the channel that reports wait for these subscribers (thread-safe)."""
        return self._channels.wake

    def start(self, timeout: float = 10.0) -> None:
        """Listen, in a background thread; raises what stopped the server from listening (e.g. a port in use)."""
        self._thread = threading.Thread(target=self._run, name="ai-own-port", daemon=True)
        self._thread.start()
        self._started.wait(timeout)
        if self._failure is not None:
            raise RuntimeError(f"the orchestrator's port {self._port} cannot listen: {self._failure}")

    def drain(self, timeout: float) -> None:
        """Give connected subscribers up to ``timeout`` s to receive what waits for them (e.g. GOING DOWN)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(
                self._reports.pending_count(title) for title in list(self._channels.sockets)):
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> bool:
        """Close every channel and stop listening; answers whether the thread ended."""
        loop = self._channels.loop
        if loop is not None and self._stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # -- the loop's thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._channels.loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as error:  # reported to start(); the plugin keeps running without the port
            self._failure = error
            log.exception("the orchestrator's port stopped")
        finally:
            self._started.set()
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._authenticate])
        app.router.add_get("/ws/subscribers/{ae_title}", self._channel)
        app.router.add_route("*", "/{tail:.*}", self._http)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._access.host, self._port).start()
            log.info("orchestrator's port listening on %s:%d", self._access.host, self._port)
            self._started.set()
            await self._stop.wait()
            for socket in list(self._channels.sockets.values()):
                await socket.close(code=1001, message=b"server going down")
        finally:
            await runner.cleanup()

    @web.middleware
    async def _authenticate(self, request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if not self._access.allows(request.headers.get("Authorization")):
            return web.json_response({"error": "authentication required"}, status=401,
                                     headers={"WWW-Authenticate": 'Basic realm="Orthanc AI Orchestrator"'})
        return await handler(request)

    async def _http(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        plain = Request(method=request.method, path=request.path, query=dict(request.query),
                        headers={name.lower(): value for name, value in request.headers.items()}, body=body,
                        base_url=f"{request.scheme}://{request.host}")
        answer = await asyncio.get_running_loop().run_in_executor(None, self._api, plain)
        return web.Response(status=answer.status, headers=answer.headers, body=answer.body or None)

    async def _channel(self, request: web.Request) -> web.StreamResponse:
        try:
            ae_title = check_ae_title(request.match_info["ae_title"])
        except UPSError as error:
            return web.json_response({"error": error.message, "status": error.dicom_status}, status=400)
        socket = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_CLIENT_FRAME)
        await socket.prepare(request)
        previous = self._channels.sockets.pop(ae_title, None)
        if previous is not None:  # one channel per subscriber: the newest wins
            await previous.close(code=1008, message=b"replaced by a newer connection")
        wake = asyncio.Event()
        self._channels.sockets[ae_title], self._channels.waiting[ae_title] = socket, wake
        sender = asyncio.create_task(self._send(socket, ae_title, wake))
        try:
            async for message in socket:  # a client's frames are ignored; errors and closes end the loop
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            sender.cancel()
            if self._channels.sockets.get(ae_title) is socket:
                del self._channels.sockets[ae_title]
                del self._channels.waiting[ae_title]
        return socket

    async def _send(self, socket: web.WebSocketResponse, ae_title: str, wake: asyncio.Event) -> None:
        """Deliver the subscriber's kept reports in order, then wait to be woken; acknowledge what was sent."""
        loop = asyncio.get_running_loop()
        last = 0
        try:
            while not socket.closed:
                wake.clear()
                pending = await loop.run_in_executor(None, self._reports.pending, ae_title, last, BATCH)
                if not pending:
                    await wake.wait()
                    continue
                for report in pending:
                    frame = json.dumps(with_message_id(report.report, report.id))
                    await asyncio.wait_for(socket.send_str(frame), SEND_TIMEOUT_S)
                    last = report.id
                await loop.run_in_executor(None, self._reports.acknowledge, ae_title, last)
        except (TimeoutError, ConnectionResetError) as error:
            log.warning("event channel of %s dropped (%s); its reports stay kept", ae_title, type(error).__name__)
            await socket.close(code=1013, message=b"too slow")
