"""Comments (SPEC §4.2): `@<app> retry|stop|resume|start over|cancel|status|help`, feedback on
the task's PR, and answers on the issue while the agent waits for them."""

from __future__ import annotations

from gidgethub import routing, sansio

from bot import commands, messages
from bot.tasks import rules
from bot.tasks.model import Status, Task

from handlers.common import (
    HandlerContext,
    Ignored,
    guard_sender,
    react,
    reply,
    repo_name,
)

router = routing.Router()


async def _refuse(ctx: HandlerContext, repo: str, number: int, comment_id: int, text: str, why: str) -> None:
    await react(ctx, repo, "issue_comment", comment_id, "confused")
    await reply(ctx, repo, number, text)
    raise Ignored(why)


async def _find_task(ctx: HandlerContext, repo: str, issue: dict) -> tuple[Task | None, bool]:
    """(task, on_pr): a comment on a PR addresses the task whose PR it is."""
    number = int(issue["number"])
    if issue.get("pull_request"):
        return await ctx.services.store.get_task_by_pr(repo, number), True
    return await ctx.services.store.get_task_by_issue(repo, number), False


@router.register("issue_comment", action="created")
async def on_comment_created(event: sansio.Event, ctx: HandlerContext) -> str:
    repo = repo_name(event)
    issue = event.data["issue"]
    comment = event.data["comment"]
    number, comment_id = int(issue["number"]), int(comment["id"])
    config = await ctx.config(event)
    login = guard_sender(event, ctx, config, user=comment.get("user") or event.data.get("sender"))
    mentions = [ctx.services.app_slug, *config.command_aliases]
    found = commands.first_command(comment.get("body") or "", mentions=mentions)
    task, on_pr = await _find_task(ctx, repo, issue)
    mention = ctx.services.mention
    fact = f"comment:{repo}:{comment_id}"
    if task is not None and await ctx.services.store.has_fact(fact):
        raise Ignored(f"comment {comment_id} was already acted on (duplicate fact)")

    if found is None:
        # Plain comments only matter as answers while the agent waits for them.
        if task is None or on_pr or task.status != Status.WAITING:
            raise Ignored("no command in the comment")
        ok, _perm = await ctx.services.permitted(ctx.gh, repo, login)
        if not ok:
            raise Ignored(f"not taken as answers: {login} has no write access")
        return await _answer(ctx, task, comment.get("body") or "", login, comment_id, fact)

    ok, perm = await ctx.services.permitted(ctx.gh, repo, login)
    if not ok:
        await _refuse(
            ctx, repo, number, comment_id,
            messages.refusal_not_permitted(perm, mention=mention),
            f"not permitted: {login} has {perm} permission",
        )
    verb = found.verb
    if verb == commands.HELP:
        await react(ctx, repo, "issue_comment", comment_id, "+1")
        await reply(ctx, repo, number, messages.render_help(mention, config.trigger_label))
        return "help sent"
    if task is None:
        text = messages.refusal_not_task_pr(mention) if on_pr else messages.refusal_no_task(mention, config.trigger_label)
        await _refuse(ctx, repo, number, comment_id, text, "no task for this issue or pull request")
        raise AssertionError("unreachable")
    if verb == commands.STATUS:
        await react(ctx, repo, "issue_comment", comment_id, "+1")
        card = await ctx.services.reporter.card(task, trigger_label=config.trigger_label)
        await reply(ctx, repo, number, messages.render_task_card(card))
        return "status sent"

    now = ctx.now
    if verb == commands.RETRY:
        rule = lambda t: rules.manual_retry(  # noqa: E731
            t, instructions=found.args, now=now, author=login,
            max_cost_usd=config.budget.max_cost_usd, feedback_limit=config.budget.max_feedback_retries,
        )
    elif verb == commands.STOP:
        rule = lambda t: rules.stop(t, now=now, author=login)  # noqa: E731
    elif verb == commands.RESUME:
        rule = lambda t: rules.resume(t, now=now)  # noqa: E731
    elif verb == commands.START_OVER:
        rule = lambda t: rules.start_over(t, max_attempts=config.budget.max_attempts, now=now)  # noqa: E731
    elif verb == commands.CANCEL:
        rule = lambda t: rules.cancel(t, now=now, author=login)  # noqa: E731
    elif not found.args.strip():
        raise Ignored("a mention with nothing to act on")
    elif on_pr:
        rule = lambda t: rules.feedback(  # noqa: E731
            t, text=found.args, author=login, now=now, limit=config.budget.max_feedback_retries
        )
    elif task.status == Status.WAITING:
        return await _answer(ctx, task, found.args, login, comment_id, fact)
    else:
        await _refuse(
            ctx, repo, number, comment_id,
            messages.refusal_unknown_command(found.args, mention=mention),
            f"unknown command {found.args[:60]!r}",
        )
        raise AssertionError("unreachable")

    decision, new = await ctx.decide(task, rule, actor=login, config=config)
    if new is None:
        await _refuse(
            ctx, repo, number, comment_id, decision.reason_for(mention), decision.reason_for(mention)
        )
    await ctx.services.store.record_fact(fact, task.id)
    await react(ctx, repo, "issue_comment", comment_id, "+1")
    return f"{verb}: {decision.reason_for(mention)}"


async def _answer(ctx: HandlerContext, task: Task, text: str, login: str, comment_id: int, fact: str) -> str:
    decision, new = await ctx.decide(
        task, lambda t: rules.answered(t, text=text, now=ctx.now, author=login), actor=login
    )
    if new is None:
        raise Ignored(decision.reason_for(ctx.services.mention))
    await ctx.services.store.record_fact(fact, task.id)
    await react(ctx, task.repo, "issue_comment", comment_id, "+1")
    return f"answers from {login}: task {new.id} continues"
