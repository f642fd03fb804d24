"""The attempt log read as the agent's conversation (bot.agents.transcript).

The fixtures in ``fixtures/transcripts`` are the stored log lines (``store.read_logs``) of the
first attempt of a real run of each CLI — Claude Code 2.1.197, Codex 0.171.0, aider 0.86.2 —
against the scripted model server, recorded from these end-to-end tests:

    tests/e2e/test_real_claude.py::test_label_to_pr_then_ci_retry_and_resumed_feedback_with_the_real_claude[none]
    tests/e2e/test_real_codex.py::test_label_to_pr_then_ci_retry_and_resumed_feedback_with_the_real_codex[none]
    tests/e2e/test_real_aider.py::test_label_to_a_pr_with_exactly_the_scripted_change[none]

To record them again, run those tests with a throwaway pytest plugin (``-p``, on PYTHONPATH)
that wraps ``SQLiteStore.append_logs`` to also append each stored line to a file per task and
attempt; copy attempt 1 of each here as ``claude.log``, ``codex.log`` and ``aider.log``, then
replace the machine's paths (the checkout's ``…/data/work/task_…`` becomes ``/workspace/repo``,
the agent's ``…/data/homes/task_…`` ``/workspace/home``, the worker's host name ``worker-1``)
and check that no token-like string is left in them.
"""

from __future__ import annotations

import json
from pathlib import Path

from bot.agents.transcript import WORKER_PREFIX, Entry, EntryKind, parse_transcript
from bot.worker.attempt_log import LOG_PREFIX

FIXTURES = Path(__file__).parent / "fixtures" / "transcripts"
K = EntryKind


def fixture(name: str) -> list[str]:
    return (FIXTURES / f"{name}.log").read_text().splitlines()


def kinds(entries: list[Entry]) -> list[str]:
    return [e.kind.value for e in entries]


def test_the_worker_prefix_is_the_worker_s() -> None:
    assert WORKER_PREFIX == LOG_PREFIX


def test_a_real_claude_attempt_reads_as_messages_and_tool_calls() -> None:
    entries = parse_transcript(fixture("claude"), agent="claude")
    assert kinds(entries) == ["note"] * 5 + ["info"] + ["tool_call", "tool_result"] * 3 + [
        "message", "summary"] + ["note"] * 3
    assert entries[0].text == "attempt 1 (first) on worker worker-1"
    assert entries[5].text == (
        "Claude Code 2.1.197 · model claude-sonnet-4-5 · session dff4e6af-504f-40a3-8985-4c04790aeb00"
    )
    read, write, bash = (e for e in entries if e.kind is K.TOOL_CALL)
    assert (read.tool, read.arguments) == ("Read", {"file_path": "/workspace/repo/src/app.py"})
    assert write.tool == "Write" and write.arguments == {
        "file_path": "/workspace/repo/src/app.py", "content": "def greet(name):\n    return 'hello ' + name\n"}
    assert bash.tool == "Bash" and bash.arguments["command"] == "git status --porcelain"
    results = [e for e in entries if e.kind is K.TOOL_RESULT]
    assert [r.call_id for r in results] == [read.call_id, write.call_id, bash.call_id]
    assert results[0].text == "1\tdef greet(name):\n2\t    return 'hi ' + name\n3\t"
    assert results[2].text == " M src/app.py" and not any(r.is_error for r in results)
    assert entries[12].text == "Changed the greeting to hello."
    assert dict(entries[13].facts) == {
        "cost_usd": 0.05317499999999999, "duration_ms": 260, "turns": 4,
        "input_tokens": 12500, "cached_input_tokens": 8000, "output_tokens": 260,
    }
    assert [e.line for e in entries] == list(range(17))  # one entry a line here


def test_a_real_codex_attempt_reads_as_commands_and_their_output() -> None:
    lines = fixture("codex")
    entries = parse_transcript(lines, agent="codex")
    assert kinds(entries) == ["note"] * 5 + ["info"] + ["tool_call", "tool_result"] * 2 + [
        "message", "summary"] + ["note"] * 3
    assert entries[5].text == "Codex thread 01a250d0-fa16-7303-8e63-de6b44c5b4f2"
    first, status = (e for e in entries if e.kind is K.TOOL_CALL)
    assert first.tool == "shell" and first.call_id == "item_0" and first.line == 7  # item.started
    assert first.arguments["command"].startswith("/bin/bash -lc \"mkdir -p src && printf %s 'def greet")
    assert status.arguments == {"command": "/bin/bash -lc 'git status --porcelain'"}
    result = entries[9]
    assert (result.kind, result.call_id, result.text, result.is_error, result.line) == (
        K.TOOL_RESULT, "item_1", " M src/app.py\n", False, 10)
    assert entries[10].text == "Changed the greeting to hello."
    assert dict(entries[11].facts) == {
        "input_tokens": 9700, "cached_input_tokens": 5500, "output_tokens": 220, "reasoning_tokens": 0}
    assert not any(e.kind is K.RAW for e in entries)  # turn.started carries nothing to show


