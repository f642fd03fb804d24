"""The real Codex CLI through :class:`CodexPreset` against the scripted Responses API server on
127.0.0.1 (issue 12): ``OPENAI_BASE_URL`` reaches Codex as ``-c`` provider overrides, its tools
write files and run git in a real checkout, the preset reads the summary, thread id and token
usage from ``exec --json`` and prices it, ``codex exec resume`` continues the thread and is
charged only what it added, and fresh runs of one task send the same prompt prefix.

Needs ``codex`` (npm: @openai/codex) on PATH: skipped on a developer machine without it,
failed under CI=true.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.agents.presets import DEFAULT_PRICES, CodexPreset, Invocation, PriceTable
from bot.agents.process import run_agent
from bot.agents.result import AgentOutcome, AgentResult, KillReason
from bot.agents.sandbox import agent_env
from bot.agents.signal import read_signal
from tests.model_server import ModelServer, RecordedRequest
from tests.model_server import responses as scripted
from tests.model_server.responses import CODEX_DEFAULT_MODEL, ApplyPatch, Final, ShellCall, Usage

Require = Callable[[bool, str], None]

API_KEY = "sk-test-codex-0123456789abcdef"
#: What an operator sets for Codex's default model (it has no list price in DEFAULT_PRICES).
PRICES = DEFAULT_PRICES.with_overrides(f"{CODEX_DEFAULT_MODEL}=1.25/0.125/10")


@pytest.fixture
def codex(require: Require) -> str:
    path = shutil.which("codex")
    require(path is not None, "the codex CLI is not on PATH (npm install -g @openai/codex)")
    assert path is not None
    return path


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout


@dataclass
class Run:
    result: AgentResult
    argv: list[str]
    lines: list[str]
    events: list[dict[str, Any]]
    wall: float  # spawn → exit, seconds
    startup: float  # spawn → the first model request reached the server (CLI start-up)
    answered: float  # spawn → the last model answer was sent (after it: Codex finishing up)
    requests: list[RecordedRequest]  # the conversation requests of this run
    killed: KillReason | None

    def reported_usage(self) -> dict[str, Any]:
        """The ``usage`` of Codex's (last) ``turn.completed`` event."""
        return [e for e in self.events if e.get("type") == "turn.completed"][-1]["usage"]


