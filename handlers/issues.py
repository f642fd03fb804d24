"""Issues (SPEC §4.1): the trigger label creates a task; unlabel pauses; close closes; edits refresh."""

from __future__ import annotations

from gidgethub import routing, sansio

from bot import messages
from bot.config import RepoConfig
from bot.store.base import TaskEvent
from bot.tasks import rules
from bot.tasks.model import new_id

from handlers.common import (
    HandlerContext,
    Ignored,
    guard_sender,
    react,
    reply,
    repo_name,
    require_permission,
)

router = routing.Router()


def _labels(issue: dict) -> list[str]:
    return [str(label.get("name", "")) for label in issue.get("labels") or []]


def _agent_choice(config: RepoConfig, labels: list[str], default_agent: str) -> tuple[str, str]:
    preset, model = config.agent.preset or default_agent, config.agent.model or ""
    for label in labels:
        choice = config.agent.by_label.get(label)
        if choice is not None:
            preset, model = choice.preset or preset, choice.model or model
    return preset, model


def _defaults(config: RepoConfig, issue: dict, default_branch: str, default_agent: str) -> rules.TaskDefaults:
    preset, model = _agent_choice(config, _labels(issue), default_agent)
    return rules.TaskDefaults(
        max_attempts=config.budget.max_attempts,
        max_cost_usd=config.budget.max_cost_usd,
        agent=preset,
        model=model,
        base_branch=default_branch,
    )


async def start_task(event: sansio.Event, ctx: HandlerContext) -> str:
    """Create (or start over) the task of the event's issue; shared by labeled and opened."""
    repo = repo_name(event)
    issue = event.data["issue"]
    if issue.get("pull_request"):
        raise Ignored("the label is on a pull request, not an issue")
    config, config_error = await ctx.config_with_error(event)
    login = guard_sender(event, ctx, config)
    await require_permission(ctx, repo, login)
    number = int(issue["number"])
    if config_error is not None:
        await reply(ctx, repo, number, messages.config_invalid(config_error.splitlines(), mention=ctx.services.mention))
        raise Ignored("the repository's .github/patchwright.yml is invalid; replied with the errors")
    default_branch = event.data["repository"].get("default_branch") or "main"
    defaults = _defaults(config, issue, default_branch, ctx.services.settings.agent)
    existing = await ctx.services.store.get_task_by_issue(repo, number)
    if existing is not None:
        decision, new = await ctx.decide(
            existing,
            lambda t: rules.relabeled(
                t, title=issue.get("title") or "", spec=issue.get("body") or "", defaults=defaults, now=ctx.now
            ),
            actor=login,
            config=config,
        )
        if new is None:
            raise Ignored(decision.reason_for(ctx.services.mention))
        await react(ctx, repo, "issue", number, "eyes")
        return f"task {new.id} started over"
    task = rules.new_task(
        id=new_id("task"),
        repo=repo,
        installation_id=int(ctx.delivery.installation_id or 0),
        issue_number=number,
        title=issue.get("title") or "",
        spec=issue.get("body") or "",
        max_attempts=defaults.max_attempts,
        max_cost_usd=defaults.max_cost_usd,
        agent=defaults.agent,
        model=defaults.model,
        base_branch=default_branch,
        now=ctx.now,
    )
    stored, created = await ctx.services.store.create_task(
        task,
        event=TaskEvent(
            task_id=task.id,
            kind="created",
            reason=f"Labelled by {login}",
            actor=login,
            delivery_id=ctx.delivery.id,
            to_status=task.status,
        ),
    )
    if not created:
        raise Ignored(f"issue #{number} already has task {stored.id} (duplicate fact)")
    await react(ctx, repo, "issue", number, "eyes")
    await ctx.services.store.notify_pending()
    stored = await ctx.services.reporter.update(ctx.gh, stored, reason=f"Labelled by {login}")
    if config.state_labels:
        await ctx.services.reporter.state_labels(ctx.gh, stored, None)
    return f"created task {stored.id}"


@router.register("issues", action="labeled")
async def on_issue_labeled(event: sansio.Event, ctx: HandlerContext) -> str:
    label = (event.data.get("label") or {}).get("name", "")
    config = await ctx.config(event)
    if label != config.trigger_label:
        raise Ignored(f"label {label!r} is not the trigger label {config.trigger_label!r}")
    return await start_task(event, ctx)


@router.register("issues", action="opened")
async def on_issue_opened(event: sansio.Event, ctx: HandlerContext) -> str:
    config = await ctx.config(event)
    if config.trigger_label not in _labels(event.data["issue"]):
        raise Ignored("opened without the trigger label")
    return await start_task(event, ctx)


async def _task_of(event: sansio.Event, ctx: HandlerContext):
    repo = repo_name(event)
    number = int(event.data["issue"]["number"])
    task = await ctx.services.store.get_task_by_issue(repo, number)
    if task is None:
        raise Ignored(f"issue #{number} has no task")
    return task


@router.register("issues", action="unlabeled")
async def on_issue_unlabeled(event: sansio.Event, ctx: HandlerContext) -> str:
    label = (event.data.get("label") or {}).get("name", "")
    config = await ctx.config(event)
    if label != config.trigger_label:
        raise Ignored(f"label {label!r} is not the trigger label")
    login = guard_sender(event, ctx, config)
    await require_permission(ctx, repo_name(event), login)
    task = await _task_of(event, ctx)
    decision, new = await ctx.decide(task, lambda t: rules.unlabeled(t, now=ctx.now), actor=login, config=config)
    if new is None:
        raise Ignored(decision.reason_for(ctx.services.mention))
    return f"task {new.id} paused"


@router.register("issues", action="closed")
async def on_issue_closed(event: sansio.Event, ctx: HandlerContext) -> str:
    task = await _task_of(event, ctx)
    login = str((event.data.get("sender") or {}).get("login") or "")
    decision, new = await ctx.decide(task, lambda t: rules.issue_closed(t, now=ctx.now), actor=login)
    if new is None:
        raise Ignored(decision.reason_for(ctx.services.mention))
    return f"task {new.id} closed"


@router.register("issues", action="edited")
async def on_issue_edited(event: sansio.Event, ctx: HandlerContext) -> str:
    config = await ctx.config(event)
    login = guard_sender(event, ctx, config)
    task = await _task_of(event, ctx)
    # Edits by people without write access never change what the agent sees.
    await require_permission(ctx, repo_name(event), login)
    issue = event.data["issue"]
    decision, new = await ctx.decide(
        task,
        lambda t: rules.spec_edited(t, title=issue.get("title") or "", spec=issue.get("body") or "", now=ctx.now),
        actor=login,
        config=config,
    )
    if new is None:
        raise Ignored(decision.reason_for(ctx.services.mention))
    return f"task {new.id} spec refreshed"
