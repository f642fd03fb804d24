"""The real Claude Code CLI through :class:`ClaudePreset` against the scripted Anthropic model
server on 127.0.0.1 (issue 12): its tools write files and run git in a real checkout, the
preset reads the summary, session id and cost from its stream-json, ``--resume`` continues
the session, and the prompt prefix of fresh runs stays byte-identical (prompt cache).

Needs ``claude`` (npm: @anthropic-ai/claude-code) on PATH: skipped on a developer machine
without it, failed under CI=true.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.agents.presets import ClaudePreset, Invocation
from bot.agents.process import run_agent
from bot.agents.result import AgentOutcome, AgentResult
from bot.agents.sandbox import agent_env
from bot.agents.signal import read_signal
from tests.model_server import ModelServer, RecordedRequest
from tests.model_server import anthropic as scripted
from tests.model_server.anthropic import Final, Usage

Require = Callable[[bool, str], None]

MODEL = "claude-sonnet-4-5"
API_KEY = "sk-ant-test-0123456789abcdef"


@pytest.fixture
def claude(require: Require) -> str:
    path = shutil.which("claude")
    require(
        path is not None,
        "the claude CLI is not on PATH (npm install -g @anthropic-ai/claude-code)",
    )
    assert path is not None
    return path


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout


@dataclass
class Run:
    result: AgentResult
    lines: list[str]
    events: list[dict[str, Any]]
    wall: float  # spawn → exit, seconds
    first_answer: float  # spawn → the first assistant event (CLI start-up + first request)
    requests: list[RecordedRequest]  # the conversation requests of this run
    started: float  # time.monotonic() at spawn

    @property
    def final_event(self) -> dict[str, Any]:
        return next(e for e in self.events if e.get("type") == "result")


class Claude:
    """Runs ``claude`` the way the worker does: preset argv and environment additions over
    :func:`agent_env` (allowlisted environment, HOME and TMPDIR of the task), no sandbox."""

    def __init__(self, exe: str, server: ModelServer, checkout: Path, root: Path) -> None:
        self.exe = exe
        self.server = server
        self.checkout = checkout
        self.home = root / "home"  # per task, as the runner keeps it (Claude's session store)
        self.tmp = root / "tmp"
        self.home.mkdir(exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        self.prompt_file = root / "prompt.md"

    def env(self) -> dict[str, str]:
        passthrough = {
            "PATH": os.environ.get("PATH", ""),
            "ANTHROPIC_BASE_URL": self.server.base_url,
            "ANTHROPIC_API_KEY": API_KEY,
        }
        env = agent_env(
            home=self.home,
            tmpdir=self.tmp,
            passthrough=passthrough,
            preset_keys=ClaudePreset.provider_keys,
        )
        # No internet in tests: anything but the model server would go to a closed port.
        return env | {
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1",
        }

    async def run(
        self,
        prompt: str,
        *,
        session_id: str = "",
        model: str = MODEL,
        extra_env: dict[str, str] | None = None,
    ) -> Run:
        preset = ClaudePreset(self.exe)
        self.prompt_file.write_text(prompt)
        launch = preset.build(
            Invocation(
                prompt=prompt,
                prompt_file=str(self.prompt_file),
                workdir=str(self.checkout),
                model=model,
                session_id=session_id,
                max_cost_usd=5.0,
            )
        )
        assert launch.resumed is bool(session_id)
        state = preset.new_state()
        lines: list[str] = []
        events: list[dict[str, Any]] = []
        first_answer: list[float] = []
        before = len(self.server.requests)
        started = time.monotonic()

        def on_line(line: str) -> None:
            lines.append(line)
            preset.parse_line(line, state)
            if line.startswith("{"):
                event = json.loads(line)
                events.append(event)
                if event.get("type") == "assistant" and not first_answer:
                    first_answer.append(time.monotonic() - started)

        ended = await run_agent(
            launch.argv,
            cwd=self.checkout,
            env=self.env() | launch.env | (extra_env or {}),
            stdin_data=launch.stdin,
            timeout=90,
            on_line=on_line,
            grace=1.0,
        )
        wall = time.monotonic() - started
        result = preset.finish(
            state,
            ended.exit_code,
            read_signal(self.checkout),
            killed=ended.killed_reason,
        )
        requests = [r for r in self.server.requests[before:] if r.conversation]
        retried = [e for e in events if e.get("type") == "system" and e.get("subtype") == "api_retry"]
        assert not retried, f"Claude Code had to retry a model request: {retried}"
        return Run(
            result,
            lines,
            events,
            wall,
            first_answer[0] if first_answer else wall,
            requests,
            started,
        )


@pytest.fixture
def agent(claude: str, model_server: ModelServer, checkout: Path, tmp_path: Path) -> Claude:
    return Claude(claude, model_server, checkout, tmp_path)


def timing(run: Run) -> str:
    """Wall time split: CLI start-up (spawn → its first model request), model time (Claude
    Code's own ``duration_api_ms``), and the rest (tools, writing the session, exit)."""
    event = run.final_event
    startup = run.requests[0].received - run.started
    model = float(event.get("duration_api_ms") or 0) / 1000
    return (
        f"wall {run.wall:.2f} s = start-up {startup:.2f} s + model {model:.2f} s "
        f"+ tools/exit {run.wall - startup - model:.2f} s ({len(run.requests)} model requests)"
    )


# -- one run: tools, summary, session, cost ----------------------------------------------------


async def test_claude_writes_the_file_runs_git_and_reports_summary_session_and_cost(
    agent: Claude, model_server: ModelServer, checkout: Path
) -> None:
    content = 'def greet(name):\n    return f"hello, {name}"\n\n# tabs\tand unicode: é ✓\n'
    turns = [
        scripted.write("src/greet.py", content, Usage(2000, 120, cache_creation_input_tokens=1500)),
        # two tools in one answer: Claude Code runs both and sends both results back
        scripted.ToolUses(
            (
                scripted.Call(
                    "Bash",
                    {"command": "git status --porcelain", "description": "status"},
                ),
                scripted.Call("Read", {"file_path": "{cwd}/README.md"}),
            ),
            Usage(2300, 40, cache_read_input_tokens=1500),
        ),
        Final(
            "Added src/greet.py with a greet() helper.",
            Usage(2400, 60, cache_read_input_tokens=1800),
        ),
    ]
    model_server.script.extend(turns)

    run = await agent.run("Add a greet helper in src/greet.py.")

    assert run.result.outcome is AgentOutcome.DONE, (run.result, run.lines[-5:])
    assert run.result.exit_code == 0
    assert (checkout / "src" / "greet.py").read_bytes() == content.encode("utf-8")
    # Bash ran in the checkout, and git saw the new file.
    assert len(run.requests) == 3
    outputs = scripted.tool_outputs(run.requests[2])
    assert set(outputs) == {"Bash", "Read"} and not any(error for _, error in outputs.values()), outputs
    # (Claude Code appends a <system-reminder> with the --max-budget-usd spend to tool results.)
    assert outputs["Bash"][0].startswith("?? src/\n"), outputs
    assert "# demo" in outputs["Read"][0]
    assert model_server.script.played == 3
    # The summary is the final message; the session id is the one Claude Code used on the wire.
    assert run.result.summary == "Added src/greet.py with a greet() helper."
    assert run.result.session_id
    assert {r.headers.get("X-Claude-Code-Session-Id") for r in run.requests} == {run.result.session_id}
    # Every request went to our server with our key and the model asked for.
    assert {r.headers.get("x-api-key") for r in run.requests} == {API_KEY}
    assert {r.body["model"] for r in run.requests} == {MODEL}
    # Cost: Claude Code prices the scripted usage with its own table for the model.
    expected = scripted.claude_cost(MODEL, scripted.turn_usage(turns))
    assert run.result.cost_usd == pytest.approx(expected, rel=1e-9)
    assert run.final_event["total_cost_usd"] == pytest.approx(expected, rel=1e-9)
    print(f"\nclaude run: {timing(run)}; cost ${run.result.cost_usd:.6f}")


async def test_cost_follows_claude_codes_price_table_per_model(
    agent: Claude, model_server: ModelServer
) -> None:
    usage = Usage(10_000, 1_000, cache_creation_input_tokens=4_000, cache_read_input_tokens=20_000)
    for model in ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-8"):
        model_server.script.extend([Final("ok", usage)])
        run = await agent.run("Say ok.", model=model)
        assert run.result.outcome is AgentOutcome.DONE, run.result
        assert run.result.cost_usd == pytest.approx(scripted.claude_cost(model, [usage]), rel=1e-9), model


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (
            scripted.ApiError(401, "authentication_error", "invalid x-api-key"),
            AgentOutcome.CONFIG_ERROR,
        ),
        (
            scripted.ApiError(529, "overloaded_error", "Overloaded"),
            AgentOutcome.TRANSIENT,
        ),
        (
            scripted.ApiError(429, "rate_limit_error", "Number of requests exceeded"),
            AgentOutcome.TRANSIENT,
        ),
    ],
    ids=["401", "529", "429"],
)
async def test_an_api_error_is_classified_from_claudes_structured_output(
    agent: Claude,
    model_server: ModelServer,
    error: scripted.ApiError,
    outcome: AgentOutcome,
) -> None:
    model_server.script.extend([error])
    # Claude Code retries 429/5xx itself with backoff (10 times by default): not in this test.
    run = await agent.run("Say ok.", extra_env={"CLAUDE_CODE_MAX_RETRIES": "0"})
    assert run.result.outcome is outcome, (run.result, run.lines[-3:])
    assert model_server.script.played == 1 and len(run.requests) == 1
    assert run.result.exit_code != 0 and run.wall < 20
    print(f"\n{error.status}: {run.result.error!r} ({run.wall:.2f} s)")


