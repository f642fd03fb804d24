"""Deliveries you can scan: verdict badges, the outcome once without handler names, filters,
the bot's echoes folded, the task a delivery changed, paging, and one delivery's page with its
payload (pure renderers, then over HTTP on both stores)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from bot.store.base import Delivery, DeliveryState, DeliveryVerdict
from bot.web.pages.deliveries import (
    HandlerOutcome,
    handler_outcomes,
    render_deliveries,
    render_outcome,
)
from bot.web.pages.delivery import pretty_payload, render_delivery
from tests.web.test_api import bearer

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def delivery(delivery_id: str = "d", **changes) -> Delivery:
    base = Delivery(id=delivery_id, event="issues", action="labeled", repo="o/r", installation_id=1,
                    payload=b'{"action": "labeled"}', received_at=NOW, seq=5)
    return Delivery(**{**{f: getattr(base, f) for f in base.__slots__ if not f.startswith("_")}, **changes})


def ids(html: str) -> list[str]:
    return re.findall(r'<tr data-delivery-id="([^"]+)"', html)


# -- pure ---------------------------------------------------------------------------------------


def test_the_ledger_outcome_is_split_per_handler():
    text = ("issues.on_labeled: done: Created task t_1; comments.on_comment: ignored: not a command; "
            "ci.on_check: failed: KeyError: 'sha'; x.y: done")
    assert handler_outcomes(text) == [
        HandlerOutcome("issues.on_labeled", "done", "Created task t_1"),
        HandlerOutcome("comments.on_comment", "ignored", "not a command"),
        HandlerOutcome("ci.on_check", "failed", "KeyError: 'sha'"),
        HandlerOutcome("x.y", "done", ""),
    ]
    # a handler's own words may contain "; " (a rule's reason does)
    assert handler_outcomes("a.b: done: Tests failed; retrying: attempt 2 of 5.") == [
        HandlerOutcome("a.b", "done", "Tests failed; retrying: attempt 2 of 5.")]
    assert handler_outcomes("no handler") == [HandlerOutcome("", "", "no handler")]
    assert handler_outcomes("") == []


def test_the_outcome_shows_once_without_handler_names():
    ignored = delivery(state=DeliveryState.DONE, ignore_reason="not permitted: read access",
                       outcome="issues.on_labeled: ignored: not permitted: read access")
    html = render_outcome(ignored)
    assert html.count("not permitted: read access") == 1
    assert 'title="issues.on_labeled"' in html and ">issues.on_labeled" not in html
    acted = delivery(state=DeliveryState.DONE, outcome="pulls.on_closed: ignored: not ours; issues.on_labeled: done: Created")
    assert render_outcome(acted).index("Created") < render_outcome(acted).index("not ours")
    legacy = delivery(state=DeliveryState.DONE, outcome="ignored", ignore_reason="old reason")
    assert "old reason" in render_outcome(legacy)


def test_rows_carry_a_verdict_badge_in_words_the_sender_and_the_task():
    rows = [
        delivery("a", state=DeliveryState.DONE, outcome="i.h: done: x", seq=4),
        delivery("b", state=DeliveryState.DONE, outcome="i.h: ignored: y", ignore_reason="y", seq=3,
                 sender="patchwright[bot]"),
        delivery("c", state=DeliveryState.FAILED, outcome="i.h: failed: E", seq=2),
        delivery("d", seq=1, sender="alice"),
    ]
    html = render_deliveries(rows, now=NOW, tasks={"a": "task_<1>"})
    for verdict, words in ((DeliveryVerdict.ACTED, "acted on"), (DeliveryVerdict.IGNORED, "ignored"),
                           (DeliveryVerdict.FAILED, "failed"), (DeliveryVerdict.WAITING, "waiting")):
        assert f'<span class="badge v-{verdict.value}">{words}</span>' in html
    assert 'href="/tasks/task_%3C1%3E"' in html and "task_&lt;1&gt;" in html
    assert 'href="/deliveries/a"' in html and "data-from-bot" in html and "alice" in html
    folded = render_deliveries(rows[:1], now=NOW, bots_folded=12, bots_href="/deliveries?bots=1")
    assert '<a href="/deliveries?bots=1">show 12 from bots</a>' in folded
    shown = render_deliveries(rows, now=NOW, bots_folded=None, bots_href="/deliveries")
    assert "hide those from bots" in shown
    paged = render_deliveries(rows, now=NOW, older_href="/deliveries?before=1")
    assert '<a rel="next" href="/deliveries?before=1">Older →</a>' in paged


def test_the_delivery_page_shows_the_payload_indented_escaped_and_redacted():
    payload = json.dumps({"comment": {"body": "<script>x</script>"}, "token": "short-one",
                          "installation": {"access_tokens_url": "https://api/x"},
                          "leak": "ghs_" + "a" * 36}).encode()
    d = delivery(payload=payload, sender="patchwright[bot]", state=DeliveryState.DONE, outcome="i.h: done: ok")
    page = render_delivery(d, now=NOW, task_id="task_1", actions="<form>REPLAY</form>", show_payload=True)
    hidden = render_delivery(d, now=NOW, task_id="task_1")  # a viewer without the admin token
    assert "&quot;comment&quot;" not in hidden and "<pre" not in hidden and 'class="muted payload-hidden"' in hidden
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>" not in page
    assert "short-one" not in page and "ghs_aaaa" not in page and "https://api/x" in page
    assert '\n  &quot;comment&quot;: {' in page  # indented JSON
    assert 'href="/tasks/task_1"' in page and "<form>REPLAY</form>" in page and "a bot account" in page
    assert "2025-03-01 12:00:00" in page
    pruned = render_delivery(delivery(payload=b"", payload_pruned_at=NOW), now=NOW, task_id=None)
    assert 'class="muted pruned"' in pruned and "<pre" not in pruned
    assert pretty_payload(b"not json <b>") == ("not json <b>", False)


# -- over HTTP, on both stores --------------------------------------------------------------------


async def record(store, delivery_id: str, *, received_at, sender: str = "alice", event: str = "issues",
                 action: str = "labeled", state=None, outcome: str = "", reason: str = "") -> None:
    await store.record_delivery(
        Delivery(id=delivery_id, event=event, action=action, repo="octo/widgets", installation_id=1,
                 payload=json.dumps({"action": action, "sender": {"login": sender}}).encode(),
                 received_at=received_at, sender=sender)
    )
    if state is not None:
        await store.finish_delivery(delivery_id, state=state, outcome=outcome, ignore_reason=reason)


async def test_the_deliveries_page_folds_bots_filters_links_tasks_and_pages(store, clock, seeder, make_client):
    await seeder(store, clock())  # d-1 (done, ignored; changed tasks), d-2 (waiting), d-3 (failed)
    now = clock()
    await record(store, "echo-1", received_at=now, sender="patchwright[bot]", event="issue_comment", action="edited",
                 state=DeliveryState.DONE, outcome="comments.on_comment: ignored: our own comment",
                 reason="our own comment")
    await record(store, "human-1", received_at=now, event="issue_comment", action="created",
                 state=DeliveryState.DONE, outcome="comments.on_comment: done: Paused by alice.")
    client = await make_client(store, clock=clock)

    page = await (await client.get("/deliveries")).text()
    assert set(ids(page)) == {"d-1", "d-2", "d-3", "human-1"}  # the bot's echo is folded
    assert "show 1 from bots" in page and 'href="/deliveries?bots=1"' in page
    assert "comments.on_comment:" not in page and "Paused by alice." in page
    assert re.search(r'data-delivery-id="d-1".*?href="/tasks/task_0', page, re.DOTALL)  # the task it changed
    everything = await (await client.get("/deliveries?bots=1")).text()
    assert "echo-1" in ids(everything) and "hide those from bots" in everything

    ignored = await (await client.get("/deliveries?verdict=ignored&bots=1")).text()
    assert set(ids(ignored)) == {"d-1", "echo-1"}
    comments = await (await client.get("/deliveries?event=issue_comment")).text()
    assert ids(comments) == ["human-1"] and '<option value="issue_comment" selected>' in comments
    exact = await (await client.get("/deliveries?event=issue_comment.edited&bots=1")).text()
    assert ids(exact) == ["echo-1"]
    assert (await client.get("/deliveries?verdict=maybe")).status == 400

    seen: list[str] = []
    url = "/deliveries?limit=2&bots=1"
    for _ in range(5):
        page = await (await client.get(url)).text()
        seen += ids(page)
        older = re.search(r'<a rel="next" href="([^"]+)">', page)
        if not older:
            break
        url = older.group(1).replace("&amp;", "&")
        await record(store, f"late-{len(seen)}", received_at=clock())  # arrivals never shift a page
    assert sorted(seen) == sorted(["d-1", "d-2", "d-3", "echo-1", "human-1"])


async def test_a_delivery_page_with_payload_and_replay(store, clock, seeder, make_client, admin_token):
    await seeder(store, clock())
    client = await make_client(store, clock=clock, admin_token=admin_token)
    page = await client.get("/deliveries/d-1", headers=bearer(admin_token))
    text = await page.text()
    assert page.status == 200 and "&quot;action&quot;: &quot;labeled&quot;" in text
    assert "ghs_payloadsecret" not in text and "[REDACTED]" in text
    assert 'action="/deliveries/d-1/replay"' in text and 'href="/tasks/task_0' in text
    anonymous = await (await client.get("/deliveries/d-1")).text()
    assert 'action="/deliveries/d-1/replay"' not in anonymous and "Log in to act" in anonymous
    assert "&quot;action&quot;" not in anonymous and "payload-hidden" in anonymous  # no payload without the token
    missing = await client.get("/deliveries/nope")
    assert missing.status == 404 and "nope" in await missing.text()
    clock.advance(timedelta(days=40))
    await store.prune_delivery_payloads(clock(), limit=10)
    pruned = await (await client.get("/deliveries/d-1", headers=bearer(admin_token))).text()
    assert 'class="muted pruned"' in pruned and "&quot;action&quot;" not in pruned
