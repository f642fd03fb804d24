"""A bot (webhook server + dispatcher + handlers, no workers) wired to the local GitHub
emulator over real HTTP in both directions, on a real SQLite store."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.app import RUNTIME_KEY, create_app
from bot.runtime import Runtime, start_runtime
from bot.config import load_settings
from bot.sandbox.emulator import Emulator
from bot.store.base import DeliveryState, Store
from bot.store.factory import open_store
from bot.tasks.model import Status, Task

SECRET = "handler-e2e-secret"
REPO = "octo-org/widget"
FILES = {
    "README.md": "# widget\n",
    "widget.py": "def size():\n    return 1\n",
    "test_widget.py": "from widget import size\n\ndef test_size():\n    assert size() == 2\n",
}


@dataclass
class Harness:
    emulator: Emulator
    store: Store
    runtime: Runtime
    app_id: int
    installation_id: int
    repo: str = REPO

    @property
    def bot_login(self) -> str:
        return self.runtime.services.bot_login

    async def settle(self, timeout: float = 60.0) -> None:
        """Wait until the emulator sent everything and the dispatcher processed it all."""
        quiet = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        busy: list = []
        while loop.time() < deadline:
            await self.emulator.idle()
            busy = [
                d for d in await self.store.list_deliveries(limit=10_000)
                if d.state in (DeliveryState.PENDING, DeliveryState.PROCESSING)
            ]
            if busy:
                self.runtime.dispatcher.wake()
                quiet = 0
            else:
                quiet += 1
                if quiet >= 3:
                    return
            await asyncio.sleep(0.02)
        raise AssertionError(f"deliveries did not settle: {[(d.event, d.action, d.state.value) for d in busy]}")

    async def task(self, issue: int) -> Task | None:
        return await self.store.get_task_by_issue(self.repo, issue)

    async def deliveries(self, event: str, action: str | None = None):
        return [
            d for d in await self.store.list_deliveries(limit=10_000)
            if d.event == event and (action is None or d.action == action)
        ]

    async def state(self) -> dict[str, Any]:
        return (await self.emulator.state_snapshot())[self.repo]

    async def issue_state(self, number: int) -> dict[str, Any]:
        state = await self.state()
        return next(i for i in state["issues"] + state["pull_requests"] if i["number"] == number)

    async def bot_pushed(self, issue: int, *, files: dict[str, str], branch: str | None = None) -> Task:
        """Play the worker's part: push a branch as the bot, open the PR, move the task to review."""
        task = await self.task(issue)
        assert task is not None
        branch = branch or f"patchwright/{issue}-work"
        sha = await self.emulator.push_commit(
            self.repo, branch=branch, files=files, message="patchwright: attempt", user=self.bot_login
        )
        sha = sha["sha"] if isinstance(sha, dict) else sha
        pr = await self.emulator.open_pull(
            self.repo, head=branch, title=task.title, body=f"Closes #{issue}", user=self.bot_login
        )
        moved = await self.store.transition(
            task.id,
            from_statuses=[Status.PENDING, Status.RUNNING],
            changes={
                "status": Status.REVIEW,
                "head_sha": sha,
                "branch": branch,
                "pr_number": pr["number"],
                "pr_url": pr["html_url"],
            },
        )
        assert moved is not None
        return moved


FAULTS = {"error_rate": 0.2, "secondary_rate_limit_rate": 0.05, "retry_after": 1}


async def quick_sleep(seconds: float) -> None:
    """Backoff and retry-after waits, shortened so the fault tests stay fast."""
    await asyncio.sleep(min(seconds, 0.01))


@pytest.fixture(params=["clean", "faults"])
def network(request) -> str:
    """Every end-to-end handler test runs on a clean emulator and on one that answers 20 % of
    REST calls with 5xx and some with secondary rate limits (seeded, reproducible)."""
    return request.param


@pytest.fixture
async def harness(tmp_path: Path, aiohttp_server, request, network) -> AsyncIterator[Harness]:
    options = getattr(request, "param", None) or {}
    emulator = Emulator(tmp_path / "github", mergeable_null_reads=options.get("mergeable_null_reads", 0))
    await emulator.start()
    store = await open_store(f"sqlite:///{tmp_path / 'bot.db'}")
    await store.migrate()
    try:
        app_info = await emulator.create_app("patchwright", slug="patchwright", webhook_secret=SECRET)
        await emulator.create_repo("octo-org", "widget", files=FILES)
        installation = await emulator.create_installation(app_info["id"], "octo-org", [REPO])
        emulator.create_user("maintainer", repo=REPO, permission="write")
        emulator.create_user("reader", repo=REPO, permission="read")
        settings = load_settings(
            {
                "PATCHWRIGHT_APP_ID": str(app_info["id"]),
                "PATCHWRIGHT_PRIVATE_KEY": app_info["private_key"],
                "PATCHWRIGHT_WEBHOOK_SECRET": SECRET,
                "PATCHWRIGHT_GITHUB_URL": emulator.base_url,
                "PATCHWRIGHT_DATA_DIR": str(tmp_path / "data"),
                "PATCHWRIGHT_WORKERS": "0",
            },
            env_file=None,
        )
        runtime_factory = functools.partial(
            start_runtime,
            with_workers=False,
            reconcile=False,
            github_options={"sleep": quick_sleep},
            dispatcher_options={"retry_delays": (0.05, 0.1, 0.2)},
        )
        app = create_app(settings, store=store, runtime=lambda s, st: runtime_factory(s, st))
        server = await aiohttp_server(app)
        emulator.update_app(app_info["id"], webhook_url=str(server.make_url("/webhook")))
        if network == "faults":
            emulator.faults.configure(FAULTS, seed=7)
        harness = Harness(
            emulator=emulator,
            store=store,
            runtime=app[RUNTIME_KEY],
            app_id=app_info["id"],
            installation_id=installation["id"],
        )
        yield harness
        await server.close()
    finally:
        await emulator.stop()
        await store.close()
    assert not emulator.violations(), [v.as_dict() for v in emulator.violations()]
    if network == "faults" and len(emulator.requests()) >= 30:
        # The faults really happened (and the test above still saw the clean outcome).
        assert emulator.faults.injected["server_error"] > 0
