"""The dashboard's action forms (pure): the task page's command buttons and input editor, the
delivery page's replay button, the notice an action leaves, and the "log in to act" link.

Every action is a plain ``<form method="post">`` (it works without JavaScript and by
keyboard) carrying the CSRF field; a destructive verb (the verb table says which) needs its
confirmation box ticked. Only the verbs whose rule would accept the task as it is are
offered (:func:`offered_verbs` asks the rules, never the wording); the server decides again
when the form arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from bot.messages import COMMAND_HELP
from bot.tasks import verbs
from bot.tasks.model import Status, Task
from bot.tasks.rules import instructions_of
from bot.web import views
from bot.web.pages.html import e

CSRF_FIELD = "csrf"
CONFIRM_FIELD = "confirm"
CONFIRM_VALUE = "yes"
INSTRUCTIONS_FIELD = "instructions"
SPEC_FIELD = "spec"
EDIT_SLUG = "edit"
REPLAY_SLUG = "replay"

ACTIONS_HEADING = "Actions"
BUTTON_LABELS = {
    verbs.RETRY: "Retry",
    verbs.STOP: "Stop",
    verbs.RESUME: "Resume",
    verbs.START_OVER: "Start over",
    verbs.CANCEL: "Cancel the task",
}
CONFIRM_LABELS = {
    verbs.START_OVER: "Yes, start over: the pull request is closed, the branch deleted, attempt 1 begins again",
    verbs.CANCEL: "Yes, cancel: the task, its pull request and its branch are closed for good",
}
CONFIRM_DEFAULT = "Yes, {verb}"
INSTRUCTIONS_LABEL = "Instructions for the next attempt (optional)"
NO_ACTIONS = "Nothing to do for a task that is {status}."
LOG_IN_TO_ACT = "Log in to act"
LOG_IN_TO_ACT_WHY = " on this task (retry, stop, resume, cancel, start over, edit)."
LOG_IN_TO_REPLAY_WHY = " (replay this delivery)."
NO_ADMIN_TOKEN = "Actions need an admin token on the server (PATCHWRIGHT_ADMIN_TOKEN)."
EDIT_HEADING = "Edit the input"
EDIT_HELP = (
    "Only while the task is paused. The next attempt works from this issue text and these "
    "instructions once you resume it."
)
EDIT_SPEC_LABEL = "Issue text (spec)"
EDIT_INSTRUCTIONS_LABEL = "Instructions for the next attempt"
EDIT_BUTTON = "Save the input"
REPLAY_BUTTON = "Replay"
REPLAY_HELP = "Queue this delivery again: the dispatcher processes its payload as if it had just arrived."


@dataclass(frozen=True, slots=True)
class ActionsView:
    """What the viewer may do: ``token_configured`` (the server has an admin token),
    ``can_act`` (this request carries it, as the login cookie or a bearer header), the CSRF
    value its forms carry, and the path to come back to after logging in."""

    token_configured: bool
    can_act: bool
    csrf: str
    next_path: str


@dataclass(frozen=True, slots=True)
class Notice:
    """What an action did, shown once on the page it returns to."""

    subject: str  # the task or delivery id it is about
    accepted: bool
    text: str


def offered_verbs(task: Task, now: datetime) -> tuple[verbs.Verb, ...]:
    """The verbs whose rule would accept ``task`` as it is now (the default budget)."""
    given = verbs.CommandInput(now=now, author="")
    return tuple(v for v in verbs.TASK_VERBS if v.decide(task, given).accepted)


def task_action_path(task_id: str, slug: str) -> str:
    return f"{views.task_path(task_id)}/{slug}"


def delivery_action_path(delivery_id: str, slug: str) -> str:
    return f"{views.delivery_path(delivery_id)}/{slug}"


def login_path(next_path: str) -> str:
    return "/login?" + urlencode({"next": next_path})


def _csrf(view: ActionsView) -> str:
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{e(view.csrf)}">'


def _verb_form(task: Task, verb: verbs.Verb, view: ActionsView) -> str:
    slug = verbs.slug(verb.name)
    label = BUTTON_LABELS.get(verb.name, verb.name.capitalize())
    help_line = COMMAND_HELP[verb.name][1] if verb.name in COMMAND_HELP else ""
    fields = ""
    if verb.takes_text:
        fields += (
            f'<label for="{slug}-instructions">{e(INSTRUCTIONS_LABEL)}</label>'
            f'<textarea id="{slug}-instructions" name="{INSTRUCTIONS_FIELD}" rows="3"></textarea>'
        )
    if verb.destructive:
        confirm = CONFIRM_LABELS.get(verb.name, CONFIRM_DEFAULT.format(verb=verb.name))
        fields += (
            f'<label class="confirm"><input type="checkbox" name="{CONFIRM_FIELD}" value="{CONFIRM_VALUE}" '
            f'required> {e(confirm)}</label>'
        )
    danger = " danger" if verb.destructive else ""
    return (
        f'<form class="action" method="post" action="{e(task_action_path(task.id, slug))}" data-verb="{e(slug)}">'
        f"{_csrf(view)}{fields}"
        f'<button type="submit" class="act{danger}">{e(label)}</button>'
        f'<span class="muted help">{e(help_line)}</span></form>'
    )


def _textarea(field_id: str, name: str, label: str, value: str, rows: int) -> str:
    # The newline after the tag is eaten by the HTML parser, so a value's own first newline stays.
    return (
        f'<label for="{field_id}">{e(label)}</label>'
        f'<textarea id="{field_id}" name="{name}" rows="{rows}">\n{e(value)}</textarea>'
    )


def _edit_form(task: Task, view: ActionsView) -> str:
    return (
        f'<form class="edit" method="post" action="{e(task_action_path(task.id, EDIT_SLUG))}">'
        f"<h3>{e(EDIT_HEADING)}</h3><p class=\"muted\">{e(EDIT_HELP)}</p>{_csrf(view)}"
        + _textarea("edit-spec", SPEC_FIELD, EDIT_SPEC_LABEL, task.spec, 12)
        + _textarea("edit-instructions", INSTRUCTIONS_FIELD, EDIT_INSTRUCTIONS_LABEL, instructions_of(task), 4)
        + f'<button type="submit" class="act">{e(EDIT_BUTTON)}</button></form>'
    )


def _login_to_act(view: ActionsView, why: str) -> str:
    return f'<p class="act-login"><a href="{e(login_path(view.next_path))}">{e(LOG_IN_TO_ACT)}</a>{e(why)}</p>'


def render_task_actions(task: Task, view: ActionsView, *, now: datetime) -> str:
    """The task page's actions: a form per offered verb, the input editor while paused; or
    the "log in to act" link; or why there are none (no admin token on the server)."""
    heading = f'<h2 id="actions-heading">{e(ACTIONS_HEADING)}</h2>'
    wrap = '<section class="actions" aria-labelledby="actions-heading">{}</section>'
    if not view.token_configured:
        return wrap.format(f'{heading}<p class="muted">{e(NO_ADMIN_TOKEN)}</p>')
    if not view.can_act:
        return wrap.format(heading + _login_to_act(view, LOG_IN_TO_ACT_WHY))
    forms = "".join(_verb_form(task, v, view) for v in offered_verbs(task, now))
    if not forms:
        forms = f'<p class="muted">{e(NO_ACTIONS.format(status=task.status.value))}</p>'
    edit = _edit_form(task, view) if task.status is Status.PAUSED else ""
    return wrap.format(f'{heading}<div class="verbs">{forms}</div>{edit}')


def render_replay_button(delivery_id: str, view: ActionsView) -> str:
    """The delivery page's replay form (or the "log in to act" link; "" without an admin
    token on the server)."""
    if not view.token_configured:
        return ""
    if not view.can_act:
        return _login_to_act(view, LOG_IN_TO_REPLAY_WHY)
    return (
        f'<form class="action" method="post" action="{e(delivery_action_path(delivery_id, REPLAY_SLUG))}">'
        f'{_csrf(view)}<button type="submit" class="act">{e(REPLAY_BUTTON)}</button>'
        f'<span class="muted help">{e(REPLAY_HELP)}</span></form>'
    )


def render_notice(notice: Notice | None) -> str:
    """What the last action did, above the page's live content ("" when nothing)."""
    if notice is None:
        return ""
    if notice.accepted:
        return f'<div class="notice ok" role="status">{e(notice.text)}</div>'
    return f'<div class="notice refused" role="alert">{e(notice.text)}</div>'


__all__ = [
    "ActionsView",
    "Notice",
    "offered_verbs",
    "render_notice",
    "render_replay_button",
    "render_task_actions",
]
