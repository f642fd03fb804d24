"""Outcome records and metrics after real end-to-end runs (issue 16, criteria 4 and 5).

The bot serves the emulator's webhooks (ingress, dispatcher, handlers) and a worker pool runs
the fake agent under two presets: ``command`` (repository ``alpha``) and ``claude`` with a
model (``beta`` and ``gamma``; the fake agent stands in for the ``claude`` CLI). Humans merge
one PR of each preset and close one unmerged; gamma's agent changes nothing, so its task
fails. The test then computes the outcome numbers itself from the task rows and their audit
trail and checks that ``/outcomes``, ``GET /api/outcomes`` and ``/metrics`` all say the same;
and that ``/metrics``, parsed with ``prometheus_client``'s parser, carries the histograms,
attempts, queue, worker, GitHub and process metrics with sane values.
"""

from __future__ import annotations

import asyncio
import re
import statistics
from collections import defaultdict
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.tasks.model import RetryKind, Status, Task

pytestmark = pytest.mark.slow

MODEL = "fake-sonnet"
FIX = [{"write": {"src/app.py": "def greet(name):\n    return 'hello ' + name\n"}}, {"done": "Hello."}]
NOTHING = [{"done": "Nothing to change."}]


def config(preset: str, model: str = "") -> dict[str, Any]:
    agent: dict[str, Any] = {"timeout_minutes": 1, "preset": preset}
    if model:
        agent["model"] = model
    return {"agent": agent, "max_concurrent_tasks": 10}


async def label(e2e, repo: str, title: str) -> Task:
    """Open an issue and label it; the task the bot created for it."""
    issue = await e2e.open_issue(repo, title, "Say hello.")
    await e2e.emulator.label_issue(repo, issue, ["patchwright"], "alice")
    deadline = asyncio.get_running_loop().time() + 20
    while (task := await e2e.store.get_task_by_issue(repo, issue)) is None:
        assert asyncio.get_running_loop().time() < deadline, f"no task for {repo}#{issue}"
        await asyncio.sleep(0.05)
    return task


async def run_two_presets(e2e) -> tuple[list[Task], str]:
    """The scenarios; returns the final task rows and the bot's base URL."""
    alpha = await e2e.add_repo("alpha", script={"first": FIX}, config=config("command"))
    beta = await e2e.add_repo("beta", script={"first": FIX}, config=config("claude", MODEL))
    gamma = await e2e.add_repo("gamma", script={"first": NOTHING}, config=config("claude", MODEL))
    webhook_url = await e2e.serve()
    pool = await e2e.start_pool(executables={"claude": e2e.claude_executable()}, github_usage=e2e.github.usage)

    a1 = await label(e2e, alpha, "Greet with hello")
    a2 = await label(e2e, alpha, "Greet with hello, again")
    b1 = await label(e2e, beta, "Greet with hello")
    g1 = await label(e2e, gamma, "Greet with hello")
    in_review = {t.id: await e2e.wait_for(t.id, lambda t: t.status is Status.REVIEW) for t in (a1, a2, b1)}
    await e2e.wait_for(g1.id, lambda t: t.status is Status.FAILED)

    await e2e.emulator.merge_pull(alpha, in_review[a1.id].pr_number, user="alice")
    await e2e.emulator.close_pull(alpha, in_review[a2.id].pr_number, user="alice")
    await e2e.emulator.merge_pull(beta, in_review[b1.id].pr_number, user="alice")
    await e2e.wait_for(a1.id, lambda t: t.status is Status.MERGED)
    await e2e.wait_for(a2.id, lambda t: t.status is Status.CLOSED)
    await e2e.wait_for(b1.id, lambda t: t.status is Status.MERGED)
    await e2e.wait_until(lambda: not pool.running, what="the pool is idle")
    return await e2e.store.list_tasks(), webhook_url.rsplit("/webhook", 1)[0]


async def expected_outcomes(e2e, tasks: list[Task]) -> dict[tuple[str, str], dict[str, Any]]:
    """The outcome numbers computed here, from the task rows and their audit trail."""
    groups: dict[tuple[str, str], list[Task]] = defaultdict(list)
    for task in tasks:
        groups[(task.agent, task.model)].append(task)
    out = {}
    for key, group in groups.items():
        merged = [t for t in group if t.status is Status.MERGED]
        finished = [t for t in group if t.status in (Status.MERGED, Status.CLOSED, Status.FAILED)]
        attempts = {t.id: await e2e.store.list_attempts(t.id) for t in group}
        to_pr, to_merge = [], []
        for task in group:
            events = await e2e.store.list_events(task.id)
            opened = [ev.at for ev in events if ev.changes.get("pr_number")]
            if opened:
                to_pr.append((opened[0] - task.created_at).total_seconds())
            done = [ev.at for ev in events if ev.to_status is Status.MERGED and ev.from_status is not Status.MERGED]
            if task.status is Status.MERGED and done:
                to_merge.append((done[0] - task.created_at).total_seconds())
        cost = sum(t.cost_usd for t in group)
        out[key] = {
            "tasks": len(group),
            "merged": len(merged),
            "closed": sum(t.status is Status.CLOSED for t in group),
            "failed": sum(t.status is Status.FAILED for t in group),
            "in_progress": len(group) - len(finished),
            "merge_rate": len(merged) / len(finished) if finished else None,
            "attempts_per_merged_pr": sum(len(attempts[t.id]) for t in merged) / len(merged) if merged else None,
            "cost_usd": cost,
            "cost_per_merged_pr_usd": cost / len(merged) if merged else None,
            "median_time_to_pr_s": statistics.median(to_pr) if to_pr else None,
            "median_time_to_merge_s": statistics.median(to_merge) if to_merge else None,
            "ci_retries_per_task": sum(
                a.kind is RetryKind.CI_FAILURE for t in group for a in attempts[t.id]
            ) / len(group),
        }
    return out


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= 0.002 * max(1.0, abs(b))


