"""The real ``aider`` (0.86.2) through :class:`AiderPreset` and :func:`run_agent`, against the
scripted OpenAI chat completions server (tests/model_server/chat.py) on 127.0.0.1, in a
throw-away git repository, unsandboxed: the scripted replies make aider create and edit
files with exact contents (left uncommitted: ``--no-auto-commits``), write the signal file,
and the cost is aider's own ``Cost:`` figure where it knows the model's price, else its token
counts at the price table's prices.

Needs ``aider`` on PATH (PyPI: aider-chat): skipped on a developer machine without it, failed
under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bot.agents.presets import (
    AiderPreset,
    AiderState,
    Invocation,
    PriceTable,
    TokenPrices,
)
from bot.agents.process import run_agent
from bot.agents.result import AgentOutcome, AgentResult, KillReason
from bot.agents.sandbox import agent_env
from bot.agents.signal import read_signal
from tests.model_server import ModelServer
from tests.model_server.chat import (
    CHAT_PATH,
    Error,
    Reply,
    Usage,
    last_user_text,
    messages,
    search_replace,
    whole_file,
)

pytestmark = pytest.mark.slow

Require = Callable[[bool, str], None]

#: A model aider has no price for (litellm does not know it): the price table prices it.
UNPRICED = "openai/patchwright-scripted"
SCRIPTED_PRICES = TokenPrices(input=2.0, cached_input=0.5, output=8.0)
API_KEY = "sk-test-aider-0123456789"

APP = "def greet(name):\n    return 'hi ' + name\n"


@pytest.fixture
def aider(require: Require) -> str:
    path = shutil.which("aider")
    require(path is not None, "the aider CLI is not on PATH (pip install aider-chat)")
    assert path is not None
    return path


def git(work: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(work), *args], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / "README.md").write_text("# demo\n")
    (work / "src").mkdir()
    (work / "src" / "app.py").write_text(APP)
    git(work, "add", "-A")
    git(work, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "init")
    return work


@dataclass
class Ran:
    result: AgentResult
    state: AiderState
    lines: list[str]
    started: float
    ended: float

    def timings(self, server: ModelServer) -> tuple[float, float]:
        """(seconds until aider's first model request, seconds from the last request to its exit)."""
        asked = [r.received for r in server.conversation_requests()]
        return asked[0] - self.started, self.ended - asked[-1]


async def run_aider(
    aider: str,
    work: Path,
    server: ModelServer,
    *,
    model: str,
    prompt: str,
    prices: PriceTable | None = None,
    cap: float | None = None,
) -> Ran:
    preset = AiderPreset(aider, prices=prices)
    agent_dir = work.parent / "agent"
    home, tmp = agent_dir / "home", agent_dir / "tmp"
    for path in (home, tmp):
        path.mkdir(parents=True, exist_ok=True)
    prompt_file = agent_dir / "prompt.md"
    prompt_file.write_text(prompt)
    launch = preset.build(
        Invocation(prompt=prompt, prompt_file=str(prompt_file), workdir=str(work), model=model)
    )
    passthrough = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_API_BASE": server.base_url + "/v1",
    }
    env = agent_env(home=home, tmpdir=tmp, passthrough=passthrough, preset_keys=preset.provider_keys)
    env.update(launch.env)
    state = preset.new_state()
    assert isinstance(state, AiderState)
    lines: list[str] = []

    def on_line(line: str) -> KillReason | None:
        lines.append(line)
        preset.parse_line(line, state)
        return KillReason.COST if cap is not None and state.cost_usd >= cap else None

    started = time.monotonic()
    ended_process = await run_agent(
        launch.argv, cwd=work, env=env, stdin_data=launch.stdin, timeout=120, on_line=on_line, grace=1.0
    )
    ended = time.monotonic()
    result = preset.finish(state, ended_process.exit_code, read_signal(work), killed=ended_process.killed_reason)
    if cap is None:
        assert ended_process.exit_code == 0, "\n".join(lines[-30:])
    return Ran(result, state, lines, started, ended)


