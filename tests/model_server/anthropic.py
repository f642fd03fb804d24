"""The Anthropic Messages API, as Claude Code (``claude``) calls it.

Claude Code sends every model call to ``POST {ANTHROPIC_BASE_URL}/v1/messages`` (with
``?beta=true``), streaming. A request that offers tools is one step of the agent's loop — a
*conversation* request — and is answered with the next turn of the script:

- :class:`ToolUse` (or :class:`ToolUses` for several calls in one answer): the model calls one
  of Claude Code's built-in tools (``Write`` {file_path, content}, ``Edit`` {file_path,
  old_string, new_string}, ``Bash`` {command}, ...); Claude Code runs it and sends the result
  back in the next conversation request, which plays the next turn;
- :class:`Final`: the model's last message; its text becomes Claude Code's ``result``;
- :class:`ApiError`: an error answer (HTTP status and Anthropic error type).

Every turn carries its :class:`Usage`; Claude Code adds up the usage of every answer and
prices it with its own table for the model name (see :func:`claude_cost`).

String values of a tool's input may name ``{cwd}``: it is replaced by the agent's working
directory as Claude Code states it in its system prompt ("Primary working directory: …"), so a
script can give the absolute ``file_path`` Claude Code's file tools want without knowing where
the checkout is.

Requests that are not conversation steps never consume the script: a request without tools
gets a short answer (Claude Code's session-title request, made when nonessential traffic is
not disabled, asks for ``{"title": …}`` through a JSON schema and gets it), and
``/v1/messages/count_tokens`` an estimate. Once the script is played out, a conversation
request gets a plain :class:`Final` ("Done."). Claude Code 2.1.197 with
``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`` (as the preset runs it) makes no other request
than the conversation's: one ``POST /v1/messages?beta=true`` per step, no probes, no token
counting.

What Claude Code's tools insist on: file paths are absolute, and ``Write``/``Edit`` of an
existing file fail ("File has not been read yet") unless the session ``Read`` it first.
Claude Code retries 429 and 5xx answers itself (``CLAUDE_CODE_MAX_RETRIES``, default 10), and
each retry plays the next turn.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.model_server import ModelServer, RecordedRequest, recorded, sse

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"


@dataclass(frozen=True)
class Usage:
    """What one answer cost, in tokens (the fields of the Messages API ``usage``)."""

    input_tokens: int = 100
    output_tokens: int = 20
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "output_tokens": self.output_tokens,
        }

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
        )


@dataclass(frozen=True)
class Call:
    """One tool call inside a :class:`ToolUses` turn."""

    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class ToolUse:
    """The model calls one tool (optionally saying ``text`` first)."""

    name: str
    input: dict[str, Any]
    usage: Usage = field(default_factory=Usage)
    text: str = ""

    @property
    def calls(self) -> tuple[Call, ...]:
        return (Call(self.name, self.input),)


@dataclass(frozen=True)
class ToolUses:
    """The model calls several tools in one answer (Claude Code runs them, then asks again)."""

    calls: tuple[Call, ...]
    usage: Usage = field(default_factory=Usage)
    text: str = ""


@dataclass(frozen=True)
class Final:
    """The model's last answer: ``text`` is what Claude Code reports as its result."""

    text: str
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class ApiError:
    """An error answer, e.g. ``ApiError(529, "overloaded_error", "Overloaded")``. Claude Code
    retries 429 and 5xx answers with backoff whatever the headers say, each retry playing the
    next turn: run it with ``CLAUDE_CODE_MAX_RETRIES=0`` to have it give up at once."""

    status: int
    type: str
    message: str


Turn = ToolUse | ToolUses | Final | ApiError


def write(path: str, content: str, usage: Usage | None = None) -> ToolUse:
    """``Write`` ``content`` to ``path`` (relative paths are taken from the working directory)."""
    return ToolUse("Write", {"file_path": _absolute(path), "content": content}, usage or Usage())


