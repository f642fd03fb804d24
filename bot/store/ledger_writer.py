"""The SQLite ledger's writer process: webhook deliveries committed outside the web process.

The writer runs the ledger engine of :mod:`bot.store.sqlite_ledger` (the same connection,
commits, WAL syncs and checkpointer as the ledger thread); this module is only the process,
its protocol and the web process's side of it, and imports nothing of the store itself.

``patchwright serve`` on SQLite records deliveries through a child process that owns the
ledger's connection (``SQLiteStore.open(..., ledger_writer="process")``). The web process
only queues each delivery's row and awaits its answer; the writer commits, syncs the WAL
and answers, while the web process's event loop goes on parsing the next requests. In the
ledger *thread* the same work needs the web process's GIL between its C calls, so it either
waits for the event loop to go idle or slows it down; a process of its own has its own.

Protocol (a socketpair; each frame a 4-byte little-endian length and a msgpack value):

- web process -> writer: a list of ``[ticket, params]`` (:func:`bot.store.rows.delivery_params`),
  tickets consecutive. A list is sent once :data:`FLUSH_ROWS` rows wait or when the event
  loop has run everything that was ready (``call_soon``), so the writer starts on the first
  part of a burst while the rest is still being parsed.
- writer -> web process: ``["ready"]`` once the ledger is open (or ``["failed", message]``),
  then per committed batch
  ``["batch", first_ticket, count, recorded, bumps, synced, error, refused]``: the batch is
  the ``count`` tickets from ``first_ticket`` on (a batch never spans a gap in the tickets),
  ``recorded`` says per item whether it was the copy recorded (``None`` when ``error`` says
  why nothing was), ``refused`` lists ``[index, error]`` for each item whose row the
  database refused while the others went in.

A row msgpack cannot carry (an integer beyond 64 bits) fails its own sender in the web
process and is never sent; the rest of its frame is.

A batch is answered only after its commit and the sync of the WAL (as in the ledger
thread: commit at ``NORMAL``, then ``fdatasync`` of the WAL at ``FULL``/``EXTRA``). If the
writer exits, every delivery waiting for an answer gets a :class:`StoreError` (its sender
gets a 503 and may redeliver; a row that was committed stays, exactly once) and the next
delivery starts a new writer. The writer ignores SIGINT and SIGTERM: it ends when the web
process closes the socket (or dies), after committing what it was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import logging
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from bot.store.base import StoreError
from bot.store.sqlite_ledger import (
    CheckpointPolicy,
    WalFile,
    connect_ledger,
    estimate_wal_bytes,
    insert_deliveries,
)

log = logging.getLogger(__name__)

#: Rows that make the web process send what it has queued without waiting for the event loop.
FLUSH_ROWS = 16
#: Most rows the writer commits in one transaction.
MAX_BATCH_ROWS = 256
#: After a writer failed to start, further deliveries fail at once for this long.
RESTART_BACKOFF_S = 1.0
WRITER_EXITED = "the ledger writer process exited"
UNSENDABLE_ROW = "the row cannot be sent to the ledger writer"
_RECV_BYTES = 1 << 20
_LENGTH = struct.Struct("<I")
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder()
#: How the writer process is started (``python -c``, with the directory that holds ``bot``
#: as its path: ``-m`` would import the package's ``__init__`` before this module).
_WRITER_MAIN = "import sys; from bot.store.ledger_writer import main; sys.exit(main())"
#: The directory that holds the ``bot`` package.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def encode_frame(value: Any) -> bytes:
    data = _ENCODER.encode(value)
    return _LENGTH.pack(len(data)) + data


class FrameReader:
    """Splits a byte stream into the values of its frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """The values of the frames ``data`` completes (a partial frame waits for the rest)."""
        buffer = self._buffer
        buffer += data
        values = []
        start, end = 0, len(buffer)
        while end - start >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer, start)
            if end - start - _LENGTH.size < size:
                break
            body = start + _LENGTH.size
            with memoryview(buffer) as view:
                values.append(_DECODER.decode(view[body : body + size]))
            start = body + size
        if start:
            del buffer[:start]
        return values


