"""CI of a head the bot pushed (SPEC §4.3): every check run and commit status GitHub has for
it, settled into at most one decision per head SHA — a retry on a settled code failure, a
note when the failure is not the code's or also fails on the base branch. The CI events and
the reconciler both call :func:`evaluate_head`."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import gidgethub

from bot import ci, messages
from bot.config import RepoConfig
from bot.github import api
from bot.operations.context import Context
from bot.outcome import Ignored
from bot.tasks import rules
from bot.tasks.model import Status, Task

log = logging.getLogger(__name__)


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


async def _fails_on_base(ctx: Context, repo: str, task: Task, config: RepoConfig, failing: tuple[str, ...]) -> bool:
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


async def evaluate_head(ctx: Context, repo: str, sha: str, *, branch: str = "", actor: str = "ci") -> str:
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
    config, _error = await ctx.repo_config(repo, task.base_branch)
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
        if await ctx.services.store.record_fact(ci.ci_fact(ci.PASSED_FACT, repo, sha)):
            return f"CI passed on {sha[:7]}"
        raise Ignored(f"CI on {sha[:7]} already recorded as passed (duplicate fact)")
    if verdict is ci.Verdict.NOT_CODE_FAILURE:
        if await ctx.services.store.record_fact(ci.ci_fact(ci.NOT_CODE_FACT, repo, sha)):
            await api.create_comment(
                ctx.gh, repo, task.issue_number,
                messages.ci_not_code_failure(list(settlement.not_code), mention=ctx.services.mention),
            )
        raise Ignored(f"not a code failure ({', '.join(settlement.not_code)}): recorded, no retry")
    failing = tuple(settlement.failing)
    if await _fails_on_base(ctx, repo, task, config, failing):
        if await ctx.services.store.record_fact(ci.ci_fact(ci.FAILS_ON_BASE_FACT, repo, sha)):
            await api.create_comment(
                ctx.gh, repo, task.issue_number,
                messages.ci_fails_on_base(list(failing), task.base_branch, mention=ctx.services.mention),
            )
        raise Ignored(f"{', '.join(failing)} also fail(s) on {task.base_branch}: not this PR's fault, no retry")
    context = await failure_context(ctx.gh, repo, log_sources(checks, failing))
    decision, _new = await ctx.decide_or_ignore(
        task,
        lambda t: rules.ci_failed(t, failing_checks=failing, head_sha=sha, context=context, now=ctx.now),
        actor=actor,
        config=config,
    )
    return decision.reason_for(ctx.mention)


__all__ = ["collect_checks", "evaluate_head", "failure_context", "log_sources"]
