"""The dispatcher over a real store: isolation, timeouts, outcomes, ignore reasons, order."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import timedelta

from gidgethub import routing

from bot.dispatcher import Dispatcher, HandlerResult, Ignored, summarize
from bot.store.base import Delivery, DeliveryState


def delivery(clock, id: str, event: str = "issues", action: str = "opened", repo: str = "o/r", **data) -> Delivery:
    payload = {"action": action, "repository": {"full_name": repo}, **data}
    return Delivery(
        id=id, event=event, action=action, repo=repo, installation_id=1,
        payload=json.dumps(payload).encode(), received_at=clock(),
    )


def test_summarize_pure():
    assert summarize([], "issues", "milestoned") == (DeliveryState.DONE, "no handler", "no handler for issues.milestoned")
    ok = HandlerResult("issues.a", "done: created")
    ign = HandlerResult("issues.b", "ignored: not permitted", ignored=True)
    bad = HandlerResult("issues.c", "failed: boom", failed=True)
    assert summarize([ok, ign], "issues", "x")[0] is DeliveryState.DONE
    assert summarize([ok, ign], "issues", "x")[2] == ""
    assert summarize([ign], "issues", "x") == (DeliveryState.DONE, "issues.b: ignored: not permitted", "not permitted")
    assert summarize([ok, bad], "issues", "x")[0] is DeliveryState.FAILED


async def test_every_handler_runs_isolated_and_outcomes_are_recorded(store, clock):
    router = routing.Router()
    ran = []

    @router.register("issues", action="opened")
    async def explodes(event, ctx):
        ran.append("explodes")
        raise RuntimeError("boom")

    @router.register("issues", action="opened")
    async def slow(event, ctx):
        ran.append("slow")
        await asyncio.sleep(5)

    @router.register("issues", action="opened")
    async def works(event, ctx):
        ran.append("works")
        return f"saw {event.data['repository']['full_name']} via {ctx}"

    @router.register("issues", action="closed")
    async def declines(event, ctx):
        raise Ignored("sent by the bot itself (loop guard)")

    async def make_context(row):
        return f"ctx-{row.id}"

    await store.record_delivery(delivery(clock, "d1"))
    await store.record_delivery(delivery(clock, "d2", action="closed", repo="o/other"))
    await store.record_delivery(delivery(clock, "d3", action="labeled", repo="o/third"))
    dispatcher = Dispatcher(store, router, make_context, handler_timeout=0.2)
    assert await dispatcher.drain() == 3
    assert ran == ["explodes", "slow", "works"]

    d1 = await store.get_delivery("d1")
    assert d1.state is DeliveryState.FAILED
    assert "explodes: failed: RuntimeError: boom" in d1.outcome
    assert "slow: failed: timed out" in d1.outcome
    assert "works: done: saw o/r via ctx-d1" in d1.outcome
    d2 = await store.get_delivery("d2")
    assert (d2.state, d2.ignore_reason) == (DeliveryState.DONE, "sent by the bot itself (loop guard)")
    d3 = await store.get_delivery("d3")
    assert d3.ignore_reason == "no handler for issues.labeled"


async def test_invalid_json_row_is_finished_not_lost(store, clock):
    await store.record_delivery(dataclasses.replace(delivery(clock, "bad"), payload=b"{nope"))
    dispatcher = Dispatcher(store, routing.Router(), lambda row: asyncio.sleep(0))
    await dispatcher.drain()
    got = await store.get_delivery("bad")
    assert got.state is DeliveryState.DONE and got.ignore_reason == "payload is not valid JSON"


async def test_rows_of_one_repo_are_processed_in_order(store, clock):
    router = routing.Router()
    seen: list[str] = []

    @router.register("issues")
    async def record(event, ctx):
        seen.append(event.delivery_id)
        await asyncio.sleep(0.001)

    for i in range(12):
        await store.record_delivery(delivery(clock, f"r{i:02d}", repo="o/a" if i % 2 else "o/b"))
        clock.advance(timedelta(milliseconds=1))

    async def ctx(row):
        return None

    dispatchers = [Dispatcher(store, router, ctx, dispatcher_id=f"d{i}") for i in range(3)]
    await asyncio.gather(*(d.drain() for d in dispatchers))
    for repo_ids in ([f"r{i:02d}" for i in range(12) if i % 2], [f"r{i:02d}" for i in range(12) if not i % 2]):
        assert [s for s in seen if s in repo_ids] == repo_ids
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 12


async def test_background_loop_wakes_on_new_rows(store, clock):
    router = routing.Router()
    done = asyncio.Event()

    @router.register("issues")
    async def handler(event, ctx):
        done.set()

    async def ctx(row):
        return None

    dispatcher = Dispatcher(store, router, ctx, idle_wait=5.0)
    stop = await dispatcher.start()
    try:
        await store.record_delivery(delivery(clock, "live"))
        dispatcher.wake()
        await asyncio.wait_for(done.wait(), timeout=3)
    finally:
        await stop()
    assert (await store.get_delivery("live")).state is DeliveryState.DONE


async def test_a_handler_failing_for_a_passing_reason_runs_again(store, clock):
    from http import HTTPStatus

    import gidgethub

    router = routing.Router()
    calls = {"flaky": 0, "steady": 0}

    @router.register("issues")
    async def flaky(event, ctx):
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise gidgethub.GitHubBroken(HTTPStatus.BAD_GATEWAY)
        return "made it"

    @router.register("issues")
    async def steady(event, ctx):
        calls["steady"] += 1

    async def ctx(row):
        return None

    await store.record_delivery(delivery(clock, "f1"))
    await Dispatcher(store, router, ctx, retry_delays=(0.0, 0.0, 0.0)).drain()
    row = await store.get_delivery("f1")
    assert row.state is DeliveryState.DONE and "flaky: done: made it" in row.outcome
    assert calls == {"flaky": 3, "steady": 1}

    calls["flaky"] = -10  # fails more often than the retries allow: recorded as failed
    await store.record_delivery(delivery(clock, "f2"))
    await Dispatcher(store, router, ctx, retry_delays=(0.0, 0.0)).drain()
    row = await store.get_delivery("f2")
    assert row.state is DeliveryState.FAILED and "GitHubBroken" in row.outcome


async def test_a_router_declining_the_event_runs_no_handler_and_records_why(store, clock):
    class Declining(routing.Router):
        def fetch(self, event):
            if "issue" not in event.data:
                raise Ignored("malformed payload: issue missing")
            return super().fetch(event)

    router = Declining()
    ran = []

    @router.register("issues", action="opened")
    async def handler(event, ctx):
        ran.append(event.delivery_id)

    contexts = []

    async def ctx(row):
        contexts.append(row.id)

    await store.record_delivery(delivery(clock, "bad"))
    await store.record_delivery(delivery(clock, "good", repo="o/good", issue={"number": 1}))
    await Dispatcher(store, router, ctx).drain()
    bad = await store.get_delivery("bad")
    assert (bad.state, bad.ignore_reason) == (DeliveryState.DONE, "malformed payload: issue missing")
    assert bad.outcome == "ignored: malformed payload: issue missing"
    assert ran == contexts == ["good"]
    assert (await store.get_delivery("good")).state is DeliveryState.DONE