# -- the writer process ---------------------------------------------------------------------


def run_writer(
    sock: socket.socket, path: str, *, synchronous: str, busy_timeout: float, checkpoint: CheckpointPolicy
) -> None:
    """The writer: commit every batch the socket brings until it is closed."""
    try:
        conn, checkpointer, synced = connect_ledger(
            path, busy_timeout=busy_timeout, synchronous=synchronous, checkpoint=checkpoint
        )
    except Exception as exc:  # noqa: BLE001 - the web process reports it
        sock.sendall(encode_frame(["failed", f"{type(exc).__name__}: {exc}"]))
        return
    wal = WalFile(path + "-wal") if synced else None
    checkpointer.start()
    queue: collections.deque[tuple[int, Sequence[Any]]] = collections.deque()
    frames = FrameReader()
    try:
        sock.sendall(encode_frame(["ready"]))
        open_ = True
        while open_ or queue:
            if open_:
                open_ = _receive(sock, frames, queue, wait=not queue)
            if not queue:
                continue
            batch = _next_batch(queue)
            params = [row for _, row in batch]
            error = None
            try:
                with checkpointer.gate:
                    outcome = insert_deliveries(conn, params)
            except Exception as exc:  # noqa: BLE001 - every sender of the batch gets it
                error = f"{type(exc).__name__}: {exc}"
            sync_error = wal.sync() if wal is not None and error is None else None
            if sync_error is not None:
                error = f"the ledger's WAL could not be synced to disk: {sync_error}"
            if error is None:
                reply = [
                    "batch", batch[0][0], len(batch), outcome.recorded, outcome.bumps, wal is not None, None,
                    outcome.errors,
                ]  # fmt: skip
                checkpointer.wrote(estimate_wal_bytes(outcome.payload_bytes, len(batch), checkpointer.page_size))
            else:
                reply = ["batch", batch[0][0], len(batch), None, 0, False, error, ()]
            try:
                sock.sendall(encode_frame(reply))
            except OSError:  # the web process is gone; what was committed stays
                open_ = False
    finally:
        checkpointer.stop()
        conn.close()
        if wal is not None:
            wal.close()


def _next_batch(queue: collections.deque[tuple[int, Sequence[Any]]]) -> list[tuple[int, Sequence[Any]]]:
    """The oldest queued rows with consecutive tickets (a reply names its tickets by the
    first and the count), at most :data:`MAX_BATCH_ROWS`."""
    batch = [queue.popleft()]
    while queue and len(batch) < MAX_BATCH_ROWS and queue[0][0] == batch[-1][0] + 1:
        batch.append(queue.popleft())
    return batch


def _receive(
    sock: socket.socket, frames: FrameReader, queue: collections.deque[tuple[int, Sequence[Any]]], *, wait: bool
) -> bool:
    """Queue the rows that have arrived (waiting for some if ``wait``); False at end of stream."""
    flags = 0 if wait else socket.MSG_DONTWAIT
    while True:
        try:
            data = sock.recv(_RECV_BYTES, flags)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        for items in frames.feed(data):
            queue.extend((ticket, params) for ticket, params in items)
        flags = socket.MSG_DONTWAIT  # then take whatever else is already there


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The SQLite ledger's writer process (started by the store).")
    parser.add_argument("--fd", type=int, required=True, help="the socket to the web process")
    parser.add_argument("--path", required=True)
    parser.add_argument("--synchronous", required=True)
    parser.add_argument("--busy-timeout", type=float, required=True)
    parser.add_argument("--checkpoint", required=True, help="the CheckpointPolicy as JSON")
    args = parser.parse_args(argv)
    # Ends when the web process closes the socket, after committing what it was sent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with socket.socket(fileno=args.fd) as sock:
        run_writer(
            sock,
            args.path,
            synchronous=args.synchronous,
            busy_timeout=args.busy_timeout,
            checkpoint=CheckpointPolicy(**json.loads(args.checkpoint)),
        )
    return 0


# -- the web process's side -----------------------------------------------------------------


