"""Fixtures for the web surface: a store seeded with tasks and deliveries, and a client factory."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.config import Settings
from bot.store.base import Attempt, Delivery, DeliveryState, Store, TaskEvent
from bot.tasks import rules
from bot.tasks.model import RetryKind, Status, Task
from bot.web.routes import WebOptions, add_web_routes

ADMIN_TOKEN = "adm-3f9c1e5b7d2a-token"
HOSTILE_TITLE = '<script>alert("pwn")</script> & "quotes"'
HOSTILE_LOG = "<img src=x onerror=alert(1)> done"
SESSION_HANDLE = "sess-SECRET-handle-42"


@dataclass(frozen=True)
class Seeded:
    """What :func:`seed` stored (tests get it through the ``seeder`` fixture)."""

    failed: Task
    pending: Task
    hostile: Task
    hostile_title: str = HOSTILE_TITLE
    hostile_log: str = HOSTILE_LOG
    session_handle: str = SESSION_HANDLE


def make_task(task_id: str, repo: str, issue: int, title: str, now: datetime) -> Task:
    return rules.new_task(
        id=task_id, repo=repo, installation_id=1, issue_number=issue, title=title, spec=f"spec of {title}",
        max_attempts=5, max_cost_usd=10.0, agent="command", model="m1", base_branch="main", now=now,
    )


async def move(store: Store, task: Task, **changes: Any) -> Task:
    new = await store.transition(
        task.id, from_statuses=[task.status], changes=changes,
        event=TaskEvent(task_id=task.id, kind="transition", reason=f"test moved to {changes.get('status')}",
                        actor="test", delivery_id="d-1", from_status=task.status,
                        to_status=changes.get("status", task.status)),
    )
    assert new is not None
    return new


async def seed(store: Store, now: datetime) -> Seeded:
    """Three tasks (failed with two attempts and logs, pending, review with a hostile title)
    and three deliveries (done with an ignore reason, pending, failed)."""
    failed, _ = await store.create_task(make_task("task_01failed", "octo/widgets", 7, "Fix the flaky parser", now))
    for n, outcome in ((1, "pushed"), (2, "failed")):
        await store.start_attempt(
            Attempt(task_id=failed.id, number=n, kind=RetryKind.FIRST if n == 1 else RetryKind.CI_FAILURE,
                    started_at=now, head_before=f"{n}" * 40)
        )
        await store.append_logs(failed.id, n, [f"attempt {n} line 1", f"attempt {n} line 2"])
        await store.finish_attempt(failed.id, n, outcome=outcome, cost_usd=0.5 * n, summary=f"summary {n}",
                                   head_after="f" * 40 if n == 1 else "", error="tests failed" if n == 2 else "")
    failed = await move(store, failed, status=Status.FAILED, attempt=2, cost_usd=1.5, pr_number=12,
                        pr_url="https://github.com/octo/widgets/pull/12", retry_reason="Circuit breaker",
                        agent_session=SESSION_HANDLE)
    pending, _ = await store.create_task(make_task("task_02pending", "octo/widgets", 8, "Add a CLI flag", now))
    hostile, _ = await store.create_task(make_task("task_03hostile", "evil/repo", 1, HOSTILE_TITLE, now))
    await store.start_attempt(Attempt(task_id=hostile.id, number=1, kind=RetryKind.FIRST, started_at=now))
    await store.append_logs(hostile.id, 1, [HOSTILE_LOG])
    hostile = await move(store, hostile, status=Status.REVIEW, pr_number=3, pr_url="javascript:alert(1)",
                         agent_session=SESSION_HANDLE)
    for delivery_id, repo, state, reason in (
        ("d-1", "octo/widgets", DeliveryState.DONE, "not permitted: sender has read access"),
        ("d-2", "octo/widgets", None, ""),
        ("d-3", "evil/repo", DeliveryState.FAILED, ""),
    ):
        await store.record_delivery(
            Delivery(id=delivery_id, event="issues", action="labeled", repo=repo, installation_id=1,
                     payload=json.dumps({"action": "labeled", "token": "ghs_payloadsecret"}).encode(),
                     received_at=now - timedelta(minutes=5))
        )
        if state is not None:
            await store.finish_delivery(delivery_id, state=state, outcome="handled" if reason == "" else "ignored",
                                        ignore_reason=reason)
    return Seeded(failed=failed, pending=pending, hostile=hostile)


Seeder = Callable[[Store, datetime], Awaitable[Seeded]]


@pytest.fixture
def seeder() -> Seeder:
    """``await seeder(store, now)``: store the sample tasks and deliveries."""
    return seed


@pytest.fixture
def admin_token() -> str:
    return ADMIN_TOKEN


MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_client(aiohttp_client) -> MakeClient:
    """``await make_client(store, options=…, clock=…, **settings)``: a test client of an app
    with only the web routes."""

    async def make(store: Store, *, options: WebOptions | None = None,
                   clock: Callable[[], datetime] | None = None, **settings: Any) -> TestClient:
        app = web.Application()
        kwargs: dict[str, Any] = {"options": options}
        if clock is not None:
            kwargs["clock"] = clock
        add_web_routes(app, store=store, settings=Settings(**settings), **kwargs)
        return await aiohttp_client(app)

    return make
