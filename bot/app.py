"""The aiohttp application and the HTTP server that serves it.

``create_app(settings, store=…)`` gives the web process: webhook ingress, health checks, the
dashboard and the API. With ``runtime=bot.runtime.start_runtime`` (what ``patchwright serve``
does) it also starts, on startup, the runtime that composition root wires (dispatcher,
reconciler, embedded worker pool), and stops it on cleanup.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import resource
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from bot.config import Settings
from bot.dispatcher import Dispatcher
from bot.operations.services import Services, offline_services
from bot.store.base import Store
from bot.tasks.model import utcnow
from bot.web.routes import add_web_routes
from bot.webhook import MAX_BODY_BYTES, WebhookIngress

log = logging.getLogger(__name__)

SETTINGS_KEY = web.AppKey("settings", Settings)
STORE_KEY = web.AppKey("store", Store)
RUNTIME_KEY = web.AppKey("runtime", object)


class Runtime(Protocol):
    """What the web app needs of the runtime it hosts (built by :mod:`bot.runtime`)."""

    services: Services
    dispatcher: Dispatcher

    async def stop(self) -> None: ...


RuntimeFactory = Callable[[Settings, Store], Awaitable[Runtime]]


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the store answers a query."""
    store = request.app[STORE_KEY]
    try:
        await store.list_deliveries(limit=1)
    except Exception as exc:  # any store failure means "not ready", never a 500
        return web.json_response({"status": "unavailable", "error": type(exc).__name__}, status=503)
    return web.json_response({"status": "ready"})


