"""Further end-to-end scenarios on the demo's world (issue 6, point 4): the circuit breaker and
``@patchwright retry``; questions, answers, resume; ``stop`` then ``resume``; the issue closed
while the agent runs; redelivery of every webhook of the story.

Each test starts :class:`bot.demo.DemoWorld` (the emulator, the bot as ``serve`` runs it with
an embedded worker pool, the demo repository whose CI fails until the bug is fixed) with an
agent script of its own, and acts as the humans through the emulator.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import pytest

from bot import demo, messages
from bot.demo import MAINTAINER, REPO, Story
from bot.tasks.model import RetryKind, Status
from bot.tasks.branches import wip_branch

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def make_world(request: pytest.FixtureRequest, make_world: Any) -> Any:
    """Every scenario on SQLite and on PostgreSQL (the harness's ``make_world``, with the store)."""
    if request.param == "sqlite":
        return make_world
    return functools.partial(make_world, database_url=request.getfixturevalue("postgres_url"))

BOT = "patchwright[bot]"
SLUG = "slugkit/slug.py"


def slug_stripping(chars: str) -> str:
    """A slugify that drops only ``chars``: never enough for ``Hello, World!``."""
    return demo.SLUG_V0.replace("text.lower().split()", f"text.lower().translate(str.maketrans('', '', {chars!r})).split()")


FIX = [{"write": {SLUG: demo.SLUG_V2}}, {"done": "Every run of non-alphanumerics separates words."}]


async def open_and_label(world) -> int:
    issue = await world.emulator.open_issue(REPO, title=demo.ISSUE_TITLE, body=demo.ISSUE_BODY, user=MAINTAINER)
    number = int(issue["number"])
    await world.emulator.label_issue(REPO, number, [demo.TRIGGER_LABEL], user=MAINTAINER)
    return number


async def comment(world, number: int, body: str) -> int:
    made = await world.emulator.comment_on(REPO, number, body, user=MAINTAINER)
    return int(made["id"])


def status_comment(world, number: int = 1) -> str:
    repo = world.emulator.repo(REPO)
    bodies = [
        repo.comments[i].body for i in repo.issues[number].comment_ids
        if repo.comments[i].user.login == BOT and messages.STATUS_MARKER in repo.comments[i].body
    ]
    assert len(bodies) == 1, bodies
    return bodies[0]


def reactions(world, comment_id: int) -> list[tuple[str, str]]:
    found = world.emulator.repo(REPO).comments[comment_id]
    return [(r.user.login, r.content) for r in found.reactions]


async def wait_for_file(world, name: str, timeout: float = 20.0) -> None:
    path = world.agent_runs / name
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"the agent never wrote {name}"
        await asyncio.sleep(0.02)


async def test_circuit_breaker_then_a_maintainers_retry_resumes(make_world):
    script: dict[str, Any] = {
        "1": [{"write": {SLUG: slug_stripping(",")}}, {"done": "Dropped commas."}],
        "2": [{"write": {SLUG: slug_stripping(",.")}}, {"done": "Dropped commas and dots."}],
        "3": [{"write": {SLUG: slug_stripping(",.;")}}, {"done": "Dropped semicolons too."}],
        "manual": FIX,
    }
    world = await make_world(agent_script=script)
    number = await open_and_label(world)
    await world.settle()

    # The same check failed three times in a row: no more automatic retries, with the budget
    # not yet spent (attempt 3 of 5).
    task = await world.task(number)
    assert task.status is Status.FAILED and (task.attempt, task.max_attempts) == (3, 5)
    assert task.failure_category == "ci_failure:tests" and task.consecutive_failures == 3
    attempts = await world.db.list_attempts(task.id)
    assert [(a.kind, world.ci_results(a.head_after)) for a in attempts] == [
        (RetryKind.FIRST, {"tests": "failure"}),
        (RetryKind.CI_FAILURE, {"tests": "failure"}),
        (RetryKind.CI_FAILURE, {"tests": "failure"}),
    ]
    card = status_comment(world)
    assert "`failed`" in card and "the same failure 3 times in a row" in card  # why
    assert "@patchwright retry [instructions]" in card  # and how to go on

    # A maintainer's retry with instructions: attempt 4 (manual), two more automatic retries.
    said = await comment(world, number, "@patchwright retry use a regular expression for the separators")
    await world.settle()
    task = await world.task(number)
    assert task.status is Status.REVIEW and (task.attempt, task.max_attempts) == (4, 6)
    assert task.retry_kind is RetryKind.MANUAL and task.consecutive_failures == 0
    last = (await world.db.list_attempts(task.id))[-1]
    assert (last.number, last.kind, last.outcome) == (4, RetryKind.MANUAL, "pushed")
    assert world.ci_results(last.head_after) == {"tests": "success"}
    assert "use a regular expression for the separators" in world.agent_run(4)["prompt"]
    assert (BOT, "+1") in reactions(world, said)
    assert "`review`" in status_comment(world)


async def test_questions_wait_for_an_answer_then_the_agent_continues(make_world):
    script = {
        "first": [{"questions": ["Should digits stay in slugs, as in 'Top 10 tips' -> 'top-10-tips'?"]}],
        "answers": FIX,
    }
    world = await make_world(agent_script=script)
    number = await open_and_label(world)
    await world.settle()

    task = await world.task(number)
    assert task.status is Status.WAITING and task.pr_number is None
    repo = world.emulator.repo(REPO)
    asked = [repo.comments[i].body for i in repo.issues[number].comment_ids if "The agent has questions" in repo.comments[i].body]
    assert len(asked) == 1 and "Should digits stay in slugs" in asked[0]
    assert "`waiting`" in status_comment(world)

    # Any comment by someone with write access is the answer.
    answer = await comment(world, number, "Yes, digits stay: 'top-10-tips'.")
    await world.settle()
    task = await world.task(number)
    assert task.status is Status.REVIEW and task.pr_number is not None
    attempts = await world.db.list_attempts(task.id)
    assert [(a.number, a.kind, a.outcome) for a in attempts] == [
        (1, RetryKind.FIRST, "questions"),
        (2, RetryKind.ANSWERS, "pushed"),
    ]
    assert task.budget_left == 4  # answers do not use the budget
    assert "Yes, digits stay: 'top-10-tips'." in world.agent_run(2)["prompt"]
    assert world.ci_results(task.head_sha) == {"tests": "success"}
    assert (BOT, "+1") in reactions(world, answer)


HANGING_FIRST: dict[str, Any] = {
    "1": [
        {"write": {SLUG: slug_stripping(",")}},
        {"touch": "{out}/started-1"},
        {"hang": 60},
    ],
    "default": FIX,
}


async def test_stop_pauses_the_running_agent_and_resume_continues(make_world):
    world = await make_world(agent_script=HANGING_FIRST)
    number = await open_and_label(world)
    await wait_for_file(world, "started-1")

    stopped_at = time.monotonic()
    said = await comment(world, number, "@patchwright stop")
    await world.settle()
    assert time.monotonic() - stopped_at < 10  # the agent (hanging for a minute) was stopped
    task = await world.task(number)
    assert task.status is Status.PAUSED and task.pr_number is None
    [first] = await world.db.list_attempts(task.id)
    assert (first.number, first.outcome) == (1, "salvaged")
    wip = wip_branch(task.id, 1)
    assert "translate" in (await world.read_file(wip, SLUG) or "")  # the unfinished work, kept aside
    card = status_comment(world)
    assert "`paused`" in card and "@patchwright resume" in card
    assert "Unfinished work saved on" in card and wip.replace("_", "\\_") in card  # markdown-escaped
    assert (BOT, "+1") in reactions(world, said)

    await comment(world, number, "@patchwright resume")
    await world.settle()
    task = await world.task(number)
    assert task.status is Status.REVIEW and task.pr_number is not None
    attempts = await world.db.list_attempts(task.id)
    assert [(a.number, a.outcome) for a in attempts] == [(1, "salvaged"), (2, "pushed")]
    assert task.budget_left == 4  # the stopped attempt did not use the budget
    assert await world.read_file(task.branch, SLUG) == demo.SLUG_V2
    assert world.ci_results(task.head_sha) == {"tests": "success"}


HANGING_SECOND: dict[str, Any] = {
    "1": [{"write": {SLUG: slug_stripping(",")}}, {"done": "Dropped commas."}],
    "2": [{"write": {SLUG: slug_stripping(",!")}}, {"touch": "{out}/started-2"}, {"hang": 60}],
    "default": FIX,
}


def runs_named(world, head_sha: str, name: str) -> list[Any]:
    repo = world.emulator.repo(REPO)
    return [r for r in repo.check_runs.values() if r.head_sha == head_sha and r.name == name]


async def test_the_stop_button_on_the_pull_request_stops_the_running_agent(make_world):
    """GitHub displays a check run's buttons only once the run is completed: Stop rides on
    the completed controls run while the agent works, and a click stops the agent."""
    world = await make_world(agent_script=HANGING_SECOND)
    number = await open_and_label(world)
    await wait_for_file(world, "started-2")  # CI failed on attempt 1's PR; attempt 2 runs
    task = await world.task(number)
    assert task.status is Status.RUNNING and task.pr_number is not None
    [progress] = runs_named(world, task.head_sha, messages.CHECK_RUN_NAME)[-1:]
    assert progress.status == "in_progress" and not progress.actions
    [control] = runs_named(world, task.head_sha, messages.CONTROL_CHECK_RUN_NAME)
    assert control.status == "completed" and [a["identifier"] for a in control.actions] == [messages.ACTION_STOP]

    clicked_at = time.monotonic()
    world.emulator.request_check_action(REPO, control.id, messages.ACTION_STOP, user=MAINTAINER)
    await world.settle()
    assert time.monotonic() - clicked_at < 10  # the agent (hanging for a minute) was stopped
    task = await world.task(number)
    assert task.status is Status.PAUSED
    attempts = await world.db.list_attempts(task.id)
    assert [(a.number, a.outcome) for a in attempts] == [(1, "pushed"), (2, "salvaged")]
    assert "!" in (await world.read_file(wip_branch(task.id, 2), SLUG) or "")  # the work, kept aside
    assert not control.actions and progress.status == "completed"  # no Stop once nothing runs
    assert "`paused`" in status_comment(world)


async def test_closing_the_issue_while_the_agent_runs_closes_the_task(make_world):
    world = await make_world(agent_script=HANGING_FIRST)
    number = await open_and_label(world)
    await wait_for_file(world, "started-1")

    await world.emulator.edit_issue(REPO, number, state="closed", user=MAINTAINER)
    await world.settle()
    task = await world.task(number)
    assert task.status is Status.CLOSED and task.pr_number is None
    [first] = await world.db.list_attempts(task.id)
    assert first.outcome in ("salvaged", "cancelled")
    assert world.emulator.repo(REPO).pulls() == []  # nothing was opened after the close
    assert "`closed`" in status_comment(world)
    assert world.pool is not None and world.pool.running == {}


async def test_redelivering_every_webhook_of_the_story_changes_nothing(make_world):
    world = await make_world()
    story = Story(world)
    task = await story.play()
    assert task.status is Status.MERGED

    async def snapshot() -> dict[str, Any]:
        tasks = await world.db.list_tasks()
        return {
            "tasks": tasks,
            "attempts": {t.id: await world.db.list_attempts(t.id) for t in tasks},
            "events": {t.id: len(await world.db.list_events(t.id)) for t in tasks},
            "ledger": sorted((d.id, d.state.value, d.outcome, d.ignore_reason) for d in await world.db.list_deliveries(limit=10_000)),
            "github": await world.emulator.state_snapshot(),
        }

    before = await snapshot()
    originals = [d for d in world.emulator.deliveries() if not d.redelivery]
    assert len(originals) > 50
    redelivered = [world.emulator.redeliver(d.id) for d in originals]
    await world.settle()
    assert {(d.status, d.status_code) for d in redelivered} == {("delivered", 200)}  # known ids: nothing to do
    assert await snapshot() == before

    # Replaying every recorded delivery through the handlers (``patchwright deliveries
    # replay``) changes nothing either: the task is merged and every fact is recorded.
    for row in await world.db.list_deliveries(limit=10_000):
        assert await world.db.requeue_delivery(row.id)
    assert world.runtime is not None
    world.runtime.dispatcher.wake()
    await world.settle()
    after = await snapshot()
    assert after["tasks"] == before["tasks"] and after["attempts"] == before["attempts"]
    assert after["events"] == before["events"] and after["github"] == before["github"]
