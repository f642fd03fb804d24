"""The JSON API (SPEC §9): read tasks, attempts, logs, events and deliveries; retry or stop a
task; replay a delivery.

Query and body parsing are pure functions raising :class:`ApiError` (a 4xx with a message).
Retry and stop apply the same rules as the ``@patchwright`` commands (:mod:`bot.tasks.rules`)
with one conditional store update, like ``patchwright tasks retry|stop``; the status comment on
GitHub catches up with the next event or reconciler pass.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from bot.operations.commands import run_task_command
from bot.operations.decisions import LostRaces
from bot.operations.edit import MAX_INSTRUCTIONS_CHARS, edit_problem, edit_task_input
from bot.operations.outcomes import DEFINITIONS, OUTCOME_TASK_LIMIT, read_outcomes
from bot.operations.replay import Replay, replay_delivery
from bot.operations.services import Services
from bot.store.base import DeliveryState, DeliveryVerdict, Store, TaskCursor
from bot.tasks.model import Status, Task
from bot.tasks.verbs import Verb
from bot.web import paging, views
from bot.web.events import (
    EventStreamOptions,
    StreamClosed,
    TaskFeed,
    stream_task_events,
)

log = logging.getLogger(__name__)

ACTOR = "api"  # the audit trail's actor for changes made through this API
AUTHOR = "the API"  # how rule reasons name who asked ("Paused by the API.")
MAX_ID_CHARS = 200
INVALID_ID = "No {kind} with that id: an id is 1 to {max} printable characters."
TASK_LIST_DEFAULT, TASK_LIST_MAX = 500, 1000
DELIVERY_LIST_DEFAULT, DELIVERY_LIST_MAX = 100, 1000
_REPO = re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A request the API answers with ``status`` (4xx) and a message saying what would work."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def json_errors(handler: Handler) -> Handler:
    """Answer :class:`ApiError` with its status, and a failing store with 503 (never a 500)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.message)
        except web.HTTPException:
            raise
        except StreamClosed:
            return error_response(503, "The server is shutting down; reconnect shortly.")
        except Exception as exc:
            log.exception("web API %s %s failed", request.method, request.path)
            return error_response(503, f"The store could not answer ({type(exc).__name__}); try again.")

    return wrapped


# -- parsing (pure) ----------------------------------------------------------------------


def _choices(kind: Any) -> str:
    return ", ".join(member.value for member in kind)


def parse_status(value: str | None) -> Status | None:
    if value is None or value == "":
        return None
    try:
        return Status(value)
    except ValueError:
        raise ApiError(400, f"Unknown status {value[:40]!r}: use one of {_choices(Status)}.") from None


def parse_state(value: str | None) -> DeliveryState | None:
    if value is None or value == "":
        return None
    try:
        return DeliveryState(value)
    except ValueError:
        raise ApiError(400, f"Unknown state {value[:40]!r}: use one of {_choices(DeliveryState)}.") from None


