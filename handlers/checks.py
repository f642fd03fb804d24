"""CI (SPEC §4.3): check runs, check suites, workflow runs and commit statuses of the bot's PR
heads become at most one decision per head SHA; plus the Retry/Stop buttons (§4.5)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import gidgethub
from gidgethub import routing, sansio

from bot import ci, messages
from bot.config import RepoConfig
from bot.github import api
from bot.tasks import rules
from bot.tasks.model import Status, Task

from handlers.common import HandlerContext, Ignored, guard_sender, repo_name, require_permission

log = logging.getLogger(__name__)
router = routing.Router()


async def collect_checks(gh: Any, repo: str, sha: str) -> list[ci.CheckResult]:
    """Every check run and commit status GitHub has for ``sha``."""
    runs = await api.list_check_runs_for_ref(gh, repo, sha)
    combined = await api.get_combined_status(gh, repo, sha)
    results = [ci.CheckResult.from_check_run(r) for r in runs]
    results += [ci.CheckResult.from_status(s) for s in combined.get("statuses") or []]
    return results


def log_sources(checks: list[ci.CheckResult], failing: tuple[str, ...]) -> list[ci.CheckResult]:
    """Per failing name, the result with the most to read: an Actions job (its log), then any
    check run (its output), then a commit status. Pure."""

    def rank(c: ci.CheckResult) -> int:
        return 0 if c.is_actions and c.id is not None else 1 if c.kind is not ci.CheckKind.STATUS else 2

    out = []
    for name in failing:
        same = sorted((c for c in checks if c.name == name), key=rank)
        if same:
            out.append(same[0])
    return out


async def failure_context(gh: Any, repo: str, failing: list[ci.CheckResult]) -> str:
    """The retry context: the failed step's log tail per Actions job, output text otherwise."""
    parts: list[tuple[str, str | bytes]] = []
    for check in failing:
        text = ""
        if check.is_actions and check.id is not None:
            try:
                text = ci.extract_failed_step(await api.download_job_log(gh, repo, int(check.id)))
            except gidgethub.GitHubException as exc:
                log.warning("log of %s not available: %s", check.name, exc)
        if not text:
            text = ci.check_output_excerpt(check.output_title, check.output_summary, check.output_text)
        parts.append((check.name, text or "(no log or output available)"))
    return ci.combine_excerpts(parts)


async def _fails_on_base(ctx: HandlerContext, repo: str, task: Task, config: RepoConfig, failing: tuple[str, ...]) -> bool:
    branch = await api.get_branch(ctx.gh, repo, task.base_branch)
    if branch is None:
        return False
    base_sha = str((branch.get("commit") or {}).get("sha") or "")
    if not base_sha:
        return False
    settlement = ci.settle(
        await collect_checks(ctx.gh, repo, base_sha),
        now=ctx.now,
        first_failure_at=None,
        ignore=config.ci.ignore,
        failure_conclusions=config.ci.failure_conclusions,
        bot_app_slug=ctx.services.app_slug,
        head_sha=base_sha,
    )
    return ci.also_fails_on_base(failing, settlement.failing)


