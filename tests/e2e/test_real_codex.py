"""The real Codex CLI through the whole loop (issue 12): the emulator, the bot as ``serve`` runs
it (ingress, dispatcher, handlers), a worker pool with the ``codex`` preset, and the scripted
Responses API model server on 127.0.0.1 — without a sandbox and in bubblewrap.

The operator sets ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` in the workers' environment and a
price for Codex's default model (``PATCHWRIGHT_MODEL_PRICES``); the repository only says
``agent: {preset: codex}``. label → codex writes the scripted change (and runs ``git status``
in its checkout) → PR with exactly that change, cost = usage × price; a CI failure → a fresh
thread whose prompt prefix is the first one's; a review → a feedback attempt that resumes the
thread (the model server receives the earlier turns), charged only what it added; questions →
``waiting`` → an answer on the issue → the resumed thread finishes the work.

Needs ``codex`` (npm: @openai/codex) on PATH and, for the bwrap variant, a working bubblewrap:
skipped on a developer machine without them, failed under CI=true.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
from typing import Any

import pytest

from bot.agents.presets import PriceTable
from bot.tasks import rules
from bot.tasks.model import Status
from tests.e2e.real_agents import Conversations, reach, task_of
from tests.model_server import ModelServer, RecordedRequest
from tests.model_server import responses as scripted
from tests.model_server.responses import CODEX_DEFAULT_MODEL, Final, ShellCall, Usage

pytestmark = pytest.mark.slow

API_KEY = "sk-test-codex-e2e-0123456789"
#: PATCHWRIGHT_MODEL_PRICES as the operator sets it for Codex's default model (USD per million).
PRICES = f"{CODEX_DEFAULT_MODEL}=1.25/0.125/10"
CONFIG = {"agent": {"preset": "codex", "timeout_minutes": 2}, "max_concurrent_tasks": 10}
NEW_APP = "def greet(name):\n    return 'hello ' + name\n"
NEW_TEST = "from src.app import greet\n\n\ndef test_greet():\n    assert greet('x') == 'hello x'\n"
DOCS = "# Greeting\n\n`greet(name)` says hello.\n"


@pytest.fixture(params=["none", "bwrap"])
def sandbox(request: pytest.FixtureRequest, require: Any) -> str:
    """How the pool runs the agent; the real codex CLI must be installed."""
    require.cli("codex", "npm install -g @openai/codex")
    if request.param == "bwrap":
        require.bwrap()
    return str(request.param)


async def start(e2e: Any, model_server: ModelServer, sandbox: str) -> None:
    """The bot as an operator runs it: a price for the model, the provider's key and endpoint
    under Codex's own names in the environment the workers pass on, ingress and handlers."""
    e2e.use_settings(model_prices=PRICES)
    await e2e.serve()
    await e2e.start_pool(
        sandbox=sandbox,
        environ={
            "PATH": os.environ["PATH"],
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": model_server.base_url + "/v1",
        },
    )


def cost(turns: list[Any]) -> float:
    """What the scripted answers cost at the operator's price for Codex's default model."""
    prices = PriceTable().with_overrides(PRICES).for_model(CODEX_DEFAULT_MODEL)
    assert prices is not None
    usage = scripted.turn_usage(turns)
    return prices.cost(usage.input_tokens, usage.cached_tokens, usage.output_tokens)


def input_of(request: RecordedRequest) -> list[Any]:
    return scripted.without_ids(request.body["input"])


def assert_resumes(earlier: list[RecordedRequest], resumed: list[RecordedRequest], prompt_text: str) -> None:
    """The resumed attempt's requests carry the earlier attempt's whole conversation (its
    final answer too), and only append to it; one thread throughout."""
    assert earlier and resumed
    before, after = input_of(earlier[-1]), input_of(resumed[0])
    assert after[: len(before)] == before, "the resumed run does not start with the earlier turns"
    assert prompt_text in json.dumps(after[len(before) :])
    for one, two in itertools.pairwise(resumed):
        a, b = input_of(one), input_of(two)
        assert b[: len(a)] == a
    threads = {r.headers.get("thread-id") for r in earlier + resumed}
    assert len(threads) == 1, threads


