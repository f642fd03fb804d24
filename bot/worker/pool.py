"""The worker pool (SPEC §6.1): claim pending tasks, supervise each running attempt, take back
tasks whose worker died, and shut down gracefully.

- **Claim**: up to ``workers`` attempts at a time; the store hands out the oldest claimable
  task (backoff passed, the repository below its ``max_concurrent_tasks``). Idle workers sleep
  on the store's wake-up (``notify_pending``: in process for SQLite, LISTEN/NOTIFY for
  PostgreSQL) with a timeout, so a task whose backoff ends is claimed without a wake-up too.
- **Supervise**: per running attempt, a heartbeat every ``heartbeat_interval`` (15 s) and a
  cheap status read every ``status_interval`` (1 s); a task that is no longer running for
  this worker (stopped, closed, taken back) has its agent stopped at once. In the same process
  the services' ``agent_stops`` reach the agent without waiting for the next read.
- **Take back**: a running task whose heartbeat is older than ``stale_after`` (120 s) belongs
  to a dead worker: any pool moves it back to pending as a ``transient`` retry (not the task's
  fault). The conditional update makes that safe with any number of pools.
- **Report**: every ``heartbeat_interval`` the pool records itself in the store
  (``report_worker``: running agents, slots, attempts started, this process's GitHub usage),
  which ``/metrics`` shows as worker heartbeats; workers not seen for :data:`FORGET_WORKERS_AFTER`
  are dropped (checked hourly).
- **Shutdown**: ``stop()`` stops claiming, stops every running agent (their work is salvaged
  and the tasks go back to pending), and waits for the attempts to wrap up.

``start_worker_pool`` is what ``patchwright serve`` embeds and ``patchwright worker`` runs
alone (both wired by :mod:`bot.runtime`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import gidgethub

from bot.agents.sandbox import BwrapProbe
from bot.config import RepoConfig
from bot.github.usage import GitHubUsage
from bot.operations.services import Services
from bot.store.base import Store, StoreError
from bot.tasks import rules
from bot.tasks.model import Status, Task
from bot.worker.git import Workspaces
from bot.worker.runner import (
    AttemptControl,
    AttemptRunner,
    RunnerOptions,
    StopReason,
    TokenSource,
)

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_S = 15.0
DEFAULT_STATUS_S = 1.0
DEFAULT_STALE_S = 120.0
DEFAULT_IDLE_WAIT_S = 5.0
DEFAULT_SHUTDOWN_GRACE_S = 60.0
#: A worker not seen for this long is dropped from the store's worker reports.
FORGET_WORKERS_AFTER = timedelta(days=1)
FORGET_CHECK_S = 3600.0


def new_worker_id() -> str:
    """``<host>-<pid>-<random>``: unique per pool, readable in the audit trail."""
    host = socket.gethostname().split(".")[0] or "worker"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def bot_commit_identity(app_slug: str) -> tuple[str, str]:
    """The bot's commit identity without its user id (the REST subset has no user lookup):
    ``<slug>[bot]`` with the id-less noreply address GitHub also attributes to that login."""
    login = f"{app_slug}[bot]"
    return login, f"{login}@users.noreply.github.com"


def stop_reason_for(task: Task | None, *, worker_id: str, attempt: int) -> StopReason | None:
    """Why the attempt must stop given the task as stored now, or None while it is ours. Pure."""
    if task is None:
        return StopReason.LEFT_RUNNING
    if task.status is Status.RUNNING and task.worker_id == worker_id and task.attempt == attempt:
        return None
    if task.status is Status.RUNNING or (
        task.status is Status.PENDING
        and task.attempt == attempt + 1
        and task.worker_id == worker_id  # taken back from us (rules.worker_lost keeps it)
    ):
        return StopReason.LOST
    return StopReason.LEFT_RUNNING


@dataclass
class _Slot:
    task: Task
    control: AttemptControl
    job: asyncio.Task[Any]


class WorkerPool:
    """Runs up to ``workers`` attempts at a time for one process."""

    def __init__(
        self,
        services: Services,
        *,
        github: TokenSource,
        workers: int | None = None,
        worker_id: str | None = None,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_S,
        status_interval: float = DEFAULT_STATUS_S,
        stale_after: float = DEFAULT_STALE_S,
        stale_check_interval: float | None = None,
        idle_wait: float = DEFAULT_IDLE_WAIT_S,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE_S,
        options: RunnerOptions | None = None,
        workspaces: Workspaces | None = None,
        bwrap: BwrapProbe | None = None,
        github_usage: GitHubUsage | None = None,
    ) -> None:
        settings = services.settings
        self.services = services
        self.store: Store = services.store
        self.workers = settings.workers if workers is None else workers
        if self.workers < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.worker_id = worker_id or new_worker_id()
        self.heartbeat_interval = heartbeat_interval
        self.status_interval = status_interval
        self.stale_after = stale_after
        self.stale_check_interval = stale_check_interval or min(30.0, max(0.5, stale_after / 4))
        self.idle_wait = idle_wait
        self.shutdown_grace = shutdown_grace
        self.workspaces = workspaces or Workspaces(
            Path(settings.data_dir).resolve(), identity=bot_commit_identity(services.app_slug)
        )
        self.runner = AttemptRunner(
            services,
            github=github,
            workspaces=self.workspaces,
            worker_id=self.worker_id,
            options=options,
            bwrap=bwrap,
            on_repo_config=self._remember_limit,
        )
        self._slots: dict[str, _Slot] = {}
        self._repo_limits: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self.claimed = 0  # attempts started (for tests and metrics)
        self.github_usage = github_usage or services.github_usage
        self._forgot_at: float | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> Callable[[], Awaitable[None]]:
        """Start claiming and taking back; returns :meth:`stop`."""
        self._stopping = False
        self._unsubscribe = self.services.agent_stops.subscribe(self.request_stop)
        self._loops = [
            asyncio.create_task(self._claim_loop(), name=f"worker-claim {self.worker_id}"),
            asyncio.create_task(self._stale_loop(), name=f"worker-takeback {self.worker_id}"),
            asyncio.create_task(self._report_loop(), name=f"worker-report {self.worker_id}"),
        ]
        log.info("worker pool %s started with %d worker(s)", self.worker_id, self.workers)
        await asyncio.to_thread(self.runner.report_sandbox)
        return self.stop

    async def stop(self) -> None:
        """Stop claiming; stop the running agents (work salvaged, tasks handed back) and wait
        up to ``shutdown_grace`` seconds for their attempts to wrap up, then cancel them."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        slots = list(self._slots.values())
        for slot in slots:
            slot.control.stop(StopReason.SHUTDOWN)
        if slots:
            _, pending = await asyncio.wait([s.job for s in slots], timeout=self.shutdown_grace)
            for job in pending:
                job.cancel()
            await asyncio.gather(*(s.job for s in slots), return_exceptions=True)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        log.info("worker pool %s stopped", self.worker_id)

    def request_stop(self, task_id: str) -> None:
        """The in-process STOP_AGENT hook: stop that task's agent now, if it runs here."""
        slot = self._slots.get(task_id)
        if slot is not None:
            slot.control.stop(StopReason.LEFT_RUNNING)

    @property
    def running(self) -> dict[str, int]:
        """Task id -> attempt number of the attempts running here."""
        return {task_id: slot.task.attempt for task_id, slot in self._slots.items()}

    def wake(self) -> None:
        """Look for work now (e.g. after creating a task in this process)."""
        self._wake.set()

    # -- claiming -------------------------------------------------------------------------

    def _remember_limit(self, repo: str, config: RepoConfig) -> None:
        self._repo_limits[repo] = config.max_concurrent_tasks

    async def claim_one(self) -> Task | None:
        """Claim one task and start its attempt, if a worker is free and one is claimable."""
        if self._stopping or len(self._slots) >= self.workers:
            return None
        task = await self.store.claim_task(
            self.worker_id,
            max_running_per_repo=RepoConfig().max_concurrent_tasks,
            repo_limits=dict(self._repo_limits),
        )
        if task is None:
            return None
        self.claimed += 1
        control = AttemptControl()
        job = asyncio.create_task(self._work(task, control), name=f"attempt {task.id}#{task.attempt}")
        self._slots[task.id] = _Slot(task, control, job)
        return task

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            claimed = None
            if len(self._slots) < self.workers:
                try:
                    claimed = await self.claim_one()
                except (StoreError, OSError) as exc:
                    log.warning("claiming failed: %s", exc)
                except Exception:
                    log.exception("claiming failed")
            if claimed is not None:
                continue
            await self._idle()

    async def _idle(self) -> None:
        """Sleep until a task may be claimable, a worker frees up, or ``idle_wait`` passes."""
        woken = asyncio.ensure_future(self._wake.wait())
        waits = [woken]
        if len(self._slots) < self.workers:
            waits.append(asyncio.ensure_future(self.store.wait_for_pending(self.idle_wait)))
        try:
            await asyncio.wait(waits, timeout=self.idle_wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                if not waiter.done():
                    waiter.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _work(self, task: Task, control: AttemptControl) -> None:
        lease = asyncio.create_task(self._supervise(task, control), name=f"lease {task.id}")
        try:
            outcome = await self.runner.run(task, control)
            log.info("attempt %s of %s ended: %s", task.attempt, task.id, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("attempt %s of %s crashed", task.attempt, task.id)
        finally:
            lease.cancel()
            await asyncio.gather(lease, return_exceptions=True)
            self._slots.pop(task.id, None)
            self._wake.set()

    # -- supervision ----------------------------------------------------------------------

    async def _supervise(self, task: Task, control: AttemptControl) -> None:
        """Heartbeat and status checks for one running attempt, until it ends."""
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.heartbeat_interval
        while True:
            await asyncio.sleep(min(self.status_interval, max(0.0, next_beat - loop.time())))
            try:
                if loop.time() >= next_beat:
                    next_beat = loop.time() + self.heartbeat_interval
                    if not await self.store.heartbeat(task.id, self.worker_id):
                        fresh = await self.store.get_task(task.id)
                        reason = stop_reason_for(fresh, worker_id=self.worker_id, attempt=task.attempt)
                        control.stop(reason or StopReason.LOST)
                        continue
                if control.reason is None:
                    fresh = await self.store.get_task(task.id)
                    reason = stop_reason_for(fresh, worker_id=self.worker_id, attempt=task.attempt)
                    if reason is not None:
                        log.info(
                            "task %s is no longer running here (%s): stopping its agent", task.id, reason
                        )
                        control.stop(reason)
            except (StoreError, OSError) as exc:
                log.warning("supervising %s: %s", task.id, exc)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("supervising %s failed", task.id)

    # -- reporting ------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """What this pool reports of itself (JSON-able)."""
        stats: dict[str, Any] = {"running": len(self._slots), "slots": self.workers, "claimed": self.claimed}
        if self.github_usage is not None:
            stats["github"] = self.github_usage.snapshot()
        return stats

    async def report_once(self) -> None:
        """Record this worker in the store now; hourly, drop workers long unseen."""
        await self.store.report_worker(self.worker_id, self.report())
        now = asyncio.get_running_loop().time()
        if self._forgot_at is None or now - self._forgot_at >= FORGET_CHECK_S:
            self._forgot_at = now
            await self.store.forget_workers(self.services.clock() - FORGET_WORKERS_AFTER)

    async def _report_loop(self) -> None:
        while not self._stopping:
            try:
                await self.report_once()
            except asyncio.CancelledError:
                raise
            except (StoreError, OSError) as exc:
                log.warning("reporting worker %s: %s", self.worker_id, exc)
            except Exception:
                log.exception("reporting worker %s failed", self.worker_id)
            await asyncio.sleep(self.heartbeat_interval)

    # -- taking back tasks of dead workers ------------------------------------------------

    async def _stale_loop(self) -> None:
        while not self._stopping:
            try:
                await self.take_back_stale()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("taking back stale tasks failed")
            await asyncio.sleep(self.stale_check_interval)

    async def take_back_stale(self) -> list[Task]:
        """Move running tasks without a recent heartbeat back to pending (``transient``).
        Returns the tasks taken back by this call."""
        taken: list[Task] = []
        for task in await self.store.list_stale_running(timedelta(seconds=self.stale_after)):
            if task.id in self._slots:
                continue  # ours: its heartbeat is late, not lost
            new = await self._take_back(task)
            if new is not None:
                taken.append(new)
        return taken

    async def _take_back(self, task: Task) -> Task | None:
        attempt = task.attempt
        for row in await self.store.list_attempts(task.id):
            if row.number == attempt and not row.outcome:
                await self.store.finish_attempt(
                    task.id, attempt, outcome="failed", error=rules.WORKER_LOST + "."
                )
        gh = self.services.github_for(task.installation_id)

        def rule(fresh: Task) -> rules.Decision:
            return rules.worker_lost(fresh, now=self.services.clock(), attempt=attempt)

        try:
            _, new = await self.services.tasks.decide(task, rule, gh=gh, actor=f"worker:{self.worker_id}")
        except gidgethub.GitHubException as exc:
            log.warning("taking back %s: %s", task.id, exc)
            return None
        if new is not None:
            log.warning("took back task %s from worker %s (no heartbeat)", task.id, task.worker_id or "?")
        return new


async def start_worker_pool(
    services: Services,
    *,
    github: TokenSource,
    environ: Mapping[str, str] | None = None,
    sandbox: str = "auto",
    **pool_options: Any,
) -> Callable[[], Awaitable[None]]:
    """Start a pool of ``PATCHWRIGHT_WORKERS`` workers; returns its async ``stop``.

    ``environ`` is the environment agents may draw PATH and provider keys from (handed down
    from ``__main__``; never read here); ``sandbox`` is ``auto`` (bubblewrap when it works),
    ``bwrap`` or ``none``. Other keyword arguments go to :class:`WorkerPool`.
    """
    runner_options = pool_options.pop("options", None) or RunnerOptions(
        environ=dict(environ or {}), sandbox=sandbox
    )
    pool = WorkerPool(services, github=github, options=runner_options, **pool_options)
    return await pool.start()


__all__ = [
    "WorkerPool",
    "bot_commit_identity",
    "new_worker_id",
    "start_worker_pool",
    "stop_reason_for",
]
