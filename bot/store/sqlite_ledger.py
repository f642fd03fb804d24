"""The SQLite ledger engine: group commit of webhook deliveries on a connection of their own.

What :class:`~bot.store.sqlite.SQLiteStore` (its ledger thread) and the ledger writer process
(:mod:`bot.store.ledger_writer`) share; it imports neither of them.

- :func:`connect_ledger` opens the ledger's connection and its :class:`WalCheckpointer`;
  :func:`insert_deliveries` commits one batch of delivery rows as one multi-row ``INSERT``
  (a batch refused because of one row's values is inserted again row by row, so that row
  alone fails: :func:`is_row_error`).
- In the ledger thread, :class:`LedgerBatcher` queues ``record_delivery`` calls and hands
  sessions of batches to the :class:`LedgerConnection`'s thread (:func:`drain_queue`).
- Durability off the commit path: at ``FULL``/``EXTRA`` the ledger commits at ``NORMAL`` and
  the WAL is synced (``fdatasync``) before any answer (:class:`WalSyncer` in the ledger
  thread, :class:`WalFile` directly in the writer process).
- WAL checkpoints run on a checkpointer thread and connection of their own
  (:class:`CheckpointPolicy`, :func:`checkpoint_action`), which also keeps the WAL bounded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

from bot.store import rows
from bot.store.base import DeliveryState, StoreError
from bot.store.payload_codec import encode_payload

log = logging.getLogger(__name__)

_DELIVERY_ROW = "(" + ", ".join("?" for _ in rows.DELIVERY_COLUMNS) + ")"
_DELIVERY_INSERT = f"INSERT INTO deliveries ({', '.join(rows.DELIVERY_COLUMNS)}) VALUES "
_DELIVERY_STATE = rows.DELIVERY_COLUMNS.index("state")
_DELIVERY_PAYLOAD = rows.DELIVERY_COLUMNS.index("payload")

LedgerItem = tuple[Sequence[Any], "asyncio.Future[bool]"]


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
