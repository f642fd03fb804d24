"""Wire the operator web surface (SPEC §9) into an aiohttp application.

``add_web_routes(app, store=…, settings=…, clock=…, services=…)`` adds the dashboard (``/``,
``/tasks/{id}``, ``/deliveries``, ``/outcomes``, ``/login``, ``/logout``, ``/static/…``), the JSON API
(``/api/…``), the event stream (``/api/events``) and ``/metrics``; it puts the
:class:`~bot.web.metrics.Metrics` on the app under :data:`METRICS_KEY` (the webhook ingress
counts deliveries with it) and starts/stops the live task feed with the app.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from aiohttp import web

from bot.config import Settings
from bot.operations.services import Services, offline_services
from bot.store.base import Store
from bot.tasks import verbs
from bot.tasks.model import utcnow
from bot.web import views
from bot.web.actions import DashboardActions
from bot.web.api import WebApi, error_response, json_errors
from bot.web.auth import Access, LoginLimiter, decide_access, request_credentials
from bot.web.dashboard import Dashboard
from bot.web.events import EventStreamOptions, TaskFeed
from bot.web.log_stream import LogStreams
from bot.web.metrics import Metrics
from bot.web.pages.html import (
    e,
    html_errors,
    html_response,
    render_message,
    wants_fragment,
)

STATIC_DIR = Path(__file__).resolve().parent / "static"
METRICS_KEY = web.AppKey("patchwright_web_metrics", Metrics)
TASK_FEED_KEY = web.AppKey("patchwright_web_task_feed", TaskFeed)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PRIVATE_DASHBOARD = "This dashboard is private: log in with the admin token (PATCHWRIGHT_ADMIN_TOKEN)."


@dataclass(frozen=True, slots=True)
class WebOptions:
    """Tunables of the web surface (tests shorten the event stream's timings)."""

    events: EventStreamOptions = field(default_factory=EventStreamOptions)
    #: The login form's rate limit; None: :class:`~bot.web.auth.LoginLimiter`'s defaults.
    login_limiter: LoginLimiter | None = None


class Guard:
    """Applies :func:`~bot.web.auth.decide_access` before a handler runs."""

    def __init__(self, *, admin_token: str | None, private_read: bool) -> None:
        self._admin_token = admin_token
        self._private_read = private_read

    def check(self, request: web.Request, *, mutating: bool) -> Access:
        return decide_access(
            mutating=mutating,
            private_read=self._private_read,
            admin_token=self._admin_token,
            credentials=request_credentials(request.headers, request.cookies),
        )

    def api(self, handler: Handler, *, mutating: bool = False) -> Handler:
        """A JSON endpoint: refusals as JSON (401 with ``WWW-Authenticate``, or 403)."""
        inner = json_errors(handler)

        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            access = self.check(request, mutating=mutating)
            if not access.allowed:
                response = error_response(access.status, access.message)
                if access.status == 401:
                    response.headers["WWW-Authenticate"] = 'Bearer realm="patchwright"'
                return response
            return await inner(request)

        return guarded

    def page(self, handler: Handler) -> Handler:
        """An HTML page: a 401 shows the login form (a fragment request gets a short 401)."""
        inner = html_errors(handler)

        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            access = self.check(request, mutating=False)
            if access.allowed:
                return await inner(request)
            if wants_fragment(request):
                return html_response(f"<p>{e(access.message)}</p>", status=access.status)
            if access.status == 401:
                page = render_message("Log in", PRIVATE_DASHBOARD, login_next=request.path_qs)
            else:
                page = render_message("Not available", access.message)
            return html_response(page, status=access.status)

        return guarded


def add_web_routes(
    app: web.Application,
    *,
    store: Store,
    settings: Settings,
    clock: Callable[[], datetime] = utcnow,
    options: WebOptions | None = None,
    services: Callable[[], Services] | None = None,
) -> Metrics:
    """Add the dashboard, API, event stream and metrics routes to ``app``; returns its Metrics.

    ``services`` gives the services the API's commands run with (the runtime's, with a
    GitHub client, once it runs); by default offline ones over ``store``."""
    options = options or WebOptions()
    if services is None:
        offline = offline_services(settings, store, clock=clock)
        services = lambda: offline  # noqa: E731
    admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
    html_base = views.github_html_base(settings.github_url)
    feed = TaskFeed(store, options.events)
    metrics = Metrics(
        subscribers=lambda: feed.subscriber_count, clock=clock, github=lambda: services().github_usage
    )
    app[METRICS_KEY] = metrics
    app[TASK_FEED_KEY] = feed

    guard = Guard(admin_token=admin_token or None, private_read=settings.read_api_private)
    api = WebApi(store, services=services, html_base=html_base, feed=feed, stream_options=options.events)
    dash = Dashboard(
        store, clock=clock, html_base=html_base, admin_token=admin_token or None,
        login_limiter=options.login_limiter,
    )

    async def metrics_handler(request: web.Request) -> web.Response:
        body, content_type = await metrics.render(store, request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    r = app.router
    r.add_get("/", guard.page(dash.board))
    r.add_get("/tasks/{task_id}", guard.page(dash.task))
    actions = DashboardActions(admin_token=admin_token or None, services=services)
    for verb in verbs.TASK_VERBS:  # the task page's forms: one route a verb, as the API's
        r.add_post(f"/tasks/{{task_id}}/{verbs.slug(verb.name)}", actions.task_verb(verb))
    r.add_post("/tasks/{task_id}/edit", actions.edit)
    r.add_post("/deliveries/{delivery_id}/replay", actions.replay)
    r.add_get("/deliveries", guard.page(dash.deliveries))
    r.add_get("/deliveries/{delivery_id}", guard.page(dash.delivery))
    r.add_get("/outcomes", guard.page(dash.outcomes))
    r.add_get("/login", dash.login_get)
    r.add_post("/login", dash.login_post)
    r.add_get("/logout", dash.logout)
    r.add_static("/static/", STATIC_DIR, append_version=False)

    r.add_get("/api/tasks", guard.api(api.list_tasks))
    r.add_get("/api/tasks/{task_id}", guard.api(api.get_task))
    r.add_patch("/api/tasks/{task_id}", guard.api(api.edit_task, mutating=True))
    r.add_get("/api/tasks/{task_id}/logs", guard.api(api.task_logs))
    log_streams = LogStreams(store, options.events)  # the raw log and its live follow
    r.add_get("/api/tasks/{task_id}/logs.txt", guard.api(log_streams.raw))
    r.add_get("/api/tasks/{task_id}/logs/stream", guard.api(log_streams.stream))
    for verb in verbs.TASK_VERBS:  # retry, stop, resume, start-over, cancel: one route a verb
        r.add_post(f"/api/tasks/{{task_id}}/{verbs.slug(verb.name)}", guard.api(api.task_command(verb), mutating=True))
    r.add_get("/api/deliveries", guard.api(api.list_deliveries))
    r.add_get("/api/deliveries/{delivery_id}", guard.api(api.get_delivery))
    r.add_post("/api/deliveries/{delivery_id}/replay", guard.api(api.replay_delivery, mutating=True))
    r.add_get("/api/events", guard.api(api.events))
    r.add_get("/api/outcomes", guard.api(api.outcomes))
    r.add_route("*", "/api/{tail:.*}", guard.api(api.not_found))
    r.add_get("/metrics", guard.api(metrics_handler))

    async def start_feed(app: web.Application) -> None:
        await feed.start()

    async def end_streams(app: web.Application) -> None:
        await feed.close_subscribers()
        await log_streams.close_all()

    async def stop_feed(app: web.Application) -> None:
        await feed.stop()

    app.on_startup.append(start_feed)
    app.on_shutdown.append(end_streams)
    app.on_cleanup.append(stop_feed)
    return metrics
