"""Persistence: the Store protocol and its SQLite and PostgreSQL backends."""

from bot.store.base import (
    Attempt,
    Delivery,
    DeliveryState,
    Installation,
    Store,
    StoreError,
    TaskEvent,
)

__all__ = [
    "Attempt",
    "Delivery",
    "DeliveryState",
    "Installation",
    "Store",
    "StoreError",
    "TaskEvent",
]
