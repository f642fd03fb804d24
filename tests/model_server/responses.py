"""The OpenAI Responses API, as the Codex CLI (``codex``) calls it.

Codex (0.171) sends every model call to ``POST {base_url}/responses`` — with the provider's
``base_url`` ending in ``/v1``, that is ``/v1/responses`` — streaming (``"stream": true``,
``"store": false``: the whole conversation is sent again with every request). A request whose
``x-codex-turn-metadata`` header says ``"request_kind": "turn"`` (or says nothing) is one step of
the agent's loop — a *conversation* request — and is answered with the next turn of the script:

- :class:`ShellCall`: the model runs a shell command; :class:`ApplyPatch`: it edits files
  with a patch in Codex's ``*** Begin Patch`` format; :class:`FunctionCall`: any other tool.
  Codex runs it and sends the result back (``function_call_output`` /
  ``custom_tool_call_output``) in the next conversation request, which plays the next turn;
- :class:`Final`: the model's last message; its text becomes Codex's last ``agent_message``
  (the run's summary);
- :class:`ApiError`: an error answer (HTTP status, OpenAI error ``type`` and ``code``).

Which tools Codex offers depends on the model. For its default model (``gpt-6.2-sol`` in
0.171) it declares them in an ``additional_tools`` input item, not in ``tools``: one freeform
(``custom``) tool ``exec`` in the namespace ``functions`` that runs JavaScript calling the
real tools (``await tools.exec_command({cmd})``, ``await tools.apply_patch(patch)``). For
other models (e.g. ``-m gpt-5``) it offers them directly as ``tools``: ``exec_command``
({cmd}), ``write_stdin`` … Each turn is answered with whatever the request offers
(:func:`offered_tools`): the direct tool when there is one, else a code-mode ``exec`` call.

Every answer carries its :class:`Usage`; Codex adds them up per thread and reports the
thread's totals in its ``turn.completed`` event.

Requests that are not conversation steps never consume the script: another ``request_kind``
gets a short text answer. Once the script is played out, a conversation request gets a plain
:class:`Final` ("Done.").
"""

from __future__ import annotations

import itertools
import json
import posixpath
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.model_server import ModelServer, RecordedRequest, recorded, sse

RESPONSES_PATH = "/v1/responses"
#: The model Codex 0.171 asks for when it is given none (``-m``), as its requests name it.
CODEX_DEFAULT_MODEL = "gpt-6.2-sol"
TURN_METADATA_HEADER = "x-codex-turn-metadata"


@dataclass(frozen=True)
class Usage:
    """What one answer cost, in tokens (the Responses API ``usage``: ``input_tokens``
    includes the ``cached_tokens``)."""

    input_tokens: int = 1000
    cached_tokens: int = 0
    output_tokens: int = 100

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + self.output_tokens,
        }

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.cached_tokens + other.cached_tokens,
            self.output_tokens + other.output_tokens,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class ShellCall:
    """The model runs ``command`` (a shell command line, or an argv joined with shell quoting)
    in ``workdir`` (default: the agent's working directory)."""

    command: str | Sequence[str]
    usage: Usage = field(default_factory=Usage)
    text: str = ""  # a message said before the call
    workdir: str = ""

    @property
    def cmd(self) -> str:
        return self.command if isinstance(self.command, str) else shlex.join(self.command)


@dataclass(frozen=True)
class ApplyPatch:
    """The model edits files with ``patch`` (``*** Begin Patch`` … ``*** End Patch``)."""

    patch: str
    usage: Usage = field(default_factory=Usage)
    text: str = ""


@dataclass(frozen=True)
class FunctionCall:
    """The model calls the function tool ``name`` with ``arguments``."""

    name: str
    arguments: dict[str, Any]
    usage: Usage = field(default_factory=Usage)
    text: str = ""


@dataclass(frozen=True)
class Final:
    """The model's last answer: ``text`` becomes Codex's last agent message."""

    text: str
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class ApiError:
    """An error answer, e.g. ``ApiError(429, "rate_limit_exceeded", "Slow down")``."""

    status: int
    code: str
    message: str
    type: str = "invalid_request_error"


Turn = ShellCall | ApplyPatch | FunctionCall | Final | ApiError


def write_file(path: str, content: str, usage: Usage | None = None) -> ShellCall:
    """A shell call writing exactly ``content`` to ``path`` (relative to the working directory;
    its directory is made first)."""
    command = f"printf %s {shlex.quote(content)} > {shlex.quote(path)}"
    parent = posixpath.dirname(path)
    if parent:
        command = f"mkdir -p {shlex.quote(parent)} && {command}"
    return ShellCall(command, usage or Usage())


def add_file_patch(path: str, content: str) -> str:
    """A Codex patch creating ``path`` with ``content`` (ending in a newline)."""
    lines = content.splitlines()
    body = "".join(f"+{line}\n" for line in lines)
    return f"*** Begin Patch\n*** Add File: {path}\n{body}*** End Patch"


