"""The composition root: the one place that wires the runtime of a process — the GitHub
client factory, the services every operation shares, the dispatcher with the handlers, the
reconciler and the worker pool. ``patchwright serve`` starts :func:`start_runtime` inside
the web app; ``patchwright worker`` runs :func:`run_worker`; the command line and a web
process without a runtime use :func:`offline_services`. This is the one module of ``bot``
that imports ``handlers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp

import handlers
from bot.config import Settings
from bot.dispatcher import Dispatcher
from bot.github.app_identity import resolve_app_slug
from bot.github.client import GitHubClientFactory
from bot.operations.context import Context
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
    """The services of a process that talks to GitHub as the App (its slug asked of GitHub
    unless the settings name it)."""
    github = GitHubClientFactory.from_settings(session, settings, **(github_options or {}))
    slug, app_id = await resolve_app_slug(settings, github)
    services = build_services(
        settings,
        store,
        github_for=github.for_installation,
        app_slug=slug,
        clock=clock,
        app_id=app_id,
        forget_installation=github.drop,
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
        workers = settings.workers > 0 if with_workers is None else with_workers
        if workers:
            runtime._stops.append(
                await start_worker_pool(services, github=github, environ=environ, sandbox=settings.sandbox)
            )
        return runtime
    except BaseException:
        await session.close()
        raise


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
        services, github = await connect_services(settings, store, session)
        stop = await start_worker_pool(
            services, github=github, environ=environ, sandbox=sandbox, **pool_options
        )
        try:
            await (stop_event or asyncio.Event()).wait()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(stop())


__all__ = [
    "Runtime",
    "RuntimeFactory",
    "connect_services",
    "context_factory",
    "offline_services",
    "run_worker",
    "start_runtime",
]
