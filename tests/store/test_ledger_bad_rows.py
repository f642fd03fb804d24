"""A ledger row the database refuses fails its own sender only (issue #11, defence in depth).

The webhook refuses such values before they reach the store, and ``delivery_params`` refuses
them too; these tests hand the group-commit batcher a row below both, in the same batch as
good ones, on every backend (SQLite ledger thread, SQLite writer process, PostgreSQL): every
good row is recorded and answered, the bad one alone gets a :class:`StoreError`, nobody waits
forever.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from bot.store import rows
from bot.store.base import Delivery, StoreError
from bot.store.sqlite import SQLiteStore
from bot.store.sqlite import encode_time as sqlite_time

RECEIVED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: Answers come in milliseconds; a sender left without one fails the test instead of hanging it.
ANSWER_TIMEOUT_S = 20


def delivery(delivery_id: str, installation_id: int | None = 7) -> Delivery:
    return Delivery(
        id=delivery_id,
        event="issues",
        action="labeled",
        repo="octo/widgets",
        installation_id=installation_id,
        payload=b'{"action": "labeled", "n": "' + delivery_id.encode() + b'"}',
        received_at=RECEIVED,
    )


def raw_params(store, delivery_id: str, **column_values) -> list:
    """A row as the store's batcher gets it, with ``column_values`` forced in (below every check)."""
    encode_time = sqlite_time if isinstance(store, SQLiteStore) else (lambda value: value)
    params = rows.delivery_params(delivery(delivery_id), encode_time)
    for name, value in column_values.items():
        params[rows.DELIVERY_COLUMNS.index(name)] = value
    return params


async def submit_raw(store, params) -> bool:
    return await store._ledger.submit(params)


async def answers(*coros):
    return await asyncio.wait_for(asyncio.gather(*coros, return_exceptions=True), ANSWER_TIMEOUT_S)


@pytest.mark.parametrize(
    "bad_value", [2**63, 2**64, -(2**63) - 1], ids=["2**63", "2**64", "below int64"]
)
async def test_an_out_of_range_row_fails_alone_and_its_batch_is_recorded(store, bad_value):
    good = [f"good-{n:02d}" for n in range(24)]
    coros = [store.record_delivery(delivery(delivery_id)) for delivery_id in good]
    coros.insert(11, submit_raw(store, raw_params(store, "bad", installation_id=bad_value)))

    results = await answers(*coros)

    bad_result = results.pop(11)
    assert isinstance(bad_result, StoreError), bad_result
    assert results == [True] * len(good)
    recorded = await store.list_deliveries(limit=100)
    assert sorted(d.id for d in recorded) == good
    # the ledger goes on as before
    assert await store.record_delivery(delivery("after")) is True
    assert await store.record_delivery(delivery("good-03")) is False


async def test_a_refused_row_in_a_batch_keeps_first_copy_wins_and_known_ids(store):
    assert await store.record_delivery(delivery("known")) is True
    coros = [
        store.record_delivery(delivery("twice")),
        submit_raw(store, raw_params(store, "bad-state", state="exploded")),  # a CHECK constraint
        store.record_delivery(delivery("twice")),
        store.record_delivery(delivery("known")),
        store.record_delivery(delivery("fresh")),
    ]

    results = await answers(*coros)

    assert isinstance(results[1], StoreError)
    assert [results[0], results[2], results[3], results[4]] == [True, False, False, True]
    assert sorted(d.id for d in await store.list_deliveries()) == ["fresh", "known", "twice"]


async def test_every_row_of_a_batch_refused_fails_every_sender(store):
    coros = [submit_raw(store, raw_params(store, f"bad-{n}", installation_id=2**63)) for n in range(5)]
    results = await answers(*coros)
    assert all(isinstance(result, StoreError) for result in results), results
    assert await store.list_deliveries() == []


async def test_record_delivery_refuses_an_installation_id_the_columns_cannot_hold(store):
    for value in (2**63, -(2**63) - 1, 2**64):
        with pytest.raises(StoreError, match="64-bit"):
            await store.record_delivery(delivery("too-big", installation_id=value))
    assert await store.record_delivery(delivery("largest", installation_id=2**63 - 1)) is True
    stored = await store.get_delivery("largest")
    assert stored is not None and stored.installation_id == 2**63 - 1


def test_the_batch_fallback_tells_row_errors_from_database_errors():
    import sqlite3

    import asyncpg

    from bot.store.postgres import is_row_error as postgres_row_error
    from bot.store.sqlite_ledger import is_row_error as sqlite_row_error

    assert sqlite_row_error(OverflowError("Python int too large to convert to SQLite INTEGER"))
    assert sqlite_row_error(sqlite3.IntegrityError("CHECK constraint failed"))
    assert not sqlite_row_error(sqlite3.OperationalError("database is locked"))
    assert not sqlite_row_error(sqlite3.OperationalError("disk I/O error"))
    assert postgres_row_error(asyncpg.exceptions.DataError("value out of range for type bigint"))
    assert postgres_row_error(ValueError("invalid input for query argument $5"))  # asyncpg's client side
    assert postgres_row_error(asyncpg.exceptions.CheckViolationError("check"))
    assert not postgres_row_error(asyncpg.exceptions.ConnectionDoesNotExistError("gone"))
    assert not postgres_row_error(OSError("connection refused"))