def parse_repo(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not _REPO.fullmatch(value):
        raise ApiError(400, f"repo must look like owner/name, not {value[:80]!r}.")
    return value


def parse_positive_int(name: str, value: str | None, *, maximum: int | None = None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 9 or int(value) < 1:
        raise ApiError(400, f"{name} must be a positive whole number, not {value[:40]!r}.")
    number = int(value)
    if maximum is not None and number > maximum:
        raise ApiError(400, f"{name} must be at most {maximum}.")
    return number


def parse_limit(value: str | None, *, default: int, maximum: int) -> int:
    return parse_positive_int("limit", value, maximum=maximum) or default


MAX_SEARCH_CHARS = 200
_EVENT = re.compile(r"[a-z_]{1,60}(\.[a-z_]{1,60})?")
_BOTS = {"1": True, "true": True, "0": False, "false": False}


def parse_search(value: str | None) -> str | None:
    """A search text (``q=``): None when empty; at most :data:`MAX_SEARCH_CHARS` printable characters."""
    value = (value or "").strip()
    if not value:
        return None
    if len(value) > MAX_SEARCH_CHARS or not value.isprintable():
        raise ApiError(400, f"q must be at most {MAX_SEARCH_CHARS} printable characters.")
    return value


def parse_event(value: str | None) -> str | None:
    """A delivery event filter: ``issues`` or ``issues.labeled``."""
    if value is None or value == "":
        return None
    if not _EVENT.fullmatch(value):
        raise ApiError(400, f"event must look like issues or issues.labeled, not {value[:60]!r}.")
    return value


def parse_verdict(value: str | None) -> DeliveryVerdict | None:
    if value is None or value == "":
        return None
    try:
        return DeliveryVerdict(value)
    except ValueError:
        raise ApiError(400, f"Unknown verdict {value[:40]!r}: use one of {_choices(DeliveryVerdict)}.") from None


def parse_bots(value: str | None) -> bool | None:
    """``bots=1``: only deliveries bot accounts sent; ``bots=0``: none of them; absent: all."""
    if value is None or value == "":
        return None
    if value not in _BOTS:
        raise ApiError(400, f"bots must be 1 (only bots) or 0 (no bots), not {value[:20]!r}.")
    return _BOTS[value]


def parse_task_cursor(value: str | None) -> TaskCursor | None:
    if value is None or value == "":
        return None
    try:
        return paging.decode_task_cursor(value)
    except paging.BadCursor as exc:
        raise ApiError(400, str(exc)) from None


def parse_delivery_cursor(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return paging.decode_delivery_cursor(value)
    except paging.BadCursor as exc:
        raise ApiError(400, str(exc)) from None


def is_valid_id(value: str) -> bool:
    """Whether ``value`` can name a task or delivery: 1 to :data:`MAX_ID_CHARS` printable
    characters. A NUL byte (which PostgreSQL refuses in text), any other control or format
    character, a lone surrogate (bytes that were not UTF-8) or an absurd length cannot."""
    return 0 < len(value) <= MAX_ID_CHARS and value.isprintable()


def check_id(kind: str, value: str) -> str:
    """An id from the path. One that cannot exist (:func:`is_valid_id`) is a 404 without
    asking the store, and the answer does not repeat it."""
    if not is_valid_id(value):
        raise ApiError(404, INVALID_ID.format(kind=kind, max=MAX_ID_CHARS))
    return value


def parse_retry_body(body: bytes) -> str:
    """The instructions of a retry: an empty body, or JSON ``{"instructions": "..."}``."""
    if not body.strip():
        return ""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, 'The body must be JSON like {"instructions": "what to do differently"}.') from None
    if not isinstance(data, dict):
        raise ApiError(400, 'The body must be a JSON object like {"instructions": "..."}.')
    unknown = sorted(set(data) - {"instructions"})
    if unknown:
        raise ApiError(400, f"Unknown field(s) {', '.join(unknown)}: the only field is 'instructions'.")
    instructions = data.get("instructions", "")
    if instructions is None:
        instructions = ""
    if not isinstance(instructions, str):
        raise ApiError(400, "'instructions' must be a string.")
    if len(instructions) > MAX_INSTRUCTIONS_CHARS:
        raise ApiError(400, f"'instructions' is longer than {MAX_INSTRUCTIONS_CHARS} characters.")
    return instructions


EDIT_FIELDS = ("spec", "instructions")
EDIT_BODY_EXAMPLE = '{"spec": "the new issue text", "instructions": "what the next attempt must do"}'


def parse_edit_body(body: bytes) -> tuple[str | None, str | None]:
    """(spec, instructions) of ``PATCH /api/tasks/{id}``: a JSON object with either or both
    (a field left out, or null, stays as it is; "" clears the instructions)."""
    try:
        data = json.loads(body) if body.strip() else None
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, f"The body must be JSON like {EDIT_BODY_EXAMPLE}.") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"The body must be a JSON object like {EDIT_BODY_EXAMPLE}.")
    unknown = sorted(set(data) - set(EDIT_FIELDS))
    if unknown:
        raise ApiError(400, f"Unknown field(s) {', '.join(unknown)[:200]}: the fields are 'spec' and 'instructions'.")
    values: list[str | None] = []
    for name in EDIT_FIELDS:
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise ApiError(400, f"'{name}' must be a string.")
        values.append(value)
    spec, instructions = values
    if (problem := edit_problem(spec, instructions)) is not None:
        raise ApiError(400, problem)
    return spec, instructions


