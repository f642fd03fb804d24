"""Server-sent events: ``GET /api/events`` streams ``event: task`` whenever a task changes.

The store has no change feed, so one poller per process (:class:`TaskFeed`) reads the task
list every ``interval`` seconds — only while someone is subscribed — and compares each
task's ``version`` (bumped by the store on every write) with the previous read. A changed
or new task goes to every subscriber as its JSON. Streams send a keep-alive comment every
15 s and end after ``lifetime_s`` (the browser reconnects by itself after ``retry_ms``, and
the reconnect checks the credentials again). A subscriber that falls too far behind is
disconnected; on reconnect the dashboard reloads what it shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bot.store.base import Store
from bot.tasks.model import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EventStreamOptions:
    poll_interval_s: float = 0.5  # how often the poller reads the task list while subscribed
    poll_limit: int = 1000  # newest tasks compared on each poll
    keepalive_s: float = 15.0  # a comment line this often keeps proxies from closing the stream
    lifetime_s: float = 300.0  # a stream ends after this long; the browser reconnects
    retry_ms: int = 3000  # the reconnect delay the browser is told
    queue_size: int = 256  # task changes a slow subscriber may be behind before it is dropped


# -- wire format (pure) -----------------------------------------------------------------


def sse_event(event: str, data: Any) -> bytes:
    """One SSE message: ``event: <name>`` and the data as one line of JSON."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event}\ndata: {text}\n\n".encode()


def sse_comment(text: str) -> bytes:
    """A comment line (ignored by clients; keeps the connection alive)."""
    return f": {' '.join(text.split())}\n\n".encode()


def sse_retry(milliseconds: int) -> bytes:
    return f"retry: {int(milliseconds)}\n\n".encode()


def changed_tasks(previous: Mapping[str, int], tasks: Sequence[Task]) -> tuple[list[Task], dict[str, int]]:
    """Tasks that are new or whose version moved since ``previous`` (oldest change first),
    and the versions to compare the next read with."""
    versions = {t.id: t.version for t in tasks}
    changed = [t for t in tasks if previous.get(t.id) != t.version]
    changed.sort(key=lambda t: (t.updated_at, t.id))
    return changed, versions


# -- subscribers -------------------------------------------------------------------------


class StreamClosed(Exception):
    """The feed closed this subscription (shutdown, or the subscriber fell behind)."""


class Subscription:
    """One stream's queue of changed tasks."""

    def __init__(self, queue_size: int) -> None:
        self._queue: asyncio.Queue[Task | None] = asyncio.Queue(maxsize=queue_size + 1)
        self._limit = queue_size
        self.closed = False

    def offer(self, task: Task) -> bool:
        """Queue ``task``; False (and the subscription closed) when the subscriber is too far behind."""
        if self.closed:
            return False
        if self._queue.qsize() >= self._limit:
            self.close()
            return False
        self._queue.put_nowait(task)
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._queue.put_nowait(None)  # one slot is always kept for this

    async def next(self, timeout: float) -> Task | None:
        """The next changed task, or None after ``timeout`` seconds; :class:`StreamClosed` when closed."""
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None
        if item is None:
            raise StreamClosed()
        return item


class TaskFeed:
    """Polls the store for task changes while anyone listens; fans them out to subscriptions."""

    def __init__(self, store: Store, options: EventStreamOptions) -> None:
        self._store = store
        self._options = options
        self._subscribers: set[Subscription] = set()
        self._versions: dict[str, int] | None = None  # the last read; None while nobody listens
        self._lock = asyncio.Lock()
        self._has_subscribers = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def running(self) -> bool:
        """Whether the poller task is alive (between app startup and cleanup)."""
        return self._poller is not None and not self._poller.done()

    async def start(self) -> None:
        if self._poller is None and not self._stopped:
            self._poller = asyncio.create_task(self._run(), name="patchwright-web-task-feed")

    async def close_subscribers(self) -> None:
        """End every open stream (on shutdown, so the server need not wait for them)."""
        for sub in list(self._subscribers):
            sub.close()
        self._subscribers.clear()
        self._has_subscribers.clear()

    async def stop(self) -> None:
        self._stopped = True
        await self.close_subscribers()
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    async def subscribe(self) -> Subscription:
        """A new subscription; every change stored after this returns is delivered to it."""
        if self._stopped:
            raise StreamClosed()
        async with self._lock:
            if self._versions is None:
                _, self._versions = changed_tasks({}, await self._read())
            sub = Subscription(self._options.queue_size)
            self._subscribers.add(sub)
        self._has_subscribers.set()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.close()
        self._subscribers.discard(sub)
        if not self._subscribers:
            self._has_subscribers.clear()
            self._versions = None

    async def poll_once(self) -> int:
        """Read the tasks once and publish the changes; returns how many tasks changed."""
        async with self._lock:
            if self._versions is None:
                return 0
            changed, self._versions = changed_tasks(self._versions, await self._read())
        for task in changed:
            for sub in list(self._subscribers):
                if not sub.offer(task):
                    self._subscribers.discard(sub)
        return len(changed)

    async def _read(self) -> list[Task]:
        return await self._store.list_tasks(limit=self._options.poll_limit)

    async def _run(self) -> None:
        failing = False
        while True:
            if not self._subscribers:
                await self._has_subscribers.wait()
                continue
            await asyncio.sleep(self._options.poll_interval_s)
            try:
                await self.poll_once()
            except Exception as exc:  # noqa: BLE001 - the store may be briefly unavailable; keep polling
                if not failing:
                    log.warning("live task feed: reading tasks failed (%s); retrying", type(exc).__name__)
                failing = True
            else:
                failing = False


def peer_gone(request: web.Request) -> bool:
    """Whether the client of a stream went away."""
    transport = request.transport
    return transport is None or transport.is_closing()


def sse_response() -> web.StreamResponse:
    """A server-sent event stream's response, not yet prepared."""
    return web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache, no-store",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )


async def stream_task_events(
    request: web.Request,
    feed: TaskFeed,
    options: EventStreamOptions,
    *,
    task_view: Callable[[Task], Any],
) -> web.StreamResponse:
    """The ``/api/events`` response: ``event: task`` messages until the stream's lifetime ends."""
    sub = await feed.subscribe()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.lifetime_s
    response = sse_response()
    try:
        await response.prepare(request)
        await response.write(sse_retry(options.retry_ms) + sse_comment("connected"))
        while not peer_gone(request):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                task = await sub.next(min(options.keepalive_s, remaining))
            except StreamClosed:
                break
            if task is not None:
                await response.write(sse_event("task", task_view(task)))
            elif loop.time() < deadline:
                await response.write(sse_comment("keep-alive"))
    except ConnectionResetError:
        pass  # the browser went away
    finally:
        feed.unsubscribe(sub)
    return response
