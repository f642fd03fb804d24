"""The deliveries page (``/deliveries``): the webhook ledger (pure rendering)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote

from bot.store.base import Delivery, DeliveryState
from bot.web import views
from bot.web.pages.html import badge, e, render_filters, when

DELIVERIES_LIMIT = 200


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
