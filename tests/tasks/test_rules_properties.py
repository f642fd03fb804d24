"""Property test: random event sequences against the task rules keep the budget promises."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.tasks import rules
from bot.tasks.model import TERMINAL, RetryKind, Status, Task
from bot.tasks.rules import ALLOWED_TRANSITIONS, Decision, Effect, TaskDefaults

START = datetime(2026, 3, 1, tzinfo=timezone.utc)
COSTS = (0.0, 0.25, 1.0, 3.0)
CHECK_SETS = (("tests",), ("lint",), ("lint", "tests"))
CATEGORIES = ("agent_error", "timeout")
SIGNATURES = ("", "sig-a", "sig-b")

AUTOMATIC_COUNTED = {"ci", "failed", "no_progress"}  # may spend the budget
FREE = {"feedback", "conflict", "transient", "stop", "unlabel", "resume", "answered", "push", "questions"}
REOPENERS = {"start_over", "relabel", "manual"}

cost_index = st.integers(0, len(COSTS) - 1)
EVENT = {
    "claim": st.tuples(st.just("claim")),
    "push": st.tuples(st.just("push"), cost_index, st.sampled_from(("current", "previous", "unknown"))),
    "ci": st.tuples(st.just("ci"), st.integers(0, len(CHECK_SETS) - 1), st.booleans()),
    "feedback": st.tuples(st.just("feedback"), st.sampled_from(("fix it", "rename", "  "))),
    "conflict": st.tuples(st.just("conflict")),
    "transient": st.tuples(st.just("transient"), cost_index),
    "failed": st.tuples(
        st.just("failed"),
        st.integers(0, len(CATEGORIES) - 1),
        st.integers(0, len(SIGNATURES) - 1),
        st.booleans(),
        cost_index,
    ),
    "no_progress": st.tuples(st.just("no_progress"), cost_index),
    "questions": st.tuples(st.just("questions"), cost_index),
    "answered": st.tuples(st.just("answered")),
    "manual": st.tuples(st.just("manual"), st.booleans()),
    "stop": st.tuples(st.just("stop")),
    "resume": st.tuples(st.just("resume")),
    "cancel": st.tuples(st.just("cancel")),
    "issue_closed": st.tuples(st.just("issue_closed")),
    "merged": st.tuples(st.just("merged"), st.booleans()),
    "pr_closed": st.tuples(st.just("pr_closed"), st.booleans()),
    "spec": st.tuples(st.just("spec")),
    "start_over": st.tuples(st.just("start_over")),
    "relabel": st.tuples(st.just("relabel")),
    "unlabel": st.tuples(st.just("unlabel")),
    "add_cost": st.tuples(st.just("add_cost"), cost_index),
}
ANY_EVENT = st.one_of(*EVENT.values())

# What tends to happen next in each status; any event can still happen (see next_event).
LIKELY: dict[Status, tuple[str, ...]] = {
    Status.PENDING: ("claim", "claim", "claim", "feedback", "stop", "spec", "add_cost"),
    Status.RUNNING: (
        "push",
        "push",
        "push",
        "failed",
        "failed",
        "no_progress",
        "transient",
        "transient",
        "questions",
        "feedback",
        "stop",
        "add_cost",
    ),
    Status.REVIEW: ("ci", "ci", "ci", "ci", "feedback", "feedback", "conflict", "conflict", "manual", "merged"),
    Status.WAITING: ("answered", "answered", "stop", "spec", "feedback"),
    Status.PAUSED: ("resume", "manual", "spec", "push"),
    Status.FAILED: ("manual", "manual", "start_over", "relabel", "merged", "feedback"),
    Status.CLOSED: ("start_over", "relabel", "merged", "manual"),
    Status.MERGED: ("start_over", "relabel", "manual"),
}
LIKELY_EVENT = {status: st.sampled_from(names).flatmap(EVENT.__getitem__) for status, names in LIKELY.items()}


@dataclass
class Run:
    """The running state of one generated story."""

    task: Task
    step: int = 0
    claimed_attempts: list[int] = field(default_factory=list)

    @property
    def now(self) -> datetime:
        return START + timedelta(minutes=7 * self.step)


def apply(run: Run, event: tuple) -> Decision:
    t, now, name = run.task, run.now, event[0]
    if name == "claim":
        return rules.claimed(t, worker_id="w", now=now)
    if name == "push":
        return rules.attempt_pushed(
            t,
            head_sha=f"sha{run.step}",
            pr_number=t.pr_number or 100,
            pr_url="u",
            branch="b",
            cost_usd=COSTS[event[1]],
            now=now,
            attempt={"current": t.attempt, "previous": t.attempt - 1, "unknown": None}[event[2]],
        )
    if name == "ci":
        head = "stale" if event[2] else t.head_sha
        return rules.ci_failed(t, failing_checks=CHECK_SETS[event[1]], head_sha=head, context="log", now=now)
    if name == "feedback":
        return rules.feedback(t, text=event[1], author="rev", now=now)
    if name == "conflict":
        return rules.merge_conflict(t, now=now)
    if name == "transient":
        return rules.transient(t, reason="Rate limited", now=now, cost_usd=COSTS[event[1]], attempt=t.attempt)
    if name == "failed":
        return rules.attempt_failed(
            t,
            error="boom",
            category=CATEGORIES[event[1]],
            error_signature=SIGNATURES[event[2]],
            retryable=event[3],
            now=now,
            cost_usd=COSTS[event[4]],
            attempt=t.attempt,
        )
    if name == "no_progress":
        return rules.no_progress(t, now=now, cost_usd=COSTS[event[1]], attempt=t.attempt)
    if name == "questions":
        return rules.questions_asked(t, questions=["Which one?"], now=now, cost_usd=COSTS[event[1]], attempt=t.attempt)
    if name == "answered":
        return rules.answered(t, text="This one.", author="maintainer", now=now)
    if name == "manual":
        return rules.manual_retry(
            t, instructions="again", now=now, max_cost_usd=t.max_cost_usd + 5 if event[1] else None
        )
    if name == "stop":
        return rules.stop(t, now=now)
    if name == "resume":
        return rules.resume(t, now=now)
    if name == "cancel":
        return rules.cancel(t, now=now)
    if name == "issue_closed":
        return rules.issue_closed(t, now=now)
    if name == "merged":
        return rules.pr_merged(t, pr_number=999 if event[1] else (t.pr_number or 100), now=now)
    if name == "pr_closed":
        return rules.pr_closed(t, pr_number=999 if event[1] else (t.pr_number or 100), now=now)
    if name == "spec":
        return rules.spec_edited(t, title=t.title + "!", spec=t.spec, now=now)
    if name == "start_over":
        return rules.start_over(t, max_attempts=t.max_attempts, now=now)
    if name == "relabel":
        defaults = TaskDefaults(max_attempts=t.max_attempts, max_cost_usd=t.max_cost_usd)
        return rules.relabeled(t, title=t.title, spec=t.spec, defaults=defaults, now=now)
    if name == "unlabel":
        return rules.unlabeled(t, now=now)
    if name == "add_cost":
        return rules.add_cost(t, COSTS[event[1]])
    raise AssertionError(name)


def check(run: Run, name: str, d: Decision) -> None:
    old, new = run.task, d.task
    if not d.accepted:
        assert new is old and d.changes == {} and d.effects == ()
        return
    # the status graph and the update condition
    assert old.status in d.from_statuses
    assert old.status == new.status or new.status in ALLOWED_TRANSITIONS[old.status], (name, old.status, new.status)
    # terminal statuses are left only by start over (relabel) or a manual retry
    if old.status in TERMINAL and new.status not in TERMINAL:
        assert name in REOPENERS, name
    # budget: only counted retries (and a manual retry's reset) may spend it, never past the end
    left_before, left_after = old.max_attempts - old.attempt, new.max_attempts - new.attempt
    if name in FREE:
        assert left_after >= left_before, name
    counted = name == "ci" or (
        name in AUTOMATIC_COUNTED and not old.queued_feedback and old.retry_kind is not RetryKind.MERGE_CONFLICT
    )
    if counted and new.status is Status.PENDING:
        assert left_after == left_before - 1, name  # an automatic retry spends one attempt of the budget
    if left_after < left_before and name not in REOPENERS:
        assert name in AUTOMATIC_COUNTED, name
        assert old.attempt < old.max_attempts
        assert new.attempt <= new.max_attempts
    # the cost gate runs before any new attempt is queued
    if new.status is Status.PENDING and (old.status is not Status.PENDING or new.attempt != old.attempt):
        assert new.cost_usd < new.max_cost_usd, (name, new.cost_usd, new.max_cost_usd)
    # limits
    assert new.consecutive_failures <= rules.CIRCUIT_BREAKER_LIMIT
    assert new.conflict_retries <= rules.CONFLICT_RETRY_LIMIT
    assert new.transient_retries <= rules.TRANSIENT_RETRY_LIMIT
    assert new.feedback_retries <= rules.FEEDBACK_RETRY_LIMIT
    assert new.attempt >= 1 and new.max_attempts >= 1
    # effects match the situation
    if Effect.STOP_AGENT in d.effects:
        assert old.status is Status.RUNNING
    if new.status is Status.PENDING and old.status is not Status.PENDING:
        assert Effect.WAKE_WORKERS in d.effects
    if old.status is Status.RUNNING and new.status is not Status.RUNNING:
        assert new.worker_id == ""
    if new.status is Status.REVIEW:
        assert new.head_sha and new.pr_number is not None
    if new.not_before is not None:
        assert new.status is Status.PENDING


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_attempts=st.integers(1, 7),
    max_cost=st.sampled_from((0.5, 2.0, 6.0, 100.0)),
    steps=st.integers(1, 60),
    data=st.data(),
)
def test_random_event_sequences_keep_the_rules(max_attempts, max_cost, steps, data):
    task = rules.new_task(
        id="task_prop",
        repo="o/r",
        installation_id=1,
        issue_number=1,
        title="T",
        spec="S",
        max_attempts=max_attempts,
        max_cost_usd=max_cost,
        agent="a",
        model="m",
        base_branch="main",
        now=START,
    )
    run = Run(task)
    for _ in range(steps):
        run.step += 1
        surprise = data.draw(st.integers(0, 4)) == 0  # mostly what tends to happen next, sometimes anything
        event = data.draw(ANY_EVENT if surprise else LIKELY_EVENT[run.task.status])
        decision = apply(run, event)
        check(run, event[0], decision)
        if decision.accepted:
            new = decision.task
            if event[0] in ("start_over", "relabel"):
                run.claimed_attempts.clear()
            if new.status is Status.RUNNING and run.task.status is Status.PENDING:
                # every attempt that runs has a new, higher number
                assert not run.claimed_attempts or new.attempt > run.claimed_attempts[-1]
                run.claimed_attempts.append(new.attempt)
            run.task = new
