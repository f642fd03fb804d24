"""What both store backends share: value checks, row <-> record mapping, the claim-limit
decision, wake-up signals and the group-commit batcher.

Backends differ only in how a time is written (PostgreSQL ``timestamptz`` takes the
datetime; SQLite stores fixed-width UTC text), so mapping functions take ``encode_time`` /
``decode_time`` callables. JSON columns (``queued_feedback``, event ``changes``, SQLite log
batches) hold JSON text on both backends.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from bot.store.base import (
    INT64_MAX,
    INT64_MIN,
    Attempt,
    Delivery,
    DeliveryState,
    DeliveryVerdict,
    Installation,
    LogBatch,
    StoreError,
    TaskCursor,
    TaskEvent,
    WorkerRecord,
)
from bot.tasks.model import TASK_FIELDS, RetryKind, Status, Task

log = logging.getLogger(__name__)

EncodeTime = Callable[[datetime], Any]
DecodeTime = Callable[[Any], datetime]

# -- task field kinds ---------------------------------------------------------------------

ENUM_FIELDS: Mapping[str, type[enum.Enum]] = MappingProxyType({"status": Status, "retry_kind": RetryKind})
TIME_FIELDS = frozenset({"created_at", "updated_at"})
OPTIONAL_TIME_FIELDS = frozenset({"not_before", "heartbeat_at", "started_at"})
INT_FIELDS = frozenset(
    {
        "installation_id",
        "issue_number",
        "attempt",
        "max_attempts",
        "consecutive_failures",
        "conflict_retries",
        "transient_retries",
        "feedback_retries",
        "version",
    }
)
OPTIONAL_INT_FIELDS = frozenset({"pr_number", "status_comment_id"})
FLOAT_FIELDS = frozenset({"cost_usd", "max_cost_usd"})
TEXT_TUPLE_FIELDS = frozenset({"queued_feedback", "review_threads"})
TEXT_FIELDS = frozenset(TASK_FIELDS) - (
    ENUM_FIELDS.keys()
    | TIME_FIELDS
    | OPTIONAL_TIME_FIELDS
    | INT_FIELDS
    | OPTIONAL_INT_FIELDS
    | FLOAT_FIELDS
    | TEXT_TUPLE_FIELDS
)
STORE_MANAGED_FIELDS = frozenset({"id", "version", "created_at", "updated_at"})
"""Fields ``transition`` refuses to change: the store sets version and updated_at."""


# -- plain values ---------------------------------------------------------------------------


def clean_text(value: str) -> str:
    """Make ``value`` storable on both backends: NUL (refused by PostgreSQL) and unpaired
    surrogates (not encodable as UTF-8) become U+FFFD."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in value)
    return value