def prefix(request: RecordedRequest) -> list[Any]:
    """What the prompt cache keys on: the input up to the first user message (instructions,
    tools and environment), without the per-run item ids."""
    items = request.body["input"]
    first_user = next(i for i, item in enumerate(items) if item.get("role") == "user")
    return scripted.without_ids(
        [request.body.get("instructions"), request.body.get("tools"), *items[: first_user + 1]]
    )


def attempt_tmpdir(value: Any) -> Any:
    """``value`` with the attempt's own TMPDIR (``…/agents/<task>-<attempt>/tmp``) made the same."""
    return json.loads(re.sub(r"(/agents/[A-Za-z0-9_]+)-[0-9]+/tmp", r"\1-N/tmp", json.dumps(value)))


def prefix_difference(one: RecordedRequest, two: RecordedRequest) -> str:
    """Where two prompt prefixes first differ (for a failure message)."""
    for index, (a, b) in enumerate(zip(prefix(one), prefix(two), strict=False)):
        x, y = json.dumps(a), json.dumps(b)
        if x != y:
            at = len(os.path.commonprefix([x, y]))
            return f"item {index} differs at {at}: {x[max(0, at - 200) : at + 200]!r} vs {y[max(0, at - 200) : at + 200]!r}"
    return f"lengths {len(prefix(one))} vs {len(prefix(two))}"


async def timings(e2e: Any, task_id: str, requests: list[list[RecordedRequest]]) -> list[str]:
    """Per attempt: wall time, the agent's share (its start-up until the first model request
    reached the server, then the rest) and patchwright's own (checkout, commit, push)."""
    attempts = await e2e.store.list_attempts(task_id)
    pattern = r"the agent ended: \w+ \(exit -?\d+, ([0-9.]+) s"
    for _ in range(200):  # the last attempt's log lines may still be on their way to the store
        logs = "\n".join(line for _, line in await e2e.store.read_logs(task_id))
        agent = [float(s) for s in re.findall(pattern, logs)]
        if len(agent) >= len(attempts):
            break
        await asyncio.sleep(0.05)
    if len(agent) < len(attempts):  # (a figure for the report, not a check of the bot)
        return [f"the agent's durations are missing from the attempt logs: {agent}"]
    lines = []
    for attempt, agent_s, sent in zip(attempts, agent, requests, strict=True):
        assert attempt.finished_at is not None
        total = (attempt.finished_at - attempt.started_at).total_seconds()
        lines.append(
            f"attempt {attempt.number} ({attempt.kind.value}): {total:.2f} s, agent {agent_s:.2f} s "
            f"({len(sent)} model requests), patchwright {total - agent_s:.2f} s, ${attempt.cost_usd:.6f}"
        )
    return lines


