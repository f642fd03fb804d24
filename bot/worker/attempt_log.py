"""The log of one attempt (SPEC §6.3): the agent's output and the worker's own lines, redacted,
stored in batches — and capped, so an agent that prints without end cannot fill the database.

What is stored of an attempt:

- every line of the worker's own (:meth:`AttemptLog.note`, prefixed :data:`LOG_PREFIX`): these
  are never dropped;
- the first ``head_lines`` lines the agent printed, stored as they come (batched: every
  ``batch_lines`` lines or ``batch_seconds`` seconds);
- the last ``tail_lines`` lines it printed, held in a bounded deque and stored when the next
  worker line comes (the worker notes the agent's end as soon as it ends) or when the log is
  closed, after one line saying how many lines and bytes were dropped in between
  (:data:`DROPPED_LINES`).

So a live viewer sees the head as it is printed, then nothing more of a flood until the agent
ends; then the dropped-count line and the tail, in order. Were a worker line noted during a
flood, the lines held back so far are stored before it, and dropping starts again after it.

With ``full_log`` (``PATCHWRIGHT_FULL_AGENT_LOGS=true``: :func:`full_log_path`) every line —
dropped or not, redacted the same way — is also appended to a file in the data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections import deque
from pathlib import Path
from typing import IO, Any

from bot.store.base import Store, StoreError
from bot.worker.guard import redact

log = logging.getLogger(__name__)

LOG_PREFIX = "[patchwright] "
DEFAULT_HEAD_LINES = 2000
DEFAULT_TAIL_LINES = 2000
#: The line stored between the head and the tail of a long run.
DROPPED_LINES = (
    LOG_PREFIX + "… {lines:,} lines ({size:,} bytes) of agent output dropped here: an attempt's log "
    "keeps the first {head:,} and the last {tail:,} lines the agent printed …"
)
#: The longest line stored (characters); a longer one keeps its start and says how much was cut.
MAX_STORED_LINE_CHARS = 8192
#: What may follow a cut line's start before it is redacted (a secret straddling the cut is
#: still whole when redaction runs).
_REDACTION_MARGIN = 4096
CUT_LINE = " … [{more:,} more characters]"
FULL_LOGS_DIR = "logs"
_FILE_BATCH_LINES = 1000  # lines written to the full log file at a time
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def full_log_path(settings: Any, task_id: str, attempt: int) -> Path | None:
    """``<data_dir>/logs/<task>-<attempt>.log`` when the operator asked for full agent logs
    (``PATCHWRIGHT_FULL_AGENT_LOGS``), else None."""
    if not getattr(settings, "full_agent_logs", False):
        return None
    name = _UNSAFE_FILE_CHARS.sub("_", f"{task_id}-{attempt}")
    return Path(settings.data_dir) / FULL_LOGS_DIR / f"{name}.log"


class AttemptLog:
    """Log lines of one attempt, redacted and stored in batches (every ``batch_lines`` lines
    or ``batch_seconds`` seconds, whichever comes first), the agent's output capped to its
    first ``head_lines`` and last ``tail_lines`` lines (see the module's documentation).

    ``secrets`` (a list the runner extends) are redacted from every line, as are token-like
    strings (:func:`bot.worker.guard.redact`)."""

    def __init__(
        self,
        store: Store,
        task_id: str,
        attempt: int,
        *,
        batch_lines: int,
        batch_seconds: float,
        head_lines: int = DEFAULT_HEAD_LINES,
        tail_lines: int = DEFAULT_TAIL_LINES,
        full_log: Path | None = None,
    ) -> None:
        if head_lines < 0 or tail_lines < 0:
            raise ValueError("head_lines and tail_lines must not be negative")
        self._store = store
        self._task_id = task_id
        self._attempt = attempt
        self._batch_lines = max(1, batch_lines)
        self._batch_seconds = batch_seconds
        self._head_lines = head_lines
        self._tail_lines = tail_lines
        self._buffer: list[str] = []
        self._lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self.secrets: list[str] = []
        # the cap
        self._head_left = head_lines
        self._tail: deque[str] = deque()  # agent lines held back, not yet redacted
        self._dropped_lines = 0
        self._dropped_bytes = 0
        self.agent_lines = 0  # agent lines seen
        self.dropped_lines = 0  # of them, not stored (in total)
        self.dropped_bytes = 0
        # the full log file
        self._full_path = full_log
        self._full: IO[str] | None = None
        self._file_pending: list[str] = []
        self._file_lock = asyncio.Lock()

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick(), name=f"log-flush {self._task_id}")

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    # -- lines in ---------------------------------------------------------------------------

    async def add(self, line: str) -> None:
        """A line the agent printed: stored while in the head, else held in the tail."""
        self.agent_lines += 1
        if self._full_path is not None:
            await self._to_file(self.redact(line))
        if len(line) > MAX_STORED_LINE_CHARS:
            # Kept cut (the tail holds thousands of lines), redacted before the cut so that a
            # secret across it is not left half visible.
            kept = self.redact(line[: MAX_STORED_LINE_CHARS + _REDACTION_MARGIN])[:MAX_STORED_LINE_CHARS]
            line = kept + CUT_LINE.format(more=len(line) - len(kept))
        if self._head_left > 0:
            self._head_left -= 1
            await self._store_line(self.redact(line))
            return
        self._tail.append(line)
        if len(self._tail) > self._tail_lines:
            self._drop(self._tail.popleft())

    async def note(self, text: str) -> None:
        """A line of the worker's own, marked as such; always stored, in order: the agent
        lines held back so far are stored before it."""
        await self._release_tail()
        for line in text.splitlines() or [""]:
            kept = self.redact(LOG_PREFIX + line)
            if self._full_path is not None:
                await self._to_file(kept)
            await self._store_line(kept)

    def _drop(self, line: str) -> None:
        size = len(line.encode("utf-8", "replace")) + 1  # the newline it came with
        self._dropped_lines += 1
        self._dropped_bytes += size
        self.dropped_lines += 1
        self.dropped_bytes += size

    async def _release_tail(self) -> None:
        """Store the dropped-count line (when lines were dropped) and the held-back tail."""
        if self._dropped_lines:
            await self._store_line(
                DROPPED_LINES.format(
                    lines=self._dropped_lines,
                    size=self._dropped_bytes,
                    head=self._head_lines,
                    tail=self._tail_lines,
                )
            )
            self._dropped_lines = self._dropped_bytes = 0
        while self._tail:
            await self._store_line(self.redact(self._tail.popleft()))

    # -- storing ----------------------------------------------------------------------------

    async def _store_line(self, line: str) -> None:
        self._buffer.append(line)
        if len(self._buffer) >= self._batch_lines:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if not self._buffer:
                return
            batch, self._buffer = self._buffer, []
            try:
                await self._store.append_logs(self._task_id, self._attempt, batch)
            except StoreError as exc:
                log.warning("attempt log lines lost: %s", exc)

    async def _tick(self) -> None:
        # Ended by `_closing`, never cancelled: a batch it took from the buffer is stored.
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self._batch_seconds)
            await self.flush()
            await self._flush_file()

    async def close(self) -> None:
        """Stop the timer, store the tail (after the dropped-count line) and what is buffered."""
        if self._ticker is not None:
            self._closing.set()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        await self._release_tail()
        await self.flush()
        await self._flush_file(close=True)

    # -- the full log file ------------------------------------------------------------------

    async def _to_file(self, line: str) -> None:
        self._file_pending.append(line)
        if len(self._file_pending) >= _FILE_BATCH_LINES:
            await self._flush_file()

    async def _flush_file(self, *, close: bool = False) -> None:
        if self._full_path is None:
            return
        async with self._file_lock:
            batch, self._file_pending = self._file_pending, []
            try:
                await asyncio.to_thread(self._write_file, batch, close)
            except OSError as exc:
                log.warning("full agent log %s: %s; no longer written", self._full_path.name, exc.strerror)
                self._full_path = None
                self._full = None

    def _write_file(self, lines: list[str], close: bool) -> None:
        if self._full is None and (lines or close):
            assert self._full_path is not None
            self._full_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self._full_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._full = os.fdopen(fd, "a", encoding="utf-8", errors="replace")
        if self._full is None:
            return
        if lines:
            self._full.write("\n".join(lines) + "\n")
        if close:
            self._full.close()
            self._full = None
        else:
            self._full.flush()


__all__ = [
    "DEFAULT_HEAD_LINES",
    "DEFAULT_TAIL_LINES",
    "DROPPED_LINES",
    "LOG_PREFIX",
    "AttemptLog",
    "full_log_path",
]
