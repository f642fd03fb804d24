"""The SQLite store (aiosqlite): the single-machine deployment's default.

- Two connections per Store: one writer, one reader. WAL journal, so the reader never waits
  for the writer; every write is one ``BEGIN IMMEDIATE`` transaction, which serialises
  writers across connections and processes (``busy_timeout`` makes them wait, not fail).
  Writes of one Store are also serialised in-process by an asyncio lock, because an
  aiosqlite connection is shared by every coroutine of the Store.
- ``synchronous=FULL`` by default: a commit is on disk when it returns (the ledger promise).
- Times are fixed-width UTC text (``2024-05-01T12:00:00.123456Z``): text order is time order
  and values round-trip to the microsecond.
- Wake-ups: an in-process :class:`~bot.store.rows.Wakeup` per channel, plus a ``wakeups``
  table whose counters are bumped in the notifying transaction; a waiting Store polls them
  (every ``poll_interval`` seconds, only while something waits), so notifications from other
  Store instances and other processes are noticed.
- ``record_delivery`` calls are group-committed (:class:`LedgerBatcher`): every queued
  delivery goes into one transaction, committed before any of them returns. The ledger has a
  connection and a thread of its own; while deliveries keep coming, the thread commits batch
  after batch by itself (each batch: one multi-row ``INSERT`` committed by itself) and posts
  each batch's answers to the event loop, so the loop never stands between two commits. A
  task holds the Store's write lock meanwhile, so in-process writers never meet SQLite's busy
  wait. A batch the database refuses because of one row's values is inserted again row by
  row, so that row alone fails (:func:`insert_deliveries`).
  With ``ledger_writer="process"`` (``patchwright serve``) the same connection, commits
  and checkpointer live in a writer process instead (:mod:`bot.store.ledger_writer`), which
  needs none of this process's GIL; its commits and this process's writes meet at SQLite's
  own lock (``busy_timeout``).
- WAL checkpoints run off the ledger's commit path, on a checkpointer thread and connection
  of their own (:class:`CheckpointPolicy`), which also keeps the WAL bounded. New database
  files get :data:`NEW_DATABASE_PAGE_SIZE` pages.
- ``claim_task`` order: pending tasks by ``created_at`` then ``id``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import aiosqlite

from bot.store import rows
from bot.store.base import (
    Attempt,
    Delivery,
    DeliveryState,
    Installation,
    StoreError,
    TaskEvent,
)
from bot.store.ledger_writer import LedgerWriterProcess
from bot.store.migrations import load_migrations
from bot.store.payload_codec import PayloadCodecError, decode_payload, encode_payload
from bot.tasks.model import TASK_FIELDS, Status, Task, utcnow

log = logging.getLogger(__name__)

PENDING_CHANNEL = "pending"
DELIVERIES_CHANNEL = "deliveries"
SYNCHRONOUS_MODES = ("off", "normal", "full", "extra")
LEDGER_WRITERS = ("thread", "process")
#: Page size of a database the store creates (an existing file keeps its own): a webhook
#: payload of tens of KB then takes a few pages, so fewer WAL frames and writes per delivery.
NEW_DATABASE_PAGE_SIZE = 16384

_TASK_COLUMNS = ", ".join(TASK_FIELDS)
_TASK_PLACEHOLDERS = ", ".join("?" for _ in TASK_FIELDS)
_EVENT_INSERT = (
    f"INSERT INTO task_events ({', '.join(rows.EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in rows.EVENT_COLUMNS)})"
)
_DELIVERY_ROW = "(" + ", ".join("?" for _ in rows.DELIVERY_COLUMNS) + ")"
_DELIVERY_INSERT = f"INSERT INTO deliveries ({', '.join(rows.DELIVERY_COLUMNS)}) VALUES "
_DELIVERY_STATE = rows.DELIVERY_COLUMNS.index("state")
_DELIVERY_PAYLOAD = rows.DELIVERY_COLUMNS.index("payload")


def _delivery_from_row(row: Mapping[str, Any]) -> Delivery:
    """A ledger row as a :class:`Delivery`, its payload decompressed."""
    delivery = rows.delivery_from_row(row, decode_time)
    try:
        payload = decode_payload(delivery.payload)
    except PayloadCodecError as exc:  # the dispatcher then records it as not valid JSON
        log.error("delivery %s: %s", delivery.id, exc)
        return delivery
    return delivery if payload is delivery.payload else dataclasses.replace(delivery, payload=payload)


def encode_time(value: datetime) -> str:
    """Fixed-width UTC text: ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    # an aware UTC time formats as "...+00:00"
    return rows.require_utc(value, "time").isoformat(timespec="microseconds")[:-6] + "Z"


def decode_time(value: str) -> datetime:
    return datetime.fromisoformat(value.removesuffix("Z")).replace(tzinfo=UTC)


def split_script(sql: str) -> list[str]:
    """The statements of an SQL script, split where SQLite says a statement is complete."""
    statements, current = [], ""
    for line in sql.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in current.splitlines()
    ):
        raise StoreError(f"incomplete SQL statement at the end of a migration: {current.strip()[:80]!r}")
    return statements


class _WriteTx:
    """One open write transaction: its connection and the channels to wake after commit."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self.wake: set[str] = set()

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return list(await self.db.execute_fetchall(sql, params))

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self.db.execute(sql, params)

    async def notify(self, channel: str) -> None:
        """Bump the channel's counter in this transaction; wake local waiters after commit."""
        await self.db.execute("UPDATE wakeups SET counter = counter + 1 WHERE channel = ?", (channel,))
        self.wake.add(channel)