def samples_of(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_outcomes_page_api_and_metrics_agree_and_metrics_carry_what_to_alert_on(e2e):
    tasks, base = await run_two_presets(e2e)
    assert {(t.agent, t.model) for t in tasks} == {("command", ""), ("claude", MODEL)}
    expected = await expected_outcomes(e2e, tasks)
    assert expected[("command", "")]["merge_rate"] == 0.5 and expected[("claude", MODEL)]["failed"] == 1

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/outcomes") as resp:
            assert resp.status == 200
            api = await resp.json()
        async with http.get(f"{base}/outcomes") as resp:
            assert resp.status == 200
            page = await resp.text()
        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 200
            metrics = samples_of(await resp.text())

    # -- criterion 4: the same numbers in the API, on the page and in the metrics
    by_pair = {(r["preset"], r["model"]): r for r in api["outcomes"]}
    assert set(by_pair) == set(expected)
    for (preset, model), want in expected.items():
        got = by_pair[(preset, model)]
        for key, value in want.items():
            assert close(got[key], value), (preset, model, key, got[key], value)
        labels = (("model", model), ("preset", preset))
        for result in ("merged", "closed", "failed", "in_progress"):
            assert metrics[("patchwright_outcome_tasks", (*labels, ("result", result)))] == want[result]
        for key, name in (
            ("merge_rate", "merge_rate"), ("attempts_per_merged_pr", "attempts_per_merged_pr"),
            ("cost_usd", "cost_usd"), ("cost_per_merged_pr_usd", "cost_per_merged_pr_usd"),
            ("median_time_to_pr_s", "median_time_to_pr_seconds"),
            ("median_time_to_merge_s", "median_time_to_merge_seconds"),
            ("ci_retries_per_task", "ci_retries_per_task"),
        ):
            assert close(metrics.get((f"patchwright_outcome_{name}", labels)), want[key]), (preset, key)
        row = re.search(rf'<tr data-preset="{preset}" data-model="{model}">(.*?)</tr>', page)
        assert row is not None, (preset, model)
        cells = dict(re.findall(r'data-field="([a-z_]+)">(.*?)</td>', row.group(1)))
        for key in ("tasks", "merged", "closed", "failed", "in_progress"):
            assert cells[key] == str(want[key]), (preset, key)
        assert cells["merge_rate"] == f"{want['merge_rate']:.0%}"
        if want["cost_per_merged_pr_usd"] is not None:
            assert cells["cost_per_merged_pr_usd"] == f"${want['cost_per_merged_pr_usd']:,.2f}"

    # -- criterion 5: what to alert on, with sane values
    attempts = [a for t in tasks for a in await e2e.store.list_attempts(t.id)]
    for name in ("patchwright_agent_run_seconds", "patchwright_webhook_to_agent_start_seconds",
                 "patchwright_time_to_pr_seconds"):
        buckets = sorted(
            ((float(labels[0][1]), value) for (n, labels), value in metrics.items() if n == f"{name}_bucket"),
        )
        assert buckets and buckets[-1][0] == float("inf")
        assert [v for _, v in buckets] == sorted(v for _, v in buckets), name  # cumulative
        assert metrics[(f"{name}_count", ())] == buckets[-1][1] > 0 and metrics[(f"{name}_sum", ())] >= 0
    assert metrics[("patchwright_agent_run_seconds_count", ())] == len(attempts)
    assert metrics[("patchwright_webhook_to_agent_start_seconds_count", ())] == len(tasks)
    assert metrics[("patchwright_time_to_pr_seconds_count", ())] == 3
    by_kind = {labels: v for (n, labels), v in metrics.items() if n == "patchwright_attempts_total"}
    assert sum(by_kind.values()) == len(attempts)
    assert by_kind[(("kind", "first"), ("outcome", "pushed"))] == 3
    assert metrics[("patchwright_oldest_claimable_task_age_seconds", ())] == 0
    assert metrics[("patchwright_claimable_tasks", ())] == 0
    assert metrics[("patchwright_running_agents", ())] == 0
    assert metrics[("patchwright_worker_slots", ())] == 2
    assert metrics[("patchwright_workers_alive", ())] == 1
    [(worker_labels, seen)] = [(l, v) for (n, l), v in metrics.items() if n == "patchwright_worker_last_seen_seconds"]
    assert worker_labels == (("worker", e2e.pools[0].worker_id),) and 0 <= seen < 30
    installation = str(e2e.installation_id)
    requests: dict[tuple, float] = {}  # summed over the processes' series
    for (n, labels), v in metrics.items():
        if n == "patchwright_github_requests_total":
            key = tuple(pair for pair in labels if pair[0] != "process")
            requests[key] = requests.get(key, 0) + v
    assert requests[(("installation", installation), ("method", "GET"), ("status", "2xx"))] > 0
    assert requests[(("installation", installation), ("method", "POST"), ("status", "2xx"))] > 0
    remaining = metrics[("patchwright_github_rate_limit_remaining", (("installation", installation),))]
    limit = metrics[("patchwright_github_rate_limit_limit", (("installation", installation),))]
    assert 0 < remaining < limit
    assert metrics[("patchwright_tasks", (("status", "merged"),))] == 2
    assert metrics[("process_resident_memory_bytes", ())] > 0 and ("process_cpu_seconds_total", ()) in metrics
    assert any(name == "python_info" for name, _ in metrics)

