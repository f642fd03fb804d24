"""The deliveries page (``/deliveries``): the webhook ledger you can scan (pure rendering).

Per row a badge of what became of the delivery (acted on, ignored, failed, waiting), the
outcome once (per handler, without the handler's name), the task it changed, and a link to
its own page. Filters by verdict, event and repository; the bot's own echoes (deliveries a
bot account sent) are folded away unless ``?bots=1``; "Older" pages on by ``seq``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.store.base import Delivery, DeliveryVerdict
from bot.web import views
from bot.web.pages.html import e, when

DELIVERIES_LIMIT = 100

#: The events a GitHub App of patchwright receives (app.yml, plus those sent to every App).
DELIVERY_EVENTS: tuple[str, ...] = (
    "issues",
    "issue_comment",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "check_suite",
    "check_run",
    "workflow_run",
    "status",
    "push",
    "installation",
    "installation_repositories",
    "ping",
)
VERDICT_WORDS: Mapping[DeliveryVerdict, str] = {
    DeliveryVerdict.ACTED: "acted on",
    DeliveryVerdict.IGNORED: "ignored",
    DeliveryVerdict.FAILED: "failed",
    DeliveryVerdict.WAITING: "waiting",
}
VERDICT_LABEL = "Outcome"
EVENT_LABEL = "Event"
REPO_LABEL = "Repository"
ANY = "any"
FILTER_BUTTON = "Filter"
NO_DELIVERIES = "No deliveries."
NO_MATCH = "No delivery matches."
OLDER = "Older"
NEWEST = "Newest"
SHOW_BOTS = "show {count} from bots"
HIDE_BOTS = "hide those from bots"
BOTS_FOLDED = "Deliveries sent by bot accounts (the bot's own comments and check runs echoed back) are folded."
DONE_WORD = "done"
NO_OUTCOME = "-"


@dataclass(frozen=True, slots=True)
class HandlerOutcome:
    """What one handler did with a delivery, read from the ledger's outcome text."""

    handler: str  # e.g. "issues.on_labeled"; "" when the text names none
    kind: str  # "done", "ignored", "failed", or "" when unknown
    text: str  # the words after the kind ("" for a bare "done")


_HANDLER = re.compile(r"(?:^|; )([A-Za-z_]\w*\.[A-Za-z_]\w*): (?=(?:done|ignored|failed)(?::|$|;))")
_KIND = re.compile(r"(done|ignored|failed)(?:: (.*))?", re.DOTALL)


def handler_outcomes(outcome: str) -> list[HandlerOutcome]:
    """The ledger's ``"module.handler: done: …; other.handler: ignored: …"`` split per
    handler (the dispatcher's :func:`~bot.dispatcher.summarize` format); a text in another
    shape is one outcome without a handler."""
    matches = list(_HANDLER.finditer(outcome))
    pieces: list[tuple[str, str]] = []
    if not matches or matches[0].start() > 0:
        head = outcome[: matches[0].start()] if matches else outcome
        if head.strip():
            pieces.append(("", head))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(outcome)
        pieces.append((match.group(1), outcome[match.end():end]))
    out = []
    for handler, text in pieces:
        kind = _KIND.fullmatch(text.strip())
        if kind:
            out.append(HandlerOutcome(handler, kind.group(1), (kind.group(2) or "").strip()))
        else:
            out.append(HandlerOutcome(handler, "", text.strip()))
    return out


def render_outcome(delivery: Delivery) -> str:
    """The outcome once: each handler's words (its name on hover), what was done first; the
    ignore reason only when no handler's words say it already. A delivery every handler
    ignored shows its ignore reason alone (the dispatcher built it from those handlers' words)."""
    if delivery.verdict is DeliveryVerdict.IGNORED:
        handlers = ", ".join(dict.fromkeys(p.handler for p in handler_outcomes(delivery.outcome) if p.handler))
        title = f' title="{e(handlers)}"' if handlers else ""
        return f'<div class="ho ho-ignored"{title}>{e(delivery.ignore_reason)}</div>'
    parts = handler_outcomes(delivery.outcome)
    parts.sort(key=lambda p: {"failed": 0, "done": 1, "": 2, "ignored": 3}.get(p.kind, 2))
    seen: set[tuple[str, str]] = set()
    lines = []
    for part in parts:
        words = part.text or (DONE_WORD if part.kind == "done" else part.kind)
        if (part.kind, words) in seen or not words:
            continue
        seen.add((part.kind, words))
        title = f' title="{e(part.handler)}"' if part.handler else ""
        lines.append(f'<div class="ho ho-{e(part.kind or "other")}"{title}>{e(words)}</div>')
    said = {p.text for p in parts}
    if delivery.ignore_reason and not {r.strip() for r in delivery.ignore_reason.split("; ")} <= said:
        lines.append(f'<div class="ho ho-ignored">{e(delivery.ignore_reason)}</div>')
    return "".join(lines) or f'<span class="muted">{NO_OUTCOME}</span>'