def turn_usage(turns: Iterable[Any]) -> Usage:
    """The total usage of the turns that carry one (everything but errors)."""
    total = Usage(0, 0, 0)
    for turn in turns:
        if isinstance(turn, ShellCall | ApplyPatch | FunctionCall | Final):
            total = total + turn.usage
    return total


# -- reading recorded requests -----------------------------------------------------------------


def turn_metadata(request: RecordedRequest) -> dict[str, Any]:
    """Codex's ``x-codex-turn-metadata`` header of a recorded request ({} without one)."""
    for name, value in request.headers.items():
        if name.lower() == TURN_METADATA_HEADER:
            try:
                data = json.loads(value)
            except ValueError:
                return {}
            return data if isinstance(data, dict) else {}
    return {}


def is_conversation(request: RecordedRequest) -> bool:
    """Whether a Responses request is a step of the agent's loop (not compaction, memory or
    another side request): its turn metadata says ``request_kind: turn``, or says nothing."""
    kind = turn_metadata(request).get("request_kind")
    return kind in (None, "turn")


def _walk_tools(tools: Any, namespace: str, found: dict[str, tuple[str, str]]) -> None:
    if not isinstance(tools, list):
        return
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        kind, name = tool.get("type"), tool.get("name")
        if kind == "namespace":
            _walk_tools(tool.get("tools"), str(name or ""), found)
        elif isinstance(kind, str) and isinstance(name, str):
            found.setdefault(name, (kind, namespace))


def offered_tools(body: Any) -> dict[str, tuple[str, str]]:
    """The tools a request offers: name → (type ``function``/``custom``, namespace or "")
    from its ``tools`` and from ``additional_tools`` input items."""
    found: dict[str, tuple[str, str]] = {}
    if not isinstance(body, dict):
        return found
    _walk_tools(body.get("tools"), "", found)
    for item in body.get("input") or []:
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            _walk_tools(item.get("tools"), "", found)
    return found


def input_items(request: RecordedRequest) -> list[dict[str, Any]]:
    items = request.body.get("input") if isinstance(request.body, dict) else None
    return [i for i in items or [] if isinstance(i, dict)]


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return ""


def user_texts(request: RecordedRequest) -> list[str]:
    """The texts of the request's user messages, in order."""
    return [
        _content_text(i.get("content"))
        for i in input_items(request)
        if i.get("type") == "message" and i.get("role") == "user"
    ]


def assistant_texts(request: RecordedRequest) -> list[str]:
    return [
        _content_text(i.get("content"))
        for i in input_items(request)
        if i.get("type") == "message" and i.get("role") == "assistant"
    ]


def tool_outputs(request: RecordedRequest) -> list[str]:
    """The outputs of the tool calls the request sends back (every one in its history)."""
    out = []
    for item in input_items(request):
        if item.get("type") in ("function_call_output", "custom_tool_call_output"):
            output = item.get("output")
            out.append(output if isinstance(output, str) else _content_text(output))
    return out


def without_ids(value: Any) -> Any:
    """``value`` without the ``id`` fields of its items (Codex gives each input item a fresh
    time-based id per run; they are not part of what the model reads)."""
    if isinstance(value, dict):
        return {k: without_ids(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    return value


# -- answering ------------------------------------------------------------------------------

_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):024d}"


def _js(value: Any) -> str:
    return json.dumps(value)


def _code_mode(call: str) -> str:
    """JavaScript for Codex's code-mode ``exec`` tool: run one tool, report its output."""
    return (
        f"const r = await {call};\n"
        "if (typeof r === 'string') { text(r); }\n"
        "else if (r && typeof r.output === 'string') {\n"
        "  text(r.output);\n"
        "  if (r.exit_code !== undefined) { text(`exit code: ${r.exit_code}`); }\n"
        "} else { text(JSON.stringify(r)); }\n"
    )


def _tool_item(
    turn: ShellCall | ApplyPatch | FunctionCall, tools: dict[str, tuple[str, str]]
) -> dict[str, Any]:
    """The output item calling the tool the turn means, as the request offers it."""
    if isinstance(turn, FunctionCall):
        name, arguments = turn.name, turn.arguments
        direct: tuple[str, Any] | None = (name, arguments) if name in tools else None
        code = f"tools.{name}({_js(arguments)})"
    elif isinstance(turn, ShellCall):
        args: dict[str, Any] = {"cmd": turn.cmd}
        if turn.workdir:
            args["workdir"] = turn.workdir
        if "exec_command" in tools:
            direct = ("exec_command", args)
        elif "shell" in tools:
            direct = (
                "shell",
                {"command": ["bash", "-lc", turn.cmd], **({"workdir": turn.workdir} if turn.workdir else {})},
            )
        else:
            direct = None
        code = f"tools.exec_command({_js(args)})"
    elif "apply_patch" in tools or "exec_command" not in tools:
        direct = ("apply_patch", turn.patch) if "apply_patch" in tools else None
        code = f"tools.apply_patch({_js(turn.patch)})"
    else:  # no patch tool offered: Codex also applies a patch given to apply_patch in a command
        return _tool_item(ShellCall(f"apply_patch <<'PATCH'\n{turn.patch}\nPATCH\n", turn.usage), tools)
    if direct is None:
        if "exec" not in tools or tools["exec"][0] != "custom":
            raise AssertionError(f"the request offers no tool for {turn!r}: {sorted(tools)}")
        direct = ("exec", _code_mode(code))
    name, payload = direct
    kind, namespace = tools[name]
    item: dict[str, Any] = {
        "id": _id("ctc" if kind == "custom" else "fc"),
        "call_id": _id("call"),
        "name": name,
    }
    if namespace:
        item["namespace"] = namespace
    if kind == "custom":
        item.update(
            type="custom_tool_call",
            status="completed",
            input=payload if isinstance(payload, str) else _js(payload),
        )
    else:
        if isinstance(payload, str):  # a freeform tool offered as a function takes {"input": …}
            payload = {"input": payload}
        item.update(type="function_call", status="completed", arguments=_js(payload))
    return item


