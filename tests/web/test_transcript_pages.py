"""The task page's logs as a transcript: the pure renderer over the real CLIs' recorded logs,
the raw log download and the live follow stream over HTTP (both stores)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.agents.transcript import Entry, EntryKind
from bot.store.base import Attempt, LogBatch
from bot.tasks.model import RetryKind, Status, Task
from bot.web import log_stream
from bot.web.log_stream import parse_after, raw_log_filename
from bot.web.pages.logs import (
    render_entries,
    render_logs,
    shown_batches,
    summary_text,
    tool_brief,
)
from tests.web.conftest import make_task, move

FIXTURES = Path(__file__).parents[1] / "agents" / "fixtures" / "transcripts"
T0 = datetime(2026, 12, 7, 14, 3, 18, tzinfo=UTC)


def batches_of(name: str, *, attempt: int = 1, size: int = 5) -> list[LogBatch]:
    lines = (FIXTURES / f"{name}.log").read_text().splitlines()
    return [
        LogBatch(seq=10 + i, attempt=attempt, at=T0 + timedelta(seconds=i), lines=tuple(lines[i * size:(i + 1) * size]))
        for i in range((len(lines) + size - 1) // size)
    ]


def task(agent: str, status: Status = Status.REVIEW) -> Task:
    return Task(id="task_1", repo="o/r", installation_id=1, issue_number=3, title="t", agent=agent, status=status)


def test_a_claude_log_renders_as_a_conversation_with_times() -> None:
    html = render_logs(task("claude"), batches_of("claude"))
    assert html.count('<li class="entry') == 17
    assert ('<details class="tool"><summary><span class="tool-name">Read</span> '
            '<code class="brief">/workspace/repo/src/app.py</code></summary>') in html
    assert '<span class="tool-name">Bash</span> <code class="brief">git status --porcelain</code>' in html
    assert '<li class="entry k-message"><time datetime="2026-12-07T14:03:20+00:00" title="2026-12-07 14:03:20 UTC">' \
           '14:03:20</time><span class="who">agent</span><div class="text">Changed the greeting to hello.</div>' in html
    assert "$0.0532 · 0.3 s · 4 turns · 12,500 tokens in (8,000 cached) · 260 out" in html
    assert '&quot;content&quot;: &quot;def greet(name):\\n    return &#x27;hello &#x27; + name\\n&quot;' in html
    assert 'href="/api/tasks/task_1/logs.txt?attempt=1&amp;inline=1">Raw log</a>' in html
    assert 'href="/api/tasks/task_1/logs.txt?attempt=1" download>Download raw log</a>' in html
    assert '<label for="log-search">Search the logs</label>' in html and 'id="log-search"' in html
    assert "data-follow" not in html  # not running


def test_codex_and_aider_logs_render_their_tool_calls() -> None:
    codex = render_logs(task("codex"), batches_of("codex"))
    assert codex.count('<span class="tool-name">shell</span>') == 2
    assert '<code class="brief">/bin/bash -lc &#x27;git status --porcelain&#x27;</code>' in codex
    assert '<div class="text result"> M src/app.py</div>' in codex
    assert "9,700 tokens in (5,500 cached) · 220 out" in codex
    aider = render_logs(task("aider"), batches_of("aider"))
    assert '<span class="tool-name">edit</span> <code class="brief">docs/greetings.md</code>' in aider
    assert '<div class="text">I will document the greeting.</div>' in aider
    assert '<div class="text result">Applied edit to docs/greetings.md</div>' in aider


def test_a_running_task_s_newest_attempt_is_followed_and_older_ones_fold() -> None:
    batches = batches_of("codex", attempt=1) + [LogBatch(seq=99, attempt=2, at=T0, lines=("[patchwright] attempt 2",))]
    html = render_logs(task("codex", Status.RUNNING), batches)
    assert '<details class="log" id="log-1"><summary>' in html  # closed
    assert ('<ol class="transcript" data-attempt="2" data-after="99" data-follow="1" '
            'data-stream="/api/tasks/task_1/logs/stream">') in html
    assert '<ol class="transcript" data-attempt="1" data-after="13">' in html
    assert render_logs(task("codex"), []) == '<p class="empty">No log lines yet.</p>'


def test_a_running_attempt_without_lines_yet_is_followed_from_its_start() -> None:
    running = task("codex", Status.RUNNING).replace(attempt=2)
    html = render_logs(running, batches_of("codex", attempt=1))  # attempt 2 has logged nothing yet
    assert ('<ol class="transcript" data-attempt="2" data-after="0" data-follow="1" '
            'data-stream="/api/tasks/task_1/logs/stream">') in html
    assert '<ol class="transcript" data-attempt="1" data-after="13">' in html  # not followed
    assert 'data-attempt="1" data-after="0" data-follow' in render_logs(task("codex", Status.RUNNING), [])


def test_hostile_log_text_is_escaped_everywhere() -> None:
    hostile = '<img src=x onerror=alert(1)>'
    lines = (
        hostile,
        json.dumps({"type": "assistant", "message": {"content": [
            {"type": "text", "text": hostile},
            {"type": "tool_use", "id": "1", "name": hostile, "input": {"command": hostile}}]}}),
        "[patchwright] " + hostile,
    )
    html = render_entries([LogBatch(seq=1, attempt=1, at=T0, lines=lines)], agent="")
    assert "<img" not in html and html.count("&lt;img src=x onerror=alert(1)&gt;") == 6


def test_long_logs_show_the_newest_batches_with_a_note() -> None:
    batches = [LogBatch(seq=i, attempt=1, at=T0, lines=tuple(f"line {i}.{j}" for j in range(600))) for i in range(1, 6)]
    assert [b.seq for b in shown_batches(batches)] == [3, 4, 5]
    assert [b.seq for b in shown_batches(batches, limit=10)] == [5]  # the newest, even when longer
    html = render_logs(task("command"), batches)
    assert "Showing the last 1,800 of 3,000 lines; the raw log has them all." in html
    assert "line 2.599" not in html and "line 3.0" in html


def test_tool_briefs_and_summaries() -> None:
    call = Entry(EntryKind.TOOL_CALL, tool="Bash", arguments={"description": "d", "command": "echo  a\nb" + "x" * 200})
    assert tool_brief(call).startswith("echo a b") and len(tool_brief(call)) == 120
    assert tool_brief(Entry(EntryKind.TOOL_CALL, arguments={"changes": [{"path": "a"}, {"path": "b"}]})) == "a, b"
    assert tool_brief(Entry(EntryKind.TOOL_CALL, arguments="raw text")) == "raw text"
    assert summary_text(Entry(EntryKind.SUMMARY, "Tokens: 1k sent")) == "Tokens: 1k sent"


def test_raw_log_file_names_and_stream_positions() -> None:
    assert raw_log_filename("task_01abc", 2) == "task_01abc-attempt-2.log"
    assert raw_log_filename('t"; x=/..', None) == "t___x__...log"
    assert parse_after(None, None) == 0 and parse_after("0", None) == 0 and parse_after("12", None) == 12
    assert parse_after("12", "40") == 40 and parse_after("50", "40") == 50 and parse_after(None, "junk") == 0


# -- over HTTP --------------------------------------------------------------------------------


async def running_task(store, now, *, lines=("[patchwright] attempt 1 (first) on worker w",)) -> Task:
    created, _ = await store.create_task(make_task("task_01run", "octo/widgets", 9, "Run it", now))
    created = await move(store, created, status=Status.RUNNING, attempt=1, agent="claude")
    await store.start_attempt(Attempt(task_id=created.id, number=1, kind=RetryKind.FIRST, started_at=now))
    await store.append_logs(created.id, 1, list(lines))
    return created


async def test_the_raw_log_downloads_as_text(store, clock, make_client, admin_token) -> None:
    running = await running_task(store, clock(), lines=["[patchwright] one", '{"type":"x"} <two>'])
    await store.append_logs(running.id, 2, ["second attempt"])
    client = await make_client(store, clock=clock)
    resp = await client.get(f"/api/tasks/{running.id}/logs.txt?attempt=1")
    assert resp.status == 200 and resp.content_type == "text/plain"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="task_01run-attempt-1.log"'
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert await resp.text() == '[patchwright] one\n{"type":"x"} <two>\n'
    inline = await client.get(f"/api/tasks/{running.id}/logs.txt?inline=1")
    assert inline.headers["Content-Disposition"] == 'inline; filename="task_01run.log"'
    assert (await inline.text()).endswith("<two>\nsecond attempt\n")
    assert (await client.get("/api/tasks/task_nope/logs.txt")).status == 404
    assert (await client.get(f"/api/tasks/{running.id}/logs.txt?attempt=x")).status == 400

    private = await make_client(store, clock=clock, admin_token=admin_token, private_read_api=True)
    for path in (f"/api/tasks/{running.id}/logs.txt", f"/api/tasks/{running.id}/logs/stream"):
        assert (await private.get(path)).status == 401
    authorized = await private.get(f"/api/tasks/{running.id}/logs.txt",
                                   headers={"Authorization": f"Bearer {admin_token}"})
    assert authorized.status == 200


async def read_sse(resp) -> tuple[str, str, dict]:
    """The next SSE message's id, event and data (comments skipped)."""
    event_id = name = ""
    while True:
        line = (await resp.content.readline()).decode()
        assert line, "the stream ended"
        line = line.rstrip("\n")
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name:
            return event_id, name, json.loads(line[6:])


