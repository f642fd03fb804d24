"""The real Claude Code CLI through the whole loop (issue 12): the emulator, the bot as
``serve`` runs it (ingress, dispatcher, handlers), a worker pool with the ``claude`` preset,
and the scripted Anthropic model server on 127.0.0.1 — without a sandbox and in bubblewrap.

label → claude writes the scripted change (and runs ``git status`` in its checkout) → PR with
exactly that change; a CI failure → a fresh attempt whose prompt prefix is byte-identical to
the first one's (prompt cache); a review → a feedback attempt that resumes the session (the
model server receives the earlier turns) and pushes to the same PR; questions → ``waiting`` →
an answer on the issue → the resumed session finishes the work.

Needs ``claude`` (npm: @anthropic-ai/claude-code) on PATH and, for the bwrap variant, a
working bubblewrap: skipped on a developer machine without them, failed under CI=true.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from typing import Any

import pytest

from bot import messages
from bot.tasks import rules
from bot.tasks.model import Status
from tests.e2e.real_agents import Conversations, reach, task_of
from tests.model_server import ModelServer, RecordedRequest
from tests.model_server import anthropic as scripted
from tests.model_server.anthropic import Final, Usage

pytestmark = pytest.mark.slow

MODEL = "claude-sonnet-4-5"
API_KEY = "sk-ant-test-e2e-0123456789"
CONFIG = {
    "agent": {"preset": "claude", "model": MODEL, "timeout_minutes": 2},
    "max_concurrent_tasks": 10,
}
NEW_APP = "def greet(name):\n    return 'hello ' + name\n"
DOCS = "# Greeting\n\n`greet(name)` says hello.\n"


@pytest.fixture(params=["none", "bwrap"])
def sandbox(request: pytest.FixtureRequest, require: Any) -> str:
    """How the pool runs the agent; the real claude CLI must be installed."""
    require.cli("claude", "npm install -g @anthropic-ai/claude-code")
    if request.param == "bwrap":
        require.bwrap()
    return str(request.param)


def environ(server: ModelServer) -> dict[str, str]:
    """The worker's environment as an operator sets it: the provider endpoint and key under
    Claude Code's own names."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ANTHROPIC_BASE_URL": server.base_url,
        "ANTHROPIC_API_KEY": API_KEY,
    }


def messages_of(request: RecordedRequest) -> list[Any]:
    return scripted.strip_cache_control(request.body["messages"])


def assert_resumes(earlier: list[RecordedRequest], resumed: list[RecordedRequest], prompt_text: str) -> None:
    """The resumed attempt's requests carry the earlier attempt's whole conversation, and
    only append to it."""
    assert earlier and resumed
    before, after = messages_of(earlier[-1]), messages_of(resumed[0])
    assert after[: len(before)] == before, "the resumed run does not start with the earlier turns"
    assert prompt_text in json.dumps(after[len(before) :])
    for one, two in itertools.pairwise(resumed):
        a, b = messages_of(one), messages_of(two)
        assert b[: len(a)] == a
    sessions = {r.headers.get("X-Claude-Code-Session-Id") for r in earlier + resumed}
    assert len(sessions) == 1, sessions


def prefix_bytes(request: RecordedRequest) -> tuple[bytes, bytes]:
    """(tools, system) as sent: what the prompt cache keys on before the first message."""
    body = request.body
    return json.dumps(body["tools"]).encode(), json.dumps(body["system"]).encode()


async def agent_seconds(e2e: Any, task_id: str, attempt: int) -> float:
    logs = "\n".join(line for n, line in await e2e.store.read_logs(task_id) if n == attempt)
    match = re.search(r"the agent ended: \w+ \(exit -?\d+, ([0-9.]+) s", logs)
    assert match, logs[-2000:]
    return float(match.group(1))


async def timings(e2e: Any, task_id: str) -> list[str]:
    """Per attempt: wall time, the agent's share, and patchwright's own (checkout, commit, push)."""
    lines = []
    for attempt in await e2e.store.list_attempts(task_id):
        assert attempt.finished_at is not None
        total = (attempt.finished_at - attempt.started_at).total_seconds()
        agent = await agent_seconds(e2e, task_id, attempt.number)
        lines.append(
            f"attempt {attempt.number} ({attempt.kind.value}): {total:.2f} s, agent {agent:.2f} s, "
            f"patchwright {total - agent:.2f} s, ${attempt.cost_usd:.6f}"
        )
    return lines