class SQLiteStore:
    """The :class:`~bot.store.base.Store` on one SQLite file. Open with :meth:`open`."""

    def __init__(
        self,
        path: str,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        ledger: LedgerConnection | None,
        *,
        clock: Callable[[], datetime],
        poll_interval: float,
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._ledger_db = ledger
        self._clock = clock
        self._poll_interval = poll_interval
        self._write_lock = asyncio.Lock()
        self._wakeups = {PENDING_CHANNEL: rows.Wakeup(), DELIVERIES_CHANNEL: rows.Wakeup()}
        self._seen_counters: dict[str, int] | None = None
        # new ledger rows (this store's and others') are noticed by max(seq)
        self._seen_max_seq = 0
        self._own_bumps = {PENDING_CHANNEL: 0, DELIVERIES_CHANNEL: 0}
        self._watcher: asyncio.Task[None] | None = None
        #: The ledger thread's batcher, or the writer process (``ledger_writer="process"``).
        self._ledger: LedgerBatcher | LedgerWriterProcess | None = (
            LedgerBatcher(ledger, self._write_lock, on_committed=self._deliveries_recorded)
            if ledger is not None
            else None
        )
        self._closing = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        clock: Callable[[], datetime] = utcnow,
        synchronous: str = "full",
        busy_timeout: float = 30.0,
        poll_interval: float = 0.05,
        page_size: int = NEW_DATABASE_PAGE_SIZE,
        checkpoint: CheckpointPolicy | None = None,
        ledger_writer: str = "thread",
    ) -> SQLiteStore:
        """Open (creating the file if needed) without migrating; call :meth:`migrate`.

        ``page_size`` applies to a new (empty) file only; ``checkpoint`` is the ledger's WAL
        checkpoint policy (:class:`CheckpointPolicy` defaults). ``ledger_writer`` says who
        commits webhook deliveries: ``"thread"`` (a thread of this process) or ``"process"``
        (a writer process of its own, :mod:`bot.store.ledger_writer`: what ``patchwright
        serve`` uses, so the web process's event loop never waits for the GIL)."""
        if path in ("", ":memory:") or path.startswith("file::memory:"):
            raise StoreError(
                "an in-memory SQLite database cannot be shared by the store's connections; "
                "use a file, e.g. sqlite:///./patchwright.db"
            )
        if synchronous not in SYNCHRONOUS_MODES:
            raise StoreError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        if ledger_writer not in LEDGER_WRITERS:
            raise StoreError(f"ledger_writer must be one of {LEDGER_WRITERS}, not {ledger_writer!r}")
        writer = reader = ledger = None
        try:
            # fail here, not inside aiosqlite (whose failed connect leaves a thread behind)
            await asyncio.to_thread(_check_openable, path)
            writer = await _connect(path, busy_timeout)
            await _set_new_database_page_size(writer, page_size)
            await writer.execute("PRAGMA journal_mode = WAL")
            await writer.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            policy = checkpoint or CheckpointPolicy()
            # the ledger's checkpointer keeps the WAL short; the writer checkpoints in its
            # commits only as a last resort, when the WAL is past the policy's hard limit
            async with writer.execute("PRAGMA page_size") as cursor:
                (db_page_size,) = await cursor.fetchone()  # type: ignore[misc]
            await writer.execute(f"PRAGMA wal_autocheckpoint = {max(1, policy.hard_limit_bytes // db_page_size)}")
            reader = await _connect(path, busy_timeout)
            await reader.execute("PRAGMA query_only = ON")
            if ledger_writer == "thread":
                ledger = await LedgerConnection.open(
                    path,
                    busy_timeout=busy_timeout,
                    synchronous=synchronous,
                    checkpoint=policy,
                )
        except (sqlite3.Error, OSError) as exc:
            for conn in (reader, writer):
                if conn is not None:
                    await conn.close()
            raise StoreError(f"cannot open SQLite database {path!r}: {exc}") from exc
        store = cls(path, writer, reader, ledger, clock=clock, poll_interval=poll_interval)
        try:
            if ledger is None:
                process = LedgerWriterProcess(
                    path,
                    synchronous=synchronous,
                    busy_timeout=busy_timeout,
                    checkpoint=policy,
                    on_committed=store._deliveries_recorded,
                )
                store._ledger = process
                await process.start()
            await store._load_counters()
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._ledger is not None:
            await self._ledger.close()  # write what is queued before refusing work
        self._closed = True
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        async with self._write_lock:
            if self._ledger_db is not None:
                await self._ledger_db.close()
            await self._reader.close()
            await self._writer.close()

    async def migrate(self) -> list[int]:
        applied: list[int] = []
        async with self._write() as tx:
            await tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL) STRICT"
            )
            done = {row[0] for row in await tx.fetch("SELECT version FROM schema_migrations")}
            for migration in load_migrations("sqlite"):
                if migration.version in done:
                    continue
                for statement in split_script(migration.sql):
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, encode_time(self._clock())),
                )
                applied.append(migration.version)
        await self._load_counters()
        return applied

    # -- plumbing --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[_WriteTx]:
        """One ``BEGIN IMMEDIATE`` transaction on the writer connection."""
        if self._closed:
            raise StoreError("the store is closed")
        async with self._write_lock:
            tx = _WriteTx(self._writer)
            try:
                try:
                    # BEGIN inside the try that rolls back: cancelled while it is awaited, the
                    # statement still runs on the connection's thread, and the transaction it
                    # opened must not outlive this write (every later BEGIN would fail).
                    await self._writer.execute("BEGIN IMMEDIATE")
                    yield tx
                    await self._writer.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        await asyncio.shield(self._writer.execute("ROLLBACK"))
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite: {exc}") from exc
        for channel in tx.wake:
            self._own_bumps[channel] += 1
            self._wakeups[channel].fire()

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        if self._closed:
            raise StoreError("the store is closed")
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    async def _insert_event(self, tx: _WriteTx, event: TaskEvent, at: datetime) -> None:
        await tx.execute(_EVENT_INSERT, rows.event_params(event, at, encode_time))

    def _task(self, row: Mapping[str, Any]) -> Task:
        return rows.task_from_row(row, decode_time)

    # -- tasks -----------------------------------------------------------------------

    async def create_task(self, task: Task, *, event: TaskEvent | None = None) -> tuple[Task, bool]:
        params = rows.task_params(task, encode_time, version=1)
        async with self._write() as tx:
            inserted = await tx.fetch(
                f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES ({_TASK_PLACEHOLDERS}) "
                "ON CONFLICT DO NOTHING RETURNING *",
                params,
            )
            if not inserted:
                existing = await tx.fetch(
                    "SELECT * FROM tasks WHERE repo = ? AND issue_number = ?",
                    (task.repo, task.issue_number),
                )
                if not existing:
                    raise StoreError(f"task id {task.id} already exists for another issue")
                return self._task(existing[0]), False
            stored = self._task(inserted[0])
            if event is not None:
                created = rows.transition_event(
                    event, task_id=stored.id, from_status=None, to_status=stored.status, changes={}
                )
                await self._insert_event(tx, created, self._clock())
            if stored.status is Status.PENDING:
                await tx.notify(PENDING_CHANNEL)
        return stored, True

    async def get_task(self, task_id: str) -> Task | None:
        found = await self._read("SELECT * FROM tasks WHERE id = ?", (task_id,))
        return self._task(found[0]) if found else None

    async def get_task_by_issue(self, repo: str, issue_number: int) -> Task | None:
        found = await self._read(
            "SELECT * FROM tasks WHERE repo = ? AND issue_number = ?", (repo, issue_number)
        )
        return self._task(found[0]) if found else None

    async def get_task_by_pr(self, repo: str, pr_number: int) -> Task | None:
        found = await self._read(
            "SELECT * FROM tasks WHERE repo = ? AND pr_number = ? ORDER BY created_at DESC, id DESC LIMIT 1",
            (repo, pr_number),
        )
        return self._task(found[0]) if found else None

    async def get_task_by_branch(self, repo: str, branch: str) -> Task | None:
        if not branch:
            return None
        found = await self._read(
            "SELECT * FROM tasks WHERE repo = ? AND branch = ? ORDER BY created_at DESC, id DESC LIMIT 1",
            (repo, branch),
        )
        return self._task(found[0]) if found else None

    async def list_tasks(
        self,
        *,
        statuses: Sequence[Status] | None = None,
        repo: str | None = None,
        limit: int = 1000,
    ) -> list[Task]:
        where, params = [], []
        if statuses is not None:
            where.append("status IN (SELECT value FROM json_each(?))")
            params.append(json.dumps([Status(s).value for s in statuses]))
        if repo is not None:
            where.append("repo = ?")
            params.append(repo)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        found = await self._read(
            f"SELECT * FROM tasks {clause}ORDER BY created_at DESC, id DESC LIMIT ?", (*params, limit)
        )
        return [self._task(row) for row in found]

    async def transition(
        self,
        task_id: str,
        *,
        from_statuses: Sequence[Status],
        changes: Mapping[str, Any],
        event: TaskEvent | None = None,
        expect_version: int | None = None,
    ) -> Task | None:
        allowed = [Status(s).value for s in from_statuses]
        values = rows.change_params(changes, encode_time)
        if not allowed:
            return None
        now = self._clock()
        assignments = "".join(f"{name} = ?, " for name in values)
        sql = (
            f"UPDATE tasks SET {assignments}version = version + 1, updated_at = ? "
            "WHERE id = ? AND status IN (SELECT value FROM json_each(?))"
        )
        params: list[Any] = [*values.values(), encode_time(now), task_id, json.dumps(allowed)]
        if expect_version is not None:
            sql += " AND version = ?"
            params.append(expect_version)
        async with self._write() as tx:
            previous: Status | None = Status(allowed[0]) if len(set(allowed)) == 1 else None
            if event is not None and event.from_status is None and previous is None:
                found = await tx.fetch("SELECT status FROM tasks WHERE id = ?", (task_id,))
                previous = Status(found[0][0]) if found else None
            updated = await tx.fetch(sql + " RETURNING *", params)
            if not updated:
                return None
            task = self._task(updated[0])
            if event is not None:
                appended = rows.transition_event(
                    event, task_id=task_id, from_status=previous, to_status=task.status, changes=changes
                )
                await self._insert_event(tx, appended, now)
            if task.status is Status.PENDING or Status.RUNNING.value in allowed:
                await tx.notify(PENDING_CHANNEL)
        return task

    async def claim_task(
        self,
        worker_id: str,
        *,
        max_running: int | None = None,
        max_running_per_repo: int | None = None,
        repo_limits: Mapping[str, int] | None = None,
    ) -> Task | None:
        now = self._clock()
        stamp = encode_time(now)
        async with self._write() as tx:
            repo_filter = rows.RepoFilter()
            if rows.limits_apply(max_running, max_running_per_repo, repo_limits):
                running = await tx.fetch(
                    "SELECT repo, count(*) FROM tasks WHERE status = 'running' GROUP BY repo"
                )
                decided = rows.claim_filter(
                    {row[0]: row[1] for row in running},
                    max_running=max_running,
                    max_running_per_repo=max_running_per_repo,
                    repo_limits=repo_limits,
                )
                if decided is None:
                    return None
                repo_filter = decided
            only_clause = ""
            params: list[Any] = [
                worker_id,
                stamp,
                stamp,
                stamp,
                stamp,
                json.dumps(sorted(repo_filter.exclude)),
            ]
            if repo_filter.only is not None:
                only_clause = " AND repo IN (SELECT value FROM json_each(?))"
                params.append(json.dumps(sorted(repo_filter.only)))
            claimed = await tx.fetch(
                "UPDATE tasks SET status = 'running', worker_id = ?, heartbeat_at = ?, started_at = ?,"
                " updated_at = ?, version = version + 1"
                " WHERE id = (SELECT id FROM tasks WHERE status = 'pending'"
                "  AND (not_before IS NULL OR not_before <= ?)"
                "  AND repo NOT IN (SELECT value FROM json_each(?))" + only_clause + ""
                "  ORDER BY created_at, id LIMIT 1)"
                " RETURNING *",
                params,
            )
            if not claimed:
                return None
            task = self._task(claimed[0])
            await self._insert_event(tx, rows.claimed_event(task, worker_id), now)
        return task

    async def heartbeat(self, task_id: str, worker_id: str) -> bool:
        async with self._write() as tx:
            found = await tx.fetch(
                "UPDATE tasks SET heartbeat_at = ? WHERE id = ? AND status = 'running' AND worker_id = ?"
                " RETURNING id",
                (encode_time(self._clock()), task_id, worker_id),
            )
        return bool(found)

    async def list_stale_running(self, older_than: timedelta) -> list[Task]:
        cutoff = encode_time(self._clock() - older_than)
        found = await self._read(
            "SELECT * FROM tasks WHERE status = 'running' AND (heartbeat_at IS NULL OR heartbeat_at < ?)"
            " ORDER BY heartbeat_at, id",
            (cutoff,),
        )
        return [self._task(row) for row in found]

    async def wait_for_pending(self, timeout: float) -> bool:
        return await self._wait(PENDING_CHANNEL, timeout)

    async def notify_pending(self) -> None:
        async with self._write() as tx:
            await tx.notify(PENDING_CHANNEL)

    # -- attempts, logs, events -------------------------------------------------------

    async def start_attempt(self, attempt: Attempt) -> None:
        params = rows.attempt_params(attempt, encode_time)
        try:
            async with self._write() as tx:
                await tx.execute(
                    f"INSERT INTO attempts ({', '.join(rows.ATTEMPT_COLUMNS)}) "
                    f"VALUES ({', '.join('?' for _ in rows.ATTEMPT_COLUMNS)})",
                    params,
                )
        except StoreError as exc:
            raise StoreError(
                f"cannot start attempt {attempt.number} of task {attempt.task_id}: {exc}"
            ) from exc

    async def finish_attempt(
        self,
        task_id: str,
        number: int,
        *,
        outcome: str,
        cost_usd: float = 0.0,
        summary: str = "",
        head_after: str = "",
        error: str = "",
        cost_known: bool = True,
        refused: str = "",
    ) -> None:
        params = (
            encode_time(self._clock()),
            rows.clean_text(outcome),
            float(cost_usd),
            rows.clean_text(summary),
            rows.clean_text(head_after),
            rows.clean_text(error),
            1 if cost_known else 0,
            rows.clean_text(refused),
            task_id,
            number,
        )
        async with self._write() as tx:
            found = await tx.fetch(
                "UPDATE attempts SET finished_at = ?, outcome = ?, cost_usd = ?, summary = ?,"
                " head_after = ?, error = ?, cost_known = ?, refused = ?"
                " WHERE task_id = ? AND number = ? RETURNING number",
                params,
            )
            if not found:
                raise StoreError(f"task {task_id} has no attempt {number}")

    async def list_attempts(self, task_id: str) -> list[Attempt]:
        found = await self._read("SELECT * FROM attempts WHERE task_id = ? ORDER BY number", (task_id,))
        return [rows.attempt_from_row(row, decode_time) for row in found]

    async def append_logs(self, task_id: str, attempt: int, lines: Sequence[str]) -> None:
        if not lines:
            return
        batch = rows.to_json([rows.clean_text(line) for line in lines])
        async with self._write() as tx:
            await tx.execute(
                "INSERT INTO attempt_logs (task_id, attempt, lines, created_at) VALUES (?, ?, ?, ?)",
                (task_id, attempt, batch, encode_time(self._clock())),
            )

    async def read_logs(self, task_id: str, attempt: int | None = None) -> list[tuple[int, str]]:
        if attempt is None:
            found = await self._read(
                "SELECT attempt, lines FROM attempt_logs WHERE task_id = ? ORDER BY attempt, seq", (task_id,)
            )
        else:
            found = await self._read(
                "SELECT attempt, lines FROM attempt_logs WHERE task_id = ? AND attempt = ? ORDER BY seq",
                (task_id, attempt),
            )
        return rows.flatten_log_batches((row[0], json.loads(row[1])) for row in found)

    async def add_event(self, event: TaskEvent) -> None:
        async with self._write() as tx:
            await self._insert_event(tx, event, self._clock())

    async def has_fact(self, key: str) -> bool:
        return bool(await self._read("SELECT 1 FROM facts WHERE key = ?", (rows.clean_text(key),)))

    async def record_fact(self, key: str, value: str = "") -> bool:
        async with self._write() as tx:
            found = await tx.fetch(
                "INSERT INTO facts (key, value, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO NOTHING RETURNING key",
                (rows.clean_text(key), rows.clean_text(value), encode_time(self._clock())),
            )
            return bool(found)

    async def list_events(self, task_id: str) -> list[TaskEvent]:
        found = await self._read("SELECT * FROM task_events WHERE task_id = ? ORDER BY seq", (task_id,))
        return [rows.event_from_row(row, decode_time) for row in found]

    async def repo_cost_since(self, repo: str, since: datetime) -> float:
        """Sum of attempt costs of ``repo``'s tasks for attempts that finished (or, still
        running, started) at or after ``since``."""
        found = await self._read(
            "SELECT COALESCE(SUM(a.cost_usd), 0.0) FROM attempts a JOIN tasks t ON t.id = a.task_id"
            " WHERE t.repo = ? AND COALESCE(a.finished_at, a.started_at) >= ?",
            (repo, encode_time(since)),
        )
        return float(found[0][0])

    # -- deliveries ledger -----------------------------------------------------------

    async def record_delivery(self, delivery: Delivery) -> bool:
        if self._ledger is None:
            raise StoreError("the store is closed")
        return await self._ledger.submit(rows.delivery_params(delivery, encode_time))

    def ledger_stats(self) -> dict[str, int]:
        """Committed ledger batches, the calls they answered and the WAL syncs made for them."""
        return self._ledger.ledger_stats() if self._ledger is not None else {}

    @property
    def ledger_writer_pid(self) -> int | None:
        """The ledger's writer process, when it has one running."""
        return self._ledger.pid if isinstance(self._ledger, LedgerWriterProcess) else None

    def _deliveries_recorded(self, bumps: int) -> None:
        """A ledger batch was committed: wake local waiters now if it recorded pending rows
        (the watcher would only notice at its next poll)."""
        if bumps:
            self._wakeups[DELIVERIES_CHANNEL].fire()

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        found = await self._read("SELECT * FROM deliveries WHERE id = ?", (delivery_id,))
        return _delivery_from_row(found[0]) if found else None

    async def list_deliveries(
        self, *, limit: int = 100, state: DeliveryState | None = None, repo: str | None = None
    ) -> list[Delivery]:
        where, params = [], []
        if state is not None:
            where.append("state = ?")
            params.append(DeliveryState(state).value)
        if repo is not None:
            where.append("repo = ?")
            params.append(repo)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        found = await self._read(
            f"SELECT * FROM deliveries {clause}ORDER BY seq DESC LIMIT ?", (*params, limit)
        )
        return [_delivery_from_row(row) for row in found]

    async def claim_deliveries(self, dispatcher_id: str, *, limit: int = 10) -> list[Delivery]:
        now = encode_time(self._clock())
        async with self._write() as tx:
            claimed = await tx.fetch(
                "UPDATE deliveries SET state = 'processing', claimed_by = ?, claimed_at = ?,"
                " attempts = attempts + 1"
                " WHERE seq IN (SELECT d.seq FROM deliveries d WHERE d.state = 'pending' AND (d.repo = ''"
                "  OR (NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.repo = d.repo AND p.state = 'processing')"
                "      AND d.seq = (SELECT min(q.seq) FROM deliveries q"
                "                   WHERE q.repo = d.repo AND q.state = 'pending')))"
                "  ORDER BY d.seq LIMIT ?)"
                " RETURNING *",
                (dispatcher_id, now, limit),
            )
        return sorted((_delivery_from_row(row) for row in claimed), key=lambda d: d.seq)

    async def finish_delivery(
        self, delivery_id: str, *, state: DeliveryState, outcome: str = "", ignore_reason: str = ""
    ) -> None:
        final = rows.finished_delivery_state(state)
        async with self._write() as tx:
            found = await tx.fetch(
                "UPDATE deliveries SET state = ?, outcome = ?, ignore_reason = ?, processed_at = ?"
                " WHERE id = ? RETURNING repo",
                (
                    final.value,
                    rows.clean_text(outcome),
                    rows.clean_text(ignore_reason),
                    encode_time(self._clock()),
                    delivery_id,
                ),
            )
            if not found:
                raise StoreError(f"unknown delivery {delivery_id!r}")
            if found[0][0]:
                await tx.notify(DELIVERIES_CHANNEL)  # the repository's next row may go now

    async def release_stale_deliveries(self, older_than: timedelta) -> int:
        cutoff = encode_time(self._clock() - older_than)
        async with self._write() as tx:
            released = await tx.fetch(
                "UPDATE deliveries SET state = 'pending', claimed_by = '', claimed_at = NULL"
                " WHERE state = 'processing' AND claimed_at < ? RETURNING seq",
                (cutoff,),
            )
            if released:
                await tx.notify(DELIVERIES_CHANNEL)
        return len(released)

    async def requeue_delivery(self, delivery_id: str) -> bool:
        async with self._write() as tx:
            found = await tx.fetch(
                "UPDATE deliveries SET state = 'pending', outcome = '', ignore_reason = '', claimed_by = '',"
                " claimed_at = NULL, processed_at = NULL WHERE id = ? AND state IN ('done', 'failed')"
                " RETURNING seq",
                (delivery_id,),
            )
            if found:
                await tx.notify(DELIVERIES_CHANNEL)
        return bool(found)

    async def wait_for_deliveries(self, timeout: float) -> bool:
        return await self._wait(DELIVERIES_CHANNEL, timeout)

    async def notify_deliveries(self) -> None:
        async with self._write() as tx:
            await tx.notify(DELIVERIES_CHANNEL)

    # -- installations -----------------------------------------------------------------

    async def upsert_installation(self, installation: Installation) -> None:
        """Insert or update; the stored repository list becomes ``installation.repos``."""
        repos = rows.installation_repos(installation.repos)
        async with self._write() as tx:
            await tx.execute(
                "INSERT INTO installations (id, account, suspended, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET account = excluded.account,"
                " suspended = excluded.suspended, updated_at = excluded.updated_at",
                (
                    installation.id,
                    rows.clean_text(installation.account),
                    int(bool(installation.suspended)),
                    encode_time(self._clock()),
                ),
            )
            await tx.execute("DELETE FROM installation_repos WHERE installation_id = ?", (installation.id,))
            for repo in repos:
                await tx.execute(
                    "INSERT INTO installation_repos (installation_id, repo) VALUES (?, ?)",
                    (installation.id, repo),
                )

    async def remove_installation(self, installation_id: int) -> None:
        async with self._write() as tx:
            await tx.execute("DELETE FROM installation_repos WHERE installation_id = ?", (installation_id,))
            await tx.execute("DELETE FROM installations WHERE id = ?", (installation_id,))

    async def set_installation_repos(
        self, installation_id: int, *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> None:
        """Add then remove repositories (a name in both ends up removed). An unknown
        installation is recorded with an empty account."""
        added, removed = rows.installation_repos(add), rows.installation_repos(remove)
        async with self._write() as tx:
            await tx.execute(
                "INSERT INTO installations (id, account, suspended, updated_at) VALUES (?, '', 0, ?)"
                " ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at",
                (installation_id, encode_time(self._clock())),
            )
            for repo in added:
                await tx.execute(
                    "INSERT INTO installation_repos (installation_id, repo) VALUES (?, ?)"
                    " ON CONFLICT DO NOTHING",
                    (installation_id, repo),
                )
            for repo in removed:
                await tx.execute(
                    "DELETE FROM installation_repos WHERE installation_id = ? AND repo = ?",
                    (installation_id, repo),
                )

    async def get_installation(self, installation_id: int) -> Installation | None:
        found = await self._read("SELECT * FROM installations WHERE id = ?", (installation_id,))
        if not found:
            return None
        repos = await self._read(
            "SELECT repo FROM installation_repos WHERE installation_id = ?", (installation_id,)
        )
        return rows.installation_from_row(found[0], [row[0] for row in repos], decode_time)

    async def list_installations(self) -> list[Installation]:
        found = await self._read("SELECT * FROM installations ORDER BY id")
        repos: dict[int, list[str]] = {}
        for row in await self._read("SELECT installation_id, repo FROM installation_repos"):
            repos.setdefault(row[0], []).append(row[1])
        return [rows.installation_from_row(row, repos.get(row["id"], []), decode_time) for row in found]

    # -- wake-ups --------------------------------------------------------------------

    async def _wait(self, channel: str, timeout: float) -> bool:
        if self._closed:
            raise StoreError("the store is closed")
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name=f"sqlite-wakeups:{self.path}")
        return await self._wakeups[channel].wait(timeout)

    async def _load_counters(self) -> None:
        try:
            found = await self._reader.execute_fetchall(_WAKEUP_READ)
        except sqlite3.OperationalError:  # not migrated yet
            return
        self._seen_counters = {row[0]: row[1] for row in found}
        self._seen_max_seq = self._seen_counters.pop(_MAX_SEQ_KEY, 0)

    async def _watch(self) -> None:
        """Poll the wake-up counters while something waits; fire on others' bumps."""
        while True:
            await asyncio.sleep(self._poll_interval)
            if not any(w.waiters for w in self._wakeups.values()):
                continue
            try:
                found = await self._reader.execute_fetchall(_WAKEUP_READ)
            except sqlite3.Error:
                continue  # not migrated yet, or busy: try again next tick
            counters = {row[0]: row[1] for row in found}
            max_seq = counters.pop(_MAX_SEQ_KEY, 0)
            # New rows, others' or this store's: the watcher cannot tell which of them are
            # whose (a row of another store may sit below one of ours), and a waiter woken
            # for rows it already saw only claims once more.
            if max_seq > self._seen_max_seq:
                self._wakeups[DELIVERIES_CHANNEL].fire()
            self._seen_max_seq = max(self._seen_max_seq, max_seq)
            seen, self._seen_counters = self._seen_counters, counters
            if seen is None:
                continue
            for channel, counter in counters.items():
                if channel not in self._wakeups:
                    continue
                delta = counter - seen.get(channel, counter)
                own = self._own_bumps[channel]
                self._own_bumps[channel] = max(0, own - delta)
                if delta > own:
                    self._wakeups[channel].fire()


