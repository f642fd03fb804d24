"""The JSON API, pages, auth rules, metrics and the event stream over HTTP, on both stores."""

from __future__ import annotations

import asyncio
import json
import re
import time

from prometheus_client.parser import text_string_to_metric_families

from bot.store.base import DeliveryState
from bot.tasks.model import Status
from bot.web.auth import COOKIE_NAME
from bot.web.routes import METRICS_KEY, TASK_FEED_KEY

SECRET_WORDS = ("token", "secret", "password", "private_key", "session")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def all_keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in all_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in all_keys(v)}
    return set()


async def get_json(client, path: str, status: int = 200, **kwargs):
    resp = await client.get(path, **kwargs)
    body = await resp.json()
    assert resp.status == status, (path, resp.status, body)
    assert resp.content_type == "application/json"
    return body


async def test_task_list_shapes_and_filters(store, clock, seeder, make_client):
    seeded = await seeder(store, clock())
    client = await make_client(store, clock=clock)
    listing = await get_json(client, "/api/tasks")
    assert listing["count"] == 3
    by_id = {t["id"]: t for t in listing["tasks"]}
    failed = by_id[seeded.failed.id]
    assert (failed["status"], failed["attempt"], failed["max_attempts"], failed["cost_usd"]) == ("failed", 2, 5, 1.5)
    assert failed["pr_url"] == "https://github.com/octo/widgets/pull/12" and failed["pr_number"] == 12
    assert failed["issue_url"] == "https://github.com/octo/widgets/issues/7"
    assert by_id[seeded.hostile.id]["title"] == seeded.hostile_title
    assert by_id[seeded.hostile.id]["pr_url"] == ""  # not an http(s) address

    assert [t["id"] for t in (await get_json(client, "/api/tasks?status=failed"))["tasks"]] == [seeded.failed.id]
    assert [t["id"] for t in (await get_json(client, "/api/tasks?repo=evil/repo"))["tasks"]] == [seeded.hostile.id]
    both = await get_json(client, "/api/tasks?status=pending&repo=octo/widgets")
    assert [t["id"] for t in both["tasks"]] == [seeded.pending.id]
    assert (await get_json(client, "/api/tasks?status=merged"))["tasks"] == []
    assert (await get_json(client, "/api/tasks?limit=1"))["count"] == 1

    for bad, words in (("status=bogus", "Unknown status"), ("repo=nope", "owner/name"),
                       ("limit=0", "limit"), ("limit=abc", "limit"), ("limit=5000", "at most")):
        body = await get_json(client, f"/api/tasks?{bad}", status=400)
        assert words in body["error"]


async def test_task_detail_with_attempts_events_and_logs(store, clock, seeder, make_client):
    seeded = await seeder(store, clock())
    client = await make_client(store, clock=clock)
    detail = await get_json(client, f"/api/tasks/{seeded.failed.id}")
    assert detail["spec"] == "spec of Fix the flaky parser"
    attempts = detail["attempts"]
    assert [(a["number"], a["kind"], a["outcome"], a["cost_usd"]) for a in attempts] == [
        (1, "first", "pushed", 0.5), (2, "ci_failure", "failed", 1.0)]
    assert attempts[0]["head_before"] == "1" * 40 and attempts[0]["head_after"] == "f" * 40
    assert attempts[1]["error"] == "tests failed"
    assert [(e["kind"], e["from_status"], e["to_status"]) for e in detail["events"]][-1] == (
        "transition", "pending", "failed")
    assert detail["events"][-1]["delivery_id"] == "d-1" and detail["events"][-1]["actor"] == "test"

    logs = await get_json(client, f"/api/tasks/{seeded.failed.id}/logs")
    assert [(line["attempt"], line["line"]) for line in logs["lines"]] == [
        (1, "attempt 1 line 1"), (1, "attempt 1 line 2"), (2, "attempt 2 line 1"), (2, "attempt 2 line 2")]
    second = await get_json(client, f"/api/tasks/{seeded.failed.id}/logs?attempt=2")
    assert second["attempt"] == 2 and [line["line"] for line in second["lines"]] == [
        "attempt 2 line 1", "attempt 2 line 2"]
    assert (await get_json(client, f"/api/tasks/{seeded.failed.id}/logs?attempt=9"))["lines"] == []

    for path in ("/api/tasks/task_nope", "/api/tasks/task_nope/logs", "/api/tasks/" + "x" * 300,
                 "/api/deliveries/nope", "/api/nothing/here"):
        assert "error" in await get_json(client, path, status=404)
    for bad in ("0", "x", "1.5"):
        body = await get_json(client, f"/api/tasks/{seeded.failed.id}/logs?attempt={bad}", status=400)
        assert "attempt" in body["error"]


