"""Structured logging: text or JSON lines, with delivery id, task id and repo on every line.

The ids travel in context variables, so a handler or worker sets them once (``log_context``)
and every log call below it carries them.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TextIO

_CONTEXT: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("patchwright_log_context")
CONTEXT_KEYS = ("delivery_id", "task_id", "repo")


@contextlib.contextmanager
def log_context(**values: str | int | None) -> Iterator[None]:
    """Attach ids (delivery_id, task_id, repo, …) to every log line written inside the block."""
    current = dict(_CONTEXT.get({}))
    current.update({k: str(v) for k, v in values.items() if v is not None and v != ""})
    token = _CONTEXT.set(current)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.pw_context = _CONTEXT.get({})
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "pw_context", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ctx = getattr(record, "pw_context", {})
        if ctx:
            line += " [" + " ".join(f"{k}={v}" for k, v in ctx.items()) + "]"
        return line


def configure_logging(fmt: str = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Install one handler on the root logger (called once, from the CLI)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