def untracked_and_changed(work: Path) -> set[str]:
    return {line[3:] for line in git(work, "status", "--porcelain", "--untracked-files=all").splitlines()}


async def test_aider_creates_and_rewrites_files_exactly_and_is_charged_by_the_price_table(
    aider: str, repo: Path, model_server: ModelServer
) -> None:
    notes = "# Greetings\n\nThe app says *hello* now.\n\n    indented line\ttab\n"
    app = "def greet(name):\n    return 'hello ' + name\n"
    model_server.script.extend(
        [
            # aider adds a file the reply names to the chat and asks again (no edit yet) ...
            Reply("To change the greeting I need to see src/app.py.", Usage(24_000, 100)),
            # ... then applies the edits of the second reply.
            Reply(
                "I will add the notes and change the greeting.\n\n"
                + whole_file("docs/greetings.md", notes)
                + "\n"
                + whole_file("src/app.py", app),
                Usage(prompt_tokens=26_000, completion_tokens=1_500),
            ),
        ]
    )
    head = git(repo, "rev-parse", "HEAD")
    prompt = "Make the greeting say hello and document it in docs/greetings.md.\n"
    table = PriceTable({"patchwright-scripted": SCRIPTED_PRICES})
    ran = await run_aider(aider, repo, model_server, model=UNPRICED, prompt=prompt, prices=table)

    assert (repo / "docs" / "greetings.md").read_text() == notes
    assert (repo / "src" / "app.py").read_text() == app
    # Changed in the worktree only; aider's chat history does not land in the checkout.
    assert git(repo, "rev-parse", "HEAD") == head
    changed = untracked_and_changed(repo)
    assert {"docs/greetings.md", "src/app.py"} <= changed
    assert not any(path.startswith((".aider.chat", ".aider.input")) for path in changed)

    # The cost: aider printed no Cost line (no price), so tokens × table prices.
    assert not any("Cost: $" in line for line in ran.lines)
    usage = [line for line in ran.lines if line.startswith("Tokens:")]
    assert usage == ["Tokens: 24k sent, 100 received.", "Tokens: 26k sent, 1.5k received."]
    expected = (50_000 * SCRIPTED_PRICES.input + 1_600 * SCRIPTED_PRICES.output) / 1_000_000
    assert ran.result.outcome is AgentOutcome.DONE
    assert ran.result.cost_usd == pytest.approx(expected, rel=0.01)
    assert ran.state.model == UNPRICED and ran.state.unpriced_replies == 0

    # What aider sent: two conversation requests (nothing else), the prompt as the first's
    # last user message, our key and the model name without litellm's provider prefix; the
    # second carries the file it added.
    first, second = model_server.requests
    assert [(r.path, r.conversation) for r in model_server.requests] == [(CHAT_PATH, True)] * 2
    assert first.body["model"] == second.body["model"] == "patchwright-scripted"
    assert first.headers["Authorization"] == f"Bearer {API_KEY}"
    assert last_user_text(first.body).startswith(prompt)
    assert "src/app.py" in json.dumps(first.body)  # the repo map shows the repository
    assert any(APP in text for _, text in messages(second.body))
    before, after = ran.timings(model_server)
    print(f"\naider run: {before:.2f} s until the first request, {after:.2f} s after the last one")


async def test_aider_edits_with_search_replace_and_its_own_cost_line_is_read(
    aider: str, repo: Path, model_server: ModelServer
) -> None:
    # gpt-4o: aider knows its price (2.5 / 10 USD per million tokens) and uses the diff format.
    model_server.script.extend(
        [
            Reply(
                "Changing the greeting.\n\n"
                + search_replace("src/app.py", "    return 'hi ' + name\n", "    return 'hello ' + name\n"),
                Usage(prompt_tokens=20_000, completion_tokens=1_000),
            )
        ]
    )
    absurd = PriceTable({"gpt-4o": TokenPrices(100.0, 100.0, 100.0)})  # must not be used
    ran = await run_aider(
        aider, repo, model_server, model="openai/gpt-4o", prompt="Say hello in src/app.py.\n", prices=absurd
    )
    assert (repo / "src" / "app.py").read_text() == "def greet(name):\n    return 'hello ' + name\n"
    assert any("Cost: $0.06 message, $0.06 session." in line for line in ran.lines), ran.lines[-10:]
    assert ran.result.outcome is AgentOutcome.DONE
    assert ran.result.cost_usd == pytest.approx(20_000 * 2.5e-6 + 1_000 * 10e-6, rel=0.01)