def verdict_badge(verdict: DeliveryVerdict) -> str:
    """A chip with the verdict in words (never colour alone)."""
    return f'<span class="badge v-{e(verdict.value)}">{e(VERDICT_WORDS[verdict])}</span>'


def event_label(delivery: Delivery) -> str:
    return f"{delivery.event}.{delivery.action}" if delivery.action else delivery.event


def _select(name: str, label: str, options: Iterable[tuple[str, str]], selected: str | None) -> str:
    opts = [f'<option value="">{e(ANY)}</option>'] + [
        f'<option value="{e(value)}"{" selected" if value == selected else ""}>{e(words)}</option>'
        for value, words in options
    ]
    return f'<label>{e(label)} <select name="{e(name)}">{"".join(opts)}</select></label>'


def render_deliveries_filters(
    verdict: DeliveryVerdict | None, event: str | None, repo: str | None, *, bots: bool = False
) -> str:
    """The GET form above the ledger: verdict, event, repository (labelled fields)."""
    events = list(DELIVERY_EVENTS)
    if event and event not in events:
        events.append(event)
    hidden = '<input type="hidden" name="bots" value="1">' if bots else ""
    return (
        '<form class="filters" method="get" action="/deliveries">'
        + _select("verdict", VERDICT_LABEL, [(v.value, VERDICT_WORDS[v]) for v in DeliveryVerdict],
                  verdict.value if verdict else None)
        + _select("event", EVENT_LABEL, [(name, name) for name in events], event)
        + f'<label>{e(REPO_LABEL)} <input name="repo" placeholder="owner/name" value="{e(repo or "")}"></label>'
        + f'{hidden}<button type="submit">{e(FILTER_BUTTON)}</button></form>'
    )


def render_deliveries(
    rows: Sequence[Delivery],
    *,
    now: datetime,
    tasks: Mapping[str, str] | None = None,
    older_href: str | None = None,
    newest_href: str | None = None,
    bots_folded: int | None = None,
    bots_href: str | None = None,
    filtered: bool = False,
) -> str:
    """The ledger table. ``tasks``: delivery id → the task it changed; ``bots_folded``: how
    many deliveries from bots this listing leaves out (None: they are shown), ``bots_href``
    the address that shows (or hides) them; ``older_href``/``newest_href``: the pager."""
    tasks = tasks or {}
    notes = []
    if bots_href and bots_folded:
        more = SHOW_BOTS.format(count=bots_folded)
        notes.append(f'<p class="muted bots">{e(BOTS_FOLDED)} <a href="{e(bots_href)}">{e(more)}</a></p>')
    elif bots_href and bots_folded is None:
        notes.append(f'<p class="muted bots"><a href="{e(bots_href)}">{e(HIDE_BOTS)}</a></p>')
    links = []
    if newest_href:
        links.append(f'<a href="{e(newest_href)}">{e(NEWEST)}</a>')
    if older_href:
        links.append(f'<a rel="next" href="{e(older_href)}">{e(OLDER)} →</a>')
    pager = f'<nav class="pager" aria-label="pages">{" ".join(links)}</nav>' if links else ""
    if not rows:
        empty = NO_MATCH if filtered or newest_href else NO_DELIVERIES
        return f'{"".join(notes)}<p class="empty">{e(empty)}</p>{pager}'
    body = []
    for d in rows:
        pruned = (
            f'<div class="muted pruned" title="{e(views.PAYLOAD_PRUNED_TITLE)}">{e(views.PAYLOAD_PRUNED)}</div>'
            if d.payload_pruned else ""
        )
        task_id = tasks.get(d.id)
        task = (f'<a class="mono" href="{e(views.task_path(task_id))}">{e(task_id)}</a>'
                if task_id else '<span class="muted">-</span>')
        sender = e(d.sender) if d.sender else '<span class="muted">-</span>'
        body.append(
            f'<tr data-delivery-id="{e(d.id)}" data-verdict="{e(d.verdict.value)}"'
            f'{" data-from-bot" if d.from_bot else ""}{" data-payload-pruned" if d.payload_pruned else ""}>'
            f"<td>{when(d.received_at, now)}</td>"
            f'<td class="mono"><a href="{e(views.delivery_path(d.id))}">{e(d.id[:36])}</a>{pruned}</td>'
            f"<td>{e(event_label(d))}</td>"
            f"<td>{e(d.repo or '-')}</td>"
            f"<td>{sender}</td>"
            f"<td>{verdict_badge(d.verdict)}</td>"
            f"<td>{render_outcome(d)}</td>"
            f"<td>{task}</td>"
            "</tr>"
        )
    return (
        "".join(notes)
        + '<table class="deliveries"><thead><tr><th>Received</th><th>Delivery</th><th>Event</th>'
        "<th>Repository</th><th>Sender</th><th>Outcome</th><th>What happened</th><th>Task</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>{pager}"
    )
