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
from bot.store.factory import open_store

__all__ = [
    "Attempt",
    "Delivery",
    "DeliveryState",
    "Installation",
    "Store",
    "StoreError",
    "TaskEvent",
    "open_store",
]
