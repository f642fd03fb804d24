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
- ``record_delivery`` calls are group-committed by the ledger engine of
  :mod:`bot.store.sqlite_ledger` (:class:`~bot.store.sqlite_ledger.LedgerBatcher`): every
  queued delivery goes into one transaction, committed before any of them returns. The
  ledger has a connection and a thread of its own; while deliveries keep coming, the thread
  commits batch after batch by itself (each batch: one multi-row ``INSERT`` committed by
  itself) and posts each batch's answers to the event loop, so the loop never stands
  between two commits. A task holds the Store's write lock meanwhile, so in-process writers
  never meet SQLite's busy wait. A batch the database refuses because of one row's values
  is inserted again row by row, so that row alone fails
  (:func:`~bot.store.sqlite_ledger.insert_deliveries`).
  With ``ledger_writer="process"`` (``patchwright serve``) the same connection, commits
  and checkpointer live in a writer process instead (:mod:`bot.store.ledger_writer`), which
  needs none of this process's GIL; its commits and this process's writes meet at SQLite's
  own lock (``busy_timeout``).
- WAL checkpoints run off the ledger's commit path, on a checkpointer thread and connection
  of their own (:class:`~bot.store.sqlite_ledger.CheckpointPolicy`), which also keeps the
  WAL bounded. New database files get :data:`NEW_DATABASE_PAGE_SIZE` pages.
- ``claim_task`` order: pending tasks by ``created_at`` then ``id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosqlite

from bot.store import rows
from bot.store.base import (
    Attempt,
    Delivery,
    DeliveryState,
    DeliveryVerdict,
    Installation,
    LogBatch,
    PruneResult,
    StoreError,
    TaskCursor,
    TaskEvent,
    WorkerRecord,
)
from bot.store.ledger_writer import LedgerWriterProcess
from bot.store.migrations import load_migrations
from bot.store.payload_codec import PayloadCodecError, decode_payload
from bot.store.sqlite_ledger import CheckpointPolicy, LedgerBatcher, LedgerConnection
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

