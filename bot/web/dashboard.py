"""The operator dashboard (SPEC §9): server-rendered HTML, refreshed live by a little script.

Pages: ``/`` (tasks by status), ``/tasks/{id}`` (attempt timeline, logs, audit events) and
``/deliveries`` (the webhook ledger with outcomes and ignore reasons); ``/login`` sets the
cookie a private dashboard needs. Rendering is pure (``render_*``) and escapes every value:
issue titles, logs and agent summaries are untrusted. Pages load no inline script or style
(the Content-Security-Policy forbids them) and nothing from another origin.

``?fragment=1`` on a page answers only its ``<main>`` content: ``static/dashboard.js``
subscribes to ``/api/events`` and swaps that content in when a task changes.
"""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from bot.messages import COST_UNKNOWN_NOTE, KIND_WORDS, OUTCOME_WORDS, STATUS_MEANINGS
from bot.store.base import Attempt, Delivery, DeliveryState, Store, TaskEvent
from bot.tasks.model import Status, Task
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

log = logging.getLogger(__name__)

BOARD_ORDER: tuple[Status, ...] = (
    Status.RUNNING,
    Status.PENDING,
    Status.WAITING,
    Status.REVIEW,
    Status.PAUSED,
    Status.FAILED,
    Status.MERGED,
    Status.CLOSED,
)
BOARD_LIMIT = 500
DELIVERIES_LIMIT = 200
LOG_LINES_SHOWN = 2000  # per attempt; the API has them all
WRONG_TOKEN = "That token is not right."

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def e(value: Any) -> str:
    """HTML-escape any value (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


# -- small pieces (pure) ---------------------------------------------------------------------


def ago(then: datetime | None, now: datetime) -> str:
    """``then`` relative to ``now``: "just now", "5m ago", "3h ago", "2d ago" ("in 4m" ahead)."""
    if then is None:
        return "-"
    seconds = int((now - then).total_seconds())
    ahead = seconds < 0
    seconds = abs(seconds)
    if seconds < 10:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        if seconds >= size:
            amount = f"{seconds // size}{unit}"
            return f"in {amount}" if ahead else f"{amount} ago"
    return "just now"  # unreachable: seconds >= 10 here


def when(value: datetime | None, now: datetime) -> str:
    """A ``<time>`` element: relative text, the exact UTC time on hover."""
    if value is None:
        return '<span class="muted">-</span>'
    exact = value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f'<time datetime="{e(value.isoformat())}" title="{e(exact)}">{e(ago(value, now))}</time>'


def money(value: float) -> str:
    return f"${value:,.2f}"


def link(url: str | None, text: str, *, external: bool = True) -> str:
    """An ``<a>`` for http(s) URLs only; anything else is shown as text."""
    safe = views.safe_http_url(url or "")
    if safe is None:
        return e(text)
    rel = ' rel="noopener noreferrer"' if external else ""
    return f'<a href="{e(safe)}"{rel}>{e(text)}</a>'


def badge(status: str) -> str:
    return f'<span class="badge s-{e(status)}">{e(status)}</span>'


def short_sha(sha: str) -> str:
    return sha[:10] if sha else "-"


def kind_words(kind: Any) -> str:
    value = str(getattr(kind, "value", kind))
    return KIND_WORDS.get(value, value)


def outcome_words(outcome: str) -> str:
    return OUTCOME_WORDS.get(outcome, outcome)


# -- pages (pure) -------------------------------------------------------------------------------


def render_page(
    title: str,
    content: str,
    *,
    page: str,
    before: str = "",
    task_id: str | None = None,
    live: bool = True,
) -> str:
    """A whole page: header, optional controls above the live content, the content."""
    attrs = f' data-page="{e(page)}"'
    if task_id is not None:
        attrs += f' data-task-id="{e(task_id)}"'
    script = '<script src="/static/dashboard.js" defer></script>' if live else ""
    nav = "".join(
        f'<a href="{href}"{" class=current" if page == key else ""}>{label}</a>'
        for key, href, label in (("board", "/", "Tasks"), ("deliveries", "/deliveries", "Deliveries"),
                                 ("metrics", "/metrics", "Metrics"))
    )
    indicator = '<span id="live" class="live off">offline</span>' if live else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · patchwright</title>"
        '<link rel="stylesheet" href="/static/dashboard.css">'
        f"{script}</head>"
        f"<body{attrs}>"
        f'<header><a class="brand" href="/">patchwright</a><nav>{nav}</nav>{indicator}</header>'
        f"{before}"
        f'<main id="content">{content}</main>'
        "</body></html>\n"
    )


def render_filters(action: str, field: str, values: Iterable[str], selected: str | None, repo: str | None) -> str:
    """The GET form above a listing: one ``field`` chosen from ``values``, and a repository."""
    options = [f'<option value="">any {field}</option>'] + [
        f'<option value="{e(v)}"{" selected" if v == selected else ""}>{e(v)}</option>' for v in values
    ]
    return (
        f'<form class="filters" method="get" action="{e(action)}">'
        f'<select name="{field}" aria-label="{field}">{"".join(options)}</select>'
        f'<input name="repo" placeholder="owner/name" value="{e(repo or "")}" aria-label="repository">'
        '<button type="submit">Filter</button></form>'
    )


def render_board_filters(status: Status | None, repo: str | None) -> str:
    return render_filters("/", "status", [s.value for s in BOARD_ORDER], status.value if status else None, repo)


def _task_row(task: Task, *, now: datetime, html_base: str) -> str:
    reason = task.close_reason or task.retry_reason
    pr = link(task.pr_url, f"#{task.pr_number}" if task.pr_number else "PR") if task.pr_url else "-"
    issue = link(views.issue_url(task, html_base), f"#{task.issue_number}")
    return (
        f'<tr data-task-id="{e(task.id)}">'
        f'<td class="title"><a href="{e(views.task_path(task.id))}">{e(task.title) or "(no title)"}</a>'
        f'{f"<div class=reason>{e(reason)}</div>" if reason else ""}</td>'
        f"<td>{e(task.repo)}</td>"
        f"<td>{issue}</td>"
        f'<td class="num">{task.attempt}/{task.max_attempts}</td>'
        f'<td class="num">{money(task.cost_usd)}</td>'
        f"<td>{pr}</td>"
        f"<td>{when(task.updated_at, now)}</td>"
        "</tr>"
    )


def render_board(tasks: Sequence[Task], *, now: datetime, html_base: str, limit: int = BOARD_LIMIT) -> str:
    """The task list grouped by status (the live part of ``/``)."""
    if not tasks:
        return '<p class="empty">No tasks yet. Label an issue to create one.</p>'
    groups: dict[Status, list[Task]] = {}
    for task in tasks:
        groups.setdefault(task.status, []).append(task)
    counts = "".join(
        f'<a class="count" href="#status-{s.value}">{badge(s.value)} {len(groups[s])}</a>'
        for s in BOARD_ORDER if s in groups
    )
    parts = [f'<nav class="counts">{counts}</nav>']
    for status in BOARD_ORDER:
        group = groups.get(status)
        if not group:
            continue
        rows = "".join(_task_row(t, now=now, html_base=html_base) for t in group)
        parts.append(
            f'<section class="group" id="status-{status.value}" data-status="{status.value}">'
            f"<h2>{badge(status.value)} <span class=n>{len(group)}</span> "
            f'<span class="meaning">{e(STATUS_MEANINGS.get(status.value, ""))}</span></h2>'
            '<table class="tasks"><thead><tr><th>Task</th><th class="w-repo">Repository</th>'
            '<th class="w-s">Issue</th><th class="num w-s">Attempt</th><th class="num w-s">Cost</th>'
            '<th class="w-s">PR</th><th class="w-m">Updated</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></section>"
        )
    if len(tasks) >= limit:
        parts.append(f'<p class="muted">Showing the newest {limit} tasks; filter by repository to see others.</p>')
    return "".join(parts)


def _facts(rows: Sequence[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _attempts_table(attempts: Sequence[Attempt], now: datetime) -> str:
    if not attempts:
        return '<p class="empty">No attempt has started yet.</p>'
    rows = []
    for a in attempts:
        outcome = a.outcome or ""
        notes = ""
        if a.summary:
            notes += f'<div class="summary">{e(a.summary)}</div>'
        if a.error:
            notes += f'<div class="error">{e(a.error)}</div>'
        if a.refused:
            refused = ", ".join(line.split(": ", 1)[0] for line in a.refused.splitlines())
            notes += f'<div class="error">The sandbox refused connections to {e(refused)}</div>'
        cost = money(a.cost_usd) if a.cost_known else '<span title="the agent reported no cost">unknown</span>'
        rows.append(
            f'<tr id="attempt-{a.number}">'
            f'<td class="num">{a.number}</td>'
            f"<td>{e(kind_words(a.kind))}</td>"
            f'<td><span class="outcome o-{e(outcome or "running")}">{e(outcome_words(outcome))}</span></td>'
            f'<td class="num">{cost}</td>'
            f"<td>{when(a.started_at, now)}</td>"
            f"<td>{when(a.finished_at, now)}</td>"
            f'<td class="mono">{e(short_sha(a.head_before))} → {e(short_sha(a.head_after))}</td>'
            f"<td>{notes or '<span class=muted>-</span>'}</td>"
            "</tr>"
        )
    return (
        '<table class="attempts"><thead><tr><th class="num">#</th><th>Kind</th><th>Outcome</th>'
        '<th class="num">Cost</th><th>Started</th><th>Finished</th><th>Head before → after</th>'
        f"<th>Summary</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _logs(task: Task, logs: Mapping[int, Sequence[str]]) -> str:
    if not logs:
        return '<p class="empty">No log lines yet.</p>'
    parts = []
    last = max(logs)
    for number in sorted(logs):
        lines = logs[number]
        shown = lines[-LOG_LINES_SHOWN:]
        api = f"/api{views.task_path(task.id)}/logs?attempt={number}"
        cut = (
            f'<p class="muted">Last {len(shown)} of {len(lines)} lines; <a href="{e(api)}">all lines</a>.</p>'
            if len(shown) < len(lines) else ""
        )
        parts.append(
            f'<details class="log"{" open" if number == last else ""}>'
            f"<summary>Attempt {number} <span class=muted>({len(lines)} lines)</span></summary>"
            f'{cut}<pre>{e(chr(10).join(shown))}</pre></details>'
        )
    return "".join(parts)


def _events_table(events: Sequence[TaskEvent], now: datetime) -> str:
    if not events:
        return '<p class="empty">No events.</p>'
    rows = []
    for ev in events:
        move = ""
        if ev.from_status or ev.to_status:
            move = (
                f'{badge(ev.from_status.value) if ev.from_status else "-"} → '
                f'{badge(ev.to_status.value) if ev.to_status else "-"}'
            )
        delivery = (
            f'<a class="mono" href="/api/deliveries/{e(quote(ev.delivery_id, safe=""))}">{e(ev.delivery_id[:18])}</a>'
            if ev.delivery_id else '<span class="muted">-</span>'
        )
        rows.append(
            f"<tr><td>{when(ev.at, now)}</td><td>{e(ev.kind)}</td><td>{move}</td>"
            f"<td>{e(ev.actor or '-')}</td><td>{delivery}</td><td>{e(ev.reason)}</td></tr>"
        )
    return (
        '<table class="events"><thead><tr><th>When</th><th>Event</th><th>Status</th><th>By</th>'
        f"<th>Delivery</th><th>Reason</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def render_task(
    task: Task,
    attempts: Sequence[Attempt],
    events: Sequence[TaskEvent],
    logs: Mapping[int, Sequence[str]],
    *,
    now: datetime,
    html_base: str,
) -> str:
    """The task page content: facts, attempt timeline, logs per attempt, audit events."""
    pr = link(task.pr_url, task.pr_url) if task.pr_url else "-"
    issue_url = views.issue_url(task, html_base)
    facts = _facts(
        [
            ("Status", f"{badge(task.status.value)} {e(STATUS_MEANINGS.get(task.status.value, ''))}"
             + (f' <span class="muted">({e(task.close_reason)})</span>' if task.close_reason else "")),
            ("Issue", link(issue_url, f"{task.repo}#{task.issue_number}")),
            ("Pull request", pr),
            ("Attempt", (f"{task.attempt} of {task.max_attempts} "
                         f'<span class="muted">({task.budget_left} automatic retries left)</span>')),
            ("Retry", e(kind_words(task.retry_kind))
             + (f" — {e(task.retry_reason)}" if task.retry_reason else "")),
            ("Cost", f"{money(task.cost_usd)} of {money(task.max_cost_usd)}"
             + ("" if all(a.cost_known for a in attempts) else f' <span class="error">{e(COST_UNKNOWN_NOTE.replace("**", ""))}</span>')),
            ("Branch", (f'<span class="mono">{e(task.branch or "-")}</span> '
                        f'<span class="muted">on {e(task.base_branch or "-")}, head</span> '
                        f'<span class="mono">{e(short_sha(task.head_sha))}</span>')),
            ("Agent", e(f"{task.agent or '-'} {task.model}".strip())),
            ("Worker", e(task.worker_id or "-") + (f" · heartbeat {when(task.heartbeat_at, now)}"
                                                   if task.heartbeat_at else "")),
            ("Created", when(task.created_at, now)),
            ("Updated", when(task.updated_at, now)),
        ]
    )
    extra = ""
    if task.retry_context.strip():
        extra += f'<details class="text"><summary>Retry context</summary><pre>{e(task.retry_context)}</pre></details>'
    if task.queued_feedback:
        queued = "\n\n---\n\n".join(task.queued_feedback)
        extra += f'<details class="text"><summary>Queued feedback</summary><pre>{e(queued)}</pre></details>'
    if task.spec.strip():
        extra += f'<details class="text"><summary>Issue text (spec)</summary><pre>{e(task.spec)}</pre></details>'
    return (
        f'<h1><span class="muted">{e(task.repo)}#{task.issue_number}</span> {e(task.title)}</h1>'
        f'<p class="muted mono">{e(task.id)}</p>'
        f"{facts}{extra}"
        f"<h2>Attempts</h2>{_attempts_table(attempts, now)}"
        f"<h2>Logs</h2>{_logs(task, logs)}"
        f"<h2>Events</h2>{_events_table(events, now)}"
    )


def render_deliveries_filters(state: DeliveryState | None, repo: str | None) -> str:
    return render_filters("/deliveries", "state", [s.value for s in DeliveryState], state.value if state else None, repo)


def render_deliveries(rows: Sequence[Delivery], *, now: datetime) -> str:
    """The ledger table: event, repository, state, outcome and ignore reason."""
    if not rows:
        return '<p class="empty">No deliveries.</p>'
    body = []
    for d in rows:
        event = f"{d.event}.{d.action}" if d.action else d.event
        api = f'/api/deliveries/{quote(d.id, safe="")}'
        pruned = (
            f'<div class="muted pruned" title="{e(views.PAYLOAD_PRUNED_TITLE)}">{e(views.PAYLOAD_PRUNED)}</div>'
            if d.payload_pruned else ""
        )
        body.append(
            f'<tr data-delivery-id="{e(d.id)}"{" data-payload-pruned" if d.payload_pruned else ""}>'
            f"<td>{when(d.received_at, now)}</td>"
            f'<td class="mono"><a href="{e(api)}">{e(d.id[:36])}</a>{pruned}</td>'
            f"<td>{e(event)}</td>"
            f"<td>{e(d.repo or '-')}</td>"
            f"<td>{badge(d.state.value)}</td>"
            f"<td>{e(d.outcome) or '<span class=muted>-</span>'}</td>"
            f"<td>{e(d.ignore_reason) or '<span class=muted>-</span>'}</td>"
            "</tr>"
        )
    return (
        '<table class="deliveries"><thead><tr><th>Received</th><th>Delivery</th><th>Event</th>'
        "<th>Repository</th><th>State</th><th>Outcome</th><th>Ignored because</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def render_message(title: str, message: str, *, login_next: str | None = None, error: str = "") -> str:
    """A short page with a message; with ``login_next``, also the login form."""
    form = ""
    if login_next is not None:
        form = (
            '<form class="login" method="post" action="/login">'
            f'<input type="hidden" name="next" value="{e(login_next)}">'
            '<label>Admin token <input type="password" name="token" autocomplete="current-password" '
            'required></label> <button type="submit">Log in</button></form>'
        )
    err = f'<p class="error">{e(error)}</p>' if error else ""
    return render_page(
        title, f"<h1>{e(title)}</h1>{err}<p>{e(message)}</p>{form}", page="message", live=False
    )


# -- responses and handlers ----------------------------------------------------------------


def html_response(text: str, *, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers=SECURITY_HEADERS)


def redirect(location: str) -> web.Response:
    """A 303 to a local path (after a form or login link)."""
    return web.Response(status=303, headers={**SECURITY_HEADERS, "Location": location})


def html_errors(handler: Handler) -> Handler:
    """Answer :class:`ApiError` and store failures with a page (4xx / 503, never a 500)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return html_response(render_message("Not available", exc.message), status=exc.status)
        except web.HTTPException:
            raise
        except Exception as exc:
            log.exception("dashboard %s failed", request.path)
            return html_response(
                render_message("Store unavailable", f"The store could not answer ({type(exc).__name__})."),
                status=503,
            )

    return wrapped


def wants_fragment(request: web.Request) -> bool:
    return request.query.get("fragment") == "1"


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