LedgerItem = tuple[Sequence[Any], "asyncio.Future[bool]"]

_MAX_SEQ_KEY = "(deliveries max seq)"  # not a channel name
#: The watcher's poll: every wake-up counter, and the ledger's highest ``seq`` (new rows).
_WAKEUP_READ = (
    "SELECT channel, counter FROM wakeups"
    f" UNION ALL SELECT '{_MAX_SEQ_KEY}', coalesce(max(seq), 0) FROM deliveries"
)


class LedgerBatcher(rows.GroupCommit[Sequence[Any], bool]):
    """Group commit of ``record_delivery`` calls on the ledger thread.

    Callers queue their row and await a future. While anything is queued, one task holds the
    Store's write lock and hands the ledger thread a *session*: the thread commits batch after
    batch (each one everything queued when the previous commit ended, at most ``max_batch``)
    until the queue is empty or ``max_session_s`` has passed, and hands each batch's results
    to the event loop as soon as it is committed. So the next commit starts without waiting
    for the event loop, and the loop pays one wake-up per batch.
    """

    def __init__(
        self,
        ledger: LedgerConnection,
        write_lock: asyncio.Lock,
        *,
        on_committed: Callable[[int], None],
        max_batch: int = 256,
        max_session_s: float = 0.05,
    ) -> None:
        super().__init__(max_batch=max_batch, name="sqlite-ledger")
        self._ledger = ledger
        self._write_lock = write_lock
        self._on_committed = on_committed
        #: Committed batches and the record_delivery calls they answered (for benchmarks).
        self.stats: collections.Counter[str] = collections.Counter()
        self._max_session_s = max_session_s

    def ledger_stats(self) -> dict[str, int]:
        syncer = self._ledger.syncer
        return {
            "batches": self.stats["batches"],
            "rows": self.stats["rows"],
            "wal_syncs": syncer.stats["sync"] if syncer is not None else 0,
        }

    async def _drain(self) -> None:
        async with self._write_lock:
            await self._ledger.drain(
                self._queue, self._resolve, max_batch=self._max_batch, max_seconds=self._max_session_s
            )

    def _resolve(self, batch: Sequence[LedgerItem], outcome: LedgerInsert | BaseException) -> None:
        """On the event loop: one committed (or failed) batch's answers."""
        if isinstance(outcome, BaseException):
            rows.resolve_batch(batch, outcome, self._name)
            return
        self.stats["batches"] += 1
        self.stats["rows"] += len(batch)
        self._on_committed(outcome.bumps)
        rows.resolve_batch(batch, outcome.results(), self._name)


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """How the WAL is checkpointed off the ledger's commit path (sizes in bytes of WAL).

    The ledger connection never checkpoints inside its commits. A checkpointer thread of its
    own runs a PASSIVE checkpoint (which does not block writers) after about ``every_bytes``
    were written, or every ``idle_interval_s`` otherwise. SQLite restarts the WAL from its
    beginning at the first write after a checkpoint that caught up with every frame; under a
    steady stream of commits that rarely happens by itself, so when the WAL is longer than
    ``catch_up_bytes`` the checkpointer finishes the job between two ledger batches (the ledger
    waits for that short tail only). Past ``hard_limit_bytes`` (readers kept old snapshots)
    it runs a TRUNCATE checkpoint there, waiting at most ``truncate_wait_s`` for them, and
    after one that could not finish, no other for ``truncate_backoff_s``.
    """

    every_bytes: int = 1024 * 1024
    catch_up_bytes: int = 16 * 1024 * 1024
    hard_limit_bytes: int = 64 * 1024 * 1024
    idle_interval_s: float = 1.0
    truncate_wait_s: float = 0.25
    truncate_backoff_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.every_bytes <= self.catch_up_bytes <= self.hard_limit_bytes:
            raise ValueError("checkpoint sizes must satisfy 0 < every <= catch_up <= hard_limit")


