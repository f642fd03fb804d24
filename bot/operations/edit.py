"""Editing a paused task's input (the issue text snapshot the agent works from and the
maintainer's instructions of the next attempt), the one way every entry point does it:
``PATCH /api/tasks/{id}``, the task page's edit form and ``patchwright tasks edit``.

The rule is :func:`bot.tasks.rules.edit_input` (only while paused); :meth:`Context.decide`
applies it with its audit record (who, which fields, their lengths) and the status comment
line, like every other decision. ``resume`` then starts the next attempt from the new input.
"""

from __future__ import annotations

from bot.operations.commands import CommandResult
from bot.operations.context import Context
from bot.operations.services import Services
from bot.tasks import rules
from bot.tasks.model import Task
from bot.tasks.rules import Decision

#: The longest issue text an edit may set (GitHub's own limit of an issue body).
MAX_SPEC_CHARS = 65_536
#: The longest instructions an edit may set (the same as a retry's through the API).
MAX_INSTRUCTIONS_CHARS = 20_000

NOTHING_GIVEN = "Give the new issue text (spec), the new instructions, or both."
SPEC_TOO_LONG = "The issue text is longer than {max} characters."
INSTRUCTIONS_TOO_LONG = "The instructions are longer than {max} characters."


def edit_problem(spec: str | None, instructions: str | None) -> str | None:
    """What is wrong with an edit's input before any rule is asked (one line), or None."""
    if spec is None and instructions is None:
        return NOTHING_GIVEN
    if spec is not None and len(spec) > MAX_SPEC_CHARS:
        return SPEC_TOO_LONG.format(max=MAX_SPEC_CHARS)
    if instructions is not None and len(instructions) > MAX_INSTRUCTIONS_CHARS:
        return INSTRUCTIONS_TOO_LONG.format(max=MAX_INSTRUCTIONS_CHARS)
    return None


async def edit_task_input(
    services: Services,
    task_id: str,
    *,
    spec: str | None = None,
    instructions: str | None = None,
    actor: str,
    author: str | None = None,
) -> CommandResult | None:
    """Edit the input of the task ``task_id`` for ``actor`` (the audit trail's name;
    ``author`` is how the reason names who edited, the actor by default). None when there is
    no such task. Check the input with :func:`edit_problem` first."""
    if (problem := edit_problem(spec, instructions)) is not None:
        raise ValueError(problem)
    task = await services.store.get_task(task_id)
    if task is None:
        return None
    ctx = Context(services, task.installation_id)
    who = actor if author is None else author

    def rule(current: Task) -> Decision:
        return rules.edit_input(current, spec=spec, instructions=instructions, author=who, now=ctx.now)

    decision, new = await ctx.decide(task, rule, actor=actor)
    return CommandResult(decision, decision.previous or task, new, decision.reason_for(ctx.mention))


__all__ = [
    "MAX_INSTRUCTIONS_CHARS",
    "MAX_SPEC_CHARS",
    "edit_problem",
    "edit_task_input",
]
