"""Cursor paging: the cursor module (pure), and every row exactly once across the pages of
``/api/tasks`` and ``/api/deliveries`` while rows are added between requests (both stores)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from bot.store.base import Delivery, DeliveryState
from bot.tasks.model import Task
from bot.web import paging
from tests.web.conftest import make_task

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def b64(data) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_a_task_cursor_round_trips_and_is_url_safe():
    t = Task(id="task_01X-y", repo="o/r", installation_id=1, issue_number=1, title="t",
             created_at=NOW + timedelta(microseconds=123456))
    cursor = paging.task_cursor(t)
    assert cursor.isascii() and all(c.isalnum() or c in "-_" for c in cursor)
    position = paging.decode_task_cursor(cursor)
    assert (position.created_at, position.id) == (t.created_at, t.id)


def test_a_delivery_cursor_round_trips():
    d = Delivery(id="d", event="issues", action="", repo="", installation_id=None, payload=b"",
                 received_at=NOW, seq=4711)
    assert paging.decode_delivery_cursor(paging.delivery_cursor(d)) == 4711


@pytest.mark.parametrize(
    "cursor",
    [
        "", "!!!", "a" * 700, "é", b64([1]), b64({"seq": 1, "x": 2}), b64({"seq": "1"}), b64({"seq": 0}),
        b64({"seq": True}), b64({"seq": 2**64}), b64({"t": NOW.isoformat(), "id": 1}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_bad_delivery_cursors_are_refused_with_one_line(cursor):
    with pytest.raises(paging.BadCursor) as caught:
        paging.decode_delivery_cursor(cursor)
    assert "\n" not in str(caught.value) and str(caught.value) == paging.BAD_CURSOR


@pytest.mark.parametrize(
    "data",
    [
        {"seq": 3}, {"t": "yesterday", "id": "x"}, {"t": "2025-03-01T12:00:00", "id": "x"},
        {"t": NOW.isoformat(), "id": ""}, {"t": NOW.isoformat(), "id": "a\x00b"}, {"t": 5, "id": "x"},
        {"t": NOW.isoformat(), "id": "x", "more": 1},
    ],
)
def test_bad_task_cursors_are_refused(data):
    with pytest.raises(paging.BadCursor):
        paging.decode_task_cursor(b64(data))


def test_split_page_knows_whether_more_follow():
    assert paging.split_page([1, 2, 3], 2) == ([1, 2], True)
    assert paging.split_page([1, 2], 2) == ([1, 2], False)
    assert paging.split_page([], 2) == ([], False)


# -- over HTTP, on both stores ---------------------------------------------------------------


async def walk(client, path: str, key: str, *, between) -> list[str]:
    """Follow next_cursor to the end, calling ``between`` after every page; the ids seen."""
    seen: list[str] = []
    url = path
    pages = 0
    while True:
        resp = await client.get(url)
        body = await resp.json()
        assert resp.status == 200, body
        ids = [row["id"] for row in body[key]]
        assert body["count"] == len(ids)
        seen += ids
        pages += 1
        assert pages < 50
        if not body["has_more"]:
            assert body["next_cursor"] is None
            return seen
        assert isinstance(body["next_cursor"], str) and ids
        await between(pages)
        sep = "&" if "?" in path else "?"
        url = f"{path}{sep}cursor={body['next_cursor']}"


async def test_task_pages_return_every_task_once_while_tasks_are_added(store, clock, make_client):
    created = []
    for n in range(7):
        t, _ = await store.create_task(make_task(f"task_{n:02d}", "octo/widgets", n + 1, f"Task {n}", clock()))
        created.append(t.id)
        if n % 2:
            clock.advance(timedelta(seconds=1))  # some tasks share a created_at: the id breaks the tie
    client = await make_client(store, clock=clock)
    added = []

    async def add(page: int) -> None:
        clock.advance(timedelta(seconds=1))
        t, _ = await store.create_task(make_task(f"task_new{page}", "octo/widgets", 100 + page, "new", clock()))
        added.append(t.id)

    seen = await walk(client, "/api/tasks?limit=3", "tasks", between=add)
    assert sorted(seen) == sorted(created)  # each existing task exactly once, none added meanwhile
    assert len(seen) == len(set(seen)) and added

    searched = await walk(client, "/api/tasks?limit=2&q=task%201", "tasks", between=add)
    assert searched == ["task_01"]


async def test_delivery_pages_return_every_delivery_once_while_deliveries_arrive(store, clock, make_client):
    async def record(delivery_id: str, sender: str = "alice") -> None:
        await store.record_delivery(
            Delivery(id=delivery_id, event="issues", action="labeled", repo="octo/widgets", installation_id=1,
                     payload=json.dumps({"sender": {"login": sender}}).encode(), received_at=clock(),
                     sender=sender)
        )

    for n in range(8):
        await record(f"d-{n}", "patchwright[bot]" if n % 3 == 0 else "alice")
    client = await make_client(store, clock=clock)

    async def arrive(page: int) -> None:
        await record(f"late-{page}")

    seen = await walk(client, "/api/deliveries?limit=3", "deliveries", between=arrive)
    assert sorted(seen) == sorted(f"d-{n}" for n in range(8))
    late = [d.id for d in await store.list_deliveries(limit=100) if d.id.startswith("late-")]
    humans = await walk(client, "/api/deliveries?limit=2&bots=0", "deliveries", between=arrive)
    assert sorted(humans) == sorted([f"d-{n}" for n in range(8) if n % 3] + late)
    bots = await walk(client, "/api/deliveries?limit=2&bots=1", "deliveries", between=arrive)
    assert sorted(bots) == ["d-0", "d-3", "d-6"]


async def test_api_filters_and_bad_cursors(store, clock, make_client):
    await store.record_delivery(
        Delivery(id="d-x", event="issue_comment", action="edited", repo="octo/widgets", installation_id=1,
                 payload=b"{}", received_at=clock())
    )
    await store.finish_delivery("d-x", state=DeliveryState.DONE, outcome="x: ignored: no", ignore_reason="no")
    client = await make_client(store, clock=clock)
    for query, expected in (("event=issue_comment", ["d-x"]), ("event=issue_comment.edited", ["d-x"]),
                            ("event=issues", []), ("verdict=ignored", ["d-x"]), ("verdict=acted", [])):
        body = await (await client.get(f"/api/deliveries?{query}")).json()
        assert [d["id"] for d in body["deliveries"]] == expected, query
        assert body["has_more"] is False and body["next_cursor"] is None
    for path in ("/api/tasks?cursor=nope", "/api/deliveries?cursor=nope", f"/api/deliveries?cursor={b64({'t': 1})}",
                 "/api/deliveries?verdict=maybe", "/api/deliveries?bots=perhaps", "/api/deliveries?event=a%20b",
                 "/api/tasks?q=" + "x" * 300):
        resp = await client.get(path)
        body = await resp.json()
        assert resp.status == 400, (path, body)
        assert "\n" not in body["error"]
