"""Prometheus metrics (``GET /metrics``), in a registry of this app's own.

What the store knows is read at scrape time, so every ``serve`` process shows the same values
(histograms included, whichever process ran the attempts):

- tasks by status, deliveries by state, total cost (gauges);
- histograms of agent run time (an attempt's start to its end), webhook-to-agent-start (the
  delivery that created a task, received → its first attempt started; a task created without
  a delivery counts from its creation) and time to PR (a task's creation → its pull request
  opened), and attempts by kind and outcome (a counter);
- the oldest claimable task's age (pending, its backoff passed: since it became pending or
  its backoff ended) and how many are claimable;
- worker heartbeats (each pool reports itself, :meth:`bot.worker.pool.WorkerPool.report_once`):
  seconds since each was last seen, how many are alive, their running agents and slots;
- GitHub requests by installation, method and status class, and each installation's remaining
  rate-limit budget: this process's own :class:`~bot.github.usage.GitHubUsage` folded with
  what every worker reported (:func:`~bot.github.usage.merge_usage`);
- the outcome records per (preset, model) (:mod:`bot.operations.outcomes`).

Counters of the ingress are incremented by the parts of the app that see the events:
:meth:`Metrics.count_delivery` with ``accepted``, ``duplicate``, ``rejected`` or
``unrecorded`` (the store failed: answered 503). Process metrics come from
``prometheus_client``'s process and platform collectors.

A scrape stays cheap: tasks are listed up to :data:`TASK_COUNT_LIMIT` and deliveries up to
:data:`DELIVERY_COUNT_LIMIT` per state (a gauge at its limit means "at least"); histograms,
attempts and outcomes cover the newest :data:`~bot.operations.outcomes.OUTCOME_TASK_LIMIT`
tasks, read in batched bulk queries; the receipt time of each task's creating delivery is read
once (at most :data:`DELIVERY_LOOKUPS_PER_SCRAPE` new ones a scrape) and remembered.
"""

from __future__ import annotations

import bisect
from collections import Counter as Tally
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder

from bot.github.usage import GitHubUsage, MergedUsage, merge_usage
from bot.operations.outcomes import (
    OUTCOME_TASK_LIMIT,
    OutcomeRecord,
    outcome_records,
    pr_opened_at,
    read_history,
)
from bot.store.base import Attempt, DeliveryState, Store, TaskEvent, WorkerRecord
from bot.tasks.model import Status, Task, utcnow

TASK_COUNT_LIMIT = 100_000
DELIVERY_COUNT_LIMIT = 1_000
DELIVERY_RESULTS = ("accepted", "duplicate", "rejected", "unrecorded")
#: New creating deliveries whose receipt time one scrape reads (the rest wait for the next).
DELIVERY_LOOKUPS_PER_SCRAPE = 200
#: Receipt times remembered (by delivery id).
RECEIPT_CACHE_SIZE = 20_000
#: A worker that reported within this many seconds counts as alive (pools report every 15 s).
WORKER_ALIVE_S = 60.0

AGENT_RUN_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
AGENT_START_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
TIME_TO_PR_BUCKETS = (60.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0)


# -- pure: what the store says, as numbers ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Histogram:
    """Observations sorted into cumulative buckets (``le`` bounds, +Inf last)."""

    buckets: tuple[tuple[str, int], ...]
    sum: float

    @property
    def count(self) -> int:
        return self.buckets[-1][1]


def histogram(values: Iterable[float], bounds: Sequence[float]) -> Histogram:
    """``values`` in cumulative buckets at ``bounds`` plus +Inf. Pure."""
    counts = [0] * (len(bounds) + 1)
    total = 0.0
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1
        total += value
    cumulative, running = [], 0
    for bound, count in zip([*map(_le, bounds), "+Inf"], counts, strict=True):
        running += count
        cumulative.append((bound, running))
    return Histogram(tuple(cumulative), round(total, 6))