async def test_deliveries_with_outcomes_and_filters(store, clock, seeder, make_client):
    await seeder(store, clock())
    client = await make_client(store, clock=clock)
    rows = (await get_json(client, "/api/deliveries"))["deliveries"]
    assert [d["id"] for d in rows] == ["d-3", "d-2", "d-1"]  # newest first
    done = await get_json(client, "/api/deliveries?state=done")
    assert [(d["id"], d["outcome"], d["ignore_reason"]) for d in done["deliveries"]] == [
        ("d-1", "ignored", "not permitted: sender has read access")]
    assert [d["id"] for d in (await get_json(client, "/api/deliveries?repo=evil/repo"))["deliveries"]] == ["d-3"]
    one = await get_json(client, "/api/deliveries/d-1")
    assert (one["event"], one["action"], one["repo"], one["state"]) == ("issues", "labeled", "octo/widgets", "done")
    assert "payload" not in one and one["payload_bytes"] > 0
    assert "Unknown state" in (await get_json(client, "/api/deliveries?state=bogus", status=400))["error"]


async def test_no_response_carries_a_token_or_secret(store, clock, seeder, make_client, admin_token):
    seeded = await seeder(store, clock())
    secrets = (admin_token, "webhook-secret-value-9", "-----BEGIN PRIVATE KEY-----", seeded.session_handle,
               "ghs_payloadsecret")
    client = await make_client(store, clock=clock, admin_token=admin_token, webhook_secret=secrets[1],
                               private_key=secrets[2] + "\nabc\n-----END PRIVATE KEY-----", app_slug="bot")
    api_paths = ["/api/tasks", f"/api/tasks/{seeded.failed.id}", f"/api/tasks/{seeded.hostile.id}",
                 f"/api/tasks/{seeded.failed.id}/logs", "/api/deliveries", "/api/deliveries/d-1"]
    for path in api_paths:
        resp = await client.get(path)
        text = await resp.text()
        assert resp.status == 200, path
        assert not [k for k in all_keys(json.loads(text)) if any(w in k.lower() for w in SECRET_WORDS)], path
        assert not [s for s in secrets if s in text], path
    for path in ("/", f"/tasks/{seeded.failed.id}", "/deliveries", "/metrics", "/login"):
        text = await (await client.get(path)).text()
        assert not [s for s in secrets if s in text], path
    retried = await client.post(f"/api/tasks/{seeded.failed.id}/retry", headers=bearer(admin_token))
    text = await retried.text()
    assert retried.status == 200 and not [s for s in secrets if s in text]


async def test_mutations_are_off_without_a_configured_token(store, clock, seeder, make_client):
    seeded = await seeder(store, clock())
    client = await make_client(store, clock=clock)
    for path in (f"/api/tasks/{seeded.failed.id}/retry", f"/api/tasks/{seeded.pending.id}/stop",
                 "/api/deliveries/d-1/replay"):
        for headers in ({}, bearer("anything")):
            body = await (resp := await client.post(path, headers=headers)).json()
            assert resp.status == 403 and "PATCHWRIGHT_ADMIN_TOKEN" in body["error"], path
    assert (await store.get_task(seeded.failed.id)).status is Status.FAILED
    assert (await store.get_delivery("d-1")).state is DeliveryState.DONE


async def test_mutations_need_the_right_bearer_token(store, clock, seeder, make_client, admin_token):
    seeded = await seeder(store, clock())
    client = await make_client(store, clock=clock, admin_token=admin_token)
    path = f"/api/tasks/{seeded.pending.id}/stop"
    login = await client.get(f"/login?token={admin_token}", allow_redirects=False)
    assert login.status == 303 and COOKIE_NAME in client.session.cookie_jar.filter_cookies(client.make_url("/"))
    for headers in ({}, bearer("wrong"), bearer(admin_token + "x"), {"Authorization": admin_token}):
        resp = await client.post(path, headers=headers)  # the dashboard cookie is sent too, and not enough
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in (await resp.json())["error"]
    assert (await store.get_task(seeded.pending.id)).status is Status.PENDING
    resp = await client.post(path, headers=bearer(admin_token))
    assert resp.status == 200 and (await resp.json())["task"]["status"] == "paused"


