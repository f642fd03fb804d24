"""The status graph (SPEC §3.1) and the value every task rule returns: a :class:`Decision`.

Pure data, no I/O. :mod:`bot.tasks.rules` builds decisions; adapters apply them with one
conditional store update (``status IN from_statuses``) and then carry out ``effects``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from bot.tasks.model import Status, Task

_P, _RUN, _REV, _W, _PA = Status.PENDING, Status.RUNNING, Status.REVIEW, Status.WAITING, Status.PAUSED
_M, _C, _F = Status.MERGED, Status.CLOSED, Status.FAILED

ALLOWED_TRANSITIONS: Mapping[Status, frozenset[Status]] = MappingProxyType(
    {
        # claim; stop/unlabel; cancel, issue or PR closed; PR merged
        _P: frozenset({_RUN, _PA, _C, _M}),
        # push; retry/transient/start over; questions; stop; failure; close; merge
        _RUN: frozenset({_REV, _P, _W, _PA, _F, _C, _M}),
        # CI/feedback/conflict retry, start over; breaker/budget/cost; close; merge
        _REV: frozenset({_P, _F, _C, _M}),
        # answers, start over; stop; close; merge
        _W: frozenset({_P, _PA, _C, _M}),
        # resume/retry/start over; close; merge
        _PA: frozenset({_P, _C, _M}),
        # start over only
        _M: frozenset({_P}),
        # start over (or label added again); the PR was merged after all
        _C: frozenset({_P, _M}),
        # retry, start over (or label added again); cancel/issue or PR closed; merged anyway
        _F: frozenset({_P, _C, _M}),
    }
)
"""Status changes a decision may make. A decision that keeps the status (a start over of a
pending task, a spec refresh, queued feedback, a cost update) is not a status change."""


def is_allowed(old: Status, new: Status) -> bool:
    """Whether a decision may move a task from ``old`` to ``new`` (same status: always)."""
    return old == new or new in ALLOWED_TRANSITIONS[old]


MENTION_PLACEHOLDER = "{bot}"
"""Stands for the bot's mention (``@<app-slug>``) inside reason strings; see :func:`render_reason`."""


def render_reason(reason: str, mention: str) -> str:
    """``reason`` with the bot's mention filled in (plain replace: safe for user text with braces)."""
    return reason.replace(MENTION_PLACEHOLDER, mention)


class Effect(str, enum.Enum):
    """What the adapter must do once the store accepted the change.

    Effects that name a PR or branch refer to ``Decision.previous`` (start over clears them
    on the new value).
    """

    STOP_AGENT = "stop_agent"  # cancel the running agent (its work is salvaged, SPEC §6.6)
    CLOSE_PR = "close_pr"  # close previous.pr_number
    DELETE_BRANCH = "delete_branch"  # delete previous.branch
    WAKE_WORKERS = "wake_workers"  # store.notify_pending(): a task became pending
    POST_QUESTIONS = "post_questions"  # post the agent's questions on the issue

    def __str__(self) -> str:
        return self.value


class InvalidDecisionError(ValueError):
    """A rule built a decision that breaks the status graph (a bug in the rules)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one rule: accepted (with the new task value) or refused (task unchanged)."""

    accepted: bool  # False = refused/ignored; task unchanged
    task: Task  # the new value (the old one when refused)
    reason: str  # plain words; may contain MENTION_PLACEHOLDER (see render_reason)
    from_statuses: tuple[Status, ...]  # the condition for the store's conditional UPDATE
    effects: tuple[Effect, ...] = ()
    previous: Task | None = None  # the value the decision was made from

    def __post_init__(self) -> None:
        if not self.accepted:
            if self.effects or self.from_statuses:
                raise InvalidDecisionError("a refused decision has no effects and no update condition")
            return
        if self.previous is None:
            raise InvalidDecisionError("an accepted decision needs the previous task value")
        old, new = self.previous.status, self.task.status
        if old not in self.from_statuses:
            raise InvalidDecisionError(f"from_statuses {self.from_statuses} lacks the old status {old}")
        if not is_allowed(old, new):
            raise InvalidDecisionError(f"transition {old} -> {new} is not allowed")

    @property
    def changes(self) -> dict[str, Any]:
        """The fields the store must write (empty when refused)."""
        if not self.accepted or self.previous is None:
            return {}
        return self.previous.diff(self.task)

    @property
    def status_changed(self) -> bool:
        return self.previous is not None and self.previous.status != self.task.status

    def reason_for(self, mention: str) -> str:
        """The reason with the bot's mention filled in."""
        return render_reason(self.reason, mention)
