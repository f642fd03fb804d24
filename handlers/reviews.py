"""Reviews (SPEC §4.4): one feedback retry per submitted review, with every inline comment."""

from __future__ import annotations

from gidgethub import routing, sansio

from bot import feedback
from bot.github import api
from bot.operations.feedback import give_feedback

from handlers.common import Context, Ignored, guard_sender, repo_config, repo_name

router = routing.Router()


@router.register("pull_request_review", action="submitted")
async def on_review_submitted(event: sansio.Event, ctx: Context) -> str:
    repo = repo_name(event)
    review = event.data["review"]
    pr = event.data["pull_request"]
    config = await repo_config(event, ctx)
    login = guard_sender(event, ctx, config, user=review.get("user") or event.data.get("sender"))
    task = await ctx.services.store.get_task_by_pr(repo, int(pr["number"]))
    if task is None:
        raise Ignored(f"pull request #{pr['number']} is not a task's pull request")
    fact = f"review:{repo}:{review['id']}"
    if await ctx.services.store.has_fact(fact):
        raise Ignored(f"review {review['id']} was already turned into a retry (duplicate fact)")
    if not feedback.is_actionable(review):
        # A COMMENTED review may still carry inline comments: look before ignoring it.
        if feedback.review_state(review) != feedback.COMMENTED:
            raise Ignored(f"review state {feedback.review_state(review).lower()} asks for nothing")
    await ctx.require_permission(repo, login)
    comments = await api.list_review_comments_for_review(ctx.gh, repo, int(pr["number"]), int(review["id"]))
    text = feedback.review_feedback(review, comments)
    if text is None:
        raise Ignored("the review has no body and no inline comments")
    threads = tuple(str(i) for i in feedback.review_thread_ids(comments))
    decision, new = await give_feedback(ctx, task, text=text, author=login, config=config, threads=threads)
    if new is None:
        raise Ignored(decision.reason_for(ctx.mention))
    await ctx.services.store.record_fact(fact, task.id)
    return f"feedback retry from review {review['id']} ({len(comments)} inline comment(s))"


@router.register("pull_request_review_comment", action="created")
async def on_review_comment(event: sansio.Event, ctx: Context) -> str:
    # Every inline comment belongs to a review, and GitHub sends pull_request_review.submitted
    # for it too: the review handler makes the one retry, with all of its comments.
    raise Ignored("inline comments are handled with their review (pull_request_review.submitted)")
