"""One attempt end to end (bot/worker/runner.py): the agent's outcomes and what the task, the
attempt, the branches and the status comment show afterwards (issue 5, criteria 5 and 7)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.tasks.model import RetryKind, Status
from bot.tasks.branches import wip_branch
from bot.worker.guard import Violation
from bot.worker.runner import commit_message, conflict_violations, error_signature

pytestmark = pytest.mark.slow


# -- pure helpers ---------------------------------------------------------------------------


def test_error_signature_folds_numbers_and_ids() -> None:
    a = error_signature("Test failed at line 12 (commit 1a2b3c4d5e)\n  in   tests/test_app.py")
    b = error_signature("test failed at line 99 (commit ffffeeee00)  in tests/test_app.py")
    assert a == b == "test failed at line # (commit <sha>) in tests/test_app.py"
    assert len(error_signature("x" * 1000)) == 200


def test_commit_message_says_what_the_attempt_did() -> None:
    from bot.tasks.model import Task

    task = Task(id="task_1", repo="o/r", installation_id=1, issue_number=7, title="Add  a\nfeature")
    assert commit_message(task, RetryKind.FIRST, "Added it.", 1) == (
        "Add a feature (#7)\n\nAdded it.\n\npatchwright attempt 1 (first)"
    )
    assert (
        commit_message(task, RetryKind.CI_FAILURE, "", 2)
        == "Fix CI failure (#7)\n\npatchwright attempt 2 (ci_failure)"
    )
    assert commit_message(task, RetryKind.FEEDBACK, "x", 3).startswith("Address review feedback (#7)\n")


def test_conflict_violations_ignore_files_that_came_from_the_base() -> None:
    from_start = [
        Violation(".github/workflows/ci.yml", "protected_path", "changes it"),
        Violation("src/key.pem", "secret_file", "adds a key"),
    ]
    from_base = [Violation("src/key.pem", "secret_file", "adds a key")]
    assert conflict_violations(from_start, from_base) == [from_start[1]]
    assert conflict_violations(from_start, []) == []


# -- the agent's outcomes ----------------------------------------------------------------------


async def test_a_hanging_agent_that_ignores_sigterm_is_killed_at_its_timeout_and_salvaged(e2e) -> None:
    script = {
        "first": [
            {"write": {"src/app.py": "def greet(name):\n    return 'half done'\n", "WIP.md": "unfinished\n"}},
            {"ignore_sigterm": True},
            {"hang": None},
        ]
    }
    repo = await e2e.add_repo("demo", script=script, config={"agent": {"timeout_minutes": 0.03}})
    issue = await e2e.open_issue(repo, "Slow work")
    task = await e2e.create_task(repo, issue, max_attempts=1)
    await e2e.start_pool(kill_grace=0.5)
    failed = await e2e.wait_for(task.id, lambda t: t.status is Status.FAILED)
    wip = wip_branch(task.id, 1)
    assert await e2e.read(repo, wip, "WIP.md") == "unfinished\n"
    assert "half done" in await e2e.read(repo, wip, "src/app.py")
    assert (
        await e2e.branch_sha(repo, failed.branch or "patchwright/1-slow-work") is None
    )  # nothing on the PR branch
    assert "ran out of time" in failed.close_reason and wip in failed.close_reason
    [attempt] = await e2e.store.list_attempts(task.id)
    assert attempt.outcome == "failed" and wip in attempt.error
    pid = e2e.agent_run(1)["pid"]
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    [status] = [c for c in e2e.comments(repo, issue) if "patchwright:status" in c]
    assert "ran out of time" in status and "@patchwright retry" in status


async def test_streamed_cost_past_the_cap_kills_the_agent_and_fails_the_task(e2e) -> None:
    script = {
        "first": [
            {"write": {"src/app.py": "# expensive work\n"}},
            {"cost": 0.4},
            {"cost": 0.7},
            {"hang": 20},
        ]
    }
    repo = await e2e.add_repo("demo", script=script)
    issue = await e2e.open_issue(repo, "Expensive work")
    task = await e2e.create_task(repo, issue, agent="claude", max_cost_usd=1.0)
    await e2e.start_pool(executables={"claude": e2e.claude_executable()})
    failed = await e2e.wait_for(task.id, lambda t: t.status is Status.FAILED, timeout=15)
    assert failed.cost_usd == pytest.approx(1.1)
    assert "cost cap" in failed.close_reason.lower() and "$1.10 of $1.00" in failed.close_reason
    assert await e2e.read(repo, wip_branch(task.id, 1), "src/app.py") == "# expensive work\n"
    [attempt] = await e2e.store.list_attempts(task.id)
    assert attempt.cost_usd == pytest.approx(1.1) and attempt.outcome == "failed"
    run = e2e.agent_run(1)
    assert run["argv"][run["argv"].index("--max-budget-usd") + 1] == "1.0000"


async def test_the_daily_cap_of_the_repository_stops_the_agent(e2e) -> None:
    script = {"first": [{"cost": 0.3}, {"cost": 0.6}, {"hang": 20}]}
    config = {"agent": {"timeout_minutes": 1}, "budget": {"daily_cost_usd": 0.5}}
    repo = await e2e.add_repo("demo", script=script, config=config)
    issue = await e2e.open_issue(repo, "Daily capped")
    task = await e2e.create_task(repo, issue, agent="claude")
    await e2e.start_pool(executables={"claude": e2e.claude_executable()})
    failed = await e2e.wait_for(task.id, lambda t: t.status is Status.FAILED, timeout=15)
    assert "daily cost cap" in failed.close_reason and "retry" in failed.close_reason
    assert failed.cost_usd == pytest.approx(0.9)  # killed at the first report past the cap


async def test_an_agent_configuration_error_fails_without_a_retry(e2e) -> None:
    script = {
        "first": [
            {"emit": {"type": "assistant", "error": "authentication_failed", "message": {"content": []}}},
            {
                "emit": {
                    "type": "result",
                    "subtype": "success",
                    "is_error": True,
                    "result": "Not logged in · Please run /login",
                }
            },
            {"exit": 1},
        ]
    }
    repo = await e2e.add_repo("demo", script=script)
    issue = await e2e.open_issue(repo, "Needs credentials")
    task = await e2e.create_task(repo, issue, agent="claude")
    await e2e.start_pool(executables={"claude": e2e.claude_executable()})
    failed = await e2e.wait_for(task.id, lambda t: t.status is Status.FAILED)
    assert "Not logged in" in failed.close_reason and "retry" in failed.close_reason
    assert failed.attempt == 1 and failed.not_before is None
    assert len(await e2e.store.list_attempts(task.id)) == 1


async def test_no_changes_on_the_first_attempt_fails_the_task(e2e) -> None:
    repo = await e2e.add_repo("demo", script={"first": [{"done": "Nothing needed."}]})
    issue = await e2e.open_issue(repo, "Already done")
    task = await e2e.create_task(repo, issue)
    await e2e.start_pool()
    failed = await e2e.wait_for(task.id, lambda t: t.status is Status.FAILED)
    assert failed.close_reason == "The agent made no changes."
    [attempt] = await e2e.store.list_attempts(task.id)
    assert attempt.outcome == "no_changes"


async def test_an_agent_error_is_retried_and_the_next_attempt_pushes(e2e) -> None:
    script = {
        "1": [{"stderr": "Traceback: something broke"}, {"exit": 3}],
        "2": [{"write": {"src/app.py": "# fixed\n"}}, {"done": "Second try worked."}],
    }
    repo = await e2e.add_repo("demo", script=script)
    issue = await e2e.open_issue(repo, "Flaky work")
    task = await e2e.create_task(repo, issue)
    await e2e.start_pool()
    done = await e2e.wait_for(task.id, lambda t: t.status is Status.REVIEW)
    attempts = await e2e.store.list_attempts(task.id)
    assert [(a.number, a.outcome) for a in attempts] == [(1, "failed"), (2, "pushed")]
    assert "exited with code 3" in attempts[0].error and "something broke" in attempts[0].error
    assert done.attempt == 2 and done.max_attempts == 5
    assert "Attempt 1" in e2e.agent_run(2)["prompt"] and "something broke" in e2e.agent_run(2)["prompt"]


async def test_the_next_attempt_of_a_task_waits_for_the_previous_attempts_cleanup(e2e) -> None:
    """The decision that ends attempt n makes the task claimable at once; another worker of the
    pool must not start attempt n+1 in the same worktree before attempt n has removed it."""
    from bot.worker.runner import AttemptControl, AttemptRunner

    order: list[str] = []
    release = asyncio.Event()

    class Recording(AttemptRunner):
        async def _run(self, run):  # noqa: ANN001 - test double
            order.append(f"start {run.number}")
            return "done"

        async def _cleanup(self, run):  # noqa: ANN001
            if run.number == 1:
                await release.wait()
            order.append(f"cleanup {run.number}")

    repo = await e2e.add_repo("locks")
    task = await e2e.create_task(repo, await e2e.open_issue(repo, "Locks"))
    runner = Recording(e2e.services, github=e2e.github, workspaces=None, worker_id="w")  # type: ignore[arg-type]
    first = asyncio.create_task(runner.run(task, AttemptControl()))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(runner.run(task.replace(attempt=2), AttemptControl()))
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(first, second)
    assert order == ["start 1", "cleanup 1", "start 2", "cleanup 2"]


async def test_an_agent_that_reports_no_cost_is_shown_as_such_not_as_free(e2e) -> None:
    """Issue 12: where no cost source exists, the status comment and the attempt say the cap
    cannot be enforced instead of showing $0.00 as a fact."""
    from bot import messages

    command = "printf 'made by a silent agent\\n' > made.txt"
    repo = await e2e.add_repo("silent", config={"agent": {"preset": "command", "command": command}})
    issue = await e2e.open_issue(repo, "Make the file")
    task = await e2e.create_task(repo, issue)
    await e2e.start_pool()
    await e2e.wait_for(task.id, lambda t: t.status is Status.REVIEW)
    [attempt] = await e2e.store.list_attempts(task.id)
    assert attempt.cost_known is False
    assert any(messages.COST_UNKNOWN_NOTE in c for c in e2e.comments(repo, issue))
