"""Pull requests and pushes (SPEC §4.5): merged/closed PRs, human pushes, base-branch pushes,
and pushes to the default branch (the repository's config may have changed)."""

from __future__ import annotations

from gidgethub import routing, sansio

from bot.operations import pulls
from bot.operations.configs import default_branch_pushed
from bot.tasks.model import Status, Task

from handlers.common import Context, Ignored, default_branch, repo_name, sender_login

router = routing.Router()


async def _task_of_pr(ctx: Context, repo: str, pr: dict) -> Task:
    task = await ctx.services.store.get_task_by_pr(repo, int(pr["number"]))
    if task is None:
        raise Ignored(f"pull request #{pr['number']} is not a task's pull request")
    return task


@router.register("pull_request", action="closed")
async def on_pull_closed(event: sansio.Event, ctx: Context) -> str:
    pr = event.data["pull_request"]
    task = await _task_of_pr(ctx, repo_name(event), pr)
    decision, new = await pulls.pr_ended(ctx, task, merged=bool(pr.get("merged")), actor=sender_login(event))
    if new is None:
        raise Ignored(decision.reason_for(ctx.mention))
    return f"task {new.id} {new.status.value}"


@router.register("pull_request", action="synchronize")
async def on_pull_synchronize(event: sansio.Event, ctx: Context) -> str:
    """A push to the task's PR by someone else: the bot's next push builds on it."""
    pr = event.data["pull_request"]
    who = sender_login(event)
    head = str((pr.get("head") or {}).get("sha") or "")
    if who.lower() == ctx.services.bot_login.lower():
        raise Ignored("the bot's own push")
    task = await _task_of_pr(ctx, repo_name(event), pr)
    if head and head == task.head_sha:
        raise Ignored("head is the SHA the bot pushed")
    return await pulls.record_human_push(ctx, task, who=who, head=head, before=str(event.data.get("before", "")))


@router.register("push")
async def on_push(event: sansio.Event, ctx: Context) -> str:
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
    return "; ".join(await pulls.check_conflicts(ctx, repo, tasks, actor=sender_login(event)))


@router.register("push")
async def on_push_to_default_branch(event: sansio.Event, ctx: Context) -> str:
    """A push to the default branch may change ``.github/patchwright.yml``: drop its cache."""
    ref = str(event.data.get("ref") or "")
    if not ref.startswith("refs/heads/"):
        raise Ignored("not a branch update")
    return await default_branch_pushed(
        ctx, repo_name(event), branch=ref.removeprefix("refs/heads/"), default_branch=default_branch(event)
    )