# -- resume: the session continues, earlier turns are sent again --------------------------------


async def test_resume_continues_the_session_and_sends_the_earlier_turns(
    agent: Claude, model_server: ModelServer, checkout: Path
) -> None:
    first_turns = [
        scripted.write("notes.txt", "first\n", Usage(1000, 50)),
        Final("Wrote notes.txt.", Usage(1100, 20)),
    ]
    model_server.script.extend(first_turns)
    first = await agent.run("Write notes.txt.")
    assert first.result.outcome is AgentOutcome.DONE, first.result
    session = first.result.session_id

    second_turns = [
        scripted.edit("notes.txt", "first\n", "first\nsecond\n", Usage(1500, 60)),
        Final("Added the second line.", Usage(1600, 20)),
    ]
    model_server.script.extend(second_turns)
    second = await agent.run("Review feedback: add a second line.", session_id=session)

    assert second.result.outcome is AgentOutcome.DONE, (
        second.result,
        second.lines[-5:],
    )
    assert (checkout / "notes.txt").read_text() == "first\nsecond\n"
    assert second.result.session_id == session
    assert second.result.summary == "Added the second line."
    # The resumed run's first request carries the whole earlier conversation, then only appends:
    # the first run's last request, its final answer, then the new prompt.
    earlier = scripted.strip_cache_control(first.requests[-1].body["messages"])
    resumed = scripted.strip_cache_control(second.requests[0].body["messages"])
    assert resumed[: len(earlier)] == earlier
    appended = resumed[len(earlier) :]
    assert any(
        m["role"] == "assistant" and any(b.get("text") == "Wrote notes.txt." for b in m["content"])
        for m in appended
    ), appended
    assert "Review feedback: add a second line." in json.dumps(appended[-1])
    # Each later request of the resumed run again only appends.
    for before, after in itertools.pairwise(second.requests):
        b, a = (scripted.strip_cache_control(r.body["messages"]) for r in (before, after))
        assert a[: len(b)] == b
    # Cost of the resumed run: only its own answers (Claude Code reports per process).
    expected = scripted.claude_cost(MODEL, scripted.turn_usage(second_turns))
    assert second.result.cost_usd == pytest.approx(expected, rel=1e-9)
    print(f"\nfirst run: {timing(first)}\nresumed run: {timing(second)}")


