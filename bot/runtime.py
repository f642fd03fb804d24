"""The composition root: the one place that wires the runtime of a process — the GitHub
client factory, the services every operation shares, the dispatcher with the handlers, the
reconciler and the worker pool. ``patchwright serve`` starts :func:`start_runtime` inside
the web app, in the background (:func:`start_runtime_in_background`: the server listens while
GitHub cannot be reached yet); ``patchwright worker`` runs :func:`run_worker`; the command line and a web
process without a runtime use :func:`offline_services`. This is the one module of ``bot``
that imports ``handlers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp

import handlers
from bot.config import Settings, check_private_key, key_variable
from bot.dispatcher import Dispatcher
from bot.github.app_identity import wait_for_app
from bot.github.client import GitHubClientFactory, RetryPolicy
from bot.operations.context import Context
from bot.operations.retention import PayloadPruner
from bot.operations.services import Services, build_services, offline_services
from bot.reconciler import Reconciler
from bot.store.base import Delivery, Store
from bot.tasks.model import utcnow
from bot.worker.pool import start_worker_pool

log = logging.getLogger(__name__)

@dataclass
class Runtime:
    """The background machinery of one process; ``stop()`` ends it all."""

    services: Services
    dispatcher: Dispatcher
    session: aiohttp.ClientSession
    github: GitHubClientFactory
    _stops: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def stop(self) -> None:
        for stop in reversed(self._stops):
            try:
                await stop()
            except Exception:
                log.exception("stopping a service failed")
        self._stops.clear()
        await self.session.close()


async def connect_services(
    settings: Settings,
    store: Store,
    session: aiohttp.ClientSession,
    *,
    clock: Callable[[], datetime] = utcnow,
    github_options: dict[str, Any] | None = None,
) -> tuple[Services, GitHubClientFactory]:
    """The services of a process that talks to GitHub as the App. The App's id and key are
    checked first: the key must parse, and GitHub must accept the App's JWT (``GET /app``,
    also when ``PATCHWRIGHT_APP_SLUG`` is set, which must then match); while GitHub cannot be
    reached this waits, trying again with backoff (:func:`wait_for_app`)."""
    check_app_credentials(settings)
    options = dict(github_options or {})
    github = GitHubClientFactory.from_settings(session, settings, **options)
    # Asked once per try, so that the wait for GitHub is this loop's, logged as it goes.
    once = dataclasses.replace(options.get("policy") or RetryPolicy(), max_attempts=1)
    probe = GitHubClientFactory.from_settings(session, settings, **{**options, "policy": once, "usage": github.usage})
    app = await wait_for_app(settings, probe, sleep=options.get("sleep", asyncio.sleep))
    services = build_services(
        settings,
        store,
        github_for=github.for_installation,
        app_slug=app.slug,
        clock=clock,
        app_id=app.id,
        forget_installation=github.drop,
        github_usage=github.usage,
    )
    return services, github


def context_factory(services: Services) -> Callable[[Delivery], Awaitable[Context]]:
    """What the dispatcher hands each handler: a context for the delivery's installation."""

    async def make_context(row: Delivery) -> Context:
        return Context(services, row.installation_id, row.id)

    return make_context


RuntimeFactory = Callable[[Settings, Store], Awaitable[Runtime]]


