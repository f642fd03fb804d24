"""Comments (SPEC §4.2): `@<app> retry|stop|resume|start over|cancel|status|help`, feedback on
the task's PR, and answers on the issue while the agent waits for them. `retry` on an issue
that carries the trigger label but has no task (its config was invalid when the label came)
starts the task."""

from __future__ import annotations

from gidgethub import routing, sansio

from bot import commands, messages
from bot.operations.commands import run_command
from bot.operations.feedback import answer_questions, give_feedback
from bot.operations.start import start_on_retry
from bot.tasks import verbs
from bot.tasks.model import Status, Task

from handlers.common import Context, Ignored, guard_sender, repo_config, repo_name
from handlers.issues import issue_labels, issue_snapshot

router = routing.Router()


async def _refuse(ctx: Context, repo: str, number: int, comment_id: int, text: str, why: str) -> None:
    await ctx.react(repo, "issue_comment", comment_id, "confused")
    await ctx.reply(repo, number, text)
    raise Ignored(why)


async def _find_task(ctx: Context, repo: str, issue: dict) -> tuple[Task | None, bool]:
    """(task, on_pr): a comment on a PR addresses the task whose PR it is."""
    number = int(issue["number"])
    if issue.get("pull_request"):
        return await ctx.services.store.get_task_by_pr(repo, number), True
    return await ctx.services.store.get_task_by_issue(repo, number), False


@router.register("issue_comment", action="created")
async def on_comment_created(event: sansio.Event, ctx: Context) -> str:
    repo = repo_name(event)
    issue = event.data["issue"]
    comment = event.data["comment"]
    number, comment_id = int(issue["number"]), int(comment["id"])
    config = await repo_config(event, ctx)
    login = guard_sender(event, ctx, config, user=comment.get("user") or event.data.get("sender"))
    found = commands.first_command(comment.get("body") or "", mentions=[ctx.services.app_slug, *config.command_aliases])
    task, on_pr = await _find_task(ctx, repo, issue)
    mention = ctx.mention
    fact = f"comment:{repo}:{comment_id}"
    if task is not None and await ctx.services.store.has_fact(fact):
        raise Ignored(f"comment {comment_id} was already acted on (duplicate fact)")

    if found is None:
        # Plain comments only matter as answers while the agent waits for them.
        if task is None or on_pr or task.status != Status.WAITING:
            raise Ignored("no command in the comment")
        ok, _perm = await ctx.permitted(repo, login)
        if not ok:
            raise Ignored(f"not taken as answers: {login} has no write access")
        return await _answer(ctx, task, comment.get("body") or "", login, comment_id, fact)

    ok, perm = await ctx.permitted(repo, login)
    if not ok:
        await _refuse(
            ctx, repo, number, comment_id,
            messages.refusal_not_permitted(perm, mention=mention),
            f"not permitted: {login} has {perm} permission",
        )
    if found.verb == verbs.HELP:
        await ctx.react(repo, "issue_comment", comment_id, "+1")
        await ctx.reply(repo, number, messages.render_help(mention, config.trigger_label))
        return "help sent"
    if task is None and found.verb == verbs.RETRY and not on_pr and config.trigger_label in issue_labels(issue):
        # The label came while the config was invalid, so no task was made: start it now.
        return await start_on_retry(
            ctx, issue_snapshot(event), login=login, comment_id=comment_id, instructions=found.args
        )
    if task is None:
        text = messages.refusal_not_task_pr(mention) if on_pr else messages.refusal_no_task(mention, config.trigger_label)
        await _refuse(ctx, repo, number, comment_id, text, "no task for this issue or pull request")
        raise AssertionError("unreachable")
    if found.verb == verbs.STATUS:
        await ctx.react(repo, "issue_comment", comment_id, "+1")
        card = await ctx.services.reporter.card(task, trigger_label=config.trigger_label)
        await ctx.reply(repo, number, messages.render_task_card(card))
        return "status sent"

    if verbs.verb(found.verb) is not None:
        result = await run_command(ctx, task, found.verb, actor=login, instructions=found.args, config=config)
        decision, new = result.decision, result.task
    elif not found.args.strip():
        raise Ignored("a mention with nothing to act on")
    elif on_pr:
        decision, new = await give_feedback(ctx, task, text=found.args, author=login, config=config)
    elif task.status == Status.WAITING:
        return await _answer(ctx, task, found.args, login, comment_id, fact)
    else:
        await _refuse(
            ctx, repo, number, comment_id,
            messages.refusal_unknown_command(found.args, mention=mention),
            f"unknown command {found.args[:60]!r}",
        )
        raise AssertionError("unreachable")

    if new is None:
        await _refuse(
            ctx, repo, number, comment_id, decision.reason_for(mention), decision.reason_for(mention)
        )
    await ctx.services.store.record_fact(fact, task.id)
    await ctx.react(repo, "issue_comment", comment_id, "+1")
    return f"{found.verb}: {decision.reason_for(mention)}"


async def _answer(ctx: Context, task: Task, text: str, login: str, comment_id: int, fact: str) -> str:
    new = await answer_questions(ctx, task, text=text, author=login)
    await ctx.services.store.record_fact(fact, task.id)
    await ctx.react(task.repo, "issue_comment", comment_id, "+1")
    return f"answers from {login}: task {new.id} continues"