def edit(path: str, old: str, new: str, usage: Usage | None = None) -> ToolUse:
    """``Edit`` ``path``: replace ``old`` by ``new`` (Claude Code wants the file read first)."""
    return ToolUse(
        "Edit",
        {"file_path": _absolute(path), "old_string": old, "new_string": new},
        usage or Usage(),
    )


def read(path: str, usage: Usage | None = None) -> ToolUse:
    return ToolUse("Read", {"file_path": _absolute(path)}, usage or Usage())


def bash(command: str, usage: Usage | None = None, description: str = "") -> ToolUse:
    return ToolUse(
        "Bash",
        {"command": command, "description": description or command[:60]},
        usage or Usage(),
    )


def _absolute(path: str) -> str:
    return path if path.startswith(("/", "{cwd}")) else "{cwd}/" + path


# -- prices ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prices:
    """USD per million tokens, as Claude Code prices a model (cache writes for 5 minutes)."""

    input: float
    output: float
    cache_write: float
    cache_read: float

    def cost(self, usage: Usage) -> float:
        return (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_creation_input_tokens * self.cache_write
            + usage.cache_read_input_tokens * self.cache_read
        ) / 1_000_000


#: Claude Code 2.1.197's own prices for the models the tests use (Anthropic's list prices;
#: the tests check that ``total_cost_usd`` matches them).
CLAUDE_PRICES = {
    "claude-sonnet-4-5": Prices(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30),
    "claude-opus-4-8": Prices(input=5.0, output=25.0, cache_write=6.25, cache_read=0.50),
    "claude-haiku-4-5": Prices(input=1.0, output=5.0, cache_write=1.25, cache_read=0.10),
}


def claude_cost(model: str, usages: list[Usage]) -> float:
    """What Claude Code charges for these answers of ``model``."""
    prices = CLAUDE_PRICES[model]
    return sum(prices.cost(u) for u in usages)


def turn_usage(turns: list[Any]) -> list[Usage]:
    """The usage of the turns that carry one (everything but errors)."""
    return [t.usage for t in turns if isinstance(t, ToolUse | ToolUses | Final)]


# -- reading recorded requests -----------------------------------------------------------------

_CWD = re.compile(r"Primary working directory: (\S+)")


def system_text(body: Any) -> str:
    """The system prompt of a recorded request body as one string."""
    system = body.get("system") if isinstance(body, dict) else None
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(str(b.get("text", "")) for b in system if isinstance(b, dict))
    return ""


def working_directory(body: Any) -> str:
    match = _CWD.search(system_text(body))
    return match.group(1) if match else ""


def strip_cache_control(value: Any) -> Any:
    """``value`` without ``cache_control`` markers (Claude Code moves them to the newest turn)."""
    if isinstance(value, dict):
        return {k: strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [strip_cache_control(v) for v in value]
    return value


def tool_results(request: RecordedRequest) -> list[dict[str, Any]]:
    """The ``tool_result`` blocks of the request's last user message."""
    messages = request.body.get("messages") or []
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
            return []
    return []


def tool_outputs(request: RecordedRequest) -> dict[str, tuple[str, bool]]:
    """Tool name → (result text, is_error) of the tools called in the answer this request
    replies to (results come back in the order the tools finished, not as called)."""
    names: dict[str, str] = {}
    for message in request.body.get("messages") or []:
        content = message.get("content")
        if message.get("role") == "assistant" and isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    names[str(block.get("id"))] = str(block.get("name"))
    return {
        names.get(str(b.get("tool_use_id")), "?"): (
            result_text(b),
            bool(b.get("is_error")),
        )
        for b in tool_results(request)
    }


def result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return ""


# -- answering ------------------------------------------------------------------------------

_ids = itertools.count(1)


def _substitute(value: Any, cwd: str) -> Any:
    if isinstance(value, str):
        return value.replace("{cwd}", cwd) if cwd else value
    if isinstance(value, dict):
        return {k: _substitute(v, cwd) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, cwd) for v in value]
    return value


