"""``/metrics``, ``GET /api/outcomes`` and ``/outcomes`` over HTTP, on both stores: the
store-derived histograms and gauges, worker heartbeats, GitHub usage of this process and of
the workers' reports, and the outcome records agreeing everywhere."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bot.config import Settings
from bot.github.usage import GitHubUsage
from bot.operations.outcomes import DEFINITIONS
from bot.operations.services import offline_services
from bot.store.base import Attempt, Delivery, TaskEvent
from bot.tasks import rules
from bot.tasks.model import RetryKind, Status
from bot.web.routes import add_web_routes

HOSTILE_MODEL = '<b onmouseover="x">m</b>'


def samples_of(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def seed_story(store, now):
    """A merged task created by a delivery (two attempts, the second a CI retry), a pending
    one (claimable), and a running one of another preset with a hostile model name."""
    await store.record_delivery(Delivery(id="d-made", event="issues", action="labeled", repo="o/r",
                                         installation_id=1, payload=b"{}", received_at=now - timedelta(seconds=30)))
    made = []
    for n, (agent, model) in enumerate((("claude", ""), ("claude", ""), ("codex", HOSTILE_MODEL)), 1):
        task = rules.new_task(id=f"task_0{n}", repo="o/r", installation_id=1, issue_number=n, title=f"t{n}",
                              spec="", max_attempts=5, max_cost_usd=10.0, agent=agent, model=model,
                              base_branch="main", now=now)
        stored, _ = await store.create_task(task, event=TaskEvent(
            task_id=task.id, kind="created", reason="labelled", delivery_id="d-made" if n == 1 else "",
            to_status=Status.PENDING))
        made.append(stored)
    merged, _pending, running = made
    for number, kind in ((1, RetryKind.FIRST), (2, RetryKind.CI_FAILURE)):
        await store.start_attempt(Attempt(task_id=merged.id, number=number, kind=kind, started_at=now))
        await store.finish_attempt(merged.id, number, outcome="pushed", cost_usd=0.5)
    for changes, to in (({"status": Status.REVIEW, "pr_number": 4, "cost_usd": 1.0}, Status.REVIEW),
                        ({"status": Status.MERGED}, Status.MERGED)):
        current = await store.get_task(merged.id)
        await store.transition(merged.id, from_statuses=[current.status], changes=changes, event=TaskEvent(
            task_id=merged.id, kind="transition", reason="moved", from_status=current.status, to_status=to,
            changes={k: str(v) if isinstance(v, Status) else v for k, v in changes.items()}))
    await store.start_attempt(Attempt(task_id=running.id, number=1, kind=RetryKind.FIRST, started_at=now))
    await store.transition(running.id, from_statuses=[Status.PENDING], changes={"status": Status.RUNNING})
    await store.report_worker("w-1", {"running": 1, "slots": 2, "github": {
        "process": "worker-proc", "requests": [["1", "GET", "2xx", 3]],
        "rate_limits": {"1": {"remaining": 4000, "limit": 5000, "reset": now.timestamp() + 600, "seen": now.timestamp()}},
    }})
    return made


async def test_metrics_outcomes_api_and_page_agree(store, clock, aiohttp_client):
    now = clock()
    await seed_story(store, now)
    usage = GitHubUsage(process="serve-proc")
    usage.record("1", "POST", 201, {"x-ratelimit-remaining": "3900", "x-ratelimit-limit": "5000",
                                    "x-ratelimit-reset": str(int(now.timestamp()) + 600)}, now.timestamp())
    settings = Settings()
    offline = dataclasses.replace(offline_services(settings, store, clock=clock), github_usage=usage)
    app = web.Application()
    add_web_routes(app, store=store, settings=settings, clock=clock, services=lambda: offline)
    client = await aiohttp_client(app)

    clock.advance(timedelta(seconds=42))  # the scrape comes 42 s after the story: the ages say so
    resp = await client.get("/metrics")
    assert resp.status == 200
    samples = samples_of(await resp.text())
    # histograms: two finished attempts, one webhook-started task (30 s), one PR
    assert samples[("patchwright_agent_run_seconds_count", ())] == 2
    assert samples[("patchwright_webhook_to_agent_start_seconds_count", ())] == 2  # + the running task (CLI-made)
    assert samples[("patchwright_webhook_to_agent_start_seconds_bucket", (("le", "30.0"),))] == 2
    assert samples[("patchwright_webhook_to_agent_start_seconds_bucket", (("le", "10.0"),))] == 1
    assert samples[("patchwright_webhook_to_agent_start_seconds_sum", ())] == 30.0
    assert samples[("patchwright_time_to_pr_seconds_count", ())] == 1
    assert samples[("patchwright_attempts_total", (("kind", "ci_failure"), ("outcome", "pushed")))] == 1
    assert samples[("patchwright_attempts_total", (("kind", "first"), ("outcome", "running")))] == 1
    assert samples[("patchwright_claimable_tasks", ())] == 1
    assert samples[("patchwright_oldest_claimable_task_age_seconds", ())] == 42
    assert samples[("patchwright_workers_alive", ())] == 1 and samples[("patchwright_running_agents", ())] == 1
    assert samples[("patchwright_worker_last_seen_seconds", (("worker", "w-1"),))] == 42
    # GitHub: this process's own usage and the worker's report, summed; the lowest budget
    requests = {dict(labels)["process"]: value for (name, labels), value in samples.items()
                if name == "patchwright_github_requests_total" and dict(labels)["method"] == "GET"}
    assert requests == {"worker-proc": 3}  # a series per process: the worker's report
    posts = {dict(labels)["process"]: v for (n, labels), v in samples.items()
             if n == "patchwright_github_requests_total" and ("method", "POST") in labels}
    assert posts == {"serve-proc": 1}  # and this process's own
    assert samples[("patchwright_github_rate_limit_remaining", (("installation", "1"),))] == 3900
    assert samples[("patchwright_github_rate_limit_limit", (("installation", "1"),))] == 5000
    assert any(name.startswith("process_") for name, _ in samples)  # process metrics

    api = await client.get("/api/outcomes")
    body = await api.json()
    assert api.status == 200 and body["definitions"] == dict(DEFINITIONS) and body["count"] == 2
    claude, codex = body["outcomes"]
    assert (claude["preset"], claude["model"], claude["tasks"], claude["merged"], claude["in_progress"]) == ("claude", "", 2, 1, 1)
    assert claude["merge_rate"] == 1.0 and claude["attempts_per_merged_pr"] == 2.0
    assert claude["cost_per_merged_pr_usd"] == 1.0 and claude["ci_retries_per_task"] == 0.5
    assert (codex["preset"], codex["model"], codex["merge_rate"]) == ("codex", HOSTILE_MODEL, None)
    for record in body["outcomes"]:
        labels = (("model", record["model"]), ("preset", record["preset"]))
        for result in ("merged", "closed", "failed", "in_progress"):
            assert samples[("patchwright_outcome_tasks", (*labels, ("result", result)))] == record[result]
        for key, metric in (("merge_rate", "merge_rate"), ("cost_per_merged_pr_usd", "cost_per_merged_pr_usd"),
                            ("attempts_per_merged_pr", "attempts_per_merged_pr"),
                            ("ci_retries_per_task", "ci_retries_per_task")):
            found = samples.get((f"patchwright_outcome_{metric}", labels))
            assert found == record[key], (key, found, record[key])

    page = await client.get("/outcomes")
    html = await page.text()
    assert page.status == 200 and "<caption>" in html and 'href="/outcomes" class=current' in html
    assert HOSTILE_MODEL not in html and "&lt;b onmouseover=" in html
    row = re.search(r'<tr data-preset="claude" data-model="">(.*?)</tr>', html).group(1)
    cells = dict(re.findall(r'data-field="([a-z_]+)">(.*?)</td>', row))
    assert (cells["tasks"], cells["merged"], cells["merge_rate"], cells["cost_per_merged_pr_usd"]) == ("2", "1", "100%", "$1.00")
    assert 'class="num"' in row


async def test_outcomes_need_the_token_when_reading_is_private(store, make_client, admin_token):
    client = await make_client(store, admin_token=admin_token, private_read_api=True)
    assert (await client.get("/api/outcomes")).status == 401
    assert (await client.get("/outcomes")).status == 401
    ok = await client.get("/api/outcomes", headers={"Authorization": f"Bearer {admin_token}"})
    assert ok.status == 200 and (await ok.json())["outcomes"] == []
    page = await client.get("/outcomes", headers={"Authorization": f"Bearer {admin_token}"})
    assert page.status == 200 and "No tasks yet" in await page.text()
