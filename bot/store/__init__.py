"""Persistence: the Store protocol and its SQLite and PostgreSQL backends."""

from bot.store.base import (
    Attempt,
    Delivery,
    DeliveryState,
    Installation,
    PruneResult,
    Store,
    StoreError,
    TaskEvent,
)


def __getattr__(name: str):  # open_store on first use: the ledger writer process needs none of it
    if name == "open_store":
        from bot.store.factory import open_store

        return open_store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Attempt",
    "Delivery",
    "DeliveryState",
    "Installation",
    "PruneResult",
    "Store",
    "StoreError",
    "TaskEvent",
    "open_store",
]