async def test_aider_writes_the_signal_file_with_questions(
    aider: str, repo: Path, model_server: ModelServer
) -> None:
    signal = {
        "status": "questions",
        "questions": [{"id": "q1", "question": "Should the greeting be 'hello' or 'hey'?"}],
    }
    model_server.script.extend(
        [
            Reply(
                "I need to ask first.\n\n" + whole_file(".patchwright/signal.json", json.dumps(signal) + "\n"),
                Usage(prompt_tokens=3_000, completion_tokens=200),
            )
        ]
    )
    table = PriceTable({"patchwright-scripted": SCRIPTED_PRICES})
    ran = await run_aider(aider, repo, model_server, model=UNPRICED, prompt="Change the greeting.\n", prices=table)
    assert any(line == "Applied edit to .patchwright/signal.json" for line in ran.lines)
    assert ran.result.outcome is AgentOutcome.QUESTIONS  # read (and removed) by read_signal
    assert [q.question for q in ran.result.questions] == ["Should the greeting be 'hello' or 'hey'?"]
    assert ran.result.cost_usd == pytest.approx((3_000 * 2.0 + 200 * 8.0) / 1e6, rel=0.01)
    assert (repo / "src" / "app.py").read_text() == APP


async def test_aider_is_killed_once_its_token_cost_passes_the_cap(
    aider: str, repo: Path, model_server: ModelServer
) -> None:
    # The first reply costs 24k × $2 + 100 × $8 per million = $0.0488, past a $0.04 cap: the
    # agent is killed as soon as aider prints its usage (the second reply, should aider get
    # to ask for it, comes too late to be applied).
    edit = whole_file("src/app.py", "def greet(name):\n    return 'hello ' + name\n")
    model_server.script.extend(
        [
            Reply("To change the greeting I need to see src/app.py.", Usage(24_000, 100)),
            Reply(edit, Usage(26_000, 500), delay=10.0),
        ]
    )
    table = PriceTable({"patchwright-scripted": SCRIPTED_PRICES})
    ran = await run_aider(
        aider, repo, model_server, model=UNPRICED, prompt="Say hello.\n", prices=table, cap=0.04
    )
    assert ran.result.outcome is AgentOutcome.KILLED_COST
    assert ran.result.cost_usd == pytest.approx(0.0488, rel=0.01)
    assert len(model_server.conversation_requests()) <= 2
    assert (repo / "src" / "app.py").read_text() == APP
    assert not any(line.startswith("Applied edit") for line in ran.lines)


async def test_the_chat_server_streams_when_asked_and_answers_errors(model_server: ModelServer) -> None:
    model_server.script.extend(
        [
            Reply("streamed text", Usage(prompt_tokens=7, completion_tokens=3)),
            Error(401, "Incorrect API key provided", code="invalid_api_key"),
        ]
    )
    async with aiohttp.ClientSession() as session:
        async with session.post(
            model_server.base_url + CHAT_PATH,
            json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        ) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            raw = (await response.read()).decode()
        async with session.post(
            model_server.base_url + CHAT_PATH, json={"model": "m", "messages": []}
        ) as response:
            assert response.status == 401
            error = await response.json()
        async with session.post(
            model_server.base_url + CHAT_PATH, json={"model": "m", "messages": []}
        ) as response:
            after = await response.json()
    events = [line.removeprefix("data: ") for line in raw.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "streamed text"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert error["error"]["message"] == "Incorrect API key provided"
    assert error["error"]["code"] == "invalid_api_key"
    assert after["choices"][0]["message"]["content"] == "Done."  # the script is played out
    assert [r.conversation for r in model_server.requests] == [True, True, True]
