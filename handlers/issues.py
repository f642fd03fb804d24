"""Issues (SPEC §4.1): the trigger label creates a task; unlabel pauses; close closes; edits refresh."""

from __future__ import annotations

from gidgethub import routing, sansio

from bot.operations.start import IssueSnapshot, start_issue_task
from bot.tasks import rules
from bot.tasks.model import Task

from handlers.common import (
    Context,
    Ignored,
    default_branch,
    guard_sender,
    repo_config,
    repo_name,
    sender_login,
)

router = routing.Router()


def issue_labels(issue: dict) -> tuple[str, ...]:
    """The names of the labels on an issue of a payload."""
    return tuple(str(label.get("name", "")) for label in issue.get("labels") or [] if isinstance(label, dict))


def issue_snapshot(event: sansio.Event) -> IssueSnapshot:
    """The event's issue (of an ``issues`` or ``issue_comment`` event) as a task is made from it."""
    issue = event.data["issue"]
    return IssueSnapshot(
        repo=repo_name(event),
        number=int(issue["number"]),
        title=str(issue.get("title") or ""),
        body=str(issue.get("body") or ""),
        labels=issue_labels(issue),
        default_branch=default_branch(event),
    )


async def _start(event: sansio.Event, ctx: Context) -> str:
    """Create (or start over) the task of the event's issue; shared by labeled and opened."""
    if event.data["issue"].get("pull_request"):
        raise Ignored("the label is on a pull request, not an issue")
    issue = issue_snapshot(event)
    login = guard_sender(event, ctx, await repo_config(event, ctx))
    await ctx.require_permission(issue.repo, login)
    return await start_issue_task(ctx, issue, login=login)


@router.register("issues", action="labeled")
async def on_issue_labeled(event: sansio.Event, ctx: Context) -> str:
    label = (event.data.get("label") or {}).get("name", "")
    config = await repo_config(event, ctx)
    if label != config.trigger_label:
        raise Ignored(f"label {label!r} is not the trigger label {config.trigger_label!r}")
    return await _start(event, ctx)


@router.register("issues", action="opened")
async def on_issue_opened(event: sansio.Event, ctx: Context) -> str:
    config = await repo_config(event, ctx)
    if config.trigger_label not in issue_labels(event.data["issue"]):
        raise Ignored("opened without the trigger label")
    return await _start(event, ctx)


async def _task_of(event: sansio.Event, ctx: Context) -> Task:
    number = int(event.data["issue"]["number"])
    task = await ctx.services.store.get_task_by_issue(repo_name(event), number)
    if task is None:
        raise Ignored(f"issue #{number} has no task")
    return task


@router.register("issues", action="unlabeled")
async def on_issue_unlabeled(event: sansio.Event, ctx: Context) -> str:
    label = (event.data.get("label") or {}).get("name", "")
    config = await repo_config(event, ctx)
    if label != config.trigger_label:
        raise Ignored(f"label {label!r} is not the trigger label")
    login = guard_sender(event, ctx, config)
    await ctx.require_permission(repo_name(event), login)
    task = await _task_of(event, ctx)
    _, new = await ctx.decide_or_ignore(task, lambda t: rules.unlabeled(t, now=ctx.now), actor=login, config=config)
    return f"task {new.id} paused"


@router.register("issues", action="closed")
async def on_issue_closed(event: sansio.Event, ctx: Context) -> str:
    task = await _task_of(event, ctx)
    config = await repo_config(event, ctx)
    _, new = await ctx.decide_or_ignore(
        task, lambda t: rules.issue_closed(t, now=ctx.now), actor=sender_login(event), config=config
    )
    return f"task {new.id} closed"


@router.register("issues", action="edited")
async def on_issue_edited(event: sansio.Event, ctx: Context) -> str:
    config = await repo_config(event, ctx)
    login = guard_sender(event, ctx, config)
    task = await _task_of(event, ctx)
    # Edits by people without write access never change what the agent sees.
    await ctx.require_permission(repo_name(event), login)
    issue = issue_snapshot(event)
    _, new = await ctx.decide_or_ignore(
        task,
        lambda t: rules.spec_edited(t, title=issue.title, spec=issue.body, now=ctx.now),
        actor=login,
        config=config,
    )
    return f"task {new.id} spec refreshed"
