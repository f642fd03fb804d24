"""The attempt logs on a task page, read as the agent's conversation (pure rendering).

Each attempt's log batches are parsed by :func:`bot.agents.transcript.parse_transcript` and
shown as a list of entries — messages as blocks, tool calls and their results folded
(``<details>``), errors highlighted, the worker's notes muted — each with the time its batch
was stored. A search box (shown by ``static/transcript.js``, which filters the entries) sits
above; each attempt links its raw log (``/api/tasks/{id}/logs.txt``). While the task runs,
its newest attempt's list carries ``data-follow`` and ``data-after`` (the last batch's seq):
``transcript.js`` follows it over ``/api/tasks/{id}/logs/stream``, whose events carry entries
rendered here too (:func:`render_entries`).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from bot.agents.transcript import Entry, EntryKind, parse_transcript
from bot.store.base import LogBatch
from bot.tasks.model import Status, Task
from bot.web import views
from bot.web.pages.html import e

LOG_LINES_SHOWN = 2000  # per attempt, the newest; the raw log has them all

NO_LOGS = "No log lines yet."
SEARCH_LABEL = "Search the logs"
SEARCH_PLACEHOLDER = "text in messages, tool calls, output…"
ATTEMPT_HEADING = "Attempt {number}"
LINE_COUNT = "{count:,} lines"
RAW_LOG = "Raw log"
DOWNLOAD_RAW = "Download raw log"
CUT_NOTE = "Showing the last {shown:,} of {total:,} lines; the raw log has them all."
FOLLOWING = "following live"
NO_OUTPUT = "(no output)"
RESULT_LINES = "({count:,} lines)"
RESULT_LINE = "(1 line)"
#: Who or what an entry is, shown before it.
KIND_LABELS: Mapping[EntryKind, str] = {
    EntryKind.MESSAGE: "agent",
    EntryKind.PROMPT: "prompt",
    EntryKind.THINKING: "thinking",
    EntryKind.TOOL_CALL: "tool",
    EntryKind.TOOL_RESULT: "result",
    EntryKind.ERROR: "error",
    EntryKind.SUMMARY: "totals",
    EntryKind.INFO: "agent CLI",
    EntryKind.NOTE: "patchwright",
    EntryKind.RAW: "output",
}
FAILED_RESULT = "failed"
#: The argument of a tool call shown in its one-line summary, the first one it has.
BRIEF_ARGUMENTS = ("command", "file_path", "path", "pattern", "query", "url", "description")
BRIEF_CHARS = 120


# -- one entry -----------------------------------------------------------------------------


def stamp(at: datetime) -> str:
    """A ``<time>``: the UTC time of day, the date and zone on hover."""
    return (f'<time datetime="{e(at.isoformat())}" title="{e(at.strftime("%Y-%m-%d %H:%M:%S UTC"))}">'
            f"{e(at.strftime('%H:%M:%S'))}</time>")


def _arguments_text(arguments: Mapping[str, Any] | str | None) -> str:
    if arguments is None:
        return ""
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments, indent=2, ensure_ascii=False)


def tool_brief(entry: Entry) -> str:
    """The one-line gist of a tool call: its first telling argument, shortened."""
    args = entry.arguments
    if isinstance(args, str):
        value = args
    elif isinstance(args, Mapping):
        value = next((str(args[k]) for k in BRIEF_ARGUMENTS if isinstance(args.get(k), (str, int, float))), "")
        if not value and isinstance(args.get("changes"), list):
            value = ", ".join(str(c.get("path", "")) for c in args["changes"] if isinstance(c, Mapping))
    else:
        value = ""
    return shorten(value)


def shorten(text: str) -> str:
    """``text`` on one line, at most :data:`BRIEF_CHARS` characters."""
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= BRIEF_CHARS else one_line[: BRIEF_CHARS - 1] + "…"


def summary_text(entry: Entry) -> str:
    """A summary's figures in words: cost, duration, turns, tokens."""
    f = entry.facts
    parts = []
    if "cost_usd" in f:
        parts.append(f"${float(f['cost_usd']):.4f}")
    if "duration_ms" in f:
        parts.append(f"{float(f['duration_ms']) / 1000:.1f} s")
    if "turns" in f:
        parts.append(f"{int(f['turns'])} turns")
    if "input_tokens" in f:
        cached = f" ({int(f['cached_input_tokens']):,} cached)" if f.get("cached_input_tokens") else ""
        parts.append(f"{int(f['input_tokens']):,} tokens in{cached}")
    if "output_tokens" in f:
        parts.append(f"{int(f['output_tokens']):,} out")
    if f.get("reasoning_tokens"):
        parts.append(f"{int(f['reasoning_tokens']):,} reasoning")
    return " · ".join(parts + ([entry.text] if entry.text else []))


