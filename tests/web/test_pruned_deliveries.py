"""Deliveries whose payload the ledger's retention dropped: still listed on the page and in the
API (``payload_pruned``), and refused for replay; on both stores."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from bot.operations.retention import prune_payloads
from bot.store.base import Delivery, DeliveryState
from bot.web import views
from bot.web.pages.deliveries import render_deliveries

DAY = timedelta(days=1)


async def prune_seeded(store, clock, seeder):
    """The sample deliveries (d-1 done, d-2 pending, d-3 failed), then 31 days on and pruned
    with the default retention: only d-1 loses its payload."""
    await seeder(store, clock())
    clock.advance(31 * DAY)
    run = await prune_payloads(store, days=30, now=clock.now)
    assert run.pruned == 1


async def test_page_and_api_show_a_pruned_delivery(store, clock, seeder, make_client):
    await prune_seeded(store, clock, seeder)
    client = await make_client(store, clock=clock)

    page = await (await client.get("/deliveries")).text()
    rows = dict(re.findall(r'<tr data-delivery-id="([^"]+)"(.*?)</tr>', page, re.S))
    assert rows.keys() == {"d-1", "d-2", "d-3"}  # every row still listed
    assert views.PAYLOAD_PRUNED in rows["d-1"] and "data-payload-pruned" in rows["d-1"]
    assert "not permitted: sender has read access" in rows["d-1"]  # the outcome stays
    assert not any(views.PAYLOAD_PRUNED in rows[d] for d in ("d-2", "d-3"))

    listing = (await (await client.get("/api/deliveries")).json())["deliveries"]
    shown = {d["id"]: d for d in listing}
    assert shown["d-1"]["payload_pruned"] is True and shown["d-1"]["payload_bytes"] == 0
    assert shown["d-1"]["payload_pruned_at"] == clock.now.isoformat()
    assert (shown["d-1"]["state"], shown["d-1"]["ignore_reason"]) == ("done", "not permitted: sender has read access")
    assert [shown[d]["payload_pruned"] for d in ("d-2", "d-3")] == [False, False]
    assert shown["d-2"]["payload_pruned_at"] is None and shown["d-2"]["payload_bytes"] > 0
    one = await (await client.get("/api/deliveries/d-1")).json()
    assert one["payload_pruned"] is True and "payload" not in one


async def test_replay_of_a_pruned_delivery_is_refused(store, clock, seeder, make_client, admin_token):
    await prune_seeded(store, clock, seeder)
    client = await make_client(store, clock=clock, admin_token=admin_token)
    auth = {"Authorization": f"Bearer {admin_token}"}
    resp = await client.post("/api/deliveries/d-1/replay", headers=auth)
    body = await resp.json()
    assert resp.status == 409
    assert body["error"].startswith("Delivery d-1 cannot be replayed: its payload was pruned")
    assert "\n" not in body["error"]
    row = await store.get_delivery("d-1")
    assert row.state is DeliveryState.DONE and row.payload_pruned
    replayed = await client.post("/api/deliveries/d-3/replay", headers=auth)  # failed, kept: replays
    assert replayed.status == 202


def test_render_marks_pruned_rows_only():
    now = datetime(2024, 5, 1, tzinfo=UTC)
    kept = Delivery(id="kept", event="issues", action="opened", repo="o/r", installation_id=1, payload=b"{}",
                    received_at=now, state=DeliveryState.DONE, outcome="handled")
    gone = Delivery(id="gone", event="issues", action="opened", repo="o/r", installation_id=1, payload=b"",
                    received_at=now, state=DeliveryState.DONE, outcome="handled", payload_pruned_at=now)
    html = render_deliveries([gone, kept], now=now)
    assert html.count(views.PAYLOAD_PRUNED) == 1 and html.count("data-payload-pruned") == 1
    assert html.index("payload pruned") < html.index('data-delivery-id="kept"')
    assert views.delivery_json(gone)["payload_pruned"] is True
    assert views.delivery_json(kept)["payload_pruned"] is False