CHECKPOINT_NONE = "none"
CHECKPOINT_CATCH_UP = "catch_up"
CHECKPOINT_TRUNCATE = "truncate"


def checkpoint_action(
    wal_frames: int, page_size: int, policy: CheckpointPolicy, *, truncate_allowed: bool = True
) -> str:
    """After a passive checkpoint left the WAL ``wal_frames`` frames long: what to do next,
    between two ledger batches (:data:`CHECKPOINT_NONE`, ``_CATCH_UP`` or ``_TRUNCATE``;
    a catch-up instead of a truncate while ``truncate_allowed`` is false)."""
    wal_bytes = wal_frames * page_size
    if wal_bytes >= policy.hard_limit_bytes and truncate_allowed:
        return CHECKPOINT_TRUNCATE
    if wal_bytes >= policy.catch_up_bytes:
        return CHECKPOINT_CATCH_UP
    return CHECKPOINT_NONE


def estimate_wal_bytes(payload_bytes: int, rows_count: int, page_size: int) -> int:
    """WAL bytes a ledger batch appends, roughly: its payloads plus, per row, part of a leaf
    page, and a few index, sequence and counter pages for the batch."""
    return payload_bytes + rows_count * page_size // 2 + 8 * page_size


class WalCheckpointer:
    """The checkpointer thread of :class:`CheckpointPolicy`, on a connection of its own.

    ``gate`` is held by the ledger thread around each batch; the checkpointer takes it only to
    finish a checkpoint between two batches. ``wrote`` is called by the ledger thread after
    each commit. Outcomes are counted in ``stats`` (for tests and benchmarks).
    """

    def __init__(self, conn: sqlite3.Connection, page_size: int, policy: CheckpointPolicy) -> None:
        self._conn = conn
        self.page_size = page_size
        self.policy = policy
        self.gate = threading.Lock()
        self.stats: collections.Counter[str] = collections.Counter()
        self._written = 0
        self._wanted = threading.Event()
        self._stopping = False
        self._no_truncate_until = 0.0
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wrote(self, nbytes: int) -> None:
        """In the ledger thread, after a commit: about ``nbytes`` were appended to the WAL."""
        self._written += nbytes
        if self._written >= self.policy.every_bytes:
            self._written = 0
            self._wanted.set()

    def stop(self) -> None:
        """Stop the thread (blocking: call it off the event loop) and close the connection."""
        self._stopping = True
        self._wanted.set()
        if self._thread.is_alive():
            self._thread.join()
        self._conn.close()

    def checkpoint(self, mode: str) -> tuple[int, int]:
        """One ``wal_checkpoint(mode)``: (WAL frames, frames checkpointed); (-1, -1) when the
        database is not in WAL mode."""
        busy, wal_frames, done = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        self.stats[f"{mode.lower()}{'_busy' if busy else ''}"] += 1
        return wal_frames, done

    def step(self) -> None:
        """One round: a passive checkpoint alongside the ledger, then, if the policy says so,
        the rest between two of its batches."""
        wal_frames, _ = self.checkpoint("PASSIVE")
        truncate_allowed = time.monotonic() >= self._no_truncate_until
        action = checkpoint_action(wal_frames, self.page_size, self.policy, truncate_allowed=truncate_allowed)
        if action == CHECKPOINT_NONE:
            return
        with self.gate:
            if action == CHECKPOINT_CATCH_UP:
                self.checkpoint("PASSIVE")
                return
            wal_frames, _ = self.checkpoint("TRUNCATE")
        if wal_frames != 0:  # readers or a writer held on: leave them alone for a while
            self._no_truncate_until = time.monotonic() + self.policy.truncate_backoff_s

    def _run(self) -> None:
        while True:
            self._wanted.wait(self.policy.idle_interval_s)
            self._wanted.clear()
            if self._stopping:
                return
            try:
                self.step()
            except sqlite3.Error as exc:
                self.stats["error"] += 1
                log.warning("sqlite-checkpoint: %s", exc)