def test_a_real_aider_attempt_reads_as_banner_message_edit_and_usage() -> None:
    entries = parse_transcript(fixture("aider"), agent="aider")
    assert kinds(entries) == ["note"] * 5 + ["info"] * 7 + ["message", "tool_call", "summary", "tool_result"] + [
        "note"] * 3
    assert [e.text for e in entries[9:12]] == [
        "Model: openai/patchwright-scripted with whole edit format", "Git repo: .git with 5 files",
        "Repo-map: using 1024 tokens, auto refresh"]
    assert entries[12].text == "I will document the greeting."
    edit = entries[13]
    assert edit.tool == "edit" and edit.arguments == {
        "path": "docs/greetings.md", "content": "# Greetings\n\nThe app greets with *hello*."}
    assert entries[14].text == "Tokens: 24k sent, 1.5k received."
    assert entries[15].text == "Applied edit to docs/greetings.md"


def test_the_format_is_told_from_the_lines_without_the_preset() -> None:
    for name in ("claude", "codex", "aider"):
        lines = fixture(name)
        assert parse_transcript(lines) == parse_transcript(lines, agent=name)


def test_aider_search_replace_prompt_echo_commit_and_error() -> None:
    lines = [
        "Aider v0.86.2",
        "> Fix the greeting",
        "> please",
        "",
        "src/app.py",
        "```python",
        "<<<<<<< SEARCH",
        "    return 'hi ' + name",
        "=======",
        "    return 'hello ' + name",
        ">>>>>>> REPLACE",
        "```",
        "Commit 1a2b3c4 fix: greet with hello",
        "litellm.APIError: the server answered 500",
        "Here is some code:",
        "```",
        "x = 1",
        "```",
    ]
    entries = parse_transcript(lines, agent="aider")
    assert kinds(entries) == ["info", "prompt", "tool_call", "tool_result", "error", "message"]
    assert entries[1].text == "Fix the greeting\nplease"
    assert entries[2].arguments == {
        "path": "src/app.py", "search": "    return 'hi ' + name", "replace": "    return 'hello ' + name"}
    assert entries[3].text == "Commit 1a2b3c4 fix: greet with hello"
    assert entries[4].is_error
    assert entries[5].text == "Here is some code:\n```\nx = 1\n```"


def test_claude_thinking_errors_and_a_failed_run() -> None:
    lines = [
        json.dumps({"type": "assistant", "message": {"content": [
            {"type": "thinking", "thinking": "Look first."},
            {"type": "text", "text": "Reading."},
            {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "false"}}]}}),
        json.dumps({"type": "user", "message": {"content": [
            {"type": "tool_result", "tool_use_id": "t1", "is_error": True,
             "content": [{"type": "text", "text": "Exit code 1"}]}]}}),
        json.dumps({"type": "system", "subtype": "api_retry", "error": "overloaded"}),
        json.dumps({"type": "result", "subtype": "error_max_budget_usd", "is_error": True, "total_cost_usd": 1.5,
                    "errors": ["budget exceeded"]}),
    ]
    entries = parse_transcript(lines)
    assert kinds(entries) == ["thinking", "message", "tool_call", "tool_result", "info", "error", "summary"]
    assert entries[0].text == "Look first." and entries[2].arguments == {"command": "false"}
    assert entries[3].is_error and entries[3].text == "Exit code 1" and entries[3].call_id == "t1"
    assert entries[4].text == "system: api_retry — overloaded"
    assert entries[5].text == "budget exceeded" and entries[6].is_error
    assert entries[6].facts == {"cost_usd": 1.5}
    assert [e.line for e in entries] == [0, 0, 0, 1, 2, 3, 3]


def test_codex_failed_commands_file_changes_reasoning_and_errors() -> None:
    lines = [
        json.dumps({"type": "item.completed", "item": {"id": "r", "type": "reasoning", "text": "Plan it."}}),
        json.dumps({"type": "item.completed", "item": {
            "id": "c", "type": "command_execution", "command": "pytest", "aggregated_output": "1 failed\n",
            "exit_code": 1, "status": "failed"}}),
        json.dumps({"type": "item.completed", "item": {
            "id": "f", "type": "file_change", "changes": [{"path": "a.py", "kind": "update"}], "status": "completed"}}),
        json.dumps({"type": "turn.failed", "error": {"message": "stream disconnected"}}),
        json.dumps({"type": "error", "message": "Reconnecting... 1/5"}),
        json.dumps({"type": "item.completed", "item": {"id": "z", "type": "mystery"}}),
    ]
    entries = parse_transcript(lines)
    assert kinds(entries) == [
        "thinking", "tool_call", "tool_result", "tool_call", "tool_result", "error", "error", "raw"]
    assert entries[1].arguments == {"command": "pytest"}  # completed without started: both
    assert entries[2].is_error and entries[2].text == "1 failed\nexit code 1"
    assert entries[3].tool == "file_change" and entries[3].arguments == {"changes": [{"path": "a.py", "kind": "update"}]}
    assert entries[4].text == "completed" and not entries[4].is_error
    assert [e.text for e in entries[5:7]] == ["stream disconnected", "Reconnecting... 1/5"]


def test_lines_not_understood_are_kept_verbatim() -> None:
    lines = ["plain output", '{"not": "an event"}', "{broken json", '{"type": "stream_event", "x": 1}', ""]
    entries = parse_transcript(lines, agent="command")
    assert [(e.kind, e.text, e.line) for e in entries] == [(K.RAW, line, i) for i, line in enumerate(lines)]