def _message_item(text: str) -> dict[str, Any]:
    return {
        "id": _id("msg"),
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _chunks(text: str, size: int = 40) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _events(response: dict[str, Any]) -> list[tuple[str, Any]]:
    """The SSE events of a streamed ``response``."""
    seq = itertools.count()
    events: list[tuple[str, Any]] = []

    def emit(kind: str, **data: Any) -> None:
        events.append((kind, {"type": kind, "sequence_number": next(seq), **data}))

    started = dict(response, status="in_progress", output=[], usage=None)
    emit("response.created", response=started)
    emit("response.in_progress", response=started)
    for index, item in enumerate(response["output"]):
        kind = item["type"]
        if kind == "message":
            emit(
                "response.output_item.added",
                output_index=index,
                item=dict(item, status="in_progress", content=[]),
            )
            text = item["content"][0]["text"]
            part = {"type": "output_text", "text": "", "annotations": []}
            emit(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
            for piece in _chunks(text):
                emit(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    delta=piece,
                )
            emit(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=text,
            )
            emit(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=dict(part, text=text),
            )
        elif kind == "function_call":
            emit(
                "response.output_item.added",
                output_index=index,
                item=dict(item, status="in_progress", arguments=""),
            )
            for piece in _chunks(item["arguments"]):
                emit(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=piece,
                )
            emit(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            )
        else:  # custom_tool_call
            emit(
                "response.output_item.added",
                output_index=index,
                item=dict(item, status="in_progress", input=""),
            )
            for piece in _chunks(item["input"]):
                emit(
                    "response.custom_tool_call_input.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=piece,
                )
            emit(
                "response.custom_tool_call_input.done",
                item_id=item["id"],
                output_index=index,
                input=item["input"],
            )
        emit("response.output_item.done", output_index=index, item=item)
    emit("response.completed", response=response)
    return events


def _response(model: str, output: list[dict[str, Any]], usage: Usage) -> dict[str, Any]:
    return {
        "id": _id("resp"),
        "object": "response",
        "created_at": 0,
        "status": "completed",
        "model": model,
        "output": output,
        "usage": usage.as_dict(),
    }


#: What a side request costs (Codex adds it to the thread's usage too).
SIDE_USAGE = Usage(input_tokens=10, cached_tokens=0, output_tokens=5)
SIDE_TEXT = "Scripted side answer."


def routes(server: ModelServer) -> list[web.RouteDef]:
    async def responses(request: web.Request) -> web.StreamResponse:
        record = recorded(request)
        body = record.body if record is not None else None
        if record is None or not isinstance(body, dict) or not isinstance(body.get("input"), list | str):
            return _error(400, "invalid_request_error", "invalid_request", "input: a list is required")
        model = str(body.get("model") or CODEX_DEFAULT_MODEL)
        if not is_conversation(record):
            return await _answer(request, body, _response(model, [_message_item(SIDE_TEXT)], SIDE_USAGE))
        server.conversation(request)
        turn = server.script.next()
        if turn is None:
            turn = Final("Done.")
        if isinstance(turn, ApiError):
            return _error(turn.status, turn.type, turn.code, turn.message)
        if isinstance(turn, Final):
            output = [_message_item(turn.text)]
        elif isinstance(turn, ShellCall | ApplyPatch | FunctionCall):
            output = [_message_item(turn.text)] if turn.text else []
            output.append(_tool_item(turn, offered_tools(body)))
        else:
            raise TypeError(f"not a Responses turn: {turn!r}")
        return await _answer(request, body, _response(model, output, turn.usage))

    return [web.post(RESPONSES_PATH, responses)]


async def _answer(request: web.Request, body: dict[str, Any], response: dict[str, Any]) -> web.StreamResponse:
    if body.get("stream"):
        return await sse(request, _events(response))
    return web.json_response(response)


def _error(status: int, kind: str, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "code": code, "param": None}}, status=status
    )