LedgerResolve = Callable[[Sequence["LedgerItem"], "LedgerInsert | BaseException"], None]


class WalSyncer:
    """Makes the ledger's commits durable off its commit path.

    At ``synchronous=FULL`` every commit waits for its own fsync of the WAL, and the next
    batch waits behind that. Instead the ledger connection commits at ``NORMAL`` (its frames
    reach the WAL file without an fsync) and hands each committed batch to this thread, which
    runs one ``fdatasync`` of the WAL file for everything handed over since its previous one
    and only then posts those batches' answers to the event loop. So a 202 still follows a
    sync of the delivery's frames, the next batch commits while the previous one syncs, and
    one sync covers every batch committed meanwhile. What keeps the file intact is unchanged:
    at ``NORMAL`` SQLite syncs the WAL before and the database after each checkpoint.

    If a sync fails, every batch it covered gets a :class:`StoreError` (their senders get an
    error answer and may redeliver; the rows stay in the table and are processed once).
    """

    def __init__(self, wal_path: str, *, sync: Callable[[int], None] | None = None) -> None:
        self._wal = WalFile(wal_path, sync=sync)
        self._pending: collections.deque[tuple[asyncio.AbstractEventLoop, LedgerResolve, Any, Any]] = (
            collections.deque()
        )
        self._cond = threading.Condition()
        self._stopping = False
        self.stats: collections.Counter[str] = collections.Counter()
        self._thread = threading.Thread(target=self._run, name="sqlite-ledger-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def hand_over(
        self,
        loop: asyncio.AbstractEventLoop,
        resolve: LedgerResolve,
        batch: Sequence[LedgerItem],
        outcome: LedgerInsert | BaseException,
    ) -> None:
        """In the ledger thread, after a commit: answer ``batch`` once its frames are synced."""
        with self._cond:
            self._pending.append((loop, resolve, batch, outcome))
            self._cond.notify()

    def stop(self) -> None:
        """Answer what was handed over, then stop (blocking: call it off the event loop)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()
        self._wal.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return
                handed = list(self._pending)
                self._pending.clear()
            error = self._wal.sync()
            if error is None:
                self.stats["sync"] += 1
            else:
                self.stats["error"] += 1
            for loop, resolve, batch, outcome in handed:
                if error is not None and not isinstance(outcome, BaseException):
                    outcome = StoreError(f"the ledger's WAL could not be synced to disk: {error}")
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    loop.call_soon_threadsafe(resolve, batch, outcome)



class WalFile:
    """The ledger's WAL file, synced with ``fdatasync`` (opened at the first sync)."""

    def __init__(self, path: str, *, sync: Callable[[int], None] | None = None) -> None:
        self.path = path
        self._sync = sync or getattr(os, "fdatasync", os.fsync)
        self._fd: int | None = None

    def sync(self) -> OSError | None:
        """Sync the file; the error (also logged) when that failed."""
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
            self._sync(self._fd)
        except OSError as exc:
            log.error("sqlite-ledger: fsync of %s failed: %s", self.path, exc)
            return exc
        return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LedgerConnection:
    """The deliveries ledger's own connection, used only from its own thread.

    A session of group-commit batches is one call into that thread (:func:`drain_queue`), so
    a batch costs no hand-over from the event loop however many statements it runs, and
    one wake-up of the loop for its answers. The connection never checkpoints the WAL itself:
    its :class:`WalCheckpointer` does, off the commit path.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        thread: ThreadPoolExecutor,
        checkpointer: WalCheckpointer,
        syncer: WalSyncer | None = None,
    ) -> None:
        self._conn = conn
        self._thread = thread
        self.checkpointer = checkpointer
        #: Syncs the WAL after commits when the store runs at FULL or EXTRA (None otherwise).
        self.syncer = syncer

    @classmethod
    async def open(
        cls, path: str, *, busy_timeout: float, synchronous: str, checkpoint: CheckpointPolicy
    ) -> LedgerConnection:
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-ledger")

        connect = functools.partial(
            connect_ledger, path, busy_timeout=busy_timeout, synchronous=synchronous, checkpoint=checkpoint
        )
        try:
            conn, checkpointer, synced = await asyncio.get_running_loop().run_in_executor(thread, connect)
        except BaseException:
            thread.shutdown(wait=False)
            raise
        checkpointer.start()
        syncer = WalSyncer(path + "-wal") if synced else None
        if syncer is not None:
            syncer.start()
        return cls(conn, thread, checkpointer, syncer)

    async def drain(
        self,
        queue: collections.deque[LedgerItem],
        resolve: LedgerResolve,
        *,
        max_batch: int,
        max_seconds: float,
    ) -> None:
        """Commit the queue's items in the ledger thread until it is empty or ``max_seconds``
        have passed; ``resolve(batch, results or exception)`` runs on the event loop after
        each batch. If the caller is cancelled, this waits for the session to end anyway
        (the caller holds the write lock until then)."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self._thread,
            drain_queue,
            self._conn,
            queue,
            loop,
            resolve,
            max_batch,
            max_seconds,
            self.checkpointer,
            self.syncer,
        )
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            raise

    async def close(self) -> None:
        try:
            if self.syncer is not None:
                await asyncio.to_thread(self.syncer.stop)
            await asyncio.to_thread(self.checkpointer.stop)
        finally:
            try:
                await asyncio.get_running_loop().run_in_executor(self._thread, self._conn.close)
            finally:
                self._thread.shutdown(wait=False)


