"""A cost cap crossed mid-run kills the agent and salvages its work, for every preset (issue 12,
criterion 3): the worker pool runs the real ``claude``, ``codex`` and ``aider`` against the
scripted model server (and the ``command`` preset with the fake agent), for a task whose
``max_cost_usd`` the scripted usage crosses after the agent already changed a file and while
more work is scripted after it. In each case the task fails with the cost-cap message, the
attempt is charged what the scripted usage costs (±1 %), the file written before the cap was
crossed is on the salvage branch ``patchwright/wip/<task>-<attempt>``, and what was scripted for
after the crossing never happened.

How the cap is enforced differs per preset:

- claude: the preset passes the task's budget as ``--max-budget-usd``; Claude Code stops by
  itself (``error_max_budget_usd`` → KILLED_COST);
- aider: its ``Tokens: …`` lines stream out after every reply; the worker prices them and kills it;
- codex: ``exec --json`` reports usage only at the end of the turn, so the worker polls Codex's
  session file (``CodexPreset.poll_cost``) and kills it within about a second;
- command: the agent's ``Cost: $… so far`` lines (the fake agent's ``{"cost": x}`` steps). The
  ``claude`` preset run by the fake agent is covered in tests/e2e/test_runner.py.

Unsandboxed (the cap does not depend on the sandbox). Needs the CLIs on PATH: skipped on a
developer machine without them, failed under CI=true.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from bot.agents.presets import DEFAULT_PRICES, PriceTable
from bot.tasks.model import Status
from bot.tasks.branches import wip_branch
from tests.model_server import ModelServer, anthropic, chat, responses

pytestmark = pytest.mark.slow

CAP = 0.05  # the task's max_cost_usd
PARTIAL = "written before the cap was crossed\n"
LATER = "LATER.md"  # what the script would write after the crossing
KEY = "sk-test-cost-cap-0123456789"

CLAUDE_MODEL = "claude-sonnet-4-5"
CODEX_MODEL = "gpt-5"  # in the default price table: $1.25 / $0.125 / $10 per million
AIDER_MODEL = "openai/patchwright-scripted"
AIDER_PRICES = "patchwright-scripted=2/0.5/8"
#: aider's first edit: flake8 (which aider runs after editing a Python file) finds an
#: undefined name, so aider asks the model again, and that answer crosses the cap.
BUGGY_APP = "def greet(name):\n    return 'hello ' + nme\n"


@dataclass
class Case:
    """One preset: its repository config, the workers' environment, the model server's
    script, the changed file that must be salvaged, and the cost the scripted usage implies."""

    preset: str
    install: str  # how to get the CLI ("" for the fake agent)
    agent: dict[str, Any]
    environ: Callable[[ModelServer], dict[str, str]]
    turns: list[Any]
    salvaged: tuple[str, str]  # (path, content) on the wip branch
    cost: float
    evidence: str  # what the attempt log shows of how the cap was enforced
    absent: str = ""  # what it must not show
    prices: str = ""  # PATCHWRIGHT_MODEL_PRICES
    script: dict[str, Any] = field(default_factory=dict)  # the fake agent's (command preset)


def claude_case() -> Case:
    turns = [
        anthropic.write("NOTES.md", PARTIAL, anthropic.Usage(5_000, 100)),  # $0.0165
        anthropic.bash("echo still working", anthropic.Usage(12_000, 200)),  # +$0.039 → $0.0555
        anthropic.write(LATER, "never\n", anthropic.Usage(100, 20)),
        anthropic.Final("Finished.", anthropic.Usage(100, 20)),
    ]
    return Case(
        preset="claude",
        install="npm install -g @anthropic-ai/claude-code",
        agent={"preset": "claude", "model": CLAUDE_MODEL},
        environ=lambda server: {"ANTHROPIC_BASE_URL": server.base_url, "ANTHROPIC_API_KEY": KEY},
        turns=turns,
        salvaged=("NOTES.md", PARTIAL),
        cost=anthropic.claude_cost(CLAUDE_MODEL, anthropic.turn_usage(turns[:2])),
        evidence='"subtype":"error_max_budget_usd"',  # Claude Code stopped by itself
    )


def codex_case() -> Case:
    turns = [
        responses.write_file("NOTES.md", PARTIAL, responses.Usage(10_000, 0, 100)),  # $0.0135
        responses.ShellCall("sleep 30", responses.Usage(40_000, 0, 200)),  # +$0.052 → $0.0655
        responses.write_file(LATER, "never\n", responses.Usage(1_000, 0, 10)),
        responses.Final("Finished.", responses.Usage(1_000, 0, 10)),
    ]
    prices = DEFAULT_PRICES.for_model(CODEX_MODEL)
    assert prices is not None
    usage = responses.turn_usage(turns[:2])
    return Case(
        preset="codex",
        install="npm install -g @openai/codex",
        agent={"preset": "codex", "model": CODEX_MODEL},
        environ=lambda server: {"OPENAI_BASE_URL": server.base_url + "/v1", "OPENAI_API_KEY": KEY},
        turns=turns,
        salvaged=("NOTES.md", PARTIAL),
        cost=prices.cost(usage.input_tokens, usage.cached_tokens, usage.output_tokens),
        evidence='"command":"/bin/bash -lc \'sleep 30\'"',  # killed in the middle of it
        absent='"turn.completed"',  # before Codex printed any usage
    )


def aider_case() -> Case:
    turns = [
        chat.Reply(chat.whole_file("src/greeting.py", BUGGY_APP), chat.Usage(10_000, 500)),  # $0.024
        # The answer to the lint errors, crossing the cap (+$0.044 → $0.068): it asks for
        # README.md, so aider would ask again (and wait for the slow third answer).
        chat.Reply("To fix it I need to see README.md.", chat.Usage(20_000, 500)),
        chat.Reply(chat.whole_file(LATER, "never\n"), chat.Usage(100, 10), delay=10.0),
    ]
    prices = PriceTable().with_overrides(AIDER_PRICES).for_model(AIDER_MODEL)
    assert prices is not None
    return Case(
        preset="aider",
        install="pip install aider-chat",
        agent={"preset": "aider", "model": AIDER_MODEL},
        environ=lambda server: {"OPENAI_API_BASE": server.base_url + "/v1", "OPENAI_API_KEY": KEY},
        turns=turns,
        salvaged=("src/greeting.py", BUGGY_APP),
        cost=prices.cost(10_000, 0, 500) + prices.cost(20_000, 0, 500),
        evidence="Tokens: 20k sent, 500 received.",
        prices=AIDER_PRICES,
    )


def command_case() -> Case:
    return Case(
        preset="command",
        install="",
        agent={"preset": "command"},  # the harness's fake agent (PATCHWRIGHT_AGENT_COMMAND)
        environ=lambda server: {},
        turns=[],
        salvaged=("NOTES.md", PARTIAL),
        cost=0.06,
        evidence="Cost: $0.0600 so far",
        script={
            "first": [
                {"write": {"NOTES.md": PARTIAL}},
                {"cost": 0.03},  # "Cost: $0.0300 so far"
                {"cost": 0.03},  # "Cost: $0.0600 so far": past the cap
                {"sleep": 5},
                {"write": {LATER: "never\n"}},
                {"done": "Finished."},
            ]
        },
    )


CASES = {"claude": claude_case, "codex": codex_case, "aider": aider_case, "command": command_case}


def agent_line(logs: str) -> tuple[str, int, float]:
    """(outcome, exit code, seconds) from the attempt log's "the agent ended" line."""
    match = re.search(r"the agent ended: (\w+) \(exit (-?\d+|None), ([0-9.]+) s", logs)
    assert match, logs[-3000:]
    code = match.group(2)
    return match.group(1), int(code) if code != "None" else 0, float(match.group(3))


