"""A task's pull request (SPEC §4.5): merged or closed, pushed to by a person, or in conflict
with its base branch. The pull-request and push events and the reconciler call these."""

from __future__ import annotations

import asyncio
from typing import Any

from bot import messages
from bot.github import api
from bot.operations.context import Context
from bot.store.base import TaskEvent
from bot.tasks import rules
from bot.tasks.model import Task

#: Waits between reads of a PR whose mergeability GitHub is still computing (``null``).
MERGEABLE_BACKOFF = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


async def pr_ended(ctx: Context, task: Task, *, merged: bool, actor: str) -> tuple[rules.Decision, Task | None]:
    """The task's pull request was merged or closed without merging."""
    number = int(task.pr_number or 0)
    if merged:
        rule = lambda t: rules.pr_merged(t, pr_number=number, now=ctx.now)  # noqa: E731
    else:
        rule = lambda t: rules.pr_closed(t, pr_number=number, now=ctx.now)  # noqa: E731
    config, _error = await ctx.repo_config(task.repo, task.base_branch)
    return await ctx.decide(task, rule, actor=actor, config=config)


async def record_human_push(ctx: Context, task: Task, *, who: str, head: str, before: str) -> str:
    """Someone else pushed to the task's branch: recorded; the bot's next push builds on it."""
    await ctx.services.store.add_event(
        TaskEvent(
            task_id=task.id,
            kind="human_push",
            reason=messages.HUMAN_PUSH.format(who=who, sha=head[:7]),
            actor=who,
            delivery_id=ctx.delivery_id,
            changes={"human_head": head, "before": before},
        )
    )
    return f"recorded human push {head[:7]}"


async def mergeable_state(gh: Any, repo: str, number: int, *, sleep=asyncio.sleep) -> dict:
    """Read the PR until GitHub has computed ``mergeable`` (null means: ask again later)."""
    pr = await api.get_pull(gh, repo, number)
    for delay in MERGEABLE_BACKOFF:
        if pr.get("mergeable") is not None:
            return pr
        await sleep(delay)
        pr = await api.get_pull(gh, repo, number)
    return pr


async def check_conflicts(ctx: Context, repo: str, tasks: list[Task], *, actor: str) -> list[str]:
    """Conflict retries for the tasks whose PR became ``dirty``."""
    done = []
    for task in tasks:
        if not task.pr_number:
            continue
        pr = await mergeable_state(ctx.gh, repo, task.pr_number, sleep=ctx.gh.sleep)
        if pr.get("mergeable") is None:
            done.append(f"#{task.pr_number}: mergeability still unknown (the reconciler checks again)")
            continue
        if pr.get("mergeable_state") != "dirty" and pr.get("mergeable") is not False:
            done.append(f"#{task.pr_number}: {pr.get('mergeable_state')}")
            continue
        if (pr.get("head") or {}).get("sha") != task.head_sha:
            done.append(f"#{task.pr_number}: head moved; checked again after the next push")
            continue
        config, _error = await ctx.repo_config(repo, task.base_branch)
        decision, _new = await ctx.decide(
            task, lambda t: rules.merge_conflict(t, now=ctx.now), actor=actor, config=config
        )
        done.append(f"#{task.pr_number}: {decision.reason_for(ctx.mention)}")
    return done


__all__ = ["MERGEABLE_BACKOFF", "check_conflicts", "mergeable_state", "pr_ended", "record_human_push"]
