"""An attempt's log read as the agent's conversation (pure).

The worker stores what the agent CLI printed, line by line, among its own lines (prefixed
:data:`WORKER_PREFIX`). :func:`parse_transcript` turns those lines into :class:`Entry` values:
the agent's messages, its thinking, tool calls (name and arguments), tool results, errors,
the run's summary (cost, duration, tokens), informational lines, the worker's notes — and
every line it does not understand kept verbatim as ``raw`` (nothing is dropped).

The formats, told apart per line:

- Claude Code ``--output-format stream-json``: JSON objects whose ``type`` is ``system``,
  ``assistant``, ``user`` or ``result``;
- Codex ``exec --json``: JSON events ``thread.started``, ``turn.started|completed|failed``,
  ``item.started|updated|completed`` (items ``agent_message``, ``reasoning``,
  ``command_execution``, ``file_change``, ``mcp_tool_call``, ``web_search``, ``todo_list``,
  ``error``) and ``error``;
- aider's plain text (``--no-pretty``): its banner, the prompt echoed as ``> `` lines, prose,
  edits (a file name, then a fenced block, whole or ``SEARCH``/``REPLACE``), ``Applied edit to``,
  ``Commit`` and ``Tokens:``/``Cost:`` lines. Other plain text (a ``command`` agent, a CLI's
  stderr) stays raw.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The prefix of the worker's own log lines (``bot.worker.attempt_log.LOG_PREFIX``; a test
#: keeps the two equal — the worker layer is above this one).
WORKER_PREFIX = "[patchwright] "

CLAUDE_INIT = "Claude Code {version} · model {model} · session {session}"
CLAUDE_SYSTEM = "system: {subtype}"
CODEX_THREAD = "Codex thread {thread}"
CODEX_TODO = "plan: {items}"
AIDER_EDIT_TOOL = "edit"
CODEX_SHELL_TOOL = "shell"
CODEX_FILE_CHANGE_TOOL = "file_change"
CODEX_WEB_SEARCH_TOOL = "web_search"
EXIT_CODE_NOTE = "exit code {code}"


class EntryKind(str, enum.Enum):
    MESSAGE = "message"  # the agent's text to the user
    PROMPT = "prompt"  # text sent to the agent (the prompt, an echoed instruction)
    THINKING = "thinking"  # the agent's reasoning
    TOOL_CALL = "tool_call"  # a tool call: ``tool`` and ``arguments``
    TOOL_RESULT = "tool_result"  # a tool's output (``is_error`` when it failed)
    ERROR = "error"  # the CLI or the model reported an error
    SUMMARY = "summary"  # the run's (or a turn's) totals: ``facts``
    INFO = "info"  # what the CLI says about itself (version, model, session)
    NOTE = "note"  # a line of the worker's own
    RAW = "raw"  # a line not understood, verbatim

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Entry:
    """One piece of the conversation; ``line`` is the index of its first source line."""

    kind: EntryKind
    text: str = ""
    line: int = 0
    tool: str = ""  # TOOL_CALL: the tool's name
    arguments: Mapping[str, Any] | str | None = None  # TOOL_CALL: its input
    call_id: str = ""  # links a TOOL_RESULT to its TOOL_CALL
    is_error: bool = False
    facts: Mapping[str, Any] = field(default_factory=dict)  # SUMMARY: cost_usd, duration_ms, tokens…


# -- the entry point -----------------------------------------------------------------------


def parse_transcript(lines: Sequence[str], *, agent: str = "") -> list[Entry]:
    """The entries of ``lines`` in order. ``agent`` (the task's preset) says how to read plain
    text: ``aider``'s output, or raw lines for any other; "" decides from the lines (aider when
    its banner is there and no JSON event is)."""
    text_as_aider = agent == "aider" if agent else _looks_like_aider(lines)
    entries: list[Entry] = []
    codex_started: set[str] = set()
    text_block: list[tuple[int, str]] = []

    def flush() -> None:
        if text_block:
            entries.extend(_aider_entries(text_block) if text_as_aider else _raw_entries(text_block))
            text_block.clear()

    for index, line in enumerate(lines):
        if line.startswith(WORKER_PREFIX):
            flush()
            entries.append(Entry(EntryKind.NOTE, line[len(WORKER_PREFIX):], index))
            continue
        event = _json_event(line)
        if event is None:
            text_block.append((index, line))
            continue
        flush()
        kind = event.get("type")
        if kind in _CLAUDE_TYPES:
            found = list(_claude_entries(event, index))
        else:
            found = list(_codex_entries(event, index, codex_started))
        entries.extend(found or ([] if kind in _SILENT_CODEX_TYPES else [Entry(EntryKind.RAW, line, index)]))
    flush()
    return entries


def _looks_like_aider(lines: Sequence[str]) -> bool:
    banner = any(line.startswith(_AIDER_BANNER) for line in lines)
    return banner and not any(_json_event(line) is not None for line in lines)


def _json_event(line: str) -> dict[str, Any] | None:
    """The line as an agent's JSON event (an object with a string ``type``), else None."""
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return value
    return None