async def test_live_follow_sends_a_new_batch_within_a_second(store, clock, make_client) -> None:
    running = await running_task(store, clock())
    [first] = await store.read_log_batches(running.id)
    client = await make_client(store, clock=clock)
    resp = await client.get(f"/api/tasks/{running.id}/logs/stream?attempt=1&after={first.seq}")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    await asyncio.wait_for(resp.content.readuntil(b": connected\n\n"), 2)
    started = time.monotonic()
    line = json.dumps({"type": "assistant", "message": {"content": [{"type": "text", "text": "Working <on> it"}]}})
    await store.append_logs(running.id, 1, [line])
    event_id, name, data = await asyncio.wait_for(read_sse(resp), 2)
    assert time.monotonic() - started < 1.0
    assert name == "log" and data["attempt"] == 1 and event_id == str(data["seq"]) and data["seq"] > first.seq
    assert '<span class="who">agent</span><div class="text">Working &lt;on&gt; it</div>' in data["html"]
    resp.close()

    # a reconnect resumes after the Last-Event-ID; from the start without one
    again = await client.get(f"/api/tasks/{running.id}/logs/stream?attempt=1", headers={"Last-Event-ID": event_id})
    await store.append_logs(running.id, 1, ["[patchwright] next"])
    _, _, data = await asyncio.wait_for(read_sse(again), 2)
    assert "next" in data["html"] and "Working" not in data["html"]
    again.close()
    fresh = await client.get(f"/api/tasks/{running.id}/logs/stream")  # the task's current attempt
    seen = [(await asyncio.wait_for(read_sse(fresh), 2))[2]["html"] for _ in range(3)]
    assert "attempt 1 (first)" in seen[0] and "Working" in seen[1] and "next" in seen[2]
    fresh.close()


