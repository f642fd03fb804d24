"""The demo's story, asserted step by step (issue 6, points 1 and 3; SPEC §11).

The bot runs as ``patchwright serve`` runs it (ingress, dispatcher, handlers, reconciler, an
embedded worker pool) behind the GitHub emulator, with the deterministic agent through the
``command`` preset and real git; the humans are :class:`bot.demo.Story`. It runs on SQLite and
on PostgreSQL, each on a reliable GitHub and on one that answers 20 % of the bot's REST calls
with 5xx and some with secondary rate limits — and every run must end in the same final state.
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from bot import demo, messages
from bot.demo import REPO, Console, Narrator, Story
from bot.tasks.model import RetryKind, Status

pytestmark = pytest.mark.slow

BRANCH = "patchwright/1-slugify-keeps-punctuation"
BOT = "patchwright[bot]"

#: Where every run of the story ends, however unreliable GitHub was on the way.
FINAL_STATE: dict[str, Any] = {
    "task": ("merged", 4, 7, 3, 2, BRANCH),
    "attempts": [
        (1, "first", "pushed", "failure"),
        (2, "ci_failure", "pushed", "success"),
        (3, "feedback", "pushed", "success"),
        (4, "merge_conflict", "pushed", "success"),
    ],
    "pull_requests": [(2, "closed", True, BRANCH)],
    "issue": "closed",
    "status_comments": 1,
    "thread_replies": 1,
    "main_ci": "success",
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None (SQLite in the world's directory) or the test PostgreSQL server."""
    return None if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture(params=["reliable", "unreliable"])
def github(request: pytest.FixtureRequest) -> str:
    return request.param


def tail_of(prompt: str) -> str:
    """The attempt's own part of a prompt (after the stable prefix)."""
    _, sep, tail = prompt.partition("## This attempt")
    assert sep, prompt[-400:]
    return tail


def prefix_of(prompt: str) -> str:
    return prompt.partition("## This attempt")[0]


def attempt_rows(attempts) -> list[tuple[int, RetryKind, str]]:
    return [(a.number, a.kind, a.outcome) for a in attempts]


def bot_status_comments(world) -> list[Any]:
    repo = world.emulator.repo(REPO)
    issue = repo.issues[1]
    return [
        repo.comments[i] for i in issue.comment_ids
        if repo.comments[i].user.login == BOT and messages.STATUS_MARKER in repo.comments[i].body
    ]


async def final_state(world, story: Story) -> dict[str, Any]:
    task = await world.task(story.marks.issue)
    attempts = await world.db.list_attempts(task.id)
    repo = world.emulator.repo(REPO)
    main_sha = await world.emulator.git.ref_sha("octo-org", "slugkit", "refs/heads/main")
    return {
        "task": (task.status.value, task.attempt, task.max_attempts, task.budget_left, task.pr_number, task.branch),
        "attempts": [
            (a.number, a.kind.value, a.outcome, world.ci_results(a.head_after).get("tests")) for a in attempts
        ],
        "pull_requests": [(i.number, i.state, i.pull.merged, i.pull.head_ref) for i in repo.pulls()],
        "issue": repo.issues[story.marks.issue].state,
        "status_comments": len(bot_status_comments(world)),
        "thread_replies": len(
            [c for c in repo.review_comments.values() if c.user.login == BOT and c.in_reply_to_id is not None]
        ),
        "main_ci": world.ci_results(main_sha).get("tests"),
    }


async def test_the_story_step_by_step(make_world, database_url, github):
    world = await make_world(database_url=database_url, faults=github == "unreliable")
    out = io.StringIO()
    narrator = Narrator(world, Console(out, tty=False, color=False))
    story = Story(world, say=narrator.human)
    narrator.start()
    try:
        await _play_and_check(world, story)
    finally:
        await narrator.stop()

    assert await final_state(world, story) == FINAL_STATE
    # The narration told the story as it happened.
    told = "\n".join(narrator.lines)
    for expected in (
        "issues.labeled by mona",
        "CI failed (tests); retrying: attempt 2 of 5.",
        "AssertionError: 'hello-world!' != 'hello-world'",
        "pull_request_review.submitted by octocat",
        "replied in octocat's review thread on slugkit/slug.py",
        "git could not merge main (CHANGELOG.md conflicted), so the agent resolved it",
        "Pull request #2 was merged.",
        "closed issue #1",
    ):
        assert expected in told, f"{expected!r} not narrated:\n{told}"
    if github == "unreliable":
        injected = world.emulator.faults.injected
        assert injected["server_error"] > 0 and injected["secondary_rate_limit"] > 0, injected


