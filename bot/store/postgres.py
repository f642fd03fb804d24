"""The PostgreSQL store (asyncpg): any number of processes on any number of hosts share it.

- One asyncpg pool per Store (``search_path`` set per connection when a ``schema`` is
  given; ``migrate()`` creates the schema) plus one dedicated ``LISTEN`` connection for
  wake-ups. ``NOTIFY`` is sent inside the transaction that makes work available, so it is
  delivered exactly when that work is committed and visible.
- ``transition`` is one conditional ``UPDATE … WHERE id = $1 AND status = ANY(…)
  [AND version = …]``; a ``FOR UPDATE`` CTE in the same statement reads the status it
  replaced, for the audit event written in the same transaction.
- ``claim_task``: oldest pending task by ``created_at`` then ``id``, picked with
  ``FOR UPDATE SKIP LOCKED`` so concurrent claimers never wait on each other's rows.
  Limits are kept exact with transaction-scoped advisory locks:
  a global limit (``max_running``) takes one global claim lock for the transaction
  (claims that use it are serialised); a repository with a running limit is checked only
  while holding that repository's lock, taken with ``pg_try_advisory_xact_lock`` (never
  waits, so two claimers can never deadlock). A claimer that finds a repository's lock
  taken skips it for this pass and, if it then found nothing, retries the claim after a
  few milliseconds, so a contended repository is not missed.
- ``claim_deliveries`` (and ``requeue_delivery``/``release_stale_deliveries``, which can
  make a repository's older row pending again) hold one ledger advisory lock for their
  short transaction, so "at most one row per repository in processing" holds for any
  number of dispatchers; rows are still picked with ``SKIP LOCKED``.
- ``record_delivery`` is group-committed: :data:`LEDGER_WRITERS` writer tasks per Store each
  insert what is queued when they are free with one ``INSERT … SELECT FROM unnest(…) ON
  CONFLICT (id) DO NOTHING`` (so one batch is built while another waits for its commit's
  WAL flush), rows sorted by id so that concurrent batches, of one Store or several, lock ids
  in the same order (no deadlock). ``seq`` comes from an identity column: insertion order, not
  commit order. A batch refused because of one row's values is inserted again row by row (a
  savepoint each, one transaction), so that row alone fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bot.logs import redact_url
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
from bot.store.migrations import load_migrations
from bot.tasks.model import TASK_FIELDS, Status, Task, utcnow

log = logging.getLogger(__name__)

PENDING = "pending"
DELIVERIES = "deliveries"
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
CLAIM_RETRIES = 50

_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
#: Errors of a ledger insert caused by a row's values (asyncpg's client-side DataError is a
#: ValueError): the batch's other rows are then inserted one by one. Any other error
#: (connection, resources) fails the whole batch at once.
_ROW_ERRORS = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    OverflowError,
    TypeError,
    ValueError,
)
_TASK_COLUMNS = ", ".join(TASK_FIELDS)
_TASK_PLACEHOLDERS = ", ".join(f"${i}" for i in range(1, len(TASK_FIELDS) + 1))
_EVENT_INSERT = (
    f"INSERT INTO task_events ({', '.join(rows.EVENT_COLUMNS)}) VALUES ("
    + ", ".join(
        f"${i}::jsonb" if name == "changes" else f"${i}" for i, name in enumerate(rows.EVENT_COLUMNS, start=1)
    )
    + ")"
)
_DELIVERY_ARRAY_TYPES = (
    "text[]",
    "text[]",
    "text[]",
    "text[]",
    "bigint[]",
    "bytea[]",
    "timestamptz[]",
    "text[]",
    "text[]",
    "text[]",
    "text[]",
    "timestamptz[]",
    "timestamptz[]",
    "integer[]",
    "text[]",
)
_DELIVERY_INSERT = (
    f"INSERT INTO deliveries ({', '.join(rows.DELIVERY_COLUMNS)}) "
    f"SELECT * FROM unnest({', '.join(f'${i + 1}::{t}' for i, t in enumerate(_DELIVERY_ARRAY_TYPES))}) "
    "ON CONFLICT (id) DO NOTHING RETURNING id, state"
)

#: Ledger retention: the rows a prune may take (``deliveries_prunable`` is the partial index
#: of exactly these terms); parameter $1: the cutoff.
_PRUNABLE_DELIVERIES = (
    "FROM deliveries WHERE state = 'done' AND payload_pruned_at IS NULL"
    " AND received_at < $1 AND processed_at < $1"
)
#: One batch, oldest first; rows another transaction holds (a replay) are skipped. The rows
#: are picked and locked once, by an init plan (``ARRAY(…)``): as ``seq IN (SELECT … LIMIT)``
#: the planner may rescan the subquery per row (a nested-loop semi join), and each rescan
#: would skip the rows this statement just updated and lock more, beyond the limit.
#: Parameters: cutoff, limit, pruned-at.
_PRUNE_PAYLOADS = (
    "UPDATE deliveries SET payload = ''::bytea, payload_pruned_at = $3"
    f" WHERE seq = ANY (ARRAY (SELECT seq {_PRUNABLE_DELIVERIES}"
    "  ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED))"
    " RETURNING seq"
)
_MORE_PRUNABLE = f"SELECT EXISTS (SELECT 1 {_PRUNABLE_DELIVERIES})"
_COUNT_PRUNABLE = f"SELECT count(*) {_PRUNABLE_DELIVERIES}"


def is_row_error(exc: BaseException | None) -> bool:
    """Whether a failed insert was refused for a row's values rather than by the database."""
    return isinstance(exc, _ROW_ERRORS)


