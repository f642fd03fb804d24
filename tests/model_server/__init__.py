"""A scripted model server for the tests (issue 12): it speaks the wire protocols of the
model providers the real agent CLIs call, so that ``claude``, ``codex`` and ``aider`` run
unmodified against 127.0.0.1.

The core here is protocol-neutral: a :class:`ModelServer` (an aiohttp app on 127.0.0.1)
records every request and plays a :class:`Script` — a queue of turns, each a protocol-specific
answer to the next *conversation* request (the request that carries the agent's turn; each
protocol module decides which requests those are and answers side requests such as title
generation, token counting and model lists itself). Protocol modules register their routes
with :meth:`ModelServer.add_routes`:

- :mod:`tests.model_server.anthropic`: the Anthropic Messages API (Claude Code)
- :mod:`tests.model_server.responses`: the OpenAI Responses API (Codex)
- :mod:`tests.model_server.chat`: OpenAI chat completions (aider)

Tests get one through the ``model_server`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class RecordedRequest:
    """One request the server received (the body decoded when it is JSON)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    conversation: bool = False  # answered from the script (not a side request)
    received: float = field(default_factory=time.monotonic)  # time.monotonic() on arrival


#: Where the request being answered keeps its :class:`RecordedRequest` (see :func:`recorded`).
RECORDED = web.RequestKey("recorded", RecordedRequest)


def recorded(request: web.Request) -> RecordedRequest | None:
    """The record of the request being answered (None outside the server's middleware)."""
    return request.get(RECORDED)


@dataclass
class Script:
    """The turns to play, in order. A turn is whatever the protocol module understands (see
    its ``Turn`` types); :meth:`next` hands out the next one, or None once the script is
    played out (the module then answers with a plain final message)."""

    turns: list[Any] = field(default_factory=list)
    played: int = 0

    def next(self) -> Any | None:
        if self.played >= len(self.turns):
            return None
        turn = self.turns[self.played]
        self.played += 1
        return turn

    def extend(self, turns: Iterable[Any]) -> None:
        self.turns.extend(turns)


class ModelServer:
    """The server; ``await start()`` listens on 127.0.0.1 (``base_url``), ``await stop()``."""

    def __init__(self) -> None:
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.middlewares.append(self._record)
        self.requests: list[RecordedRequest] = []
        self.script = Script()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.down = False  # answer nothing: every connection is closed at once

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> ModelServer:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- routes and records ----------------------------------------------------------------
    def add_routes(self, routes: Iterable[web.AbstractRouteDef]) -> None:
        self.app.router.add_routes(list(routes))

    def conversation(self, request: web.Request) -> None:
        """Mark the request being answered as a conversation request (for the records)."""
        record = recorded(request)
        if record is not None:
            record.conversation = True

    def conversation_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.conversation]

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    @web.middleware
    async def _record(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if self.down:
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPServiceUnavailable()
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        recorded = RecordedRequest(request.method, request.path, dict(request.headers), body, raw)
        self.requests.append(recorded)
        request[RECORDED] = recorded
        with warnings.catch_warnings():  # the plain key, for handlers that read request["recorded"]
            warnings.simplefilter("ignore", web.NotAppKeyWarning)
            request["recorded"] = recorded
        return await handler(request)


async def sse(request: web.Request, events: Iterable[tuple[str | None, Any]]) -> web.StreamResponse:
    """Answer with server-sent events: ``(event name or None, data)`` pairs, the data as JSON
    (a string is sent as is, e.g. ``[DONE]``)."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for name, data in events:
        payload = data if isinstance(data, str) else json.dumps(data)
        chunk = (f"event: {name}\n" if name else "") + f"data: {payload}\n\n"
        await response.write(chunk.encode("utf-8"))
        await asyncio.sleep(0)
    await response.write_eof()
    return response