async def test_the_stream_ends_once_the_attempt_is_over(store, clock, make_client, monkeypatch) -> None:
    monkeypatch.setattr(log_stream, "END_GRACE_S", 0.2)
    running = await running_task(store, clock())
    client = await make_client(store, clock=clock)
    resp = await client.get(f"/api/tasks/{running.id}/logs/stream?attempt=1")
    assert (await asyncio.wait_for(read_sse(resp), 2))[1] == "log"
    await move(store, running, status=Status.REVIEW)
    await store.append_logs(running.id, 1, ["[patchwright] pull request #4"])  # stored after the move
    _, name, data = await asyncio.wait_for(read_sse(resp), 3)
    assert name == "log" and "pull request #4" in data["html"]
    _, name, data = await asyncio.wait_for(read_sse(resp), 3)
    assert name == "end" and data["attempt"] == 1
    assert (await asyncio.wait_for(resp.content.read(), 2)).strip() == b""


async def test_open_log_streams_end_when_the_app_shuts_down(store, clock, make_client) -> None:
    running = await running_task(store, clock())
    client = await make_client(store, clock=clock)
    resp = await client.get(f"/api/tasks/{running.id}/logs/stream?attempt=1")
    await asyncio.wait_for(resp.content.readuntil(b": connected\n\n"), 2)
    started = time.monotonic()
    await client.server.close()
    assert time.monotonic() - started < 2.0
    rest = await asyncio.wait_for(resp.content.read(), 2)
    assert b"event: end" not in rest


async def test_the_task_page_shows_the_transcript_and_loads_its_script(store, clock, make_client) -> None:
    line = json.dumps({"type": "assistant", "message": {"content": [
        {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "make test"}}]}})
    running = await running_task(store, clock(), lines=["[patchwright] attempt 1", line])
    client = await make_client(store, clock=clock)
    page = await (await client.get(f"/tasks/{running.id}")).text()
    assert '<script src="/static/transcript.js" defer></script>' in page
    assert '<span class="tool-name">Bash</span> <code class="brief">make test</code>' in page
    assert re.search(r'<ol class="transcript" data-attempt="1" data-after="\d+" data-follow="1"', page)
    board = await (await client.get("/")).text()
    assert "transcript.js" not in board
    script = await client.get("/static/transcript.js")
    assert script.status == 200 and "EventSource" in await script.text()


@pytest.mark.parametrize("name", ["claude", "codex", "aider"])
def test_every_recorded_line_is_somewhere_in_the_rendering(name: str) -> None:
    """Nothing is dropped: each fixture line's words appear in the page (HTML-unescaped)."""
    import html as htmllib

    batches = batches_of(name)
    page = htmllib.unescape(render_logs(task(name), batches))
    for batch in batches:
        for line in batch.lines:
            if line.startswith("[patchwright] "):
                assert line[len("[patchwright] "):] in page
            elif not line.startswith("{") and line.strip() and not line.startswith("```"):
                assert line.strip() in page, line


class LogsFailing:
    """The store, except that reading log batches fails (a database that went away mid-stream)."""

    def __init__(self, store) -> None:
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def read_log_batches(self, *args, **kwargs):
        raise RuntimeError("database went away")


async def test_a_store_failing_mid_stream_ends_the_stream(store, clock, make_client) -> None:
    running = await running_task(store, clock())
    client = await make_client(LogsFailing(store), clock=clock)
    resp = await client.get(f"/api/tasks/{running.id}/logs/stream?attempt=1")
    assert resp.status == 200
    body = await asyncio.wait_for(resp.content.read(), 2)
    assert body.endswith(b": connected\n\n")  # then the end of the stream; the browser reconnects
