"""One delivery's page (``/deliveries/{id}``): its facts, what became of it, the task it
changed, and its payload as indented JSON (pure rendering).

The payload is shown redacted (values under secret-sounding keys, and anything shaped like a
token by :func:`bot.redaction.redact`) and escaped; a payload the ledger's retention dropped
says so.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from bot.redaction import REDACTED, redact
from bot.store.base import Delivery
from bot.web import views
from bot.web.pages.deliveries import event_label, render_outcome, verdict_badge
from bot.web.pages.html import badge, e, exact_time

PAYLOAD_HEADING = "Payload"
PAYLOAD_NOT_JSON = "The payload is not JSON; shown as received."
PAYLOAD_EMPTY = "The payload is empty."
PAYLOAD_NEEDS_LOGIN = (
    "The payload (issue and comment texts, who did what) is shown only with the admin token: "
    "log in, or use `patchwright deliveries show ID --payload` on the server."
)
BOT_SENDER = "a bot account: its echoes are folded on the deliveries page"
BACK = "← Deliveries"


#: A value under a key containing one of these words is shown as :data:`REDACTED` (addresses,
#: keys ending ``_url``, excepted: ``access_tokens_url`` is a link, not a token).
SECRET_KEY_WORDS: tuple[str, ...] = ("token", "secret", "password", "private_key", "credential")


def _hide_secret_values(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: REDACTED if _secret_key(k) and isinstance(v, str) and v else _hide_secret_values(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_hide_secret_values(v) for v in value]
    return value


def _secret_key(key: str) -> bool:
    lowered = key.lower()
    return not lowered.endswith("_url") and any(word in lowered for word in SECRET_KEY_WORDS)


def pretty_payload(payload: bytes) -> tuple[str, bool]:
    """The payload as indented JSON with secret-named values and token-shaped text redacted;
    and whether it was JSON at all."""
    text = payload.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return redact(text), False
    return redact(json.dumps(_hide_secret_values(data), indent=2, ensure_ascii=False)), True


def _facts(rows: list[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _payload(delivery: Delivery, *, shown: bool) -> str:
    if delivery.payload_pruned:
        return (f'<p class="muted pruned">{e(views.PAYLOAD_PRUNED_TITLE)}</p>')
    if not delivery.payload:
        return f'<p class="muted">{e(PAYLOAD_EMPTY)}</p>'
    if not shown:
        return f'<p class="muted payload-hidden">{e(PAYLOAD_NEEDS_LOGIN)}</p>'
    text, is_json = pretty_payload(delivery.payload)
    note = "" if is_json else f'<p class="muted">{e(PAYLOAD_NOT_JSON)}</p>'
    return f'{note}<pre class="payload" tabindex="0">{e(text)}</pre>'


def render_delivery(
    delivery: Delivery, *, now: datetime, task_id: str | None, actions: str = "", show_payload: bool = False
) -> str:
    """The page content. ``task_id``: the task the delivery changed (None: none);
    ``actions``: the replay form, rendered by the caller (already HTML); ``show_payload``:
    the viewer holds the admin token (like the API, the read side never shows payloads)."""
    d = delivery
    muted_dash = '<span class="muted">-</span>'
    sender = e(d.sender) if d.sender else muted_dash
    if d.from_bot:
        sender += f' <span class="muted">({e(BOT_SENDER)})</span>'
    task = (f'<a class="mono" href="{e(views.task_path(task_id))}">{e(task_id)}</a>' if task_id else muted_dash)
    size = f"{len(d.payload):,} bytes" if not d.payload_pruned else views.PAYLOAD_PRUNED
    facts = _facts([
        ("Outcome", verdict_badge(d.verdict) + f' <span class="muted">state</span> {badge(d.state.value)}'),
        ("What happened", render_outcome(d)),
        ("Task", task),
        ("Event", e(event_label(d))),
        ("Repository", e(d.repo or "-")),
        ("Installation", e(d.installation_id if d.installation_id is not None else "-")),
        ("Sender", sender),
        ("Received", exact_time(d.received_at, now)),
        ("Claimed", exact_time(d.claimed_at, now) + (f' <span class="muted">by {e(d.claimed_by)}</span>'
                                                     if d.claimed_by else "")),
        ("Processed", exact_time(d.processed_at, now)),
        ("Dispatch attempts", e(d.attempts)),
        ("Sequence", e(d.seq)),
        ("Payload", e(size)),
    ])
    return (
        f'<p><a href="/deliveries">{e(BACK)}</a></p>'
        f'<h1><span class="muted">{e(event_label(d))}</span> <span class="mono">{e(d.id)}</span></h1>'
        f"{facts}{actions}"
        f'<h2>{e(PAYLOAD_HEADING)}</h2>{_payload(d, shown=show_payload)}'
    )
