"""The operator dashboard (SPEC §9): the request handlers of the server-rendered pages.

Pages: ``/`` (tasks by status), ``/tasks/{id}`` (attempt timeline, logs, audit events) and
``/deliveries`` (the webhook ledger with outcomes and ignore reasons; search, filters and
pages), ``/deliveries/{id}`` (one delivery and its payload), ``/outcomes`` (outcome records
per agent preset and model); ``/login`` sets the
cookie a private dashboard needs. Rendering is pure and lives in :mod:`bot.web.pages`, one
module a page.

``?fragment=1`` on a page answers only its ``<main>`` content: ``static/dashboard.js``
subscribes to ``/api/events`` and swaps that content in when a task changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from aiohttp import web

from bot import ci
from bot.ci import HeadState
from bot.operations.outcomes import read_outcomes
from bot.store.base import Store
from bot.tasks.model import Status, Task
from bot.web import paging, views
from bot.web.actions import actions_view, task_actions, with_notice
from bot.web.api import (
    ApiError,
    check_id,
    parse_event,
    parse_limit,
    parse_positive_int,
    parse_repo,
    parse_search,
    parse_state,
    parse_status,
    parse_task_cursor,
    parse_verdict,
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
from bot.web.pages.actions import render_replay_button
from bot.web.pages.board import BOARD_LIMIT, render_board, render_board_filters
from bot.web.pages.deliveries import (
    DELIVERIES_LIMIT,
    render_deliveries,
    render_deliveries_filters,
)
from bot.web.pages.delivery import render_delivery
from bot.web.pages.html import (
    html_response,
    redirect,
    render_message,
    render_page,
    wants_fragment,
)
from bot.web.pages.outcomes import render_outcomes
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
        q = request.query
        status = parse_status(q.get("status"))
        repo = parse_repo(q.get("repo"))
        search = parse_search(q.get("q"))
        before = parse_task_cursor(q.get("before"))
        limit = parse_limit(q.get("limit"), default=BOARD_LIMIT, maximum=BOARD_LIMIT)
        fetched = await self.store.list_tasks(
            statuses=[status] if status else None, repo=repo, limit=limit + 1, search=search, before=before
        )
        tasks, more = paging.split_page(fetched, limit)
        content = render_board(
            tasks, now=self.clock(), html_base=self.html_base, ci=await self._ci_states(tasks),
            older_href=paging.page_href("/", q, before=paging.task_cursor(tasks[-1])) if more else None,
            newest_href=paging.page_href("/", q, before=None) if before else None,
            filtered=bool(status or repo or search),
        )
        return self._page(request, "Tasks", content, page="board",
                          before=render_board_filters(status, repo, search))

    async def _ci_states(self, tasks: Sequence[Task]) -> dict[str, HeadState]:
        """The CI state of each head in review, from the facts the CI evaluation records (one
        query for the page)."""
        in_review = [t for t in tasks if t.status is Status.REVIEW and t.head_sha]
        if not in_review:
            return {}
        keys = [key for t in in_review for key in ci.head_fact_keys(t.repo, t.head_sha)]
        recorded = await self.store.which_facts(keys)
        return {t.id: ci.head_state_from(recorded, t.repo, t.head_sha) for t in in_review}

    async def task(self, request: web.Request) -> web.Response:
        task_id = check_id("task", request.match_info["task_id"])
        task = await self.store.get_task(task_id)
        if task is None:
            raise ApiError(404, f"There is no task {task_id!r}.")
        attempts = await self.store.list_attempts(task.id)
        events = await self.store.list_events(task.id)
        logs = await self.store.read_log_batches(task.id)
        actions = task_actions(request, self._admin_token, task, now=self.clock())
        content = render_task(task, attempts, events, logs, now=self.clock(), html_base=self.html_base,
                              actions=actions)
        title = f"{task.repo}#{task.issue_number}"
        return with_notice(
            request, self._admin_token, task.id,
            lambda notice: self._page(request, title, content, page="task", task_id=task.id, before=notice),
        )

    async def deliveries(self, request: web.Request) -> web.Response:
        q = request.query
        filters: dict[str, Any] = {
            "state": parse_state(q.get("state")),
            "repo": parse_repo(q.get("repo")),
            "event": parse_event(q.get("event")),
            "verdict": parse_verdict(q.get("verdict")),
        }
        before = parse_positive_int("before", q.get("before"))
        with_bots = q.get("bots") == "1"
        limit = parse_limit(q.get("limit"), default=DELIVERIES_LIMIT, maximum=DELIVERIES_LIMIT)
        fetched = await self.store.list_deliveries(
            limit=limit + 1, before_seq=before, from_bots=None if with_bots else False, **filters
        )
        rows, more = paging.split_page(fetched, limit)
        folded = None
        if not with_bots:  # how many the folding hides, counted up to a page
            hidden = await self.store.list_deliveries(limit=limit, before_seq=before, from_bots=True, **filters)
            folded = len(hidden)
        content = render_deliveries(
            rows, now=self.clock(), tasks=await self.store.tasks_for_deliveries([d.id for d in rows]),
            older_href=paging.page_href("/deliveries", q, before=str(rows[-1].seq)) if more else None,
            newest_href=paging.page_href("/deliveries", q, before=None) if before else None,
            bots_folded=folded,
            bots_href=paging.page_href("/deliveries", q, bots=None if with_bots else "1", before=None),
            filtered=any(v is not None for v in filters.values()),
        )
        return self._page(
            request, "Deliveries", content, page="deliveries",
            before=render_deliveries_filters(filters["verdict"], filters["event"], filters["repo"], bots=with_bots),
        )

    async def delivery(self, request: web.Request) -> web.Response:
        delivery_id = check_id("delivery", request.match_info["delivery_id"])
        row = await self.store.get_delivery(delivery_id)
        if row is None:
            raise ApiError(404, f"There is no delivery {delivery_id!r}.")
        task_id = (await self.store.tasks_for_deliveries([row.id])).get(row.id)
        path = views.delivery_path(row.id)
        view = actions_view(request, self._admin_token, path)
        actions = render_replay_button(row.id, view)
        content = render_delivery(row, now=self.clock(), task_id=task_id, actions=actions, show_payload=view.can_act)
        return with_notice(
            request, self._admin_token, row.id,
            lambda notice: self._page(request, f"Delivery {row.id}", content, page="delivery", before=notice,
                                      live=False),
        )

    async def outcomes(self, request: web.Request) -> web.Response:
        """Outcome records per agent preset and model (not live: a reading over many tasks)."""
        content = render_outcomes(await read_outcomes(self.store))
        return self._page(request, "Outcomes", content, page="outcomes", live=False)

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