class _WriterProtocol(asyncio.Protocol):
    def __init__(self, owner: LedgerWriterProcess) -> None:
        self._owner = owner
        self._frames = FrameReader()

    def data_received(self, data: bytes) -> None:
        for message in self._frames.feed(data):
            self._owner._on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._on_lost()


#: What the writer's interpreter may need from the server's environment (nothing else, so no
#: secret reaches it).
_INHERITED_ENV = ("PATH", "LD_LIBRARY_PATH", "PYTHONHOME", "LANG", "LC_ALL", "TMPDIR")


def writer_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The writer process's environment: the :data:`_INHERITED_ENV` entries of ``environ``
    (the server's environment, handed in by whoever opens the store) and ``PYTHONPATH``."""
    env = {name: environ[name] for name in _INHERITED_ENV if name in environ}
    env["PYTHONPATH"] = _PACKAGE_ROOT
    return env


class LedgerWriterProcess:
    """The web process's side of the writer: queues rows, starts (and restarts) the process.

    ``on_committed(bumps)`` runs on the event loop after a batch recorded ``bumps`` pending
    rows. ``environ`` is the server's environment, of which the process gets only what
    :func:`writer_environment` keeps (nothing from it when None). Use from one event loop.
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: str,
        busy_timeout: float,
        checkpoint: CheckpointPolicy,
        on_committed: Callable[[int], None],
        environ: Mapping[str, str] | None = None,
        flush_rows: int = FLUSH_ROWS,
        start_timeout: float = 30.0,
        close_timeout: float = 30.0,
    ) -> None:
        self._args = [
            "--path", os.path.abspath(path),  # the same file should the server change directory
            "--synchronous", synchronous,
            "--busy-timeout", repr(float(busy_timeout)),
            "--checkpoint", json.dumps(dataclasses.asdict(checkpoint)),
        ]  # fmt: skip
        self._environ: Mapping[str, str] = environ if environ is not None else {}
        self._on_committed = on_committed
        self._flush_rows = flush_rows
        self._start_timeout = start_timeout
        self._close_timeout = close_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._transport: asyncio.Transport | None = None
        self._ready: asyncio.Future[None] | None = None
        self._start_lock = asyncio.Lock()
        self._start_failed: tuple[float, str] | None = None
        self._next_ticket = 0
        self._pending: dict[int, asyncio.Future[bool]] = {}
        self._buffer: list[list[Any]] = []
        self._flush_scheduled = False
        self._closing = False
        self._stats: collections.Counter[str] = collections.Counter()

    @property
    def pid(self) -> int | None:
        """The running writer's process id (None when none runs)."""
        return self._proc.pid if self._proc is not None and self._transport is not None else None

    def ledger_stats(self) -> dict[str, int]:
        """Committed batches, the deliveries they answered, the WAL syncs made for them and
        the writer processes started."""
        return {key: self._stats[key] for key in ("batches", "rows", "wal_syncs", "starts")}

    async def start(self) -> None:
        """Start the writer and wait until its ledger is open (:class:`StoreError` if not)."""
        async with self._start_lock:
            if self._transport is None:
                await self._spawn()

    async def submit(self, params: Sequence[Any]) -> bool:
        """Record one delivery row: whether it was recorded (False for a known id)."""
        if self._closing:
            raise StoreError("the store is closed")
        if self._transport is None:
            await self._restart()
        loop = asyncio.get_running_loop()
        ticket = self._next_ticket
        self._next_ticket += 1
        future: asyncio.Future[bool] = loop.create_future()
        self._pending[ticket] = future
        self._buffer.append([ticket, params])
        if len(self._buffer) >= self._flush_rows:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    async def close(self) -> None:
        """Send what is queued, wait for its answers, then end the writer."""
        if self._closing:
            return
        self._closing = True
        async with self._start_lock:  # a (re)start under way ends first: no writer outlives this
            self._flush()
            if self._pending:
                await asyncio.wait(list(self._pending.values()), timeout=self._close_timeout)
            if self._transport is not None:
                self._transport.close()
            await self._reap()

    # -- internals --------------------------------------------------------------------

    async def _restart(self) -> None:
        async with self._start_lock:
            if self._transport is not None:
                return
            if self._closing:
                raise StoreError("the store is closed")
            if self._start_failed is not None and time.monotonic() - self._start_failed[0] < RESTART_BACKOFF_S:
                raise StoreError(self._start_failed[1])
            if self._proc is not None:
                code = self._proc.returncode
                log.warning("%s (exit status %s); starting a new one", WRITER_EXITED, code)
            await self._spawn()

    async def _spawn(self) -> None:
        await self._reap()
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", _WRITER_MAIN, "--fd", str(theirs.fileno()), *self._args,
                    pass_fds=(theirs.fileno(),),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    env=writer_environment(self._environ),
                )  # fmt: skip
            finally:
                theirs.close()
            self._ready = loop.create_future()
            transport, _ = await loop.create_unix_connection(lambda: _WriterProtocol(self), sock=ours)
        except BaseException as exc:
            ours.close()
            await self._reap()
            if isinstance(exc, OSError):
                raise self._failed_start(f"cannot start the ledger writer process: {exc}") from exc
            raise
        self._transport = transport  # type: ignore[assignment]
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self._start_timeout)
        except (TimeoutError, StoreError) as exc:
            transport.close()
            self._transport = None
            await self._reap()
            reason = str(exc) if isinstance(exc, StoreError) else f"not ready after {self._start_timeout:g} s"
            raise self._failed_start(f"the ledger writer process did not start: {reason}") from None
        self._start_failed = None
        self._stats["starts"] += 1

    def _failed_start(self, message: str) -> StoreError:
        self._start_failed = (time.monotonic(), message)
        return StoreError(message)

    async def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            await asyncio.wait_for(proc.wait(), self._close_timeout)
        except TimeoutError:
            log.error("the ledger writer process did not end; killing it")
            proc.kill()
            await proc.wait()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._buffer:
            return
        items, self._buffer = self._buffer, []
        if self._transport is None or self._transport.is_closing():
            self._fail([ticket for ticket, _ in items], WRITER_EXITED)
            return
        try:
            frame = encode_frame(items)
        except Exception:  # noqa: BLE001 - a row msgpack cannot carry: it alone fails
            frame = self._frame_of_sendable(items)
        if frame is not None:
            self._transport.write(frame)

    def _frame_of_sendable(self, items: list[list[Any]]) -> bytes | None:
        """The frame of the items that can be encoded; each other one fails its sender."""
        sendable = []
        for item in items:
            try:
                _ENCODER.encode(item)
            except Exception as exc:  # noqa: BLE001 - e.g. OverflowError for an int over 64 bits
                self._fail([item[0]], f"{UNSENDABLE_ROW}: {exc}")
            else:
                sendable.append(item)
        return encode_frame(sendable) if sendable else None

    def _fail(self, tickets: Sequence[int], message: str) -> None:
        for ticket in tickets:
            future = self._pending.pop(ticket, None)
            if future is not None and not future.done():
                future.set_exception(StoreError(message))

    def _on_message(self, message: list[Any]) -> None:
        kind = message[0]
        if kind == "batch":
            _, first, count, recorded, bumps, synced, error, refused = message
            tickets = range(first, first + count)
            if error is not None:
                self._fail(tickets, error)
                return
            self._stats["batches"] += 1
            self._stats["rows"] += count
            self._stats["wal_syncs"] += bool(synced)
            if bumps:
                self._on_committed(bumps)
            for index, reason in refused:  # rows the database refused: they alone fail
                self._fail([first + index], reason)
            pending = self._pending
            for ticket, was_recorded in zip(tickets, recorded, strict=True):
                future = pending.pop(ticket, None)
                if future is not None and not future.done():
                    future.set_result(bool(was_recorded))
        elif kind == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        elif kind == "failed":
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(StoreError(str(message[1])))
        else:
            log.error("ledger writer: unknown message %r", kind)

    def _on_lost(self) -> None:
        self._transport = None
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(StoreError(WRITER_EXITED))
        self._buffer.clear()
        self._fail(list(self._pending), WRITER_EXITED)

