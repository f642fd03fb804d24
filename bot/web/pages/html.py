"""The dashboard's HTML building blocks (pure, except the response helpers): escaping, times,
links, badges, the page frame, the message page, and the response wrappers every page uses.

Every value is escaped (issue titles, logs and agent output are untrusted). Pages load no
inline script or style (the Content-Security-Policy forbids them) and nothing from another
origin.
"""

from __future__ import annotations

import functools
import html
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from bot.messages import KIND_WORDS, OUTCOME_WORDS
from bot.web import views
from bot.web.api import ApiError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

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


def duration(seconds: float | None) -> str:
    """A span of time, short: "45s", "12m 05s", "3h 20m", "2d 4h" ("-" when unknown)."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def span(start: datetime | None, end: datetime | None) -> str:
    """:func:`duration` from ``start`` to ``end`` ("-" when either is unknown)."""
    return duration((end - start).total_seconds()) if start and end else "-"


def exact_time(value: datetime | None, now: datetime) -> str:
    """A ``<time>`` element: the absolute UTC time (to the second), the relative one after it."""
    if value is None:
        return '<span class="muted">-</span>'
    exact = value.strftime("%Y-%m-%d %H:%M:%S")
    return (f'<time datetime="{e(value.isoformat())}">{e(exact)}</time>'
            f' <span class="muted rel">{e(ago(value, now))}</span>')


def tidy(text: str) -> str:
    """Text quoted into text, with the doubled punctuation of the join removed: ".:" → ":",
    ".;" → ";", ".," → ",", ".." → "." (an ellipsis stays)."""
    text = re.sub(r"(?<!\.)\.([:;,])", r"\1", text)
    return re.sub(r"(?<!\.)\.\.(?!\.)", ".", text)


def repo_url(html_base: str, repo: str, *tail: str) -> str:
    """The web address of ``repo`` (``owner/name``) and a path below it, each part quoted."""
    owner, _, name = repo.partition("/")
    parts = [quote(owner, safe=""), quote(name, safe=""), *(quote(t, safe="") for t in tail)]
    return html_base.rstrip("/") + "/" + "/".join(parts)


def sha_link(html_base: str, repo: str, sha: str) -> str:
    """A short SHA linked to its commit on GitHub ("-" when there is none)."""
    if not sha:
        return '<span class="muted">-</span>'
    return f'<span class="mono">{link(repo_url(html_base, repo, "commit", sha), short_sha(sha))}</span>'


def pr_link(url: str, number: int | None) -> str:
    """The pull request as "#n", linked when its address is http(s)."""
    if not url and number is None:
        return '<span class="muted">-</span>'
    return link(url, f"#{number}" if number is not None else "PR")



# -- pages (pure) -------------------------------------------------------------------------------

#: What the live pill says until the event stream opens (static/dashboard.js then says "live").
LIVE_CONNECTING = "connecting…"


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
    if page == "task":  # the logs' search and live follow (bot.web.pages.logs)
        script += '<script src="/static/transcript.js" defer></script>'
    nav = "".join(
        f'<a href="{href}"{" class=current" if page == key else ""}>{label}</a>'
        for key, href, label in (("board", "/", "Tasks"), ("deliveries", "/deliveries", "Deliveries"),
                                 ("outcomes", "/outcomes", "Outcomes"), ("metrics", "/metrics", "Metrics"))
    )
    indicator = f'<span id="live" class="live wait" role="status">{e(LIVE_CONNECTING)}</span>' if live else ""
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