def _le(bound: float) -> str:
    return repr(float(bound))


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def agent_run_seconds(attempts: Iterable[Attempt]) -> list[float]:
    """How long each finished attempt ran. Pure."""
    return [s for a in attempts if (s := _seconds(a.started_at, a.finished_at)) is not None]


def creating_delivery(events: Iterable[TaskEvent]) -> str:
    """The id of the delivery that created the task ("" when none: the CLI, the API)."""
    for event in events:
        if event.kind == "created":
            return event.delivery_id
    return ""


def agent_start_seconds(
    tasks: Iterable[Task],
    attempts: Mapping[str, Sequence[Attempt]],
    events: Mapping[str, Sequence[TaskEvent]],
    received: Mapping[str, datetime | None],
) -> list[float]:
    """Per task with a started attempt: its creating delivery's receipt (``received``; a
    delivery the store no longer has maps to None) or, without one, the task's creation, to
    its first attempt's start. A delivery not in ``received`` yet leaves its task out. Pure."""
    out = []
    for task in tasks:
        tried = attempts.get(task.id)
        if not tried:
            continue
        first = min(tried, key=lambda a: a.number)
        delivery = creating_delivery(events.get(task.id, ()))
        if delivery and delivery not in received:
            continue
        start = (received.get(delivery) if delivery else None) or task.created_at
        seconds = _seconds(start, first.started_at)
        if seconds is not None:
            out.append(seconds)
    return out


def time_to_pr_seconds(tasks: Iterable[Task], events: Mapping[str, Sequence[TaskEvent]]) -> list[float]:
    """Per task whose pull request was opened: its creation to that moment. Pure."""
    return [s for t in tasks if (s := _seconds(t.created_at, pr_opened_at(events.get(t.id, ())))) is not None]


def attempts_by_kind_and_outcome(attempts: Iterable[Attempt]) -> dict[tuple[str, str], int]:
    """(kind, outcome) → attempts; a running attempt's outcome is ``running``. Pure."""
    tally: Tally[tuple[str, str]] = Tally()
    for attempt in attempts:
        tally[(attempt.kind.value, attempt.outcome or "running")] += 1
    return dict(sorted(tally.items()))


def claimable_ages(tasks: Iterable[Task], now: datetime) -> list[float]:
    """Seconds each claimable task (pending, backoff passed) has been claimable: since its
    backoff ended, or since it became pending (its last update). Pure."""
    ages = []
    for task in tasks:
        if task.status is not Status.PENDING:
            continue
        if task.not_before is not None and task.not_before > now:
            continue
        since = max(task.updated_at, task.not_before) if task.not_before else task.updated_at
        ages.append(max(0.0, (now - since).total_seconds()))
    return ages


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


@dataclass(frozen=True, slots=True)
class WorkerGauges:
    """Each worker's seconds since its last report, and the totals of the alive ones."""

    last_seen: Mapping[str, float]
    alive: int
    running: float
    slots: float


def worker_gauges(workers: Iterable[WorkerRecord], now: datetime, alive_s: float = WORKER_ALIVE_S) -> WorkerGauges:
    """Pure."""
    last_seen, alive, running, slots = {}, 0, 0.0, 0.0
    for worker in workers:
        age = max(0.0, (now - worker.seen_at).total_seconds())
        last_seen[worker.worker_id] = age
        if age <= alive_s:
            alive += 1
            running += _number(worker.stats.get("running"))
            slots += _number(worker.stats.get("slots"))
    return WorkerGauges(last_seen=last_seen, alive=alive, running=running, slots=slots)


