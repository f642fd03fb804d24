"""Cursors of the paged listings (pure): opaque, url-safe strings a client hands back to get the
next page of ``/api/tasks``, ``/api/deliveries``, the board and the deliveries page.

A cursor is the base64url form (no padding) of a small JSON object: ``{"t": created_at,
"id": task id}`` for tasks (:class:`~bot.store.base.TaskCursor`), ``{"seq": n}`` for
deliveries. Decoding is strict: anything that is not exactly such an object raises
:class:`BadCursor`, whose message fits on one line. A page is fetched with one row more than
its size, so :func:`split_page` knows whether another page follows.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

from bot.store.base import Delivery, TaskCursor
from bot.tasks.model import Task

MAX_CURSOR_CHARS = 600
BAD_CURSOR = "That cursor is not one this server gave out: use the next_cursor of the previous page, or none."

Row = TypeVar("Row")


class BadCursor(ValueError):
    """A cursor that was not made by :func:`task_cursor` or :func:`delivery_cursor`."""

    def __init__(self) -> None:
        super().__init__(BAD_CURSOR)


def _encode(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode(cursor: str, keys: frozenset[str]) -> dict[str, Any]:
    if not cursor or len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii():
        raise BadCursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError):
        raise BadCursor() from None
    if not isinstance(data, dict) or set(data) != keys:
        raise BadCursor()
    return data


def task_cursor(task: Task) -> str:
    """The cursor of the page after ``task`` (the last task of a page)."""
    return _encode({"t": task.created_at.isoformat(), "id": task.id})


def decode_task_cursor(cursor: str) -> TaskCursor:
    """The position :func:`task_cursor` encoded; :class:`BadCursor` for anything else."""
    data = _decode(cursor, frozenset({"t", "id"}))
    at, task_id = data["t"], data["id"]
    if not isinstance(at, str) or not isinstance(task_id, str) or not task_id or not task_id.isprintable():
        raise BadCursor()
    try:
        created_at = datetime.fromisoformat(at)
    except ValueError:
        raise BadCursor() from None
    if created_at.tzinfo is None:
        raise BadCursor()
    return TaskCursor(created_at=created_at.astimezone(UTC), id=task_id)


def delivery_cursor(delivery: Delivery) -> str:
    """The cursor of the page after ``delivery`` (the last row of a page)."""
    return _encode({"seq": delivery.seq})


def decode_delivery_cursor(cursor: str) -> int:
    """The ledger ``seq`` :func:`delivery_cursor` encoded; :class:`BadCursor` for anything else."""
    seq = _decode(cursor, frozenset({"seq"}))["seq"]
    if type(seq) is not int or seq < 1 or seq > 2**63 - 1:
        raise BadCursor()
    return seq


def split_page(rows: Sequence[Row], limit: int) -> tuple[list[Row], bool]:
    """The first ``limit`` of ``rows`` (fetched as ``limit + 1``) and whether more follow."""
    return list(rows[:limit]), len(rows) > limit


def page_href(path: str, query: Mapping[str, str], **changes: str | None) -> str:
    """``path`` with ``query`` changed by ``changes`` (None drops a key; ``fragment`` is always
    dropped): the address of another page of the same listing."""
    params = {k: v for k, v in query.items() if k != "fragment"}
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return path + ("?" + urlencode(params) if params else "")