async def test_label_to_pr_then_ci_retry_and_resumed_feedback_with_the_real_codex(
    e2e: Any, model_server: ModelServer, sandbox: str
) -> None:
    first_turns = [
        scripted.write_file("src/app.py", NEW_APP, Usage(3000, 0, 150)),
        ShellCall("git status --porcelain", Usage(3300, 2500, 40)),
        Final("Changed the greeting to hello.", Usage(3400, 3000, 30)),
    ]
    ci_turns = [
        scripted.write_file("tests/test_app.py", NEW_TEST, Usage(2100, 0, 90)),
        Final("Fixed the test.", Usage(2200, 1800, 20)),
    ]
    feedback_turns = [
        scripted.write_file("docs/greeting.md", DOCS, Usage(5000, 4000, 80)),
        ShellCall(["git", "add", "docs/greeting.md"], Usage(5100, 4500, 20)),
        Final("Documented the greeting.", Usage(5200, 4600, 25)),
    ]
    model_server.script.extend(first_turns)
    conversations = Conversations(model_server)
    repo = await e2e.add_repo("demo", config=CONFIG)
    await start(e2e, model_server, sandbox)

    # label → the first attempt: codex writes src/app.py, runs git status, the bot opens the PR
    issue = await e2e.open_issue(repo, "Greet with hello", "Say hello instead of hi.")
    await e2e.emulator.label_issue(repo, issue, ["patchwright"], "alice")
    task = await task_of(e2e, repo, issue)
    first = await reach(e2e, task.id, lambda t: t.status is Status.REVIEW)
    first_requests = conversations.since_last()
    assert len(first_requests) == 3 and model_server.script.played == 3
    assert await e2e.read(repo, first.branch, "src/app.py") == NEW_APP
    changed = await e2e.git(repo, "diff", "--name-only", "main", first.branch)
    assert changed.split() == ["src/app.py"]
    assert " M src/app.py" in scripted.tool_outputs(first_requests[2])[-1]
    pull = e2e.pull(repo, first.pr_number)
    assert pull.pull.head_ref == first.branch and "Changed the greeting to hello." in pull.body
    assert {r.headers.get("Authorization") for r in first_requests} == {f"Bearer {API_KEY}"}
    assert {r.body["model"] for r in first_requests} == {CODEX_DEFAULT_MODEL}
    assert first.agent_session == first_requests[0].headers.get("thread-id")
    assert first.cost_usd > 0
    assert first.cost_usd == pytest.approx(cost(first_turns), rel=0.01)

    # a CI failure → a fresh (not resumed) thread; its prompt prefix is the first one's
    model_server.script.extend(ci_turns)
    await e2e.decide(
        task.id,
        lambda t: rules.ci_failed(
            t,
            failing_checks=["ci"],
            head_sha=t.head_sha,
            context="AssertionError: 'hello x' != 'hi x'",
            now=e2e.services.clock(),
        ),
    )
    second = await reach(e2e, task.id, lambda t: t.status is Status.REVIEW and t.attempt == 2)
    ci_requests = conversations.since_last()
    assert len(ci_requests) == 2
    assert second.pr_number == first.pr_number and second.agent_session != first.agent_session
    assert "AssertionError: 'hello x' != 'hi x'" in scripted.user_texts(ci_requests[0])[-1]
    assert not scripted.assistant_texts(ci_requests[0])  # a new conversation
    same_prefix = prefix(ci_requests[0]) == prefix(first_requests[0])
    # Without our sandbox, Codex's own lists its writable roots in the prompt, TMPDIR among them,
    # and the runner gives each attempt a TMPDIR of its own: that path is the only difference.
    same_but_tmpdir = attempt_tmpdir(prefix(ci_requests[0])) == attempt_tmpdir(prefix(first_requests[0]))
    assert await e2e.read(repo, second.branch, "tests/test_app.py") == NEW_TEST

    # a review requesting changes → a feedback attempt resuming the thread: the model server
    # receives the earlier turns; the push goes to the same PR
    model_server.script.extend(feedback_turns)
    review = await e2e.emulator.submit_review(
        repo,
        first.pr_number,
        user="alice",
        event="REQUEST_CHANGES",
        body="Please document the greeting.",
        comments=[{"path": "src/app.py", "line": 2, "body": "Where is this documented?"}],
    )
    thread = e2e.emulator.repo(repo).reviews[review["id"]].comment_ids[0]
    third = await reach(e2e, task.id, lambda t: t.status is Status.REVIEW and t.attempt == 3)
    feedback_requests = conversations.since_last()
    assert len(feedback_requests) == 3
    assert_resumes(ci_requests, feedback_requests, "Please document the greeting.")
    assert "Fixed the test." in scripted.assistant_texts(feedback_requests[0])
    assert third.agent_session == second.agent_session
    assert third.pr_number == first.pr_number and third.branch == first.branch
    assert await e2e.read(repo, third.branch, "docs/greeting.md") == DOCS
    assert await e2e.read(repo, third.branch, "src/app.py") == NEW_APP
    # git add worked in the agent's checkout (its git directory is writable in either sandbox)
    assert "fatal" not in scripted.tool_outputs(feedback_requests[2])[-1]
    assert e2e.review_replies(repo, thread) == [f"Addressed in {third.head_sha}."]
    logs = await e2e.logs_once_written(task.id, f"resuming session {second.agent_session}")
    assert API_KEY not in logs
    assert "refused a connection" not in logs  # Codex called nothing but its model provider
    assert logs.count("running the codex agent in bubblewrap") == (3 if sandbox == "bwrap" else 0)

    # costs: the scripted usage at the configured price, per attempt — the resumed thread is
    # charged only what it added, though Codex reports the thread's totals
    attempts = await e2e.store.list_attempts(task.id)
    expected = [cost(t) for t in (first_turns, ci_turns, feedback_turns)]
    assert [a.outcome for a in attempts] == ["pushed", "pushed", "pushed"]
    assert [a.cost_usd for a in attempts] == pytest.approx(expected, rel=0.01)
    assert third.cost_usd == pytest.approx(sum(expected), rel=0.01)
    lines = await timings(e2e, task.id, [first_requests, ci_requests, feedback_requests])
    size = len(json.dumps(prefix(first_requests[0])).encode())
    print(
        f"\n[{sandbox}] prompt prefix of the fresh CI attempt (input up to the first user message, "
        f"{size} B without item ids) = attempt 1's: {same_prefix} (but for the attempt's TMPDIR: "
        f"{same_but_tmpdir})\n" + "\n".join(lines)
    )
    if sandbox == "bwrap":
        assert same_prefix, prefix_difference(first_requests[0], ci_requests[0])
    else:
        assert same_but_tmpdir, prefix_difference(first_requests[0], ci_requests[0])


