"""Ledger retention on both backends: ``prune_delivery_payloads`` / ``count_prunable_deliveries``,
migration 3, the use case of :mod:`bot.operations.retention` and its periodic job."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta

import asyncpg
import pytest

from bot.operations.retention import (
    PayloadPruner,
    PruneRun,
    prune_payloads,
    replay_refusal,
    retention_cutoff,
)
from bot.store.base import Delivery, DeliveryState, PruneResult, StoreError
from bot.store.factory import parse_sqlite_url
from bot.store.migrations import load_migrations

DAY = timedelta(days=1)
BODY = b'{"action": "labeled", "issue": {"number": 7}}' + b" " * 400  # compressed on SQLite


async def record(store, clock, delivery_id: str, *, state: DeliveryState | None = DeliveryState.DONE,
                 repo: str = "", outcome: str = "done: started task_1", ignore_reason: str = "") -> None:
    """A delivery received now; finished now (the store's clock) in ``state`` unless None."""
    assert await store.record_delivery(
        Delivery(id=delivery_id, event="issues", action="labeled", repo=repo, installation_id=7,
                 payload=BODY, received_at=clock.now)
    )
    if state is not None:
        await store.finish_delivery(delivery_id, state=state, outcome=outcome, ignore_reason=ignore_reason)


async def test_prune_drops_old_processed_payloads_and_keeps_everything_else(store, clock):
    start = clock.now
    await record(store, clock, "old-done", ignore_reason="not permitted: read access")
    await record(store, clock, "old-failed", state=DeliveryState.FAILED, outcome="failed: boom")
    await record(store, clock, "old-pending", state=None, repo="o/pending")
    await record(store, clock, "old-processing", state=None, repo="o/processing")
    assert [d.id for d in await store.claim_deliveries("disp", limit=10)] == ["old-pending", "old-processing"]
    await store.finish_delivery("old-pending", state=DeliveryState.DONE)
    assert await store.requeue_delivery("old-pending")  # replayed: pending again
    await record(store, clock, "old-replayed-lately")
    clock.advance(20 * DAY)
    assert await store.requeue_delivery("old-replayed-lately")
    await store.claim_deliveries("disp", limit=10)
    await store.finish_delivery("old-replayed-lately", state=DeliveryState.DONE)  # processed 20 days in
    await record(store, clock, "recent-done")
    clock.advance(20 * DAY)
    before = {d.id: d for d in await store.list_deliveries(limit=100)}
    cutoff = clock.now - 30 * DAY  # start + 10 days

    assert await store.count_prunable_deliveries(cutoff) == 1
    assert await store.prune_delivery_payloads(cutoff, limit=100) == PruneResult(pruned=1, more=False)

    after = {d.id: d for d in await store.list_deliveries(limit=100)}
    assert after.keys() == before.keys()  # the page still lists every row
    pruned = after["old-done"]
    assert pruned.payload == b"" and pruned.payload_pruned and pruned.payload_pruned_at == clock.now
    kept_fields = ("seq", "event", "action", "repo", "installation_id", "received_at", "state", "outcome",
                   "ignore_reason", "processed_at", "attempts")
    assert [getattr(pruned, f) for f in kept_fields] == [getattr(before["old-done"], f) for f in kept_fields]
    assert pruned.received_at == start and pruned.ignore_reason == "not permitted: read access"
    for delivery_id, row in after.items():
        if delivery_id != "old-done":
            assert row.payload == BODY and not row.payload_pruned and row.payload_pruned_at is None, delivery_id
    assert (await store.get_delivery("old-done")).payload_pruned

    # idempotent: nothing left, nothing done again
    assert await store.prune_delivery_payloads(cutoff, limit=100) == PruneResult(pruned=0, more=False)
    assert await store.count_prunable_deliveries(cutoff) == 0
    assert (await store.get_delivery("old-done")).payload_pruned_at == pruned.payload_pruned_at


async def test_a_pruned_delivery_is_never_requeued(store, clock):
    await record(store, clock, "d-1")
    clock.advance(2 * DAY)
    assert (await store.prune_delivery_payloads(clock.now - DAY, limit=10)).pruned == 1
    assert not await store.requeue_delivery("d-1")
    row = await store.get_delivery("d-1")
    assert row.state is DeliveryState.DONE and row.payload_pruned
    assert await store.claim_deliveries("disp") == []


async def test_batches_bound_the_work_oldest_first(store, clock):
    for n in range(5):
        await record(store, clock, f"d-{n}")
        clock.advance(timedelta(minutes=1))
    clock.advance(2 * DAY)
    cutoff = clock.now - DAY
    assert await store.count_prunable_deliveries(cutoff) == 5
    assert await store.prune_delivery_payloads(cutoff, limit=2) == PruneResult(pruned=2, more=True)
    assert {d.id for d in await store.list_deliveries(limit=10) if d.payload_pruned} == {"d-0", "d-1"}
    assert await store.prune_delivery_payloads(cutoff, limit=2) == PruneResult(pruned=2, more=True)
    assert await store.prune_delivery_payloads(cutoff, limit=2) == PruneResult(pruned=1, more=False)
    assert all(d.payload_pruned for d in await store.list_deliveries(limit=10))
    with pytest.raises(StoreError, match="limit"):
        await store.prune_delivery_payloads(cutoff, limit=0)


async def test_concurrent_prunes_take_each_row_once(store, make_store, clock):
    other = await make_store()
    for n in range(12):
        await record(store, clock, f"d-{n:02}")
    clock.advance(2 * DAY)
    cutoff = clock.now - DAY

    async def drain(s) -> int:
        total = 0
        while True:
            result = await s.prune_delivery_payloads(cutoff, limit=3)
            total += result.pruned
            if not result.more:
                return total
            await asyncio.sleep(0)

    totals = await asyncio.gather(drain(store), drain(other))
    assert sum(totals) == 12
    assert all(d.payload_pruned for d in await store.list_deliveries(limit=100))


async def test_migration_3_upgrades_a_version_2_ledger(make_store, store_target, clock):
    """A ledger migrated to version 2 with rows in it: migration 3 adds the mark (NULL for every
    row) and the rows can then be pruned."""
    versions = load_migrations(store_target.backend)[:2]
    insert = (
        "INSERT INTO deliveries (id, event, action, repo, installation_id, payload, received_at, state,"
        " processed_at) VALUES ('d-old', 'issues', 'opened', 'o/r', 1, {blob}, {at}, 'done', {at})"
    )
    if store_target.backend == "sqlite":
        path, _ = parse_sqlite_url(store_target.url)
        at = "'2020-01-01T00:00:00.000000Z'"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                         " applied_at TEXT NOT NULL) STRICT")
            for m in versions:
                conn.executescript(m.sql)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (m.version, m.name, "x"))
            conn.execute(insert.format(blob="x'7b7d'", at=at))
        conn.close()
    else:
        conn = await asyncpg.connect(store_target.url)
        try:
            schema = store_target.schema
            await conn.execute(f'CREATE SCHEMA "{schema}"')
            await conn.execute(f'SET search_path TO "{schema}"')
            await conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                               " applied_at timestamptz NOT NULL)")
            for m in versions:
                await conn.execute(m.sql)
                await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2, now())", m.version, m.name)
            await conn.execute(insert.format(blob="'\\x7b7d'::bytea", at="'2020-01-01T00:00:00Z'"))
        finally:
            await conn.close()

    store = await make_store()
    later = [m.version for m in load_migrations(store_target.backend)[2:]]
    assert await store.migrate() == later and later[0] == 3
    assert await store.migrate() == []
    row = await store.get_delivery("d-old")
    assert row.payload == b"{}" and row.payload_pruned_at is None and not row.payload_pruned
    assert row.sender == "" and not row.from_bot  # migration 4: rows recorded before name no sender
    assert (await store.prune_delivery_payloads(clock.now, limit=10)).pruned == 1
    assert (await store.get_delivery("d-old")).payload_pruned