async def evaluate_head(ctx: HandlerContext, repo: str, sha: str, *, branch: str = "", actor: str = "ci") -> str:
    """Decide once for a head SHA the bot pushed: retry on a settled code failure."""
    if not sha:
        raise Ignored("the event names no head SHA")
    in_review = await ctx.services.store.list_tasks(statuses=[Status.REVIEW], repo=repo)
    task = next((t for t in in_review if t.head_sha == sha), None)
    if task is None:
        stale = next((t for t in in_review if branch and t.branch == branch), None)
        if stale is not None:
            raise Ignored(f"stale head SHA {sha[:7]}: task {stale.id}'s current head is {stale.head_sha[:7]}")
        raise Ignored(f"{sha[:7]} is not the head the bot pushed for a task in review")
    config, _error = await ctx.services.repo_configs.get(ctx.gh, repo, task.base_branch or "main")
    checks = await collect_checks(ctx.gh, repo, sha)
    settlement = ci.settle(
        checks,
        now=ctx.now,
        first_failure_at=None,
        settle_timeout=timedelta(minutes=config.ci.settle_minutes),
        ignore=config.ci.ignore,
        failure_conclusions=config.ci.failure_conclusions,
        bot_app_slug=ctx.services.app_slug,
        head_sha=sha,
    )
    verdict = settlement.verdict
    if verdict is ci.Verdict.PENDING:
        raise Ignored(f"checks on {sha[:7]} have not settled ({len(settlement.pending)} still running)")
    if verdict is ci.Verdict.SUCCESS:
        if await ctx.services.store.record_fact(f"ci-passed:{repo}:{sha}"):
            return f"CI passed on {sha[:7]}"
        raise Ignored(f"CI on {sha[:7]} already recorded as passed (duplicate fact)")
    if verdict is ci.Verdict.NOT_CODE_FAILURE:
        if await ctx.services.store.record_fact(f"ci-not-code:{repo}:{sha}"):
            await api.create_comment(
                ctx.gh, repo, task.issue_number,
                messages.ci_not_code_failure(list(settlement.not_code), mention=ctx.services.mention),
            )
        raise Ignored(f"not a code failure ({', '.join(settlement.not_code)}): recorded, no retry")
    failing = tuple(settlement.failing)
    if await _fails_on_base(ctx, repo, task, config, failing):
        if await ctx.services.store.record_fact(f"ci-base:{repo}:{sha}"):
            await api.create_comment(
                ctx.gh, repo, task.issue_number,
                messages.ci_fails_on_base(list(failing), task.base_branch, mention=ctx.services.mention),
            )
        raise Ignored(f"{', '.join(failing)} also fail(s) on {task.base_branch}: not this PR's fault, no retry")
    context = await failure_context(ctx.gh, repo, log_sources(checks, failing))
    decision, new = await ctx.decide(
        task,
        lambda t: rules.ci_failed(t, failing_checks=failing, head_sha=sha, context=context, now=ctx.now),
        actor=actor,
        config=config,
    )
    if new is None:
        raise Ignored(decision.reason_for(ctx.services.mention))
    return decision.reason_for(ctx.services.mention)


@router.register("check_run", action="completed")
async def on_check_run_completed(event: sansio.Event, ctx: HandlerContext) -> str:
    run = event.data["check_run"]
    if (run.get("app") or {}).get("slug") == ctx.services.app_slug:
        raise Ignored("the bot's own check run")
    suite = run.get("check_suite") or {}
    return await evaluate_head(ctx, repo_name(event), str(run.get("head_sha") or ""), branch=str(suite.get("head_branch") or ""))


@router.register("check_suite", action="completed")
async def on_check_suite_completed(event: sansio.Event, ctx: HandlerContext) -> str:
    suite = event.data["check_suite"]
    if (suite.get("app") or {}).get("slug") == ctx.services.app_slug:
        raise Ignored("the bot's own check suite")
    return await evaluate_head(ctx, repo_name(event), str(suite.get("head_sha") or ""), branch=str(suite.get("head_branch") or ""))


@router.register("workflow_run", action="completed")
async def on_workflow_run_completed(event: sansio.Event, ctx: HandlerContext) -> str:
    run = event.data["workflow_run"]
    return await evaluate_head(ctx, repo_name(event), str(run.get("head_sha") or ""), branch=str(run.get("head_branch") or ""))


@router.register("status")
async def on_status(event: sansio.Event, ctx: HandlerContext) -> str:
    if event.data.get("state") == "pending":
        raise Ignored("a pending commit status")
    branches = event.data.get("branches") or []
    branch = str(branches[0].get("name")) if branches else ""
    return await evaluate_head(ctx, repo_name(event), str(event.data.get("sha") or ""), branch=branch)


@router.register("check_run", action="requested_action")
async def on_check_run_action(event: sansio.Event, ctx: HandlerContext) -> str:
    """The Retry / Stop buttons on the bot's own check run."""
    repo = repo_name(event)
    run = event.data["check_run"]
    if (run.get("app") or {}).get("slug") != ctx.services.app_slug:
        raise Ignored("an action on another app's check run")
    config = await ctx.config(event)
    login = guard_sender(event, ctx, config)
    await require_permission(ctx, repo, login)
    identifier = str((event.data.get("requested_action") or {}).get("identifier") or "")
    task = await ctx.services.store.get_task(str(run.get("external_id") or ""))
    if task is None:
        raise Ignored("the check run names no task")
    if identifier == messages.ACTION_RETRY:
        rule = lambda t: rules.manual_retry(t, now=ctx.now, author=login, max_cost_usd=config.budget.max_cost_usd)  # noqa: E731
    elif identifier == messages.ACTION_STOP:
        rule = lambda t: rules.stop(t, now=ctx.now, author=login)  # noqa: E731
    else:
        raise Ignored(f"unknown action {identifier!r}")
    decision, new = await ctx.decide(task, rule, actor=login, config=config)
    if new is None:
        raise Ignored(decision.reason_for(ctx.services.mention))
    return f"{identifier}: {decision.reason_for(ctx.services.mention)}"
