"""The task value: what one issue's work looks like at a point in time.

Pure data, no I/O. Decisions in :mod:`bot.tasks.rules` take a :class:`Task` and return a
new one; the store persists the difference with a conditional update.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


class Status(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    REVIEW = "review"
    WAITING = "waiting"
    PAUSED = "paused"
    MERGED = "merged"
    CLOSED = "closed"
    FAILED = "failed"

    def __str__(self) -> str:  # so f-strings and SQL parameters read "pending"
        return self.value


TERMINAL = frozenset({Status.MERGED, Status.CLOSED, Status.FAILED})
ACTIVE = frozenset(Status) - TERMINAL


class RetryKind(str, enum.Enum):
    FIRST = "first"  # the first attempt of a task (or after start over)
    CI_FAILURE = "ci_failure"
    FEEDBACK = "feedback"
    MERGE_CONFLICT = "merge_conflict"
    TRANSIENT = "transient"
    MANUAL = "manual"
    ANSWERS = "answers"

    def __str__(self) -> str:
        return self.value


#: How a plain-text (not JSON) ``retry_context`` reads, by the kind of the next attempt: the
#: field of the attempt's context it is (the prompt and the rules both read it so).
PLAIN_CONTEXT_FIELD: dict[RetryKind, str] = {
    RetryKind.CI_FAILURE: "ci_log",
    RetryKind.FEEDBACK: "feedback",
    RetryKind.ANSWERS: "answers",
    RetryKind.MANUAL: "instructions",
    RetryKind.MERGE_CONFLICT: "conflicted_files",  # one file a line
}
PLAIN_CONTEXT_DEFAULT_FIELD = "feedback"


def plain_context_field(kind: RetryKind) -> str:
    """The context field a plain-text ``retry_context`` of an attempt of ``kind`` is."""
    return PLAIN_CONTEXT_FIELD.get(kind, PLAIN_CONTEXT_DEFAULT_FIELD)


_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str, *, now_ms: int | None = None, rand: bytes | None = None) -> str:
    """A sortable id: ``<prefix>_`` + 26 Crockford base32 characters (48-bit ms time + 80 random bits)."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rnd = os.urandom(10) if rand is None else rand
    value = (ms << 80) | int.from_bytes(rnd, "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True)
class Task:
    """One issue's task. Field names are the store's column names."""

    id: str
    repo: str  # "owner/name"
    installation_id: int
    issue_number: int
    title: str
    spec: str = ""
    status: Status = Status.PENDING
    attempt: int = 1
    max_attempts: int = 5
    retry_kind: RetryKind = RetryKind.FIRST
    retry_reason: str = ""
    retry_context: str = ""
    failure_category: str = ""
    consecutive_failures: int = 0
    conflict_retries: int = 0
    transient_retries: int = 0
    feedback_retries: int = 0
    queued_feedback: tuple[str, ...] = ()
    review_threads: tuple[str, ...] = ()  # review comment ids to answer "addressed in <sha>" after the next push
    last_error_signature: str = ""
    cost_usd: float = 0.0
    max_cost_usd: float = 10.0
    branch: str = ""
    base_branch: str = ""
    pr_number: int | None = None
    pr_url: str = ""
    head_sha: str = ""
    agent: str = ""
    model: str = ""
    agent_session: str = ""
    status_comment_id: int | None = None
    not_before: datetime | None = None
    worker_id: str = ""
    heartbeat_at: datetime | None = None
    started_at: datetime | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    close_reason: str = ""
    version: int = 0  # bumped by the store on every write; used for compare-and-swap

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def budget_left(self) -> int:
        """Automatic (budget-counting) retries still allowed."""
        return max(0, self.max_attempts - self.attempt)

    def replace(self, **changes: Any) -> Task:
        return dataclasses.replace(self, **changes)

    def diff(self, other: Task) -> dict[str, Any]:
        """The fields whose values differ in ``other`` (what a store update must write)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("id", "version", "created_at", "updated_at"):
                continue
            new = getattr(other, f.name)
            if getattr(self, f.name) != new:
                out[f.name] = new
        return out


TASK_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Task))
