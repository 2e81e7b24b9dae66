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
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from ..store.subscriptions import PendingReport, SubscriptionStore
from ..ups.errors import UPSError
from ..ups.events import check_ae_title, frame_with_message_id
from . import openapi
from .messages import MAX_BODY, Request, Response

log = logging.getLogger("ai_orchestrator.own_port")

MAX_CLIENT_FRAME = 64 * 1024  # a client has nothing to say on the channel: larger frames close it (1009)
SEND_TIMEOUT_S = 5.0  # a consumer that takes longer for one frame is disconnected; its reports stay kept
SEND_BUFFER = 256 * 1024  # bytes waiting in a channel's socket buffer before a frame is sent under SEND_TIMEOUT_S
BATCH = 500
LIVE_QUEUE = 10_000  # reports handed to one connection and not sent yet: past that it is dropped as too slow
ACK_INTERVAL_S = 0.5  # delivered reports are forgotten in one transaction this often
API_THREADS = 32  # requests served at once (each may wait for the store's write lock); the channel has its own

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


@dataclass
class _Connection:
    socket: web.WebSocketResponse
    live: asyncio.Queue[PendingReport]  # reports kept since it connected, handed over by the dispatcher
    transport: asyncio.Transport | None = None
    last_sent: int = 0


class _Channels:
    """The connected subscribers (one connection per AE title) and what they were sent.

    One dispatcher reads every new report once and hands it to its subscriber's connection; a connection first
    sends its backlog from the store, then what the dispatcher hands it. Delivered reports are acknowledged in
    batches (one transaction for all subscribers), so a hundred subscribers cost one write, not a hundred.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connections: dict[str, _Connection] = {}
        self.new_reports = asyncio.Event()
        self.delivered: dict[str, int] = {}  # AE title -> last report sent, not yet acknowledged in the store

    def wake(self, titles: Collection[str]) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.new_reports.set)


class OwnPortServer:
    def __init__(self, api: Handler, reports: SubscriptionStore, port: int, access: Access,
                 certificate: str | None = None) -> None:
        """``certificate``: a PEM file holding the certificate and its private key (Orthanc's SslCertificate): the
        port then serves HTTPS and wss:// only."""
        self._api, self._reports, self._port, self._access = api, reports, port, access
        self._certificate = certificate
        self._channels = _Channels()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._api_threads = ThreadPoolExecutor(API_THREADS, thread_name_prefix="ai-own-port-api")

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
                self._reports.pending_count(title) for title in list(self._channels.connections)):
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> bool:
        """Close every channel and stop listening; answers whether the thread ended."""
        loop = self._channels.loop
        if loop is not None and self._stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._stop.set)
        self._api_threads.shutdown(wait=False, cancel_futures=True)
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
        app.router.add_get("/openapi.json", self._openapi)
        app.router.add_route("*", r"/{tail:[\s\S]*}", self._http)  # any path, newlines included
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            tls = None
            if self._certificate:
                tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                tls.load_cert_chain(self._certificate)
            await web.TCPSite(runner, self._access.host, self._port, ssl_context=tls).start()
            log.info("orchestrator's port listening on %s:%d", self._access.host, self._port)
            self._started.set()
            background = [asyncio.create_task(self._dispatch()), asyncio.create_task(self._acknowledge_periodically())]
            await self._stop.wait()
            for connection in list(self._channels.connections.values()):
                await connection.socket.close(code=1001, message=b"server going down")
            for task in background:
                task.cancel()
            await self._acknowledge()
        finally:
            await runner.cleanup()

    @web.middleware
    async def _authenticate(self, request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if not self._access.allows(request.headers.get("Authorization")):
            return web.json_response({"error": "authentication required"}, status=401,
                                     headers={"WWW-Authenticate": 'Basic realm="Orthanc AI Orchestrator"'})
        try:
            return await handler(request)
        except web.HTTPException as error:  # aiohttp's own refusals answer like the API's: a JSON error
            if error.status < 400:
                raise
            return web.json_response({"error": f"{error.reason}: {request.method} {request.path}"},
                                     status=error.status, headers={k: v for k, v in error.headers.items()
                                                                   if k.lower() == "allow"})

    async def _openapi(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(openapi.description(self._port))

    async def _http(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        plain = Request(method=request.method, path=request.path, query=dict(request.query),
                        headers={name.lower(): value for name, value in request.headers.items()}, body=body,
                        base_url=f"{request.scheme}://{request.host}")
        answer = await asyncio.get_running_loop().run_in_executor(self._api_threads, self._api, plain)
        return web.Response(status=answer.status, headers=answer.headers, body=answer.body or None)

    async def _channel(self, request: web.Request) -> web.StreamResponse:
        try:
            ae_title = check_ae_title(request.match_info["ae_title"])
        except UPSError as error:
            return web.json_response({"error": error.message, "status": error.dicom_status}, status=400)
        if not await asyncio.get_running_loop().run_in_executor(None, self._reports.is_subscriber, ae_title):
            return web.json_response({"error": f"{ae_title} has no subscription: subscribe first (POST "
                                               f"/workitems/{{uid}}/subscribers/{ae_title})"}, status=404)
        # no permessage-deflate: frames are small, and compressing each for each subscriber costs the GIL Orthanc's
        # requests wait for
        socket = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_CLIENT_FRAME, compress=False)
        await socket.prepare(request)
        previous = self._channels.connections.pop(ae_title, None)
        if previous is not None:  # one channel per subscriber: the newest wins
            await previous.socket.close(code=1008, message=b"replaced by a newer connection")
        connection = _Connection(socket, asyncio.Queue(maxsize=LIVE_QUEUE), request.transport)
        self._channels.connections[ae_title] = connection
        sender = asyncio.create_task(self._send(ae_title, connection))
        try:
            async for message in socket:  # a client's frames are ignored; errors and closes end the loop
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            sender.cancel()
            if self._channels.connections.get(ae_title) is connection:
                del self._channels.connections[ae_title]
        return socket

    async def _send(self, ae_title: str, connection: _Connection) -> None:
        """The backlog kept in the store first, then the live reports, in order, each once."""
        loop = asyncio.get_running_loop()
        try:
            try:
                await self._acknowledge()  # what an earlier connection sent is not sent again
            except Exception as error:  # then it may come again (delivery is at least once)
                log.warning("acknowledging before the backlog of %s failed: %s", ae_title, error)
            while True:
                backlog = await loop.run_in_executor(None, self._reports.pending, ae_title, connection.last_sent,
                                                     BATCH)
                for report in backlog:
                    await self._deliver(ae_title, connection, report)
                if len(backlog) < BATCH:
                    break
            while not connection.socket.closed:
                batch = [await connection.live.get()]
                while not connection.live.empty():  # what else is waiting, without a wake-up each
                    batch.append(connection.live.get_nowait())
                for report in batch:
                    if report.id > connection.last_sent:
                        await self._deliver(ae_title, connection, report)
        except (TimeoutError, ConnectionResetError) as error:
            log.warning("event channel of %s dropped (%s); its reports stay kept", ae_title, type(error).__name__)
            await connection.socket.close(code=1013, message=b"too slow")

    async def _deliver(self, ae_title: str, connection: _Connection, report: PendingReport) -> None:
        frame = frame_with_message_id(report.text, report.id)
        if connection.transport is not None and connection.transport.get_write_buffer_size() < SEND_BUFFER:
            await connection.socket.send_str(frame)  # goes straight into the socket's buffer
        else:  # the consumer is behind: it gets SEND_TIMEOUT_S to take this one
            await asyncio.wait_for(connection.socket.send_str(frame), SEND_TIMEOUT_S)
        connection.last_sent = report.id
        self._channels.delivered[ae_title] = report.id

    async def _dispatch(self) -> None:
        """Read each new report once and hand it to its subscriber's connection, if connected."""
        loop = asyncio.get_running_loop()
        cursor = await loop.run_in_executor(None, self._reports.last_id)
        while True:
            await self._channels.new_reports.wait()
            self._channels.new_reports.clear()
            while True:
                rows = await loop.run_in_executor(None, self._reports.since, cursor, BATCH)
                for ae_title, report in rows:
                    connection = self._channels.connections.get(ae_title)
                    if connection is not None:
                        try:
                            connection.live.put_nowait(report)
                        except asyncio.QueueFull:  # a consumer this far behind is dropped; it catches up later
                            await connection.socket.close(code=1013, message=b"too slow")
                cursor = rows[-1][1].id if rows else cursor
                if len(rows) < BATCH:
                    break

    async def _acknowledge_periodically(self) -> None:
        while True:
            await asyncio.sleep(ACK_INTERVAL_S)
            try:
                await self._acknowledge()
            except Exception as error:  # e.g. a full disk: the reports stay kept, acknowledged at a later try
                log.warning("acknowledging delivered event reports failed, will try again: %s", error)
                await asyncio.sleep(1.0)

    async def _acknowledge(self) -> None:
        if self._channels.delivered:
            delivered, self._channels.delivered = self._channels.delivered, {}
            try:
                await asyncio.get_running_loop().run_in_executor(None, self._reports.acknowledge_many, delivered)
            except BaseException:
                for title, up_to in delivered.items():  # not acknowledged: keep them for the next try
                    self._channels.delivered[title] = max(up_to, self._channels.delivered.get(title, 0))
                raise
