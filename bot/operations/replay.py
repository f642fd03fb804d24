"""Replaying a recorded webhook delivery: the one way the web API, the dashboard's replay
button and ``patchwright deliveries replay`` queue a delivery again for the dispatcher."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bot.operations.retention import replay_refusal
from bot.store.base import Delivery, Store

STILL_QUEUED = "delivery {id} is still waiting or being processed; nothing to replay"


class Replay(enum.Enum):
    """How a replay ended."""

    QUEUED = "queued"
    NOT_FOUND = "not_found"
    REFUSED = "refused"  # its payload was pruned, or it is still waiting or being processed


@dataclass(frozen=True, slots=True)
class ReplayResult:
    outcome: Replay
    message: str = ""  # why it was refused (one line, lower case start)
    delivery: Delivery | None = None  # the row after queueing it again

    @property
    def queued(self) -> bool:
        return self.outcome is Replay.QUEUED


async def replay_delivery(store: Store, delivery_id: str) -> ReplayResult:
    """Queue ``delivery_id`` again (a running dispatcher processes it) and wake the
    dispatchers; refused when its payload was pruned or it has not finished yet."""
    found = await store.get_delivery(delivery_id)
    if found is None:
        return ReplayResult(Replay.NOT_FOUND)
    if (refusal := replay_refusal(found)) is not None:
        return ReplayResult(Replay.REFUSED, refusal, found)
    if not await store.requeue_delivery(delivery_id):
        return ReplayResult(Replay.REFUSED, STILL_QUEUED.format(id=delivery_id), found)
    await store.notify_deliveries()
    return ReplayResult(Replay.QUEUED, delivery=await store.get_delivery(delivery_id))


__all__ = ["STILL_QUEUED", "Replay", "ReplayResult", "replay_delivery"]
