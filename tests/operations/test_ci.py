"""CI of the bot's heads (:mod:`bot.operations.ci`) with scripted check runs and statuses."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bot import ci
from bot.operations.ci import evaluate_head, log_sources
from bot.outcome import Ignored
from bot.tasks.model import RetryKind, Status

HEAD = "a" * 40
BASE = "b" * 40
REPO_PATH = "/repos/octo/widgets"
COMMENTS_PATH = f"{REPO_PATH}/issues/7/comments"
JOB_LOG = "\n".join(
    [
        "2024-05-01T11:50:00.0000000Z ##[group]Run actions/checkout@v4",
        "2024-05-01T11:50:01.0000000Z checked out",
        "2024-05-01T11:50:02.0000000Z ##[endgroup]",
        "2024-05-01T11:50:03.0000000Z ##[group]Run pytest -q",
        "2024-05-01T11:50:04.0000000Z FAILED tests/test_parser.py::test_empty - IndexError",
        "2024-05-01T11:50:05.0000000Z ##[error]Process completed with exit code 1.",
        "2024-05-01T11:50:06.0000000Z Post job cleanup.",
    ]
)


def run(name: str, conclusion: str | None, *, status: str = "completed", app: str = "github-actions",
        run_id: int = 321, sha: str = HEAD, completed_at: str = "2024-05-01T11:55:00Z", **output: str) -> dict:
    return {
        "id": run_id, "name": name, "head_sha": sha, "status": status, "conclusion": conclusion,
        "app": {"slug": app}, "started_at": "2024-05-01T11:50:00Z",
        "completed_at": completed_at if status == "completed" else None, "output": output,
    }


def status(context: str, state: str, *, sha: str = HEAD, description: str = "") -> dict:
    return {"id": 77, "context": context, "state": state, "sha": sha, "description": description,
            "updated_at": "2024-05-01T11:56:00Z"}


def script_checks(gh: Any, sha: str, runs: list[dict], statuses: list[dict] = ()) -> None:
    gh.on("GET", f"{REPO_PATH}/commits/{sha}/check-runs", {"total_count": len(runs), "check_runs": runs})
    gh.on("GET", f"{REPO_PATH}/commits/{sha}/status", {"state": "success", "statuses": list(statuses)})


def script_base(gh: Any, runs: list[dict]) -> None:
    gh.on("GET", f"{REPO_PATH}/branches/main", {"name": "main", "commit": {"sha": BASE}})
    script_checks(gh, BASE, [{**r, "head_sha": BASE} for r in runs])


async def test_success_records_the_fact_once(ctx, store, gh, in_review) -> None:
    task = await in_review()
    script_checks(gh, HEAD, [run("tests", "success"), run("lint", "skipped", run_id=322)], [status("ci/docs", "success")])

    assert await evaluate_head(ctx, "octo/widgets", HEAD, branch=task.branch) == "CI passed on aaaaaaa"

    assert await store.has_fact(f"ci-passed:octo/widgets:{HEAD}")
    with pytest.raises(Ignored, match="already recorded as passed"):
        await evaluate_head(ctx, "octo/widgets", HEAD)
    assert await store.get_task(task.id) == task
    assert [e.kind for e in await store.list_events(task.id)] == ["created"]
    check_reads = gh.sent("GET", f"{REPO_PATH}/commits/{HEAD}/check-runs")
    assert check_reads[0].query == {"filter": "latest", "per_page": "100"}


async def test_a_settled_code_failure_is_a_ci_retry_with_the_failed_step_log(ctx, store, gh, in_review, answer) -> None:
    task = await in_review()
    script_checks(gh, HEAD, [run("tests", "failure"), run("lint", "success", run_id=322)])
    script_base(gh, [run("tests", "success")])
    gh.on("GET", f"{REPO_PATH}/actions/jobs/321/logs", answer(200, JOB_LOG, content_type="text/plain; charset=utf-8"))

    reason = await evaluate_head(ctx, "octo/widgets", HEAD, branch=task.branch)

    assert reason == "CI failed (tests); retrying: attempt 2 of 5."
    row = await store.get_task(task.id)
    assert row is not None
    assert (row.status, row.attempt, row.retry_kind, row.failure_category, row.consecutive_failures) == (
        Status.PENDING, 2, RetryKind.CI_FAILURE, "ci_failure:tests", 1
    )
    assert row.retry_reason == "CI failed: tests"
    assert row.retry_context == (
        "### tests\n##[group]Run pytest -q\n"
        "FAILED tests/test_parser.py::test_empty - IndexError\n"
        "##[error]Process completed with exit code 1."
    )
    event = (await store.list_events(task.id))[-1]
    assert (event.kind, event.actor, event.delivery_id, event.from_status, event.to_status) == (
        "transition", "ci", "d1", Status.REVIEW, Status.PENDING
    )
    assert len(gh.sent("POST", COMMENTS_PATH)) == 1  # the status comment
    # a second event kind reporting the same failure finds no task in review with that head
    with pytest.raises(Ignored, match="not the head the bot pushed"):
        await evaluate_head(ctx, "octo/widgets", HEAD)


async def test_the_failure_context_of_other_checks_is_their_output(ctx, store, gh, in_review) -> None:
    task = await in_review()
    script_checks(
        gh, HEAD,
        [run("typecheck", "failure", app="some-ci", run_id=400, title="2 errors", summary="src/a.py:3: bad type")],
        [status("legacy/build", "error", description="make failed")],
    )
    script_base(gh, [])

    reason = await evaluate_head(ctx, "octo/widgets", HEAD, actor="reconciler")

    assert reason == "CI failed (legacy/build, typecheck); retrying: attempt 2 of 5."
    row = await store.get_task(task.id)
    assert row is not None
    assert row.failure_category == "ci_failure:legacy/build,typecheck"
    assert row.retry_context == "### legacy/build\nmake failed\n\n### typecheck\n2 errors\n\nsrc/a.py:3: bad type"
    assert gh.sent("GET", f"{REPO_PATH}/actions/jobs/400/logs") == []  # not an Actions job
    assert (await store.list_events(task.id))[-1].actor == "reconciler"


async def test_an_unreadable_job_log_falls_back_to_the_output(ctx, store, gh, in_review, answer) -> None:
    task = await in_review()
    script_checks(gh, HEAD, [run("tests", "failure")])
    script_base(gh, [])
    gh.on("GET", f"{REPO_PATH}/actions/jobs/321/logs", answer(404, {"message": "Not Found"}))

    await evaluate_head(ctx, "octo/widgets", HEAD)

    row = await store.get_task(task.id)
    assert row is not None and row.retry_context == "### tests\n(no log or output available)"


@pytest.mark.parametrize(
    "runs",
    [
        [],  # nothing reported yet
        [run("tests", None, status="in_progress")],
        [run("tests", "success"), run("lint", None, status="queued", run_id=322)],
        # a failure with a check still running, before the settle timeout
        [run("tests", "failure", completed_at="2024-05-01T11:58:00Z"), run("lint", None, status="in_progress", run_id=322)],
    ],
    ids=["no-checks", "running", "queued", "failure-not-settled"],
)
async def test_pending_checks_are_ignored(runs, ctx, store, gh, in_review) -> None:
    task = await in_review()
    script_checks(gh, HEAD, runs)

    with pytest.raises(Ignored, match="have not settled"):
        await evaluate_head(ctx, "octo/widgets", HEAD)

    assert await store.get_task(task.id) == task
    assert not await store.has_fact(f"ci-passed:octo/widgets:{HEAD}")
    assert gh.writes() == []


async def test_a_failure_settles_after_the_configured_minutes(ctx, store, gh, in_review, config_yaml, now) -> None:
    config_yaml("ci:\n  settle_minutes: 5\n")
    task = await in_review()
    six_minutes_ago = (now - timedelta(minutes=6)).isoformat()
    script_checks(gh, HEAD, [run("tests", "failure", completed_at=six_minutes_ago, app="x", run_id=1),
                             run("slow", None, status="in_progress", run_id=2)])
    script_base(gh, [])

    assert await evaluate_head(ctx, "octo/widgets", HEAD) == "CI failed (tests); retrying: attempt 2 of 5."
    row = await store.get_task(task.id)
    assert row is not None and row.status is Status.PENDING


async def test_ignored_and_own_checks_do_not_count(ctx, gh, in_review, config_yaml) -> None:
    config_yaml("ci:\n  ignore: ['lint*']\n")
    await in_review()
    script_checks(gh, HEAD, [
        run("tests", "success"),
        run("lint-docs", "failure", run_id=2),
        run("patchwright", None, status="in_progress", app="patchwright", run_id=3),
        run("other-bot-check", "failure", app="patchwright", run_id=4),
    ])

    assert await evaluate_head(ctx, "octo/widgets", HEAD) == "CI passed on aaaaaaa"


async def test_a_not_code_failure_is_commented_once_without_retry(ctx, store, gh, in_review) -> None:
    task = await in_review()
    script_checks(gh, HEAD, [run("tests", "success"), run("deploy", "cancelled", run_id=322)])

    for _ in range(2):
        with pytest.raises(Ignored, match=r"not a code failure \(deploy\): recorded, no retry"):
            await evaluate_head(ctx, "octo/widgets", HEAD)

    comments = gh.sent("POST", COMMENTS_PATH)
    assert len(comments) == 1
    assert "The checks `deploy` did not finish" in comments[0].body["body"]
    assert "`@patchwright retry`" in comments[0].body["body"]
    assert await store.has_fact(f"ci-not-code:octo/widgets:{HEAD}")
    assert await store.get_task(task.id) == task


async def test_a_failure_that_also_fails_on_the_base_branch_is_commented_once(ctx, store, gh, in_review) -> None:
    task = await in_review()
    script_checks(gh, HEAD, [run("tests", "failure")])
    script_base(gh, [run("tests", "failure"), run("lint", "success", run_id=5)])

    for _ in range(2):
        with pytest.raises(Ignored, match=r"tests also fail\(s\) on main: not this PR's fault, no retry"):
            await evaluate_head(ctx, "octo/widgets", HEAD)

    comments = gh.sent("POST", COMMENTS_PATH)
    assert len(comments) == 1
    assert "The failing checks `tests` also fail on the latest commit of `main`" in comments[0].body["body"]
    assert gh.sent("GET", f"{REPO_PATH}/commits/{BASE}/check-runs")  # the base branch's head was read
    assert gh.sent("GET", f"{REPO_PATH}/actions/jobs/321/logs") == []
    assert await store.get_task(task.id) == task
    assert [e.kind for e in await store.list_events(task.id)] == ["created"]


async def test_a_failure_only_partly_failing_on_base_is_retried(ctx, store, gh, in_review) -> None:
    task = await in_review()
    script_checks(gh, HEAD, [run("tests", "failure", app="x", run_id=1), run("lint", "failure", app="x", run_id=2)])
    script_base(gh, [run("tests", "failure", app="x", run_id=1)])

    assert await evaluate_head(ctx, "octo/widgets", HEAD) == "CI failed (lint, tests); retrying: attempt 2 of 5."
    assert (await store.get_task(task.id)).status is Status.PENDING


async def test_a_missing_base_branch_does_not_block_the_retry(ctx, store, gh, in_review) -> None:
    task = await in_review()
    script_checks(gh, HEAD, [run("tests", "failure", app="x")])  # GET branches/main: 404 by default

    await evaluate_head(ctx, "octo/widgets", HEAD)

    assert (await store.get_task(task.id)).status is Status.PENDING


async def test_a_sha_that_is_not_the_bots_head_is_ignored(ctx, store, gh, in_review) -> None:
    task = await in_review()
    other = "c" * 40

    with pytest.raises(Ignored, match="ccccccc is not the head the bot pushed for a task in review"):
        await evaluate_head(ctx, "octo/widgets", other)
    with pytest.raises(Ignored, match=rf"stale head SHA ccccccc: task {task.id}'s current head is aaaaaaa"):
        await evaluate_head(ctx, "octo/widgets", other, branch=task.branch)
    with pytest.raises(Ignored, match="names no head SHA"):
        await evaluate_head(ctx, "octo/widgets", "")
    with pytest.raises(Ignored, match="not the head the bot pushed"):
        await evaluate_head(ctx, "octo/other", HEAD)  # the same SHA in another repository

    assert gh.requests == []
    assert await store.get_task(task.id) == task


async def test_a_task_not_in_review_is_not_evaluated(ctx, gh, make_task) -> None:
    await make_task(Status.PENDING, head_sha=HEAD, pr_number=12, branch="patchwright/issue-7")

    with pytest.raises(Ignored, match="not the head the bot pushed"):
        await evaluate_head(ctx, "octo/widgets", HEAD)
    assert gh.requests == []


# -- log_sources (pure) -----------------------------------------------------------------------------


def _result(name: str, kind: ci.CheckKind, *, app: str = "", id: int | None = 1) -> ci.CheckResult:  # noqa: A002
    return ci.CheckResult(name=name, kind=kind, status="completed", conclusion="failure", app_slug=app, id=id)


def test_log_sources_prefers_an_actions_job_then_a_check_run_then_a_status() -> None:
    status_tests = _result("tests", ci.CheckKind.STATUS)
    run_tests = _result("tests", ci.CheckKind.CHECK_RUN, app="circleci")
    job_tests = _result("tests", ci.CheckKind.CHECK_RUN, app="github-actions", id=9)
    status_lint = _result("lint", ci.CheckKind.STATUS)
    run_lint = _result("lint", ci.CheckKind.CHECK_RUN, app="circleci")
    status_docs = _result("docs", ci.CheckKind.STATUS)
    checks = [status_tests, run_tests, job_tests, status_lint, run_lint, status_docs]

    assert log_sources(checks, ("tests", "lint", "docs", "missing")) == [job_tests, run_lint, status_docs]
    assert log_sources(checks, ("docs", "tests")) == [status_docs, job_tests]
    assert log_sources(checks, ()) == []


def test_log_sources_needs_an_id_to_read_a_job_log() -> None:
    no_id = _result("tests", ci.CheckKind.CHECK_RUN, app="github-actions", id=None)
    other = _result("tests", ci.CheckKind.CHECK_RUN, app="circleci", id=3)
    workflow_job = _result("tests", ci.CheckKind.WORKFLOW_JOB, id=4)

    assert log_sources([no_id, other], ("tests",)) == [no_id]  # a tie: the first one listed
    assert log_sources([no_id, other, workflow_job], ("tests",)) == [workflow_job]
