"""What an event or an operation that deliberately does nothing raises: :class:`Ignored`,
with the reason (recorded on the delivery's row, or returned by the reconciler)."""

from __future__ import annotations


class Ignored(Exception):
    """Nothing to do, on purpose; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


__all__ = ["Ignored"]