def test_migration_3_on_postgres_can_run_twice():
    sql = next(m.sql for m in load_migrations("postgres") if m.version == 3)
    assert sql.count("IF NOT EXISTS") == 2


# -- the use case -----------------------------------------------------------------------------


def test_cutoff_and_refusal_are_pure(clock):
    assert retention_cutoff(clock.now, 0) is None
    assert retention_cutoff(clock.now, 30) == clock.now - 30 * DAY
    with pytest.raises(ValueError):
        retention_cutoff(clock.now, -1)
    kept = Delivery(id="d-9", event="e", action="", repo="", installation_id=None, payload=b"{}",
                    received_at=clock.now)
    assert replay_refusal(kept) is None
    refusal = replay_refusal(Delivery(**{**{f: getattr(kept, f) for f in kept.__slots__},
                                         "payload": b"", "payload_pruned_at": clock.now}))
    assert refusal is not None and "d-9" in refusal and "pruned" in refusal and "\n" not in refusal
    assert PruneRun(days=1, cutoff=clock.now, pruned=1).line() == "pruned the payloads of 1 delivery older than 1 day"
    assert PruneRun(days=0, cutoff=None).line().startswith("payload retention is off")


async def test_prune_payloads_loops_batches_counts_and_stops(store, clock):
    for n in range(7):
        await record(store, clock, f"d-{n}")
    await record(store, clock, "pending", state=None)
    clock.advance(31 * DAY)
    await record(store, clock, "recent")

    dry = await prune_payloads(store, days=30, now=clock.now, dry_run=True)
    assert (dry.pruned, dry.dry_run, dry.batches) == (7, True, 0)
    assert dry.line() == "would prune the payloads of 7 deliveries older than 30 days (dry run)"
    assert not any(d.payload_pruned for d in await store.list_deliveries(limit=100))
    assert (await prune_payloads(store, days=0, now=clock.now)).pruned == 0

    capped = await prune_payloads(store, days=30, now=clock.now, batch=2, max_batches=2)
    assert (capped.pruned, capped.batches, capped.more) == (4, 2, True)
    assert capped.line().endswith("; more remain")
    rest = await prune_payloads(store, days=30, now=clock.now, batch=2)
    assert (rest.pruned, rest.batches, rest.more) == (3, 2, False)
    assert rest.line() == "pruned the payloads of 3 deliveries older than 30 days"
    assert {d.id for d in await store.list_deliveries(limit=100) if not d.payload_pruned} == {"pending", "recent"}
    assert (await prune_payloads(store, days=30, now=clock.now)).pruned == 0