def channel_name(kind: str, schema: str | None) -> str:
    """The NOTIFY channel of ``kind`` for a schema (identifiers are at most 63 bytes)."""
    name = f"patchwright_{kind}_{schema or 'public'}"
    if len(name) > 63:
        name = f"patchwright_{kind}_{hashlib.sha256(name.encode()).hexdigest()[:24]}"
    return name


def _encode_time(value: datetime) -> datetime:
    return rows.require_utc(value, "time")


def _decode_time(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _task(row: Mapping[str, Any]) -> Task:
    return rows.task_from_row(row, _decode_time)


#: Ledger batches one Store commits at once: while one waits for its commit, the next is
#: inserted (bench/ingress.py: about +15-20 % deliveries/s over one writer on a 2-core box).
LEDGER_WRITERS = 3


class _Tx:
    """One open transaction: its connection, and the channels it notified."""

    def __init__(self, conn: asyncpg.Connection, channels: Mapping[str, str]) -> None:
        self.conn = conn
        self.wake: set[str] = set()
        self._channels = channels

    async def notify(self, kind: str) -> None:
        """NOTIFY listeners; PostgreSQL delivers it when this transaction commits."""
        await self.conn.execute("SELECT pg_notify($1, '')", self._channels[kind])
        self.wake.add(kind)


class PostgresStore:
    """The :class:`~bot.store.base.Store` on PostgreSQL. Open with :meth:`open`."""

    def __init__(
        self,
        dsn: str,
        pool: asyncpg.Pool,
        *,
        clock: Callable[[], datetime],
        schema: str | None,
        server_settings: Mapping[str, str],
    ) -> None:
        self._dsn = dsn
        self._pool = pool
        self._clock = clock
        self.schema = schema
        self._server_settings = dict(server_settings)
        self._channels = {
            PENDING: channel_name(PENDING, schema),
            DELIVERIES: channel_name(DELIVERIES, schema),
        }
        self._channel_kinds = {name: kind for kind, name in self._channels.items()}
        self._wakeups = {PENDING: rows.Wakeup(), DELIVERIES: rows.Wakeup()}
        self._listener: asyncpg.Connection | None = None
        self._listener_lock = asyncio.Lock()
        self._ledger: rows.GroupCommit[list[Any], bool] = rows.GroupCommit(
            self._write_deliveries, name="postgres-ledger", writers=LEDGER_WRITERS
        )
        self._closing = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        clock: Callable[[], datetime] = utcnow,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 8,
        listen: bool = True,
    ) -> PostgresStore:
        """Open a pool (and the LISTEN connection) without migrating; call :meth:`migrate`."""
        if schema is not None and not SCHEMA_NAME.fullmatch(schema):
            raise StoreError(f"schema name {schema!r} must match {SCHEMA_NAME.pattern}")
        settings = {"search_path": schema} if schema else {}
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, server_settings=settings
            )
        except (*_ERRORS, TimeoutError) as exc:
            raise StoreError(f"cannot connect to {redact_url(dsn)}: {exc}") from exc
        store = cls(dsn, pool, clock=clock, schema=schema, server_settings=settings)
        if listen:
            try:
                await store._listen()
            except StoreError:
                await store.close()
                raise
        return store

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        await self._ledger.close()  # write what is queued before refusing work
        self._closed = True
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(*_ERRORS):
                await listener.close(timeout=5)
        try:
            await asyncio.wait_for(self._pool.close(), 10)
        except TimeoutError:
            self._pool.terminate()

    def _lock_name(self, purpose: str) -> str:
        return f"patchwright:{self.schema or 'public'}:{purpose}"

    async def migrate(self) -> list[int]:
        applied: list[int] = []
        async with self._tx() as tx:
            conn = tx.conn
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1), 0)", self._lock_name("migrate"))
            if self.schema:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)"
            )
            done = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
            for migration in load_migrations("postgres"):
                if migration.version in done:
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    self._clock(),
                )
                applied.append(migration.version)
        if applied:
            # statements prepared before the tables existed must not be reused
            await self._pool.expire_connections()
        return applied

    # -- plumbing --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[_Tx]:
        self._check_open()
        try:
            async with self._pool.acquire() as conn:
                tx = _Tx(conn, self._channels)
                async with conn.transaction():
                    yield tx
        except _ERRORS as exc:
            raise StoreError(f"postgres: {exc}") from exc
        if tx.wake and self._listener is None:
            for kind in tx.wake:  # no LISTEN connection: wake this process directly
                self._wakeups[kind].fire()

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        self._check_open()
        try:
            return await self._pool.fetch(sql, *args)
        except _ERRORS as exc:
            raise StoreError(f"postgres: {exc}") from exc

    async def _insert_event(self, tx: _Tx, event: TaskEvent, at: datetime) -> None:
        await tx.conn.execute(_EVENT_INSERT, *rows.event_params(event, at, _encode_time))

    # -- tasks -----------------------------------------------------------------------

    async def create_task(self, task: Task, *, event: TaskEvent | None = None) -> tuple[Task, bool]:
        params = rows.task_params(task, _encode_time, version=1)
        async with self._tx() as tx:
            inserted = await tx.conn.fetchrow(
                f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES ({_TASK_PLACEHOLDERS}) "
                "ON CONFLICT DO NOTHING RETURNING *",
                *params,
            )
            if inserted is None:
                existing = await tx.conn.fetchrow(
                    "SELECT * FROM tasks WHERE repo = $1 AND issue_number = $2", task.repo, task.issue_number
                )
                if existing is None:
                    raise StoreError(f"task id {task.id} already exists for another issue")
                return _task(existing), False
            stored = _task(inserted)
            if event is not None:
                created = rows.transition_event(
                    event, task_id=stored.id, from_status=None, to_status=stored.status, changes={}
                )
                await self._insert_event(tx, created, self._clock())
            if stored.status is Status.PENDING:
                await tx.notify(PENDING)
        return stored, True

    async def get_task(self, task_id: str) -> Task | None:
        found = await self._fetch("SELECT * FROM tasks WHERE id = $1", task_id)
        return _task(found[0]) if found else None

    async def get_task_by_issue(self, repo: str, issue_number: int) -> Task | None:
        found = await self._fetch(
            "SELECT * FROM tasks WHERE repo = $1 AND issue_number = $2", repo, issue_number
        )
        return _task(found[0]) if found else None

    async def get_task_by_pr(self, repo: str, pr_number: int) -> Task | None:
        found = await self._fetch(
            "SELECT * FROM tasks WHERE repo = $1 AND pr_number = $2 ORDER BY created_at DESC, id DESC LIMIT 1",
            repo,
            pr_number,
        )
        return _task(found[0]) if found else None

    async def get_task_by_branch(self, repo: str, branch: str) -> Task | None:
        if not branch:
            return None
        found = await self._fetch(
            "SELECT * FROM tasks WHERE repo = $1 AND branch = $2 ORDER BY created_at DESC, id DESC LIMIT 1",
            repo,
            branch,
        )
        return _task(found[0]) if found else None

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
            statuses=statuses, repo=repo, search=search, before=before, encode_time=_encode_time
        )
        found = await self._fetch(
            rows.dollar_placeholders(
                f"SELECT * FROM tasks {rows.where_clause(terms)}ORDER BY created_at DESC, id DESC LIMIT ?"
            ),
            *params,
            limit,
        )
        return [_task(row) for row in found]

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
        values = rows.change_params(changes, _encode_time)
        if not allowed:
            return None
        now = self._clock()
        params: list[Any] = [task_id, allowed, now, *values.values()]
        assignments = "".join(f"{name} = ${i}, " for i, name in enumerate(values, start=4))
        sql = (
            "WITH prev AS (SELECT id, status FROM tasks WHERE id = $1 FOR UPDATE) "
            f"UPDATE tasks AS t SET {assignments}version = t.version + 1, updated_at = $3 "
            "FROM prev WHERE t.id = prev.id AND t.status = ANY($2::text[])"
        )
        if expect_version is not None:
            params.append(expect_version)
            sql += f" AND t.version = ${len(params)}"
        sql += " RETURNING t.*, prev.status AS previous_status"
        async with self._tx() as tx:
            updated = await tx.conn.fetchrow(sql, *params)
            if updated is None:
                return None
            task = _task(updated)
            previous = Status(updated["previous_status"])
            if event is not None:
                appended = rows.transition_event(
                    event, task_id=task_id, from_status=previous, to_status=task.status, changes=changes
                )
                await self._insert_event(tx, appended, now)
            if task.status is Status.PENDING or previous is Status.RUNNING:
                await tx.notify(PENDING)
        return task

    async def claim_task(
        self,
        worker_id: str,
        *,
        max_running: int | None = None,
        max_running_per_repo: int | None = None,
        repo_limits: Mapping[str, int] | None = None,
    ) -> Task | None:
        for attempt in range(CLAIM_RETRIES):
            task, contended = await self._claim_once(
                worker_id,
                max_running=max_running,
                max_running_per_repo=max_running_per_repo,
                repo_limits=repo_limits,
            )
            if task is not None or not contended:
                return task
            await asyncio.sleep(0.002 * (attempt + 1))  # another claimer holds a repo: retry
        return None

    async def _claim_once(
        self,
        worker_id: str,
        *,
        max_running: int | None,
        max_running_per_repo: int | None,
        repo_limits: Mapping[str, int] | None,
    ) -> tuple[Task | None, bool]:
        """One claim transaction: (claimed task, whether a repository lock was contended)."""
        now = self._clock()
        contended = False
        async with self._tx() as tx:
            conn = tx.conn
            if max_running is not None:
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1), 0)", self._lock_name("claim"))
            repo_filter = rows.RepoFilter()
            if rows.limits_apply(max_running, max_running_per_repo, repo_limits):
                running = await conn.fetch(
                    "SELECT repo, count(*) AS n FROM tasks WHERE status = 'running' GROUP BY repo"
                )
                decided = rows.claim_filter(
                    {row["repo"]: row["n"] for row in running},
                    max_running=max_running,
                    max_running_per_repo=max_running_per_repo,
                    repo_limits=repo_limits,
                )
                if decided is None:
                    return None, False
                repo_filter = decided
            exclude = set(repo_filter.exclude)
            only = None if repo_filter.only is None else sorted(repo_filter.only)
            while True:
                candidate = await conn.fetchrow(
                    "SELECT id, repo FROM tasks WHERE status = 'pending'"
                    " AND (not_before IS NULL OR not_before <= $1)"
                    " AND NOT (repo = ANY($2::text[]))"
                    " AND ($3::text[] IS NULL OR repo = ANY($3::text[]))"
                    " ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
                    now,
                    sorted(exclude),
                    only,
                )
                if candidate is None:
                    return None, contended
                repo = candidate["repo"]
                limit = rows.repo_limit(repo, max_running_per_repo, repo_limits)
                if limit is not None:
                    locked = await conn.fetchval(
                        "SELECT pg_try_advisory_xact_lock(hashtext($1), hashtext($2))",
                        self._lock_name("claim-repo"),
                        repo,
                    )
                    if not locked:
                        contended = True
                        exclude.add(repo)
                        continue
                    running_here = await conn.fetchval(
                        "SELECT count(*) FROM tasks WHERE repo = $1 AND status = 'running'", repo
                    )
                    if running_here >= limit:
                        exclude.add(repo)
                        continue
                claimed = await conn.fetchrow(
                    "UPDATE tasks SET status = 'running', worker_id = $2, heartbeat_at = $3, started_at = $3,"
                    " updated_at = $3, version = version + 1 WHERE id = $1 RETURNING *",
                    candidate["id"],
                    worker_id,
                    now,
                )
                task = _task(claimed)
                await self._insert_event(tx, rows.claimed_event(task, worker_id), now)
                return task, contended

    async def heartbeat(self, task_id: str, worker_id: str) -> bool:
        found = await self._fetch(
            "UPDATE tasks SET heartbeat_at = $1 WHERE id = $2 AND status = 'running' AND worker_id = $3"
            " RETURNING id",
            self._clock(),
            task_id,
            worker_id,
        )
        return bool(found)

    async def list_stale_running(self, older_than: timedelta) -> list[Task]:
        found = await self._fetch(
            "SELECT * FROM tasks WHERE status = 'running' AND (heartbeat_at IS NULL OR heartbeat_at < $1)"
            " ORDER BY heartbeat_at NULLS FIRST, id",
            self._clock() - older_than,
        )
        return [_task(row) for row in found]

    async def wait_for_pending(self, timeout: float) -> bool:
        return await self._wait(PENDING, timeout)

    async def notify_pending(self) -> None:
        async with self._tx() as tx:
            await tx.notify(PENDING)

    # -- attempts, logs, events -------------------------------------------------------

    async def start_attempt(self, attempt: Attempt) -> None:
        params = rows.attempt_params(attempt, _encode_time)
        try:
            async with self._tx() as tx:
                await tx.conn.execute(
                    f"INSERT INTO attempts ({', '.join(rows.ATTEMPT_COLUMNS)}) "
                    f"VALUES ({', '.join(f'${i}' for i in range(1, len(rows.ATTEMPT_COLUMNS) + 1))})",
                    *params,
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
        found = await self._fetch(
            "UPDATE attempts SET finished_at = $1, outcome = $2, cost_usd = $3, summary = $4,"
            " head_after = $5, error = $6, cost_known = $7, refused = $8"
            " WHERE task_id = $9 AND number = $10 RETURNING number",
            self._clock(),
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
        if not found:
            raise StoreError(f"task {task_id} has no attempt {number}")

    async def list_attempts(self, task_id: str) -> list[Attempt]:
        found = await self._fetch("SELECT * FROM attempts WHERE task_id = $1 ORDER BY number", task_id)
        return [rows.attempt_from_row(row, _decode_time) for row in found]

    async def append_logs(self, task_id: str, attempt: int, lines: Sequence[str]) -> None:
        if not lines:
            return
        await self._fetch(
            "INSERT INTO attempt_logs (task_id, attempt, lines, created_at) VALUES ($1, $2, $3, $4)",
            task_id,
            attempt,
            [rows.clean_text(line) for line in lines],
            self._clock(),
        )

    async def read_logs(self, task_id: str, attempt: int | None = None) -> list[tuple[int, str]]:
        found = await self._fetch(
            "SELECT attempt, lines FROM attempt_logs WHERE task_id = $1"
            " AND ($2::integer IS NULL OR attempt = $2) ORDER BY attempt, seq",
            task_id,
            attempt,
        )
        return rows.flatten_log_batches((row["attempt"], row["lines"]) for row in found)

    async def read_log_batches(
        self, task_id: str, attempt: int | None = None, *, after_seq: int = 0, limit: int | None = None
    ) -> list[LogBatch]:
        found = await self._fetch(
            "SELECT seq, attempt, lines, created_at FROM attempt_logs WHERE task_id = $1 AND seq > $2"
            " AND ($3::integer IS NULL OR attempt = $3) ORDER BY attempt, seq LIMIT $4",
            task_id,
            after_seq,
            attempt,
            limit,
        )
        return [rows.log_batch_from_row(row, _decode_time) for row in found]

    async def list_attempts_for(self, task_ids: Sequence[str]) -> dict[str, list[Attempt]]:
        found = await self._fetch(
            "SELECT * FROM attempts WHERE task_id = ANY($1::text[]) ORDER BY task_id, number",
            rows.unique_ids(task_ids),
        )
        return rows.by_task(found, lambda row: rows.attempt_from_row(row, _decode_time))

    async def list_events_for(
        self, task_ids: Sequence[str], *, kinds: Sequence[str] | None = None
    ) -> dict[str, list[TaskEvent]]:
        found = await self._fetch(
            "SELECT * FROM task_events WHERE task_id = ANY($1::text[])"
            " AND ($2::text[] IS NULL OR kind = ANY($2::text[])) ORDER BY seq",
            rows.unique_ids(task_ids),
            None if kinds is None else rows.unique_ids(kinds),
        )
        return rows.by_task(found, lambda row: rows.event_from_row(row, _decode_time))

    async def tasks_for_deliveries(self, delivery_ids: Sequence[str]) -> dict[str, str]:
        found = await self._fetch(
            "SELECT delivery_id, task_id FROM task_events"
            " WHERE delivery_id = ANY($1::text[]) AND delivery_id <> '' ORDER BY seq",
            rows.unique_ids(delivery_ids),
        )
        return {row["delivery_id"]: row["task_id"] for row in found}  # in seq order: the newest event wins

    async def add_event(self, event: TaskEvent) -> None:
        async with self._tx() as tx:
            await self._insert_event(tx, event, self._clock())

    async def has_fact(self, key: str) -> bool:
        return bool(await self._fetch("SELECT 1 FROM facts WHERE key = $1", rows.clean_text(key)))

    async def which_facts(self, keys: Sequence[str]) -> set[str]:
        found = await self._fetch(
            "SELECT key FROM facts WHERE key = ANY($1::text[])", rows.unique_ids([rows.clean_text(k) for k in keys])
        )
        return {row["key"] for row in found}

    async def record_fact(self, key: str, value: str = "") -> bool:
        async with self._tx() as tx:
            status = await tx.conn.execute(
                "INSERT INTO facts (key, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
                rows.clean_text(key),
                rows.clean_text(value),
                self._clock(),
            )
            return status.endswith(" 1")

    async def list_events(self, task_id: str) -> list[TaskEvent]:
        found = await self._fetch("SELECT * FROM task_events WHERE task_id = $1 ORDER BY seq", task_id)
        return [rows.event_from_row(row, _decode_time) for row in found]

    async def repo_cost_since(self, repo: str, since: datetime) -> float:
        """Sum of attempt costs of ``repo``'s tasks for attempts that finished (or, still
        running, started) at or after ``since``."""
        found = await self._fetch(
            "SELECT COALESCE(SUM(a.cost_usd), 0) AS cost FROM attempts a JOIN tasks t ON t.id = a.task_id"
            " WHERE t.repo = $1 AND COALESCE(a.finished_at, a.started_at) >= $2",
            repo,
            _encode_time(since),
        )
        return float(found[0]["cost"])

    # -- deliveries ledger -----------------------------------------------------------

    async def record_delivery(self, delivery: Delivery) -> bool:
        return await self._ledger.submit(rows.delivery_params(delivery, _encode_time))

    async def _write_deliveries(self, batch: list[list[Any]]) -> list[bool | StoreError]:
        """Insert one group-commit batch in one statement (first copy of an id wins). If
        the database refuses a row's values (:func:`is_row_error`), the rows are inserted
        again one by one: the refused ones fail alone."""
        ordered = sorted(batch, key=lambda params: params[0])
        columns = [list(column) for column in zip(*ordered, strict=True)]
        try:
            async with self._tx() as tx:
                inserted = await tx.conn.fetch(_DELIVERY_INSERT, *columns)
                if any(row["state"] == DeliveryState.PENDING.value for row in inserted):
                    await tx.notify(DELIVERIES)
        except StoreError as exc:
            if not is_row_error(exc.__cause__):
                raise
            log.warning(
                "postgres-ledger: a batch of %d was refused (%s); inserting its rows one by one", len(batch), exc
            )
            return await self._write_deliveries_one_by_one(batch)
        return rows.first_wins([params[0] for params in batch], {row["id"] for row in inserted})

    async def _write_deliveries_one_by_one(self, batch: list[list[Any]]) -> list[bool | StoreError]:
        """Each row of ``batch`` in a savepoint of its own, in one transaction, in id order
        (as the batch statement locks them); the first copy of an id that goes in wins."""
        results: list[bool | StoreError] = [False] * len(batch)
        settled: set[str] = set()
        async with self._tx() as tx:
            pending = False
            for index in sorted(range(len(batch)), key=lambda i: batch[i][0]):
                params = batch[index]
                if params[0] in settled:
                    continue
                try:
                    async with tx.conn.transaction():
                        inserted = await tx.conn.fetch(_DELIVERY_INSERT, *([value] for value in params))
                except Exception as exc:
                    if not is_row_error(exc):
                        raise
                    results[index] = StoreError(f"postgres: {exc}")
                    continue
                settled.add(params[0])
                if inserted:
                    results[index] = True
                    pending = pending or inserted[0]["state"] == DeliveryState.PENDING.value
            if pending:
                await tx.notify(DELIVERIES)
        return results

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        found = await self._fetch("SELECT * FROM deliveries WHERE id = $1", delivery_id)
        return rows.delivery_from_row(found[0], _decode_time) if found else None

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
        found = await self._fetch(
            rows.dollar_placeholders(
                f"SELECT * FROM deliveries {rows.where_clause(terms)}ORDER BY seq DESC LIMIT ?"
            ),
            *params,
            limit,
        )
        return [rows.delivery_from_row(row, _decode_time) for row in found]

    async def claim_deliveries(self, dispatcher_id: str, *, limit: int = 10) -> list[Delivery]:
        async with self._tx() as tx:
            await tx.conn.execute("SELECT pg_advisory_xact_lock(hashtext($1), 0)", self._lock_name("ledger"))
            claimed = await tx.conn.fetch(
                "UPDATE deliveries SET state = 'processing', claimed_by = $1, claimed_at = $2,"
                " attempts = attempts + 1"
                " WHERE seq IN (SELECT d.seq FROM deliveries d WHERE d.state = 'pending' AND (d.repo = ''"
                "  OR (NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.repo = d.repo AND p.state = 'processing')"
                "      AND d.seq = (SELECT min(q.seq) FROM deliveries q"
                "                   WHERE q.repo = d.repo AND q.state = 'pending')))"
                "  ORDER BY d.seq LIMIT $3 FOR UPDATE SKIP LOCKED)"
                " RETURNING *",
                dispatcher_id,
                self._clock(),
                limit,
            )
        return sorted((rows.delivery_from_row(row, _decode_time) for row in claimed), key=lambda d: d.seq)

    async def finish_delivery(
        self, delivery_id: str, *, state: DeliveryState, outcome: str = "", ignore_reason: str = ""
    ) -> None:
        final = rows.finished_delivery_state(state)
        async with self._tx() as tx:
            repo = await tx.conn.fetchrow(
                "UPDATE deliveries SET state = $1, outcome = $2, ignore_reason = $3, processed_at = $4"
                " WHERE id = $5 RETURNING repo",
                final.value,
                rows.clean_text(outcome),
                rows.clean_text(ignore_reason),
                self._clock(),
                delivery_id,
            )
            if repo is None:
                raise StoreError(f"unknown delivery {delivery_id!r}")
            if repo["repo"]:
                await tx.notify(DELIVERIES)  # the repository's next row may go now

    async def release_stale_deliveries(self, older_than: timedelta) -> int:
        async with self._tx() as tx:
            await tx.conn.execute("SELECT pg_advisory_xact_lock(hashtext($1), 0)", self._lock_name("ledger"))
            released = await tx.conn.fetch(
                "UPDATE deliveries SET state = 'pending', claimed_by = '', claimed_at = NULL"
                " WHERE state = 'processing' AND claimed_at < $1 RETURNING seq",
                self._clock() - older_than,
            )
            if released:
                await tx.notify(DELIVERIES)
        return len(released)

    async def requeue_delivery(self, delivery_id: str) -> bool:
        async with self._tx() as tx:
            await tx.conn.execute("SELECT pg_advisory_xact_lock(hashtext($1), 0)", self._lock_name("ledger"))
            found = await tx.conn.fetch(
                "UPDATE deliveries SET state = 'pending', outcome = '', ignore_reason = '', claimed_by = '',"
                " claimed_at = NULL, processed_at = NULL WHERE id = $1 AND state IN ('done', 'failed')"
                " AND payload_pruned_at IS NULL RETURNING seq",
                delivery_id,
            )
            if found:
                await tx.notify(DELIVERIES)
        return bool(found)

    async def prune_delivery_payloads(self, before: datetime, *, limit: int) -> PruneResult:
        if limit < 1:
            raise StoreError(f"a prune needs a limit of at least 1, not {limit}")
        cutoff = _encode_time(before)
        async with self._tx() as tx:
            pruned = await tx.conn.fetch(_PRUNE_PAYLOADS, cutoff, limit, self._clock())
            more = await tx.conn.fetchval(_MORE_PRUNABLE, cutoff)
        return PruneResult(pruned=len(pruned), more=bool(more))

    async def count_prunable_deliveries(self, before: datetime) -> int:
        found = await self._fetch(_COUNT_PRUNABLE, _encode_time(before))
        return int(found[0][0])

    async def wait_for_deliveries(self, timeout: float) -> bool:
        return await self._wait(DELIVERIES, timeout)

    async def notify_deliveries(self) -> None:
        async with self._tx() as tx:
            await tx.notify(DELIVERIES)

    # -- workers -----------------------------------------------------------------------

    async def report_worker(self, worker_id: str, stats: Mapping[str, Any]) -> None:
        now = self._clock()
        await self._fetch(
            "INSERT INTO workers (worker_id, started_at, seen_at, stats) VALUES ($1, $2, $2, $3::jsonb)"
            " ON CONFLICT (worker_id) DO UPDATE SET seen_at = excluded.seen_at, stats = excluded.stats",
            rows.clean_text(worker_id),
            _encode_time(now),
            rows.worker_stats_json(stats),
        )

    async def list_workers(self) -> list[WorkerRecord]:
        found = await self._fetch("SELECT * FROM workers ORDER BY seen_at DESC, worker_id")
        return [rows.worker_from_row(row, _decode_time) for row in found]

    async def forget_workers(self, seen_before: datetime) -> int:
        dropped = await self._fetch(
            "DELETE FROM workers WHERE seen_at < $1 RETURNING worker_id", _encode_time(seen_before)
        )
        return len(dropped)

    # -- installations -----------------------------------------------------------------

    async def upsert_installation(self, installation: Installation) -> None:
        """Insert or update; the stored repository list becomes ``installation.repos``."""
        repos = rows.installation_repos(installation.repos)
        async with self._tx() as tx:
            await tx.conn.execute(
                "INSERT INTO installations (id, account, suspended, updated_at) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (id) DO UPDATE SET account = excluded.account,"
                " suspended = excluded.suspended, updated_at = excluded.updated_at",
                installation.id,
                rows.clean_text(installation.account),
                bool(installation.suspended),
                self._clock(),
            )
            await tx.conn.execute(
                "DELETE FROM installation_repos WHERE installation_id = $1", installation.id
            )
            await tx.conn.execute(
                "INSERT INTO installation_repos (installation_id, repo) SELECT $1, unnest($2::text[])",
                installation.id,
                repos,
            )

    async def remove_installation(self, installation_id: int) -> None:
        async with self._tx() as tx:
            await tx.conn.execute(
                "DELETE FROM installation_repos WHERE installation_id = $1", installation_id
            )
            await tx.conn.execute("DELETE FROM installations WHERE id = $1", installation_id)

    async def set_installation_repos(
        self, installation_id: int, *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> None:
        """Add then remove repositories (a name in both ends up removed). An unknown
        installation is recorded with an empty account."""
        added, removed = rows.installation_repos(add), rows.installation_repos(remove)
        async with self._tx() as tx:
            await tx.conn.execute(
                "INSERT INTO installations (id, account, suspended, updated_at) VALUES ($1, '', false, $2)"
                " ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at",
                installation_id,
                self._clock(),
            )
            await tx.conn.execute(
                "INSERT INTO installation_repos (installation_id, repo) SELECT $1, unnest($2::text[])"
                " ON CONFLICT DO NOTHING",
                installation_id,
                added,
            )
            await tx.conn.execute(
                "DELETE FROM installation_repos WHERE installation_id = $1 AND repo = ANY($2::text[])",
                installation_id,
                removed,
            )

    async def get_installation(self, installation_id: int) -> Installation | None:
        found = await self._fetch("SELECT * FROM installations WHERE id = $1", installation_id)
        if not found:
            return None
        repos = await self._fetch(
            "SELECT repo FROM installation_repos WHERE installation_id = $1", installation_id
        )
        return rows.installation_from_row(found[0], [row["repo"] for row in repos], _decode_time)

    async def list_installations(self) -> list[Installation]:
        found = await self._fetch("SELECT * FROM installations ORDER BY id")
        repos: dict[int, list[str]] = {}
        for row in await self._fetch("SELECT installation_id, repo FROM installation_repos"):
            repos.setdefault(row["installation_id"], []).append(row["repo"])
        return [rows.installation_from_row(row, repos.get(row["id"], []), _decode_time) for row in found]

    # -- wake-ups --------------------------------------------------------------------

    async def _listen(self) -> None:
        """Open the dedicated LISTEN connection (both channels)."""
        try:
            conn = await asyncpg.connect(self._dsn, server_settings=self._server_settings)
        except (*_ERRORS, TimeoutError) as exc:
            raise StoreError(f"cannot open the LISTEN connection to {redact_url(self._dsn)}: {exc}") from exc
        try:
            for channel in self._channels.values():
                await conn.add_listener(channel, self._on_notification)
        except _ERRORS as exc:
            await conn.close()
            raise StoreError(f"LISTEN failed: {exc}") from exc
        conn.add_termination_listener(self._on_listener_closed)
        self._listener = conn

    def _on_notification(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        kind = self._channel_kinds.get(channel)
        if kind is not None:
            self._wakeups[kind].fire()

    def _on_listener_closed(self, conn: Any) -> None:
        if conn is self._listener:
            self._listener = None
            for wakeup in self._wakeups.values():  # notifications may have been missed
                wakeup.fire()

    async def _wait(self, kind: str, timeout: float) -> bool:
        self._check_open()
        if self._listener is None:
            async with self._listener_lock:
                if self._listener is None and not self._closed:
                    try:
                        await self._listen()
                    except StoreError as exc:
                        log.warning("no LISTEN connection, waiting on timeouts only: %s", exc)
        return await self._wakeups[kind].wait(timeout)