def github_reports(workers: Iterable[WorkerRecord]) -> list[Mapping[str, Any]]:
    """The GitHub usage each worker reported (those that reported one)."""
    return [w.stats["github"] for w in workers if isinstance(w.stats.get("github"), Mapping)]


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """What the store-derived metrics show."""

    tasks_by_status: Mapping[Status, int]
    deliveries_by_state: Mapping[DeliveryState, int]
    cost_usd: float
    agent_run: Histogram = field(default_factory=lambda: histogram((), AGENT_RUN_BUCKETS))
    agent_start: Histogram = field(default_factory=lambda: histogram((), AGENT_START_BUCKETS))
    time_to_pr: Histogram = field(default_factory=lambda: histogram((), TIME_TO_PR_BUCKETS))
    attempts: Mapping[tuple[str, str], int] = field(default_factory=dict)
    claimable: Sequence[float] = ()
    workers: WorkerGauges = field(default_factory=lambda: WorkerGauges({}, 0, 0.0, 0.0))
    github: MergedUsage = field(default_factory=lambda: MergedUsage({}, {}))
    outcomes: Sequence[OutcomeRecord] = ()


def summarize_tasks(tasks: Iterable[Task]) -> tuple[dict[Status, int], float]:
    """Task counts for every status (zeros included) and the summed cost."""
    tally: Tally[Status] = Tally()
    cost = 0.0
    for task in tasks:
        tally[task.status] += 1
        cost += task.cost_usd
    return {status: tally[status] for status in Status}, round(cost, 6)


# -- reading the store --------------------------------------------------------------------------


class ReceiptTimes:
    """When deliveries were received, read once per delivery and remembered (bounded)."""

    def __init__(self, size: int = RECEIPT_CACHE_SIZE) -> None:
        self._size = size
        self._known: OrderedDict[str, datetime | None] = OrderedDict()

    async def lookup(self, store: Store, delivery_ids: Iterable[str], *, budget: int) -> Mapping[str, datetime | None]:
        """Receipt times of ``delivery_ids``: known ones, plus at most ``budget`` read now."""
        for delivery_id in dict.fromkeys(d for d in delivery_ids if d and d not in self._known):
            if budget <= 0:
                break
            budget -= 1
            row = await store.get_delivery(delivery_id)
            self._known[delivery_id] = row.received_at if row is not None else None
            while len(self._known) > self._size:
                self._known.popitem(last=False)
        return self._known


async def read_snapshot(
    store: Store,
    *,
    now: datetime | None = None,
    github: GitHubUsage | None = None,
    receipts: ReceiptTimes | None = None,
) -> StoreSnapshot:
    """Everything the store-derived metrics show, in bounded queries."""
    now = now or utcnow()
    tasks = await store.list_tasks(limit=TASK_COUNT_LIMIT)
    by_status, cost = summarize_tasks(tasks)
    by_state = {
        state: len(await store.list_deliveries(state=state, limit=DELIVERY_COUNT_LIMIT)) for state in DeliveryState
    }
    recent, attempts, events = await read_history(store, limit=OUTCOME_TASK_LIMIT, newest=tasks)
    receipts = receipts or ReceiptTimes()
    received = await receipts.lookup(
        store,
        (creating_delivery(events.get(t.id, ())) for t in recent if attempts.get(t.id)),
        budget=DELIVERY_LOOKUPS_PER_SCRAPE,
    )
    workers = await store.list_workers()
    every_attempt = [a for found in attempts.values() for a in found]
    own = [github.snapshot()] if github is not None else []
    return StoreSnapshot(
        tasks_by_status=by_status,
        deliveries_by_state=by_state,
        cost_usd=cost,
        agent_run=histogram(agent_run_seconds(every_attempt), AGENT_RUN_BUCKETS),
        agent_start=histogram(agent_start_seconds(recent, attempts, events, received), AGENT_START_BUCKETS),
        time_to_pr=histogram(time_to_pr_seconds(recent, events), TIME_TO_PR_BUCKETS),
        attempts=attempts_by_kind_and_outcome(every_attempt),
        claimable=claimable_ages(tasks, now),
        workers=worker_gauges(workers, now),
        github=merge_usage([*github_reports(workers), *own], now.timestamp()),
        outcomes=outcome_records(recent, attempts, events),
    )


# -- exposition ---------------------------------------------------------------------------------