def _body(entry: Entry) -> str:
    kind = entry.kind
    if kind is EntryKind.TOOL_CALL:
        brief = tool_brief(entry)
        args = _arguments_text(entry.arguments)
        return (
            f'<details class="tool"><summary><span class="tool-name">{e(entry.tool or "?")}</span>'
            + (f' <code class="brief">{e(brief)}</code>' if brief else "")
            + "</summary>"
            + (f"<pre>{e(args)}</pre>" if args else "")
            + "</details>"
        )
    if kind is EntryKind.TOOL_RESULT:
        text = entry.text.rstrip("\n")
        count = len(text.splitlines())
        if count <= 1 and len(text) <= BRIEF_CHARS:
            shown = e(text) if text else f'<span class="muted">{e(NO_OUTPUT)}</span>'
            return f'<div class="text result">{shown}</div>'
        failed = f' <span class="error">{e(FAILED_RESULT)}</span>' if entry.is_error else ""
        size = RESULT_LINE if count == 1 else RESULT_LINES.format(count=count)
        return (f'<details class="result"><summary><code class="brief">{e(shorten(text))}</code> '
                f'<span class="muted">{e(size)}</span>{failed}</summary><pre>{e(text)}</pre></details>')
    if kind is EntryKind.THINKING:
        return f'<details class="thinking"><summary>…</summary><div class="text">{e(entry.text)}</div></details>'
    if kind is EntryKind.SUMMARY:
        return f'<div class="text">{e(summary_text(entry))}</div>'
    if kind is EntryKind.RAW:
        return f'<div class="text mono">{e(entry.text)}</div>'
    return f'<div class="text">{e(entry.text)}</div>'


def render_entry(entry: Entry, at: datetime | None) -> str:
    """One ``<li>`` of a transcript: its time, who or what, and the body."""
    error = " is-error" if entry.is_error or entry.kind is EntryKind.ERROR else ""
    when = stamp(at) if at is not None else ""
    return (
        f'<li class="entry k-{e(entry.kind.value)}{error}">{when}'
        f'<span class="who">{e(KIND_LABELS[entry.kind])}</span>{_body(entry)}</li>'
    )


def render_entries(batches: Sequence[LogBatch], *, agent: str) -> str:
    """The ``<li>`` entries of ``batches`` (one attempt's, in order), each with its batch's time."""
    lines: list[str] = []
    starts: list[int] = []
    for batch in batches:
        starts.append(len(lines))
        lines.extend(batch.lines)
    entries = parse_transcript(lines, agent=agent)
    return "".join(
        render_entry(entry, batches[bisect.bisect_right(starts, entry.line) - 1].at if batches else None)
        for entry in entries
    )


# -- the logs section ----------------------------------------------------------------------


def raw_log_path(task_id: str, attempt: int, *, inline: bool = False) -> str:
    query = {"attempt": attempt, **({"inline": 1} if inline else {})}
    return f"/api{views.task_path(task_id)}/logs.txt?{urlencode(query)}"


def stream_path(task_id: str) -> str:
    return f"/api{views.task_path(task_id)}/logs/stream"


def shown_batches(batches: Sequence[LogBatch], limit: int = LOG_LINES_SHOWN) -> list[LogBatch]:
    """The newest whole batches holding at most ``limit`` lines (at least the newest batch)."""
    shown: list[LogBatch] = []
    count = 0
    for batch in reversed(batches):
        if shown and count + len(batch.lines) > limit:
            break
        shown.append(batch)
        count += len(batch.lines)
    shown.reverse()
    return shown


def group_batches(batches: Sequence[LogBatch]) -> dict[int, list[LogBatch]]:
    """Batches per attempt number, in order."""
    grouped: dict[int, list[LogBatch]] = {}
    for batch in batches:
        grouped.setdefault(batch.attempt, []).append(batch)
    return grouped


def render_logs(task: Task, batches: Sequence[LogBatch]) -> str:
    """Every attempt's transcript (the newest open), a search box, raw log links; the newest
    attempt followed live while the task runs (the running attempt has its list from its
    start, before its first line)."""
    by_attempt = group_batches(batches)
    following = task.status is Status.RUNNING
    if following:
        by_attempt.setdefault(task.attempt, [])
    if not by_attempt:
        return f'<p class="empty">{e(NO_LOGS)}</p>'
    last = max(by_attempt)
    search = (
        '<div class="log-search" hidden>'
        f'<label for="log-search">{e(SEARCH_LABEL)}</label> '
        f'<input type="search" id="log-search" placeholder="{e(SEARCH_PLACEHOLDER)}" autocomplete="off">'
        ' <output class="matches" for="log-search" aria-live="polite"></output></div>'
    )
    parts = [search]
    for number in sorted(by_attempt):
        all_batches = by_attempt[number]
        shown = shown_batches(all_batches)
        total = sum(len(b.lines) for b in all_batches)
        shown_lines = sum(len(b.lines) for b in shown)
        cut = (f'<p class="muted">{e(CUT_NOTE.format(shown=shown_lines, total=total))}</p>'
               if shown_lines < total else "")
        follow = following and number == last
        attrs = (f' data-attempt="{number}" data-after="{all_batches[-1].seq if all_batches else 0}"'
                 + (f' data-follow="1" data-stream="{e(stream_path(task.id))}"' if follow else ""))
        live = f' <span class="following">{e(FOLLOWING)}</span>' if follow else ""
        parts.append(
            f'<details class="log" id="log-{number}"{" open" if number == last else ""}>'
            f"<summary>{e(ATTEMPT_HEADING.format(number=number))} "
            f'<span class="muted">({e(LINE_COUNT.format(count=total))})</span>{live}</summary>'
            f'<p class="log-links"><a href="{e(raw_log_path(task.id, number, inline=True))}">{e(RAW_LOG)}</a> · '
            f'<a href="{e(raw_log_path(task.id, number))}" download>{e(DOWNLOAD_RAW)}</a></p>'
            f'{cut}<ol class="transcript"{attrs}>{render_entries(shown, agent=task.agent)}</ol></details>'
        )
    return "".join(parts)
