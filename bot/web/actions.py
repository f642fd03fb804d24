"""The dashboard's actions (SPEC §9): the POST handlers of the task page's forms (a verb of the
table, the input edit) and of the delivery page's replay button.

Each runs the same operation as the API and the comment (:func:`run_task_command`,
:func:`edit_task_input`, :func:`replay_delivery`) with the actor :data:`ACTOR`, then answers
303 back to the page, which shows what happened once (a signed, short-lived notice cookie):
the reason when accepted, the rule's reason (the API's 409 text) when refused.

Who may act: the admin token, as the dashboard's login cookie *with* the form's CSRF field
(an HMAC of a fixed context keyed by the token, which only a page of this dashboard shows),
or as a bearer header. The login cookie is ``SameSite=Lax`` too. Anything else is refused
(401 with the login form, or 403) and nothing changes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from bot.operations.commands import run_task_command
from bot.operations.decisions import LostRaces
from bot.operations.edit import MAX_INSTRUCTIONS_CHARS, edit_problem, edit_task_input
from bot.operations.replay import Replay, replay_delivery
from bot.operations.services import Services
from bot.tasks import verbs
from bot.tasks.model import Task
from bot.tasks.rules import instructions_of
from bot.web import views
from bot.web.api import ApiError, check_id
from bot.web.auth import (
    NO_TOKEN_FOR_WRITES,
    cookie_matches,
    request_credentials,
    token_matches,
)
from bot.web.pages.actions import (
    CONFIRM_FIELD,
    CONFIRM_VALUE,
    CSRF_FIELD,
    INSTRUCTIONS_FIELD,
    SPEC_FIELD,
    ActionsView,
    Notice,
    render_notice,
    render_task_actions,
)
from bot.web.pages.html import html_errors, html_response, redirect, render_message

ACTOR = "dashboard"  # the audit trail's actor for changes made from the dashboard
AUTHOR = "the dashboard"  # how rule reasons name who asked ("Paused by the dashboard.")
NOTICE_COOKIE = "patchwright_notice"
NOTICE_MAX_AGE_S = 120
NOTICE_MAX_CHARS = 1500
_CSRF_CONTEXT = b"patchwright dashboard form v1"
_NOTICE_CONTEXT = b"patchwright dashboard notice v1"

FORM_NEEDS_LOGIN = "This action needs the admin token: log in (PATCHWRIGHT_ADMIN_TOKEN)."
FORGED_FORM = (
    "This form was not sent by this dashboard's page (its CSRF field is missing or wrong): "
    "reload the page and try again."
)
NOT_CONFIRMED = "Not done: tick the box to confirm {verb}."
KEPT_CHANGING = "Task {id} kept changing while applying {verb}; try again."
TOO_LONG = "Not done: the instructions are longer than {max} characters."
REPLAYED = "Delivery {id} queued again; a running dispatcher processes it."


# -- who may act (pure) -----------------------------------------------------------------------


def csrf_token(admin_token: str) -> str:
    """The CSRF field of the dashboard's forms: an HMAC keyed by the admin token."""
    return hmac.new(admin_token.encode("utf-8", "surrogatepass"), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class FormAccess:
    """Whether a form's POST may act: ``status`` 200 when it may, else 401/403 and why."""

    status: int
    message: str = ""

    @property
    def allowed(self) -> bool:
        return self.status == 200


def decide_form_access(
    *, admin_token: str | None, bearer: str | None, cookie: str | None, csrf: str | None
) -> FormAccess:
    """A form's POST acts with the bearer token, or with the login cookie and the CSRF field."""
    if not admin_token:
        return FormAccess(403, NO_TOKEN_FOR_WRITES)
    if bearer is not None and token_matches(bearer, admin_token):
        return FormAccess(200)
    if cookie is None or not cookie_matches(cookie, admin_token):
        return FormAccess(401, FORM_NEEDS_LOGIN)
    if csrf is None or not hmac.compare_digest(csrf.encode(), csrf_token(admin_token).encode()):
        return FormAccess(403, FORGED_FORM)
    return FormAccess(200)


def can_act(*, admin_token: str | None, bearer: str | None, cookie: str | None) -> bool:
    """Whether a page's viewer holds the admin token (its forms are then shown)."""
    if not admin_token:
        return False
    if bearer is not None and token_matches(bearer, admin_token):
        return True
    return cookie is not None and cookie_matches(cookie, admin_token)


def actions_view(request: web.Request, admin_token: str | None, next_path: str) -> ActionsView:
    """What the viewer of a page may do (for :mod:`bot.web.pages.actions`' renderers)."""
    credentials = request_credentials(request.headers, request.cookies)
    return ActionsView(
        token_configured=bool(admin_token),
        can_act=can_act(admin_token=admin_token, bearer=credentials.bearer, cookie=credentials.cookie),
        csrf=csrf_token(admin_token) if admin_token else "",
        next_path=next_path,
    )


# -- the notice an action leaves (pure) ----------------------------------------------------------


def _notice_mac(admin_token: str, payload: str) -> str:
    key = admin_token.encode("utf-8", "surrogatepass")
    return hmac.new(key, _NOTICE_CONTEXT + payload.encode(), hashlib.sha256).hexdigest()


def encode_notice(notice: Notice, admin_token: str) -> str:
    """The notice as a cookie value: base64 of its JSON, a dot, its HMAC."""
    data = {"s": notice.subject, "ok": notice.accepted, "t": notice.text[:NOTICE_MAX_CHARS]}
    payload = base64.urlsafe_b64encode(json.dumps(data, ensure_ascii=False).encode()).decode().rstrip("=")
    return f"{payload}.{_notice_mac(admin_token, payload)}"


def decode_notice(value: str | None, admin_token: str | None, subject: str) -> Notice | None:
    """The notice in a cookie value when it is signed with the token and about ``subject``."""
    if not value or not admin_token or "." not in value:
        return None
    payload, mac = value.rsplit(".", 1)
    if not hmac.compare_digest(mac.encode(), _notice_mac(admin_token, payload).encode()):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(data, dict) or data.get("s") != subject:
        return None
    return Notice(subject=subject, accepted=bool(data.get("ok")), text=str(data.get("t", "")))


def form_text(value: Any) -> str | None:
    """A form field's text with the browser's CRLF line ends made LF (absent: None)."""
    return value.replace("\r\n", "\n") if isinstance(value, str) else None


def edited_fields(task: Task, spec: str | None, instructions: str | None) -> tuple[str | None, str | None]:
    """(spec, instructions) of the edit form, each None where the form left it out or it is
    what the task has (the page's form sends both; a browser sends CRLF line ends)."""
    new_spec = None if spec is None or spec == task.spec.replace("\r\n", "\n") else spec
    same = instructions is None or instructions.strip() == instructions_of(task).strip()
    return new_spec, None if same else instructions


# -- the pages' parts (thin) ---------------------------------------------------------------------


def task_actions(request: web.Request, admin_token: str | None, task: Task, *, now: datetime) -> str:
    """The task page's actions section for this request's viewer."""
    view = actions_view(request, admin_token, views.task_path(task.id))
    return render_task_actions(task, view, now=now)


def with_notice(
    request: web.Request, admin_token: str | None, subject: str, build: Callable[[str], web.Response]
) -> web.Response:
    """``build(notice_html)``: the page with the notice of the last action on ``subject``
    (shown once: the cookie is cleared)."""
    raw = request.cookies.get(NOTICE_COOKIE)
    response = build(render_notice(decode_notice(raw, admin_token, subject)))
    if raw is not None:
        response.del_cookie(NOTICE_COOKIE, path="/")
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DashboardActions:
    """The POST handlers of the dashboard's forms."""

    def __init__(self, *, admin_token: str | None, services: Callable[[], Services]) -> None:
        self._admin_token = admin_token
        self.services = services

    async def _form(self, request: web.Request, back: str) -> tuple[Any, web.Response | None]:
        """The posted form, or the refusal to answer instead (nothing is done then). The body
        is read only for a viewer holding the token (its CSRF field is in it); ``back``: the
        page the form is on."""
        credentials = request_credentials(request.headers, request.cookies)
        holds_token = can_act(admin_token=self._admin_token, bearer=credentials.bearer, cookie=credentials.cookie)
        form = await request.post() if holds_token else {}
        csrf = form.get(CSRF_FIELD)
        access = decide_form_access(
            admin_token=self._admin_token,
            bearer=credentials.bearer,
            cookie=credentials.cookie,
            csrf=csrf if isinstance(csrf, str) else None,
        )
        if access.allowed:
            return form, None
        if access.status == 401:
            page = render_message("Log in", access.message, login_next=back)
        else:
            page = render_message("Not done", access.message)
        return form, html_response(page, status=access.status)

    def _back(self, path: str, notice: Notice) -> web.Response:
        response = redirect(path)
        assert self._admin_token  # only reached after decide_form_access allowed the form
        response.set_cookie(
            NOTICE_COOKIE, encode_notice(notice, self._admin_token), max_age=NOTICE_MAX_AGE_S, path="/",
            httponly=True, samesite="Lax",
        )
        return response

    def task_verb(self, verb: verbs.Verb) -> Handler:
        """``POST /tasks/{id}/<verb>``: the verb through the same operation as the API."""

        async def handle(request: web.Request) -> web.StreamResponse:
            task_id = check_id("task", request.match_info["task_id"])
            back = views.task_path(task_id)
            form, refusal = await self._form(request, back)
            if refusal is not None:
                return refusal
            if verb.destructive and form.get(CONFIRM_FIELD) != CONFIRM_VALUE:
                return self._back(back, Notice(task_id, False, NOT_CONFIRMED.format(verb=verb.name)))
            instructions = (form_text(form.get(INSTRUCTIONS_FIELD)) or "") if verb.takes_text else ""
            if len(instructions) > MAX_INSTRUCTIONS_CHARS:
                return self._back(back, Notice(task_id, False, TOO_LONG.format(max=MAX_INSTRUCTIONS_CHARS)))
            try:
                result = await run_task_command(
                    self.services(), task_id, verb.name, actor=ACTOR, author=AUTHOR, instructions=instructions
                )
            except LostRaces:
                return self._back(back, Notice(task_id, False, KEPT_CHANGING.format(id=task_id, verb=verb.name)))
            if result is None:
                raise ApiError(404, f"There is no task {task_id!r}.")
            return self._back(back, Notice(task_id, result.accepted, result.reason))

        return html_errors(handle)

    async def _edit(self, request: web.Request) -> web.StreamResponse:
        task_id = check_id("task", request.match_info["task_id"])
        back = views.task_path(task_id)
        form, refusal = await self._form(request, back)
        if refusal is not None:
            return refusal
        services = self.services()
        task = await services.store.get_task(task_id)
        if task is None:
            raise ApiError(404, f"There is no task {task_id!r}.")
        spec, instructions = edited_fields(task, form_text(form.get(SPEC_FIELD)), form_text(form.get(INSTRUCTIONS_FIELD)))
        if spec is None and instructions is None:
            spec = task.spec  # nothing changed: the rule says so (or why it cannot edit at all)
        if (problem := edit_problem(spec, instructions)) is not None:
            return self._back(back, Notice(task_id, False, problem))
        try:
            result = await edit_task_input(services, task_id, spec=spec, instructions=instructions, actor=ACTOR,
                                           author=AUTHOR)
        except LostRaces:
            return self._back(back, Notice(task_id, False, KEPT_CHANGING.format(id=task_id, verb="edit")))
        if result is None:
            raise ApiError(404, f"There is no task {task_id!r}.")
        return self._back(back, Notice(task_id, result.accepted, result.reason))

    @property
    def edit(self) -> Handler:
        """``POST /tasks/{id}/edit``: edit a paused task's spec and instructions."""
        return html_errors(self._edit)

    async def _replay(self, request: web.Request) -> web.StreamResponse:
        delivery_id = check_id("delivery", request.match_info["delivery_id"])
        back = views.delivery_path(delivery_id)
        _form, refusal = await self._form(request, back)
        if refusal is not None:
            return refusal
        result = await replay_delivery(self.services().store, delivery_id)
        if result.outcome is Replay.NOT_FOUND:
            raise ApiError(404, f"There is no delivery {delivery_id!r}.")
        text = REPLAYED.format(id=delivery_id) if result.queued else result.message[:1].upper() + result.message[1:] + "."
        return self._back(back, Notice(delivery_id, result.queued, text))

    @property
    def replay(self) -> Handler:
        """``POST /deliveries/{id}/replay``: queue a delivery again, as the API does."""
        return html_errors(self._replay)


__all__ = [
    "ACTOR",
    "NOTICE_COOKIE",
    "DashboardActions",
    "FormAccess",
    "actions_view",
    "can_act",
    "csrf_token",
    "decide_form_access",
    "decode_notice",
    "edited_fields",
    "encode_notice",
    "task_actions",
    "with_notice",
]
