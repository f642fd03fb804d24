"""The real ``aider`` (0.86.2) through the whole loop (issue 12): the emulator, the bot's
ingress, dispatcher and handlers, a worker pool running the ``aider`` preset, and aider talking
to the scripted OpenAI chat completions server (tests/model_server/chat.py) on 127.0.0.1 —
configured the way an operator does it (``OPENAI_API_KEY``, ``OPENAI_API_BASE``, the model
``openai/<name>`` in the repository's ``agent`` config, its price in the price table).

- label → aider writes the scripted file → a PR with exactly that change, charged the tokens
  aider reports at the table's prices; without a sandbox and under bubblewrap;
- CI fails on the PR → a retry whose prompt (what aider sends the model) carries the failing
  step's log → aider's fix is pushed and CI passes.

Needs ``aider`` on PATH (and bubblewrap for the sandboxed variant): skipped on a developer
machine without them, failed under CI=true.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import Any

import pytest

from bot.tasks.model import RetryKind, Status, Task
from tests.model_server import ModelServer
from tests.model_server.chat import Reply, Usage, last_user_text, whole_file

pytestmark = pytest.mark.slow

MODEL = "openai/patchwright-scripted"  # unknown to aider and litellm: no Cost line, the table prices it
PRICES = "patchwright-scripted=2/0.5/8"  # PATCHWRIGHT_MODEL_PRICES: USD per million tokens
INPUT_PRICE, OUTPUT_PRICE = 2.0, 8.0
CONFIG: dict[str, Any] = {
    "agent": {"preset": "aider", "model": MODEL, "timeout_minutes": 2},
    "max_concurrent_tasks": 10,
}
DOC = "# Greetings\n\nThe app greets with *hello*.\n"


@pytest.fixture
def aider_on_path(require: Any) -> None:
    require.cli("aider", "pip install aider-chat")


async def start(e2e: Any, model_server: ModelServer, sandbox: str) -> None:
    """The bot as an operator runs it: prices for the model, the provider's key and endpoint
    in the environment the workers pass on, the webhook ingress and handlers."""
    e2e.use_settings(model_prices=PRICES)
    await e2e.serve()
    await e2e.start_pool(
        sandbox=sandbox,
        environ={
            "PATH": os.environ["PATH"],
            "OPENAI_API_KEY": "sk-test-aider-e2e",
            "OPENAI_API_BASE": model_server.base_url + "/v1",
        },
    )


async def labelled_task(e2e: Any, repo: str, title: str, body: str) -> Task:
    """Open an issue and label it as a maintainer does; the task the bot made of it."""
    issue = await e2e.open_issue(repo, title, body)
    await e2e.emulator.label_issue(repo, issue, ["patchwright"], "alice")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        task = await e2e.store.get_task_by_issue(repo, issue)
        if task is not None:
            return task
        await asyncio.sleep(0.05)
    raise AssertionError("labelling the issue created no task")


async def settled(e2e: Any, task: Task, attempt: int = 1, *, timeout: float = 90.0) -> Task:
    """The task once attempt ``attempt`` ended in review, or failing the test with its reason."""
    done = await e2e.wait_for(
        task.id,
        lambda t: t.status in (Status.FAILED, Status.WAITING) or (t.status is Status.REVIEW and t.attempt >= attempt),
        timeout=timeout,
    )
    if done.status is not Status.REVIEW:
        raise AssertionError(f"task ended {done.status.value}: {done.close_reason}\n{await log_tail(e2e, done)}")
    return done


async def log_tail(e2e: Any, task: Task, chars: int = 4000) -> str:
    return "\n".join(line for _, line in await e2e.store.read_logs(task.id))[-chars:]


async def changed_files(e2e: Any, repo: str, base: str, head: str) -> list[str]:
    return (await e2e.git(repo, "diff", "--name-only", base, head)).split()


async def report_timings(e2e: Any, task: Task) -> str:
    """Per attempt: its wall time, the agent's share (from the attempt log) and patchwright's
    own (checkout, commit, push…); printed for the closing note (pytest -s)."""
    logs = "\n".join(line for _, line in await e2e.store.read_logs(task.id))
    agent = [float(s) for s in re.findall(r"the agent ended: \w+ \(exit -?\d+, ([0-9.]+) s", logs)]
    lines = []
    for attempt, agent_s in zip(await e2e.store.list_attempts(task.id), agent, strict=False):
        if attempt.finished_at is None:
            continue
        wall = (attempt.finished_at - attempt.started_at).total_seconds()
        lines.append(f"attempt {attempt.number}: {wall:.2f} s, agent {agent_s:.2f} s, patchwright {wall - agent_s:.2f} s")
    text = "; ".join(lines)
    print(f"\n{task.id}: {text}")
    return text


@pytest.mark.parametrize("sandbox", ["none", "bwrap"])
async def test_label_to_a_pr_with_exactly_the_scripted_change(
    e2e: Any, model_server: ModelServer, aider_on_path: None, sandbox: str, require: Any
) -> None:
    if sandbox == "bwrap":
        require.bwrap()
    repo = await e2e.add_repo("demo", config=CONFIG)
    model_server.script.extend(
        [
            Reply(
                "I will document the greeting.\n\n" + whole_file("docs/greetings.md", DOC),
                Usage(prompt_tokens=24_000, completion_tokens=1_500),
            )
        ]
    )
    await start(e2e, model_server, sandbox)
    base = await e2e.branch_sha(repo, "main")
    task = await labelled_task(e2e, repo, "Document the greeting", "Write docs/greetings.md about the greeting.")
    done = await settled(e2e, task)

    assert done.pr_number is not None and done.head_sha == await e2e.branch_sha(repo, done.branch)
    # (Under bubblewrap aider must be able to `git add` the file it creates: otherwise it
    # leaves it empty and exits 0.)
    assert await e2e.read(repo, done.branch, "docs/greetings.md") == DOC, await log_tail(e2e, done)
    # Exactly the scripted change: none of aider's own files (history, repo-map cache).
    assert await changed_files(e2e, repo, base, done.head_sha) == ["docs/greetings.md"]
    assert done.cost_usd == pytest.approx((24_000 * INPUT_PRICE + 1_500 * OUTPUT_PRICE) / 1e6, rel=0.01)

    [request] = model_server.conversation_requests()
    prompt = last_user_text(request.body)
    assert "Document the greeting" in prompt and "Write docs/greetings.md about the greeting." in prompt
    assert request.headers["Authorization"] == "Bearer sk-test-aider-e2e"
    await report_timings(e2e, done)


async def test_a_ci_failure_retry_sends_aider_the_failing_log(
    e2e: Any, model_server: ModelServer, aider_on_path: None
) -> None:
    repo = await e2e.add_repo("ci-demo", config=CONFIG)
    check = (
        "grep -q 'hello, world' docs/greetings.md "
        "|| { echo 'GREETING-CHECK: docs/greetings.md must say hello, world'; exit 1; }"
    )
    e2e.emulator.configure_ci(repo, check, checks=("tests",))
    model_server.script.extend(
        [
            Reply(whole_file("docs/greetings.md", "hello\n"), Usage(prompt_tokens=24_000, completion_tokens=1_500)),
            Reply(
                "The check wants the full phrase.\n\n" + whole_file("docs/greetings.md", "hello, world\n"),
                Usage(prompt_tokens=30_000, completion_tokens=2_000),
            ),
        ]
    )
    await start(e2e, model_server, "none")
    task = await labelled_task(e2e, repo, "Document the greeting", "Write docs/greetings.md.")
    second = await settled(e2e, task, attempt=2)

    attempts = await e2e.store.list_attempts(task.id)
    assert [(a.number, a.kind, a.outcome) for a in attempts] == [
        (1, RetryKind.FIRST, "pushed"),
        (2, RetryKind.CI_FAILURE, "pushed"),
    ]
    assert second.pr_number is not None and second.head_sha == attempts[1].head_after
    assert await e2e.read(repo, second.branch, "docs/greetings.md") == "hello, world\n"
    await e2e.emulator.ci_idle()
    conclusions = [
        [r.conclusion for r in e2e.check_runs(repo, a.head_after, name="tests")] for a in attempts
    ]
    assert conclusions == [["failure"], ["success"]]
    # The retry's prompt, as aider sent it to the model, carries the failing step's log.
    requests = model_server.conversation_requests()
    assert len(requests) == 2
    retry_prompt = last_user_text(requests[1].body)
    assert "GREETING-CHECK: docs/greetings.md must say hello, world" in retry_prompt
    assert "GREETING-CHECK" not in last_user_text(requests[0].body)
    expected = (54_000 * INPUT_PRICE + 3_500 * OUTPUT_PRICE) / 1e6
    assert second.cost_usd == pytest.approx(expected, rel=0.01)
    await report_timings(e2e, second)
