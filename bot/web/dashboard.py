"""The operator dashboard (SPEC §9): the request handlers of the server-rendered pages.

Pages: ``/`` (tasks by status), ``/tasks/{id}`` (attempt timeline, logs, audit events) and
``/deliveries`` (the webhook ledger with outcomes and ignore reasons); ``/login`` sets the
cookie a private dashboard needs. Rendering is pure and lives in :mod:`bot.web.pages`, one
module a page.

``?fragment=1`` on a page answers only its ``<main>`` content: ``static/dashboard.js``
subscribes to ``/api/events`` and swaps that content in when a task changes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from bot.store.base import Store
from bot.web import views
from bot.web.api import (
    ApiError,
    check_id,
    parse_limit,
    parse_repo,
    parse_state,
    parse_status,
)
from bot.web.auth import (
    COOKIE_MAX_AGE_S,
    COOKIE_NAME,
    TOO_MANY_LOGINS,
    LoginLimiter,
    safe_next_path,
    session_cookie_value,
    token_matches,
)
from bot.web.pages.board import BOARD_LIMIT, render_board, render_board_filters
from bot.web.pages.deliveries import (
    DELIVERIES_LIMIT,
    render_deliveries,
    render_deliveries_filters,
)
from bot.web.pages.html import (
    html_response,
    redirect,
    render_message,
    render_page,
    wants_fragment,
)
from bot.web.pages.task import render_task

WRONG_TOKEN = "That token is not right."


class Dashboard:
    """The HTML pages over one store."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime],
        html_base: str,
        admin_token: str | None,
        login_limiter: LoginLimiter | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.html_base = html_base
        self._admin_token = admin_token
        self._logins = login_limiter or LoginLimiter()

    def _page(self, request: web.Request, title: str, content: str, **kwargs: Any) -> web.Response:
        if wants_fragment(request):
            return html_response(content)
        return html_response(render_page(title, content, **kwargs))

    async def board(self, request: web.Request) -> web.Response:
        status = parse_status(request.query.get("status"))
        repo = parse_repo(request.query.get("repo"))
        limit = parse_limit(request.query.get("limit"), default=BOARD_LIMIT, maximum=BOARD_LIMIT)
        tasks = await self.store.list_tasks(statuses=[status] if status else None, repo=repo, limit=limit)
        content = render_board(tasks, now=self.clock(), html_base=self.html_base, limit=limit)
        return self._page(request, "Tasks", content, page="board", before=render_board_filters(status, repo))

    async def task(self, request: web.Request) -> web.Response:
        task_id = check_id("task", request.match_info["task_id"])
        task = await self.store.get_task(task_id)
        if task is None:
            raise ApiError(404, f"There is no task {task_id!r}.")
        attempts = await self.store.list_attempts(task.id)
        events = await self.store.list_events(task.id)
        logs = views.group_logs(await self.store.read_logs(task.id))
        content = render_task(task, attempts, events, logs, now=self.clock(), html_base=self.html_base)
        return self._page(request, f"{task.repo}#{task.issue_number}", content, page="task", task_id=task.id)

    async def deliveries(self, request: web.Request) -> web.Response:
        state = parse_state(request.query.get("state"))
        repo = parse_repo(request.query.get("repo"))
        rows = await self.store.list_deliveries(limit=DELIVERIES_LIMIT, state=state, repo=repo)
        content = render_deliveries(rows, now=self.clock())
        return self._page(
            request, "Deliveries", content, page="deliveries", before=render_deliveries_filters(state, repo)
        )

    # -- login ---------------------------------------------------------------------------

    async def login_get(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token")
        next_path = safe_next_path(request.query.get("next"))
        if token is None:
            return self._login_form(next_path)
        return self._login(request, token, next_path)

    async def login_post(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = form.get("token")
        next_path = safe_next_path(str(form.get("next") or "/"))
        return self._login(request, token if isinstance(token, str) else "", next_path)

    def _login_form(self, next_path: str, *, error: str = "", status: int = 200) -> web.Response:
        if not self._admin_token:
            return html_response(
                render_message(
                    "No login needed",
                    "No admin token is configured (PATCHWRIGHT_ADMIN_TOKEN), so there is nothing to log in with.",
                ),
                status=status,
            )
        return html_response(
            render_message("Log in", "Enter the admin token (PATCHWRIGHT_ADMIN_TOKEN).", login_next=next_path,
                           error=error),
            status=status,
        )

    def _login(self, request: web.Request, token: str, next_path: str) -> web.StreamResponse:
        if not self._admin_token:
            return self._login_form(next_path, status=403)
        client = request.remote or "unknown"
        wait = self._logins.retry_after(client)
        if wait is not None:  # checked before the token: no guessing while blocked
            message = TOO_MANY_LOGINS.format(seconds=wait)
            response = html_response(render_message("Log in", message), status=429)
            response.headers["Retry-After"] = str(wait)
            return response
        if not token or not token_matches(token, self._admin_token):
            self._logins.record_failure(client)
            return self._login_form(next_path, error=WRONG_TOKEN, status=401)
        self._logins.forget(client)
        response = redirect(next_path)
        response.set_cookie(
            COOKIE_NAME,
            session_cookie_value(self._admin_token),
            max_age=COOKIE_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=request.secure,
        )
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        response = redirect("/")
        response.del_cookie(COOKIE_NAME, path="/")
        return response
