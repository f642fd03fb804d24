"""Pull requests and pushes (SPEC §4.5): merged/closed PRs, human pushes, base-branch pushes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gidgethub import routing, sansio

from bot.github import api
from bot.store.base import TaskEvent
from bot.tasks import rules
from bot.tasks.model import Status, Task

from handlers.common import HandlerContext, Ignored, repo_name, sender

log = logging.getLogger(__name__)
router = routing.Router()

#: Waits between reads of a PR whose mergeability GitHub is still computing (``null``).
MERGEABLE_BACKOFF = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


async def _task_of_pr(ctx: HandlerContext, repo: str, pr: dict) -> Task:
    task = await ctx.services.store.get_task_by_pr(repo, int(pr["number"]))
    if task is None:
        raise Ignored(f"pull request #{pr['number']} is not a task's pull request")
    return task


@router.register("pull_request", action="closed")
async def on_pull_closed(event: sansio.Event, ctx: HandlerContext) -> str:
    repo = repo_name(event)
    pr = event.data["pull_request"]
    task = await _task_of_pr(ctx, repo, pr)
    actor = str(sender(event).get("login") or "")
    number = int(pr["number"])
    if pr.get("merged"):
        rule = lambda t: rules.pr_merged(t, pr_number=number, now=ctx.now)  # noqa: E731
    else:
        rule = lambda t: rules.pr_closed(t, pr_number=number, now=ctx.now)  # noqa: E731
    decision, new = await ctx.decide(task, rule, actor=actor)
    if new is None:
        raise Ignored(decision.reason_for(ctx.services.mention))
    return f"task {new.id} {new.status.value}"


@router.register("pull_request", action="synchronize")
async def on_pull_synchronize(event: sansio.Event, ctx: HandlerContext) -> str:
    """A push to the task's PR by someone else: the bot's next push builds on it."""
    repo = repo_name(event)
    pr = event.data["pull_request"]
    who = str(sender(event).get("login") or "")
    head = str((pr.get("head") or {}).get("sha") or "")
    if who.lower() == ctx.services.bot_login.lower():
        raise Ignored("the bot's own push")
    task = await _task_of_pr(ctx, repo, pr)
    if head and head == task.head_sha:
        raise Ignored("head is the SHA the bot pushed")
    await ctx.services.store.add_event(
        TaskEvent(
            task_id=task.id,
            kind="human_push",
            reason=f"{who} pushed {head[:7]} to the task branch; the bot's next push builds on it",
            actor=who,
            delivery_id=ctx.delivery.id,
            changes={"human_head": head, "before": event.data.get("before", "")},
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


async def check_conflicts(ctx: HandlerContext, repo: str, tasks: list[Task], *, actor: str) -> list[str]:
    """Conflict retries for the tasks whose PR became ``dirty``."""
    done = []
    for task in tasks:
        if not task.pr_number:
            continue
        pr = await mergeable_state(ctx.gh, repo, task.pr_number)
        if pr.get("mergeable") is None:
            done.append(f"#{task.pr_number}: mergeability still unknown (the reconciler checks again)")
            continue
        if pr.get("mergeable_state") != "dirty" and pr.get("mergeable") is not False:
            done.append(f"#{task.pr_number}: {pr.get('mergeable_state')}")
            continue
        if (pr.get("head") or {}).get("sha") != task.head_sha:
            done.append(f"#{task.pr_number}: head moved; checked again after the next push")
            continue
        decision, new = await ctx.decide(task, lambda t: rules.merge_conflict(t, now=ctx.now), actor=actor)
        done.append(f"#{task.pr_number}: {decision.reason_for(ctx.services.mention)}")
    return done


@router.register("push")
async def on_push(event: sansio.Event, ctx: HandlerContext) -> str:
    repo = repo_name(event)
    ref = str(event.data.get("ref") or "")
    if not ref.startswith("refs/heads/") or event.data.get("deleted"):
        raise Ignored("not a branch update")
    branch = ref.removeprefix("refs/heads/")
    tasks = [
        t for t in await ctx.services.store.list_tasks(statuses=[Status.REVIEW], repo=repo)
        if t.base_branch == branch and t.pr_number
    ]
    if not tasks:
        raise Ignored(f"no open task pull request is based on {branch}")
    actor = str(sender(event).get("login") or "")
    return "; ".join(await check_conflicts(ctx, repo, tasks, actor=actor))
