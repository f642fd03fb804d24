"""The SQLite ledger's WAL checkpoint policy, page size of new files and batch insert."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import UTC, datetime

import pytest

from bot.store.base import Delivery, DeliveryState
from bot.store.sqlite import (
    CHECKPOINT_CATCH_UP,
    CHECKPOINT_NONE,
    CHECKPOINT_TRUNCATE,
    NEW_DATABASE_PAGE_SIZE,
    CheckpointPolicy,
    SQLiteStore,
    checkpoint_action,
    estimate_wal_bytes,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
KIB = 1024
SMALL = CheckpointPolicy(every_bytes=64 * KIB, catch_up_bytes=256 * KIB, hard_limit_bytes=1024 * KIB)


def delivery(n: int, *, size: int = 100, state: DeliveryState = DeliveryState.PENDING) -> Delivery:
    payload = b'{"n": %d, "pad": "%s"}' % (n, b"x" * size)
    return Delivery(f"d-{n:05d}", "issues", "labeled", "acme/widgets", 1, payload, NOW, state=state)


def wal_size(path: str) -> int:
    return os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0


async def wait_for(condition, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- pure decisions ---------------------------------------------------------------------------


def test_checkpoint_action_by_wal_length():
    page = 4 * KIB
    assert checkpoint_action(0, page, SMALL) == CHECKPOINT_NONE
    assert checkpoint_action(63, page, SMALL) == CHECKPOINT_NONE  # 252 KiB
    assert checkpoint_action(64, page, SMALL) == CHECKPOINT_CATCH_UP  # 256 KiB
    assert checkpoint_action(255, page, SMALL) == CHECKPOINT_CATCH_UP
    assert checkpoint_action(256, page, SMALL) == CHECKPOINT_TRUNCATE  # 1 MiB
    assert checkpoint_action(10_000, page, SMALL, truncate_allowed=False) == CHECKPOINT_CATCH_UP
    assert checkpoint_action(16, 16 * KIB, SMALL) == CHECKPOINT_CATCH_UP  # sizes are bytes, not frames


def test_checkpoint_policy_rejects_unordered_sizes():
    with pytest.raises(ValueError):
        CheckpointPolicy(every_bytes=0)
    with pytest.raises(ValueError):
        CheckpointPolicy(every_bytes=2 * KIB, catch_up_bytes=KIB, hard_limit_bytes=4 * KIB)
    with pytest.raises(ValueError):
        CheckpointPolicy(every_bytes=KIB, catch_up_bytes=4 * KIB, hard_limit_bytes=2 * KIB)


def test_estimate_wal_bytes_counts_payloads_and_pages():
    assert estimate_wal_bytes(0, 0, 4096) == 8 * 4096
    assert estimate_wal_bytes(14_000, 2, 4096) == 14_000 + 4096 + 8 * 4096


# -- page size ----------------------------------------------------------------------------------


async def test_new_database_gets_the_large_page_size_and_existing_ones_keep_theirs(tmp_path):
    fresh = str(tmp_path / "fresh.db")
    store = await SQLiteStore.open(fresh)
    try:
        await store.migrate()
        assert await store.record_delivery(delivery(1))
    finally:
        await store.close()
    existing = str(tmp_path / "existing.db")
    with sqlite3.connect(existing) as conn:
        conn.execute("CREATE TABLE keep (x)")
    conn.close()
    store = await SQLiteStore.open(existing)
    try:
        await store.migrate()
        assert await store.record_delivery(delivery(2))
    finally:
        await store.close()
    for path, expected in ((fresh, NEW_DATABASE_PAGE_SIZE), (existing, 4096)):
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA page_size").fetchone()[0] == expected
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 1
        conn.close()


# -- checkpoints --------------------------------------------------------------------------------


async def test_checkpointer_keeps_the_wal_bounded_under_a_stream_of_batches(tmp_path):
    path = str(tmp_path / "ledger.db")
    store = await SQLiteStore.open(path, page_size=4096, checkpoint=SMALL)
    try:
        await store.migrate()
        checkpointer = store._ledger_db.checkpointer
        largest = 0
        for start in range(0, 600, 20):  # 600 deliveries of ~8 KB: ~5 MB through the WAL
            results = await asyncio.gather(*(store.record_delivery(delivery(n, size=8000)) for n in range(start, start + 20)))
            assert all(results)
            largest = max(largest, wal_size(path))
        assert checkpointer.stats["passive"] > 0
        assert largest <= SMALL.hard_limit_bytes + 512 * KIB, largest
        assert len(await store.list_deliveries(limit=1000)) == 600
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 600
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


async def test_a_reader_holding_a_snapshot_gets_a_truncate_once_it_lets_go(tmp_path):
    path = str(tmp_path / "pinned.db")
    policy = CheckpointPolicy(
        every_bytes=32 * KIB,
        catch_up_bytes=64 * KIB,
        hard_limit_bytes=128 * KIB,
        idle_interval_s=0.02,
        truncate_wait_s=0.01,
        truncate_backoff_s=0.0,
    )
    store = await SQLiteStore.open(path, page_size=4096, checkpoint=policy)
    reader = None
    try:
        await store.migrate()
        checkpointer = store._ledger_db.checkpointer
        assert await store.record_delivery(delivery(0))
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 1  # snapshot pinned
        for n in range(1, 60):
            assert await store.record_delivery(delivery(n, size=8000))
        await wait_for(lambda: checkpointer.stats["truncate_busy"] > 0)
        assert wal_size(path) > policy.hard_limit_bytes  # the reader's frames cannot go
        reader.execute("COMMIT")
        reader.close()
        reader = None
        await wait_for(lambda: checkpointer.stats["truncate"] > 0 and wal_size(path) == 0)
        assert len(await store.list_deliveries(limit=100)) == 60
    finally:
        if reader is not None:
            reader.close()
        await store.close()


# -- the batch insert -------------------------------------------------------------------------


async def test_batch_insert_bumps_the_wakeup_counter_per_pending_row_only(tmp_path):
    path = str(tmp_path / "wake.db")
    store = await SQLiteStore.open(path)
    try:
        await store.migrate()

        def counter() -> int:
            with sqlite3.connect(path) as conn:
                value = conn.execute("SELECT counter FROM wakeups WHERE channel = 'deliveries'").fetchone()[0]
            conn.close()
            return value

        before = counter()
        batch = [delivery(1), delivery(2), delivery(3, state=DeliveryState.DONE), delivery(1)]
        assert await asyncio.gather(*(store.record_delivery(d) for d in batch)) == [True, True, True, False]
        assert counter() == before + 2
        assert await store.record_delivery(delivery(2)) is False  # already recorded: nothing bumped
        assert counter() == before + 2
    finally:
        await store.close()


async def test_batch_with_recorded_and_new_ids_answers_each_copy(tmp_path):
    path = str(tmp_path / "dup.db")
    store = await SQLiteStore.open(path)
    other = await SQLiteStore.open(path)
    try:
        await store.migrate()
        assert await other.record_delivery(delivery(5))
        assert await other.record_delivery(delivery(7))
        results = await asyncio.gather(*(store.record_delivery(delivery(n)) for n in (4, 5, 6, 7, 8, 6)))
        assert results == [True, False, True, False, True, False]
        stored = {d.id: d.seq for d in await store.list_deliveries(limit=100)}
        assert sorted(stored) == [f"d-{n:05d}" for n in (4, 5, 6, 7, 8)]
    finally:
        await other.close()
        await store.close()
