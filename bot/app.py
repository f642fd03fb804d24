"""The aiohttp application and the runtime it hosts.

``create_app(settings, store=…)`` gives the web process: webhook ingress and health checks.
With ``runtime=start_runtime`` (what ``patchwright serve`` does) it also starts, on startup,
the dispatcher that runs the handlers, the reconciler and — when ``PATCHWRIGHT_WORKERS`` > 0
— the embedded worker pool, and stops them on cleanup. This is the one module of ``bot`` that
imports ``handlers`` (it composes them).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

from bot.config import Settings
from bot.dispatcher import Dispatcher
from bot.github import api
from bot.github.client import GitHubClientFactory
from bot.services import Services, build_services
from bot.store.base import Delivery, Store
from bot.tasks.model import utcnow
from bot.web.routes import add_web_routes
from bot.webhook import MAX_BODY_BYTES, WebhookIngress

log = logging.getLogger(__name__)

SETTINGS_KEY = web.AppKey("settings", Settings)
STORE_KEY = web.AppKey("store", Store)
RUNTIME_KEY = web.AppKey("runtime", object)


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


RuntimeFactory = Callable[[Settings, Store], Awaitable[Runtime]]


async def resolve_app_slug(settings: Settings, github: GitHubClientFactory) -> tuple[str, int | None]:
    """The App's slug (the @mention) from settings, else from ``GET /app``."""
    if settings.app_slug:
        return settings.app_slug, settings.app_id
    app = await api.get_app(github.for_app())
    return str(app["slug"]), int(app["id"])


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
    import handlers  # the app factory composes the handlers (SPEC §1)
    from handlers.checks import evaluate_head
    from handlers.common import HandlerContext
    from handlers.pulls import check_conflicts

    from bot.reconciler import Reconciler

    session = aiohttp.ClientSession()
    try:
        github = GitHubClientFactory.from_settings(session, settings, **(github_options or {}))
        slug, app_id = await resolve_app_slug(settings, github)
        services = build_services(
            settings, store, github_for=github.for_installation, app_slug=slug, clock=clock, app_id=app_id
        )
        services.on_forget_installation = github.drop

        async def make_context(row: Delivery) -> HandlerContext:
            return HandlerContext(services, row)

        options: dict[str, Any] = {
            "handler_timeout": settings.handler_timeout_s,
            "stale_after": timedelta(seconds=settings.dispatch_stale_s),
        }
        options.update(dispatcher_options or {})
        dispatcher = Dispatcher(store, handlers.router, make_context, **options)
        runtime = Runtime(services=services, dispatcher=dispatcher, session=session, github=github)
        runtime._stops.append(await dispatcher.start())
        if reconcile:
            reconciler = Reconciler(
                services,
                make_context=make_context,
                evaluate_head=evaluate_head,
                check_conflicts=check_conflicts,
                interval=settings.reconcile_interval_s,
            )
            runtime._stops.append(await reconciler.start())
        workers = settings.workers > 0 if with_workers is None else with_workers
        if workers:
            from bot.worker.pool import start_worker_pool

            runtime._stops.append(
                await start_worker_pool(services, github=github, environ=environ, sandbox=settings.sandbox)
            )
        return runtime
    except BaseException:
        await session.close()
        raise


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
    """The web process: webhook ingress, health, and (with ``runtime``) the background services."""
    # A little over the payload cap so the ingress can answer 413 itself.
    app = web.Application(client_max_size=MAX_BODY_BYTES + 1024)
    app[SETTINGS_KEY] = settings
    app[STORE_KEY] = store
    ingress = WebhookIngress(store, settings.require_webhook_secret(), clock=utcnow)
    app.router.add_post("/webhook", ingress.handle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    ingress.on_result = add_web_routes(app, store=store, settings=settings, clock=utcnow).count_delivery
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
