"""The worker pool (bot/worker/pool.py): stop within seconds, stale take-back after a SIGKILL,
graceful shutdown (issue 5, acceptance criterion 6)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from bot.operations.decisions import TaskService
from bot.operations.status import StatusReporter
from bot.tasks import rules
from bot.tasks.model import RetryKind, Status, Task
from bot.tasks.branches import wip_branch
from bot.worker.pool import stop_reason_for
from bot.worker.runner import StopReason

pytestmark = pytest.mark.slow


HANGING = {
    "first": [
        {"write": {"src/app.py": "def greet(name):\n    return 'work in progress'\n"}},
        {"touch": "{out}/running"},
        {"ignore_sigterm": True},
        {"hang": None},
    ]
}


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status.lower()


def kill_group(pid: int) -> None:
    """End a process group left behind (the agent of a worker killed with SIGKILL)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# -- pure ------------------------------------------------------------------------------------


def test_stop_reason_for_the_task_as_stored_now() -> None:
    ours = Task(
        id="t",
        repo="o/r",
        installation_id=1,
        issue_number=1,
        title="x",
        status=Status.RUNNING,
        attempt=2,
        worker_id="w1",
    )
    assert stop_reason_for(ours, worker_id="w1", attempt=2) is None
    assert stop_reason_for(None, worker_id="w1", attempt=2) is StopReason.LEFT_RUNNING
    assert (
        stop_reason_for(ours.replace(status=Status.PAUSED, attempt=3), worker_id="w1", attempt=2)
        is StopReason.LEFT_RUNNING
    )
    assert stop_reason_for(ours.replace(worker_id="w2"), worker_id="w1", attempt=2) is StopReason.LOST
    # Taken back from this worker: rules.worker_lost leaves the lost worker's id on the
    # pending task; the reason's wording plays no part.
    lost = ours.replace(status=Status.PENDING, attempt=3, retry_reason="any words")
    assert stop_reason_for(lost, worker_id="w1", attempt=2) is StopReason.LOST
    retried = ours.replace(status=Status.PENDING, attempt=3, worker_id=None, retry_reason=rules.WORKER_LOST)
    assert stop_reason_for(retried, worker_id="w1", attempt=2) is StopReason.LEFT_RUNNING
    restarted = ours.replace(status=Status.PENDING, attempt=1)
    assert stop_reason_for(restarted, worker_id="w1", attempt=2) is StopReason.LEFT_RUNNING


# -- stop --------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["same process", "other process"])
async def test_stop_ends_the_agent_within_five_seconds_and_salvages_its_work(e2e, where: str) -> None:
    repo = await e2e.add_repo("demo", script=HANGING)
    issue = await e2e.open_issue(repo, "Long work")
    task = await e2e.create_task(repo, issue)
    # Production intervals for the status read and the kill grace: the worst case counts.
    await e2e.start_pool(status_interval=1.0, kill_grace=3.0)
    await e2e.wait_until(lambda: (e2e.agent_out / "running").exists(), what="the agent runs")
    pid = e2e.agent_run(1)["pid"]
    assert alive(pid)

    running = await e2e.store.get_task(task.id)
    assert running is not None and running.status is Status.RUNNING
    decision = rules.stop(running, now=e2e.services.clock(), author="alice")
    if where == "same process":
        service = e2e.services.tasks  # its STOP_AGENT hook reaches the pool at once
    else:
        # Another process (a `serve` next to this `worker`): no hook, only the shared store.
        service = TaskService(
            e2e.store,
            StatusReporter(e2e.store, mention="@patchwright", bot_login="patchwright[bot]"),
            mention="@patchwright",
        )
    started = time.monotonic()
    assert await service.apply(decision, gh=None, actor="alice") is not None
    await e2e.wait_until(lambda: not alive(pid), timeout=10, what="the agent ended")
    elapsed = time.monotonic() - started
    assert elapsed < 5.0, elapsed

    attempt = await wait_attempt_finished(e2e, task.id, 1)
    assert attempt.outcome == "salvaged"
    paused = await e2e.store.get_task(task.id)
    assert paused.status is Status.PAUSED and paused.attempt == 2
    wip = wip_branch(task.id, 1)
    assert "work in progress" in await e2e.read(repo, wip, "src/app.py")
    shown = wip.replace("_", "\\_")  # as the status comment escapes it

    def status_names_wip() -> bool:
        return any("patchwright:status" in c and shown in c for c in e2e.comments(repo, issue))

    await e2e.wait_until(status_names_wip, timeout=5, what="the status comment names the wip branch")


