"""Giving a task a command (SPEC §4.2, §9), the one way every entry point does it: a comment,
a check-run button, ``patchwright tasks <verb>`` and ``POST /api/tasks/{id}/<verb>``.

The verb's row in :mod:`bot.tasks.verbs` names the rule; :meth:`Context.decide` applies it
with one conditional update (deciding again when another process moved the task first),
writes the audit record, carries out the decision's effects and refreshes the status
comment where this process has a GitHub client.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.config import RepoConfig
from bot.operations.context import Context
from bot.operations.services import Services
from bot.tasks import verbs
from bot.tasks.model import Status, Task
from bot.tasks.rules import Decision


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a command did: the decision (refused or accepted), the task before, and the
    task after (None when the rule refused)."""

    decision: Decision
    previous: Task
    task: Task | None
    reason: str

    @property
    def accepted(self) -> bool:
        return self.task is not None

    @property
    def previous_status(self) -> Status:
        return self.previous.status


def budget_of(config: RepoConfig | None) -> verbs.Budget:
    """The budget settings a command's rule reads (the defaults without a config)."""
    if config is None:
        return verbs.Budget()
    return verbs.Budget(
        max_attempts=config.budget.max_attempts,
        max_cost_usd=config.budget.max_cost_usd,
        feedback_limit=config.budget.max_feedback_retries,
    )


def task_verb(name: str) -> verbs.Verb:
    found = verbs.verb(name)
    if found is None:
        raise ValueError(f"unknown task command {name!r}; the commands are {', '.join(v.name for v in verbs.TASK_VERBS)}")
    return found


async def run_command(
    ctx: Context,
    task: Task,
    name: str,
    *,
    actor: str,
    author: str | None = None,
    instructions: str = "",
    config: RepoConfig | None = None,
) -> CommandResult:
    """Decide and apply the verb ``name`` on ``task`` for ``actor`` (the audit trail's
    name; ``author`` is how reasons name who asked, the actor by default)."""
    verb = task_verb(name)
    given = verbs.CommandInput(
        now=ctx.now, author=actor if author is None else author, instructions=instructions, budget=budget_of(config)
    )
    decision, new = await ctx.decide(task, lambda t: verb.decide(t, given), actor=actor, config=config)
    return CommandResult(decision, decision.previous or task, new, decision.reason_for(ctx.mention))


async def run_task_command(
    services: Services, task_id: str, name: str, *, actor: str, author: str | None = None, instructions: str = ""
) -> CommandResult | None:
    """:func:`run_command` for a task named by its id (the command line and the web API):
    None when there is no such task. The repository's config counts where this process can
    read it (it has a GitHub client); otherwise the default budget does."""
    task_verb(name)
    task = await services.store.get_task(task_id)
    if task is None:
        return None
    ctx = Context(services, task.installation_id)
    config = None
    if ctx.gh_or_none is not None:
        config, _error = await ctx.repo_config(task.repo, task.base_branch)
    return await run_command(ctx, task, name, actor=actor, author=author, instructions=instructions, config=config)


__all__ = ["CommandResult", "budget_of", "run_command", "run_task_command", "task_verb"]
