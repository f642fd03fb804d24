"""Agent presets: command lines, output parsing and classification from structured fields."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bot.agents.presets import (
    CODEX_DEFAULT_MODEL,
    AiderPreset,
    ClaudePreset,
    CodexPreset,
    CommandPreset,
    Invocation,
    Preset,
    PriceTable,
    StreamState,
    TokenPrices,
    TokenUsage,
    get_preset,
    render_command,
)
from bot.agents.process import KillReason, run_agent
from bot.agents.result import AgentOutcome, AgentResult
from bot.agents.sandbox import agent_env
from bot.agents.signal import SignalRead, parse_signal, read_signal

INV = Invocation(prompt="Fix the bug.\n", prompt_file="/tmp/p/prompt.md", workdir="/tmp/w", model="sonnet")
NO_SIGNAL = SignalRead()


def feed(preset: Preset, events: list[dict[str, Any] | str]) -> StreamState:
    state = preset.new_state()
    for event in events:
        preset.parse_line(event if isinstance(event, str) else json.dumps(event), state)
    return state


# -- Claude Code ---------------------------------------------------------------------------

SESSION = "4d524963-9ce1-4375-919c-8c29cb6ec090"
INIT = {"type": "system", "subtype": "init", "cwd": "/tmp/w", "session_id": SESSION, "model": "claude-sonnet"}


def assistant(text: str, error: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "assistant",
        "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
        "session_id": SESSION,
    }
    if error:
        event["error"] = error
    return event


def result(**fields: Any) -> dict[str, Any]:
    base = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "api_error_status": None,
        "num_turns": 3,
        "result": "Added the --verbose flag and a test.",
        "session_id": SESSION,
        "total_cost_usd": 0.4213,
    }
    return base | fields


def test_claude_build_new_and_resumed() -> None:
    preset = ClaudePreset()
    launch = preset.build(INV)
    assert launch.argv == [
        "claude", "-p", "--output-format", "stream-json", "--verbose",
        "--permission-mode", "bypassPermissions", "--model", "sonnet",
    ]  # fmt: skip
    assert launch.stdin == b"Fix the bug.\n"
    assert launch.resumable and not launch.resumed
    assert launch.env["IS_SANDBOX"] == "1"
    assert not any("KEY" in k or "TOKEN" in k for k in launch.env)  # no secrets in launch env
    resumed = preset.build(
        Invocation(prompt="p", prompt_file="f", workdir="w", session_id=SESSION, max_cost_usd=2.5)
    )
    assert resumed.argv[-4:] == ["--resume", SESSION, "--max-budget-usd", "2.5000"]
    assert "--model" not in resumed.argv and resumed.resumed


def test_claude_success() -> None:
    preset = ClaudePreset()
    state = feed(preset, [INIT, assistant("Working on it"), "some stderr noise", result()])
    assert state.session_id == SESSION and state.cost_usd == pytest.approx(0.4213)
    outcome = preset.finish(state, 0, NO_SIGNAL)
    assert outcome == AgentResult(
        AgentOutcome.DONE,
        summary="Added the --verbose flag and a test.",
        cost_usd=pytest.approx(0.4213),
        session_id=SESSION,
        exit_code=0,
    )
    with_signal = preset.finish(state, 0, parse_signal('{"status": "done", "summary": "Signal summary"}'))
    assert with_signal.summary == "Signal summary"


def test_claude_not_logged_in_is_a_config_error_with_the_cli_message() -> None:
    # The exact shape Claude Code 2.1.197 prints without credentials (trimmed).
    lines = [
        INIT,
        assistant("Not logged in · Please run /login", error="authentication_failed"),
        result(is_error=True, result="Not logged in · Please run /login", total_cost_usd=0),
    ]
    preset = ClaudePreset()
    outcome = preset.finish(feed(preset, lines), 1, NO_SIGNAL)
    assert outcome.outcome is AgentOutcome.CONFIG_ERROR
    assert outcome.error == "Not logged in · Please run /login"
    assert outcome.exit_code == 1 and outcome.session_id == SESSION


@pytest.mark.parametrize(
    ("error", "status", "subtype", "expected"),
    [
        ("authentication_failed", None, "success", AgentOutcome.CONFIG_ERROR),
        ("billing_error", None, "success", AgentOutcome.CONFIG_ERROR),
        ("oauth_org_not_allowed", None, "success", AgentOutcome.CONFIG_ERROR),
        ("model_not_found", None, "success", AgentOutcome.CONFIG_ERROR),
        (None, 401, "success", AgentOutcome.CONFIG_ERROR),
        (None, 403, "success", AgentOutcome.CONFIG_ERROR),
        ("rate_limit", None, "success", AgentOutcome.TRANSIENT),
        ("overloaded", None, "success", AgentOutcome.TRANSIENT),
        ("server_error", None, "success", AgentOutcome.TRANSIENT),
        (None, 429, "success", AgentOutcome.TRANSIENT),
        (None, 529, "success", AgentOutcome.TRANSIENT),
        (None, 503, "success", AgentOutcome.TRANSIENT),
        ("invalid_request", 400, "success", AgentOutcome.AGENT_ERROR),
        ("max_output_tokens", None, "success", AgentOutcome.AGENT_ERROR),
        (None, None, "error_max_turns", AgentOutcome.AGENT_ERROR),
        (None, None, "error_during_execution", AgentOutcome.AGENT_ERROR),
        (None, None, "error_max_budget_usd", AgentOutcome.KILLED_COST),
    ],
)
def test_claude_error_classification(
    error: str | None, status: int | None, subtype: str, expected: AgentOutcome
) -> None:
    preset = ClaudePreset()
    lines = [
        INIT,
        assistant("API Error", error=error),
        result(is_error=True, subtype=subtype, api_error_status=status, result="API Error: boom"),
    ]
    outcome = preset.finish(feed(preset, lines), 1, NO_SIGNAL)
    assert outcome.outcome is expected
    assert outcome.error == "API Error: boom"


def test_claude_never_classifies_by_text() -> None:
    preset = ClaudePreset()
    noisy = [
        INIT,
        "Error: rate limit exceeded (429) overloaded",
        assistant("I hit a rate limit earlier"),
        result(is_error=True, result="rate limit, 429, overloaded, not logged in"),
    ]
    assert preset.finish(feed(preset, noisy), 1, NO_SIGNAL).outcome is AgentOutcome.AGENT_ERROR


def test_claude_recovered_error_does_not_count() -> None:
    preset = ClaudePreset()
    lines = [INIT, assistant("retrying", error="rate_limit"), assistant("done now"), result()]
    assert preset.finish(feed(preset, lines), 0, NO_SIGNAL).outcome is AgentOutcome.DONE


def test_claude_missing_session_uses_the_errors_list() -> None:
    preset = ClaudePreset()
    event = {
        "type": "result", "subtype": "error_during_execution", "is_error": True, "num_turns": 0,
        "session_id": "1111", "total_cost_usd": 0, "errors": ["No conversation found with session ID: 1111"],
    }  # fmt: skip
    outcome = preset.finish(feed(preset, [event]), 1, NO_SIGNAL)
    assert outcome.outcome is AgentOutcome.AGENT_ERROR
    assert outcome.error == "No conversation found with session ID: 1111"


def test_claude_without_a_result_event_uses_the_exit_code_and_output_tail() -> None:
    preset = ClaudePreset()
    state = feed(preset, ["--dangerously-skip-permissions cannot be used with root/sudo privileges"])
    outcome = preset.finish(state, 1, NO_SIGNAL)
    assert outcome.outcome is AgentOutcome.AGENT_ERROR
    assert "exited with code 1" in outcome.error and "root/sudo" in outcome.error
    assert preset.finish(state, -9, NO_SIGNAL, killed=KillReason.TIMEOUT).outcome is AgentOutcome.TIMEOUT


# -- Codex ---------------------------------------------------------------------------------

THREAD = "0199a213-81c0-7800-8aa1-bbab2a035a53"


def test_codex_build() -> None:
    preset = CodexPreset()
    fresh = preset.build(INV)
    assert fresh.argv == [
        "codex", "exec", "--json", "--skip-git-repo-check", "-c", 'sandbox_mode="workspace-write"',
        "-c", "features.plugins=false", "-c", "analytics.enabled=false", "-m", "sonnet", "-",
    ]  # fmt: skip
    assert fresh.stdin == b"Fix the bug.\n" and fresh.resumable and not fresh.resumed
    resumed = preset.build(
        Invocation(prompt="p", prompt_file="f", workdir="w", session_id=THREAD, sandboxed=True)
    )
    assert resumed.argv == [
        "codex", "exec", "resume", "--json", "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
        "-c", "features.plugins=false", "-c", "analytics.enabled=false", THREAD, "-",
    ]  # fmt: skip
    assert resumed.resumed


def test_codex_events_cost_and_summary() -> None:
    preset = CodexPreset(prices=TokenPrices(input=1.25, cached_input=0.125, output=10.0))
    state = feed(
        preset,
        [
            {"type": "thread.started", "thread_id": THREAD},
            {"type": "turn.started"},
            {"type": "item.completed", "item": {"id": "item_0", "type": "reasoning", "text": "thinking"}},
            {
                "type": "item.completed",
                "item": {"id": "item_1", "type": "command_execution", "command": "pytest", "exit_code": 0},
            },
            {
                "type": "item.completed",
                "item": {"id": "item_2", "type": "agent_message", "text": "Fixed the parser."},
            },
            {
                "type": "turn.completed",
                "usage": {"input_tokens": 1_000_000, "cached_input_tokens": 200_000, "output_tokens": 10_000},
            },
        ],
    )
    assert state.cost_usd == pytest.approx(0.8 * 1.25 + 0.2 * 0.125 + 0.01 * 10.0)
    outcome = preset.finish(state, 0, NO_SIGNAL)
    assert (outcome.outcome, outcome.summary, outcome.session_id) == (
        AgentOutcome.DONE,
        "Fixed the parser.",
        THREAD,
    )
    assert CodexPreset().finish(state, 0, NO_SIGNAL).cost_usd == pytest.approx(state.cost_usd)


def test_codex_failed_turn() -> None:
    preset = CodexPreset()
    state = feed(
        preset,
        [
            {"type": "thread.started", "thread_id": THREAD},
            {"type": "error", "message": "Reconnecting... 2/5"},
            {"type": "turn.failed", "error": {"message": "stream disconnected before completion"}},
            {"type": "error", "message": "Reconnecting... 3/5"},
        ],
    )
    outcome = preset.finish(state, 1, NO_SIGNAL)
    assert outcome.outcome is AgentOutcome.AGENT_ERROR
    assert outcome.error == "stream disconnected before completion"
    # Notices alone do not fail a run that exits cleanly.
    notices = feed(
        preset, [{"type": "error", "message": "Reconnecting... 1/5"}, {"type": "turn.completed", "usage": {}}]
    )
    assert preset.finish(notices, 0, NO_SIGNAL).outcome is AgentOutcome.DONE


CODEX_PRICES = TokenPrices(input=1.25, cached_input=0.125, output=10.0)
QUIET = {"features.plugins": False, "analytics.enabled": False}  # no calls but the model's


def codex_overrides(argv: list[str]) -> dict[str, Any]:
    """The ``-c key=value`` overrides of a Codex command line, the values read as TOML."""
    import tomllib

    values = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-c"]
    return {key: tomllib.loads(f"v = {value}")["v"] for key, _, value in (v.partition("=") for v in values)}


def test_codex_turns_openai_base_url_into_a_provider(tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": "sk-secret-1", "OPENAI_BASE_URL": "http://127.0.0.1:8080/v1", "HOME": "/h"}
    inv = dataclasses.replace(INV, workdir=str(tmp_path))  # no git dir
    argv = CodexPreset().build(dataclasses.replace(inv, env=env)).argv
    assert codex_overrides(argv) == {
        "sandbox_mode": "workspace-write",
        "model_provider": "patchwright",
        "model_providers.patchwright.name": "OPENAI_BASE_URL",
        "model_providers.patchwright.base_url": "http://127.0.0.1:8080/v1",
        "model_providers.patchwright.wire_api": "responses",
        "model_providers.patchwright.env_key": "OPENAI_API_KEY",
        **QUIET,
    }
    assert argv[-3:] == ["-m", "sonnet", "-"]
    assert not any("sk-secret" in arg for arg in argv)
    assert "sk-secret" not in repr(dataclasses.replace(inv, env=env))
    # The key under Codex's own name; a keyless local server; user information never on the line.
    other = {"CODEX_API_KEY": "k", "OPENAI_BASE_URL": 'https://user:pw@llm.example:8443/v1?x="y"'}
    overrides = codex_overrides(CodexPreset().build(dataclasses.replace(inv, env=other)).argv)
    assert overrides["model_providers.patchwright.env_key"] == "CODEX_API_KEY"
    assert overrides["model_providers.patchwright.base_url"] == 'https://llm.example:8443/v1?x="y"'
    keyless = codex_overrides(
        CodexPreset().build(dataclasses.replace(inv, env={"OPENAI_BASE_URL": "http://[::1]:9/v1"})).argv
    )
    assert "model_providers.patchwright.env_key" not in keyless
    # Without OPENAI_BASE_URL: OpenAI's endpoint for OPENAI_API_KEY (which Codex's built-in
    # provider does not read); Codex on its own with CODEX_API_KEY, or with no key at all.
    direct = codex_overrides(CodexPreset().build(dataclasses.replace(inv, env={"OPENAI_API_KEY": "k"})).argv)
    assert direct["model_providers.patchwright.base_url"] == "https://api.openai.com/v1"
    assert direct["model_providers.patchwright.env_key"] == "OPENAI_API_KEY"
    for own in ({"CODEX_API_KEY": "k"}, {"CODEX_API_KEY": "k", "OPENAI_API_KEY": "k"}, {}):
        argv = CodexPreset().build(dataclasses.replace(inv, env=own)).argv
        assert codex_overrides(argv) == {"sandbox_mode": "workspace-write", **QUIET}


def test_codex_prices_the_model_it_runs() -> None:
    table = PriceTable(
        {"gpt-5": TokenPrices(1.0, 0.1, 10.0), CODEX_DEFAULT_MODEL: TokenPrices(2.0, 0.2, 20.0)}
    )
    completed = {
        "type": "turn.completed",
        "usage": {"input_tokens": 1_000_000, "cached_input_tokens": 0, "output_tokens": 0},
    }
    for model, usd in (("gpt-5-codex", 1.0), ("", 2.0)):
        preset = CodexPreset(prices=table)
        preset.build(dataclasses.replace(INV, model=model))
        assert feed(preset, [completed]).cost_usd == pytest.approx(usd)
    # A model without a price (and no default): no cost rather than a made-up one.
    unpriced = CodexPreset(prices=PriceTable({"gpt-5": TokenPrices(1.0, 0.1, 10.0)}))
    unpriced.build(dataclasses.replace(INV, model="o9"))
    state = feed(unpriced, [completed])
    assert (state.cost_usd, state.input_tokens) == (0.0, 1_000_000)
    assert get_preset("codex", prices=table).prices is table


def write_rollout(
    home: Path, thread: str, totals: list[tuple[int, int, int]], day: str = "2026/12/07"
) -> Path:
    """A Codex session file as Codex 0.171 writes it (only the lines that matter here)."""
    path = home / ".codex" / "sessions" / day / f"rollout-2026-12-07T05-15-52-{thread}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [{"type": "session_meta", "payload": {"id": thread}}]
    for inp, cached, out in totals:
        usage = {
            "input_tokens": inp,
            "cached_input_tokens": cached,
            "output_tokens": out,
            "total_tokens": inp + out,
        }
        lines.append({"type": "response_item", "payload": {"type": "message", "content": "token_count"}})
        lines.append(
            {"type": "event_msg", "payload": {"type": "token_count", "info": {"total_token_usage": usage}}}
        )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_a_resumed_codex_thread_is_charged_only_its_increase(tmp_path: Path) -> None:
    """Codex reports the thread's totals (2400 → 4800 → 7200 for three runs of 2400): a
    resumed run is charged what was added to what Codex had recorded for the thread."""
    home = tmp_path / "home"
    run_usage = (2000, 500, 400)
    one_run = CODEX_PRICES.cost(*run_usage)
    costs = []
    for number in (1, 2, 3):
        preset = CodexPreset(prices=CODEX_PRICES)
        session = THREAD if number > 1 else ""
        preset.build(dataclasses.replace(INV, session_id=session, env={"HOME": str(home)}))
        totals = [tuple(v * n for v in run_usage) for n in range(1, number + 1)]
        reported = dict(
            zip(("input_tokens", "cached_input_tokens", "output_tokens"), totals[-1], strict=True)
        )
        state = feed(
            preset,
            [{"type": "thread.started", "thread_id": THREAD}, {"type": "turn.completed", "usage": reported}],
        )
        costs.append(preset.finish(state, 0, NO_SIGNAL).cost_usd)
        assert (state.input_tokens, state.cached_input_tokens, state.output_tokens) == run_usage
        write_rollout(home, THREAD, totals)  # what Codex recorded by the end of the run
    assert costs == pytest.approx([one_run] * 3)
    # The record Codex resumes from, whatever it says, is what the report is measured from.
    write_rollout(home, THREAD, [(100_000, 0, 0)])
    preset = CodexPreset(prices=CODEX_PRICES)
    preset.build(dataclasses.replace(INV, session_id=THREAD, env={"HOME": str(home)}))
    state = feed(
        preset,
        [
            {
                "type": "turn.completed",
                "usage": {"input_tokens": 102_000, "cached_input_tokens": 500, "output_tokens": 400},
            }
        ],
    )
    assert state.cost_usd == pytest.approx(one_run)


def test_codex_session_records_are_read_without_trusting_the_agents_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.agents import presets
    from bot.agents.presets import codex_thread_usage

    home = tmp_path / "home"
    write_rollout(home, THREAD, [(10, 0, 1), (20, 5, 2)])
    assert codex_thread_usage(str(home), THREAD) == TokenUsage(20, 5, 2)
    assert codex_thread_usage(str(home), "../../etc") is None
    assert codex_thread_usage(str(tmp_path / "nowhere"), THREAD) is None
    # A FIFO or a symlink named like a session file is never opened (no hang, no host file).
    planted = tmp_path / "planted"
    planted.mkdir()
    elsewhere = write_rollout(tmp_path / "other", "t-2", [(99, 0, 9)])
    (planted / ".codex" / "sessions" / "2026").mkdir(parents=True)
    os.mkfifo(planted / ".codex" / "sessions" / "2026" / f"rollout-x-{THREAD}.jsonl")
    (planted / ".codex" / "sessions" / "2026" / "rollout-x-t-2.jsonl").symlink_to(elsewhere)
    assert codex_thread_usage(str(planted), THREAD) is None
    assert codex_thread_usage(str(planted), "t-2") is None
    linked = tmp_path / "linked"
    (linked / ".codex").mkdir(parents=True)
    (linked / ".codex" / "sessions").symlink_to(tmp_path / "other" / ".codex" / "sessions")
    assert codex_thread_usage(str(linked), "t-2") is None
    # Only so many directory entries are looked at (sessions/2026/12/07/rollout-…: four).
    monkeypatch.setattr(presets, "_ROLLOUT_SCAN_ENTRIES", 3)
    assert codex_thread_usage(str(home), THREAD) is None
    monkeypatch.setattr(presets, "_ROLLOUT_SCAN_ENTRIES", 4)
    assert codex_thread_usage(str(home), THREAD) == TokenUsage(20, 5, 2)


def test_a_codex_run_ended_before_its_report_is_charged_from_the_session_record(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_rollout(home, THREAD, [(2000, 500, 400)])
    preset = CodexPreset(prices=CODEX_PRICES)
    preset.build(dataclasses.replace(INV, session_id=THREAD, env={"HOME": str(home)}))
    state = feed(preset, [{"type": "thread.started", "thread_id": THREAD}, {"type": "turn.started"}])
    path = write_rollout(home, THREAD, [(2000, 500, 400), (5000, 1500, 700)])  # one answer, its tools ran
    result = preset.finish(state, -9, NO_SIGNAL, killed=KillReason.TIMEOUT)
    assert result.outcome is AgentOutcome.TIMEOUT
    assert result.cost_usd == pytest.approx(CODEX_PRICES.cost(3000, 1000, 300))
    # Killed while the tools of a later answer ran: Codex recorded that answer (with the
    # thread's totals) as it arrived, and writes token_count only once the tools are done.
    usage = {"input_tokens": 9000, "cached_input_tokens": 2500, "output_tokens": 900}
    record = {"type": "token_usage_record", "payload": {"usage": {}, "thread_token_usage": usage}}
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    state = feed(preset, [{"type": "thread.started", "thread_id": THREAD}])
    assert preset.finish(state, -9, NO_SIGNAL, killed=KillReason.STOPPED).cost_usd == pytest.approx(
        CODEX_PRICES.cost(7000, 2000, 500)
    )
    # ... while the next resume starts from the token_count, as Codex itself does.
    preset.build(dataclasses.replace(INV, session_id=THREAD, env={"HOME": str(home)}))
    assert preset.new_state().baseline == TokenUsage(5000, 1500, 700)


def test_codex_may_use_the_checkouts_git_dir_in_its_own_sandbox(tmp_path: Path) -> None:
    from bot.agents.presets import checkout_git_dir

    plain = tmp_path / "plain"
    (plain / ".git").mkdir(parents=True)
    argv = CodexPreset().build(dataclasses.replace(INV, workdir=str(plain))).argv
    assert codex_overrides(argv)["sandbox_workspace_write.writable_roots"] == [str(plain / ".git")]
    # Inside our bubblewrap sandbox Codex's is off, and the git dir is writable anyway.
    sandboxed = CodexPreset().build(dataclasses.replace(INV, workdir=str(plain), sandboxed=True)).argv
    assert "sandbox_workspace_write.writable_roots" not in codex_overrides(sandboxed)
    # A git dir of its own named by a .git file; none, or a symlink: nothing is added.
    separate = tmp_path / "task.git"
    separate.mkdir()
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / ".git").write_text("gitdir: ../task.git\n")
    assert checkout_git_dir(str(linked)) == str(separate)
    (tmp_path / "none").mkdir()
    assert checkout_git_dir(str(tmp_path / "none")) == ""
    (tmp_path / "sym").mkdir()
    (tmp_path / "sym" / ".git").symlink_to(separate)
    assert checkout_git_dir(str(tmp_path / "sym")) == ""
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / ".git").write_text("not a gitfile")
    assert checkout_git_dir(str(tmp_path / "bad")) == ""


# -- aider ---------------------------------------------------------------------------------


def test_aider_build_and_cost_lines() -> None:
    preset = AiderPreset()
    launch = preset.build(INV)
    assert launch.argv[:3] == ["aider", "--message-file", "/tmp/p/prompt.md"]
    assert {"--yes-always", "--no-auto-commits", "--no-gitignore"} <= set(launch.argv)
    assert launch.argv[-2:] == ["--model", "sonnet"]
    assert launch.stdin is None and not launch.resumable
    state = feed(
        preset,
        [
            "Aider v0.86.2",
            "Tokens: 2.3k sent, 120 received. Cost: $0.0081 message, $0.0081 session.",
            "Applied edit to hello.py",
            "Tokens: 3.1k sent, 1.2k received. Cost: $0.02 message, $1,002.03 session.",
        ],
    )
    assert state.cost_usd == pytest.approx(1002.03)
    assert preset.finish(state, 0, NO_SIGNAL).outcome is AgentOutcome.DONE


def aider_prices(**models: TokenPrices) -> Any:
    from bot.agents.presets import PriceTable

    return PriceTable(models)


SCRIPTED = TokenPrices(2.0, 0.5, 8.0)


def aider_run(preset: AiderPreset, model: str, lines: list[str]) -> StreamState:
    preset.build(Invocation(prompt="p", prompt_file="/tmp/p/prompt.md", workdir="/tmp/w", model=model))
    return feed(preset, lines)


def test_aider_keeps_its_history_out_of_the_checkout_and_downloads_no_price_list() -> None:
    launch = AiderPreset().build(INV)
    argv = launch.argv
    assert argv[argv.index("--chat-history-file") + 1] == "/dev/null"
    assert argv[argv.index("--input-history-file") + 1] == "/dev/null"
    assert launch.env == {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}


@pytest.mark.parametrize(
    ("text", "count"),
    [("0", 0), ("999", 999), ("1.2k", 1200), ("9.9k", 9900), ("12k", 12000), ("1235k", 1_235_000),
     ("1,234", 1234), ("2.5M", 2_500_000)],
)
def test_aider_token_counts_as_aider_prints_them(text: str, count: int) -> None:
    from bot.agents.presets import aider_count

    assert aider_count(text) == count


def test_aider_without_a_price_is_charged_its_tokens_at_the_table_prices() -> None:
    preset = AiderPreset(prices=aider_prices(**{"scripted-model": SCRIPTED}))
    state = aider_run(
        preset,
        "openai/scripted-model",
        [
            "Aider v0.86.2",
            "Model: openai/scripted-model with whole edit format",
            "Tokens: 1.2k sent, 300 received.",
            "Applied edit to hello.py",
            "Tokens: 12k sent, 2.4k cache hit, 1.5k received.",
        ],
    )
    first = (1200 * 2.0 + 300 * 8.0) / 1e6
    second = (9600 * 2.0 + 2400 * 0.5 + 1500 * 8.0) / 1e6
    assert state.cost_usd == pytest.approx(first + second)
    assert (state.input_tokens, state.cached_input_tokens, state.output_tokens) == (13200, 2400, 1800)
    final = preset.finish(state, 0, NO_SIGNAL)
    assert final.outcome is AgentOutcome.DONE and final.cost_usd == pytest.approx(first + second)


def test_aider_cost_grows_line_by_line_so_the_cap_applies_during_the_run() -> None:
    preset = AiderPreset(prices=aider_prices(**{"scripted-model": SCRIPTED}))
    preset.build(Invocation(prompt="p", prompt_file="/p", workdir="/w", model="openai/scripted-model"))
    state = preset.new_state()
    seen = []
    for line in ["Tokens: 1.2k sent, 300 received.", "x", "Tokens: 1.2k sent, 300 received."]:
        preset.parse_line(line, state)
        seen.append(state.cost_usd)
    assert seen == pytest.approx([0.0048, 0.0048, 0.0096])


def test_aider_reported_cost_wins_and_a_reply_cannot_lower_it() -> None:
    preset = AiderPreset(prices=aider_prices(**{"gpt-4o-mini": TokenPrices(100.0, 100.0, 100.0)}))
    state = aider_run(
        preset,
        "openai/gpt-4o-mini",
        [
            "Tokens: 10k sent, 1.0k received. Cost: $0.0021 message, $0.0021 session.",
            "Cost: $0.00 message, $0.00 session.",  # the model's reply printing a usage line
            "Tokens: 10k sent, 1.0k received. Cost: $0.0021 message, $0.0042 session.",
        ],
    )
    assert state.cost_usd == pytest.approx(0.0042)  # aider's figure, not the (absurd) table's
    assert preset.finish(state, 0, NO_SIGNAL).cost_usd == pytest.approx(0.0042)


def test_aider_cost_on_the_next_line_after_both_cache_counts() -> None:
    preset = AiderPreset(prices=aider_prices(**{"claude-sonnet-4": TokenPrices(300.0, 300.0, 300.0)}))
    lines = [
        "Main model: anthropic/claude-sonnet-4-20250514 with diff edit format, infinite output",
        "Tokens: 15k sent, 2.0k cache write, 10k cache hit, 500 received.",
        "Cost: $0.03 message, $0.03 session.",
    ]
    state = aider_run(preset, "", lines)  # aider picked its model itself
    assert state.cost_usd == pytest.approx(0.03)
    assert preset.finish(state, 0, NO_SIGNAL).cost_usd == pytest.approx(0.03)
    # Without a Cost line after it (aider has no price), the table prices that reply.
    state = aider_run(preset, "", lines[:2])
    assert preset.finish(state, 0, NO_SIGNAL).cost_usd == pytest.approx((5000 + 10000 + 500) * 300.0 / 1e6)


def test_aider_model_announcement_picks_the_prices() -> None:
    preset = AiderPreset(prices=aider_prices(**{"scripted-model": SCRIPTED}))
    state = aider_run(
        preset, "", ["Model: openai/scripted-model with whole edit format", "Tokens: 1.2k sent, 300 received."]
    )
    assert state.cost_usd == pytest.approx(0.0048)


def test_aider_model_without_any_price_costs_nothing_known() -> None:
    from bot.agents.presets import AiderState

    preset = AiderPreset(prices=aider_prices())
    state = aider_run(preset, "openai/unknown-model", ["Tokens: 1.2k sent, 300 received."])
    assert isinstance(state, AiderState)
    assert state.cost_usd == 0.0 and state.unpriced_replies == 1
    assert (state.input_tokens, state.output_tokens) == (1200, 300)


def test_aider_default_prices_and_get_preset_passes_the_table() -> None:
    state = aider_run(AiderPreset(), "openai/gpt-4.1-mini", ["Tokens: 10k sent, 1.0k received."])
    assert state.cost_usd == pytest.approx((10000 * 0.4 + 1000 * 1.6) / 1e6)
    table = aider_prices(**{"scripted-model": SCRIPTED})
    preset = get_preset("aider", prices=table)
    assert isinstance(preset, AiderPreset) and preset.prices is table


# -- command -------------------------------------------------------------------------------


def test_render_command_quotes_values_and_leaves_other_braces() -> None:
    rendered = render_command(
        "agent --prompt {prompt_file} --cd {workdir} --model {model} ${HOME} {unknown}",
        prompt_file="/tmp/a b/prompt.md",
        workdir="/w",
        model="x'; rm -rf / #",
    )
    assert rendered == (
        "agent --prompt '/tmp/a b/prompt.md' --cd /w --model 'x'\"'\"'; rm -rf / #' ${HOME} {unknown}"
    )


async def test_command_preset_runs_through_bash_for_real(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    prompt_dir = tmp_path / "prompt dir"
    prompt_dir.mkdir()
    prompt_file = prompt_dir / "prompt.md"
    prompt_file.write_text("Do the thing.\n")
    template = (
        "cp {prompt_file} from-file.txt && cat > from-stdin.txt && printf '%s' {model} > model.txt && "
        'mkdir -p .patchwright && echo \'{"status": "done", "summary": "copied"}\' > .patchwright/signal.json'
    )
    preset = get_preset("command", command=template)
    invocation = Invocation(
        prompt="Do the thing.\n", prompt_file=str(prompt_file), workdir=str(work), model="$(touch pwned)"
    )
    launch = preset.build(invocation)
    assert launch.argv[:2] == ["bash", "-c"]
    state = preset.new_state()
    env = agent_env(
        home=tmp_path, tmpdir=tmp_path, passthrough=dict(os.environ), preset_keys=preset.provider_keys
    )
    outcome = await run_agent(
        launch.argv, cwd=work, env=env | launch.env, stdin_data=launch.stdin, timeout=20,
        on_line=lambda line: preset.parse_line(line, state),
    )  # fmt: skip
    final = preset.finish(state, outcome.exit_code, read_signal(work), killed=outcome.killed_reason)
    assert (final.outcome, final.summary) == (AgentOutcome.DONE, "copied")
    assert (work / "from-file.txt").read_text() == "Do the thing.\n"
    assert (work / "from-stdin.txt").read_text() == "Do the thing.\n"
    assert (work / "model.txt").read_text() == "$(touch pwned)"
    assert not (work / "pwned").exists()
    assert not (work / ".patchwright").exists()


async def test_failing_command_reports_its_output(tmp_path: Path) -> None:
    preset = CommandPreset("echo 'compiling…'; echo 'fatal: no such file' >&2; exit 3")
    launch = preset.build(Invocation(prompt="x", prompt_file="/dev/null", workdir=str(tmp_path)))
    state = preset.new_state()
    env = {"PATH": os.environ["PATH"]}
    outcome = await run_agent(
        launch.argv,
        cwd=tmp_path,
        env=env,
        stdin_data=launch.stdin,
        timeout=20,
        on_line=lambda line: preset.parse_line(line, state),
    )
    final = preset.finish(state, outcome.exit_code, read_signal(tmp_path))
    assert final.outcome is AgentOutcome.AGENT_ERROR and final.exit_code == 3
    assert "exited with code 3" in final.error and "fatal: no such file" in final.error


# -- a fake CLI end to end: streamed cost, and the cost kill ----------------------------------


async def test_streamed_cost_can_kill_a_codex_run(tmp_path: Path) -> None:
    fake = tmp_path / "codex"
    fake.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import json, sys, time
            sys.stdin.read()
            print(json.dumps({{"type": "thread.started", "thread_id": "t-1"}}), flush=True)
            for turn in range(1, 201):  # Codex reports the thread's totals so far
                usage = {{"input_tokens": 100000 * turn, "cached_input_tokens": 0, "output_tokens": 0}}
                print(json.dumps({{"type": "turn.completed", "usage": usage}}), flush=True)
                time.sleep(0.02)
            """
        )
    )
    fake.chmod(0o755)
    preset = CodexPreset(str(fake), prices=TokenPrices(input=1.0, cached_input=0.1, output=4.0))
    launch = preset.build(Invocation(prompt="go", prompt_file="f", workdir=str(tmp_path)))
    state = preset.new_state()
    cap = 0.5  # USD: each turn costs 0.1

    def on_line(line: str) -> KillReason | None:
        preset.parse_line(line, state)
        return KillReason.COST if state.cost_usd >= cap else None

    outcome = await run_agent(
        launch.argv, cwd=tmp_path, env={"PATH": os.environ["PATH"]}, stdin_data=launch.stdin, timeout=30,
        on_line=on_line, grace=0.5,
    )  # fmt: skip
    final = preset.finish(state, outcome.exit_code, read_signal(tmp_path), killed=outcome.killed_reason)
    assert final.outcome is AgentOutcome.KILLED_COST
    assert final.session_id == "t-1"
    assert cap <= final.cost_usd < cap + 0.5


