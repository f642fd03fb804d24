"""The store protocol: everything patchwright persists, behind one async interface.

Two backends implement it (:mod:`bot.store.sqlite`, :mod:`bot.store.postgres`); which one is
chosen by ``PATCHWRIGHT_DATABASE_URL`` (see :func:`bot.store.open_store`). Every task
transition is one conditional UPDATE that reports whether it won; ledger rows and pending
tasks are claimed so that any number of processes never take the same row twice.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from bot.tasks.model import RetryKind, Status, Task


class DeliveryState(str, enum.Enum):
    PENDING = "pending"  # recorded, not yet dispatched
    PROCESSING = "processing"  # claimed by a dispatcher
    DONE = "done"  # every handler ran (outcome says what happened)
    FAILED = "failed"  # a handler raised; error recorded in outcome

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook delivery in the ledger."""

    id: str  # X-GitHub-Delivery
    event: str  # X-GitHub-Event
    action: str
    repo: str  # "owner/name" or "" (e.g. installation events)
    installation_id: int | None
    payload: bytes  # the raw request body, exactly as received
    received_at: datetime
    seq: int = 0  # insertion order, assigned by the store
    state: DeliveryState = DeliveryState.PENDING
    outcome: str = ""
    ignore_reason: str = ""
    claimed_by: str = ""
    claimed_at: datetime | None = None
    processed_at: datetime | None = None
    attempts: int = 0
    #: When the retention pruner dropped the payload (then ``payload`` is empty); None: kept.
    payload_pruned_at: datetime | None = None
    #: The login of the account that caused the event (the payload's ``sender.login``, read
    #: once at the ingress); "" when the payload names none. GitHub Apps' logins end "[bot]".
    sender: str = ""

    @property
    def payload_pruned(self) -> bool:
        """Whether the payload was dropped by the ledger's retention (it cannot be replayed)."""
        return self.payload_pruned_at is not None

    @property
    def verdict(self) -> DeliveryVerdict:
        """What became of the delivery, in one word (see :class:`DeliveryVerdict`)."""
        if self.state is DeliveryState.FAILED:
            return DeliveryVerdict.FAILED
        if self.state is not DeliveryState.DONE:
            return DeliveryVerdict.WAITING
        return DeliveryVerdict.IGNORED if self.ignore_reason else DeliveryVerdict.ACTED

    @property
    def from_bot(self) -> bool:
        """Whether a bot account (a GitHub App, ours included) sent it: its echoes of the
        bot's own comments and check runs, folded away on the deliveries page by default."""
        return self.sender.endswith("[bot]")


class DeliveryVerdict(str, enum.Enum):
    """What became of a delivery: a handler acted on it, every handler ignored it, a handler
    failed, or it is still waiting to be (or being) processed."""

    ACTED = "acted"
    IGNORED = "ignored"
    FAILED = "failed"
    WAITING = "waiting"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class TaskCursor:
    """A position in :meth:`Store.list_tasks`' order (``created_at`` then ``id``, newest
    first): the page after it starts with the next older task. Tasks created later sort
    before it, so paging on while tasks are added never repeats or skips a row."""

    created_at: datetime
    id: str


@dataclass(frozen=True, slots=True)
class LogBatch:
    """One batch of an attempt's log lines as the worker appended it (:meth:`Store.append_logs`)."""

    seq: int  # increasing across all batches of the store: a follower asks for seq > the last seen
    attempt: int
    at: datetime  # when the batch was stored (its lines' timestamp)
    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A worker process as it last reported itself (:meth:`Store.report_worker`)."""

    worker_id: str
    started_at: datetime  # the first report
    seen_at: datetime  # the latest report
    stats: Mapping[str, Any]  # what the process reports: running agents, GitHub requests, …


@dataclass(frozen=True, slots=True)
class PruneResult:
    """One batch of :meth:`Store.prune_delivery_payloads`."""

    pruned: int  # rows whose payload this batch dropped
    more: bool  # whether rows the same call would prune remain


@dataclass(frozen=True, slots=True)
class Attempt:
    task_id: str
    number: int
    kind: RetryKind
    started_at: datetime
    finished_at: datetime | None = None
    outcome: str = ""  # "" while running; e.g. "pushed", "failed", "questions", "salvaged"
    cost_usd: float = 0.0
    summary: str = ""
    head_before: str = ""
    head_after: str = ""
    error: str = ""
    cost_known: bool = True  # False: the agent reported no cost, so the cap could not hold
    refused: str = ""  # connections the sandbox refused, one "host:port: reason" a line


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One line of a task's audit trail: what changed, why, caused by what."""

    task_id: str
    kind: str  # e.g. "created", "transition", "claimed", "heartbeat_lost"
    reason: str  # human-readable; becomes a status comment line
    actor: str = ""  # a GitHub login, "worker:<id>", "reconciler", "cli"…
    delivery_id: str = ""  # the webhook delivery that caused it, if any
    from_status: Status | None = None
    to_status: Status | None = None
    changes: Mapping[str, Any] = field(default_factory=dict)
    at: datetime | None = None  # set by the store
    seq: int = 0  # set by the store