#: Ledger retention: the rows a prune may take (``deliveries_prunable`` is the partial index
#: of exactly these terms), oldest first; parameters: cutoff, cutoff.
_PRUNABLE_DELIVERIES = (
    "FROM deliveries WHERE state = 'done' AND payload_pruned_at IS NULL"
    " AND received_at < ? AND processed_at < ?"
)
#: One batch: parameters pruned-at, cutoff, cutoff, limit.
_PRUNE_PAYLOADS = (
    "UPDATE deliveries SET payload = x'', payload_pruned_at = ?"
    f" WHERE seq IN (SELECT seq {_PRUNABLE_DELIVERIES} ORDER BY received_at LIMIT ?)"
    " RETURNING seq"
)
_MORE_PRUNABLE = f"SELECT EXISTS (SELECT 1 {_PRUNABLE_DELIVERIES})"
_COUNT_PRUNABLE = f"SELECT count(*) {_PRUNABLE_DELIVERIES}"


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
        environ: Mapping[str, str] | None = None,
    ) -> SQLiteStore:
        """Open (creating the file if needed) without migrating; call :meth:`migrate`.

        ``page_size`` applies to a new (empty) file only; ``checkpoint`` is the ledger's WAL
        checkpoint policy (:class:`CheckpointPolicy` defaults). ``ledger_writer`` says who
        commits webhook deliveries: ``"thread"`` (a thread of this process) or ``"process"``
        (a writer process of its own, :mod:`bot.store.ledger_writer`: what ``patchwright
        serve`` uses, so the web process's event loop never waits for the GIL). ``environ``
        is the server's environment, of which a writer process gets only the few variables
        an interpreter needs (:func:`bot.store.ledger_writer.writer_environment`; none when
        None); the store itself never reads the environment."""
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
                    environ=environ,
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
        search: str | None = None,
        before: TaskCursor | None = None,
    ) -> list[Task]:
        terms, params = rows.task_filters(
            statuses=statuses, repo=repo, search=search, before=before, encode_time=encode_time
        )
        found = await self._read(
            f"SELECT * FROM tasks {rows.where_clause(terms)}ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, limit),
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

    async def read_log_batches(
        self, task_id: str, attempt: int | None = None, *, after_seq: int = 0, limit: int | None = None
    ) -> list[LogBatch]:
        sql = "SELECT seq, attempt, lines, created_at FROM attempt_logs WHERE task_id = ? AND seq > ?"
        params: list[Any] = [task_id, after_seq]
        if attempt is not None:
            sql += " AND attempt = ?"
            params.append(attempt)
        sql += " ORDER BY attempt, seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        found = await self._read(sql, params)
        return [rows.log_batch_from_row(row, decode_time) for row in found]

    async def list_attempts_for(self, task_ids: Sequence[str]) -> dict[str, list[Attempt]]:
        found = await self._read(
            "SELECT * FROM attempts WHERE task_id IN (SELECT value FROM json_each(?))"
            " ORDER BY task_id, number",
            (json.dumps(rows.unique_ids(task_ids)),),
        )
        return rows.by_task(found, lambda row: rows.attempt_from_row(row, decode_time))

    async def list_events_for(
        self, task_ids: Sequence[str], *, kinds: Sequence[str] | None = None
    ) -> dict[str, list[TaskEvent]]:
        sql = "SELECT * FROM task_events WHERE task_id IN (SELECT value FROM json_each(?))"
        params: list[Any] = [json.dumps(rows.unique_ids(task_ids))]
        if kinds is not None:
            sql += " AND kind IN (SELECT value FROM json_each(?))"
            params.append(json.dumps(rows.unique_ids(kinds)))
        found = await self._read(sql + " ORDER BY seq", params)
        return rows.by_task(found, lambda row: rows.event_from_row(row, decode_time))

    async def tasks_for_deliveries(self, delivery_ids: Sequence[str]) -> dict[str, str]:
        found = await self._read(
            "SELECT delivery_id, task_id FROM task_events"
            " WHERE delivery_id IN (SELECT value FROM json_each(?)) AND delivery_id <> '' ORDER BY seq",
            (json.dumps(rows.unique_ids(delivery_ids)),),
        )
        return {row[0]: row[1] for row in found}  # in seq order: the newest event wins

    async def add_event(self, event: TaskEvent) -> None:
        async with self._write() as tx:
            await self._insert_event(tx, event, self._clock())

    async def has_fact(self, key: str) -> bool:
        return bool(await self._read("SELECT 1 FROM facts WHERE key = ?", (rows.clean_text(key),)))

    async def which_facts(self, keys: Sequence[str]) -> set[str]:
        found = await self._read(
            "SELECT key FROM facts WHERE key IN (SELECT value FROM json_each(?))",
            (json.dumps(rows.unique_ids([rows.clean_text(k) for k in keys])),),
        )
        return {row[0] for row in found}

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
        self,
        *,
        limit: int = 100,
        state: DeliveryState | None = None,
        repo: str | None = None,
        event: str | None = None,
        verdict: DeliveryVerdict | None = None,
        from_bots: bool | None = None,
        before_seq: int | None = None,
    ) -> list[Delivery]:
        terms, params = rows.delivery_filters(
            state=state, repo=repo, event=event, verdict=verdict, from_bots=from_bots, before_seq=before_seq
        )
        found = await self._read(
            f"SELECT * FROM deliveries {rows.where_clause(terms)}ORDER BY seq DESC LIMIT ?", (*params, limit)
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
                " AND payload_pruned_at IS NULL RETURNING seq",
                (delivery_id,),
            )
            if found:
                await tx.notify(DELIVERIES_CHANNEL)
        return bool(found)

    async def prune_delivery_payloads(self, before: datetime, *, limit: int) -> PruneResult:
        if limit < 1:
            raise StoreError(f"a prune needs a limit of at least 1, not {limit}")
        cutoff = encode_time(before)
        async with self._write() as tx:
            pruned = await tx.fetch(_PRUNE_PAYLOADS, (encode_time(self._clock()), cutoff, cutoff, limit))
            more = await tx.fetch(_MORE_PRUNABLE, (cutoff, cutoff))
        return PruneResult(pruned=len(pruned), more=bool(more[0][0]))

    async def count_prunable_deliveries(self, before: datetime) -> int:
        cutoff = encode_time(before)
        found = await self._read(_COUNT_PRUNABLE, (cutoff, cutoff))
        return int(found[0][0])

    async def wait_for_deliveries(self, timeout: float) -> bool:
        return await self._wait(DELIVERIES_CHANNEL, timeout)

    async def notify_deliveries(self) -> None:
        async with self._write() as tx:
            await tx.notify(DELIVERIES_CHANNEL)

    # -- workers -----------------------------------------------------------------------

    async def report_worker(self, worker_id: str, stats: Mapping[str, Any]) -> None:
        now = encode_time(self._clock())
        async with self._write() as tx:
            await tx.execute(
                "INSERT INTO workers (worker_id, started_at, seen_at, stats) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (worker_id) DO UPDATE SET seen_at = excluded.seen_at, stats = excluded.stats",
                (rows.clean_text(worker_id), now, now, rows.worker_stats_json(stats)),
            )

    async def list_workers(self) -> list[WorkerRecord]:
        found = await self._read("SELECT * FROM workers ORDER BY seen_at DESC, worker_id")
        return [rows.worker_from_row(row, decode_time) for row in found]

    async def forget_workers(self, seen_before: datetime) -> int:
        async with self._write() as tx:
            dropped = await tx.fetch(
                "DELETE FROM workers WHERE seen_at < ? RETURNING worker_id", (encode_time(seen_before),)
            )
        return len(dropped)

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


_MAX_SEQ_KEY = "(deliveries max seq)"  # not a channel name
#: The watcher's poll: every wake-up counter, and the ledger's highest ``seq`` (new rows).
_WAKEUP_READ = (
    "SELECT channel, counter FROM wakeups"
    f" UNION ALL SELECT '{_MAX_SEQ_KEY}', coalesce(max(seq), 0) FROM deliveries"
)


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