class Egress:
    """A proxy on 127.0.0.1 that forwards nothing and records where the agent tried to go."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        self.attempts.append(line.decode("latin-1").strip())
        writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def egress() -> AsyncIterator[Egress]:
    proxy = Egress()
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


class Codex:
    """Runs ``codex`` the way the worker does: the preset's argv over :func:`agent_env`
    (allowlisted environment; HOME per task, TMPDIR per attempt), no sandbox of ours. Any
    connection but to the model server goes to the recording proxy ``egress``, and none may
    be tried."""

    def __init__(self, exe: str, server: ModelServer, checkout: Path, root: Path, egress: Egress) -> None:
        self.exe = exe
        self.server = server
        self.egress = egress
        self.checkout = checkout
        self.home = root / "home"  # per task, as the runner keeps it (Codex's session files)
        self.tmp = root / "tmp"
        self.home.mkdir(exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        self.prompt_file = root / "prompt.md"

    def env(self) -> dict[str, str]:
        passthrough = {
            "PATH": os.environ.get("PATH", ""),
            "OPENAI_BASE_URL": self.server.base_url + "/v1",
            "OPENAI_API_KEY": API_KEY,
        }
        env = agent_env(
            home=self.home, tmpdir=self.tmp, passthrough=passthrough, preset_keys=CodexPreset.provider_keys
        )
        assert self.egress.server is not None
        proxy = f"http://127.0.0.1:{self.egress.server.sockets[0].getsockname()[1]}"
        return env | {"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "NO_PROXY": "127.0.0.1"}

    async def run(
        self,
        prompt: str,
        *,
        session_id: str = "",
        model: str = "",
        prices: PriceTable = PRICES,
        timeout: float = 60,
        retries: bool = False,
    ) -> Run:
        preset = CodexPreset(self.exe, prices=prices)
        self.prompt_file.write_text(prompt)
        env = self.env()
        launch = preset.build(
            Invocation(
                prompt=prompt,
                prompt_file=str(self.prompt_file),
                workdir=str(self.checkout),
                model=model,
                session_id=session_id,
                max_cost_usd=5.0,
                env=env,
            )
        )
        assert launch.resumed is bool(session_id)
        assert not any(API_KEY in arg for arg in launch.argv)
        state = preset.new_state()
        lines: list[str] = []
        events: list[dict[str, Any]] = []
        before = len(self.server.requests)
        started = time.monotonic()

        def on_line(line: str) -> None:
            lines.append(line)
            preset.parse_line(line, state)
            if line.startswith("{"):
                events.append(json.loads(line))

        ended = await run_agent(
            launch.argv,
            cwd=self.checkout,
            env=env | launch.env,
            stdin_data=launch.stdin,
            timeout=timeout,
            on_line=on_line,
            grace=1.0,
        )
        wall = time.monotonic() - started
        result = preset.finish(state, ended.exit_code, read_signal(self.checkout), killed=ended.killed_reason)
        mine = self.server.requests[before:]
        requests = [r for r in mine if r.conversation]
        assert {r.path for r in mine} <= {scripted.RESPONSES_PATH}, [r.path for r in mine]
        notices = [e for e in events if e.get("type") == "error"]
        assert retries or not notices, f"Codex had to retry a model request: {notices}"
        assert self.egress.attempts == [], "Codex tried to reach more than its model provider"
        startup = requests[0].received - started if requests else wall
        answered = requests[-1].received - started if requests else wall
        return Run(result, launch.argv, lines, events, wall, startup, answered, requests, ended.killed_reason)


@pytest.fixture
def agent(codex: str, model_server: ModelServer, checkout: Path, tmp_path: Path, egress: Egress) -> Codex:
    return Codex(codex, model_server, checkout, tmp_path, egress)


def timing(run: Run) -> str:
    return (
        f"wall {run.wall:.2f} s: start-up (spawn → first model request) {run.startup:.2f} s, "
        f"tools and model requests {run.answered - run.startup:.2f} s, "
        f"after the last answer {run.wall - run.answered:.2f} s; {len(run.requests)} model requests"
    )


def cost(usage: Usage, model: str = CODEX_DEFAULT_MODEL, prices: PriceTable = PRICES) -> float:
    table = prices.for_model(model)
    assert table is not None
    return table.cost(usage.input_tokens, usage.cached_tokens, usage.output_tokens)


# -- one run: tools, summary, thread, cost ------------------------------------------------------


async def test_codex_writes_the_file_runs_git_and_reports_summary_thread_and_cost(
    agent: Codex, model_server: ModelServer, checkout: Path
) -> None:
    content = (
        'def greet(name):\n    return f"hello, {name}"\n\n# tabs\tand unicode: é ✓ and \'quotes\' "too"\n'
    )
    turns = [
        ShellCall("mkdir -p src", Usage(2000, 0, 80)),
        scripted.write_file("src/greet.py", content, Usage(2300, 1500, 120)),
        ShellCall("git status --porcelain", Usage(2500, 2000, 40)),
        Final("Added src/greet.py with a greet() helper.", Usage(2600, 2300, 60)),
    ]
    model_server.script.extend(turns)

    run = await agent.run("Add a greet helper in src/greet.py.")

    assert run.result.outcome is AgentOutcome.DONE, (run.result, run.lines[-5:])
    assert run.result.exit_code == 0
    assert (checkout / "src" / "greet.py").read_bytes() == content.encode("utf-8")
    assert model_server.script.played == 4 and len(run.requests) == 4
    # The commands ran in the checkout, and git saw the new file.
    assert "?? src/" in scripted.tool_outputs(run.requests[3])[-1]
    # The summary is the final message; the session is the thread Codex named on the wire.
    assert run.result.summary == "Added src/greet.py with a greet() helper."
    assert run.result.session_id
    assert {r.headers.get("thread-id") for r in run.requests} == {run.result.session_id}
    # Every request went to our server (the -c provider), with our key, for Codex's default
    # model (none was given), streaming the whole conversation each time.
    assert {r.headers.get("Authorization") for r in run.requests} == {f"Bearer {API_KEY}"}
    assert {r.body["model"] for r in run.requests} == {CODEX_DEFAULT_MODEL}
    assert all(r.body["stream"] is True and r.body["store"] is False for r in run.requests)
    assert "exec" in scripted.offered_tools(run.requests[0].body)  # Codex 0.171's code mode
    # Cost: the scripted usage at the configured prices of the model that ran.
    usage = scripted.turn_usage(turns)
    assert run.reported_usage()["input_tokens"] == usage.input_tokens
    assert run.result.cost_usd == pytest.approx(cost(usage), rel=0.01)
    print(f"\ncodex run: {timing(run)}; cost ${run.result.cost_usd:.6f}")


async def test_a_named_model_gets_its_direct_tools_and_its_list_price(
    agent: Codex, model_server: ModelServer, checkout: Path
) -> None:
    """``-m gpt-5``: Codex offers ``exec_command`` as a plain function tool (no code mode), and
    the run is priced from the default table's gpt-5 entry."""
    turns = [
        ApplyPatch(scripted.add_file_patch("notes.txt", "one\ntwo\n"), Usage(3000, 0, 200)),
        ShellCall(["git", "add", "notes.txt"], Usage(3200, 2800, 30)),
        ShellCall("git diff --cached --stat", Usage(3300, 3000, 30)),
        Final("Added notes.txt.", Usage(3400, 3200, 20)),
    ]
    model_server.script.extend(turns)

    run = await agent.run("Add notes.txt.", model="gpt-5", prices=DEFAULT_PRICES)

    assert run.result.outcome is AgentOutcome.DONE, (run.result, run.lines[-5:])
    assert (checkout / "notes.txt").read_text() == "one\ntwo\n"
    assert {r.body["model"] for r in run.requests} == {"gpt-5"}
    assert scripted.offered_tools(run.requests[0].body)["exec_command"] == ("function", "")
    assert "notes.txt | 2 ++" in scripted.tool_outputs(run.requests[3])[-1]
    assert run.result.cost_usd == pytest.approx(
        cost(scripted.turn_usage(turns), "gpt-5", DEFAULT_PRICES), rel=0.01
    )