@dataclass(frozen=True, slots=True)
class Installation:
    id: int
    account: str
    repos: tuple[str, ...] = ()
    suspended: bool = False
    updated_at: datetime | None = None


class StoreError(Exception):
    """A store operation failed in a way the caller should report (not a lost race)."""


#: The integers a column holds on both backends (SQLite INTEGER, PostgreSQL bigint): a value
#: outside is refused with a :class:`StoreError`.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@runtime_checkable
class Store(Protocol):
    """What every backend provides. All datetimes are timezone-aware UTC."""

    # -- lifecycle -------------------------------------------------------------------
    async def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied (idempotent)."""

    async def close(self) -> None: ...

    # -- tasks -----------------------------------------------------------------------
    async def create_task(self, task: Task, *, event: TaskEvent | None = None) -> tuple[Task, bool]:
        """Insert ``task`` unless the issue (repo, issue_number) already has a task.

        Returns ``(stored task, created)``; when not created, the existing task is returned.
        """

    async def get_task(self, task_id: str) -> Task | None: ...

    async def get_task_by_issue(self, repo: str, issue_number: int) -> Task | None: ...

    async def get_task_by_pr(self, repo: str, pr_number: int) -> Task | None: ...

    async def get_task_by_branch(self, repo: str, branch: str) -> Task | None: ...

    async def list_tasks(
        self,
        *,
        statuses: Sequence[Status] | None = None,
        repo: str | None = None,
        limit: int = 1000,
        search: str | None = None,
        before: TaskCursor | None = None,
    ) -> list[Task]:
        """Newest first (``created_at`` then ``id``, descending).

        ``search``: tasks whose title, repository or id contains it (case-insensitive), or,
        when it is a number (``12`` or ``#12``), whose issue or pull request has that number.
        ``before``: only tasks after that position (keyset paging, :class:`TaskCursor`)."""

    async def transition(
        self,
        task_id: str,
        *,
        from_statuses: Sequence[Status],
        changes: Mapping[str, Any],
        event: TaskEvent | None = None,
        expect_version: int | None = None,
    ) -> Task | None:
        """One conditional UPDATE: apply ``changes`` only if the task's status is in
        ``from_statuses`` (and its version is ``expect_version`` when given).

        Bumps ``version`` and ``updated_at``; appends ``event`` in the same transaction.
        Returns the updated task, or ``None`` when the condition did not hold (lost race).
        """

    async def claim_task(
        self,
        worker_id: str,
        *,
        max_running: int | None = None,
        max_running_per_repo: int | None = None,
        repo_limits: Mapping[str, int] | None = None,
    ) -> Task | None:
        """Claim the oldest claimable pending task: status ``pending``, ``not_before`` passed
        (or null), its repo below its running limit (``repo_limits[repo]``, else
        ``max_running_per_repo``), and fewer than ``max_running`` tasks running overall.
        Sets ``running``, ``worker_id``, ``heartbeat_at``, ``started_at``. Never returns one
        task to two claimers.
        """

    async def heartbeat(self, task_id: str, worker_id: str) -> bool:
        """Refresh ``heartbeat_at``; False when the task is no longer running for this worker."""

    async def list_stale_running(self, older_than: timedelta) -> list[Task]:
        """Running tasks whose heartbeat is older than ``older_than``."""

    async def wait_for_pending(self, timeout: float) -> bool:
        """Wait until a pending task may be claimable (or timeout). True if woken."""

    async def notify_pending(self) -> None:
        """Wake waiting workers (in-process on SQLite, NOTIFY on PostgreSQL)."""

    # -- attempts, logs, events -------------------------------------------------------
    async def start_attempt(self, attempt: Attempt) -> None: ...

    async def finish_attempt(
        self,
        task_id: str,
        number: int,
        *,
        outcome: str,
        cost_usd: float = 0.0,
        summary: str = "",
        head_after: str = "",
        error: str = "",
        cost_known: bool = True,
        refused: str = "",
    ) -> None: ...

    async def list_attempts(self, task_id: str) -> list[Attempt]: ...

    async def append_logs(self, task_id: str, attempt: int, lines: Sequence[str]) -> None:
        """Store one batch of log lines for an attempt."""

    async def read_logs(self, task_id: str, attempt: int | None = None) -> list[tuple[int, str]]:
        """``(attempt, line)`` in order; all attempts when ``attempt`` is None."""

    async def read_log_batches(
        self, task_id: str, attempt: int | None = None, *, after_seq: int = 0, limit: int | None = None
    ) -> list[LogBatch]:
        """The task's log batches with ``seq > after_seq``, by attempt then ``seq`` (all
        attempts when ``attempt`` is None); at most ``limit`` batches when given."""

    async def list_attempts_for(self, task_ids: Sequence[str]) -> dict[str, list[Attempt]]:
        """The attempts of many tasks in one query: task id → its attempts by number (a task
        without attempts is absent)."""

    async def list_events_for(
        self, task_ids: Sequence[str], *, kinds: Sequence[str] | None = None
    ) -> dict[str, list[TaskEvent]]:
        """The events of many tasks in one query (only ``kinds`` when given): task id → its
        events in order."""

    async def tasks_for_deliveries(self, delivery_ids: Sequence[str]) -> dict[str, str]:
        """Which task each delivery changed: delivery id → task id, from the audit trail's
        ``delivery_id`` (the newest event's task when several; deliveries that changed no
        task are absent)."""

    async def add_event(self, event: TaskEvent) -> None: ...

    async def record_fact(self, key: str, value: str = "") -> bool:
        """Record a one-time fact; True only for the first caller with this key (any process)."""

    async def has_fact(self, key: str) -> bool:
        """Whether a fact with this key was recorded."""

    async def which_facts(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` were recorded, in one query."""

    async def repo_cost_since(self, repo: str, since: datetime) -> float:
        """Sum of attempt costs of ``repo``'s tasks for attempts finished (or, still running,
        started) at or after ``since`` (the per-repo daily cap)."""

    async def list_events(self, task_id: str) -> list[TaskEvent]: ...

    # -- deliveries ledger -----------------------------------------------------------
    async def record_delivery(self, delivery: Delivery) -> bool:
        """Insert into the ledger, committed before returning. False if the id was known."""

    async def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    async def list_deliveries(
        self,
        *,
        limit: int = 100,
        state: DeliveryState | None = None,
        repo: str | None = None,
        event: str | None = None,
        verdict: DeliveryVerdict | None = None,
        from_bots: bool | None = None,
        before_seq: int | None = None,
    ) -> list[Delivery]:
        """Newest first (``seq`` descending). ``event``: that ``X-GitHub-Event`` (``issues``)
        or event and action (``issues.labeled``); ``verdict``: :attr:`Delivery.verdict`;
        ``from_bots``: only (True) or no (False) deliveries a bot account sent
        (:attr:`Delivery.from_bot`); ``before_seq``: only rows with a smaller ``seq`` (keyset
        paging: rows recorded later never shift a page)."""

    async def claim_deliveries(self, dispatcher_id: str, *, limit: int = 10) -> list[Delivery]:
        """Claim pending rows for dispatch, oldest first, at most one row per repository
        at a time (a repository with a row in ``processing`` gets none), so per-repository
        order is kept across any number of dispatchers. Rows with an empty repo are
        independent of each other.
        """

    async def finish_delivery(
        self, delivery_id: str, *, state: DeliveryState, outcome: str = "", ignore_reason: str = ""
    ) -> None: ...

    async def release_stale_deliveries(self, older_than: timedelta) -> int:
        """Put ``processing`` rows claimed longer ago than ``older_than`` back to ``pending``
        (their dispatcher died). Returns how many."""

    async def requeue_delivery(self, delivery_id: str) -> bool:
        """Manual replay: put a finished row back to ``pending`` (never a row whose payload
        was pruned)."""

    async def prune_delivery_payloads(self, before: datetime, *, limit: int) -> PruneResult:
        """Ledger retention: drop the payload of at most ``limit`` rows in state ``done``
        received and processed before ``before`` (oldest first), and mark them
        (``payload_pruned_at``). Every other field of a row stays; pending, processing and
        failed rows are never touched, nor rows already pruned (so a repeat prunes nothing)."""

    async def count_prunable_deliveries(self, before: datetime) -> int:
        """How many rows :meth:`prune_delivery_payloads` would prune with no limit."""

    async def wait_for_deliveries(self, timeout: float) -> bool: ...

    async def notify_deliveries(self) -> None: ...

    # -- workers -----------------------------------------------------------------------
    async def report_worker(self, worker_id: str, stats: Mapping[str, Any]) -> None:
        """Record that ``worker_id`` is alive now, with what it reports (JSON-able values);
        the first report sets ``started_at``, every report ``seen_at`` and ``stats``."""

    async def list_workers(self) -> list[WorkerRecord]:
        """Every worker that reported, most recently seen first."""

    async def forget_workers(self, seen_before: datetime) -> int:
        """Drop workers not seen since ``seen_before``; returns how many."""

    # -- installations -----------------------------------------------------------------
    async def upsert_installation(self, installation: Installation) -> None: ...

    async def remove_installation(self, installation_id: int) -> None: ...

    async def set_installation_repos(
        self, installation_id: int, *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> None: ...

    async def get_installation(self, installation_id: int) -> Installation | None: ...

    async def list_installations(self) -> list[Installation]: ...