# -- actions --------------------------------------------------------------------------------


async def task_in_path(store: Store, request: web.Request) -> Task:
    """The task the request's ``{task_id}`` names; a 404 :class:`ApiError` when none."""
    task_id = check_id("task", request.match_info["task_id"])
    task = await store.get_task(task_id)
    if task is None:
        raise ApiError(404, f"No task {task_id!r}: GET /api/tasks lists them.")
    return task


# -- handlers -----------------------------------------------------------------------------


class WebApi:
    """The ``/api`` request handlers over one store."""

    def __init__(
        self,
        store: Store,
        *,
        services: Callable[[], Services],
        html_base: str,
        feed: TaskFeed,
        stream_options: EventStreamOptions,
    ) -> None:
        self.store = store
        self.services = services
        self.html_base = html_base
        self.feed = feed
        self.stream_options = stream_options

    def summary(self, task: Task) -> dict[str, Any]:
        return views.task_summary_json(task, html_base=self.html_base)

    async def _task(self, request: web.Request) -> Task:
        return await task_in_path(self.store, request)

    async def list_tasks(self, request: web.Request) -> web.Response:
        q: Mapping[str, str] = request.query
        status = parse_status(q.get("status"))
        repo = parse_repo(q.get("repo"))
        limit = parse_limit(q.get("limit"), default=TASK_LIST_DEFAULT, maximum=TASK_LIST_MAX)
        search = parse_search(q.get("q"))
        before = parse_task_cursor(q.get("cursor"))
        fetched = await self.store.list_tasks(
            statuses=[status] if status else None, repo=repo, limit=limit + 1, search=search, before=before
        )
        tasks, more = paging.split_page(fetched, limit)
        return web.json_response({
            "tasks": [self.summary(t) for t in tasks],
            "count": len(tasks),
            "has_more": more,
            "next_cursor": paging.task_cursor(tasks[-1]) if more else None,
        })

    async def get_task(self, request: web.Request) -> web.Response:
        task = await self._task(request)
        attempts = await self.store.list_attempts(task.id)
        events = await self.store.list_events(task.id)
        body = views.task_json(task, html_base=self.html_base)
        body["attempts"] = [views.attempt_json(a) for a in attempts]
        body["events"] = [views.event_json(e) for e in events]
        return web.json_response(body)

    async def task_logs(self, request: web.Request) -> web.Response:
        attempt = parse_positive_int("attempt", request.query.get("attempt"))
        task = await self._task(request)
        lines = await self.store.read_logs(task.id, attempt)
        return web.json_response(views.logs_json(task.id, attempt, lines))

    async def list_deliveries(self, request: web.Request) -> web.Response:
        q = request.query
        state = parse_state(q.get("state"))
        repo = parse_repo(q.get("repo"))
        limit = parse_limit(q.get("limit"), default=DELIVERY_LIST_DEFAULT, maximum=DELIVERY_LIST_MAX)
        fetched = await self.store.list_deliveries(
            limit=limit + 1, state=state, repo=repo, event=parse_event(q.get("event")),
            verdict=parse_verdict(q.get("verdict")), from_bots=parse_bots(q.get("bots")),
            before_seq=parse_delivery_cursor(q.get("cursor")),
        )
        rows, more = paging.split_page(fetched, limit)
        return web.json_response({
            "deliveries": [views.delivery_json(d) for d in rows],
            "count": len(rows),
            "has_more": more,
            "next_cursor": paging.delivery_cursor(rows[-1]) if more else None,
        })

    async def get_delivery(self, request: web.Request) -> web.Response:
        delivery_id = check_id("delivery", request.match_info["delivery_id"])
        row = await self.store.get_delivery(delivery_id)
        if row is None:
            raise ApiError(404, f"No delivery {delivery_id!r}: GET /api/deliveries lists them.")
        return web.json_response(views.delivery_json(row))

    def task_command(self, verb: Verb) -> Callable[[web.Request], Awaitable[web.Response]]:
        """``POST /api/tasks/{id}/<verb>`` for a verb of the table (bot.tasks.verbs): the same
        command as the comment; a verb that takes text reads ``{"instructions": …}``."""

        async def handle(request: web.Request) -> web.Response:
            task_id = check_id("task", request.match_info["task_id"])
            instructions = parse_retry_body(await request.read()) if verb.takes_text else ""
            return await self._command(task_id, verb.name, instructions)

        return handle

    async def _command(self, task_id: str, verb: str, instructions: str) -> web.Response:
        try:
            result = await run_task_command(
                self.services(), task_id, verb, actor=ACTOR, author=AUTHOR, instructions=instructions
            )
        except LostRaces:
            raise ApiError(409, f"Task {task_id} kept changing while applying {verb}; try again.") from None
        if result is None:
            raise ApiError(404, f"No task {task_id!r}.")
        if not result.accepted:
            raise ApiError(409, result.reason)
        assert result.task is not None
        return web.json_response(
            {
                "message": f"{task_id}: {result.previous_status.value} -> {result.task.status.value}",
                "reason": result.reason,
                "task": views.task_json(result.task, html_base=self.html_base),
            }
        )

    async def edit_task(self, request: web.Request) -> web.Response:
        """``PATCH /api/tasks/{id}``: edit a paused task's spec and instructions (409 naming
        the status otherwise)."""
        task_id = check_id("task", request.match_info["task_id"])
        spec, instructions = parse_edit_body(await request.read())
        try:
            result = await edit_task_input(
                self.services(), task_id, spec=spec, instructions=instructions, actor=ACTOR, author=AUTHOR
            )
        except LostRaces:
            raise ApiError(409, f"Task {task_id} kept changing while editing it; try again.") from None
        if result is None:
            raise ApiError(404, f"No task {task_id!r}.")
        if not result.accepted and result.previous.status is not Status.PAUSED:
            return web.json_response({"error": result.reason, "status": result.previous.status.value}, status=409)
        task = result.task or result.previous  # a paused task edited to what it has: unchanged
        return web.json_response(
            {"message": f"{task_id}: input {'edited' if result.accepted else 'unchanged'}", "reason": result.reason,
             "edited": result.accepted, "task": views.task_json(task, html_base=self.html_base)}
        )

    async def replay_delivery(self, request: web.Request) -> web.Response:
        delivery_id = check_id("delivery", request.match_info["delivery_id"])
        result = await replay_delivery(self.store, delivery_id)
        if result.outcome is Replay.NOT_FOUND:
            raise ApiError(404, f"No delivery {delivery_id!r}.")
        if not result.queued:
            raise ApiError(409, result.message[:1].upper() + result.message[1:] + ".")
        body: dict[str, Any] = {"message": f"Delivery {delivery_id} queued again; a running dispatcher processes it."}
        if result.delivery is not None:
            body["delivery"] = views.delivery_json(result.delivery)
        return web.json_response(body, status=202)

    async def events(self, request: web.Request) -> web.StreamResponse:
        return await stream_task_events(request, self.feed, self.stream_options, task_view=self.summary)

    async def outcomes(self, request: web.Request) -> web.Response:
        """Outcome records per (preset, model) over the newest tasks, with what each number means."""
        records = await read_outcomes(self.store)
        return web.json_response({
            "outcomes": [r.as_json() for r in records],
            "count": len(records),
            "task_limit": OUTCOME_TASK_LIMIT,
            "definitions": dict(DEFINITIONS),
        })

    async def not_found(self, request: web.Request) -> web.Response:
        raise ApiError(404, f"No API endpoint {request.method} {request.path[:200]}.")