@pytest.mark.parametrize("name", list(CASES))
async def test_a_cap_crossed_mid_run_kills_the_agent_and_salvages_its_work(
    e2e: Any, model_server: ModelServer, require: Any, name: str
) -> None:
    case = CASES[name]()
    if case.install:
        require.cli(case.preset, case.install)
    model_server.script.extend(case.turns)
    if case.prices:
        e2e.use_settings(model_prices=case.prices)
    config = {"agent": {**case.agent, "timeout_minutes": 1}, "budget": {"max_cost_usd": CAP}}
    repo = await e2e.add_repo("capped", script=case.script or None, config=config)
    issue = await e2e.open_issue(repo, "Expensive work", "Write the notes.")
    task = await e2e.create_task(repo, issue, max_cost_usd=CAP)
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **case.environ(model_server)}
    await e2e.start_pool(environ=environ)

    failed = await e2e.wait_for(task.id, lambda t: t.status in (Status.FAILED, Status.REVIEW), timeout=60)
    assert failed.status is Status.FAILED, (failed, await e2e.store.read_logs(task.id))
    logs = await e2e.logs_once_written(task.id, "attempt failed:")  # (stored in batches)
    outcome, exit_code, seconds = agent_line(logs)
    assert outcome == "killed_cost", logs[-4000:]
    assert case.evidence in logs and not (case.absent and case.absent in logs), logs[-4000:]
    wip = wip_branch(task.id, 1)
    [attempt] = await e2e.store.list_attempts(task.id)
    assert attempt.outcome == "failed" and "cost cap" in attempt.error and wip in attempt.error
    assert f"Cost cap reached: spent ${failed.cost_usd:.2f} of ${CAP:.2f}" in failed.close_reason
    # charged what the scripted usage up to the crossing costs
    assert attempt.cost_usd == pytest.approx(case.cost, rel=0.01)
    assert failed.cost_usd == pytest.approx(attempt.cost_usd, abs=1e-6)
    # the work done before the cap was crossed is salvaged; what came after never happened
    path, content = case.salvaged
    assert await e2e.read(repo, wip, path) == content
    assert await e2e.read(repo, wip, LATER) is None
    played = model_server.script.played
    if case.turns:
        assert played < len(case.turns), f"the whole script was played ({played} turns)"
    assert seconds < 15, f"the agent ran {seconds:.1f} s: it was not stopped mid-run"
    print(
        f"\n[{name}] killed_cost after {seconds:.2f} s (exit {exit_code}), "
        f"{played} of {len(case.turns)} scripted answers played, "
        f"cost ${attempt.cost_usd:.6f} (scripted ${case.cost:.6f}, cap ${CAP:.2f}), salvaged on {wip}"
    )