async def test_a_model_without_a_price_costs_nothing_made_up(agent: Codex, model_server: ModelServer) -> None:
    model_server.script.extend([Final("ok", Usage(5000, 0, 100))])
    run = await agent.run("Say ok.", prices=DEFAULT_PRICES)  # no price for Codex's default model
    assert run.result.outcome is AgentOutcome.DONE, run.result
    assert run.result.cost_usd == 0.0


async def test_a_rejected_key_fails_the_run_with_codexs_message(
    agent: Codex, model_server: ModelServer
) -> None:
    """Codex retries even a 401 (five times, "Reconnecting... n/5"), then fails the turn; its
    events carry no error code, so the preset can only call it an agent error."""
    rejected = scripted.ApiError(401, "invalid_api_key", "Incorrect API key provided")
    model_server.script.extend([rejected] * 6 + [Final("too late")])
    run = await agent.run("Say ok.", retries=True)
    assert run.result.outcome is AgentOutcome.AGENT_ERROR, run.result
    assert "401 Unauthorized: Incorrect API key provided" in run.result.error
    assert model_server.script.played == 6 and run.result.cost_usd == 0.0
    print(f"\ncodex with a rejected key: failed after {run.wall:.2f} s and {len(run.requests)} requests")


# -- resume: the thread continues, earlier turns are sent again, only the increase is charged ----


async def test_resume_continues_the_thread_and_is_charged_only_its_increase(
    agent: Codex, model_server: ModelServer, checkout: Path
) -> None:
    per_run = Usage(2000, 500, 400)  # 2400 tokens
    model_server.script.extend(
        [
            scripted.write_file("notes.txt", "first\n", Usage(1200, 0, 300)),
            Final("Wrote notes.txt.", Usage(800, 500, 100)),
        ]
    )
    first = await agent.run("Write notes.txt.")
    assert first.result.outcome is AgentOutcome.DONE, (first.result, first.lines[-5:])
    thread = first.result.session_id

    model_server.script.extend(
        [
            scripted.write_file("notes.txt", "first\nsecond\n", Usage(1500, 400, 300)),
            Final("Added the second line.", Usage(500, 100, 100)),
        ]
    )
    second = await agent.run("Review feedback: add a second line.", session_id=thread)

    assert second.result.outcome is AgentOutcome.DONE, (second.result, second.lines[-5:])
    assert second.argv[:3] == [agent.exe, "exec", "resume"] and thread in second.argv
    assert (checkout / "notes.txt").read_text() == "first\nsecond\n"
    assert second.result.session_id == thread
    assert second.result.summary == "Added the second line."
    # The resumed run's first request carries the whole earlier conversation, then only appends.
    earlier = scripted.without_ids(first.requests[-1].body["input"])
    resumed = scripted.without_ids(second.requests[0].body["input"])
    assert resumed[: len(earlier)] == earlier
    assert "Wrote notes.txt." in scripted.assistant_texts(second.requests[0])
    assert scripted.user_texts(second.requests[0])[-1].startswith("Review feedback: add a second line.")
    for before, after in zip(second.requests, second.requests[1:], strict=False):
        b, a = (scripted.without_ids(r.body["input"]) for r in (before, after))
        assert a[: len(b)] == b

    # Codex reports the thread's totals (2400 → 4800 → 7200); each run is charged its own 2400.
    model_server.script.extend([Final("Nothing else to do.", per_run)])
    third = await agent.run("Anything else?", session_id=thread)
    assert third.result.outcome is AgentOutcome.DONE, third.result
    assert [
        r.reported_usage()["input_tokens"] + r.reported_usage()["output_tokens"]
        for r in (first, second, third)
    ] == [2400, 4800, 7200]
    for run in (first, second, third):
        assert run.result.cost_usd == pytest.approx(cost(per_run), rel=0.01)
    raw_before = json.dumps(first.requests[-1].body["input"]).encode()[:-1]  # without the closing ]
    raw_after = json.dumps(second.requests[0].body["input"]).encode()
    print(
        f"\ncodex resumed run: {timing(second)}; the resumed request starts with the earlier one's "
        f"input bytes: {raw_after.startswith(raw_before)} ({len(raw_before)} of {len(raw_after)} B)"
    )