async def test_questions_wait_then_the_answer_resumes_the_real_codex(
    e2e: Any, model_server: ModelServer, sandbox: str
) -> None:
    signal = {"status": "questions", "questions": [{"id": "q1", "question": "Should it say hello or hey?"}]}
    asking = [
        scripted.write_file(".patchwright/signal.json", json.dumps(signal), Usage(1500, 0, 60)),
        Final("I have a question before changing anything.", Usage(1600, 1200, 20)),
    ]
    answered = [
        scripted.write_file("src/app.py", NEW_APP, Usage(2500, 2000, 70)),
        Final("Changed the greeting to hello, as answered.", Usage(2600, 2200, 20)),
    ]
    model_server.script.extend(asking)
    conversations = Conversations(model_server)
    repo = await e2e.add_repo("demo", config=CONFIG)
    await start(e2e, model_server, sandbox)

    issue = await e2e.open_issue(repo, "Greet differently", "The greeting is too short.")
    await e2e.emulator.label_issue(repo, issue, ["patchwright"], "alice")
    task = await task_of(e2e, repo, issue)
    waiting = await reach(e2e, task.id, lambda t: t.status is Status.WAITING)
    asked = conversations.since_last()
    assert len(asked) == 2 and waiting.agent_session
    assert waiting.pr_number is None
    [first] = await e2e.store.list_attempts(task.id)
    assert first.outcome == "questions"
    assert first.cost_usd == pytest.approx(cost(asking), rel=0.01)

    # the answer on the issue resumes the same thread
    model_server.script.extend(answered)
    await e2e.emulator.comment_on(repo, issue, "Hello, please.", user="alice")
    done = await reach(e2e, task.id, lambda t: t.status is Status.REVIEW)
    resumed = conversations.since_last()
    assert len(resumed) == 2
    assert_resumes(asked, resumed, "Hello, please.")
    assert done.agent_session == waiting.agent_session
    assert await e2e.read(repo, done.branch, "src/app.py") == NEW_APP
    assert await e2e.read(repo, done.branch, ".patchwright/signal.json") is None
    changed = await e2e.git(repo, "diff", "--name-only", "main", done.branch)
    assert changed.split() == ["src/app.py"]
    attempts = await e2e.store.list_attempts(task.id)
    assert [a.cost_usd for a in attempts] == pytest.approx([cost(asking), cost(answered)], rel=0.01)
    print(f"\n[{sandbox}] " + "\n".join(await timings(e2e, task.id, [asked, resumed])))