async def test_label_to_pr_then_ci_retry_and_resumed_feedback_with_the_real_claude(
    e2e: Any, model_server: ModelServer, sandbox: str
) -> None:
    # (Claude Code's Write refuses to overwrite a file it has not read in this session.)
    first_turns = [
        scripted.read("src/app.py", Usage(2800, 40, cache_creation_input_tokens=2500)),
        scripted.write("src/app.py", NEW_APP, Usage(3000, 150, cache_read_input_tokens=2500)),
        scripted.bash("git status --porcelain", Usage(3300, 40, cache_read_input_tokens=2500)),
        Final(
            "Changed the greeting to hello.",
            Usage(3400, 30, cache_read_input_tokens=3000),
        ),
    ]
    ci_turns = [
        scripted.read("tests/test_app.py", Usage(2000, 30)),
        scripted.write(
            "tests/test_app.py",
            "from src.app import greet\n\n\ndef test_greet():\n    assert greet('x') == 'hello x'\n",
            Usage(2100, 90),
        ),
        Final("Fixed the test.", Usage(2200, 20)),
    ]
    feedback_turns = [
        scripted.write("docs/greeting.md", DOCS, Usage(5000, 80, cache_read_input_tokens=4000)),
        Final("Documented the greeting.", Usage(5100, 25, cache_read_input_tokens=4500)),
    ]
    model_server.script.extend(first_turns)
    conversations = Conversations(model_server)
    repo = await e2e.add_repo("demo", config=CONFIG)
    await e2e.serve()
    await e2e.start_pool(sandbox=sandbox, environ=environ(model_server))

    # label → the first attempt: claude writes src/app.py, runs git status, the bot opens the PR
    issue = await e2e.open_issue(repo, "Greet with hello", "Say hello instead of hi.")
    await e2e.emulator.label_issue(repo, issue, ["patchwright"], "alice")
    task = await task_of(e2e, repo, issue)
    first = await reach(e2e, task.id, lambda t: t.status is Status.REVIEW)
    first_requests = conversations.since_last()
    assert len(first_requests) == 4 and model_server.script.played == 4
    assert await e2e.read(repo, first.branch, "src/app.py") == NEW_APP
    changed = await e2e.git(repo, "diff", "--name-only", "main", first.branch)
    assert changed.split() == ["src/app.py"]
    status, failed = scripted.tool_outputs(first_requests[3])["Bash"]
    assert not failed and status.startswith("M src/app.py\n"), status  # (output trimmed)
    pull = e2e.pull(repo, first.pr_number)
    assert pull.pull.head_ref == first.branch and "Changed the greeting to hello." in pull.body
    assert {r.headers.get("x-api-key") for r in first_requests} == {API_KEY}
    assert {r.body["model"] for r in first_requests} == {MODEL}
    assert first.agent_session == first_requests[0].headers.get("X-Claude-Code-Session-Id")
    first_cost = scripted.claude_cost(MODEL, scripted.turn_usage(first_turns))
    assert first.cost_usd == pytest.approx(first_cost, rel=0.01)

    # a CI failure → a fresh (not resumed) attempt; its prompt prefix is the first one's bytes
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
    assert len(ci_requests) == 3
    assert second.pr_number == first.pr_number and second.agent_session != first.agent_session
    assert len(messages_of(ci_requests[0])) == 1  # a new conversation
    assert "AssertionError: 'hello x' != 'hi x'" in json.dumps(ci_requests[0].body["messages"])
    assert prefix_bytes(ci_requests[0]) == prefix_bytes(first_requests[0])
    first_message = [json.dumps(r.body["messages"][0]).encode() for r in (first_requests[0], ci_requests[0])]
    shared = len(os.path.commonprefix(first_message))
    # The first message differs from inside the reminder --max-budget-usd makes Claude Code put
    # before the prompt ("USD budget: $0/$10; $10 remaining"): the budget left differs per attempt.
    head = first_message[0][:shared]
    assert head.rfind(b"USD budget: $") > head.rfind(b"</system-reminder>"), head[-300:]
    assert await e2e.read(repo, second.branch, "tests/test_app.py") == ci_turns[1].input["content"]

    # a review requesting changes → a feedback attempt resuming the session: the model server
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
    assert len(feedback_requests) == 2
    assert_resumes(ci_requests, feedback_requests, "Please document the greeting.")
    assert third.agent_session == second.agent_session
    assert third.pr_number == first.pr_number and third.branch == first.branch
    assert await e2e.read(repo, third.branch, "docs/greeting.md") == DOCS
    assert await e2e.read(repo, third.branch, "src/app.py") == NEW_APP
    assert e2e.review_replies(repo, thread) == [f"Addressed in {third.head_sha}."]
    logs = await e2e.logs_once_written(task.id, f"resuming session {second.agent_session}")
    assert API_KEY not in logs
    assert logs.count("running the claude agent in bubblewrap") == (3 if sandbox == "bwrap" else 0)

    # costs: what Claude Code computed from the scripted usage, per attempt and in total
    attempts = await e2e.store.list_attempts(task.id)
    expected = [
        scripted.claude_cost(MODEL, scripted.turn_usage(t)) for t in (first_turns, ci_turns, feedback_turns)
    ]
    assert [a.outcome for a in attempts] == ["pushed", "pushed", "pushed"]
    assert [a.cost_usd for a in attempts] == pytest.approx(expected, rel=0.01)
    assert third.cost_usd == pytest.approx(sum(expected), rel=0.01)
    tools, system = prefix_bytes(first_requests[0])
    print(
        f"\n[{sandbox}] prompt prefix of the fresh CI attempt = attempt 1's: tools {len(tools)} B + "
        f"system {len(system)} B identical; first message {shared} of {len(first_message[0])} B shared\n"
        + "\n".join(await timings(e2e, task.id))
    )