async def start_runtime(
    settings: Settings,
    store: Store,
    *,
    clock: Callable[[], datetime] = utcnow,
    with_workers: bool | None = None,
    dispatcher_options: dict[str, Any] | None = None,
    github_options: dict[str, Any] | None = None,
    reconcile: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Runtime:
    """Start the dispatcher, the reconciler and (optionally) the embedded worker pool.

    ``environ`` is the process environment handed down from ``__main__``: agents draw PATH and
    their provider keys from it (through an allowlist); nothing here reads ``os.environ``.
    """
    session = aiohttp.ClientSession()
    try:
        services, github = await connect_services(
            settings, store, session, clock=clock, github_options=github_options
        )
        options: dict[str, Any] = {
            "handler_timeout": settings.handler_timeout_s,
            "stale_after": timedelta(seconds=settings.dispatch_stale_s),
        }
        options.update(dispatcher_options or {})
        dispatcher = Dispatcher(store, handlers.router, context_factory(services), **options)
        runtime = Runtime(services=services, dispatcher=dispatcher, session=session, github=github)
        runtime._stops.append(await dispatcher.start())
        if reconcile:
            reconciler = Reconciler(services, interval=settings.reconcile_interval_s)
            runtime._stops.append(await reconciler.start())
        # ledger retention: drops old processed payloads, a bounded batch per hourly tick
        pruner = PayloadPruner(store, days=settings.payload_retention_days, clock=clock)
        runtime._stops.append(await pruner.start())
        workers = settings.workers > 0 if with_workers is None else with_workers
        if workers:
            runtime._stops.append(
                await start_worker_pool(services, github=github, environ=environ, sandbox=settings.sandbox)
            )
        return runtime
    except BaseException:
        await session.close()
        raise


def check_app_credentials(settings: Settings) -> None:
    """What can be checked of the App without GitHub: its id is set, and its private key is
    set, readable and an RSA key that parses. Raises :class:`bot.config.ConfigError`."""
    settings.require_app_id()
    check_private_key(settings.private_key_pem(), variable=key_variable(settings))


class _Waker:
    """The dispatcher's ``wake`` as the web app calls it, before and after the dispatcher runs."""

    def __init__(self, owner: DeferredRuntime) -> None:
        self._owner = owner

    def wake(self) -> None:
        runtime = self._owner.runtime
        if runtime is not None:
            runtime.dispatcher.wake()


class DeferredRuntime:
    """``patchwright serve``'s runtime, started in the background so that the server listens
    (and records webhooks in the ledger) while GitHub cannot be reached yet: the dispatcher,
    reconciler and workers start once GitHub accepted the App (:func:`wait_for_app`), and
    then work off what was recorded meanwhile. Until then :attr:`services` are the offline
    ones. :attr:`failure` is resolved with the error that ended the start (GitHub refused
    the App, …), for ``serve`` to stop with it."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        start: Callable[[], Awaitable[Runtime]],
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.runtime: Runtime | None = None
        self.failure: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self._offline = offline_services(settings, store, clock=clock)
        self._waker = _Waker(self)
        self._task = asyncio.create_task(self._start(start), name="runtime start")

    @property
    def services(self) -> Services:
        return self.runtime.services if self.runtime is not None else self._offline

    @property
    def dispatcher(self) -> _Waker:
        return self._waker

    async def _start(self, start: Callable[[], Awaitable[Runtime]]) -> None:
        try:
            self.runtime = await start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to serve, which reports it
            if not self.failure.done():
                self.failure.set_result(exc)
        else:
            log.info("connected to GitHub: dispatcher, reconciler and workers running")

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        if self.runtime is not None:
            await self.runtime.stop()
            self.runtime = None


async def start_runtime_in_background(
    settings: Settings,
    store: Store,
    *,
    clock: Callable[[], datetime] = utcnow,
    **options: Any,
) -> DeferredRuntime:
    """The App's credentials checked now (:func:`check_app_credentials`: a wrong one stops
    ``serve`` before it listens), then :func:`start_runtime` in the background
    (:class:`DeferredRuntime`). ``options`` as for :func:`start_runtime`."""
    check_app_credentials(settings)
    return DeferredRuntime(
        settings, store, lambda: start_runtime(settings, store, clock=clock, **options), clock=clock
    )


async def run_worker(
    settings: Settings,
    store: Store,
    *,
    environ: Mapping[str, str] | None = None,
    stop_event: asyncio.Event | None = None,
    sandbox: str = "auto",
    **pool_options: Any,
) -> None:
    """``patchwright worker``: a worker pool and nothing else, until ``stop_event`` is set or
    the task is cancelled; then a graceful stop. Arguments as for
    :func:`bot.worker.pool.start_worker_pool`."""
    async with aiohttp.ClientSession() as session:
        # Waiting for GitHub (unreachable at start-up) ends when the worker is told to stop.
        connecting = asyncio.ensure_future(connect_services(settings, store, session))
        stopping = asyncio.ensure_future((stop_event or asyncio.Event()).wait())
        try:
            await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (connecting, stopping):
                if not waiting.done():
                    waiting.cancel()
            await asyncio.gather(connecting, stopping, return_exceptions=True)
        if connecting.cancelled():
            return
        services, github = connecting.result()
        stop = await start_worker_pool(
            services, github=github, environ=environ, sandbox=sandbox, **pool_options
        )
        try:
            await (stop_event or asyncio.Event()).wait()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(stop())


__all__ = [
    "DeferredRuntime",
    "Runtime",
    "RuntimeFactory",
    "check_app_credentials",
    "connect_services",
    "context_factory",
    "offline_services",
    "run_worker",
    "start_runtime",
    "start_runtime_in_background",
    "wait_for_app",
]