def test_get_preset() -> None:
    assert isinstance(get_preset("claude"), ClaudePreset)
    assert isinstance(get_preset("codex"), CodexPreset)
    assert isinstance(get_preset("aider", executables={"aider": "/opt/aider"}), AiderPreset)
    assert get_preset("aider", executables={"aider": "/opt/aider"}).build(INV).argv[0] == "/opt/aider"
    command = get_preset("command", command="run {prompt_file}", command_keys=("MY_KEY",))
    assert command.provider_keys == ("MY_KEY",) and not command.resumable
    assert ClaudePreset.resumable and CodexPreset.resumable and not AiderPreset.resumable
    with pytest.raises(ValueError, match="command template"):
        get_preset("command")
    with pytest.raises(ValueError, match="unknown agent preset"):
        get_preset("cursor")


def test_the_command_preset_reads_its_cost_from_lines_and_the_signal_file() -> None:
    from bot.agents.presets import CommandPreset
    from bot.agents.signal import parse_signal

    preset = CommandPreset("true")
    state = preset.new_state()
    for line in ("working", "Cost: $0.25 so far", "Cost: $0.42", "Cost: $1,000 was a typo"):
        preset.parse_line(line, state)
    assert state.cost_usd == 0.42
    assert preset.finish(state, 0, parse_signal(b"")).cost_usd == 0.42
    signal = parse_signal(b'{"status": "done", "summary": "ok", "cost_usd": 1.5}')
    assert preset.finish(state, 0, signal).cost_usd == 1.5
    assert parse_signal(b'{"status": "done", "cost_usd": -1}').problem  # a negative cost is no cost