#: Outcome gauges: (name suffix, help, the record's attribute).
OUTCOME_GAUGES = (
    ("merge_rate", "Merged tasks / finished tasks (merged, closed, failed), per preset and model.", "merge_rate"),
    ("attempts_per_merged_pr", "Mean attempts of the merged tasks, per preset and model.", "attempts_per_merged_pr"),
    ("cost_usd", "Agent cost of all the tasks, per preset and model, in US dollars.", "cost_usd"),
    ("cost_per_merged_pr_usd", "Agent cost of all the tasks / merged tasks, per preset and model.", "cost_per_merged_pr_usd"),
    ("median_time_to_pr_seconds", "Median seconds from task creation to its PR opened, per preset and model.", "median_time_to_pr_s"),
    ("median_time_to_merge_seconds", "Median seconds from task creation to its merge, per preset and model.", "median_time_to_merge_s"),
    ("ci_retries_per_task", "Attempts started because CI failed / tasks, per preset and model.", "ci_retries_per_task"),
)
OUTCOME_RESULTS = ("merged", "closed", "failed", "in_progress")


def _histogram_family(name: str, doc: str, value: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=list(value.buckets), sum_value=value.sum)


def snapshot_families(snapshot: StoreSnapshot) -> Iterator[Metric]:
    """The metric families of a snapshot (besides the task, delivery and cost gauges). Pure."""
    yield _histogram_family(
        "patchwright_agent_run_seconds", "How long finished agent attempts ran.", snapshot.agent_run
    )
    yield _histogram_family(
        "patchwright_webhook_to_agent_start_seconds",
        "From the webhook that created a task (received) to its first attempt's start.",
        snapshot.agent_start,
    )
    yield _histogram_family(
        "patchwright_time_to_pr_seconds", "From a task's creation to its pull request opened.", snapshot.time_to_pr
    )
    attempts = CounterMetricFamily(
        "patchwright_attempts", "Agent attempts by kind and outcome (running: not ended).", labels=["kind", "outcome"]
    )
    for (kind, outcome), count in snapshot.attempts.items():
        attempts.add_metric([kind, outcome], count)
    yield attempts
    yield GaugeMetricFamily(
        "patchwright_oldest_claimable_task_age_seconds",
        "How long the oldest claimable pending task has waited for a worker (0: none waits).",
        value=max(snapshot.claimable, default=0.0),
    )
    yield GaugeMetricFamily(
        "patchwright_claimable_tasks", "Pending tasks a worker may claim now.", value=len(snapshot.claimable)
    )
    workers = snapshot.workers
    yield GaugeMetricFamily("patchwright_running_agents", "Agents running in the alive workers.", value=workers.running)
    yield GaugeMetricFamily("patchwright_worker_slots", "Agent slots of the alive workers.", value=workers.slots)
    yield GaugeMetricFamily(
        "patchwright_workers_alive", f"Workers that reported within {WORKER_ALIVE_S:g} s.", value=workers.alive
    )
    seen = GaugeMetricFamily(
        "patchwright_worker_last_seen_seconds", "Seconds since each worker last reported.", labels=["worker"]
    )
    for worker, age in sorted(workers.last_seen.items()):
        seen.add_metric([worker], age)
    yield seen
    requests = CounterMetricFamily(
        "patchwright_github_requests",
        "GitHub API requests by process, installation (app: as the App), method and status class.",
        labels=["process", "installation", "method", "status"],
    )
    for (process, installation, method, status), count in sorted(snapshot.github.requests.items()):
        requests.add_metric([process, installation, method, status], count)
    yield requests
    budgets = snapshot.github.rate_limits
    for suffix, doc, attribute in (
        ("remaining", "The lowest remaining core rate-limit budget reported in the current window.", "remaining"),
        ("limit", "The core rate limit per hour.", "limit"),
        ("reset_timestamp_seconds", "When the core rate-limit window resets (epoch seconds).", "reset"),
    ):
        family = GaugeMetricFamily(f"patchwright_github_rate_limit_{suffix}", doc, labels=["installation"])
        for installation, reading in sorted(budgets.items()):
            family.add_metric([installation], getattr(reading, attribute))
        yield family
    tasks = GaugeMetricFamily(
        "patchwright_outcome_tasks", "Tasks per preset, model and result.", labels=["preset", "model", "result"]
    )
    for record in snapshot.outcomes:
        for result in OUTCOME_RESULTS:
            tasks.add_metric([record.preset, record.model, result], getattr(record, result))
    yield tasks
    for suffix, doc, attribute in OUTCOME_GAUGES:
        family = GaugeMetricFamily(f"patchwright_outcome_{suffix}", doc, labels=["preset", "model"])
        for record in snapshot.outcomes:
            value = getattr(record, attribute)
            if value is not None:
                family.add_metric([record.preset, record.model], value)
        yield family