async def test_retry_stop_and_replay(store, clock, seeder, make_client, admin_token):
    seeded = await seeder(store, clock())
    client = await make_client(store, clock=clock, admin_token=admin_token, app_slug="patchbot")
    auth = bearer(admin_token)

    resp = await client.post(f"/api/tasks/{seeded.failed.id}/retry", json={"instructions": "use the v2 parser"},
                             headers=auth)
    body = await resp.json()
    assert resp.status == 200, body
    assert body["message"] == f"{seeded.failed.id}: failed -> pending"
    task = body["task"]
    assert (task["status"], task["attempt"], task["retry_kind"]) == ("pending", 3, "manual")
    assert "use the v2 parser" in task["retry_context"]
    stored = await store.get_task(seeded.failed.id)
    assert stored.status is Status.PENDING and stored.version == seeded.failed.version + 1
    last = (await store.list_events(seeded.failed.id))[-1]
    assert (last.actor, last.from_status, last.to_status) == ("api", Status.FAILED, Status.PENDING)

    again = await client.post(f"/api/tasks/{seeded.failed.id}/retry", headers=auth)
    assert again.status == 409 and "@patchbot stop" in (await again.json())["error"]
    stop = await client.post(f"/api/tasks/{seeded.failed.id}/stop", headers=auth)
    assert stop.status == 200 and (await stop.json())["task"]["status"] == "paused"
    assert (await client.post(f"/api/tasks/{seeded.failed.id}/stop", headers=auth)).status == 409
    assert (await client.post(f"/api/tasks/{seeded.hostile.id}/stop", headers=auth)).status == 409  # in review

    for bad in (b"not json", b"[1]", b'{"instructions": 3}', b'{"why": "x"}'):
        resp = await client.post(f"/api/tasks/{seeded.failed.id}/retry", data=bad, headers=auth)
        assert resp.status == 400 and "error" in await resp.json()
    assert (await client.post("/api/tasks/task_nope/retry", headers=auth)).status == 404
    assert (await client.post("/api/tasks/task_nope/stop", headers=auth)).status == 404

    replay = await client.post("/api/deliveries/d-1/replay", headers=auth)
    body = await replay.json()
    assert replay.status == 202 and body["delivery"]["state"] == "pending"
    assert (await store.get_delivery("d-1")).state is DeliveryState.PENDING
    busy = await client.post("/api/deliveries/d-2/replay", headers=auth)
    assert busy.status == 409 and "still waiting" in (await busy.json())["error"]
    assert (await client.post("/api/deliveries/nope/replay", headers=auth)).status == 404


