"""The presets against the real CLIs: every flag we emit exists, and Claude Code without
credentials fails fast as a CONFIG_ERROR carrying its own message.

Needs `claude` and `codex` (npm: @anthropic-ai/claude-code, @openai/codex) and `aider`
(PyPI: aider-chat) on PATH: skipped on a developer machine without them, failed under CI=true.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.agents.presets import AiderPreset, ClaudePreset, CodexPreset, Invocation, Preset
from bot.agents.process import run_agent
from bot.agents.result import AgentOutcome, AgentResult
from bot.agents.sandbox import BwrapProbe, SandboxSpec, agent_env, bwrap_argv, toolchain_paths
from bot.agents.signal import read_signal

Require = Callable[[bool, str], None]

FULL = Invocation(
    prompt="p",
    prompt_file="/tmp/prompt.md",
    workdir="/tmp/w",
    model="sonnet",
    max_cost_usd=1.0,
    sandboxed=False,
)
RESUME = Invocation(
    prompt="p",
    prompt_file="/tmp/prompt.md",
    workdir="/tmp/w",
    model="sonnet",
    session_id="abc",
    sandboxed=True,
)


def cli(name: str, require: Require) -> str:
    path = shutil.which(name)
    require(path is not None, f"the {name} CLI is not on PATH")
    assert path is not None
    return path


def help_text(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def flags(argv: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in argv[1:] if a.startswith("-") and a != "-"]


def assert_listed(flag_list: list[str], text: str) -> None:
    assert flag_list
    missing = [f for f in flag_list if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
    assert missing == [], f"flags not in --help: {missing}"


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """No credentials: a fresh HOME, no ANTHROPIC_*/OPENAI_* variables."""
    home = tmp_path / "home"
    tmp = tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    return agent_env(home=home, tmpdir=tmp, passthrough={"PATH": os.environ.get("PATH", "")}, preset_keys=[])


def test_claude_help_lists_every_flag_we_emit(require: Require, clean_env: dict[str, str]) -> None:
    exe = cli("claude", require)
    text = help_text([exe, "--help"], clean_env)
    preset = ClaudePreset(exe)
    emitted = flags(preset.build(FULL).argv) + flags(preset.build(RESUME).argv)
    assert {
        "-p",
        "--output-format",
        "--verbose",
        "--permission-mode",
        "--model",
        "--resume",
        "--max-budget-usd",
    } <= set(emitted)
    assert_listed(emitted, text)
    with pytest.raises(AssertionError):
        assert_listed(["--no-such-flag"], text)  # the check can fail
    assert "stream-json" in text and "bypassPermissions" in text


def test_codex_help_lists_every_flag_we_emit(require: Require, clean_env: dict[str, str]) -> None:
    exe = cli("codex", require)
    preset = CodexPreset(exe)
    assert_listed(flags(preset.build(FULL).argv), help_text([exe, "exec", "--help"], clean_env))
    assert_listed(flags(preset.build(RESUME).argv), help_text([exe, "exec", "resume", "--help"], clean_env))


def test_aider_help_lists_every_flag_we_emit(require: Require, clean_env: dict[str, str]) -> None:
    exe = cli("aider", require)
    assert_listed(flags(AiderPreset(exe).build(FULL).argv), help_text([exe, "--help"], clean_env))


async def run_preset(
    preset: Preset, work: Path, env: dict[str, str], *, sandbox: bool = False
) -> tuple[list[str], AgentResult, float]:
    launch = preset.build(
        Invocation(prompt="Say hello.", prompt_file=str(work / "unused"), workdir=str(work))
    )
    argv = launch.argv
    if sandbox:
        spec = SandboxSpec(
            workdir=work,
            home=Path(env["HOME"]),
            tmpdir=Path(env["TMPDIR"]),
            read_only=tuple(toolchain_paths(argv[0], path_env=env.get("PATH"))),
        )
        argv = bwrap_argv(argv, spec)
    state = preset.new_state()
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        preset.parse_line(line, state)

    started = time.monotonic()
    outcome = await run_agent(
        argv, cwd=work, env=env | launch.env, stdin_data=launch.stdin, timeout=60, on_line=on_line, grace=1.0
    )
    elapsed = time.monotonic() - started
    final = preset.finish(state, outcome.exit_code, read_signal(work), killed=outcome.killed_reason)
    return lines, final, elapsed


def cli_result_message(lines: list[str]) -> str:
    for line in lines:
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("type") == "result":
                return str(event.get("result") or "; ".join(event.get("errors") or []))
    raise AssertionError(f"no result event in the output: {lines[-5:]}")


@pytest.mark.parametrize("sandbox", [False, True], ids=["plain", "bwrap"])
async def test_claude_without_credentials_is_a_config_error(
    sandbox: bool, require: Require, clean_env: dict[str, str], tmp_path: Path
) -> None:
    exe = cli("claude", require)
    if sandbox:
        probe = BwrapProbe()
        require(probe.available(), f"bubblewrap does not work here: {probe.problem}")
    assert not any(k.startswith(("ANTHROPIC", "CLAUDE")) for k in clean_env)
    work = tmp_path / "work"
    work.mkdir()
    # No internet in tests: without bwrap, any request would go to a closed local port instead.
    no_net = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    env = clean_env if sandbox else clean_env | no_net
    lines, final, elapsed = await run_preset(ClaudePreset(exe), work, env, sandbox=sandbox)
    assert final.outcome is AgentOutcome.CONFIG_ERROR, (final, lines[-3:])
    message = cli_result_message(lines)
    assert message and final.error == message
    assert final.exit_code not in (0, None)
    assert elapsed < 30  # fails fast on missing auth, no network needed
