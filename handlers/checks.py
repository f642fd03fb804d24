"""CI (SPEC §4.3): check runs, check suites, workflow runs and commit statuses of the bot's PR
heads become at most one decision per head SHA; plus the Retry/Stop buttons (§4.5)."""

from __future__ import annotations

from gidgethub import routing, sansio

from bot.operations.ci import evaluate_head
from bot.operations.commands import run_command
from bot.tasks import verbs

from handlers.common import Context, Ignored, guard_sender, repo_config, repo_name

router = routing.Router()


@router.register("check_run", action="completed")
async def on_check_run_completed(event: sansio.Event, ctx: Context) -> str:
    run = event.data["check_run"]
    if (run.get("app") or {}).get("slug") == ctx.services.app_slug:
        raise Ignored("the bot's own check run")
    suite = run.get("check_suite") or {}
    return await evaluate_head(ctx, repo_name(event), str(run.get("head_sha") or ""), branch=str(suite.get("head_branch") or ""))


@router.register("check_suite", action="completed")
async def on_check_suite_completed(event: sansio.Event, ctx: Context) -> str:
    suite = event.data["check_suite"]
    if (suite.get("app") or {}).get("slug") == ctx.services.app_slug:
        raise Ignored("the bot's own check suite")
    return await evaluate_head(ctx, repo_name(event), str(suite.get("head_sha") or ""), branch=str(suite.get("head_branch") or ""))


@router.register("workflow_run", action="completed")
async def on_workflow_run_completed(event: sansio.Event, ctx: Context) -> str:
    run = event.data["workflow_run"]
    return await evaluate_head(ctx, repo_name(event), str(run.get("head_sha") or ""), branch=str(run.get("head_branch") or ""))


@router.register("status")
async def on_status(event: sansio.Event, ctx: Context) -> str:
    if event.data.get("state") == "pending":
        raise Ignored("a pending commit status")
    branches = event.data.get("branches") or []
    branch = str(branches[0].get("name")) if branches else ""
    return await evaluate_head(ctx, repo_name(event), str(event.data.get("sha") or ""), branch=branch)


@router.register("check_run", action="requested_action")
async def on_check_run_action(event: sansio.Event, ctx: Context) -> str:
    """The Retry / Stop buttons on the bot's own check run: the same verbs as the comments."""
    repo = repo_name(event)
    run = event.data["check_run"]
    if (run.get("app") or {}).get("slug") != ctx.services.app_slug:
        raise Ignored("an action on another app's check run")
    config = await repo_config(event, ctx)
    login = guard_sender(event, ctx, config)
    await ctx.require_permission(repo, login)
    identifier = str((event.data.get("requested_action") or {}).get("identifier") or "")
    task = await ctx.services.store.get_task(str(run.get("external_id") or ""))
    if task is None:
        raise Ignored("the check run names no task")
    verb = verbs.verb(identifier)
    if verb is None or not verb.button:
        raise Ignored(f"unknown action {identifier!r}")
    result = await run_command(ctx, task, verb.name, actor=login, config=config)
    if not result.accepted:
        raise Ignored(result.reason)
    return f"{identifier}: {result.reason}"
