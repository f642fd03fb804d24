"""The aiohttp application: create_app(settings, store=…) composes routes and background services."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from bot.config import Settings
from bot.store.base import Store
from bot.tasks.model import utcnow
from bot.webhook import MAX_BODY_BYTES, WebhookIngress

SETTINGS_KEY = web.AppKey("settings", Settings)
STORE_KEY = web.AppKey("store", Store)

#: A background service: started with the app, stopped on cleanup. ``start`` returns ``stop``.
Service = Callable[[], Awaitable[Callable[[], Awaitable[None]]]]


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
    services: Sequence[Service] = (),
    start_services: bool = True,
    on_recorded: Callable[[], None] | None = None,
) -> web.Application:
    """The web process: webhook ingress, health, and the background services it hosts."""
    # A little over the payload cap so the ingress can answer 413 itself.
    app = web.Application(client_max_size=MAX_BODY_BYTES + 1024)
    app[SETTINGS_KEY] = settings
    app[STORE_KEY] = store
    ingress = WebhookIngress(
        store, settings.require_webhook_secret(), clock=utcnow, on_recorded=on_recorded
    )
    app.router.add_post("/webhook", ingress.handle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if start_services and services:
        app.cleanup_ctx.append(_run_services(services))
    return app


def _run_services(services: Sequence[Service]):
    async def ctx(app: web.Application):
        stops = []
        try:
            for start in services:
                stops.append(await start())
            yield
        finally:
            for stop in reversed(stops):
                await stop()

    return ctx