async def _play_and_check(world, story: Story) -> None:
    emulator = world.emulator

    # 1. The maintainer labels the issue: the first fix is incomplete, CI fails, the CI
    #    retry (with the failing step's log in its prompt) fixes it, CI passes.
    task = await story.label_issue()
    assert story.marks.issue == 1 and story.marks.pr == 2
    assert task.status is Status.REVIEW and task.pr_number == 2 and task.branch == BRANCH
    assert (task.attempt, task.max_attempts, task.budget_left) == (2, 5, 3)  # the CI retry counted
    attempts = await world.db.list_attempts(task.id)
    assert attempt_rows(attempts) == [(1, RetryKind.FIRST, "pushed"), (2, RetryKind.CI_FAILURE, "pushed")]
    first, second = attempts
    assert world.ci_results(first.head_after) == {"tests": "failure"}
    assert world.ci_results(second.head_after) == {"tests": "success"}
    assert task.head_sha == second.head_after == await world.emulator.git.ref_sha("octo-org", "slugkit", f"refs/heads/{BRANCH}")
    pull = emulator.pull(emulator.repo(REPO), 2)
    assert pull.pull.head_ref == BRANCH and pull.pull.base_ref == "main" and pull.body.startswith("Closes #1")
    ci_prompt = world.agent_run(2)["prompt"]
    assert "Attempt 2 of 5 (ci_failure)." in ci_prompt
    assert "AssertionError: 'hello-world!' != 'hello-world'" in tail_of(ci_prompt)
    assert "test_punctuation_is_dropped" in tail_of(ci_prompt)
    assert prefix_of(ci_prompt) == prefix_of(world.agent_run(1)["prompt"])  # the prompt cache hits
    events = await world.db.list_events(task.id)
    retries = [e for e in events if (e.changes or {}).get("retry_kind") == "ci_failure"]
    assert len(retries) == 1, "check_run, check_suite, workflow_run and status make one retry"
    [retry] = retries
    assert retry.reason == "CI failed (tests); retrying: attempt 2 of 5."
    row = await world.db.get_delivery(retry.delivery_id)
    assert row is not None and row.event in ("check_run", "check_suite", "workflow_run", "status")

    # 2. A reviewer requests a change inline: the feedback retry pushes to the same PR, outside
    #    the budget, and the bot answers in the thread.
    task = await story.request_changes()
    assert task.status is Status.REVIEW and task.pr_number == 2 and task.branch == BRANCH
    assert (task.attempt, task.max_attempts, task.budget_left) == (3, 6, 3)  # max grew by one
    attempts = await world.db.list_attempts(task.id)
    assert attempt_rows(attempts)[2] == (3, RetryKind.FEEDBACK, "pushed")
    third = attempts[2]
    assert task.head_sha == third.head_after and world.ci_results(third.head_after) == {"tests": "success"}
    assert await world.read_file(BRANCH, "slugkit/slug.py") == demo.SLUG_V3
    feedback_prompt = tail_of(world.agent_run(3)["prompt"])
    assert demo.REVIEW_COMMENT in feedback_prompt and "slugkit/slug.py" in feedback_prompt
    repo = emulator.repo(REPO)
    replies = [c for c in repo.review_comments.values() if c.in_reply_to_id == story.marks.review_comment_id]
    assert [(c.user.login, c.body) for c in replies] == [(BOT, f"Addressed in {third.head_after}.")]
    assert task.review_threads == ()
    assert len(emulator.repo(REPO).pulls()) == 1

    # 3. A conflicting commit lands on main: git cannot merge, so the conflict retry runs the
    #    agent on the conflicted file — outside the budget — and CI passes on the merge.
    task = await story.push_conflicting_commit()
    assert task.status is Status.REVIEW and task.pr_number == 2 and task.branch == BRANCH
    assert (task.attempt, task.max_attempts, task.budget_left) == (4, 7, 3)  # max grew by one again
    attempts = await world.db.list_attempts(task.id)
    assert attempt_rows(attempts)[3] == (4, RetryKind.MERGE_CONFLICT, "pushed")
    fourth = attempts[3]
    assert fourth.cost_usd == 0 and world.ci_results(fourth.head_after) == {"tests": "success"}
    conflict_prompt = world.agent_run(4)["prompt"]
    assert "CHANGELOG.md" in conflict_prompt[conflict_prompt.index("### Merge conflict"):]
    parents = (await world.emulator.git.commit_info("octo-org", "slugkit", fourth.head_after)).parents
    assert list(parents) == [third.head_after, story.marks.main_commit]
    changelog = await world.read_file(fourth.head_after, "CHANGELOG.md")
    assert demo.CHANGELOG_FIX_ENTRY in changelog and demo.CHANGELOG_MAIN_ENTRY in changelog
    assert "<<<<<<<" not in changelog and "=======" not in changelog
    assert "__version__" in await world.read_file(fourth.head_after, "slugkit/__init__.py")

    # 4. The maintainer merges: the task is merged, the issue closed by the PR's "Closes #1".
    task = await story.merge()
    assert task.status is Status.MERGED
    assert repo.issues[1].state == "closed" and repo.issues[2].pull.merged

    # One status comment on the issue, edited in place, never posted twice.
    [status] = bot_status_comments(world)
    assert "### patchwright: " in status.body and "`merged`" in status.body
    requests = world.emulator.requests()
    posted = [
        r for r in requests
        if r.operation_id == "issues/create-comment" and r.status == 201
        and messages.STATUS_MARKER in str((r.body or {}).get("body", ""))
    ]
    edited = [
        r for r in requests
        if r.operation_id == "issues/update-comment" and r.status == 200 and r.path.endswith(f"/{status.id}")
    ]
    assert len(posted) == 1 and len(edited) >= 8
    assert not world.emulator.violations()