async def wait_attempt_finished(e2e, task_id: str, number: int, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for attempt in await e2e.store.list_attempts(task_id):
            if attempt.number == number and attempt.outcome:
                return attempt
        await asyncio.sleep(0.05)
    raise AssertionError(f"attempt {number} of {task_id} did not finish")


async def test_graceful_shutdown_salvages_and_hands_the_task_back(e2e) -> None:
    repo = await e2e.add_repo("demo", script=HANGING)
    issue = await e2e.open_issue(repo, "Long work")
    task = await e2e.create_task(repo, issue)
    pool = await e2e.start_pool(kill_grace=0.5)
    await e2e.wait_until(lambda: (e2e.agent_out / "running").exists(), what="the agent runs")
    pid = e2e.agent_run(1)["pid"]
    await pool.stop()
    assert not alive(pid) and pool.running == {}
    handed_back = await e2e.store.get_task(task.id)
    assert handed_back.status is Status.PENDING and handed_back.attempt == 2
    assert handed_back.retry_kind is RetryKind.FIRST and "the worker shut down" in handed_back.retry_reason
    assert handed_back.not_before is not None
    [attempt] = await e2e.store.list_attempts(task.id)
    assert attempt.outcome == "salvaged"
    assert "work in progress" in await e2e.read(repo, wip_branch(task.id, 1), "src/app.py")


# -- a worker killed with SIGKILL ----------------------------------------------------------------

WORKER_SCRIPT = """
import asyncio, json, sys
from bot.config import Settings
from bot.store.factory import open_store
from bot.runtime import run_worker

config = json.load(sys.stdin)

async def main():
    store = await open_store(config["database_url"])
    try:
        await run_worker(Settings(**config["settings"]), store, environ=config["environ"], sandbox="none")
    finally:
        await store.close()

asyncio.run(main())
"""


async def test_a_task_of_a_worker_killed_with_sigkill_is_taken_back_as_transient(e2e, tmp_path: Path) -> None:
    repo = await e2e.add_repo("demo", script=HANGING)
    issue = await e2e.open_issue(repo, "Long work")
    task = await e2e.create_task(repo, issue)
    settings = e2e.settings
    config = {
        "database_url": settings.database_url,
        "environ": {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        "settings": {
            "app_id": settings.app_id,
            "private_key": settings.private_key.get_secret_value(),
            "app_slug": settings.app_slug,
            "github_url": settings.github_url,
            "database_url": settings.database_url,
            "data_dir": str(tmp_path / "other-worker"),
            "workers": 1,
            "agent": settings.agent,
            "agent_command": settings.agent_command,
        },
    }
    errors = (tmp_path / "worker.err").open("wb")
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WORKER_SCRIPT, stdin=asyncio.subprocess.PIPE, stdout=errors, stderr=errors
    )
    agent_pid = None
    try:
        worker.stdin.write(json.dumps(config).encode())
        worker.stdin.close()
        deadline = time.monotonic() + 30
        while not (e2e.agent_out / "running").exists():
            if worker.returncode is not None or time.monotonic() > deadline:
                errors.flush()
                raise AssertionError(
                    "the other worker did not run the agent:\n"
                    + (tmp_path / "worker.err").read_text()[-3000:]
                )
            await asyncio.sleep(0.05)
        agent_pid = e2e.agent_run(1)["pid"]
        claimed = await e2e.store.get_task(task.id)
        assert claimed.status is Status.RUNNING and claimed.worker_id
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
        errors.close()
        if agent_pid is not None:
            kill_group(agent_pid)  # no bwrap here: nothing else ends the orphaned agent

    still = await e2e.store.get_task(task.id)
    assert still.status is Status.RUNNING  # nobody knows yet
    await e2e.start_pool(stale_after=1.5, stale_check_interval=0.2)
    taken = await e2e.wait_for(task.id, lambda t: t.status is not Status.RUNNING, timeout=15)
    assert (
        taken.status is Status.PENDING and taken.attempt == 2 and taken.max_attempts == task.max_attempts + 1
    )
    assert taken.transient_retries == 1 and taken.not_before is not None
    assert taken.retry_reason.startswith(rules.WORKER_LOST)
    assert taken.worker_id == claimed.worker_id  # the worker it was taken from, until the next claim
    [attempt] = await e2e.store.list_attempts(task.id)
    assert attempt.outcome == "failed" and rules.WORKER_LOST in attempt.error
    events = [e.reason for e in await e2e.store.list_events(task.id)]
    assert any(rules.WORKER_LOST in reason for reason in events)