async def test_the_job_prunes_at_start_and_stops(store, clock, caplog):
    for n in range(3):
        await record(store, clock, f"d-{n}")
    clock.advance(31 * DAY)
    pruner = PayloadPruner(store, days=30, clock=clock, interval=3600, batch=2, max_batches=1, pause=0)
    with caplog.at_level("INFO", logger="bot.operations.retention"):
        stop = await pruner.start()
        for _ in range(500):
            if any(d.payload_pruned for d in await store.list_deliveries(limit=10)):
                break
            await asyncio.sleep(0.01)
        await stop()
    assert pruner._task is None
    assert sum(d.payload_pruned for d in await store.list_deliveries(limit=10)) == 2  # one batch per tick
    assert any("pruned the payloads of 2 deliveries older than 30 days; more remain" in r.getMessage()
               for r in caplog.records)
    assert (await pruner.run_once()).pruned == 1
    await stop()  # stopping twice is harmless


async def test_the_job_does_not_run_when_retention_is_off(store, clock):
    await record(store, clock, "d-1")
    clock.advance(1000 * DAY)
    pruner = PayloadPruner(store, days=0, clock=clock)
    stop = await pruner.start()
    assert pruner._task is None
    await stop()
    assert not (await store.get_delivery("d-1")).payload_pruned
    with pytest.raises(ValueError):
        PayloadPruner(store, days=-1, clock=clock)