def create_app(
    settings: Settings,
    *,
    store: Store,
    runtime: RuntimeFactory | None = None,
) -> web.Application:
    """The web process: webhook ingress, health, and (with ``runtime``) the background services.

    Serve it with :class:`IngressRunner` (as ``patchwright serve`` does), which bounds how long
    a request may take to arrive and how many connections may wait for theirs."""
    # A little over the payload cap so the ingress can answer 413 itself. Bodies are never
    # decompressed: GitHub does not compress them, and the ingress refuses any that are.
    app = web.Application(client_max_size=MAX_BODY_BYTES + 1024, handler_args={"auto_decompress": False})
    app[SETTINGS_KEY] = settings
    app[STORE_KEY] = store
    ingress = WebhookIngress(store, settings.require_webhook_secret(), clock=utcnow)
    app.router.add_post("/webhook", ingress.handle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    offline = offline_services(settings, store, clock=utcnow)

    def services() -> Services:
        """The runtime's services once it runs (with GitHub), the offline ones before."""
        rt = app.get(RUNTIME_KEY)
        return rt.services if rt is not None else offline

    ingress.on_result = add_web_routes(app, store=store, settings=settings, clock=utcnow, services=services).count_delivery
    if runtime is not None:

        async def run(app: web.Application):
            rt = await runtime(settings, store)
            app[RUNTIME_KEY] = rt
            ingress.on_recorded = rt.dispatcher.wake
            try:
                yield
            finally:
                ingress.on_recorded = None
                await rt.stop()

        app.cleanup_ctx.append(run)
    return app


# -- the HTTP server: slow and unfinished requests ------------------------------------------

#: Seconds a connection has to send a request's headers: from its opening, and on a
#: keep-alive connection from the first byte of each next request (idle time between
#: requests is the keep-alive timeout's business).
HEADER_TIMEOUT_S = 5.0
#: Seconds a request has to send its body once its headers are in, plus
#: :data:`BODY_SECONDS_PER_MIB` per MiB it announces (a body of unknown length counts as the
#: largest accepted): 10 s to 35 s. GitHub itself gives up on a delivery after 10 s.
BODY_TIMEOUT_S = 10.0
BODY_SECONDS_PER_MIB = 1.0
#: Most connections that may wait at once for their request to arrive in full; past it the
#: oldest is closed. Also at most half the process's open-file limit.
MAX_INCOMPLETE_CONNECTIONS = 512
#: The fewest the open-file limit may leave for them.
MIN_INCOMPLETE_CONNECTIONS = 16


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a request may take to arrive, and how many may be arriving at once."""

    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    body_seconds_per_mib: float = BODY_SECONDS_PER_MIB
    max_incomplete: int = MAX_INCOMPLETE_CONNECTIONS

    def body_timeout(self, content_length: int | None) -> float:
        """Seconds a body of ``content_length`` bytes may take (None: chunked)."""
        size = MAX_BODY_BYTES if content_length is None else min(content_length, MAX_BODY_BYTES)
        return self.body_timeout_s + self.body_seconds_per_mib * size / (1024 * 1024)


class IncompleteRequests:
    """The connections whose request has not fully arrived, oldest first, each with its
    deadline: one that misses it is closed, and past ``max_incomplete`` the oldest is closed
    to make room (so unfinished requests can never use up the process's file descriptors,
    and a new connection — GitHub's, which sends its request at once — is always taken)."""

    def __init__(self, limits: ConnectionLimits, loop: asyncio.AbstractEventLoop) -> None:
        self.limits = limits
        self._loop = loop
        self._cap = max(1, limits.max_incomplete)
        self._waiting: collections.OrderedDict[web.RequestHandler, asyncio.TimerHandle] = collections.OrderedDict()

    def wait(self, handler: web.RequestHandler, timeout: float) -> None:
        """``handler``'s request must arrive (further) within ``timeout`` seconds."""
        waiting = self._waiting
        timer = waiting.pop(handler, None)
        if timer is not None:
            timer.cancel()
        waiting[handler] = self._loop.call_later(timeout, self._expired, handler)
        while len(waiting) > self._cap:
            oldest, timer = waiting.popitem(last=False)
            timer.cancel()
            log.debug("closing the oldest connection still sending its request: too many are")
            oldest.force_close()

    def done(self, handler: web.RequestHandler) -> None:
        """``handler``'s request arrived in full (or the connection closed)."""
        timer = self._waiting.pop(handler, None)
        if timer is not None:
            timer.cancel()

    def _expired(self, handler: web.RequestHandler) -> None:
        self._waiting.pop(handler, None)
        log.debug("closing a connection whose request did not arrive in time")
        handler.force_close()


class _GuardedRequestHandler(web.RequestHandler):
    """aiohttp's connection, timed while its request arrives (see :class:`IncompleteRequests`).

    No route upgrades a connection (websockets): bytes after a request's body are the next
    request's. A pipelined request's headers are timed from their arrival to the start of
    their handling."""

    def __init__(self, manager: _GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._incomplete = manager.incomplete
        self._between_requests = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._incomplete.wait(self, self._incomplete.limits.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if data and self._between_requests:
            self._between_requests = False
            self._incomplete.wait(self, self._incomplete.limits.header_timeout_s)
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._incomplete.done(self)
        super().connection_lost(exc)

    def headers_arrived(self, request: web.BaseRequest) -> None:
        """The request's headers are in: now its body must follow in time."""
        payload = request.content
        if payload.is_eof():
            self._body_arrived()
            return
        self._incomplete.wait(self, self._incomplete.limits.body_timeout(request.content_length))
        payload.on_eof(self._body_arrived)

    def _body_arrived(self) -> None:
        self._incomplete.done(self)
        self._between_requests = True


class _GuardedServer(web.Server):
    """aiohttp's server whose connections are :class:`_GuardedRequestHandler`."""

    def __init__(self, handler: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.incomplete = IncompleteRequests(limits, asyncio.get_running_loop())
        make_request = self.request_factory

        def request_factory(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
            request = make_request(message, payload, protocol, writer, task)
            if isinstance(protocol, _GuardedRequestHandler):
                protocol.headers_arrived(request)
            return request

        self.request_factory = request_factory

    def __call__(self) -> web.RequestHandler:
        return _GuardedRequestHandler(self, loop=self._loop, **self._kwargs)


#: Seconds an idle keep-alive connection stays open (aiohttp's ``run_app`` default).
KEEPALIVE_TIMEOUT_S = 75.0


class IngressRunner(web.AppRunner):
    """``web.AppRunner`` for :func:`create_app` as ``patchwright serve`` runs it: requests
    must arrive within :class:`ConnectionLimits`, and connections still sending theirs are
    capped (at most half the open-file limit)."""

    __slots__ = ("_limits",)

    def __init__(self, app: web.Application, *, limits: ConnectionLimits | None = None, **kwargs: Any) -> None:
        # aiohttp's own default for a bare AppRunner is an hour; an idle client is not worth that.
        kwargs.setdefault("keepalive_timeout", KEEPALIVE_TIMEOUT_S)
        super().__init__(app, **kwargs)
        self._limits = limits or ConnectionLimits()

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # the app started; its server, as aiohttp builds it
        limits = self._limits
        budget = max(MIN_INCOMPLETE_CONNECTIONS, open_file_limit() // 2)
        if limits.max_incomplete > budget:
            limits = dataclasses.replace(limits, max_incomplete=budget)
        return _GuardedServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            limits=limits,
            **server._kwargs,
        )


def open_file_limit() -> int:
    """This process's soft limit of open files (a large number when there is none)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 30 if soft == resource.RLIM_INFINITY else soft


def raise_open_file_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (where the system
    allows); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. an unlimited hard limit the kernel caps
            log.debug("could not raise the open-file limit to %s: %s", hard, exc)
    return open_file_limit()