# -- prompt cache: fresh runs send a byte-identical prefix ----------------------------------------


def prefix(request: RecordedRequest) -> dict[str, Any]:
    """What the provider's prompt cache keys on, in order: tools, system, the first message."""
    body = request.body
    return {
        "tools": body.get("tools"),
        "system": body.get("system"),
        "first": body["messages"][0],
    }


async def test_fresh_runs_of_one_task_send_a_byte_identical_prompt_prefix(
    agent: Claude, model_server: ModelServer, checkout: Path
) -> None:
    """Two non-resumed attempts of one task (same checkout and HOME, as the runner keeps them),
    the bot committing the first attempt's change in between: the prefix the prompt cache keys
    on is the same bytes. (Claude Code's git snapshot in the system prompt — branch, status,
    recent commits — would differ: the preset turns it off.)"""
    prompt = "Fix issue #7: greet() should greet politely.\n\nWrite the change, then stop."
    runs = []
    for attempt in range(2):
        model_server.script.extend(
            [
                scripted.write(f"attempt{attempt}.txt", f"{attempt}\n"),
                Final(f"attempt {attempt} done"),
            ]
        )
        runs.append(await agent.run(prompt))
        assert runs[-1].result.outcome is AgentOutcome.DONE, runs[-1].result
        git(checkout, "add", "-A")
        git(checkout, "commit", "-q", "-m", f"patchwright: attempt {attempt}")
    assert runs[0].result.session_id != runs[1].result.session_id
    one, two = (prefix(r.requests[0]) for r in runs)
    for part in ("tools", "system", "first"):
        a, b = json.dumps(one[part]).encode(), json.dumps(two[part]).encode()
        assert a == b, f"{part} differs between fresh runs"
    assert "gitStatus" not in scripted.system_text(runs[0].requests[0].body)
    sizes = {part: len(json.dumps(one[part]).encode()) for part in ("tools", "system", "first")}
    print(f"\nprompt prefix identical across fresh runs: {sizes} bytes (JSON)")


