"""The verb table (SPEC §4.2, §9): every command a person can give a task, whichever way it
arrives — a comment, a check-run button, ``patchwright tasks …`` or the web API. Pure.

A row names the verb and the rule that decides it; :mod:`bot.operations.commands` applies
it the same way for every entry point. Adding a command is one row here, one rule in
:mod:`bot.tasks.rules`, its reason texts in :mod:`bot.messages.reasons` and one help line in
:data:`bot.messages.COMMAND_HELP`; the comment parser (:mod:`bot.commands`) learns the verb
from this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from bot.tasks import rules
from bot.tasks.model import Task

RETRY = "retry"
STOP = "stop"
RESUME = "resume"
START_OVER = "start over"
CANCEL = "cancel"
STATUS = "status"
HELP = "help"


@dataclass(frozen=True, slots=True)
class Budget:
    """The repository's budget settings a command's rule takes into account (the defaults
    when the repository's config is not at hand, e.g. from the command line)."""

    max_attempts: int = rules.DEFAULT_MAX_ATTEMPTS
    max_cost_usd: float | None = None
    feedback_limit: int = rules.FEEDBACK_RETRY_LIMIT


@dataclass(frozen=True, slots=True)
class CommandInput:
    """What a command carries besides the task: who gave it, when, and its free text."""

    now: datetime
    author: str
    instructions: str = ""
    budget: Budget = field(default_factory=Budget)


Rule = Callable[[Task, CommandInput], rules.Decision]


@dataclass(frozen=True, slots=True)
class Verb:
    """One command. ``takes_text``: free text follows it (a comment's following lines count
    too); ``destructive``: in a comment it only counts with nothing after it; ``button``:
    offered as a check-run button (its identifier is the verb's name)."""

    name: str
    decide: Rule
    takes_text: bool = False
    destructive: bool = False
    button: bool = False


def _retry(task: Task, given: CommandInput) -> rules.Decision:
    return rules.manual_retry(
        task,
        instructions=given.instructions,
        now=given.now,
        author=given.author,
        max_cost_usd=given.budget.max_cost_usd,
        feedback_limit=given.budget.feedback_limit,
    )


def _stop(task: Task, given: CommandInput) -> rules.Decision:
    return rules.stop(task, now=given.now, author=given.author)


def _resume(task: Task, given: CommandInput) -> rules.Decision:
    return rules.resume(task, now=given.now)


def _start_over(task: Task, given: CommandInput) -> rules.Decision:
    return rules.start_over(task, max_attempts=given.budget.max_attempts, now=given.now)


def _cancel(task: Task, given: CommandInput) -> rules.Decision:
    return rules.cancel(task, now=given.now, author=given.author)


TASK_VERBS: tuple[Verb, ...] = (
    Verb(RETRY, _retry, takes_text=True, button=True),
    Verb(STOP, _stop, button=True),
    Verb(RESUME, _resume),
    Verb(START_OVER, _start_over, destructive=True),
    Verb(CANCEL, _cancel, destructive=True),
)
"""The verbs that change a task, in the order the help text lists them."""

BY_NAME: MappingProxyType[str, Verb] = MappingProxyType({v.name: v for v in TASK_VERBS})

REPLY_VERBS: tuple[str, ...] = (STATUS, HELP)
"""Verbs that only answer (in a comment) and change nothing."""

NAMES: tuple[str, ...] = (*(v.name for v in TASK_VERBS), *REPLY_VERBS)
"""Every named command, in the order the help text lists them."""


def slug(name: str) -> str:
    """A verb's name as one word, for a command-line action or a URL path
    (``start over`` → ``start-over``)."""
    return name.replace(" ", "-")


def verb(name: str) -> Verb | None:
    """The task verb called ``name`` (None for a reply verb or an unknown word)."""
    return BY_NAME.get(name)


__all__ = [
    "BY_NAME",
    "CANCEL",
    "HELP",
    "NAMES",
    "REPLY_VERBS",
    "RESUME",
    "RETRY",
    "START_OVER",
    "STATUS",
    "STOP",
    "TASK_VERBS",
    "Budget",
    "CommandInput",
    "Verb",
    "slug",
    "verb",
]
