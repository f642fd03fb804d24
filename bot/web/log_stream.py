"""An attempt's log over HTTP beside the JSON API: the raw text and live follow.

``GET /api/tasks/{id}/logs.txt?attempt=N`` answers the stored lines as ``text/plain``, as a
download (``Content-Disposition: attachment``; ``inline=1`` shows it in the browser); without
``attempt``, every attempt's lines in order.

``GET /api/tasks/{id}/logs/stream?attempt=N&after=SEQ`` is a server-sent event stream: one
``event: log`` per batch stored after ``SEQ`` (``id:`` the batch's seq, so a reconnecting
browser's ``Last-Event-ID`` resumes after it), its data ``{"attempt", "seq", "html"}`` with the
batch's entries rendered by :func:`bot.web.pages.logs.render_entries` (escaped there). The
store has no change feed: the stream reads new batches every ``poll_interval_s``. Once the
attempt no longer runs and no batch came for :data:`END_GRACE_S` (the worker stores its last
lines just after the task moves on), it sends ``event: end`` and closes. Keep-alive comments,
lifetime and reconnect delay are the event stream's (:class:`EventStreamOptions`); every
open stream ends when the app shuts down (:meth:`LogStreams.close_all`).
"""

from __future__ import annotations

import asyncio
import logging
import re

from aiohttp import web

from bot.store.base import Store
from bot.tasks.model import Status, Task
from bot.web.api import ApiError, parse_positive_int, task_in_path
from bot.web.events import (
    EventStreamOptions,
    peer_gone,
    sse_comment,
    sse_event,
    sse_response,
    sse_retry,
)
from bot.web.pages.html import SECURITY_HEADERS
from bot.web.pages.logs import render_entries

log = logging.getLogger(__name__)

#: How long a stream waits for late batches once its attempt stopped running (seconds).
END_GRACE_S = 5.0
BATCHES_PER_READ = 100
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def raw_log_filename(task_id: str, attempt: int | None) -> str:
    """The download's file name: ``<task>-attempt-<n>.log`` (or ``<task>.log``), safe characters only."""
    name = _UNSAFE_FILE_CHARS.sub("_", task_id)[:120] or "task"
    return f"{name}-attempt-{attempt}.log" if attempt is not None else f"{name}.log"


def parse_after(query_value: str | None, last_event_id: str | None) -> int:
    """Where a stream starts: after the larger of ``after`` and the ``Last-Event-ID`` a
    reconnecting browser sends (0: from the attempt's first batch)."""
    after = 0 if query_value in (None, "", "0") else parse_positive_int("after", query_value) or 0
    if last_event_id and last_event_id.isascii() and last_event_id.isdigit() and len(last_event_id) <= 18:
        after = max(after, int(last_event_id))
    return after


def attempt_over(task: Task | None, attempt: int) -> bool:
    """Whether ``attempt`` of ``task`` stopped running (or the task is gone)."""
    return task is None or task.status is not Status.RUNNING or task.attempt != attempt


class LogStreams:
    """The raw log and live follow handlers over one store; ends open streams on shutdown."""

    def __init__(self, store: Store, options: EventStreamOptions) -> None:
        self.store = store
        self.options = options
        self._closing = asyncio.Event()

    async def close_all(self) -> None:
        """End every open stream (on app shutdown)."""
        self._closing.set()

    async def _task(self, request: web.Request) -> Task:
        return await task_in_path(self.store, request)

    async def raw(self, request: web.Request) -> web.Response:
        attempt = parse_positive_int("attempt", request.query.get("attempt"))
        task = await self._task(request)
        lines = await self.store.read_logs(task.id, attempt)
        disposition = "inline" if request.query.get("inline") == "1" else "attachment"
        return web.Response(
            text="".join(line + "\n" for _, line in lines),
            content_type="text/plain",
            charset="utf-8",
            headers={
                **SECURITY_HEADERS,
                "Content-Disposition": f'{disposition}; filename="{raw_log_filename(task.id, attempt)}"',
            },
        )

    async def stream(self, request: web.Request) -> web.StreamResponse:
        requested = parse_positive_int("attempt", request.query.get("attempt"))
        after = parse_after(request.query.get("after"), request.headers.get("Last-Event-ID"))
        task = await self._task(request)
        attempt = requested or max(task.attempt, 1)
        if self._closing.is_set():
            raise ApiError(503, "The server is shutting down; reconnect shortly.")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.lifetime_s
        response = sse_response()
        try:
            await response.prepare(request)
            await response.write(sse_retry(self.options.retry_ms) + sse_comment("connected"))
            quiet_since = loop.time()
            last_write = loop.time()
            while not self._closing.is_set() and loop.time() < deadline and not peer_gone(request):
                batches = await self.store.read_log_batches(task.id, attempt, after_seq=after, limit=BATCHES_PER_READ)
                for batch in batches:
                    data = {"attempt": attempt, "seq": batch.seq,
                            "html": render_entries([batch], agent=task.agent)}
                    await response.write(f"id: {batch.seq}\n".encode() + sse_event("log", data))
                    after = batch.seq
                now = loop.time()
                if batches:
                    quiet_since = last_write = now
                    if len(batches) == BATCHES_PER_READ:
                        continue
                elif now - quiet_since >= END_GRACE_S and attempt_over(await self.store.get_task(task.id), attempt):
                    await response.write(sse_event("end", {"attempt": attempt, "seq": after}))
                    break
                if now - last_write >= self.options.keepalive_s:
                    await response.write(sse_comment("keep-alive"))
                    last_write = now
                try:
                    await asyncio.wait_for(self._closing.wait(), self.options.poll_interval_s)
                except TimeoutError:
                    pass
        except ConnectionResetError:
            pass  # the browser went away
        except Exception as exc:  # noqa: BLE001 - the store failed mid-stream: end it, the browser reconnects
            log.warning("log stream of %s: %s; ending the stream", task.id, type(exc).__name__)
        return response
