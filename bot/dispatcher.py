"""The dispatcher: ledger rows → every matching handler, each isolated, in order per repository.

Rows are claimed from the store (so any number of dispatchers in any number of processes never
process one delivery twice), run through every callback the composed gidgethub ``Router``
holds for the event — each with its own timeout and error isolation, which
``Router.dispatch`` (stopping at the first exception) does not give — and finished with the
outcome, and for ignored events the reason. A router may decline an event as a whole by raising
:class:`Ignored` from ``fetch`` (the handlers' router does for a payload that does not fit the
model of its event kind, see :mod:`bot.payloads`): no handler runs and the reason is recorded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import gidgethub
from gidgethub import routing, sansio

from bot.logs import log_context
from bot.outcome import Ignored
from bot.store.base import Delivery, DeliveryState, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HandlerResult:
    handler: str
    outcome: str  # "done: …", "ignored: …", "failed: …"
    ignored: bool = False
    failed: bool = False
    retryable: bool = False  # failed for a passing reason (GitHub 5xx, rate limit, network)


#: Errors that say "try again later", not "this handler is wrong".
RETRYABLE_ERRORS = (gidgethub.GitHubBroken, gidgethub.RateLimitExceeded, aiohttp.ClientError, ConnectionError)


def handler_name(callback: Callable[..., Any]) -> str:
    module = getattr(callback, "__module__", "") or ""
    return f"{module.rsplit('.', 1)[-1]}.{getattr(callback, '__name__', repr(callback))}"


def summarize(results: list[HandlerResult], event: str, action: str) -> tuple[DeliveryState, str, str]:
    """(state, outcome, ignore_reason) for a ledger row from its handlers' results. Pure."""
    label = f"{event}.{action}" if action else event
    if not results:
        return DeliveryState.DONE, "no handler", f"no handler for {label}"
    outcome = "; ".join(f"{r.handler}: {r.outcome}" for r in results)
    if any(r.failed for r in results):
        return DeliveryState.FAILED, outcome, ""
    if all(r.ignored for r in results):
        reasons = "; ".join(dict.fromkeys(r.outcome.removeprefix("ignored: ") for r in results))
        return DeliveryState.DONE, outcome, reasons
    return DeliveryState.DONE, outcome, ""


#: Builds what handlers receive besides the event (store, GitHub client, services…).
ContextFactory = Callable[[Delivery], Awaitable[Any]]