def _content(turn: ToolUse | ToolUses | Final, cwd: str) -> list[dict[str, Any]]:
    if isinstance(turn, Final):
        return [{"type": "text", "text": turn.text}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": turn.text}] if turn.text else []
    for call in turn.calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": f"toolu_{next(_ids):024d}",
                "name": call.name,
                "input": _substitute(call.input, cwd),
            }
        )
    return blocks


def _message(model: str, content: list[dict[str, Any]], stop_reason: str, usage: Usage) -> dict[str, Any]:
    return {
        "id": f"msg_{next(_ids):024d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage.as_dict(),
    }


def _chunks(text: str, size: int = 40) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _events(message: dict[str, Any]) -> list[tuple[str, Any]]:
    """The SSE events of a streamed ``message`` (usage on start, output tokens on the delta)."""
    usage = dict(message["usage"])
    start = dict(message, content=[], stop_reason=None, usage=dict(usage, output_tokens=1))
    events: list[tuple[str, Any]] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            for piece in _chunks(block["text"]):
                delta = {"type": "text_delta", "text": piece}
                events.append(
                    (
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
                )
        else:
            opened = {
                "type": "tool_use",
                "id": block["id"],
                "name": block["name"],
                "input": {},
            }
            events.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": opened,
                    },
                )
            )
            for piece in _chunks(json.dumps(block["input"])):
                delta = {"type": "input_json_delta", "partial_json": piece}
                events.append(
                    (
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
                )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


async def _answer(request: web.Request, body: dict[str, Any], message: dict[str, Any]) -> web.StreamResponse:
    if body.get("stream"):
        return await sse(request, _events(message))
    return web.json_response(message)


#: What a side request (title, topic) costs: Claude Code adds it to ``total_cost_usd`` too.
SIDE_USAGE = Usage(input_tokens=10, output_tokens=5)
SIDE_TITLE = "Scripted session"


def _side_text(body: dict[str, Any]) -> str:
    """A side request's answer: JSON when the request asks for a JSON schema (Claude Code's
    title request wants ``{"title": …}``), else a short text."""
    output = body.get("output_config")
    schema = output.get("format", {}).get("schema") if isinstance(output, dict) else None
    if isinstance(schema, dict) and isinstance(schema.get("properties"), dict):
        return json.dumps({name: SIDE_TITLE for name in schema["properties"]})
    return SIDE_TITLE


def is_conversation(body: Any) -> bool:
    """Whether a Messages request is a step of the agent's loop (it offers the agent's tools);
    title, topic and other side requests to a small model offer none."""
    return isinstance(body, dict) and bool(body.get("tools"))


def routes(server: ModelServer) -> list[web.RouteDef]:
    async def messages(request: web.Request) -> web.StreamResponse:
        record = recorded(request)
        body = record.body if record is not None else None
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "invalid_request_error", "messages: a list is required")
        model = str(body.get("model") or "claude-sonnet-4-5")
        if not is_conversation(body):
            side = _message(
                model,
                [{"type": "text", "text": _side_text(body)}],
                "end_turn",
                SIDE_USAGE,
            )
            return await _answer(request, body, side)
        server.conversation(request)
        turn = server.script.next()
        if turn is None:
            turn = Final("Done.")
        if isinstance(turn, ApiError):
            return _error(turn.status, turn.type, turn.message)
        if not isinstance(turn, ToolUse | ToolUses | Final):
            raise TypeError(f"not an Anthropic turn: {turn!r}")
        stop = "end_turn" if isinstance(turn, Final) else "tool_use"
        message = _message(model, _content(turn, working_directory(body)), stop, turn.usage)
        return await _answer(request, body, message)

    async def count_tokens(request: web.Request) -> web.Response:
        record = recorded(request)
        raw = record.raw if record is not None else b""
        return web.json_response({"input_tokens": max(1, len(raw) // 4)})

    return [
        web.post(MESSAGES_PATH, messages),
        web.post(COUNT_TOKENS_PATH, count_tokens),
    ]


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status)
