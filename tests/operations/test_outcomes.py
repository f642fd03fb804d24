"""Outcome records per (preset, model): the pure computation, and the reader over a real store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.operations import outcomes as outcomes_module
from bot.operations.outcomes import (
    DEFINITIONS,
    OutcomeRecord,
    merged_at,
    outcome_records,
    pr_opened_at,
    read_outcomes,
)
from bot.store.base import Attempt, TaskEvent
from bot.tasks.model import RetryKind, Status, Task

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def task(tid: str, status: Status, *, agent: str = "claude", model: str = "", cost: float = 0.0) -> Task:
    return Task(
        id=tid, repo="o/r", installation_id=1, issue_number=int(tid[1:]), title=tid, status=status,
        agent=agent, model=model, cost_usd=cost, created_at=T0,
    )


def attempts(tid: str, *kinds: RetryKind) -> list[Attempt]:
    return [Attempt(task_id=tid, number=n, kind=k, started_at=T0) for n, k in enumerate(kinds, 1)]


def opened(tid: str, minutes: float, pr: int = 5) -> TaskEvent:
    return TaskEvent(
        task_id=tid, kind="transition", reason="pushed", from_status=Status.RUNNING, to_status=Status.REVIEW,
        changes={"pr_number": pr, "head_sha": "abc"}, at=T0 + timedelta(minutes=minutes),
    )


def merged(tid: str, minutes: float) -> TaskEvent:
    return TaskEvent(
        task_id=tid, kind="transition", reason="merged", from_status=Status.REVIEW, to_status=Status.MERGED,
        changes={"status": "merged"}, at=T0 + timedelta(minutes=minutes),
    )


def test_pr_and_merge_times_come_from_the_first_matching_event():
    events = [
        TaskEvent(task_id="t1", kind="created", reason="", to_status=Status.PENDING, at=T0),
        TaskEvent(task_id="t1", kind="transition", reason="", changes={"pr_number": None}, at=T0),
        opened("t1", 10),
        opened("t1", 20, pr=6),
        merged("t1", 30),
    ]
    assert pr_opened_at(events) == T0 + timedelta(minutes=10)
    assert merged_at(events) == T0 + timedelta(minutes=30)
    assert pr_opened_at(events[:2]) is None and merged_at(events[:4]) is None


def test_records_per_preset_and_model():
    tasks = [
        task("t1", Status.MERGED, cost=1.0),
        task("t2", Status.MERGED, cost=2.0),
        task("t3", Status.CLOSED, cost=0.5),
        task("t4", Status.FAILED, cost=0.5),
        task("t5", Status.RUNNING, cost=0.25),
        task("t6", Status.MERGED, agent="codex", model="gpt-5", cost=0.1),
        task("t7", Status.REVIEW, agent="codex"),
    ]
    tried = {
        "t1": attempts("t1", RetryKind.FIRST),
        "t2": attempts("t2", RetryKind.FIRST, RetryKind.CI_FAILURE, RetryKind.CI_FAILURE),
        "t3": attempts("t3", RetryKind.FIRST, RetryKind.CI_FAILURE),
        "t6": attempts("t6", RetryKind.FIRST, RetryKind.FEEDBACK),
    }
    events = {
        "t1": [opened("t1", 4), merged("t1", 60)],
        "t2": [opened("t2", 10), merged("t2", 120)],
        "t3": [opened("t3", 6)],
        "t6": [opened("t6", 2), merged("t6", 30)],
        "t7": [opened("t7", 3)],
    }
    claude, codex_default, codex_gpt = outcome_records(tasks, tried, events)
    assert claude == OutcomeRecord(
        preset="claude", model="", tasks=5, merged=2, closed=1, failed=1, in_progress=1,
        merge_rate=0.5, attempts_per_merged_pr=2.0, cost_usd=4.25, cost_per_merged_pr_usd=2.125,
        median_time_to_pr_s=360.0, median_time_to_merge_s=5400.0, ci_retries_per_task=0.6,
    )
    assert (codex_default.preset, codex_default.model, codex_default.tasks) == ("codex", "", 1)
    assert codex_default.merge_rate is None and codex_default.cost_per_merged_pr_usd is None
    assert codex_default.attempts_per_merged_pr is None and codex_default.median_time_to_merge_s is None
    assert codex_default.median_time_to_pr_s == 180.0 and codex_default.in_progress == 1
    assert (codex_gpt.model, codex_gpt.merge_rate, codex_gpt.attempts_per_merged_pr) == ("gpt-5", 1.0, 2.0)
    assert codex_gpt.ci_retries_per_task == 0.0


def test_json_has_every_defined_number_and_nothing_else():
    [record] = outcome_records([task("t1", Status.PENDING)], {}, {})
    body = record.as_json()
    assert list(body) == list(DEFINITIONS)
    assert body["merge_rate"] is None and body["tasks"] == 1 and body["in_progress"] == 1
    assert outcome_records([], {}, {}) == []


@pytest.mark.parametrize("count", [0, 3])
async def test_read_outcomes_reads_tasks_attempts_and_events_from_the_store(store, count, monkeypatch):
    monkeypatch.setattr(outcomes_module, "BATCH", 2)  # 3 tasks: two batches of bulk reads
    from bot.tasks import rules
    from bot.tasks.model import new_id

    made = []
    for n in range(count):
        new = rules.new_task(
            id=new_id("task"), repo="o/r", installation_id=1, issue_number=n + 1, title=f"t{n}",
            spec="", max_attempts=5, max_cost_usd=10.0, agent="aider", model="m", base_branch="", now=T0,
        )
        stored, _ = await store.create_task(new)
        made.append(stored)
    if made:
        first = made[0]
        await store.start_attempt(Attempt(task_id=first.id, number=1, kind=RetryKind.FIRST, started_at=T0))
        await store.transition(
            first.id, from_statuses=[Status.PENDING],
            changes={"status": Status.REVIEW, "pr_number": 9},
            event=TaskEvent(task_id=first.id, kind="transition", reason="pushed",
                            from_status=Status.PENDING, to_status=Status.REVIEW, changes={"pr_number": 9}),
        )
        await store.transition(
            first.id, from_statuses=[Status.REVIEW], changes={"status": Status.MERGED},
            event=TaskEvent(task_id=first.id, kind="transition", reason="merged",
                            from_status=Status.REVIEW, to_status=Status.MERGED),
        )
    records = await read_outcomes(store)
    if not count:
        assert records == []
        return
    [record] = records
    assert (record.preset, record.model, record.tasks, record.merged, record.in_progress) == ("aider", "m", 3, 1, 2)
    assert record.merge_rate == 1.0 and record.attempts_per_merged_pr == 1.0
    events = await store.list_events(made[0].id)
    pr_at = next(ev.at for ev in events if "pr_number" in ev.changes)
    merged_at = next(ev.at for ev in events if ev.to_status is Status.MERGED)
    assert record.median_time_to_pr_s == (pr_at - made[0].created_at).total_seconds()
    assert record.median_time_to_merge_s == (merged_at - made[0].created_at).total_seconds()
