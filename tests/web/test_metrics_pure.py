"""The metrics' pure parts: histograms, the store-derived numbers, worker heartbeats, GitHub
usage (counting in the client's one request seam, folding the processes' reports)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.github.auth import AppCredentials
from bot.github.client import GitHubClient, GitHubClientFactory
from bot.github.usage import (
    GitHubUsage,
    RateLimitReading,
    current_budget,
    merge_usage,
    status_class,
)
from bot.store.base import Attempt, TaskEvent, WorkerRecord
from bot.tasks.model import RetryKind, Status, Task
from bot.web.metrics import (
    SnapshotCollector,
    StoreSnapshot,
    agent_run_seconds,
    agent_start_seconds,
    attempts_by_kind_and_outcome,
    claimable_ages,
    histogram,
    time_to_pr_seconds,
    worker_gauges,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def task(tid: str, status: Status = Status.PENDING, **fields) -> Task:
    return Task(id=tid, repo="o/r", installation_id=1, issue_number=1, title=tid, status=status,
                created_at=T0, updated_at=fields.pop("updated_at", T0), **fields)


def test_histogram_buckets_are_cumulative_with_inf_last():
    h = histogram([0.5, 1.0, 3.0, 100.0], (1.0, 5.0))
    assert h.buckets == (("1.0", 2), ("5.0", 3), ("+Inf", 4))
    assert (h.count, h.sum) == (4, 104.5)
    assert histogram([], (1.0,)).buckets == (("1.0", 0), ("+Inf", 0))


def test_agent_run_and_time_to_pr():
    attempts = [
        Attempt(task_id="t1", number=1, kind=RetryKind.FIRST, started_at=at(0), finished_at=at(90), outcome="failed"),
        Attempt(task_id="t1", number=2, kind=RetryKind.CI_FAILURE, started_at=at(100)),  # running
        Attempt(task_id="t2", number=1, kind=RetryKind.FIRST, started_at=at(0), finished_at=at(5), outcome="pushed"),
    ]
    assert agent_run_seconds(attempts) == [90.0, 5.0]
    assert attempts_by_kind_and_outcome(attempts) == {
        ("ci_failure", "running"): 1, ("first", "failed"): 1, ("first", "pushed"): 1,
    }
    events = {"t1": [TaskEvent(task_id="t1", kind="transition", reason="", changes={"pr_number": 4}, at=at(300))]}
    assert time_to_pr_seconds([task("t1"), task("t2")], events) == [300.0]


def test_webhook_to_agent_start_uses_the_creating_delivery_or_the_creation():
    tasks = [task("t1"), task("t2"), task("t3"), task("t4"), task("t5")]
    attempts = {
        tid: [Attempt(task_id=tid, number=2, kind=RetryKind.CI_FAILURE, started_at=at(500)),
              Attempt(task_id=tid, number=1, kind=RetryKind.FIRST, started_at=at(20))]
        for tid in ("t1", "t2", "t3", "t4")
    }
    created = {
        tid: [TaskEvent(task_id=tid, kind="created", reason="", delivery_id=d)]
        for tid, d in (("t1", "d1"), ("t2", ""), ("t3", "d-unknown"), ("t4", "d-gone"))
    }
    received = {"d1": at(-10), "d-gone": None}
    # t1: 10 s before the task; t2: no delivery (CLI); t3: not looked up yet; t4: delivery gone;
    # t5: no attempt yet
    assert agent_start_seconds(tasks, attempts, created, received) == [30.0, 20.0, 20.0]


def test_claimable_ages_skip_backoff_and_other_statuses():
    now = at(1000)
    tasks = [
        task("a", updated_at=at(400)),
        task("b", updated_at=at(100), not_before=at(700)),  # claimable since its backoff ended
        task("c", updated_at=at(0), not_before=at(2000)),  # still backing off
        task("d", Status.RUNNING, updated_at=at(0)),
    ]
    assert claimable_ages(tasks, now) == [600.0, 300.0]
    assert claimable_ages([], now) == []


def test_worker_gauges_count_alive_workers_only():
    now = at(1000)
    workers = [
        WorkerRecord("w1", started_at=at(0), seen_at=at(990), stats={"running": 2, "slots": 4}),
        WorkerRecord("w2", started_at=at(0), seen_at=at(100), stats={"running": 1, "slots": 2}),
        WorkerRecord("w3", started_at=at(0), seen_at=at(1000), stats={"running": "x", "slots": True}),
    ]
    gauges = worker_gauges(workers, now, alive_s=60)
    assert gauges.last_seen == {"w1": 10.0, "w2": 900.0, "w3": 0.0}
    assert (gauges.alive, gauges.running, gauges.slots) == (2, 2.0, 4.0)


def test_usage_counts_by_installation_method_and_status_class_and_keeps_the_core_budget():
    usage = GitHubUsage(process="p1")
    usage.record("7", "get", 200, {"x-ratelimit-remaining": "4990", "x-ratelimit-limit": "5000",
                                   "x-ratelimit-reset": "2000", "x-ratelimit-resource": "core"}, 100.0)
    usage.record("7", "GET", 404, {}, 101.0)
    usage.record("7", "GET", 200, {"x-ratelimit-remaining": "29", "x-ratelimit-limit": "30",
                                   "x-ratelimit-resource": "search"}, 102.0)
    usage.record("app", "POST", None, {}, 103.0)
    assert usage.requests == {("7", "GET", "2xx"): 2, ("7", "GET", "4xx"): 1, ("app", "POST", "error"): 1}
    assert usage.rate_limits == {"7": RateLimitReading(4990, 5000, 2000.0, 100.0)}
    snap = usage.snapshot()
    assert snap["process"] == "p1" and ["7", "GET", "2xx", 2] in snap["requests"]
    assert status_class(503) == "5xx" and status_class(42) == "42"


def test_merge_sums_processes_once_each_and_takes_the_lowest_budget_of_the_open_window():
    a1 = {"process": "a", "requests": [["7", "GET", "2xx", 1]], "rate_limits": {}}
    a2 = {"process": "a", "requests": [["7", "GET", "2xx", 5]],
          "rate_limits": {"7": {"remaining": 4000, "limit": 5000, "reset": 2000, "seen": 90}}}
    b = {"process": "b", "requests": [["7", "GET", "2xx", 2], ["8", "POST", "5xx", 1], ["bad"]],
         "rate_limits": {"7": {"remaining": 3500, "limit": 5000, "reset": 2000, "seen": 80},
                         "8": {"remaining": 10, "limit": 5000, "reset": 50, "seen": 40},
                         "9": {"nonsense": 1}}}
    merged = merge_usage([a1, b, a2, "junk"], now=100.0)
    assert merged.requests == {("a", "7", "GET", "2xx"): 5, ("b", "7", "GET", "2xx"): 2, ("b", "8", "POST", "5xx"): 1}
    assert merged.rate_limits["7"].remaining == 3500
    assert merged.rate_limits["8"] == RateLimitReading(5000, 5000, 50.0, 40.0)  # window reset: full again
    assert "9" not in merged.rate_limits
    assert current_budget([], 0.0) is None


@pytest.mark.parametrize("fail_first", [False, True])
async def test_the_client_counts_every_request_it_sends_retries_included(fail_first):
    import aiohttp

    calls = []

    async def transport(method, url, headers, body):
        calls.append(method)
        if fail_first and len(calls) == 1:
            raise aiohttp.ClientConnectionError("reset")
        return 200, {"content-type": "application/json", "x-ratelimit-remaining": "4321",
                     "x-ratelimit-limit": "5000", "x-ratelimit-reset": "9999999999"}, b"{}"

    async def no_sleep(_seconds):
        return None

    usage = GitHubUsage()
    client = GitHubClient(None, transport=transport, sleep=no_sleep, usage=usage, usage_label="42",
                          base_url="https://api.example")
    await client.getitem("/repos/o/r")
    expected = {("42", "GET", "2xx"): 1}
    if fail_first:
        expected[("42", "GET", "error")] = 1
    assert dict(usage.requests) == expected
    assert usage.rate_limits["42"].remaining == 4321


def test_the_factory_labels_each_installations_client():
    from bot.sandbox.auth import generate_key_pair

    private, _ = generate_key_pair()

    async def transport(method, url, headers, body):  # never called here
        raise AssertionError

    factory = GitHubClientFactory(None, AppCredentials(1, private), transport=transport)
    assert factory.for_installation(5)._usage is factory.usage
    assert factory.for_installation(5)._usage_label == "5" and factory.for_app()._usage_label == "app"


def test_empty_snapshot_families_parse_and_name_every_metric():
    registry = CollectorRegistry()
    collector = SnapshotCollector()
    registry.register(collector)
    text = generate_latest(registry).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {
        "patchwright_agent_run_seconds", "patchwright_webhook_to_agent_start_seconds", "patchwright_time_to_pr_seconds",
        "patchwright_attempts", "patchwright_oldest_claimable_task_age_seconds", "patchwright_running_agents",
        "patchwright_workers_alive", "patchwright_worker_last_seen_seconds", "patchwright_github_requests",
        "patchwright_github_rate_limit_remaining", "patchwright_outcome_tasks", "patchwright_outcome_merge_rate",
    } <= names
    assert isinstance(collector.latest, StoreSnapshot)