def _raw_entries(block: Sequence[tuple[int, str]]) -> Iterator[Entry]:
    for index, line in block:
        yield Entry(EntryKind.RAW, line, index)


def _text_of(value: Any) -> str:
    """A tool result's or message's content as text: a string, or the text parts of a list."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for part in value:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, dict):
                parts.append(f"[{part.get('type', 'part')}]")
            else:
                parts.append(str(part))
        return "\n".join(parts)
    return json.dumps(value, ensure_ascii=False)


def _number(value: Any) -> float | int | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# -- Claude Code stream-json ---------------------------------------------------------------

_CLAUDE_TYPES = frozenset({"system", "assistant", "user", "result"})


def _claude_entries(event: Mapping[str, Any], index: int) -> Iterator[Entry]:
    kind = event["type"]
    if kind == "system":
        if event.get("subtype") == "init":
            text = CLAUDE_INIT.format(
                version=event.get("claude_code_version", "?"),
                model=event.get("model", "?"),
                session=event.get("session_id", "?"),
            )
        else:
            text = CLAUDE_SYSTEM.format(subtype=event.get("subtype", "?"))
            detail = event.get("error") or event.get("message")
            if detail:
                text += f" — {_text_of(detail)}"
        yield Entry(EntryKind.INFO, text, index)
        return
    if kind == "result":
        yield from _claude_result(event, index)
        return
    message = event.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        yield Entry(EntryKind.MESSAGE if kind == "assistant" else EntryKind.PROMPT, content, index)
        return
    if not isinstance(content, list):
        return
    for part in content:
        if not isinstance(part, dict):
            continue
        ptype = part.get("type")
        if ptype == "text":
            yield Entry(EntryKind.MESSAGE if kind == "assistant" else EntryKind.PROMPT, str(part.get("text", "")), index)
        elif ptype in ("thinking", "redacted_thinking"):
            yield Entry(EntryKind.THINKING, str(part.get("thinking", "")), index)
        elif ptype in ("tool_use", "server_tool_use"):
            arguments = part.get("input")
            yield Entry(
                EntryKind.TOOL_CALL,
                line=index,
                tool=str(part.get("name", "")),
                arguments=arguments if isinstance(arguments, (dict, str)) else None,
                call_id=str(part.get("id", "")),
            )
        elif ptype == "tool_result":
            yield Entry(
                EntryKind.TOOL_RESULT,
                _text_of(part.get("content")),
                index,
                call_id=str(part.get("tool_use_id", "")),
                is_error=part.get("is_error") is True,
            )
        else:
            yield Entry(EntryKind.RAW, json.dumps(part, ensure_ascii=False), index)


def _claude_result(event: Mapping[str, Any], index: int) -> Iterator[Entry]:
    failed = event.get("is_error") is True or event.get("subtype") not in (None, "success")
    if failed:
        errors = event.get("errors")
        detail = _text_of(errors) if errors else str(event.get("result") or event.get("subtype") or "")
        yield Entry(EntryKind.ERROR, detail, index, is_error=True)
    usage = event.get("usage") if isinstance(event.get("usage"), dict) else {}
    facts = {
        "cost_usd": _number(event.get("total_cost_usd")),
        "duration_ms": _number(event.get("duration_ms")),
        "turns": _number(event.get("num_turns")),
        "input_tokens": _number(usage.get("input_tokens")),
        "cached_input_tokens": _number(usage.get("cache_read_input_tokens")),
        "output_tokens": _number(usage.get("output_tokens")),
    }
    # (its ``result`` text repeats the last message: the summary is the figures)
    yield Entry(EntryKind.SUMMARY, "", index, facts={k: v for k, v in facts.items() if v is not None},
                is_error=failed)


# -- Codex exec --json ---------------------------------------------------------------------

_SILENT_CODEX_TYPES = frozenset({"turn.started", "item.updated"})


def _codex_entries(event: Mapping[str, Any], index: int, started: set[str]) -> Iterator[Entry]:
    kind = event["type"]
    if kind == "thread.started":
        yield Entry(EntryKind.INFO, CODEX_THREAD.format(thread=event.get("thread_id", "?")), index)
    elif kind == "turn.completed":
        usage = event.get("usage") if isinstance(event.get("usage"), dict) else {}
        facts = {
            "input_tokens": _number(usage.get("input_tokens")),
            "cached_input_tokens": _number(usage.get("cached_input_tokens")),
            "output_tokens": _number(usage.get("output_tokens")),
            "reasoning_tokens": _number(usage.get("reasoning_output_tokens")),
        }
        yield Entry(EntryKind.SUMMARY, "", index, facts={k: v for k, v in facts.items() if v is not None})
    elif kind in ("turn.failed", "error"):
        error = event.get("error")
        message = error.get("message") if isinstance(error, dict) else event.get("message")
        yield Entry(EntryKind.ERROR, _text_of(message), index, is_error=True)
    elif kind in ("item.started", "item.completed") and isinstance(event.get("item"), dict):
        yield from _codex_item(event["item"], index, completed=kind == "item.completed", started=started)


def _codex_item(item: Mapping[str, Any], index: int, *, completed: bool, started: set[str]) -> Iterator[Entry]:
    itype = item.get("type")
    item_id = str(item.get("id", ""))
    if itype == "agent_message":
        if completed:
            yield Entry(EntryKind.MESSAGE, str(item.get("text", "")), index)
        return
    if itype == "reasoning":
        if completed:
            yield Entry(EntryKind.THINKING, str(item.get("text", "")), index)
        return
    if itype == "error":
        yield Entry(EntryKind.ERROR, str(item.get("message", "")), index, is_error=True)
        return
    if itype == "todo_list":
        if completed:
            items = item.get("items") if isinstance(item.get("items"), list) else []
            texts = [str(i.get("text", "")) for i in items if isinstance(i, dict)]
            yield Entry(EntryKind.INFO, CODEX_TODO.format(items="; ".join(texts)), index)
        return
    call = _codex_call(item)
    if call is None:
        if completed:
            yield Entry(EntryKind.RAW, json.dumps(item, ensure_ascii=False), index)
        return
    tool, arguments = call
    if not completed or item_id not in started:
        started.add(item_id)
        yield Entry(EntryKind.TOOL_CALL, line=index, tool=tool, arguments=arguments, call_id=item_id)
    if completed:
        yield _codex_result(item, index)


def _codex_call(item: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    itype = item.get("type")
    if itype == "command_execution":
        return CODEX_SHELL_TOOL, {"command": item.get("command", "")}
    if itype == "file_change":
        return CODEX_FILE_CHANGE_TOOL, {"changes": item.get("changes", [])}
    if itype == "mcp_tool_call":
        name = f"{item.get('server', '')}.{item.get('tool', '')}".strip(".")
        arguments = item.get("arguments")
        return name, arguments if isinstance(arguments, dict) else {"arguments": arguments}
    if itype == "web_search":
        return CODEX_WEB_SEARCH_TOOL, {"query": item.get("query", "")}
    return None


def _codex_result(item: Mapping[str, Any], index: int) -> Entry:
    item_id = str(item.get("id", ""))
    status = str(item.get("status", ""))
    failed = status == "failed"
    if item.get("type") == "command_execution":
        code = item.get("exit_code")
        failed = failed or (isinstance(code, int) and code != 0)
        text = str(item.get("aggregated_output") or "")
        if failed and isinstance(code, int):
            text = (text.rstrip("\n") + "\n" if text.strip() else "") + EXIT_CODE_NOTE.format(code=code)
        return Entry(EntryKind.TOOL_RESULT, text, index, call_id=item_id, is_error=failed)
    if item.get("type") == "mcp_tool_call":
        error = item.get("error")
        result = item.get("result")
        text = _text_of(error.get("message") if isinstance(error, dict) else None) or _text_of(
            result.get("content") if isinstance(result, dict) else result
        )
        return Entry(EntryKind.TOOL_RESULT, text, index, call_id=item_id, is_error=failed or bool(error))
    return Entry(EntryKind.TOOL_RESULT, status, index, call_id=item_id, is_error=failed)


# -- aider's text --------------------------------------------------------------------------

_AIDER_BANNER = "Aider v"
_AIDER_INFO = (
    _AIDER_BANNER, "Model:", "Main model:", "Weak model:", "Editor model:", "Git repo:", "Repo-map:",
    "Analytics have been", "Detected dumb terminal", "Added ", "Warning:", "Note:", "Initial repo scan",
)
_AIDER_USAGE = ("Tokens:", "Cost:")
_AIDER_APPLIED = "Applied edit to "
_AIDER_COMMIT = re.compile(r"^Commit [0-9a-f]{7,40}\b")
_AIDER_ERROR = re.compile(r"^(?:litellm\.)?[A-Za-z]*(?:Error|Exception)\b\s*[:(]")
_FENCE = re.compile(r"^(`{3,}|~{3,})")
_PATH_LIKE = re.compile(r"^[\w./@+-]+$")
_SEARCH, _DIVIDER, _REPLACE = re.compile(r"^<{5,9} SEARCH"), re.compile(r"^={5,9}\s*$"), re.compile(r"^>{5,9} REPLACE")


def _aider_entries(block: Sequence[tuple[int, str]]) -> Iterator[Entry]:
    """Entries of a run of aider's plain-text lines (see the module's documentation)."""
    # Before aider's banner come what it prints while starting (info); a block without the
    # banner (a later batch of a followed log) starts after it.
    banner_seen = not any(line.startswith(_AIDER_BANNER) for _, line in block)
    prose: list[tuple[int, str]] = []
    i = 0

    def prose_entry() -> Iterator[Entry]:
        text = _tidy(line for _, line in prose)
        if text:
            yield Entry(EntryKind.MESSAGE, text, prose[0][0])
        prose.clear()

    while i < len(block):
        index, line = block[i]
        text = line.strip()
        if not banner_seen:
            if line.startswith(_AIDER_BANNER):
                banner_seen = True
            if text:
                yield Entry(EntryKind.INFO, line, index)
            i += 1
            continue
        if not text and not prose:
            i += 1
            continue
        if line.startswith(_AIDER_INFO):
            yield from prose_entry()
            yield Entry(EntryKind.INFO, line, index)
            i += 1
        elif line.startswith(">"):
            yield from prose_entry()
            quoted = []
            while i < len(block) and block[i][1].startswith(">"):
                quoted.append(block[i][1][2:] if block[i][1].startswith("> ") else block[i][1][1:])
                i += 1
            yield Entry(EntryKind.PROMPT, _tidy(quoted), index)
        elif line.startswith(_AIDER_USAGE):
            yield from prose_entry()
            usage = [line]
            i += 1
            while i < len(block) and block[i][1].startswith(_AIDER_USAGE):
                usage.append(block[i][1])
                i += 1
            yield Entry(EntryKind.SUMMARY, "\n".join(usage), index)
        elif line.startswith(_AIDER_APPLIED) or _AIDER_COMMIT.match(line):
            yield from prose_entry()
            yield Entry(EntryKind.TOOL_RESULT, line, index)
            i += 1
        elif _AIDER_ERROR.match(line):
            yield from prose_entry()
            yield Entry(EntryKind.ERROR, line, index, is_error=True)
            i += 1
        elif _PATH_LIKE.match(text) and (after := _next_text(block, i + 1)) is not None:
            nxt_index = after
            nxt = block[nxt_index][1]
            if _FENCE.match(nxt):
                yield from prose_entry()
                end = _fence_end(block, nxt_index)
                body = [ln for _, ln in block[nxt_index + 1 : end]]
                yield Entry(EntryKind.TOOL_CALL, line=index, tool=AIDER_EDIT_TOOL, arguments=_edit_arguments(text, body))
                i = end + 1
            elif nxt.strip() == _AIDER_APPLIED + text:
                yield from prose_entry()
                i = nxt_index  # the file name aider repeats before "Applied edit to" it
            else:
                prose.append(block[i])
                i += 1
        elif _FENCE.match(line):  # a code block in prose: kept whole in the message
            end = _fence_end(block, i)
            prose.extend(block[i : end + 1])
            i = end + 1
        else:
            prose.append(block[i])
            i += 1
    yield from prose_entry()


def _next_text(block: Sequence[tuple[int, str]], start: int) -> int | None:
    for j in range(start, len(block)):
        if block[j][1].strip():
            return j
    return None


def _fence_end(block: Sequence[tuple[int, str]], start: int) -> int:
    """The index of the line closing the fence opened at ``start`` (the last line when none does)."""
    opening = _FENCE.match(block[start][1])
    marker = opening.group(1)[:3] if opening else "```"
    for j in range(start + 1, len(block)):
        if block[j][1].strip().startswith(marker) and not _SEARCH.match(block[j][1]):
            return j
    return len(block) - 1


def _edit_arguments(path: str, body: Sequence[str]) -> dict[str, str]:
    """An edit's arguments: ``path`` and the new ``content``, or ``search`` and ``replace``."""
    starts = [j for j, ln in enumerate(body) if _SEARCH.match(ln)]
    if starts:
        s = starts[0]
        divider = next((j for j in range(s + 1, len(body)) if _DIVIDER.match(body[j])), None)
        end = next((j for j in range(s + 1, len(body)) if _REPLACE.match(body[j])), None)
        if divider is not None and end is not None and divider < end:
            return {
                "path": path,
                "search": "\n".join(body[s + 1 : divider]),
                "replace": "\n".join(body[divider + 1 : end]),
            }
    return {"path": path, "content": _tidy(body)}


def _tidy(lines: Iterable[str]) -> str:
    """Lines joined, with runs of blank lines cut to one and none at either end."""
    out: list[str] = []
    for line in lines:
        if not line.strip() and (not out or not out[-1].strip()):
            continue
        out.append(line.rstrip())
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out)
