"""Ledger retention: the payloads of processed webhook deliveries are dropped after
``PATCHWRIGHT_PAYLOAD_RETENTION_DAYS`` (0 keeps them forever).

Written once, called by the two entry points: the periodic job of ``patchwright serve``
(:class:`PayloadPruner`, composed by :mod:`bot.runtime`) and ``patchwright prune``. A row
keeps everything the deliveries page shows (id, event, action, repository, times, state,
outcome, ignore reason; the task it changed is in the task's audit events); only its body
goes, and the row is marked (``payload_pruned_at``). Only rows in state ``done`` are
pruned: pending and in-progress rows are still to be processed, and failed ones are the
ones an operator replays. A pruned delivery cannot be replayed (:func:`replay_refusal`).

The age is counted from the clock: a row is pruned when it was received *and* last
processed before ``now - days`` (a delivery replayed recently keeps its payload). Each
store call prunes one bounded batch in one short transaction, so a run never holds the
ledger for long; the job prunes at most :data:`JOB_MAX_BATCHES` batches per tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.store.base import Delivery, Store

log = logging.getLogger(__name__)

#: Rows one store call prunes (one transaction; short enough not to keep webhooks waiting).
BATCH_SIZE = 200
#: Seconds between two ticks of the job in ``serve``.
JOB_INTERVAL_S = 3600.0
#: Batches one tick of the job prunes at most (what is left waits for the next tick).
JOB_MAX_BATCHES = 50
#: Seconds the job waits between two batches of a tick, so the ledger's writers go first.
JOB_BATCH_PAUSE_S = 0.05

RETENTION_SETTING = "PATCHWRIGHT_PAYLOAD_RETENTION_DAYS"
REPLAY_REFUSED_PRUNED = (
    "delivery {id} cannot be replayed: its payload was pruned by the ledger retention ({setting})"
)


def retention_cutoff(now: datetime, days: int) -> datetime | None:
    """Rows received and processed before this lose their payload; None when ``days`` is 0
    (payloads are kept forever)."""
    if days < 0:
        raise ValueError(f"a retention of {days} days: expected 0 (keep forever) or more")
    return None if days == 0 else now - timedelta(days=days)


def replay_refusal(delivery: Delivery) -> str | None:
    """Why ``delivery`` cannot be replayed for lack of its payload (one line), or None."""
    if not delivery.payload_pruned:
        return None
    return REPLAY_REFUSED_PRUNED.format(id=delivery.id, setting=RETENTION_SETTING)


@dataclass(frozen=True, slots=True)
class PruneRun:
    """What one run pruned (or, ``dry_run``, would prune)."""

    days: int
    cutoff: datetime | None  # None: retention is off
    pruned: int = 0
    batches: int = 0
    more: bool = False  # stopped at its batch limit with rows left to prune
    dry_run: bool = False

    def line(self) -> str:
        """The one line ``patchwright prune`` prints."""
        if self.cutoff is None:
            return f"payload retention is off ({RETENTION_SETTING}=0): nothing pruned"
        noun = "delivery" if self.pruned == 1 else "deliveries"
        age = f"older than {self.days} day{'' if self.days == 1 else 's'}"
        if self.dry_run:
            return f"would prune the payloads of {self.pruned} {noun} {age} (dry run)"
        left = "; more remain" if self.more else ""
        return f"pruned the payloads of {self.pruned} {noun} {age}{left}"


async def prune_payloads(
    store: Store,
    *,
    days: int,
    now: datetime,
    batch: int = BATCH_SIZE,
    max_batches: int | None = None,
    pause: float = 0.0,
    dry_run: bool = False,
) -> PruneRun:
    """Drop the payloads of deliveries processed more than ``days`` ago, a batch of ``batch``
    rows at a time, until none is left or ``max_batches`` were pruned (None: no limit),
    waiting ``pause`` seconds between batches. ``dry_run`` only counts them."""
    cutoff = retention_cutoff(now, days)
    if cutoff is None:
        return PruneRun(days=days, cutoff=None, dry_run=dry_run)
    if dry_run:
        count = await store.count_prunable_deliveries(cutoff)
        return PruneRun(days=days, cutoff=cutoff, pruned=count, dry_run=True)
    pruned = batches = 0
    more = True
    while more and (max_batches is None or batches < max_batches):
        if batches and pause:
            await asyncio.sleep(pause)
        result = await store.prune_delivery_payloads(cutoff, limit=batch)
        batches += 1
        pruned += result.pruned
        more = result.more and result.pruned > 0  # nothing pruned: the rest is held elsewhere
    return PruneRun(days=days, cutoff=cutoff, pruned=pruned, batches=batches, more=more)


class PayloadPruner:
    """The periodic job of ``serve``: a tick at start and every ``interval`` seconds, each
    pruning at most ``max_batches`` batches. Its task is held here and ended by :meth:`stop`."""

    def __init__(
        self,
        store: Store,
        *,
        days: int,
        clock: Callable[[], datetime],
        interval: float = JOB_INTERVAL_S,
        batch: int = BATCH_SIZE,
        max_batches: int = JOB_MAX_BATCHES,
        pause: float = JOB_BATCH_PAUSE_S,
    ) -> None:
        retention_cutoff(clock(), days)  # refuses a negative retention now, not in the task
        self._store = store
        self._days = days
        self._clock = clock
        self._interval = interval
        self._batch = batch
        self._max_batches = max_batches
        self._pause = pause
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Callable[[], Awaitable[None]]:
        """Start the ticks (none when retention is off); returns :meth:`stop`."""
        if self._days == 0:
            log.info("payload retention is off (%s=0): webhook payloads are kept", RETENTION_SETTING)
        elif self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._loop(), name="payload-pruner")
        return self.stop

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_once(self) -> PruneRun:
        """One tick."""
        run = await prune_payloads(
            self._store,
            days=self._days,
            now=self._clock(),
            batch=self._batch,
            max_batches=self._max_batches,
            pause=self._pause,
        )
        if run.pruned:
            log.info("%s (received before %s)", run.line(), run.cutoff.isoformat() if run.cutoff else "-")
        return run

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("pruning webhook payloads failed; trying again at the next tick")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._interval)
