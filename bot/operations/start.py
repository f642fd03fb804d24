"""Starting a task (SPEC §4.1): the trigger label on an issue creates its task, or starts the
existing one over; so does ``retry`` on an issue with the label but no task (its config was
invalid when the label came). The agent and model come from the repository's config and the
issue's labels; an invalid config is reported once per revision of the file."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import gidgethub

from bot import messages
from bot.config import RepoConfig
from bot.operations.configs import report_invalid_config
from bot.operations.context import Context
from bot.outcome import Ignored
from bot.store.base import TaskEvent
from bot.tasks import rules
from bot.tasks.model import new_id

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IssueSnapshot:
    """The parts of an issue a task is made from."""

    repo: str
    number: int
    title: str
    body: str
    labels: tuple[str, ...]
    default_branch: str = "main"


def agent_choice(config: RepoConfig, labels: Sequence[str], default_agent: str) -> tuple[str, str]:
    """(preset, model): the config's agent, overridden by the last label with a choice. Pure."""
    preset, model = config.agent.preset or default_agent, config.agent.model or ""
    for label in labels:
        choice = config.agent.by_label.get(label)
        if choice is not None:
            preset, model = choice.preset or preset, choice.model or model
    return preset, model


def task_defaults(config: RepoConfig, issue: IssueSnapshot, default_agent: str) -> rules.TaskDefaults:
    """What a new (or started over) task of ``issue`` gets from the config. Pure."""
    preset, model = agent_choice(config, issue.labels, default_agent)
    return rules.TaskDefaults(
        max_attempts=config.budget.max_attempts,
        max_cost_usd=config.budget.max_cost_usd,
        agent=preset,
        model=model,
        base_branch=issue.default_branch,
    )


async def start_issue_task(ctx: Context, issue: IssueSnapshot, *, login: str, instructions: str = "") -> str:
    """:func:`start_task` with the repository's config as the default branch has it now."""
    found = await ctx.services.repo_configs.state(ctx.gh, issue.repo, issue.default_branch or "main")
    return await start_task(
        ctx, issue, login=login, config=found.config, config_error=found.error, config_revision=found.revision,
        instructions=instructions,
    )


async def start_on_retry(
    ctx: Context, issue: IssueSnapshot, *, login: str, comment_id: int, instructions: str = ""
) -> str:
    """``retry [instructions]`` on an issue that carries the trigger label but has no task (the
    config was invalid when the label came): start the task as the label would have, with the
    config as it is now and the instructions for its first attempt, and answer the comment with
    a reaction (👍 started, 😕 the config is still invalid). The caller checked the permission
    of ``login``."""
    try:
        outcome = await start_issue_task(ctx, issue, login=login, instructions=instructions)
    except Ignored:
        await ctx.react(issue.repo, "issue_comment", comment_id, "confused")
        raise
    task = await ctx.services.store.get_task_by_issue(issue.repo, issue.number)
    if task is not None:
        await ctx.services.store.record_fact(f"comment:{issue.repo}:{comment_id}", task.id)
    await ctx.react(issue.repo, "issue_comment", comment_id, "+1")
    return outcome


async def start_task(
    ctx: Context,
    issue: IssueSnapshot,
    *,
    login: str,
    config: RepoConfig,
    config_error: str | None,
    config_revision: str = "",
    instructions: str = "",
) -> str:
    """Create the task of ``issue`` for ``login`` (whose permission the caller checked), with
    ``instructions`` for its first attempt, or start its existing task over. An invalid
    repository config is answered with its errors, once per ``config_revision`` of the file
    (the errors' hash stands in without one)."""
    if config_error is not None:
        revision = config_revision or hashlib.sha1(config_error.encode(), usedforsecurity=False).hexdigest()
        if not await report_invalid_config(ctx, issue.repo, issue.number, error=config_error, revision=revision):
            raise Ignored("the repository's .github/patchwright.yml is invalid; its errors were already reported")
        raise Ignored("the repository's .github/patchwright.yml is invalid; replied with the errors")
    defaults = task_defaults(config, issue, ctx.services.settings.agent)
    store = ctx.services.store
    existing = await store.get_task_by_issue(issue.repo, issue.number)
    if existing is not None:
        _decision, new = await ctx.decide_or_ignore(
            existing,
            lambda t: rules.relabeled(t, title=issue.title, spec=issue.body, defaults=defaults, now=ctx.now),
            actor=login,
            config=config,
        )
        await ctx.react(issue.repo, "issue", issue.number, "eyes")
        return f"task {new.id} started over"
    task = rules.new_task(
        id=new_id("task"),
        repo=issue.repo,
        installation_id=int(ctx.installation_id or 0),
        issue_number=issue.number,
        title=issue.title,
        spec=issue.body,
        max_attempts=defaults.max_attempts,
        max_cost_usd=defaults.max_cost_usd,
        agent=defaults.agent,
        model=defaults.model,
        base_branch=issue.default_branch,
        instructions=instructions,
        now=ctx.now,
    )
    reason = messages.LABELLED_BY.format(login=login)
    stored, created = await store.create_task(
        task,
        event=TaskEvent(
            task_id=task.id,
            kind="created",
            reason=reason,
            actor=login,
            delivery_id=ctx.delivery_id,
            to_status=task.status,
        ),
    )
    if not created:
        raise Ignored(f"issue #{issue.number} already has task {stored.id} (duplicate fact)")
    await ctx.react(issue.repo, "issue", issue.number, "eyes")
    await store.notify_pending()
    try:
        stored = await ctx.services.reporter.update(ctx.gh, stored, reason=reason)
        if config.state_labels:
            await ctx.services.reporter.state_labels(ctx.gh, stored, None)
    except gidgethub.GitHubException as exc:  # the task is stored: the next transition reports it
        log.warning("status comment of new task %s not posted: %s", stored.id, exc)
    return f"created task {stored.id}"


__all__ = ["IssueSnapshot", "agent_choice", "start_issue_task", "start_on_retry", "start_task", "task_defaults"]