def require_utc(value: Any, what: str) -> datetime:
    """An aware datetime converted to UTC; naive datetimes and other types are refused."""
    if not isinstance(value, datetime):
        raise StoreError(f"{what}: expected a datetime, got {type(value).__name__}")
    if value.tzinfo is UTC:  # the common case: nothing to convert
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise StoreError(f"{what}: naive datetime {value.isoformat()}; the store needs aware UTC times")
    return value.astimezone(UTC)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise StoreError(f"{what}: expected str, got {type(value).__name__}")
    return clean_text(value)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StoreError(f"{what}: expected int, got {type(value).__name__}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise StoreError(f"{what}: out of the 64-bit integer range the store holds")
    return value


def _float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StoreError(f"{what}: expected a number, got {type(value).__name__}")
    return float(value)


def _enum(kind: type[enum.Enum], value: Any, what: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise StoreError(f"{what}: {value!r} is not a valid {kind.__name__}") from None


def _text_tuple(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise StoreError(f"{what}: expected a sequence of str, got {type(value).__name__}")
    return tuple(_text(item, what) for item in value)


def _json_default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def to_json(value: Any) -> str:
    """JSON text for a JSON column: enums as their value, datetimes as ISO 8601."""
    return clean_text(json.dumps(value, default=_json_default, ensure_ascii=False, sort_keys=True))


def normalize_task_value(name: str, value: Any) -> Any:
    """Check and normalise one Task field value (enums from their text, aware UTC times,
    tuples of text); :class:`StoreError` when it does not fit the column."""
    what = f"task.{name}"
    if name in ENUM_FIELDS:
        return _enum(ENUM_FIELDS[name], value, what)
    if name in TIME_FIELDS:
        return require_utc(value, what)
    if name in OPTIONAL_TIME_FIELDS:
        return None if value is None else require_utc(value, what)
    if name in INT_FIELDS:
        return _int(value, what)
    if name in OPTIONAL_INT_FIELDS:
        return None if value is None else _int(value, what)
    if name in FLOAT_FIELDS:
        return _float(value, what)
    if name in TEXT_TUPLE_FIELDS:
        return _text_tuple(value, what)
    if name in TEXT_FIELDS:
        return _text(value, what)
    raise StoreError(f"unknown task field {name!r}")


def task_column_value(name: str, value: Any, encode_time: EncodeTime) -> Any:
    """The database parameter for an already normalised Task field value."""
    if value is None:
        return None
    if name in ENUM_FIELDS:
        return value.value
    if name in TIME_FIELDS or name in OPTIONAL_TIME_FIELDS:
        return encode_time(value)
    if name in TEXT_TUPLE_FIELDS:
        return to_json(list(value))
    return value


def task_params(task: Task, encode_time: EncodeTime, *, version: int) -> list[Any]:
    """Column values for inserting ``task``, in :data:`TASK_FIELDS` order."""
    out = []
    for name in TASK_FIELDS:
        value = version if name == "version" else getattr(task, name)
        out.append(task_column_value(name, normalize_task_value(name, value), encode_time))
    return out


def change_params(changes: Mapping[str, Any], encode_time: EncodeTime) -> dict[str, Any]:
    """Column values for a transition's ``changes``; refuses store-managed and unknown fields."""
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if name in STORE_MANAGED_FIELDS:
            raise StoreError(f"task.{name} is set by the store and cannot be changed")
        if name not in TASK_FIELDS:
            raise StoreError(f"unknown task field {name!r}")
        out[name] = task_column_value(name, normalize_task_value(name, value), encode_time)
    return out


def task_from_row(row: Mapping[str, Any], decode_time: DecodeTime) -> Task:
    values: dict[str, Any] = {}
    for name in TASK_FIELDS:
        value = row[name]
        if value is None:
            values[name] = None
        elif name in ENUM_FIELDS:
            values[name] = ENUM_FIELDS[name](value)
        elif name in TIME_FIELDS or name in OPTIONAL_TIME_FIELDS:
            values[name] = decode_time(value)
        elif name in TEXT_TUPLE_FIELDS:
            values[name] = tuple(json.loads(value))
        elif name in FLOAT_FIELDS:
            values[name] = float(value)
        else:
            values[name] = value
    return Task(**values)


# -- attempts, events, deliveries, installations ----------------------------------------


def attempt_params(attempt: Attempt, encode_time: EncodeTime) -> list[Any]:
    """(task_id, number, kind, started_at, finished_at, outcome, cost_usd, summary,
    head_before, head_after, error, cost_known, refused)."""
    finished = attempt.finished_at
    return [
        _text(attempt.task_id, "attempt.task_id"),
        _int(attempt.number, "attempt.number"),
        _enum(RetryKind, attempt.kind, "attempt.kind").value,
        encode_time(require_utc(attempt.started_at, "attempt.started_at")),
        None if finished is None else encode_time(require_utc(finished, "attempt.finished_at")),
        _text(attempt.outcome, "attempt.outcome"),
        _float(attempt.cost_usd, "attempt.cost_usd"),
        _text(attempt.summary, "attempt.summary"),
        _text(attempt.head_before, "attempt.head_before"),
        _text(attempt.head_after, "attempt.head_after"),
        _text(attempt.error, "attempt.error"),
        1 if attempt.cost_known else 0,
        _text(attempt.refused, "attempt.refused"),
    ]


ATTEMPT_COLUMNS = (
    "task_id",
    "number",
    "kind",
    "started_at",
    "finished_at",
    "outcome",
    "cost_usd",
    "summary",
    "head_before",
    "head_after",
    "error",
    "cost_known",
    "refused",
)


def attempt_from_row(row: Mapping[str, Any], decode_time: DecodeTime) -> Attempt:
    finished = row["finished_at"]
    return Attempt(
        task_id=row["task_id"],
        number=row["number"],
        kind=RetryKind(row["kind"]),
        started_at=decode_time(row["started_at"]),
        finished_at=None if finished is None else decode_time(finished),
        outcome=row["outcome"],
        cost_usd=float(row["cost_usd"]),
        summary=row["summary"],
        head_before=row["head_before"],
        head_after=row["head_after"],
        error=row["error"],
        cost_known=bool(row["cost_known"]),
        refused=row["refused"],
    )


EVENT_COLUMNS = (
    "task_id",
    "kind",
    "reason",
    "actor",
    "delivery_id",
    "from_status",
    "to_status",
    "changes",
    "at",
)


def event_params(event: TaskEvent, at: datetime, encode_time: EncodeTime) -> list[Any]:
    """Values in :data:`EVENT_COLUMNS` order; ``at`` is the store's clock, not ``event.at``."""
    return [
        _text(event.task_id, "event.task_id"),
        _text(event.kind, "event.kind"),
        _text(event.reason, "event.reason"),
        _text(event.actor, "event.actor"),
        _text(event.delivery_id, "event.delivery_id"),
        None if event.from_status is None else _enum(Status, event.from_status, "event.from_status").value,
        None if event.to_status is None else _enum(Status, event.to_status, "event.to_status").value,
        to_json(dict(event.changes)),
        encode_time(require_utc(at, "event.at")),
    ]


def event_from_row(row: Mapping[str, Any], decode_time: DecodeTime) -> TaskEvent:
    changes = row["changes"]
    return TaskEvent(
        task_id=row["task_id"],
        kind=row["kind"],
        reason=row["reason"],
        actor=row["actor"],
        delivery_id=row["delivery_id"],
        from_status=None if row["from_status"] is None else Status(row["from_status"]),
        to_status=None if row["to_status"] is None else Status(row["to_status"]),
        changes=json.loads(changes) if isinstance(changes, str) else dict(changes),
        at=decode_time(row["at"]),
        seq=row["seq"],
    )


def transition_event(
    event: TaskEvent,
    *,
    task_id: str,
    from_status: Status | None,
    to_status: Status,
    changes: Mapping[str, Any],
) -> TaskEvent:
    """The event a transition appends: the caller's event with what the store knows filled in
    (task id; from/to status and changes when the caller left them empty)."""
    return TaskEvent(
        task_id=task_id,
        kind=event.kind,
        reason=event.reason,
        actor=event.actor,
        delivery_id=event.delivery_id,
        from_status=event.from_status if event.from_status is not None else from_status,
        to_status=event.to_status if event.to_status is not None else to_status,
        changes=event.changes if event.changes else dict(changes),
    )


DELIVERY_COLUMNS = (
    "id",
    "event",
    "action",
    "repo",
    "installation_id",
    "payload",
    "received_at",
    "state",
    "outcome",
    "ignore_reason",
    "claimed_by",
    "claimed_at",
    "processed_at",
    "attempts",
    "sender",
)


def delivery_params(delivery: Delivery, encode_time: EncodeTime) -> list[Any]:
    """Values in :data:`DELIVERY_COLUMNS` order (everything but ``seq``, which the store assigns)."""
    if not isinstance(delivery.payload, (bytes, bytearray, memoryview)):
        raise StoreError(f"delivery.payload: expected bytes, got {type(delivery.payload).__name__}")
    if not delivery.id:
        raise StoreError("delivery.id must not be empty")
    installation_id = delivery.installation_id
    claimed_at, processed_at = delivery.claimed_at, delivery.processed_at
    return [
        _text(delivery.id, "delivery.id"),
        _text(delivery.event, "delivery.event"),
        _text(delivery.action, "delivery.action"),
        _text(delivery.repo, "delivery.repo"),
        None if installation_id is None else _int(installation_id, "delivery.installation_id"),
        bytes(delivery.payload),
        encode_time(require_utc(delivery.received_at, "delivery.received_at")),
        _enum(DeliveryState, delivery.state, "delivery.state").value,
        _text(delivery.outcome, "delivery.outcome"),
        _text(delivery.ignore_reason, "delivery.ignore_reason"),
        _text(delivery.claimed_by, "delivery.claimed_by"),
        None if claimed_at is None else encode_time(require_utc(claimed_at, "delivery.claimed_at")),
        None if processed_at is None else encode_time(require_utc(processed_at, "delivery.processed_at")),
        _int(delivery.attempts, "delivery.attempts"),
        _text(delivery.sender, "delivery.sender"),
    ]


def delivery_from_row(row: Mapping[str, Any], decode_time: DecodeTime) -> Delivery:
    claimed_at, processed_at = row["claimed_at"], row["processed_at"]
    pruned_at = row["payload_pruned_at"]
    return Delivery(
        id=row["id"],
        event=row["event"],
        action=row["action"],
        repo=row["repo"],
        installation_id=row["installation_id"],
        payload=bytes(row["payload"]),
        received_at=decode_time(row["received_at"]),
        seq=row["seq"],
        state=DeliveryState(row["state"]),
        outcome=row["outcome"],
        ignore_reason=row["ignore_reason"],
        claimed_by=row["claimed_by"],
        claimed_at=None if claimed_at is None else decode_time(claimed_at),
        processed_at=None if processed_at is None else decode_time(processed_at),
        attempts=row["attempts"],
        payload_pruned_at=None if pruned_at is None else decode_time(pruned_at),
        sender=row["sender"],
    )


def finished_delivery_state(state: Any) -> DeliveryState:
    """``finish_delivery`` accepts only the two end states."""
    value = _enum(DeliveryState, state, "delivery state")
    if value not in (DeliveryState.DONE, DeliveryState.FAILED):
        raise StoreError(f"finish_delivery needs state done or failed, not {value.value}")
    return value


def installation_repos(repos: Iterable[str]) -> list[str]:
    """Distinct repository names, sorted."""
    return sorted({_text(repo, "installation repo") for repo in repos})


def installation_from_row(
    row: Mapping[str, Any], repos: Sequence[str], decode_time: DecodeTime
) -> Installation:
    return Installation(
        id=row["id"],
        account=row["account"],
        repos=tuple(sorted(repos)),
        suspended=bool(row["suspended"]),
        updated_at=decode_time(row["updated_at"]),
    )


def flatten_log_batches(batches: Iterable[tuple[int, Sequence[str]]]) -> list[tuple[int, str]]:
    return [(attempt, line) for attempt, lines in batches for line in lines]


def log_batch_from_row(row: Mapping[str, Any], decode_time: DecodeTime) -> LogBatch:
    """An ``attempt_logs`` row (``lines``: JSON text on SQLite, an array on PostgreSQL)."""
    lines = row["lines"]
    return LogBatch(
        seq=row["seq"],
        attempt=row["attempt"],
        at=decode_time(row["created_at"]),
        lines=tuple(json.loads(lines) if isinstance(lines, str) else lines),
    )


def worker_from_row(row: Mapping[str, Any], decode_time: DecodeTime) -> WorkerRecord:
    stats = row["stats"]
    return WorkerRecord(
        worker_id=row["worker_id"],
        started_at=decode_time(row["started_at"]),
        seen_at=decode_time(row["seen_at"]),
        stats=json.loads(stats) if isinstance(stats, str) else dict(stats),
    )


def worker_stats_json(stats: Mapping[str, Any]) -> str:
    """A worker's report as the JSON text the ``workers`` table keeps."""
    if not isinstance(stats, Mapping):
        raise StoreError(f"worker stats: expected a mapping, got {type(stats).__name__}")
    return to_json(dict(stats))


def unique_ids(ids: Sequence[str]) -> list[str]:
    """Distinct ids in first-seen order (the parameter of a bulk read)."""
    if isinstance(ids, str):
        raise StoreError("expected a sequence of ids, not one string")
    return list(dict.fromkeys(ids))


BuiltT = TypeVar("BuiltT")


def by_task(found: Iterable[Any], build: Callable[[Any], BuiltT]) -> dict[str, list[BuiltT]]:
    """Rows of many tasks, each built with ``build``, grouped by their ``task_id`` (in order)."""
    grouped: dict[str, list[BuiltT]] = {}
    for row in found:
        grouped.setdefault(row["task_id"], []).append(build(row))
    return grouped


# -- console queries (pure): WHERE terms with ``?`` placeholders ------------------------------

#: LIKE's escape character in every pattern built here (``ESCAPE '\'``).
LIKE_ESCAPE = "\\"
_BOT_SUFFIX = "[bot]"


def like_literal(text: str) -> str:
    """``text`` with LIKE's wildcards (and the escape character) escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_number(search: str) -> int | None:
    """The issue or pull request number a search names (``12`` or ``#12``), if any."""
    digits = search.strip().removeprefix("#")
    if not digits.isascii() or not digits.isdigit():
        return None
    number = int(digits)
    return number if number <= INT64_MAX else None


def task_filters(
    *,
    statuses: Sequence[Any] | None,
    repo: str | None,
    search: str | None,
    before: TaskCursor | None,
    encode_time: EncodeTime,
) -> tuple[list[str], list[Any]]:
    """The WHERE terms (joined with AND) and parameters of :meth:`Store.list_tasks`.

    Search is case-insensitive on ``lower()`` of both sides (SQLite folds ASCII letters
    only); a blank search filters nothing."""
    terms: list[str] = []
    params: list[Any] = []
    if statuses is not None:
        values = [Status(s).value for s in statuses]
        if not values:
            terms.append("1 = 0")
        else:
            terms.append(f"status IN ({', '.join('?' for _ in values)})")
            params.extend(values)
    if repo is not None:
        terms.append("repo = ?")
        params.append(repo)
    text = clean_text(search).strip() if search is not None else ""
    if text:
        pattern = f"%{like_literal(text.lower())}%"
        matches = [f"lower({column}) LIKE ? ESCAPE '{LIKE_ESCAPE}'" for column in ("title", "repo", "id")]
        params.extend([pattern] * 3)
        number = search_number(text)
        if number is not None:
            matches.append("issue_number = ? OR pr_number = ?")
            params.extend([number, number])
        terms.append(f"({' OR '.join(matches)})")
    if before is not None:
        terms.append("(created_at < ? OR (created_at = ? AND id < ?))")
        at = encode_time(require_utc(before.created_at, "cursor.created_at"))
        params.extend([at, at, _text(before.id, "cursor.id")])
    return terms, params


def delivery_filters(
    *,
    state: Any | None,
    repo: str | None,
    event: str | None,
    verdict: Any | None,
    from_bots: bool | None,
    before_seq: int | None,
) -> tuple[list[str], list[Any]]:
    """The WHERE terms (joined with AND) and parameters of :meth:`Store.list_deliveries`."""
    terms: list[str] = []
    params: list[Any] = []
    if state is not None:
        terms.append("state = ?")
        params.append(_enum(DeliveryState, state, "delivery state").value)
    if repo is not None:
        terms.append("repo = ?")
        params.append(repo)
    if event is not None:
        name, dot, action = event.partition(".")
        terms.append("event = ?")
        params.append(name)
        if dot:
            terms.append("action = ?")
            params.append(action)
    if verdict is not None:
        terms.append(_VERDICT_TERMS[_enum(DeliveryVerdict, verdict, "delivery verdict")])
    if from_bots is not None:
        # substr, not LIKE: SQLite's LIKE ignores case, Delivery.from_bot does not
        ends_bot = f"substr(sender, length(sender) - {len(_BOT_SUFFIX) - 1}) = '{_BOT_SUFFIX}'"
        terms.append(ends_bot if from_bots else f"NOT ({ends_bot})")
    if before_seq is not None:
        terms.append("seq < ?")
        params.append(_int(before_seq, "before_seq"))
    return terms, params


_VERDICT_TERMS: Mapping[DeliveryVerdict, str] = MappingProxyType(
    {
        DeliveryVerdict.ACTED: "(state = 'done' AND ignore_reason = '')",
        DeliveryVerdict.IGNORED: "(state = 'done' AND ignore_reason <> '')",
        DeliveryVerdict.FAILED: "state = 'failed'",
        DeliveryVerdict.WAITING: "state IN ('pending', 'processing')",
    }
)


def where_clause(terms: Sequence[str]) -> str:
    """``WHERE a AND b `` (with a trailing space), or "" without terms."""
    return f"WHERE {' AND '.join(terms)} " if terms else ""


def dollar_placeholders(sql: str) -> str:
    """``?`` placeholders numbered for PostgreSQL (``$1``, ``$2``, …); the SQL built here has
    no ``?`` inside a literal."""
    numbers = iter(range(1, sql.count("?") + 1))
    return "".join(f"${next(numbers)}" if part == "?" else part for part in _PLACEHOLDER_SPLIT.split(sql))


_PLACEHOLDER_SPLIT = re.compile(r"(\?)")


# -- claim limits (pure) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RepoFilter:
    """Which repositories a claim may take a task from."""

    exclude: frozenset[str] = frozenset()
    only: frozenset[str] | None = None  # None: every repository not excluded

    def allows(self, repo: str) -> bool:
        return repo not in self.exclude and (self.only is None or repo in self.only)


def limits_apply(
    max_running: int | None, max_running_per_repo: int | None, repo_limits: Mapping[str, int] | None
) -> bool:
    """Whether a claim needs the running counts at all."""
    return max_running is not None or max_running_per_repo is not None or bool(repo_limits)


def repo_limit(
    repo: str, max_running_per_repo: int | None, repo_limits: Mapping[str, int] | None
) -> int | None:
    """The running limit of ``repo``: its own entry, else the default; None = unlimited."""
    if repo_limits and repo in repo_limits:
        return repo_limits[repo]
    return max_running_per_repo


def claim_filter(
    running_by_repo: Mapping[str, int],
    *,
    max_running: int | None,
    max_running_per_repo: int | None,
    repo_limits: Mapping[str, int] | None,
) -> RepoFilter | None:
    """Which repositories may get one more running task, given the running counts.

    None when nothing may be claimed (global limit reached, or no repository has room).
    """
    if max_running is not None and sum(running_by_repo.values()) >= max_running:
        return None
    limits = dict(repo_limits or {})
    if max_running_per_repo is not None and max_running_per_repo <= 0:
        only = frozenset(repo for repo, lim in limits.items() if running_by_repo.get(repo, 0) < lim)
        return RepoFilter(only=only) if only else None
    exclude = {repo for repo, lim in limits.items() if running_by_repo.get(repo, 0) >= lim}
    if max_running_per_repo is not None:
        exclude |= {
            repo
            for repo, count in running_by_repo.items()
            if repo not in limits and count >= max_running_per_repo
        }
    return RepoFilter(exclude=frozenset(exclude))


# -- wake-ups -------------------------------------------------------------------------------


class Wakeup:
    """A wake-up signal that is not lost: a ``fire()`` while nobody waits makes the next
    ``wait()`` return at once. Every waiter present at ``fire()`` is woken."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.waiters = 0

    def fire(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        if not self._event.is_set():
            self.waiters += 1
            try:
                await asyncio.wait_for(self._event.wait(), max(0.0, timeout))
            except TimeoutError:
                return False
            finally:
                self.waiters -= 1
        self._event.clear()
        return True


# -- group commit ---------------------------------------------------------------------------

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


def resolve_batch(
    batch: Sequence[tuple[Any, asyncio.Future[Any]]], outcome: Sequence[Any] | BaseException, name: str
) -> None:
    """Hand one written batch's results to its callers, or the error to every one of them.

    A result that is an exception (a row the database refused while the others went in) is
    that caller's :class:`StoreError`."""
    if not isinstance(outcome, BaseException) and len(outcome) != len(batch):  # never leave one unanswered
        outcome = StoreError(f"{len(outcome)} results for a batch of {len(batch)}")
    if isinstance(outcome, BaseException):
        log.warning("%s: batch of %d failed: %s", name, len(batch), outcome)
        for _, future in batch:
            if not future.done():
                future.set_exception(_store_error(name, outcome))
        return
    for (_, future), result in zip(batch, outcome, strict=True):
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(_store_error(name, result))
        else:
            future.set_result(result)


def _store_error(name: str, exc: BaseException) -> StoreError:
    error = StoreError(f"{name}: {exc}")
    error.__cause__ = exc
    return error


class GroupCommit(Generic[ItemT, ResultT]):
    """Writes concurrent submissions in shared transactions.

    ``writers`` writer tasks per instance drain the queue: a free writer takes everything
    queued (at most ``max_batch`` items) as its batch, so with one writer each batch is what
    queued while the previous one was being committed, and with several, batches are written
    concurrently (``write_batch`` must allow that). Each caller awaits its own result.
    ``write_batch`` gets the items in arrival order and returns one result per item (an
    exception as an item's result fails that caller alone); if it raises, every caller of
    that batch gets a :class:`StoreError`. Subclasses may drain the
    queue their own way (:meth:`_drain`).
    """

    def __init__(
        self,
        write_batch: Callable[[list[ItemT]], Awaitable[list[ResultT]]] | None = None,
        *,
        max_batch: int = 256,
        name: str = "group-commit",
        writers: int = 1,
    ) -> None:
        if writers < 1:
            raise ValueError("a group commit needs at least one writer")
        self._write_batch = write_batch
        self._max_batch = max_batch
        self._name = name
        self._writers = writers
        self._queue: collections.deque[tuple[ItemT, asyncio.Future[ResultT]]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    async def submit(self, item: ItemT) -> ResultT:
        if self._closed:
            raise StoreError("the store is closed")
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run(), name=self._name) for _ in range(self._writers)]
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        """Write what is queued, then stop the writer tasks."""
        self._closed = True
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        self._wakeup.set()
        await asyncio.gather(*tasks)

    async def _run(self) -> None:
        try:
            while True:
                while self._queue:
                    await self._drain()
                if self._closed:
                    return
                self._wakeup.clear()
                # (another writer may have cleared a wake-up meant for this one too: look first)
                if not self._queue and not self._closed:
                    await self._wakeup.wait()
        finally:
            leftover = list(self._queue)
            self._queue.clear()
            for _, future in leftover:
                if not future.done():
                    future.set_exception(StoreError("the store closed before this write"))

    async def _drain(self) -> None:
        """Write the next batch (the oldest ``max_batch`` queued items)."""
        batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
        assert self._write_batch is not None, "GroupCommit needs write_batch or a _drain of its own"
        try:
            results: Sequence[ResultT] | BaseException = await self._write_batch([item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every caller of the batch gets it
            results = exc
        except BaseException:
            for _, future in batch:
                if not future.done():
                    future.set_exception(StoreError(f"{self._name}: writer cancelled"))
            raise
        resolve_batch(batch, results, self._name)


def first_wins(ids: Sequence[str], inserted: set[str]) -> list[bool]:
    """Per item: True for the first occurrence of each inserted id, False otherwise."""
    remaining = set(inserted)
    out = []
    for item_id in ids:
        if item_id in remaining:
            remaining.discard(item_id)
            out.append(True)
        else:
            out.append(False)
    return out


def claimed_event(task: Task, worker_id: str) -> TaskEvent:
    """The audit event ``claim_task`` appends."""
    return TaskEvent(
        task_id=task.id,
        kind="claimed",
        reason=f"claimed by worker {worker_id} for attempt {task.attempt}",
        actor=f"worker:{worker_id}",
        from_status=Status.PENDING,
        to_status=Status.RUNNING,
        changes={"worker_id": worker_id},
    )
