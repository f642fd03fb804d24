"""Applying a rule's :class:`~bot.tasks.rules.Decision`: one conditional store update with
its audit record, then the decision's effects, then the status comment
(:class:`TaskService`). Every entry point that changes a task goes through here."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import gidgethub

from bot import messages
from bot.github import api
from bot.operations.status import StatusReporter
from bot.store.base import Store, TaskEvent
from bot.tasks.model import Task
from bot.tasks.rules import Decision, Effect

log = logging.getLogger(__name__)

StopAgent = Callable[[str], None]  # task id -> stop its agent, if it runs in this process


class LostRaces(RuntimeError):
    """Other processes moved the task every time a decision was about to be applied."""


class AgentStops:
    """Who stops a task's agent in this process (the embedded worker pool subscribes when it
    starts and leaves when it stops); a decision with the ``STOP_AGENT`` effect calls them."""

    def __init__(self) -> None:
        self._subscribers: list[StopAgent] = []

    def subscribe(self, stop: StopAgent) -> Callable[[], None]:
        """Add ``stop``; returns the function that removes it again."""
        self._subscribers.append(stop)

        def unsubscribe() -> None:
            if stop in self._subscribers:
                self._subscribers.remove(stop)

        return unsubscribe

    def __call__(self, task_id: str) -> None:
        for stop in list(self._subscribers):
            stop(task_id)


def jsonable(changes: dict[str, Any]) -> dict[str, Any]:
    """Changes as JSON-friendly values for the audit trail."""
    out: dict[str, Any] = {}
    for key, value in changes.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
        elif isinstance(value, tuple):
            out[key] = list(value)
        elif hasattr(value, "value"):
            out[key] = value.value
        else:
            out[key] = value
    return out


class TaskService:
    """Applies decisions: one conditional update, then effects, then the status comment."""

    def __init__(
        self,
        store: Store,
        reporter: StatusReporter,
        *,
        mention: str,
        agent_stops: AgentStops | None = None,
    ):
        self.store = store
        self.reporter = reporter
        self.mention = mention
        self.agent_stops = agent_stops if agent_stops is not None else AgentStops()

    async def apply(
        self,
        decision: Decision,
        *,
        gh: Any | None,
        actor: str,
        delivery_id: str = "",
        state_labels: bool = False,
        report: bool = True,
        questions: Sequence[str] = (),
    ) -> Task | None:
        """Persist an accepted decision. None when it was refused or lost a race."""
        if not decision.accepted or decision.previous is None:
            return None
        prev = decision.previous
        reason = decision.reason_for(self.mention)
        event = TaskEvent(
            task_id=prev.id,
            kind="transition" if decision.status_changed else "update",
            reason=reason,
            actor=actor,
            delivery_id=delivery_id,
            from_status=prev.status,
            to_status=decision.task.status,
            changes=jsonable(decision.changes),
        )
        new = await self.store.transition(
            prev.id,
            from_statuses=decision.from_statuses,
            changes=decision.changes,
            event=event,
            expect_version=prev.version,
        )
        if new is None:
            return None
        await self._effects(decision, new, gh, questions)
        if gh is not None and report:
            try:
                new = await self.reporter.update(gh, new, reason=reason)
                if state_labels and decision.status_changed:
                    await self.reporter.state_labels(gh, new, prev.status)
            except gidgethub.GitHubException as exc:  # the reconciler refreshes it later
                log.warning("status comment of %s not updated: %s", new.id, exc)
        return new

    async def decide(
        self,
        task: Task,
        rule: Callable[[Task], Decision],
        *,
        gh: Any | None,
        actor: str,
        delivery_id: str = "",
        state_labels: bool = False,
        tries: int = 5,
    ) -> tuple[Decision, Task | None]:
        """Apply ``rule`` to the task, re-reading and deciding again when a race is lost."""
        decision = rule(task)
        for _ in range(tries):
            if not decision.accepted:
                return decision, None
            new = await self.apply(
                decision, gh=gh, actor=actor, delivery_id=delivery_id, state_labels=state_labels
            )
            if new is not None:
                return decision, new
            fresh = await self.store.get_task(task.id)
            if fresh is None:
                return decision, None
            decision = rule(fresh)
        raise LostRaces(f"task {task.id} kept changing while a decision was applied ({tries} tries); try again")

    async def _effects(self, decision: Decision, new: Task, gh: Any | None, questions: Sequence[str]) -> None:
        prev = decision.previous
        assert prev is not None
        for effect in decision.effects:
            try:
                if effect is Effect.WAKE_WORKERS:
                    await self.store.notify_pending()
                elif effect is Effect.STOP_AGENT:
                    self.agent_stops(prev.id)
                elif gh is None:
                    continue
                elif effect is Effect.CLOSE_PR and prev.pr_number:
                    await api.update_pull(gh, prev.repo, prev.pr_number, state="closed")
                elif effect is Effect.DELETE_BRANCH and prev.branch:
                    await api.delete_branch(gh, prev.repo, prev.branch)
                elif effect is Effect.POST_QUESTIONS and questions:
                    await api.create_comment(
                        gh, new.repo, new.issue_number, messages.render_questions(questions, mention=self.mention)
                    )
            except gidgethub.GitHubException as exc:
                log.warning("effect %s of task %s failed: %s", effect, new.id, exc)


__all__ = ["AgentStops", "LostRaces", "StopAgent", "TaskService", "jsonable"]
