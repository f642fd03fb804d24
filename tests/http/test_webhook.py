"""POST /webhook over real HTTP: signatures, bad input, the ledger, duplicates."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from pathlib import Path

import pytest
from aiohttp import FormData

from bot.app import create_app
from bot.config import load_settings
from bot.webhook import MAX_BODY_BYTES

SECRET = "It's a Secret to Everybody"


@pytest.fixture
async def client(aiohttp_client, store):
    settings = load_settings({"PATCHWRIGHT_WEBHOOK_SECRET": SECRET}, env_file=None)
    app = create_app(settings, store=store)
    return await aiohttp_client(app)


def headers(event: str, body: bytes, sign, *, delivery: str | None = None, **extra: str) -> dict[str, str]:
    h = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(body, SECRET),
        "User-Agent": "GitHub-Hookshot/test",
    }
    h.update(extra)
    return h


def example_files(shared_dir: Path) -> list[tuple[str, Path]]:
    root = shared_dir / "github" / "webhooks"
    return sorted((p.relative_to(root).parts[0], p) for p in root.rglob("*.json"))


async def test_every_example_payload_is_accepted(client, store, shared_dir, sign):
    files = example_files(shared_dir)
    assert len(files) > 100
    for event, path in files:
        body = path.read_bytes()
        resp = await client.post("/webhook", data=body, headers=headers(event, body, sign))
        assert resp.status in (200, 202), (path, resp.status, await resp.text())
    assert len(await store.list_deliveries(limit=10_000)) == len(files)
    health = await client.get("/healthz")
    assert health.status == 200


async def test_recorded_delivery_keeps_event_action_repo_installation(client, store, shared_dir, sign):
    body = (shared_dir / "github/webhooks/issues/labeled.payload.json").read_bytes()
    payload = json.loads(body)
    resp = await client.post("/webhook", data=body, headers=headers("issues", body, sign, delivery="d-1"))
    assert resp.status == 202
    assert (await resp.json())["status"] == "accepted"
    row = await store.get_delivery("d-1")
    assert row is not None
    assert (row.event, row.action, row.repo) == ("issues", "labeled", payload["repository"]["full_name"])
    assert row.payload == body
    assert row.installation_id == (payload.get("installation") or {}).get("id")


async def test_ping_answers_200(client, shared_dir, sign):
    body = (shared_dir / "github/webhooks/ping/payload.json").read_bytes()
    resp = await client.post("/webhook", data=body, headers=headers("ping", body, sign))
    assert resp.status == 200


async def test_duplicate_delivery_answers_200_and_records_once(client, store, sign):
    body = b'{"action": "opened", "repository": {"full_name": "o/r"}}'
    h = headers("issues", body, sign, delivery="same-id")
    first = await client.post("/webhook", data=body, headers=h)
    again = await client.post("/webhook", data=body, headers=h)
    assert (first.status, again.status) == (202, 200)
    assert (await again.json())["status"] == "duplicate"
    assert [d.id for d in await store.list_deliveries()] == ["same-id"]


async def test_five_concurrent_copies_make_one_row(client, store, sign):
    body = b'{"action": "labeled", "repository": {"full_name": "o/r"}}'
    h = headers("issues", body, sign, delivery="burst")
    statuses = sorted(
        r.status for r in await asyncio.gather(*(client.post("/webhook", data=body, headers=h) for _ in range(5)))
    )
    assert statuses == [200, 200, 200, 200, 202]
    assert len(await store.list_deliveries()) == 1


BODY = b'{"action": "opened"}'


@pytest.mark.parametrize(
    "case, status, fragment",
    [
        ("unsigned", 401, "Missing X-Hub-Signature-256"),
        ("wrong signature", 401, "does not match"),
        ("sha1 only", 401, "SHA-1"),
        ("malformed signature", 401, "Malformed"),
        ("no event header", 400, "X-GitHub-Event"),
        ("no delivery header", 400, "X-GitHub-Delivery"),
        ("invalid json", 400, "not valid JSON"),
        ("json array", 400, "JSON object"),
        ("no content type", 415, "application/json"),
    ],
)
async def test_bad_requests_get_their_4xx(client, store, sign, case, status, fragment):
    body = BODY
    h = headers("issues", body, sign)
    if case == "unsigned":
        del h["X-Hub-Signature-256"]
    elif case == "wrong signature":
        h["X-Hub-Signature-256"] = sign(body, "another secret")
    elif case == "sha1 only":
        del h["X-Hub-Signature-256"]
        h["X-Hub-Signature"] = "sha1=" + "0" * 40
    elif case == "malformed signature":
        h["X-Hub-Signature-256"] = "md5=abc"
    elif case == "no event header":
        del h["X-GitHub-Event"]
    elif case == "no delivery header":
        del h["X-GitHub-Delivery"]
    elif case == "invalid json":
        body = b"{not json"
        h["X-Hub-Signature-256"] = sign(body, SECRET)
    elif case == "json array":
        body = b"[1, 2]"
        h["X-Hub-Signature-256"] = sign(body, SECRET)
    elif case == "no content type":
        del h["Content-Type"]
    resp = await client.post("/webhook", data=body, headers=h)
    assert resp.status == status
    assert fragment in (await resp.json())["error"]
    assert await store.list_deliveries() == []


async def test_form_encoded_delivery_is_415(client, store, sign):
    form = FormData({"payload": BODY.decode()})
    resp = await client.post(
        "/webhook",
        data=form,
        headers={"X-GitHub-Event": "issues", "X-GitHub-Delivery": "f", "X-Hub-Signature-256": sign(BODY, SECRET)},
    )
    assert resp.status == 415
    assert await store.list_deliveries() == []


async def test_body_over_25_mib_is_413(client, store, sign):
    body = b'{"pad": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}'
    resp = await client.post("/webhook", data=io.BytesIO(body), headers=headers("issues", body, sign))
    assert resp.status == 413
    assert await store.list_deliveries() == []


async def test_get_on_webhook_is_405(client):
    resp = await client.get("/webhook")
    assert resp.status == 405


async def test_hooks_set_after_construction_wake_and_count(aiohttp_client, store, sign):
    """create_app attaches the dispatcher's wake-up once the runtime started: the ingress must
    call the hook it is given then (and count outcomes for /metrics)."""
    from aiohttp import web

    from bot.tasks.model import utcnow
    from bot.webhook import WebhookIngress

    ingress = WebhookIngress(store, SECRET, clock=utcnow)
    woken, results = [], []
    ingress.on_recorded = lambda: woken.append(1)
    ingress.on_result = results.append
    app = web.Application()
    app.router.add_post("/webhook", ingress.handle)
    client = await aiohttp_client(app)
    body = b'{"action": "opened"}'
    await client.post("/webhook", data=body, headers=headers("issues", body, sign, delivery="w1"))
    await client.post("/webhook", data=body, headers=headers("issues", body, sign, delivery="w1"))
    await client.post("/webhook", data=body, headers={"Content-Type": "application/json"})
    assert woken == [1]
    assert results == ["accepted", "duplicate", "rejected"]


async def test_metrics_count_webhook_outcomes(client, sign):
    body = b'{"action": "opened"}'
    await client.post("/webhook", data=body, headers=headers("issues", body, sign))
    await client.post("/webhook", data=body, headers={"Content-Type": "application/json"})
    text = await (await client.get("/metrics")).text()
    assert 'result="accepted"' in text and 'result="rejected"' in text


async def test_a_store_failure_answers_503_saying_how_to_redeliver(aiohttp_client, store, sign, monkeypatch):
    from bot.store.base import StoreError

    async def broken(delivery):
        raise StoreError("the ledger's WAL could not be synced to disk: [Errno 5] Input/output error")

    settings = load_settings({"PATCHWRIGHT_WEBHOOK_SECRET": SECRET}, env_file=None)
    client = await aiohttp_client(create_app(settings, store=store))
    monkeypatch.setattr(store, "record_delivery", broken)
    body = b'{"action": "opened"}'
    resp = await client.post("/webhook", data=body, headers=headers("issues", body, sign))
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert "could not be recorded" in error and "Input/output error" in error and "redeliver" in error
    assert 'result="unrecorded"} 1.0' in await (await client.get("/metrics")).text()
    assert (await client.get("/healthz")).status == 200
