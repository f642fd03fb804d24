"""The aiohttp application: create_app(settings, store=…) composes routes and background services."""

from __future__ import annotations

from aiohttp import web

from bot.config import Settings
from bot.store.base import Store

SETTINGS_KEY = web.AppKey("settings", Settings)
STORE_KEY = web.AppKey("store", Store)


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


def create_app(settings: Settings, *, store: Store) -> web.Application:
    app = web.Application(client_max_size=25 * 1024 * 1024)
    app[SETTINGS_KEY] = settings
    app[STORE_KEY] = store
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
