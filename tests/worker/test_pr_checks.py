"""The check runs of an attempt at work on a PR head (bot/worker/pr.py): GitHub displays a
check run's buttons only once the run is completed, so Stop rides on a completed companion
run, and every run names its task in ``external_id`` (how a button click finds the task)."""

from __future__ import annotations

import http
from typing import Any

import gidgethub

from bot import messages
from bot.worker import pr

REPO = "octo/widgets"


class RecordingClient:
    """Just the two calls check runs use; ``refuse`` makes the n-th create raise."""

    def __init__(self, refuse: int | None = None) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self._ids = iter(range(101, 200))
        self._refuse = refuse
        self._creates = 0

    async def post(self, url: str, *, data: dict[str, Any]) -> dict[str, Any]:
        self._creates += 1
        if self._creates == self._refuse:
            raise gidgethub.BadRequest(http.HTTPStatus.UNPROCESSABLE_ENTITY)
        self.calls.append(("POST", url, data))
        return {"id": next(self._ids)}

    async def patch(self, url: str, *, data: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("PATCH", url, data))
        return {}


def buttons(data: dict[str, Any]) -> list[str]:
    return [a["identifier"] for a in data.get("actions", [])]


async def started(gh: RecordingClient) -> pr.RunningChecks:
    return await pr.start_check_run(
        gh, repo=REPO, head_sha="a" * 40, task_id="task_1", attempt=2, max_attempts=5, kind="feedback"
    )


async def test_while_the_agent_runs_stop_is_on_a_completed_run_and_both_name_the_task() -> None:
    gh = RecordingClient()
    running = await started(gh)
    (_, _, progress), (_, _, control) = gh.calls
    assert progress["status"] == "in_progress" and buttons(progress) == []
    assert control["status"] == "completed" and control["conclusion"] == "neutral"
    assert control["name"] == messages.CONTROL_CHECK_RUN_NAME and buttons(control) == [messages.ACTION_STOP]
    assert progress["external_id"] == control["external_id"] == "task_1"
    assert (running.progress, running.control) == (101, 102)


async def test_a_push_takes_stop_away_and_leaves_retry_on_the_new_head() -> None:
    gh = RecordingClient()
    running = await started(gh)
    gh.calls.clear()
    await pr.report_pushed(
        gh, repo=REPO, head_sha="b" * 40, task_id="task_1", attempt=2, max_attempts=5,
        summary="Done.", cost_usd=0.5, running=running,
    )
    ended_control, ended_progress, new = gh.calls
    assert ended_control[:2] == ("PATCH", f"/repos/{REPO}/check-runs/102") and buttons(ended_control[2]) == []
    assert ended_progress[1].endswith("/101") and ended_progress[2]["status"] == "completed"
    assert new[0] == "POST" and new[2]["head_sha"] == "b" * 40 and new[2]["external_id"] == "task_1"
    assert buttons(new[2]) == [messages.ACTION_RETRY]


async def test_a_failed_attempt_gets_retry_and_a_stopped_one_no_button() -> None:
    for failed, expected in ((True, [messages.ACTION_RETRY]), (False, [])):
        gh = RecordingClient()
        running = await started(gh)
        gh.calls.clear()
        await pr.report_not_pushed(gh, repo=REPO, running=running, error="It broke.", failed=failed)
        control, progress = gh.calls
        assert control[1].endswith("/102") and buttons(control[2]) == []
        assert progress[2]["conclusion"] == ("failure" if failed else "neutral")
        assert buttons(progress[2]) == expected


async def test_when_github_refuses_the_controls_run_the_progress_run_still_ends() -> None:
    gh = RecordingClient(refuse=2)
    running = await started(gh)
    assert (running.progress, running.control) == (101, None)
    gh.calls.clear()
    await pr.report_not_pushed(gh, repo=REPO, running=running, error="", failed=False)
    [(method, url, _)] = gh.calls
    assert method == "PATCH" and url.endswith("/101")


class ReplyClient:
    """Review-thread replies: ``fail`` maps a thread id to the exception its reply raises."""

    def __init__(self, fail: dict[str, Exception]) -> None:
        self.fail = fail

    async def post(self, url: str, *, data: dict[str, Any]) -> dict[str, Any]:
        thread = url.rstrip("/").split("/")[-2]
        if thread in self.fail:
            raise self.fail[thread]
        return {"id": 1}


async def test_a_rate_limited_reply_is_left_for_later_and_a_refused_one_is_not() -> None:
    from bot.github.client import RateLimited

    gh = ReplyClient(
        {
            "2": RateLimited("secondary rate limit", status=403, retry_after=None, headers={}),
            "3": gidgethub.BadRequest(http.HTTPStatus.NOT_FOUND),
        }
    )
    answered = await pr.reply_addressed(gh, repo=REPO, pr_number=7, thread_ids=["1", "2", "3"], head_sha="c" * 40)
    assert answered == ["1", "3"]  # thread 2 is answered again after the next push