def connect_ledger(
    path: str, *, busy_timeout: float, synchronous: str, checkpoint: CheckpointPolicy
) -> tuple[sqlite3.Connection, WalCheckpointer, bool]:
    """The ledger's connection, its checkpointer (not started) and whether the WAL must be
    synced after each commit (a :class:`WalSyncer`'s job in the ledger thread, the writer
    process's own in :mod:`bot.store.ledger_writer`).

    At FULL/EXTRA in WAL mode the connection commits at NORMAL and the WAL is synced after
    each commit, before any answer. In any other journal mode (WAL can be refused, e.g. where
    shared memory is not available) the ledger commits at the store's level itself.
    """
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    checkpoint_conn = None
    try:
        journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        synced = synchronous.lower() in ("full", "extra") and journal_mode.lower() == "wal"
        conn.execute(f"PRAGMA synchronous = {'NORMAL' if synced else synchronous.upper()}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        # the checkpoint syncs the database file before the WAL may be reused
        checkpoint_conn = sqlite3.connect(
            path, timeout=checkpoint.truncate_wait_s, isolation_level=None, check_same_thread=False
        )
        checkpoint_conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        checkpoint_conn.execute("PRAGMA wal_autocheckpoint = 0")
    except BaseException:
        conn.close()
        if checkpoint_conn is not None:
            checkpoint_conn.close()
        raise
    return conn, WalCheckpointer(checkpoint_conn, page_size, checkpoint), synced


def drain_queue(
    conn: sqlite3.Connection,
    queue: collections.deque[LedgerItem],
    loop: asyncio.AbstractEventLoop,
    resolve: LedgerResolve,
    max_batch: int,
    max_seconds: float,
    checkpointer: WalCheckpointer,
    syncer: WalSyncer | None = None,
) -> None:
    """In the ledger thread: commit batches of ``queue`` (filled by the event loop) until it
    is empty or ``max_seconds`` have passed, posting each batch's outcome to ``resolve``
    (through ``syncer``, when there is one, once the batch's frames are synced)."""
    deadline = time.monotonic() + max_seconds
    page_size = checkpointer.page_size
    while queue:
        batch = [queue.popleft() for _ in range(min(len(queue), max_batch))]
        rows_params = [params for params, _ in batch]
        try:
            with checkpointer.gate:
                outcome: LedgerInsert | BaseException = insert_deliveries(conn, rows_params)
        except Exception as exc:  # noqa: BLE001 - every caller of the batch gets it
            outcome = exc
        except BaseException as exc:
            loop.call_soon_threadsafe(resolve, batch, exc)
            raise
        if syncer is not None:
            syncer.hand_over(loop, resolve, batch, outcome)
        else:
            loop.call_soon_threadsafe(resolve, batch, outcome)
        if not isinstance(outcome, BaseException):
            checkpointer.wrote(estimate_wal_bytes(outcome.payload_bytes, len(rows_params), page_size))
        if time.monotonic() >= deadline:
            return


def insert_deliveries(conn: sqlite3.Connection, batch: Sequence[Sequence[Any]]) -> LedgerInsert:
    """Insert a batch of :func:`rows.delivery_params` as one transaction: one ``INSERT``
    statement committed by itself (autocommit), so the ledger thread runs one statement per
    batch. No wake-up counter is bumped: other stores notice new rows by ``max(seq)``.

    Payloads are stored compressed (:mod:`bot.store.payload_codec`).

    Returns per item whether it is the copy that was recorded, how many pending rows were
    recorded and the payload bytes written. The first copy of an id in the batch wins; ids
    already in the ledger are not inserted. When some were (the statement inserted fewer
    rows than it was given), the rows it inserted are the ones with the highest ``seq``
    among the batch's ids: ``seq`` is AUTOINCREMENT, above every row that existed before.

    A batch the database refuses because of a row's values (:func:`is_row_error`) is
    inserted again row by row: the refused rows are in ``errors``, every other is recorded.
    """
    if conn.in_transaction:
        raise StoreError("the ledger connection is inside a transaction")
    firsts: dict[str, Sequence[Any]] = {}
    for params in batch:
        firsts.setdefault(params[0], params)
    fresh = list(firsts.values())
    try:
        stored = [_stored_row(params) for params in fresh]
        inserted = _insert_delivery_rows(conn, stored)
    except Exception as exc:
        if not is_row_error(exc):
            raise
        log.warning(
            "sqlite-ledger: a batch of %d was refused (%s); inserting its rows one by one", len(batch), exc
        )
        return _insert_one_by_one(conn, batch)
    if inserted != len(fresh):
        seqs = conn.execute(
            "SELECT id, seq FROM deliveries WHERE id IN (SELECT value FROM json_each(?)) ORDER BY seq",
            (json.dumps(list(firsts)),),
        ).fetchall()
        ours = {row[0] for row in seqs[len(seqs) - inserted :]} if inserted else set()
        fresh = [params for delivery_id, params in firsts.items() if delivery_id in ours]
    bumps = sum(1 for params in fresh if params[_DELIVERY_STATE] == DeliveryState.PENDING.value)
    recorded = {params[0] for params in fresh}
    return LedgerInsert(
        rows.first_wins([params[0] for params in batch], recorded),
        bumps,
        sum(len(row[_DELIVERY_PAYLOAD]) for row in stored),
    )


class LedgerInsert(NamedTuple):
    """What :func:`insert_deliveries` did."""

    #: Per item of the batch: whether it is the copy that was recorded.
    recorded: list[bool]
    #: How many pending rows were recorded (each may wake a dispatcher).
    bumps: int
    #: Payload bytes written (compressed).
    payload_bytes: int
    #: ``(index, error)`` for each item the database refused (its ``recorded`` is False).
    errors: tuple[tuple[int, str], ...] = ()

    def results(self) -> list[bool | StoreError]:
        """Per item: whether it was recorded, or the :class:`StoreError` that refused it."""
        if not self.errors:
            return self.recorded
        out: list[bool | StoreError] = list(self.recorded)
        for index, error in self.errors:
            out[index] = StoreError(error)
        return out


#: Errors of a ledger insert caused by a row's values (the database refused that row), after
#: which the batch's other rows are inserted one by one. Any other error (locked, I/O, full)
#: is the database's and fails the whole batch at once.
_ROW_ERRORS = (
    OverflowError,
    TypeError,
    ValueError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
)


def is_row_error(exc: BaseException) -> bool:
    """Whether a failed insert was refused for a row's values rather than by the database."""
    return isinstance(exc, _ROW_ERRORS)


def _insert_one_by_one(conn: sqlite3.Connection, batch: Sequence[Sequence[Any]]) -> LedgerInsert:
    """A batch one of whose rows the database refuses: each row inserted by itself (in one
    transaction, one commit), so only a refused row fails and every other is recorded. The
    first copy of an id that goes in wins, as in :func:`insert_deliveries`."""
    recorded = [False] * len(batch)
    errors: list[tuple[int, str]] = []
    settled: set[str] = set()
    bumps = payload_bytes = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        for index, params in enumerate(batch):
            if params[0] in settled:
                continue
            try:
                row = _stored_row(params)
                inserted = _insert_delivery_rows(conn, [row])
            except Exception as exc:
                if not is_row_error(exc):
                    raise
                errors.append((index, f"{type(exc).__name__}: {exc}"))
                continue
            settled.add(params[0])
            payload_bytes += len(row[_DELIVERY_PAYLOAD])
            if inserted:
                recorded[index] = True
                if params[_DELIVERY_STATE] == DeliveryState.PENDING.value:
                    bumps += 1
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return LedgerInsert(recorded, bumps, payload_bytes, tuple(errors))


def _stored_row(params: Sequence[Any]) -> list[Any]:
    """A row as the table keeps it: its payload compressed."""
    row = list(params)
    row[_DELIVERY_PAYLOAD] = encode_payload(bytes(row[_DELIVERY_PAYLOAD]))
    return row


def _insert_delivery_rows(conn: sqlite3.Connection, batch: Sequence[Sequence[Any]]) -> int:
    """Insert the rows whose id is new; returns how many were inserted."""
    if not batch:
        return 0
    sql = _DELIVERY_INSERT + ", ".join(_DELIVERY_ROW for _ in batch) + " ON CONFLICT (id) DO NOTHING"
    return conn.execute(sql, [value for params in batch for value in params]).rowcount


async def _set_new_database_page_size(conn: aiosqlite.Connection, page_size: int) -> None:
    """Set the page size of a database that has no page yet (before WAL mode and tables)."""
    async with conn.execute("PRAGMA page_count") as cursor:
        (pages,) = await cursor.fetchone()  # type: ignore[misc]
    if pages == 0:
        await conn.execute(f"PRAGMA page_size = {int(page_size)}")


def _check_openable(path: str) -> None:
    sqlite3.connect(path).close()


async def _connect(path: str, busy_timeout: float) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, timeout=busy_timeout, isolation_level=None)
    conn.row_factory = sqlite3.Row
    await conn.execute("PRAGMA foreign_keys = ON")
    return conn