# -- the model server itself (no CLI needed) -----------------------------------------------------


async def test_the_server_answers_side_requests_without_playing_the_script(
    model_server: ModelServer,
) -> None:
    model_server.script.extend([scripted.write("a.txt", "a\n"), Final("done", Usage(7, 3))])
    url = model_server.base_url
    async with aiohttp.ClientSession() as http:
        title = {
            "model": "claude-haiku-4-5",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "title?"}],
            "output_config": {
                "format": {
                    "type": "json_schema",
                    "schema": {"properties": {"title": {}}},
                }
            },
        }
        async with http.post(f"{url}/v1/messages?beta=true", json=title) as response:
            answer = await response.json()
        assert json.loads(answer["content"][0]["text"]) == {"title": scripted.SIDE_TITLE}
        async with http.post(f"{url}/v1/messages/count_tokens", json={"messages": []}) as response:
            assert (await response.json())["input_tokens"] > 0
        assert model_server.script.played == 0 and model_server.conversation_requests() == []

        system = [{"type": "text", "text": "Primary working directory: /work/x\n"}]
        step = {
            "model": MODEL,
            "max_tokens": 100,
            "system": system,
            "tools": [{"name": "Write"}],
            "messages": [],
        }
        step["messages"] = [{"role": "user", "content": "go"}]
        async with http.post(f"{url}/v1/messages", json=step) as response:  # not streamed
            first = await response.json()
        assert first["stop_reason"] == "tool_use"
        assert first["content"][0]["input"] == {
            "file_path": "/work/x/a.txt",
            "content": "a\n",
        }
        async with http.post(f"{url}/v1/messages", json=step | {"stream": True}) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            stream = (await response.read()).decode()
        events = [line.split(": ", 1)[1] for line in stream.splitlines() if line.startswith("event: ")]
        assert events == [
            "message_start", "content_block_start", "content_block_delta", "content_block_stop",
            "message_delta", "message_stop",
        ]  # fmt: skip
        assert '"stop_reason": "end_turn"' in stream and '"output_tokens": 3' in stream
        async with http.post(f"{url}/v1/messages", json=step) as response:  # played out
            assert (await response.json())["content"][0]["text"] == "Done."
    assert model_server.script.played == 2 and len(model_server.conversation_requests()) == 3
