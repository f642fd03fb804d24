"""Prometheus metrics (``GET /metrics``), in a registry of this app's own.

Gauges that describe the store (tasks by status, deliveries by state, total cost) are read
from the store at scrape time. Counters are incremented by the parts of the app that see the
events: the webhook ingress calls :meth:`Metrics.count_delivery` with ``accepted``,
``duplicate``, ``rejected`` or ``unrecorded`` (the store failed: answered 503).

The store has no count query, so counting lists rows: tasks up to :data:`TASK_COUNT_LIMIT`
and deliveries up to :data:`DELIVERY_COUNT_LIMIT` per state (the ledger rows carry their
payloads; a scrape must stay cheap). A gauge at its limit means "at least".
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import choose_encoder

from bot.store.base import DeliveryState, Store
from bot.tasks.model import Status, Task

TASK_COUNT_LIMIT = 100_000
DELIVERY_COUNT_LIMIT = 1_000
DELIVERY_RESULTS = ("accepted", "duplicate", "rejected", "unrecorded")


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """What the store-derived gauges show."""

    tasks_by_status: Mapping[Status, int]
    deliveries_by_state: Mapping[DeliveryState, int]
    cost_usd: float


def summarize_tasks(tasks: Iterable[Task]) -> tuple[dict[Status, int], float]:
    """Task counts for every status (zeros included) and the summed cost."""
    tally: Tally[Status] = Tally()
    cost = 0.0
    for task in tasks:
        tally[task.status] += 1
        cost += task.cost_usd
    return {status: tally[status] for status in Status}, round(cost, 6)


async def read_snapshot(store: Store) -> StoreSnapshot:
    by_status, cost = summarize_tasks(await store.list_tasks(limit=TASK_COUNT_LIMIT))
    by_state = {
        state: len(await store.list_deliveries(state=state, limit=DELIVERY_COUNT_LIMIT)) for state in DeliveryState
    }
    return StoreSnapshot(tasks_by_status=by_status, deliveries_by_state=by_state, cost_usd=cost)


class Metrics:
    """The app's metrics. One per application; nothing is registered globally."""

    def __init__(self, *, subscribers: Callable[[], float] | None = None) -> None:
        self.registry = CollectorRegistry()
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

    async def render(self, store: Store, accept: str = "") -> tuple[bytes, str]:
        """Refresh the store gauges; the exposition (the format the ``Accept`` header asks
        for: Prometheus text, or OpenMetrics) and its content type."""
        self.apply(await read_snapshot(store))
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type
