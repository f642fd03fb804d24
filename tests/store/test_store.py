"""Every Store method on both backends (fixtures in conftest.py), plus the pure helpers."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from bot.store import rows
from bot.store.base import (
    Attempt,
    Delivery,
    DeliveryState,
    Installation,
    Store,
    StoreError,
    TaskEvent,
)
from bot.store.factory import open_store, parse_sqlite_url
from bot.store.migrations import load_migrations
from bot.store.postgres import channel_name, redact_url
from bot.store.sqlite import decode_time, encode_time, split_script
from bot.tasks.model import TASK_FIELDS, RetryKind, Status, Task, new_id

PLUS_TWO = timezone(timedelta(hours=2))


def make_task(
    clock, issue: int, *, repo: str = "acme/widgets", created_offset: float = 0.0, **fields
) -> Task:
    created = clock.now + timedelta(seconds=created_offset)
    return Task(
        id=new_id("task", now_ms=int(created.timestamp() * 1000)),
        repo=repo,
        installation_id=42,
        issue_number=issue,
        title=f"issue {issue}",
        created_at=created,
        updated_at=created,
        **fields,
    )


def make_delivery(clock, delivery_id: str, *, repo: str = "acme/widgets", **fields) -> Delivery:
    return Delivery(
        id=delivery_id,
        event="issues",
        action="labeled",
        repo=repo,
        installation_id=42,
        payload=b'{"action": "labeled"}',
        received_at=clock.now,
        **fields,
    )


# -- lifecycle ------------------------------------------------------------------------------


async def test_store_satisfies_protocol_and_migrate_is_idempotent(store, make_store):
    assert isinstance(store, Store)
    assert await store.migrate() == []
    other = await make_store()
    assert await other.migrate() == []


async def test_concurrent_first_migrations_apply_once(make_store, store_target):
    a, b = await make_store(), await make_store()
    results = await asyncio.gather(a.migrate(), b.migrate())
    versions = [m.version for m in load_migrations(store_target.backend)]
    assert sorted(results) == [[], versions]
    assert await a.get_task("task_none") is None


async def test_close_is_idempotent_and_refuses_later_calls(make_store):
    store = await make_store(migrate=True)
    await store.close()
    await store.close()
    with pytest.raises(StoreError):
        await store.get_task("task_x")
    with pytest.raises(StoreError):
        await store.record_delivery(make_delivery_now("d-closed"))


async def test_close_writes_deliveries_already_queued(make_store, clock):
    store = await make_store(migrate=True)
    queued = [asyncio.create_task(store.record_delivery(make_delivery(clock, f"d-{n}"))) for n in range(10)]
    await asyncio.sleep(0)  # every call is queued for the group commit
    await store.close()
    assert await asyncio.gather(*queued) == [True] * 10
    reopened = await make_store()
    assert len(await reopened.list_deliveries()) == 10


def make_delivery_now(delivery_id: str) -> Delivery:
    return Delivery(delivery_id, "ping", "", "", None, b"{}", datetime.now(UTC))


# -- tasks: create, get, list -----------------------------------------------------------------


async def test_round_trip_of_every_task_field(store, clock):
    full = Task(
        id="task_01full",
        repo="acme/widgets",
        installation_id=9_007_199_254_740_993,
        issue_number=123,
        title="Fix the ✓ widget",
        spec="Steps:\n- one\n- two 'quoted' \"double\"",
        status=Status.REVIEW,
        attempt=3,
        max_attempts=7,
        retry_kind=RetryKind.FEEDBACK,
        retry_reason="review asked for changes",
        retry_context="##[error] boom\n" * 3,
        failure_category="ci_failure:lint,test",
        consecutive_failures=2,
        conflict_retries=1,
        transient_retries=4,
        feedback_retries=5,
        queued_feedback=("please rename", "and add a test ✓", ""),
        review_threads=("101", "202"),
        last_error_signature="sig:abc",
        cost_usd=0.1 + 0.2,
        max_cost_usd=12.5,
        branch="patchwright/123-fix-widget",
        base_branch="main",
        pr_number=77,
        pr_url="https://github.com/acme/widgets/pull/77",
        head_sha="a" * 40,
        agent="claude",
        model="opus",
        agent_session="sess-1",
        status_comment_id=2**40,
        not_before=datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=PLUS_TWO),
        worker_id="worker-1",
        heartbeat_at=datetime(2030, 1, 2, 1, 0, 0, 1, tzinfo=UTC),
        started_at=datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        created_at=datetime(2024, 2, 29, 12, 0, 0, 500000, tzinfo=UTC),
        updated_at=datetime(2024, 3, 1, 0, 0, 0, 0, tzinfo=UTC),
        close_reason="",
        version=0,
    )
    assert all(getattr(full, f) != getattr(Task("x", "r", 1, 1, "t"), f) for f in ("status", "retry_kind"))
    stored, created = await store.create_task(full)
    assert created
    expected = full.replace(version=1)
    assert stored == expected
    fetched = await store.get_task(full.id)
    assert fetched == expected
    for name in TASK_FIELDS:
        assert type(getattr(fetched, name)) is type(getattr(expected, name)), name
    for name in ("not_before", "heartbeat_at", "started_at", "created_at", "updated_at"):
        assert getattr(fetched, name).utcoffset() == timedelta(0), name
    assert fetched.not_before == datetime(2030, 1, 2, 1, 4, 5, 678901, tzinfo=UTC)

    minimal = Task(id="task_01min", repo="acme/widgets", installation_id=1, issue_number=124, title="")
    stored, _ = await store.create_task(minimal)
    assert stored == minimal.replace(version=1)
    assert (stored.pr_number, stored.status_comment_id, stored.not_before) == (None, None, None)
    assert stored.queued_feedback == ()


async def test_create_refuses_naive_datetimes_and_bad_values(store, clock):
    naive = make_task(clock, 1).replace(not_before=datetime(2030, 1, 1))
    with pytest.raises(StoreError, match="naive"):
        await store.create_task(naive)
    with pytest.raises(StoreError, match="status"):
        await store.create_task(make_task(clock, 2).replace(status="nonsense"))
    with pytest.raises(StoreError, match="queued_feedback"):
        await store.create_task(make_task(clock, 3).replace(queued_feedback="not a tuple"))
    assert await store.list_tasks() == []


async def test_duplicate_issue_returns_the_existing_task(store, clock):
    first, created = await store.create_task(
        make_task(clock, 5), event=TaskEvent(task_id="", kind="created", reason="labeled", actor="alice")
    )
    assert created
    again, created_again = await store.create_task(
        make_task(clock, 5, created_offset=1).replace(title="other")
    )
    assert not created_again
    assert again == first
    events = await store.list_events(first.id)
    assert [(e.kind, e.actor, e.to_status) for e in events] == [("created", "alice", Status.PENDING)]
    same_id_other_issue = first.replace(issue_number=6)
    with pytest.raises(StoreError, match="already exists"):
        await store.create_task(same_id_other_issue)


async def test_get_by_issue_pr_and_branch(store, clock):
    a, _ = await store.create_task(make_task(clock, 1, pr_number=10, branch="patchwright/1-a"))
    b, _ = await store.create_task(
        make_task(clock, 2, repo="acme/other", pr_number=10, branch="patchwright/1-a")
    )
    c, _ = await store.create_task(make_task(clock, 3))
    assert await store.get_task(a.id) == a
    assert await store.get_task("task_missing") is None
    assert await store.get_task_by_issue("acme/widgets", 1) == a
    assert await store.get_task_by_issue("acme/other", 2) == b
    assert await store.get_task_by_issue("acme/other", 1) is None
    assert await store.get_task_by_pr("acme/widgets", 10) == a
    assert await store.get_task_by_pr("acme/other", 10) == b
    assert await store.get_task_by_pr("acme/widgets", 11) is None
    assert await store.get_task_by_branch("acme/widgets", "patchwright/1-a") == a
    assert await store.get_task_by_branch("acme/other", "patchwright/1-a") == b
    assert await store.get_task_by_branch("acme/widgets", "") is None  # c has no branch
    assert c.branch == ""


async def test_list_tasks_newest_first_with_filters(store, clock):
    t1, _ = await store.create_task(make_task(clock, 1, created_offset=1))
    t2, _ = await store.create_task(make_task(clock, 2, created_offset=2, status=Status.REVIEW))
    t3, _ = await store.create_task(make_task(clock, 3, created_offset=3, repo="acme/other"))
    assert [t.id for t in await store.list_tasks()] == [t3.id, t2.id, t1.id]
    assert [t.id for t in await store.list_tasks(statuses=[Status.PENDING])] == [t3.id, t1.id]
    assert [t.id for t in await store.list_tasks(statuses=[Status.REVIEW, Status.RUNNING])] == [t2.id]
    assert await store.list_tasks(statuses=[]) == []
    assert [t.id for t in await store.list_tasks(repo="acme/widgets")] == [t2.id, t1.id]
    assert [t.id for t in await store.list_tasks(repo="acme/widgets", statuses=[Status.PENDING])] == [t1.id]
    assert [t.id for t in await store.list_tasks(limit=2)] == [t3.id, t2.id]


# -- transitions ----------------------------------------------------------------------------


async def test_transition_wins_and_appends_its_event(store, clock):
    task, _ = await store.create_task(make_task(clock, 1))
    clock.advance(timedelta(minutes=3))
    moved = await store.transition(
        task.id,
        from_statuses=[Status.PENDING],
        changes={"status": Status.PAUSED, "retry_reason": "stop", "queued_feedback": ["x", "y"]},
        event=TaskEvent(
            task_id=task.id, kind="transition", reason="stopped by alice", actor="alice", delivery_id="d-1"
        ),
    )
    assert moved is not None
    assert moved.status is Status.PAUSED
    assert moved.queued_feedback == ("x", "y")
    assert moved.version == task.version + 1
    assert moved.updated_at == clock.now
    assert moved.created_at == task.created_at
    assert await store.get_task(task.id) == moved
    (event,) = await store.list_events(task.id)
    assert (event.kind, event.actor, event.delivery_id) == ("transition", "alice", "d-1")
    assert (event.from_status, event.to_status) == (Status.PENDING, Status.PAUSED)
    assert event.changes == {"status": "paused", "retry_reason": "stop", "queued_feedback": ["x", "y"]}
    assert event.at == clock.now
    assert event.seq > 0


async def test_transition_loses_on_status_without_side_effects(store, clock):
    task, _ = await store.create_task(make_task(clock, 1))
    lost = await store.transition(
        task.id,
        from_statuses=[Status.RUNNING, Status.REVIEW],
        changes={"status": Status.FAILED},
        event=TaskEvent(task_id=task.id, kind="transition", reason="should not be written"),
    )
    assert lost is None
    assert await store.get_task(task.id) == task
    assert await store.list_events(task.id) == []
    assert await store.transition(task.id, from_statuses=[], changes={"status": Status.FAILED}) is None
    assert await store.transition("task_missing", from_statuses=[Status.PENDING], changes={}) is None


async def test_transition_compare_and_swap_on_version(store, clock):
    task, _ = await store.create_task(make_task(clock, 1))
    stale = await store.transition(
        task.id, from_statuses=[Status.PENDING], changes={"spec": "new"}, expect_version=task.version + 5
    )
    assert stale is None
    won = await store.transition(
        task.id, from_statuses=[Status.PENDING], changes={"spec": "new"}, expect_version=task.version
    )
    assert won is not None and won.spec == "new" and won.version == task.version + 1
    again = await store.transition(
        task.id, from_statuses=[Status.PENDING], changes={"spec": "newer"}, expect_version=task.version
    )
    assert again is None
    touched = await store.transition(task.id, from_statuses=[Status.PENDING], changes={})
    assert touched is not None and touched.version == won.version + 1


async def test_transition_records_the_status_it_replaced(store, clock):
    task, _ = await store.create_task(make_task(clock, 1))
    await store.claim_task("w1")
    moved = await store.transition(
        task.id,
        from_statuses=[Status.PENDING, Status.RUNNING, Status.REVIEW],
        changes={"status": Status.REVIEW, "pr_number": 9},
        event=TaskEvent(task_id=task.id, kind="transition", reason="pr opened"),
    )
    assert moved is not None
    events = await store.list_events(task.id)
    assert [(e.kind, e.from_status, e.to_status) for e in events] == [
        ("claimed", Status.PENDING, Status.RUNNING),
        ("transition", Status.RUNNING, Status.REVIEW),
    ]
    assert events[1].changes == {"status": "review", "pr_number": 9}


async def test_transition_refuses_store_managed_and_unknown_fields(store, clock):
    task, _ = await store.create_task(make_task(clock, 1))
    for bad in ({"version": 9}, {"updated_at": clock.now}, {"id": "task_other"}, {"nope": 1}):
        with pytest.raises(StoreError):
            await store.transition(task.id, from_statuses=[Status.PENDING], changes=bad)
    with pytest.raises(StoreError, match="naive"):
        await store.transition(
            task.id, from_statuses=[Status.PENDING], changes={"not_before": datetime(2030, 1, 1)}
        )
    assert await store.get_task(task.id) == task


# -- claims, heartbeats, stale tasks ----------------------------------------------------------


async def test_claim_takes_the_oldest_pending_task(store, clock):
    later, _ = await store.create_task(make_task(clock, 1, created_offset=-10))
    oldest, _ = await store.create_task(make_task(clock, 2, created_offset=-20))
    same_time = [make_task(clock, n, created_offset=-15).replace(id=f"task_same_{n}") for n in (4, 3)]
    for task in same_time:
        await store.create_task(task)
    await store.create_task(make_task(clock, 5, created_offset=-30, status=Status.REVIEW))
    clock.advance(timedelta(seconds=1))
    order = []
    while (claimed := await store.claim_task("w1")) is not None:
        order.append(claimed.id)
    assert order == [oldest.id, "task_same_3", "task_same_4", later.id]


async def test_claim_sets_running_fields_and_appends_event(store, clock):
    task, _ = await store.create_task(make_task(clock, 1))
    claimed = await store.claim_task("worker-7")
    assert claimed is not None
    assert claimed.id == task.id
    assert claimed.status is Status.RUNNING
    assert claimed.worker_id == "worker-7"
    assert claimed.heartbeat_at == claimed.started_at == claimed.updated_at == clock.now
    assert claimed.version == task.version + 1
    assert await store.get_task(task.id) == claimed
    (event,) = await store.list_events(task.id)
    assert (event.kind, event.actor, event.to_status) == ("claimed", "worker:worker-7", Status.RUNNING)
    assert await store.claim_task("worker-8") is None


async def test_claim_respects_not_before(store, clock):
    await store.create_task(make_task(clock, 1, not_before=clock.now + timedelta(minutes=2)))
    assert await store.claim_task("w1") is None
    clock.advance(timedelta(minutes=1, seconds=59))
    assert await store.claim_task("w1") is None
    clock.advance(timedelta(seconds=1))
    claimed = await store.claim_task("w1")
    assert claimed is not None and claimed.issue_number == 1


async def test_claim_respects_per_repo_limits(store, clock):
    for n in range(1, 4):
        await store.create_task(make_task(clock, n, repo="acme/a", created_offset=n))
    for n in range(4, 6):
        await store.create_task(make_task(clock, n, repo="acme/b", created_offset=n))
    clock.advance(timedelta(seconds=10))
    first = await store.claim_task("w", max_running_per_repo=1)
    second = await store.claim_task("w", max_running_per_repo=1)
    assert (first.repo, second.repo) == ("acme/a", "acme/b")
    assert await store.claim_task("w", max_running_per_repo=1) is None
    # acme/a may run two: its own limit overrides the default
    third = await store.claim_task("w", max_running_per_repo=1, repo_limits={"acme/a": 2})
    assert third is not None and third.repo == "acme/a"
    assert await store.claim_task("w", max_running_per_repo=1, repo_limits={"acme/a": 2}) is None
    # a limit of 0 closes a repository; with a default of 0 only listed repos run
    assert await store.claim_task("w", repo_limits={"acme/a": 0, "acme/b": 1}) is None
    assert await store.claim_task("w", max_running_per_repo=0, repo_limits={"acme/a": 2}) is None
    fourth = await store.claim_task("w", max_running_per_repo=0, repo_limits={"acme/b": 2})
    assert fourth is not None and fourth.repo == "acme/b"


async def test_claim_respects_the_global_limit(store, clock):
    for n in range(1, 5):
        await store.create_task(make_task(clock, n, repo=f"acme/r{n}", created_offset=n))
    clock.advance(timedelta(seconds=10))
    assert await store.claim_task("w", max_running=2) is not None
    assert await store.claim_task("w", max_running=2) is not None
    assert await store.claim_task("w", max_running=2) is None
    running = await store.list_tasks(statuses=[Status.RUNNING])
    await store.transition(running[0].id, from_statuses=[Status.RUNNING], changes={"status": Status.REVIEW})
    assert await store.claim_task("w", max_running=2) is not None
    assert await store.claim_task("w", max_running=0) is None
    assert await store.claim_task("w") is not None  # no limit given: the last one


async def test_heartbeat(store, clock):
    task, _ = await store.create_task(make_task(clock, 1))
    assert not await store.heartbeat(task.id, "w1")  # not running yet
    claimed = await store.claim_task("w1")
    clock.advance(timedelta(seconds=15))
    assert await store.heartbeat(task.id, "w1")
    beat = await store.get_task(task.id)
    assert beat.heartbeat_at == clock.now
    assert beat.version == claimed.version  # heartbeats never break a compare-and-swap
    assert not await store.heartbeat(task.id, "w2")
    assert not await store.heartbeat("task_missing", "w1")
    await store.transition(task.id, from_statuses=[Status.RUNNING], changes={"status": Status.PAUSED})
    assert not await store.heartbeat(task.id, "w1")


async def test_list_stale_running(store, clock):
    a, _ = await store.create_task(make_task(clock, 1, created_offset=-2))
    b, _ = await store.create_task(make_task(clock, 2, created_offset=-1))
    await store.create_task(make_task(clock, 3))
    assert (await store.claim_task("w1")).id == a.id
    clock.advance(timedelta(minutes=1))
    assert (await store.claim_task("w2")).id == b.id
    assert await store.list_stale_running(timedelta(minutes=2)) == []
    clock.advance(timedelta(minutes=1, seconds=30))
    assert [t.id for t in await store.list_stale_running(timedelta(minutes=2))] == [a.id]
    await store.heartbeat(a.id, "w1")
    clock.advance(timedelta(seconds=31))
    assert [t.id for t in await store.list_stale_running(timedelta(minutes=2))] == [b.id]
    assert [t.id for t in await store.list_stale_running(timedelta(0))] == [b.id, a.id]


# -- wake-ups -------------------------------------------------------------------------------


async def _drain(store: Store) -> None:
    await store.wait_for_pending(0)
    await store.wait_for_deliveries(0)
    assert not await store.wait_for_pending(0.01)


async def test_wait_for_pending_times_out_and_wakes_on_notify(store):
    await _drain(store)
    started = time.monotonic()
    assert not await store.wait_for_pending(0.1)
    assert time.monotonic() - started >= 0.09
    waiter = asyncio.create_task(store.wait_for_pending(10))
    await asyncio.sleep(0.02)
    await store.notify_pending()
    assert await asyncio.wait_for(waiter, 2)
    # a notification nobody waited for is not lost (on PostgreSQL it comes through LISTEN, a
    # moment after the commit, so the next wait gets it without waiting for it to be sent again)
    await store.notify_pending()
    assert await store.wait_for_pending(2)


async def test_wake_ups_cross_store_instances(store, make_store, clock):
    other = await make_store()
    await _drain(store)
    await asyncio.sleep(0.1)  # let SQLite's poller see the counters first
    for wait, notify in (
        (store.wait_for_pending, other.notify_pending),
        (store.wait_for_deliveries, other.notify_deliveries),
    ):
        waiter = asyncio.create_task(wait(10))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await notify()
        assert await asyncio.wait_for(waiter, 2)
        assert time.monotonic() - started < 1.0
    # creating a pending task and recording a delivery wake the other instance too
    waiter = asyncio.create_task(store.wait_for_pending(10))
    await asyncio.sleep(0.05)
    await other.create_task(make_task(clock, 1))
    assert await asyncio.wait_for(waiter, 2)
    waiter = asyncio.create_task(store.wait_for_deliveries(10))
    await asyncio.sleep(0.05)
    await other.record_delivery(make_delivery(clock, "d-wake"))
    assert await asyncio.wait_for(waiter, 2)


NOTIFY_FROM_ANOTHER_PROCESS = """
import asyncio, sys
from bot.store.factory import open_store

