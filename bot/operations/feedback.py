"""What people tell the agent (SPEC §4.2, §4.4): feedback on a task's pull request — a
review with its inline threads, or a comment — and answers to the agent's questions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from bot.config import RepoConfig
from bot.operations.context import Context
from bot.tasks import rules
from bot.tasks.model import Task


def with_review_threads(decision: rules.Decision, threads: Sequence[str]) -> rules.Decision:
    """An accepted feedback decision that also remembers the review threads to answer
    ("addressed in <sha>") after the next push. Pure."""
    if not decision.accepted or not threads:
        return decision
    merged = tuple(dict.fromkeys((*decision.task.review_threads, *threads)))
    return replace(decision, task=decision.task.replace(review_threads=merged))


async def give_feedback(
    ctx: Context,
    task: Task,
    *,
    text: str,
    author: str,
    config: RepoConfig,
    threads: Sequence[str] = (),
) -> tuple[rules.Decision, Task | None]:
    """A feedback retry (or feedback queued for the running attempt)."""

    def rule(t: Task) -> rules.Decision:
        decision = rules.feedback(t, text=text, author=author, now=ctx.now, limit=config.budget.max_feedback_retries)
        return with_review_threads(decision, threads)

    return await ctx.decide(task, rule, actor=author, config=config)


async def answer_questions(ctx: Context, task: Task, *, text: str, author: str) -> Task:
    """The agent's questions are answered: the task continues (Ignored when it cannot)."""
    _, new = await ctx.decide_or_ignore(
        task, lambda t: rules.answered(t, text=text, now=ctx.now, author=author), actor=author
    )
    return new


__all__ = ["answer_questions", "give_feedback", "with_review_threads"]
