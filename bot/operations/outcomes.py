"""Outcome records per agent and model: which (preset, model) pairs get pull requests merged,
in how many attempts, at what cost and how fast (SPEC §9; the ``/outcomes`` page,
``GET /api/outcomes`` and the ``patchwright_outcome_*`` metrics all show these numbers).

:func:`outcome_records` decides, pure, over the tasks, their attempts and their audit events;
:func:`read_outcomes` reads those from the store (bounded: the newest
:data:`OUTCOME_TASK_LIMIT` tasks, attempts and events in batches of :data:`BATCH`).

When a pull request first existed is read from the audit trail: the first event whose
``changes`` set ``pr_number`` (the push that opened it, :func:`bot.tasks.rules.attempt_pushed`);
when it was merged, from the event of the transition to ``merged``.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.store.base import Attempt, Store, TaskEvent
from bot.tasks.model import ACTIVE, RetryKind, Status, Task

#: Tasks an outcome reading covers (the newest first).
OUTCOME_TASK_LIMIT = 5_000
#: Task ids per bulk query of attempts or events.
BATCH = 500
#: The audit events the numbers need: creation, transitions and updates (a late push).
OUTCOME_EVENT_KINDS = ("created", "transition", "update")

#: What each number of an outcome record means (the API's ``definitions``, the page's caption).
DEFINITIONS: Mapping[str, str] = {
    "preset": "The agent preset the tasks ran with (claude, codex, aider, command).",
    "model": "The model the preset was asked for; empty: the preset's default.",
    "tasks": "Tasks of this preset and model.",
    "merged": "Tasks whose pull request was merged.",
    "closed": "Tasks closed without a merge (the issue or the pull request was closed, or cancelled).",
    "failed": "Tasks that failed (budget, cost cap or repeated failures).",
    "in_progress": "Tasks not finished yet (pending, running, review, waiting, paused).",
    "merge_rate": "Merged tasks divided by finished ones (merged + closed + failed); null when none finished.",
    "attempts_per_merged_pr": "Mean number of attempts of the merged tasks; null without a merge.",
    "cost_usd": "Agent cost of all the tasks, in US dollars.",
    "cost_per_merged_pr_usd": "Agent cost of all the tasks (merged or not) divided by the merged ones; null without a merge.",
    "median_time_to_pr_s": "Median seconds from a task's creation to its pull request being opened; null when none was.",
    "median_time_to_merge_s": "Median seconds from a merged task's creation to its merge; null without a merge.",
    "ci_retries_per_task": "Attempts started because CI failed, divided by the tasks.",
}


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """The outcome numbers of one (preset, model) pair (see :data:`DEFINITIONS`)."""

    preset: str
    model: str
    tasks: int
    merged: int
    closed: int
    failed: int
    in_progress: int
    merge_rate: float | None
    attempts_per_merged_pr: float | None
    cost_usd: float
    cost_per_merged_pr_usd: float | None
    median_time_to_pr_s: float | None
    median_time_to_merge_s: float | None
    ci_retries_per_task: float

    def as_json(self) -> dict[str, Any]:
        """The record as the API sends it (keys as in :data:`DEFINITIONS`)."""
        return {name: getattr(self, name) for name in DEFINITIONS}


def pr_opened_at(events: Iterable[TaskEvent]) -> datetime | None:
    """When the task's pull request first existed: the first event that set ``pr_number``."""
    for event in events:
        if event.changes.get("pr_number") and event.at is not None:
            return event.at
    return None


def merged_at(events: Iterable[TaskEvent]) -> datetime | None:
    """When the task became ``merged`` (its first transition there)."""
    for event in events:
        if event.to_status is Status.MERGED and event.from_status is not Status.MERGED and event.at is not None:
            return event.at
    return None


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else max(0.0, (end - start).total_seconds())


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _ratio(numerator: float, denominator: int, digits: int = 4) -> float | None:
    return round(numerator / denominator, digits) if denominator else None


def outcome_records(
    tasks: Iterable[Task],
    attempts: Mapping[str, Sequence[Attempt]],
    events: Mapping[str, Sequence[TaskEvent]],
) -> list[OutcomeRecord]:
    """One record per (preset, model) of ``tasks``, sorted by preset then model. Pure.

    ``attempts`` and ``events`` map a task id to its attempts and its audit events in order
    (a task missing from either has none)."""
    groups: dict[tuple[str, str], list[Task]] = defaultdict(list)
    for task in tasks:
        groups[(task.agent, task.model)].append(task)
    records = []
    for (preset, model), group in sorted(groups.items()):
        merged = [t for t in group if t.status is Status.MERGED]
        closed = sum(1 for t in group if t.status is Status.CLOSED)
        failed = sum(1 for t in group if t.status is Status.FAILED)
        finished = len(merged) + closed + failed
        cost = round(sum(t.cost_usd for t in group), 6)
        to_pr = [
            s for t in group if (s := _seconds(t.created_at, pr_opened_at(events.get(t.id, ())))) is not None
        ]
        to_merge = [
            s for t in merged if (s := _seconds(t.created_at, merged_at(events.get(t.id, ())))) is not None
        ]
        ci_retries = sum(
            1 for t in group for a in attempts.get(t.id, ()) if a.kind is RetryKind.CI_FAILURE
        )
        merged_attempts = sum(len(attempts.get(t.id, ())) for t in merged)
        records.append(
            OutcomeRecord(
                preset=preset,
                model=model,
                tasks=len(group),
                merged=len(merged),
                closed=closed,
                failed=failed,
                in_progress=sum(1 for t in group if t.status in ACTIVE),
                merge_rate=_ratio(len(merged), finished),
                attempts_per_merged_pr=_ratio(merged_attempts, len(merged), 3),
                cost_usd=cost,
                cost_per_merged_pr_usd=_ratio(cost, len(merged), 6),
                median_time_to_pr_s=_median(to_pr),
                median_time_to_merge_s=_median(to_merge),
                ci_retries_per_task=round(ci_retries / len(group), 4),
            )
        )
    return records


async def read_history(
    store: Store, *, limit: int = OUTCOME_TASK_LIMIT, newest: Sequence[Task] | None = None
) -> tuple[list[Task], dict[str, list[Attempt]], dict[str, list[TaskEvent]]]:
    """The newest ``limit`` tasks with their attempts and outcome events, in bounded queries.
    ``newest``: the store's tasks newest first, when the caller has read them already."""
    tasks = list(newest[:limit]) if newest is not None else await store.list_tasks(limit=limit)
    attempts: dict[str, list[Attempt]] = {}
    events: dict[str, list[TaskEvent]] = {}
    ids = [t.id for t in tasks]
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        attempts.update(await store.list_attempts_for(chunk))
        events.update(await store.list_events_for(chunk, kinds=OUTCOME_EVENT_KINDS))
    return tasks, attempts, events


async def read_outcomes(store: Store, *, limit: int = OUTCOME_TASK_LIMIT) -> list[OutcomeRecord]:
    """:func:`outcome_records` over the newest ``limit`` tasks of the store."""
    return outcome_records(*await read_history(store, limit=limit))


__all__ = [
    "BATCH",
    "DEFINITIONS",
    "OUTCOME_EVENT_KINDS",
    "OUTCOME_TASK_LIMIT",
    "OutcomeRecord",
    "merged_at",
    "outcome_records",
    "pr_opened_at",
    "read_history",
    "read_outcomes",
]