async def test_a_run_killed_before_its_report_is_charged_what_codex_recorded(
    agent: Codex, model_server: ModelServer
) -> None:
    """A run that never reaches ``turn.completed`` (here: timed out in a slow command) still
    costs the answers it received: the preset reads them from Codex's session record."""
    answered = Usage(4000, 1000, 300)
    model_server.script.extend([ShellCall("sleep 30", answered), Final("never", Usage(1, 0, 1))])
    run = await agent.run("Wait a bit.", timeout=4)
    assert run.killed is KillReason.TIMEOUT and run.result.outcome is AgentOutcome.TIMEOUT, run.result
    assert not [e for e in run.events if e.get("type") == "turn.completed"]
    assert run.result.cost_usd == pytest.approx(cost(answered), rel=0.01)


# -- prompt cache: fresh runs send the same prefix ----------------------------------------------


def prefix(request: RecordedRequest) -> dict[str, Any]:
    """What the provider's prompt cache keys on, in order: instructions, tools (Codex 0.171
    declares them in its first input item), then the input up to the first user message."""
    body = request.body
    items = body["input"]
    first_user = next(i for i, item in enumerate(items) if item.get("role") == "user")
    return {
        "instructions": body.get("instructions"),
        "tools": body.get("tools"),
        "first": items[0],
        "up to the first user message": items[: first_user + 1],
    }


async def test_fresh_runs_of_one_task_send_the_same_prompt_prefix(
    agent: Codex, model_server: ModelServer, checkout: Path
) -> None:
    """Two non-resumed attempts of one task (same checkout and HOME, as the runner keeps them),
    the bot committing the first attempt's change in between."""
    prompt = "Fix issue #7: greet() should greet politely.\n\nWrite the change, then stop."
    runs = []
    for attempt in range(2):
        model_server.script.extend(
            [scripted.write_file(f"attempt{attempt}.txt", f"{attempt}\n"), Final(f"attempt {attempt} done")]
        )
        runs.append(await agent.run(prompt))
        assert runs[-1].result.outcome is AgentOutcome.DONE, runs[-1].result
        git(checkout, "add", "-A")
        git(checkout, "commit", "-q", "-m", f"patchwright: attempt {attempt}")
    assert runs[0].result.session_id != runs[1].result.session_id
    one, two = (prefix(r.requests[0]) for r in runs)
    figures = {}
    for part in one:
        raw = [json.dumps(p[part]).encode() for p in (one, two)]
        model_visible = [json.dumps(scripted.without_ids(p[part])).encode() for p in (one, two)]
        # What the model reads is the same bytes; only the per-run item ids differ.
        assert model_visible[0] == model_visible[1], f"{part} differs between fresh runs"
        figures[part] = (
            f"{len(raw[0])} bytes, {'identical' if raw[0] == raw[1] else 'identical but for item ids'}"
        )
    bodies = [r.requests[0].body for r in runs]
    print(
        f"\nprompt prefix across fresh runs: {figures}; prompt_cache_key per run: "
        f"{bodies[0].get('prompt_cache_key') != bodies[1].get('prompt_cache_key')} (the thread id)"
    )