async def test_questions_wait_then_the_answer_resumes_the_real_claude(
    e2e: Any, model_server: ModelServer, sandbox: str
) -> None:
    signal = {
        "status": "questions",
        "questions": [{"id": "q1", "question": "Should it say hello or hey?"}],
    }
    asking = [
        scripted.write(".patchwright/signal.json", json.dumps(signal), Usage(1500, 60)),
        Final("I have a question before changing anything.", Usage(1600, 20)),
    ]
    answered = [
        scripted.read("src/app.py", Usage(2400, 30)),
        scripted.write("src/app.py", NEW_APP, Usage(2500, 70)),
        Final("Changed the greeting to hello, as answered.", Usage(2600, 20)),
    ]
    model_server.script.extend(asking)
    conversations = Conversations(model_server)
    repo = await e2e.add_repo("demo", config=CONFIG)
    await e2e.serve()
    await e2e.start_pool(sandbox=sandbox, environ=environ(model_server))

    issue = await e2e.open_issue(repo, "Greet differently", "The greeting is too short.")
    await e2e.emulator.label_issue(repo, issue, ["patchwright"], "alice")
    task = await task_of(e2e, repo, issue)
    waiting = await reach(e2e, task.id, lambda t: t.status is Status.WAITING)
    asked = conversations.since_last()
    assert len(asked) == 2 and waiting.agent_session
    assert waiting.pr_number is None
    assert await e2e.branch_sha(repo, waiting.branch) is None  # nothing pushed, no signal file
    [first] = await e2e.store.list_attempts(task.id)
    assert first.outcome == "questions"
    assert first.cost_usd == pytest.approx(scripted.claude_cost(MODEL, scripted.turn_usage(asking)), rel=0.01)

    # the answer on the issue resumes the same session
    model_server.script.extend(answered)
    await e2e.emulator.comment_on(repo, issue, "Hello, please.", user="alice")
    done = await reach(e2e, task.id, lambda t: t.status is Status.REVIEW)
    resumed = conversations.since_last()
    assert len(resumed) == 3
    assert_resumes(asked, resumed, "Hello, please.")
    assert done.agent_session == waiting.agent_session
    assert await e2e.read(repo, done.branch, "src/app.py") == NEW_APP
    assert await e2e.read(repo, done.branch, ".patchwright/signal.json") is None
    changed = await e2e.git(repo, "diff", "--name-only", "main", done.branch)
    assert changed.split() == ["src/app.py"]
    assert any(messages.STATUS_MARKER in c for c in e2e.comments(repo, issue))
    print(f"\n[{sandbox}] " + "\n".join(await timings(e2e, task.id)))