class SnapshotCollector:
    """Yields the families of the latest snapshot (empty histograms before the first)."""

    def __init__(self) -> None:
        self.latest = StoreSnapshot(tasks_by_status={}, deliveries_by_state={}, cost_usd=0.0)

    def collect(self) -> Iterator[Metric]:
        return snapshot_families(self.latest)


class Metrics:
    """The app's metrics. One per application; nothing is registered globally.

    ``github`` gives this process's GitHub usage (None: no GitHub client yet)."""

    def __init__(
        self,
        *,
        subscribers: Callable[[], float] | None = None,
        clock: Callable[[], datetime] = utcnow,
        github: Callable[[], GitHubUsage | None] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self._clock = clock
        self._github = github or (lambda: None)
        self._receipts = ReceiptTimes()
        self.tasks = Gauge(
            "patchwright_tasks", "Tasks by status.", ["status"], registry=self.registry
        )
        self.deliveries = Gauge(
            "patchwright_deliveries",
            f"Webhook deliveries in the ledger by state (counted up to {DELIVERY_COUNT_LIMIT} per state).",
            ["state"],
            registry=self.registry,
        )
        self.cost = Gauge(
            "patchwright_cost_usd", "Agent cost of all tasks, in US dollars.", registry=self.registry
        )
        self.webhook_deliveries = Counter(
            "patchwright_webhook_deliveries",
            "Webhook deliveries answered by the ingress, by result (accepted, duplicate, rejected).",
            ["result"],
            registry=self.registry,
        )
        # the children, looked up once: counting is on every webhook request's path
        self._delivery_counters = {
            result: self.webhook_deliveries.labels(result=result) for result in DELIVERY_RESULTS
        }
        self.event_subscribers = Gauge(
            "patchwright_event_stream_subscribers",
            "Open /api/events streams.",
            registry=self.registry,
        )
        if subscribers is not None:
            self.event_subscribers.set_function(subscribers)
        self.store_families = SnapshotCollector()
        self.registry.register(self.store_families)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def count_delivery(self, result: str) -> None:
        """Count one webhook answer: one of :data:`DELIVERY_RESULTS`."""
        counter = self._delivery_counters.get(result)
        if counter is None:
            raise ValueError(f"unknown delivery result {result!r}; expected one of {DELIVERY_RESULTS}")
        counter.inc()

    def apply(self, snapshot: StoreSnapshot) -> None:
        for status, count in snapshot.tasks_by_status.items():
            self.tasks.labels(status=status.value).set(count)
        for state, count in snapshot.deliveries_by_state.items():
            self.deliveries.labels(state=state.value).set(count)
        self.cost.set(snapshot.cost_usd)
        self.store_families.latest = snapshot

    async def render(self, store: Store, accept: str = "") -> tuple[bytes, str]:
        """Refresh the store metrics; the exposition (the format the ``Accept`` header asks
        for: Prometheus text, or OpenMetrics) and its content type."""
        snapshot = await read_snapshot(store, now=self._clock(), github=self._github(), receipts=self._receipts)
        self.apply(snapshot)
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type
