"""Board and task page depth: agent and model, CI state of heads in review, times, PR as #n,
commit and check links, absolute event times, no stale retry fields on finished tasks, tidy
reasons; search and cursor paging on the board (pure renderers, then over HTTP on both stores)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from bot import ci
from bot.ci import HeadState
from bot.store.base import Attempt, TaskEvent
from bot.tasks.model import RetryKind, Status, Task
from bot.web.pages.board import render_board, render_board_filters, visible_reason
from bot.web.pages.html import duration, render_page, tidy
from bot.web.pages.task import render_task
from tests.web.conftest import make_task, move

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
GH = "https://github.com"
SHA = "a1b2c3d4e5" + "0" * 30


def task(task_id: str = "task_1", **changes) -> Task:
    base = Task(id=task_id, repo="octo/widgets", installation_id=1, issue_number=7, title="Fix it",
                agent="claude", model="sonnet-4", created_at=NOW - timedelta(hours=2), updated_at=NOW)
    return base.replace(**changes)


def row_of(html: str, task_id: str) -> str:
    match = re.search(rf'<tr data-task-id="{task_id}">.*?</tr>', html, re.DOTALL)
    assert match, task_id
    return match.group(0)


# -- pure ---------------------------------------------------------------------------------------


def test_durations_and_tidy_text():
    assert [duration(s) for s in (None, 0, 59, 61, 3725, 90061)] == ["-", "0s", "59s", "1m 01s", "1h 02m", "1d 1h"]
    assert tidy("Attempt 2 failed: tests failed.: the same failure.; retrying.. ok... e.g, x") == (
        "Attempt 2 failed: tests failed: the same failure; retrying. ok... e.g, x")


def test_a_board_row_shows_agent_model_pr_ci_and_times():
    review = task("t_review", status=Status.REVIEW, pr_number=12, pr_url=f"{GH}/octo/widgets/pull/12", head_sha=SHA)
    running = task("t_run", status=Status.RUNNING, started_at=NOW - timedelta(minutes=5))
    merged = task("t_merged", status=Status.MERGED, retry_reason="Merge conflict with main", close_reason="",
                  updated_at=NOW - timedelta(hours=1))
    html = render_board([review, running, merged], now=NOW, html_base=GH, ci={"t_review": HeadState.PASSING})
    r = row_of(html, "t_review")
    assert f'<a href="{GH}/octo/widgets/pull/12" rel="noopener noreferrer">#12</a>' in r
    assert '<span class="ci ci-passing"' in r and "CI passing" in r  # text, not colour alone
    assert "claude" in r and "sonnet-4" in r and "2h 00m" in r
    assert "running 5m 00s" in row_of(html, "t_run")
    m = row_of(html, "t_merged")
    assert "Merge conflict" not in m and "1h 00m" in m  # elapsed stops when the task finished
    for state, words in ((HeadState.FAILING, "CI failing"), (HeadState.PENDING, "CI pending")):
        assert words in render_board([review], now=NOW, html_base=GH, ci={"t_review": state})
    assert "CI " not in row_of(render_board([review], now=NOW, html_base=GH), "t_review")


def test_a_finished_task_shows_its_close_reason_tidied_never_a_stale_retry_reason():
    failed = task(status=Status.FAILED, retry_reason="Merge conflict", close_reason="Attempt 2 failed: boom.: again")
    assert visible_reason(failed) == "Attempt 2 failed: boom: again"
    assert visible_reason(task(status=Status.PENDING, retry_reason="CI failed: lint")) == "CI failed: lint"
    assert visible_reason(task(status=Status.MERGED, retry_reason="Merge conflict")) == ""


def test_board_pager_search_and_empty_texts():
    html = render_board([task()], now=NOW, html_base=GH, older_href="/?before=abc&q=x", newest_href="/?q=x")
    assert '<a rel="next" href="/?before=abc&amp;q=x">Older tasks →</a>' in html and 'href="/?q=x">Newest' in html
    assert "No task matches." in render_board([], now=NOW, html_base=GH, filtered=True)
    assert "Label an issue" in render_board([], now=NOW, html_base=GH)
    form = render_board_filters(None, None, '"><x>')
    assert '<label class="search">Search tasks <input type="search" name="q"' in form
    assert 'value="&quot;&gt;&lt;x&gt;"' in form and "<x>" not in form


def test_the_live_pill_does_not_say_offline_before_the_stream_opens():
    page = render_page("t", "c", page="board")
    assert 'id="live"' in page and "connecting…" in page and "offline" not in page


def test_the_task_page_links_pr_commits_and_checks_and_shows_exact_times():
    t = task(status=Status.REVIEW, pr_number=12, pr_url=f"{GH}/octo/widgets/pull/12", head_sha=SHA,
             retry_reason="CI failed: lint.; again")
    attempts = [Attempt("task_1", 1, RetryKind.FIRST, started_at=NOW - timedelta(minutes=10),
                        finished_at=NOW - timedelta(minutes=7, seconds=55), outcome="pushed", head_after=SHA),
                Attempt("task_1", 2, RetryKind.CI_FAILURE, started_at=NOW - timedelta(seconds=30))]
    events = [TaskEvent("task_1", "transition", "first.: one", at=NOW - timedelta(seconds=50), seq=1),
              TaskEvent("task_1", "transition", "second", at=NOW - timedelta(seconds=20), seq=2,
                        delivery_id="d-9")]
    page = render_task(t, attempts, events, {}, now=NOW, html_base=GH)
    assert f'href="{GH}/octo/widgets/pull/12" rel="noopener noreferrer">#12</a>' in page
    assert f'href="{GH}/octo/widgets/commit/{SHA}" rel="noopener noreferrer">a1b2c3d4e5</a>' in page
    assert f'href="{GH}/octo/widgets/commit/{SHA}/checks"' in page
    assert "2m 05s" in page and "30s <span class=muted>so far</span>" in page  # durations per attempt
    assert "2025-03-01 11:59:10" in page and "2025-03-01 11:59:40" in page  # order within a minute visible
    assert "first: one" in page and "first.:" not in page and "CI failed: lint; again" in page
    assert 'href="/deliveries/d-9"' in page and "Elapsed" in page


def test_a_merged_task_page_has_no_retry_row():
    t = task(status=Status.MERGED, retry_kind=RetryKind.MERGE_CONFLICT, retry_reason="Merge conflict with main")
    page = render_task(t, [], [], {}, now=NOW, html_base=GH)
    assert "<dt>Retry</dt>" not in page and "Merge conflict" not in page
    running = render_task(task(status=Status.RUNNING, started_at=NOW - timedelta(minutes=3)), [], [], {},
                          now=NOW, html_base=GH)
    assert "<dt>Running for</dt><dd>3m 00s</dd>" in running and "<dt>Retry</dt>" in running


# -- over HTTP, on both stores --------------------------------------------------------------------


async def test_board_search_paging_and_ci_state(store, clock, seeder, make_client):
    seeded = await seeder(store, clock())
    review = await move(store, seeded.hostile, head_sha=SHA)
    client = await make_client(store, clock=clock)

    board = await (await client.get("/")).text()
    assert "CI pending" in row_of(board, review.id)
    await store.record_fact(ci.ci_fact(ci.PASSED_FACT, review.repo, SHA))
    assert "CI passing" in row_of(await (await client.get("/")).text(), review.id)

    found = await (await client.get("/?q=flaky")).text()
    assert seeded.failed.id in found and seeded.pending.id not in found and 'value="flaky"' in found
    by_pr = await (await client.get("/?q=%2312")).text()
    assert seeded.failed.id in by_pr and seeded.pending.id not in by_pr
    assert "No task matches." in await (await client.get("/?q=nothing-like-this")).text()

    for n in range(4):
        clock.advance(timedelta(seconds=1))
        await store.create_task(make_task(f"task_1{n}", "octo/widgets", 20 + n, f"Paged {n}", clock()))
    seen: list[str] = []
    url = "/?limit=3"
    for _ in range(5):
        page = await (await client.get(url)).text()
        seen += re.findall(r'<tr data-task-id="([^"]+)"', page)
        older = re.search(r'<a rel="next" href="([^"]+)">', page)
        if not older:
            break
        url = older.group(1).replace("&amp;", "&")
        assert "limit=3" in url and "before=" in url
        assert 'href="/?limit=3">Newest tasks' in await (await client.get(url)).text()
    assert sorted(seen) == sorted([seeded.failed.id, seeded.pending.id, review.id] + [f"task_1{n}" for n in range(4)])

    bad = await client.get("/?before=garbage")
    assert bad.status == 400 and "cursor" in await bad.text()