async def test_private_read_api_and_dashboard_login(store, clock, seeder, make_client, admin_token):
    seeded = await seeder(store, clock())
    client = await make_client(store, clock=clock, admin_token=admin_token, private_read_api=True)
    for path in ("/api/tasks", f"/api/tasks/{seeded.failed.id}", "/api/deliveries", "/metrics", "/api/events"):
        resp = await client.get(path)
        assert resp.status == 401 and "/login" in (await resp.json())["error"], path
    assert (await client.get("/api/tasks", headers=bearer(admin_token))).status == 200
    assert (await client.get("/metrics", headers=bearer(admin_token))).status == 200

    page = await client.get(f"/tasks/{seeded.failed.id}")
    html = await page.text()
    assert page.status == 401 and 'action="/login"' in html and seeded.failed.title not in html
    assert f'name="next" value="/tasks/{seeded.failed.id}"' in html
    assert (await client.get("/?fragment=1")).status == 401
    assert (await client.get("/login?token=wrong", allow_redirects=False)).status == 401
    assert (await client.get("/static/dashboard.css")).status == 200  # the login page needs its style

    resp = await client.post("/login", data={"token": admin_token, "next": f"/tasks/{seeded.failed.id}"},
                             allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == f"/tasks/{seeded.failed.id}"
    cookie = resp.cookies[COOKIE_NAME]
    assert cookie.value and admin_token not in cookie.value
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/"
    assert "Fix the flaky parser" in await (await client.get(f"/tasks/{seeded.failed.id}")).text()
    assert (await client.get("/api/tasks")).status == 200  # the cookie reads the API too
    assert (await client.post(f"/api/tasks/{seeded.pending.id}/stop")).status == 401  # but never writes

    evil = await client.get(f"/login?token={admin_token}&next=https://evil.example/", allow_redirects=False)
    assert evil.status == 303 and evil.headers["Location"] == "/"
    out = await client.get("/logout", allow_redirects=False)
    assert out.status == 303
    assert (await client.get("/api/tasks")).status == 401


async def test_private_read_api_without_a_token_says_how_to_fix_it(store, clock, make_client):
    client = await make_client(store, clock=clock, private_read_api=True)
    resp = await client.get("/api/tasks")
    assert resp.status == 403 and "PATCHWRIGHT_ADMIN_TOKEN" in (await resp.json())["error"]
    page = await client.get("/")
    assert page.status == 403 and "PATCHWRIGHT_ADMIN_TOKEN" in await page.text()
    assert (await client.get("/login?token=x")).status == 403


async def test_pages_escape_hostile_text(store, clock, seeder, make_client):
    seeded = await seeder(store, clock())
    client = await make_client(store, clock=clock)
    for path in ("/", "/?fragment=1", f"/tasks/{seeded.hostile.id}", f"/tasks/{seeded.hostile.id}?fragment=1"):
        resp = await client.get(path)
        html = await resp.text()
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "&lt;script&gt;alert(&quot;pwn&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;" in html, path
        assert "<script>alert" not in html, path
        hrefs = re.findall(r'href="([^"]*)"', html)
        assert hrefs and all(re.match(r"(https?://|/|#)", h) for h in hrefs), (path, hrefs)
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    task_page = await (await client.get(f"/tasks/{seeded.hostile.id}")).text()
    assert "&lt;img src=x onerror=alert(1)&gt; done" in task_page and "<img" not in task_page
    fragment = await (await client.get("/?fragment=1")).text()
    assert not fragment.startswith("<!doctype") and 'data-status="review"' in fragment


async def test_pages_show_tasks_attempts_and_deliveries(store, clock, seeder, make_client):
    seeded = await seeder(store, clock())
    client = await make_client(store, clock=clock)
    board = await (await client.get("/")).text()
    assert board.index('id="status-pending"') < board.index('id="status-review"') < board.index('id="status-failed"')
    assert 'href="https://github.com/octo/widgets/pull/12"' in board and "$1.50" in board and "2/5" in board
    assert 'src="/static/dashboard.js"' in board
    filtered = await (await client.get("/?status=failed")).text()
    assert seeded.failed.id in filtered and seeded.pending.id not in filtered
    page = await (await client.get(f"/tasks/{seeded.failed.id}")).text()
    for text in ("fix CI failure", "tests failed", f'commit/{"1" * 40}" rel="noopener noreferrer">1111111111</a>',
                 f'commit/{"f" * 40}"', "attempt 2 line 2",
                 "test moved to failed", "$1.50 of $10.00", 'href="/deliveries/d-1"'):
        assert text in page, text
    deliveries = await (await client.get("/deliveries?state=done")).text()
    assert "not permitted: sender has read access" in deliveries and "d-2" not in deliveries
    missing = await client.get("/tasks/task_nope")
    assert missing.status == 404 and "task_nope" in await missing.text()
    assert (await client.get("/?status=bogus")).status == 400
    js = await client.get("/static/dashboard.js")
    assert js.status == 200 and "EventSource" in await js.text()


async def test_metrics_text(store, clock, seeder, make_client):
    await seeder(store, clock())
    client = await make_client(store, clock=clock)
    metrics = client.server.app[METRICS_KEY]
    metrics.count_delivery("accepted")
    metrics.count_delivery("accepted")
    metrics.count_delivery("rejected")
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain; version=")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(await resp.text())
        for s in family.samples
    }
    assert samples[("patchwright_tasks", (("status", "pending"),))] == 1
    assert samples[("patchwright_tasks", (("status", "failed"),))] == 1
    assert samples[("patchwright_tasks", (("status", "merged"),))] == 0
    assert samples[("patchwright_deliveries", (("state", "done"),))] == 1
    assert samples[("patchwright_deliveries", (("state", "pending"),))] == 1
    assert samples[("patchwright_cost_usd", ())] == 1.5
    assert samples[("patchwright_webhook_deliveries_total", (("result", "accepted"),))] == 2
    assert samples[("patchwright_webhook_deliveries_total", (("result", "duplicate"),))] == 0
    assert samples[("patchwright_webhook_deliveries_total", (("result", "rejected"),))] == 1
    assert samples[("patchwright_event_stream_subscribers", ())] == 0
    openmetrics = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await openmetrics.text()).rstrip().endswith("# EOF")


