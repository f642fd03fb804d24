"""Agent presets: command lines, output parsing and classification from structured fields."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bot.agents.presets import (
    AiderPreset,
    ClaudePreset,
    CodexPreset,
    CommandPreset,
    Invocation,
    Preset,
    StreamState,
    TokenPrices,
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
        "codex", "exec", "--json", "--skip-git-repo-check", "-c", 'sandbox_mode="workspace-write"', "-m", "sonnet", "-",
    ]  # fmt: skip
    assert fresh.stdin == b"Fix the bug.\n" and fresh.resumable and not fresh.resumed
    resumed = preset.build(
        Invocation(prompt="p", prompt_file="f", workdir="w", session_id=THREAD, sandboxed=True)
    )
    assert resumed.argv == [
        "codex", "exec", "resume", "--json", "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox", THREAD, "-",
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
            usage = {{"input_tokens": 100000, "cached_input_tokens": 0, "output_tokens": 0}}
            for _ in range(200):
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