async def main():
    store = await open_store(sys.argv[1], schema=sys.argv[2] or None)
    try:
        await store.notify_pending()
    finally:
        await store.close()

asyncio.run(main())
"""


async def test_wake_up_from_another_process(store, store_target):
    await _drain(store)
    waiter = asyncio.create_task(store.wait_for_pending(20))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", NOTIFY_FROM_ANOTHER_PROCESS, store_target.url, store_target.schema or ""
    )
    assert await process.wait() == 0
    ended = time.monotonic()
    assert await asyncio.wait_for(waiter, 5)
    assert time.monotonic() - ended < 1.0


# -- attempts, logs, events -----------------------------------------------------------------


async def test_attempts(store, clock):
    task, _ = await store.create_task(make_task(clock, 1))
    first = Attempt(task.id, 1, RetryKind.FIRST, started_at=clock.now, head_before="")
    await store.start_attempt(first)
    second = Attempt(
        task.id, 2, RetryKind.CI_FAILURE, started_at=clock.now + timedelta(minutes=5), head_before="abc"
    )
    await store.start_attempt(second)
    with pytest.raises(StoreError):
        await store.start_attempt(first)
    with pytest.raises(StoreError):
        await store.start_attempt(Attempt("task_missing", 1, RetryKind.FIRST, started_at=clock.now))
    clock.advance(timedelta(minutes=3))
    await store.finish_attempt(
        task.id, 1, outcome="pushed", cost_usd=0.75, summary="did it", head_after="abc"
    )
    with pytest.raises(StoreError):
        await store.finish_attempt(task.id, 9, outcome="pushed")
    assert await store.list_attempts(task.id) == [
        Attempt(
            task.id,
            1,
            RetryKind.FIRST,
            started_at=first.started_at,
            finished_at=clock.now,
            outcome="pushed",
            cost_usd=0.75,
            summary="did it",
            head_before="",
            head_after="abc",
        ),
        second,
    ]
    assert await store.list_attempts("task_missing") == []


async def test_repo_cost_since(store, clock):
    a, _ = await store.create_task(make_task(clock, 1))
    b, _ = await store.create_task(make_task(clock, 2, repo="acme/other"))
    day_start = clock.now
    await store.start_attempt(Attempt(a.id, 1, RetryKind.FIRST, started_at=day_start - timedelta(hours=2)))
    clock.now = day_start - timedelta(hours=1)
    await store.finish_attempt(a.id, 1, outcome="pushed", cost_usd=5.0)  # finished yesterday
    await store.start_attempt(
        Attempt(a.id, 2, RetryKind.CI_FAILURE, started_at=day_start - timedelta(minutes=5))
    )
    clock.now = day_start + timedelta(minutes=10)
    await store.finish_attempt(a.id, 2, outcome="pushed", cost_usd=1.25)
    await store.start_attempt(
        Attempt(a.id, 3, RetryKind.CI_FAILURE, started_at=day_start + timedelta(hours=1), cost_usd=0.5)
    )  # still running
    await store.start_attempt(
        Attempt(b.id, 1, RetryKind.FIRST, started_at=day_start + timedelta(hours=1), cost_usd=3.0)
    )
    assert await store.repo_cost_since("acme/widgets", day_start) == pytest.approx(1.75)
    assert await store.repo_cost_since("acme/widgets", day_start - timedelta(days=1)) == pytest.approx(6.75)
    assert await store.repo_cost_since("acme/other", day_start) == pytest.approx(3.0)
    assert await store.repo_cost_since("acme/none", day_start) == 0.0


async def test_logs_are_stored_in_batches_and_read_in_order(store, clock):
    task, _ = await store.create_task(make_task(clock, 1))
    await store.append_logs(task.id, 1, ["one", "two"])
    await store.append_logs(task.id, 2, ["second attempt"])
    await store.append_logs(task.id, 1, [])
    await store.append_logs(task.id, 1, ["three", "nul\x00byte", "", "ünïcode ✓"])
    assert await store.read_logs(task.id, 1) == [
        (1, "one"),
        (1, "two"),
        (1, "three"),
        (1, "nul\ufffdbyte"),
        (1, ""),
        (1, "ünïcode ✓"),
    ]
    assert await store.read_logs(task.id, 2) == [(2, "second attempt")]
    assert [line for _, line in await store.read_logs(task.id)][-1] == "second attempt"
    assert len(await store.read_logs(task.id)) == 7
    assert await store.read_logs(task.id, 3) == []


async def test_add_and_list_events(store, clock):
    task, _ = await store.create_task(make_task(clock, 1))
    await store.add_event(
        TaskEvent(
            task_id=task.id,
            kind="note",
            reason="first",
            actor="cli",
            changes={"when": clock.now, "kind": RetryKind.MANUAL, "n": (1, 2)},
        )
    )
    clock.advance(timedelta(seconds=5))
    await store.add_event(
        TaskEvent(
            task_id=task.id,
            kind="heartbeat_lost",
            reason="second",
            actor="reconciler",
            from_status=Status.RUNNING,
            to_status=Status.PENDING,
        )
    )
    first, second = await store.list_events(task.id)
    assert (first.reason, second.reason) == ("first", "second")
    assert first.seq < second.seq
    assert first.at == clock.now - timedelta(seconds=5) and second.at == clock.now
    assert first.changes == {
        "when": (clock.now - timedelta(seconds=5)).isoformat(),
        "kind": "manual",
        "n": [1, 2],
    }
    assert (second.from_status, second.to_status, second.actor) == (
        Status.RUNNING,
        Status.PENDING,
        "reconciler",
    )
    with pytest.raises(StoreError):
        await store.add_event(TaskEvent(task_id="task_missing", kind="note", reason="orphan"))


# -- deliveries ledger ----------------------------------------------------------------------


async def test_record_and_get_delivery(store, clock):
    delivery = dataclasses.replace(make_delivery(clock, "d-1"), payload=bytes(range(256)))
    assert await store.record_delivery(delivery)
    assert not await store.record_delivery(delivery)
    stored = await store.get_delivery("d-1")
    assert stored.payload == bytes(range(256))
    assert (stored.id, stored.event, stored.action, stored.repo, stored.installation_id) == (
        "d-1",
        "issues",
        "labeled",
        "acme/widgets",
        42,
    )
    assert stored.received_at == clock.now
    assert stored.state is DeliveryState.PENDING and stored.seq > 0 and stored.attempts == 0
    assert await store.get_delivery("d-unknown") is None
    no_repo = Delivery("d-2", "installation", "created", "", None, b"{}", clock.now)
    assert await store.record_delivery(no_repo)
    assert (await store.get_delivery("d-2")).installation_id is None


async def test_concurrent_record_delivery_shares_commits(store, clock):
    copies = [make_delivery(clock, f"d-{n % 10}") for n in range(40)]
    results = await asyncio.gather(*(store.record_delivery(d) for d in copies))
    assert results.count(True) == 10
    assert all(results[:10]) and not any(results[10:])
    assert len(await store.list_deliveries(limit=100)) == 10


async def test_list_deliveries_newest_first_with_filters(store, clock):
    for n, repo in enumerate(["acme/a", "acme/b", "acme/a"]):
        await store.record_delivery(make_delivery(clock, f"d-{n}", repo=repo))
    assert [d.id for d in await store.list_deliveries()] == ["d-2", "d-1", "d-0"]
    assert [d.id for d in await store.list_deliveries(repo="acme/a")] == ["d-2", "d-0"]
    assert [d.id for d in await store.list_deliveries(limit=1)] == ["d-2"]
    await store.claim_deliveries("disp", limit=1)
    assert [d.id for d in await store.list_deliveries(state=DeliveryState.PROCESSING)] == ["d-0"]
    assert [d.id for d in await store.list_deliveries(state=DeliveryState.PENDING, repo="acme/a")] == ["d-2"]


async def test_claim_deliveries_one_per_repo_in_order(store, clock):
    layout = [
        ("d-1", "acme/a"),
        ("d-2", "acme/a"),
        ("d-3", "acme/b"),
        ("d-4", ""),
        ("d-5", ""),
        ("d-6", "acme/b"),
        ("d-7", "acme/c"),
    ]
    for delivery_id, repo in layout:
        await store.record_delivery(make_delivery(clock, delivery_id, repo=repo))
    clock.advance(timedelta(seconds=1))
    first = await store.claim_deliveries("disp-1", limit=10)
    assert [d.id for d in first] == ["d-1", "d-3", "d-4", "d-5", "d-7"]
    assert all(d.state is DeliveryState.PROCESSING and d.claimed_by == "disp-1" for d in first)
    assert all(d.claimed_at == clock.now and d.attempts == 1 for d in first)
    assert await store.claim_deliveries("disp-2") == []  # a and b are busy
    await store.finish_delivery("d-1", state=DeliveryState.DONE, outcome="task created")
    assert [d.id for d in await store.claim_deliveries("disp-2")] == ["d-2"]
    await store.finish_delivery("d-3", state=DeliveryState.FAILED, outcome="boom")
    assert [d.id for d in await store.claim_deliveries("disp-2", limit=1)] == ["d-6"]
    assert await store.claim_deliveries("disp-2") == []


async def test_claim_deliveries_respects_limit_and_order(store, clock):
    for n in range(6):
        await store.record_delivery(make_delivery(clock, f"d-{n}", repo=f"acme/r{n % 3}"))
    assert [d.id for d in await store.claim_deliveries("disp", limit=2)] == ["d-0", "d-1"]
    assert [d.id for d in await store.claim_deliveries("disp", limit=2)] == ["d-2"]


async def test_finish_delivery(store, clock):
    await store.record_delivery(make_delivery(clock, "d-1"))
    await store.claim_deliveries("disp")
    clock.advance(timedelta(seconds=2))
    await store.finish_delivery(
        "d-1", state=DeliveryState.DONE, outcome="ignored", ignore_reason="bot author"
    )
    done = await store.get_delivery("d-1")
    assert (done.state, done.outcome, done.ignore_reason, done.processed_at) == (
        DeliveryState.DONE,
        "ignored",
        "bot author",
        clock.now,
    )
    with pytest.raises(StoreError):
        await store.finish_delivery("d-1", state=DeliveryState.PENDING)
    with pytest.raises(StoreError):
        await store.finish_delivery("d-unknown", state=DeliveryState.DONE)


async def test_release_stale_deliveries(store, clock):
    await store.record_delivery(make_delivery(clock, "d-1", repo="acme/a"))
    await store.record_delivery(make_delivery(clock, "d-2", repo="acme/b"))
    await store.claim_deliveries("dead", limit=1)
    clock.advance(timedelta(minutes=4))
    await store.claim_deliveries("alive", limit=1)
    clock.advance(timedelta(minutes=2))
    assert await store.release_stale_deliveries(timedelta(minutes=5)) == 1
    released = await store.get_delivery("d-1")
    assert (released.state, released.claimed_by, released.claimed_at) == (DeliveryState.PENDING, "", None)
    assert (await store.get_delivery("d-2")).state is DeliveryState.PROCESSING
    again = await store.claim_deliveries("new")
    assert [(d.id, d.attempts) for d in again] == [("d-1", 2)]
    assert await store.release_stale_deliveries(timedelta(minutes=5)) == 0


async def test_requeue_delivery(store, clock):
    await store.record_delivery(make_delivery(clock, "d-1"))
    assert not await store.requeue_delivery("d-1")  # still pending
    await store.claim_deliveries("disp")
    assert not await store.requeue_delivery("d-1")  # processing
    await store.finish_delivery("d-1", state=DeliveryState.FAILED, outcome="boom")
    assert await store.requeue_delivery("d-1")
    again = await store.get_delivery("d-1")
    assert (again.state, again.outcome, again.processed_at) == (DeliveryState.PENDING, "", None)
    assert [d.id for d in await store.claim_deliveries("disp")] == ["d-1"]
    assert not await store.requeue_delivery("d-unknown")


# -- installations --------------------------------------------------------------------------


async def test_installations(store, clock):
    assert await store.get_installation(1) is None
    await store.upsert_installation(Installation(1, "acme", repos=("acme/b", "acme/a", "acme/a")))
    await store.upsert_installation(Installation(2, "other", suspended=True))
    one = await store.get_installation(1)
    assert one == Installation(1, "acme", repos=("acme/a", "acme/b"), suspended=False, updated_at=clock.now)
    clock.advance(timedelta(seconds=1))
    await store.set_installation_repos(1, add=["acme/c", "acme/a"], remove=["acme/b"])
    assert (await store.get_installation(1)).repos == ("acme/a", "acme/c")
    await store.upsert_installation(Installation(1, "acme-renamed", repos=("acme/z",), suspended=True))
    renamed = await store.get_installation(1)
    assert (renamed.account, renamed.repos, renamed.suspended) == ("acme-renamed", ("acme/z",), True)
    await store.set_installation_repos(3, add=["x/y"])  # unknown installation: recorded
    assert await store.get_installation(3) == Installation(3, "", repos=("x/y",), updated_at=clock.now)
    assert [i.id for i in await store.list_installations()] == [1, 2, 3]
    assert (await store.list_installations())[1].suspended
    await store.remove_installation(1)
    assert await store.get_installation(1) is None
    assert [i.id for i in await store.list_installations()] == [2, 3]
    await store.remove_installation(99)


# -- factory and pure helpers ---------------------------------------------------------------


def test_parse_sqlite_url_forms():
    assert parse_sqlite_url("sqlite:///./relative.db") == ("./relative.db", {})
    assert parse_sqlite_url("sqlite:///relative.db") == ("relative.db", {})
    assert parse_sqlite_url("sqlite:////abs/path.db") == ("/abs/path.db", {})
    assert parse_sqlite_url("sqlite:////abs/my%20file.db?synchronous=NORMAL&busy_timeout=2.5") == (
        "/abs/my file.db",
        {"synchronous": "normal", "busy_timeout": 2.5},
    )
    for bad in (
        "sqlite://:memory:",
        "sqlite:///:memory:",
        "sqlite://",
        "sqlite:///",
        "sqlite://relative.db",
        "sqlite:///x.db?journal=wal",
        "sqlite:///x.db?busy_timeout=soon",
        "postgresql://h/db",
    ):
        with pytest.raises(StoreError):
            parse_sqlite_url(bad)


async def test_open_store_refuses_bad_urls(tmp_path):
    with pytest.raises(StoreError, match="in-memory"):
        await open_store("sqlite://:memory:")
    with pytest.raises(StoreError, match="unsupported"):
        await open_store("mysql://u:secret@h/db")
    with pytest.raises(StoreError) as caught:
        await open_store("mysql://u:secret@h/db")
    assert "secret" not in str(caught.value)
    with pytest.raises(StoreError, match="schema"):
        await open_store(f"sqlite:///{tmp_path}/x.db", schema="s1")
    with pytest.raises(StoreError, match="schema name"):
        await open_store("postgresql://127.0.0.1:1/db", schema="Robert'); DROP")
    with pytest.raises(StoreError, match="cannot open"):
        await open_store(f"sqlite:///{tmp_path}/missing-dir/x.db")


def test_redact_url_and_channel_names():
    assert redact_url("postgresql://u:secret@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert channel_name("pending", None) == "patchwright_pending_public"
    assert len(channel_name("deliveries", "s" * 63)) <= 63
    assert channel_name("deliveries", "a" * 63) != channel_name("deliveries", "b" * 63)


def test_sqlite_time_text_round_trips_and_sorts():
    times = [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(999, 5, 6, 7, 8, 9, 1, tzinfo=UTC),
        datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=PLUS_TWO),
        datetime(9999, 12, 31, tzinfo=UTC),
    ]
    encoded = [encode_time(t) for t in times]
    assert [decode_time(e) for e in encoded] == times
    assert sorted(encoded) == encoded
    assert encode_time(times[2]) == "2024-02-29T21:59:59.999999Z"


def test_split_script_keeps_semicolons_in_strings_and_comments():
    script = (
        "-- a; comment\nCREATE TABLE t (x TEXT DEFAULT 'a;b');\n\nINSERT INTO t VALUES ('c;');\n-- tail\n"
    )
    assert split_script(script) == [
        "-- a; comment\nCREATE TABLE t (x TEXT DEFAULT 'a;b');",
        "INSERT INTO t VALUES ('c;');",
    ]
    with pytest.raises(StoreError):
        split_script("CREATE TABLE t (x TEXT")


def test_migrations_are_versioned_per_backend():
    for backend in ("sqlite", "postgres"):
        migrations = load_migrations(backend)
        assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
        assert all("CREATE TABLE tasks" in m.sql for m in migrations[:1])
    with pytest.raises(ValueError):
        load_migrations("oracle")


def test_task_field_kinds_cover_every_field_once():
    kinds = [
        rows.ENUM_FIELDS.keys(),
        rows.TIME_FIELDS,
        rows.OPTIONAL_TIME_FIELDS,
        rows.INT_FIELDS,
        rows.OPTIONAL_INT_FIELDS,
        rows.FLOAT_FIELDS,
        rows.TEXT_TUPLE_FIELDS,
        rows.TEXT_FIELDS,
    ]
    assert sorted(name for kind in kinds for name in kind) == sorted(TASK_FIELDS)


def test_clean_text():
    assert rows.clean_text("plain ✓") == "plain ✓"
    assert rows.clean_text("a\x00b") == "a\ufffdb"
    assert rows.clean_text("bad \udcff surrogate") == "bad \ufffd surrogate"


def test_claim_filter():
    decide = rows.claim_filter
    assert decide({}, max_running=None, max_running_per_repo=None, repo_limits=None) == rows.RepoFilter()
    assert decide({"a": 2}, max_running=2, max_running_per_repo=None, repo_limits=None) is None
    assert decide({"a": 1}, max_running=2, max_running_per_repo=1, repo_limits=None) == rows.RepoFilter(
        exclude=frozenset({"a"})
    )
    assert decide(
        {"a": 1, "b": 1}, max_running=None, max_running_per_repo=1, repo_limits={"a": 2}
    ) == rows.RepoFilter(exclude=frozenset({"b"}))
    assert decide({}, max_running=None, max_running_per_repo=None, repo_limits={"a": 0}) == rows.RepoFilter(
        exclude=frozenset({"a"})
    )
    assert decide(
        {"b": 1}, max_running=None, max_running_per_repo=0, repo_limits={"a": 1, "b": 1}
    ) == rows.RepoFilter(only=frozenset({"a"}))
    assert decide({}, max_running=None, max_running_per_repo=0, repo_limits=None) is None
    assert rows.RepoFilter(only=frozenset({"a"})).allows("a")
    assert not rows.RepoFilter(exclude=frozenset({"a"})).allows("a")


def test_first_wins():
    assert rows.first_wins(["a", "b", "a", "c"], {"a", "c"}) == [True, False, False, True]


async def test_group_commit_batches_concurrent_submissions():
    batches: list[list[int]] = []

    async def write(batch: list[int]) -> list[int]:
        batches.append(batch)
        await asyncio.sleep(0.01)
        return [item * 2 for item in batch]

    commit = rows.GroupCommit(write, max_batch=20)
    assert await asyncio.gather(*(commit.submit(n) for n in range(32))) == [n * 2 for n in range(32)]
    assert [len(b) for b in batches] == [20, 12]
    await commit.close()
    with pytest.raises(StoreError):
        await commit.submit(1)


async def test_group_commit_reports_a_failed_batch_to_every_caller():
    async def write(batch: list[int]) -> list[int]:
        if 3 in batch:
            raise RuntimeError("disk full")
        return batch

    commit = rows.GroupCommit(write)
    results = await asyncio.gather(*(commit.submit(n) for n in range(5)), return_exceptions=True)
    assert all(isinstance(r, StoreError) and "disk full" in str(r) for r in results)
    assert await commit.submit(7) == 7
    await commit.close()


async def test_facts_are_recorded_once_across_stores(store, make_store):
    other = await make_store()
    assert await store.record_fact("ci:o/r:abc", "retry") is True
    assert await other.record_fact("ci:o/r:abc", "retry") is False
    assert await store.record_fact("ci:o/r:abc") is False
    assert await other.record_fact("ci:o/r:def") is True
    assert await store.has_fact("ci:o/r:def") and not await store.has_fact("ci:o/r:xyz")


async def test_group_commit_with_several_writers_writes_batches_concurrently():
    in_flight, most_in_flight, release = 0, 0, asyncio.Event()

    async def write(batch: list[int]) -> list[int]:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        await release.wait()
        in_flight -= 1
        return [item * 2 for item in batch]

    commit = rows.GroupCommit(write, writers=3)
    first = [asyncio.ensure_future(commit.submit(n)) for n in range(4)]
    await asyncio.sleep(0.01)  # one writer holds the first batch
    later = [asyncio.ensure_future(commit.submit(n)) for n in range(4, 10)]
    await asyncio.sleep(0.01)  # a second writer takes what queued meanwhile
    assert most_in_flight == 2
    release.set()
    assert await asyncio.gather(*first, *later) == [n * 2 for n in range(10)]
    await commit.close()
    with pytest.raises(ValueError):
        rows.GroupCommit(write, writers=0)


async def test_group_commit_with_several_writers_closes_right_after_a_submission():
    async def write(batch: list[int]) -> list[int]:
        await asyncio.sleep(0.01)
        return batch

    commit = rows.GroupCommit(write, writers=3)
    queued = [asyncio.ensure_future(commit.submit(n)) for n in range(5)]
    await asyncio.sleep(0)  # queued; the writers have not run yet
    async with asyncio.timeout(5):  # (in this task: close runs before the writers start)
        await commit.close()  # every writer ends, none waiting for a wake-up already spent
    assert [task.result() for task in queued] == list(range(5))


async def test_a_write_cancelled_midway_leaves_the_store_usable(store):
    """A write cancelled while its transaction starts (an attempt's log flush cancelled at
    close, a handler timing out) must not leave the connection inside that transaction:
    every later write failed with "cannot start a transaction within a transaction"."""
    for steps in range(6):
        pending = asyncio.ensure_future(store.record_fact(f"cancelled-{steps}"))
        for _ in range(steps):
            await asyncio.sleep(0)
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        assert await asyncio.wait_for(store.record_fact(f"after-{steps}"), timeout=10) is True


async def test_an_attempt_keeps_whether_its_cost_is_known_and_what_its_sandbox_refused(store, clock):
    task, _ = await store.create_task(make_task(clock, 7))
    await store.start_attempt(Attempt(task.id, 1, RetryKind.FIRST, started_at=clock.now))
    await store.start_attempt(Attempt(task.id, 2, RetryKind.CI_FAILURE, started_at=clock.now))
    refused = "github.com:443: the agent has no network access\n10.0.0.1:80: not public"
    await store.finish_attempt(task.id, 1, outcome="pushed", cost_known=False, refused=refused)
    await store.finish_attempt(task.id, 2, outcome="pushed", cost_usd=0.5)
    first, second = await store.list_attempts(task.id)
    assert (first.cost_known, first.refused) == (False, refused)
    assert (second.cost_known, second.refused) == (True, "")