async def read_event(resp, name: bytes) -> dict:
    """Read SSE lines until an ``event: <name>`` message; return its data."""
    while True:
        line = await resp.content.readline()
        assert line, "the stream ended"
        if line.rstrip(b"\n") == b"event: " + name:
            data = await resp.content.readline()
            assert data.startswith(b"data: ")
            return json.loads(data[len(b"data: "):])


async def test_event_stream_sends_a_task_change_within_a_second(store, clock, seeder, make_client):
    seeded = await seeder(store, clock())
    client = await make_client(store, clock=clock)
    resp = await client.get("/api/events")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    hello = await asyncio.wait_for(resp.content.readuntil(b": connected\n\n"), 2)
    assert hello.startswith(b"retry: ")
    started = time.monotonic()
    moved = await store.transition(seeded.pending.id, from_statuses=[Status.PENDING],
                                   changes={"status": Status.PAUSED})
    assert moved is not None
    data = await asyncio.wait_for(read_event(resp, b"task"), 2)
    assert time.monotonic() - started < 1.0
    assert (data["id"], data["status"], data["version"]) == (seeded.pending.id, "paused", moved.version)
    assert "spec" not in data and "agent_session" not in data
    resp.close()


async def test_open_streams_end_when_the_app_shuts_down(store, clock, make_client):
    client = await make_client(store, clock=clock)
    resp = await client.get("/api/events")
    await asyncio.wait_for(resp.content.readuntil(b": connected\n\n"), 2)
    feed = client.server.app[TASK_FEED_KEY]
    assert feed.subscriber_count == 1 and feed.running
    started = time.monotonic()
    await client.server.close()  # shutdown + cleanup of the app, the client session stays open
    assert time.monotonic() - started < 2.0
    assert feed.subscriber_count == 0 and not feed.running
    assert await asyncio.wait_for(resp.content.read(), 2) == b""  # the server ended the stream


class FailingStore:
    """A store whose every read fails (a database that went away)."""

    async def list_tasks(self, **kwargs):
        raise RuntimeError("database went away")

    async def get_task(self, task_id):
        raise RuntimeError("database went away")

    async def list_deliveries(self, **kwargs):
        raise RuntimeError("database went away")

    async def get_delivery(self, delivery_id):
        raise RuntimeError("database went away")


async def test_a_failing_store_answers_503_never_500(make_client):
    client = await make_client(FailingStore())
    for path in ("/api/tasks", "/api/tasks/t", "/api/deliveries", "/api/deliveries/d", "/metrics", "/api/events"):
        resp = await client.get(path)
        assert resp.status == 503 and "RuntimeError" in (await resp.json())["error"], path
    for path in ("/", "/tasks/t", "/deliveries"):
        resp = await client.get(path)
        assert resp.status == 503 and "Store unavailable" in await resp.text(), path


async def test_create_app_serves_the_web_surface(store, clock, seeder, aiohttp_client):
    from bot.app import create_app
    from bot.config import Settings

    await seeder(store, clock())
    app = create_app(Settings(webhook_secret="s3cret"), store=store)
    client = await aiohttp_client(app)
    assert (await get_json(client, "/api/tasks"))["count"] == 3
    assert (await client.get("/")).status == 200 and (await client.get("/metrics")).status == 200
    app[METRICS_KEY].count_delivery("duplicate")
    assert 'patchwright_webhook_deliveries_total{result="duplicate"} 1.0' in await (await client.get("/metrics")).text()
