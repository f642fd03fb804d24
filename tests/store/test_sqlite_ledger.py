"""The SQLite ledger's WAL checkpoint policy, page size of new files and batch insert."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import UTC, datetime

import pytest

from bot.store.base import Delivery, DeliveryState, StoreError
from bot.store.sqlite import NEW_DATABASE_PAGE_SIZE, SQLiteStore
from bot.store.sqlite_ledger import (
    CHECKPOINT_CATCH_UP,
    CHECKPOINT_NONE,
    CHECKPOINT_TRUNCATE,
    CheckpointPolicy,
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


async def test_new_ledger_rows_wake_waiters_here_and_in_other_stores_without_a_counter_update(tmp_path):
    """The ledger's insert bumps no wake-up counter (no row of its own per delivery): the
    recording store wakes its own waiters at once for pending rows (its watcher is slowed
    down here so it cannot be what wakes them), and other stores notice max(seq) grow."""
    path = str(tmp_path / "wake.db")
    store = await SQLiteStore.open(path, poll_interval=60)
    other = await SQLiteStore.open(path, poll_interval=0.02)
    try:
        await store.migrate()

        def counter() -> int:
            with sqlite3.connect(path) as conn:
                value = conn.execute("SELECT counter FROM wakeups WHERE channel = 'deliveries'").fetchone()[0]
            conn.close()
            return value

        before = counter()
        here = asyncio.ensure_future(store.wait_for_deliveries(5))
        there = asyncio.ensure_future(other.wait_for_deliveries(5))
        await asyncio.sleep(0.05)
        batch = [delivery(1), delivery(2), delivery(3, state=DeliveryState.DONE), delivery(1)]
        assert await asyncio.gather(*(store.record_delivery(d) for d in batch)) == [True, True, True, False]
        assert await here is True and await there is True
        assert counter() == before
        # once it has seen the newest row, nothing wakes the other store again
        assert await other.wait_for_deliveries(0.2) is False
        # rows that need no processing wake no local waiter; others still see new rows
        assert await store.record_delivery(delivery(5, state=DeliveryState.DONE)) is True
        assert await store.wait_for_deliveries(0.2) is False
        assert await other.wait_for_deliveries(5) is True
    finally:
        await other.close()
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


# -- payload compression --------------------------------------------------------------------


def test_payload_codec_compresses_large_payloads_and_leaves_small_ones():
    from bot.store.payload_codec import MAGIC, PayloadCodecError, decode_payload, encode_payload

    large = b'{"issue": {"body": "%s"}}' % (b"lorem ipsum " * 1000)
    packed = encode_payload(large)
    assert packed.startswith(MAGIC) and len(packed) < len(large) // 5
    assert decode_payload(packed) == large
    small = b'{"zen": "Keep it logically awesome."}'
    assert encode_payload(small) == small and decode_payload(small) == small
    # a payload that happens to start like a stored block is always stored compressed: no mix-up
    odd = MAGIC + b"not a block"
    assert encode_payload(odd) != odd and decode_payload(encode_payload(odd)) == odd
    incompressible = os.urandom(4096)
    assert encode_payload(incompressible) == incompressible
    with pytest.raises(PayloadCodecError, match="damaged"):
        decode_payload(packed[:-10])


async def test_ledger_stores_payloads_compressed_and_reads_them_back(tmp_path):
    path = str(tmp_path / "packed.db")
    store = await SQLiteStore.open(path)
    try:
        await store.migrate()
        big = delivery(1, size=20000)
        assert await store.record_delivery(big)
        # a row written before compression existed (payload as it came) still reads back
        with sqlite3.connect(path) as conn:
            conn.execute(
                "INSERT INTO deliveries (id, event, action, repo, payload, received_at)"
                " VALUES ('old-1', 'issues', 'labeled', 'acme/widgets', ?, '2025-06-01T12:00:00.000000Z')",
                (b'{"old": true}',),
            )
        conn.close()
        assert (await store.get_delivery(big.id)).payload == big.payload
        assert (await store.get_delivery("old-1")).payload == b'{"old": true}'
        # a damaged block reads back as stored (the dispatcher then records "not valid JSON")
        with sqlite3.connect(path) as conn:
            conn.execute(
                "INSERT INTO deliveries (id, event, action, repo, payload, received_at)"
                " VALUES ('bad-1', 'issues', 'labeled', 'acme/widgets', ?, '2025-06-01T12:00:00.000000Z')",
                (b"\xfflz4\x10\x00\x00\x00garbage",),
            )
        conn.close()
        assert (await store.get_delivery("bad-1")).payload == b"\xfflz4\x10\x00\x00\x00garbage"
        listed = {d.id: d.payload for d in await store.list_deliveries(limit=10)}
        assert listed[big.id] == big.payload and listed["old-1"] == b'{"old": true}' 
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT payload FROM deliveries WHERE id = ?", (big.id,)).fetchone()[0]
    conn.close()
    assert len(stored) < len(big.payload) // 10


# -- durability off the commit path -----------------------------------------------------------


async def test_ledger_commits_at_normal_and_answers_only_after_the_wal_sync(tmp_path):
    import threading

    from bot.store.sqlite_ledger import WalSyncer

    path = str(tmp_path / "synced.db")
    store = await SQLiteStore.open(path)  # synchronous=FULL by default
    try:
        await store.migrate()
        ledger = store._ledger_db
        assert ledger.syncer is not None
        assert await asyncio.to_thread(ledger._thread.submit(lambda: ledger._conn.execute("PRAGMA synchronous").fetchone()[0]).result) == 1  # NORMAL
        # hold the next sync: the answer must wait for it while the row is already committed
        release, syncing, synced = threading.Event(), threading.Event(), []

        def held_sync(fd: int) -> None:
            syncing.set()
            release.wait(10)
            os.fdatasync(fd)
            synced.append(fd)

        ledger.syncer._wal._sync = held_sync
        answer = asyncio.ensure_future(store.record_delivery(delivery(1)))
        assert await asyncio.to_thread(syncing.wait, 10)
        await asyncio.sleep(0.05)
        assert not answer.done()  # committed, not yet synced: no answer
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 1
        conn.close()
        release.set()
        assert await asyncio.wait_for(answer, 10) is True and synced
        # a failed sync answers every batch it covered with an error, and the next one works
        def failing_sync(fd: int) -> None:
            raise OSError(5, "Input/output error")

        ledger.syncer._wal._sync = failing_sync
        with pytest.raises(StoreError, match="could not be synced"):
            await store.record_delivery(delivery(2))
        ledger.syncer._wal._sync = os.fdatasync
        assert await store.record_delivery(delivery(3)) is True
        assert ledger.syncer.stats["error"] == 1
        assert isinstance(ledger.syncer, WalSyncer)
    finally:
        await store.close()


@pytest.mark.parametrize("synchronous", ["off", "normal"])
async def test_weaker_synchronous_levels_keep_their_own_meaning(tmp_path, synchronous):
    store = await SQLiteStore.open(str(tmp_path / f"{synchronous}.db"), synchronous=synchronous)
    try:
        await store.migrate()
        assert store._ledger_db.syncer is None
        assert await store.record_delivery(delivery(1)) is True
    finally:
        await store.close()


async def test_without_wal_mode_the_ledger_commits_at_the_stores_level(tmp_path):
    """WAL can be refused (no shared memory, some network file systems): then there is no
    WAL file to sync and the ledger's own commits must be FULL."""
    from bot.store import sqlite_ledger

    path = str(tmp_path / "rollback.db")
    store = await SQLiteStore.open(path)
    await store.migrate()
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    conn.close()
    ledger = await sqlite_ledger.LedgerConnection.open(
        path, busy_timeout=5, synchronous="full", checkpoint=sqlite_ledger.CheckpointPolicy()
    )
    try:
        assert ledger.syncer is None
        level = await asyncio.to_thread(
            ledger._thread.submit(lambda: ledger._conn.execute("PRAGMA synchronous").fetchone()[0]).result
        )
        assert level == 2  # FULL
    finally:
        await ledger.close()


async def test_a_row_recorded_elsewhere_wakes_a_waiter_even_when_this_store_recorded_a_later_one(tmp_path):
    """Another store's pending row, then one of this store's own (a later seq, a row with
    nothing to do) before the watcher looks: the waiter must still wake for the first."""
    path = str(tmp_path / "interleaved.db")
    store = await SQLiteStore.open(path, poll_interval=0.2)
    other = await SQLiteStore.open(path)
    try:
        await store.migrate()
        waiting = asyncio.ensure_future(store.wait_for_deliveries(5))
        await asyncio.sleep(0.25)  # the watcher has seen the empty ledger
        assert await other.record_delivery(delivery(1)) is True
        assert await store.record_delivery(delivery(2, state=DeliveryState.DONE)) is True
        assert await waiting is True
    finally:
        await other.close()
        await store.close()