class Dispatcher:
    def __init__(
        self,
        store: Store,
        router: routing.Router,
        make_context: ContextFactory,
        *,
        dispatcher_id: str | None = None,
        handler_timeout: float = 120.0,
        batch: int = 16,
        stale_after: timedelta = timedelta(minutes=5),
        idle_wait: float = 1.0,
        retry_delays: tuple[float, ...] = (1.0, 4.0, 15.0),
    ):
        self._store = store
        self._router = router
        self._make_context = make_context
        self.id = dispatcher_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._timeout = handler_timeout
        self._batch = batch
        self._stale_after = stale_after
        self._idle_wait = idle_wait
        self._retry_delays = retry_delays
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------
    def wake(self) -> None:
        """Called by the ingress after recording a delivery (in-process, cheap)."""
        self._wake.set()

    async def start(self) -> Callable[[], Awaitable[None]]:
        released = await self._store.release_stale_deliveries(self._stale_after)
        if released:
            log.info("released %d delivery row(s) left in processing by a stopped dispatcher", released)
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"dispatcher {self.id}")
        return self.stop

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=self._timeout + 5)
            except asyncio.TimeoutError:
                self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        last_release = asyncio.get_running_loop().time()
        while not self._stopping:
            try:
                processed = await self.run_once()
            except Exception:
                log.exception("dispatcher pass failed; retrying")
                processed = 0
                await asyncio.sleep(self._idle_wait)
            now = asyncio.get_running_loop().time()
            if now - last_release > self._stale_after.total_seconds() / 2:
                last_release = now
                try:
                    await self._store.release_stale_deliveries(self._stale_after)
                except Exception:
                    log.exception("releasing stale deliveries failed")
            if processed or self._stopping:
                continue
            self._wake.clear()
            waiter = asyncio.ensure_future(self._store.wait_for_deliveries(self._idle_wait))
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({waiter, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for fut in (waiter, woken):
                    if not fut.done():
                        fut.cancel()
                await asyncio.gather(waiter, woken, return_exceptions=True)

    # -- work ----------------------------------------------------------------------------
    async def run_once(self) -> int:
        """Claim and process one batch; returns how many rows were processed."""
        rows = await self._store.claim_deliveries(self.id, limit=self._batch)
        if not rows:
            return 0
        # claim_deliveries gives at most one row per repository, so rows can run concurrently
        # without breaking per-repository order.
        await asyncio.gather(*(self.process(row) for row in rows))
        return len(rows)

    async def drain(self, *, max_rounds: int = 10_000) -> int:
        """Process until no claimable row is left (tests, CLI replay)."""
        total = 0
        for _ in range(max_rounds):
            n = await self.run_once()
            if n == 0:
                return total
            total += n
        return total

    async def process(self, row: Delivery) -> None:
        with log_context(delivery_id=row.id, repo=row.repo or None):
            try:
                state, outcome, ignore_reason = await self._process(row)
            except Exception as exc:  # never lose the row: record why and move on
                log.exception("delivery %s could not be processed", row.id)
                state, outcome, ignore_reason = DeliveryState.FAILED, f"failed: {type(exc).__name__}: {exc}", ""
            await self._store.finish_delivery(
                row.id, state=state, outcome=outcome[:4000], ignore_reason=ignore_reason[:2000]
            )

    async def _process(self, row: Delivery) -> tuple[DeliveryState, str, str]:
        try:
            data = json.loads(row.payload)
        except (ValueError, UnicodeDecodeError):
            return DeliveryState.DONE, "ignored", "payload is not valid JSON"
        event = sansio.Event(data, event=row.event, delivery_id=row.id)
        try:
            # The router answers a set: run the callbacks in a stable order (by module.function).
            callbacks = sorted(self._router.fetch(event), key=handler_name)
        except Ignored as exc:  # the router declines the event as a whole (a malformed payload)
            return DeliveryState.DONE, f"ignored: {exc.reason}", exc.reason
        if not callbacks:
            return summarize([], row.event, row.action)
        context = await self._make_context(row)
        results = []
        for callback in callbacks:
            result = await self._call(callback, event, context)
            # Handlers are idempotent (conditional transitions, facts), so one that failed for
            # a passing reason runs again after a pause; the others are not repeated.
            for delay in self._retry_delays:
                if not result.retryable:
                    break
                log.warning("handler %s: %s; trying again in %.1f s", result.handler, result.outcome, delay)
                await asyncio.sleep(delay)
                result = await self._call(callback, event, context)
            results.append(result)
        return summarize(results, row.event, row.action)

    async def _call(self, callback: Callable[..., Awaitable[Any]], event: sansio.Event, context: Any) -> HandlerResult:
        name = handler_name(callback)
        try:
            outcome = await asyncio.wait_for(callback(event, context), timeout=self._timeout)
        except Ignored as exc:
            return HandlerResult(name, f"ignored: {exc.reason}", ignored=True)
        except asyncio.TimeoutError:
            log.error("handler %s timed out after %.0f s", name, self._timeout)
            return HandlerResult(name, f"failed: timed out after {self._timeout:.0f} s", failed=True)
        except RETRYABLE_ERRORS as exc:
            return HandlerResult(name, f"failed: {type(exc).__name__}: {exc}", failed=True, retryable=True)
        except Exception as exc:
            log.exception("handler %s failed", name)
            return HandlerResult(name, f"failed: {type(exc).__name__}: {exc}", failed=True)
        return HandlerResult(name, f"done: {outcome}" if outcome else "done")
