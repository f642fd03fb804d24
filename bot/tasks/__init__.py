"""Task model, statuses, transitions and retry rules: pure functions, no I/O."""

from bot.tasks.model import (
    ACTIVE,
    TASK_FIELDS,
    TERMINAL,
    RetryKind,
    Status,
    Task,
    new_id,
    utcnow,
)

__all__ = ["ACTIVE", "TASK_FIELDS", "TERMINAL", "RetryKind", "Status", "Task", "new_id", "utcnow"]
