"""Table-driven tests of the task rules (SPEC §3, §3.1, §3.2, §4.1, §4.2)."""

from __future__ import annotations

import ast
import inspect
from datetime import datetime, timedelta, timezone

import pytest

from bot.messages import reasons
from bot.tasks import rules
from bot.tasks.model import TERMINAL, RetryKind, Status, Task
from bot.tasks.rules import (
    ALLOWED_TRANSITIONS,
    MENTION_PLACEHOLDER,
    Decision,
    Effect,
    InvalidDecisionError,
    TaskDefaults,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
HEAD = "a1b2c3d4e5f6"
ALL = tuple(Status)
P, RUN, REV, W, PA = Status.PENDING, Status.RUNNING, Status.REVIEW, Status.WAITING, Status.PAUSED
M, C, F = Status.MERGED, Status.CLOSED, Status.FAILED


def make(status: Status = P, **fields: object) -> Task:
    base: dict[str, object] = dict(
        id="task_01test",
        repo="octo/widgets",
        installation_id=42,
        issue_number=7,
        title="Add a widget",
        spec="Please add a widget.",
        status=status,
        base_branch="main",
        created_at=NOW - timedelta(hours=1),
        updated_at=NOW - timedelta(hours=1),
    )
    with_pr = bool(fields.pop("with_pr", False))
    if status in (REV, W, M, C, F) or with_pr:
        base.update(
            head_sha=HEAD,
            pr_number=12,
            pr_url="https://github.test/octo/widgets/pull/12",
            branch="patchwright/7-add-a-widget",
        )
    if status is RUN:
        base.update(worker_id="w1", heartbeat_at=NOW, started_at=NOW)
    base.update(fields)
    return Task(**base)  # type: ignore[arg-type]


def ok(d: Decision) -> Task:
    """Assert ``d`` was accepted and obeys the status graph; return the new task."""
    assert d.accepted, d.reason
    assert d.previous is not None
    old, new = d.previous, d.task
    assert old.status in d.from_statuses
    assert old.status == new.status or new.status in ALLOWED_TRANSITIONS[old.status]
    assert d.reason
    assert new.updated_at in (NOW, old.updated_at)
    if new.status is P and old.status is not P:
        assert Effect.WAKE_WORKERS in d.effects
    if Effect.STOP_AGENT in d.effects:
        assert old.status is RUN
    if old.status is RUN and new.status is not RUN:
        assert new.worker_id == "" and new.heartbeat_at is None
    return new


def refused(d: Decision, task: Task, *words: str) -> str:
    assert not d.accepted
    assert d.task is task
    assert d.changes == {} and d.effects == () and d.from_statuses == ()
    for word in words:
        assert word.lower() in d.reason.lower(), d.reason
    return d.reason


def budget_left(t: Task) -> int:
    return t.max_attempts - t.attempt


# -- the status graph and the Decision value --------------------------------------------------


def test_allowed_transitions_cover_every_status_and_never_self_loop():
    assert set(ALLOWED_TRANSITIONS) == set(Status)
    for old, targets in ALLOWED_TRANSITIONS.items():
        assert old not in targets


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_statuses_reopen_only_to_pending(terminal):
    assert {s for s in ALLOWED_TRANSITIONS[terminal] if s not in TERMINAL} == {P}


def test_merged_is_left_only_by_start_over():
    assert ALLOWED_TRANSITIONS[M] == frozenset({P})


@pytest.mark.parametrize(
    "old,new,allowed",
    [
        (P, RUN, True),
        (RUN, REV, True),
        (REV, P, True),
        (RUN, W, True),
        (W, P, True),
        (PA, P, True),
        (F, P, True),
        (F, M, True),
        (C, M, True),
        (P, REV, False),
        (P, F, False),
        (REV, RUN, False),
        (REV, PA, False),
        (W, RUN, False),
        (PA, RUN, False),
        (M, C, False),
        (M, F, False),
        (C, F, False),
        (F, REV, False),
    ],
)
def test_allowed_transitions_rows(old, new, allowed):
    assert rules.is_allowed(old, new) is allowed
    assert rules.is_allowed(old, old)


def test_decision_rejects_a_transition_outside_the_graph():
    old = make(P)
    with pytest.raises(InvalidDecisionError):
        Decision(True, old.replace(status=F), "x", (P,), previous=old)
    with pytest.raises(InvalidDecisionError):
        Decision(True, old.replace(status=PA), "x", (RUN,), previous=old)
    with pytest.raises(InvalidDecisionError):
        Decision(False, old, "x", (P,))


def test_decision_changes_is_the_diff_and_empty_when_refused():
    task = make(RUN)
    d = rules.stop(task, now=NOW)
    assert d.changes == {"status": PA, "attempt": 2, "max_attempts": 6, "worker_id": "", "heartbeat_at": None}
    assert rules.stop(make(PA), now=NOW).changes == {}


def test_reasons_use_a_mention_placeholder_not_the_app_name():
    for module in (rules, reasons):
        assert "@patchwright" not in inspect.getsource(module)
    assert reasons.MENTION_PLACEHOLDER == MENTION_PLACEHOLDER
    d = rules.stop(make(REV), now=NOW)
    assert MENTION_PLACEHOLDER in d.reason
    assert "`@bot cancel`" in d.reason_for("@bot")
    assert rules.render_reason("use {bot} stop {x}", "@pw") == "use @pw stop {x}"


# -- creation ------------------------------------------------------------------------------------


def test_new_task_is_pending_attempt_one_first():
    t = rules.new_task(
        id="task_1",
        repo="o/r",
        installation_id=1,
        issue_number=3,
        title="T",
        spec="S",
        max_cost_usd=2.5,
        agent="claude",
        model="m",
        base_branch="main",
        now=NOW,
    )
    assert (t.status, t.attempt, t.max_attempts, t.retry_kind) == (P, 1, 5, RetryKind.FIRST)
    assert (t.max_cost_usd, t.agent, t.model, t.base_branch) == (2.5, "claude", "m", "main")
    assert t.created_at == t.updated_at == NOW


@pytest.mark.parametrize("max_attempts,max_cost", [(0, 1.0), (-1, 1.0), (3, -1.0), (3, float("nan"))])
def test_new_task_rejects_bad_budgets(max_attempts, max_cost):
    with pytest.raises(ValueError):
        rules.new_task(
            id="task_1",
            repo="o/r",
            installation_id=1,
            issue_number=3,
            title="T",
            spec="S",
            max_attempts=max_attempts,
            max_cost_usd=max_cost,
            agent="",
            model="",
            base_branch="",
            now=NOW,
        )


def test_claimed_starts_the_attempt():
    new = ok(rules.claimed(make(P, not_before=NOW), worker_id="w9", now=NOW))
    assert (new.status, new.worker_id, new.heartbeat_at, new.started_at, new.not_before) == (RUN, "w9", NOW, NOW, None)


def test_claimed_respects_backoff_and_status():
    early = make(P, not_before=NOW + timedelta(seconds=1))
    refused(rules.claimed(early, worker_id="w", now=NOW), early, "backing off")
    for status in set(ALL) - {P}:
        task = make(status)
        refused(rules.claimed(task, worker_id="w", now=NOW), task, "not claimable")


# -- CI failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attempt,max_attempts,expected_status,expected_attempt",
    [(1, 5, P, 2), (3, 5, P, 4), (4, 5, P, 5), (5, 5, F, 5), (6, 5, F, 6), (1, 1, F, 1), (1, 2, P, 2)],
)
def test_ci_failed_budget_edges(attempt, max_attempts, expected_status, expected_attempt):
    task = make(REV, attempt=attempt, max_attempts=max_attempts)
    new = ok(rules.ci_failed(task, failing_checks=["tests"], head_sha=HEAD, context="log", now=NOW))
    assert (new.status, new.attempt, new.max_attempts) == (expected_status, expected_attempt, max_attempts)
    if expected_status is P:
        assert (new.retry_kind, new.retry_context) == (RetryKind.CI_FAILURE, "log")
        assert new.retry_reason == "CI failed: tests"
    else:
        assert "no retries left" in new.close_reason


@pytest.mark.parametrize(
    "previous_category,previous_count,checks,expected_count,expected_status",
    [
        ("", 0, ["tests"], 1, P),
        ("ci_failure:tests", 1, ["tests"], 2, P),
        ("ci_failure:tests", 2, ["tests"], 3, F),  # third in a row: circuit breaker
        ("ci_failure:lint", 2, ["tests"], 1, P),  # a different set resets to 1
        ("ci_failure:lint,tests", 2, ["tests"], 1, P),
        ("ci_failure:lint,tests", 2, ["tests", "lint", "tests"], 3, F),  # sorted, distinct
        ("ci_failure:tests", 0, ["tests"], 1, P),  # reset by feedback
    ],
)
def test_ci_failed_circuit_breaker(previous_category, previous_count, checks, expected_count, expected_status):
    task = make(REV, attempt=1, max_attempts=9, failure_category=previous_category, consecutive_failures=previous_count)
    new = ok(rules.ci_failed(task, failing_checks=checks, head_sha=HEAD, context="", now=NOW))
    assert new.status is expected_status
    assert new.consecutive_failures == expected_count
    assert new.failure_category == rules.ci_category(checks)
    if expected_status is F:
        assert "3 times in a row" in new.close_reason


def test_ci_category_sorts_and_dedupes():
    assert rules.ci_category(["tests", "lint", "tests", " build "]) == "ci_failure:build,lint,tests"
    with pytest.raises(ValueError):
        rules.ci_category([" ", ""])


def test_breaker_is_checked_before_the_budget():
    task = make(REV, attempt=5, max_attempts=5, failure_category="ci_failure:t", consecutive_failures=2)
    new = ok(rules.ci_failed(task, failing_checks=["t"], head_sha=HEAD, context="", now=NOW))
    assert "in a row" in new.close_reason


@pytest.mark.parametrize(
    "cost,cap,expected_status",
    [(9.99, 10.0, P), (10.0, 10.0, F), (12.0, 10.0, F), (0.0, 0.0, F)],
)
def test_ci_failed_cost_gate(cost, cap, expected_status):
    task = make(REV, cost_usd=cost, max_cost_usd=cap)
    new = ok(rules.ci_failed(task, failing_checks=["t"], head_sha=HEAD, context="", now=NOW))
    assert new.status is expected_status
    if expected_status is F:
        assert "Cost cap reached" in new.close_reason


def test_cost_gate_comes_before_breaker_and_budget():
    task = make(REV, attempt=5, max_attempts=5, failure_category="ci_failure:t", consecutive_failures=2, cost_usd=10.0)
    new = ok(rules.ci_failed(task, failing_checks=["t"], head_sha=HEAD, context="", now=NOW))
    assert new.status is F and new.close_reason.startswith("CI failed (t). Cost cap reached")


def test_ci_failed_on_a_stale_head_is_ignored():
    task = make(REV)
    reason = refused(
        rules.ci_failed(task, failing_checks=["t"], head_sha="ffff000", context="", now=NOW), task, "ffff000"
    )
    assert HEAD[:7] in reason


@pytest.mark.parametrize("status", [s for s in ALL if s is not REV])
def test_ci_failed_outside_review_is_ignored(status):
    task = make(status, head_sha=HEAD)
    refused(rules.ci_failed(task, failing_checks=["t"], head_sha=HEAD, context="", now=NOW), task, "not in review")


def test_ci_failed_needs_check_names():
    with pytest.raises(ValueError):
        rules.ci_failed(make(REV), failing_checks=[], head_sha=HEAD, context="", now=NOW)


def test_ci_failed_twice_for_one_head_retries_once():
    first = ok(rules.ci_failed(make(REV), failing_checks=["t"], head_sha=HEAD, context="", now=NOW))
    refused(rules.ci_failed(first, failing_checks=["t"], head_sha=HEAD, context="", now=NOW), first)


# -- feedback ------------------------------------------------------------------------------------


def test_feedback_in_review_is_a_free_retry_that_resets_the_breaker():
    task = make(
        REV, attempt=3, max_attempts=5, consecutive_failures=2, failure_category="ci_failure:t", feedback_retries=4
    )
    new = ok(rules.feedback(task, text="Rename it.", author="alice", now=NOW))
    assert (new.status, new.attempt, new.max_attempts, new.feedback_retries) == (P, 4, 6, 5)
    assert (new.retry_kind, new.retry_context) == (RetryKind.FEEDBACK, "alice wrote:\nRename it.")
    assert new.consecutive_failures == 0
    assert new.pr_number == 12 and new.head_sha == HEAD  # same PR, same branch


@pytest.mark.parametrize("done,limit,accepted", [(19, 20, True), (20, 20, False), (0, 1, True), (1, 1, False)])
def test_feedback_limit(done, limit, accepted):
    task = make(REV, feedback_retries=done)
    d = rules.feedback(task, text="x", author="a", now=NOW, limit=limit)
    if accepted:
        assert ok(d).feedback_retries == done + 1
    else:
        refused(d, task, "limit", "start over")


def test_feedback_at_the_cost_cap_is_refused():
    task = make(REV, cost_usd=10.0, max_cost_usd=10.0)
    refused(rules.feedback(task, text="x", author="a", now=NOW), task, "cost cap", "max_cost_usd")


def test_feedback_while_running_is_queued():
    task = make(RUN, with_pr=True, queued_feedback=("bob wrote:\nfirst",))
    new = ok(rules.feedback(task, text="second", author="alice", now=NOW))
    assert new.status is RUN and new.attempt == task.attempt and new.max_attempts == task.max_attempts
    assert new.queued_feedback == ("bob wrote:\nfirst", "alice wrote:\nsecond")
    over = make(RUN, with_pr=True, feedback_retries=20)
    refused(rules.feedback(over, text="x", author="a", now=NOW), over, "limit")


def test_feedback_while_pending_joins_the_queued_attempt():
    task = make(
        P,
        with_pr=True,
        attempt=3,
        retry_kind=RetryKind.FEEDBACK,
        retry_context="bob wrote:\nfirst",
        consecutive_failures=1,
    )
    new = ok(rules.feedback(task, text="second", author="alice", now=NOW))
    assert new.status is P and new.attempt == 3 and new.retry_kind is RetryKind.FEEDBACK
    assert new.retry_context == "bob wrote:\nfirst\n\n---\n\nalice wrote:\nsecond"
    assert new.consecutive_failures == 0


@pytest.mark.parametrize("status", [P, RUN])
def test_feedback_without_a_pr_is_refused(status):
    task = make(status)
    refused(rules.feedback(task, text="x", author="a", now=NOW), task, "no pull request")


@pytest.mark.parametrize(
    "status,words", [(W, "waiting for answers"), (PA, "resume"), (M, "merged"), (C, "closed"), (F, "retry")]
)
def test_feedback_refused_elsewhere(status, words):
    task = make(status)
    refused(rules.feedback(task, text="x", author="a", now=NOW), task, "cannot use this feedback", words)


def test_empty_feedback_is_ignored():
    task = make(REV)
    refused(rules.feedback(task, text="  \n", author="a", now=NOW), task, "empty")


# -- merge conflicts -----------------------------------------------------------------------------


@pytest.mark.parametrize("done,expected_status", [(0, P), (3, P), (4, P), (5, F), (7, F)])
def test_merge_conflict_limit_fifth_vs_sixth(done, expected_status):
    task = make(
        REV, attempt=3, max_attempts=5, conflict_retries=done, failure_category="ci_failure:t", consecutive_failures=2
    )
    new = ok(rules.merge_conflict(task, now=NOW))
    assert new.status is expected_status
    assert (new.failure_category, new.consecutive_failures) == ("ci_failure:t", 2)  # CI breaker untouched
    if expected_status is P:
        assert (new.attempt, new.max_attempts, new.conflict_retries) == (4, 6, done + 1)
        assert new.retry_kind is RetryKind.MERGE_CONFLICT and "main" in new.retry_reason
    else:
        assert "conflict retries in a row" in new.close_reason


def test_merge_conflict_outside_the_budget_even_when_the_budget_is_spent():
    new = ok(rules.merge_conflict(make(REV, attempt=5, max_attempts=5), now=NOW))
    assert (new.status, new.attempt, new.max_attempts) == (P, 6, 6)


def test_merge_conflict_cost_gate():
    new = ok(rules.merge_conflict(make(REV, cost_usd=10.0), now=NOW))
    assert new.status is F and "Cost cap reached" in new.close_reason


@pytest.mark.parametrize("status", [s for s in ALL if s is not REV])
def test_merge_conflict_ignored_outside_review(status):
    task = make(status)
    refused(rules.merge_conflict(task, now=NOW), task, "merge conflict")


# -- transient failures --------------------------------------------------------------------------


@pytest.mark.parametrize("done,minutes", [(0, 1), (1, 2), (2, 4), (3, 8), (4, 16)])
def test_transient_backoff_exact(done, minutes):
    task = make(RUN, attempt=2, max_attempts=5, transient_retries=done)
    new = ok(rules.transient(task, reason="Rate limited", now=NOW))
    assert new.status is P
    assert new.not_before == NOW + timedelta(minutes=minutes)
    assert (new.attempt, new.max_attempts, new.transient_retries) == (3, 6, done + 1)
    assert rules.transient_backoff(done + 1) == timedelta(minutes=minutes)


def test_sixth_transient_in_a_row_fails():
    new = ok(rules.transient(make(RUN, transient_retries=5), reason="Overloaded", now=NOW))
    assert new.status is F and "5 times in a row" in new.close_reason and new.not_before is None


def test_transient_keeps_the_job_and_serves_worker_lost():
    task = make(RUN, with_pr=True, attempt=3, retry_kind=RetryKind.CI_FAILURE, retry_context="log")
    new = ok(rules.transient(task, reason=rules.WORKER_LOST, now=NOW))
    assert (new.retry_kind, new.retry_context) == (RetryKind.CI_FAILURE, "log")
    assert "heartbeats" in new.retry_reason


def _without_worker(d: Decision) -> tuple:
    return (d.accepted, d.task.replace(worker_id=""), d.reason, d.from_statuses, d.effects, d.previous)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"with_pr": True, "retry_kind": RetryKind.CI_FAILURE, "retry_context": "log"},
        {"attempt": 5, "max_attempts": 5, "transient_retries": 2},
        {"with_pr": True, "queued_feedback": ("bob wrote:\nfirst",)},
    ],
)
def test_worker_lost_is_transient_that_keeps_the_lost_worker(fields):
    task = make(RUN, attempt=fields.pop("attempt", 3), worker_id="w-lost", **fields)
    d = rules.worker_lost(task, now=NOW, attempt=task.attempt)
    plain = rules.transient(task, reason=rules.WORKER_LOST, now=NOW, attempt=task.attempt)
    assert d.accepted and d.task.status is P and d.task.attempt == task.attempt + 1
    assert d.task.worker_id == "w-lost" and plain.task.worker_id == ""
    assert d.task.heartbeat_at is None and Effect.WAKE_WORKERS in d.effects
    assert _without_worker(d) == _without_worker(plain)
    assert "worker_id" not in d.changes  # the stored worker_id is left as it is
    assert d.changes == {k: v for k, v in plain.changes.items() if k != "worker_id"}


def test_worker_lost_with_queued_feedback_is_still_recognisable_by_worker_id():
    task = make(RUN, with_pr=True, attempt=2, worker_id="w-lost", queued_feedback=("bob wrote:\nfirst",))
    new = rules.worker_lost(task, now=NOW, attempt=2).task
    # The reason says "feedback" now, not the lost worker: only worker_id tells.
    assert not new.retry_reason.startswith(rules.WORKER_LOST)
    assert (new.status, new.attempt, new.worker_id) == (P, 3, "w-lost")


def test_worker_lost_that_fails_the_task_clears_the_worker():
    limit = rules.worker_lost(make(RUN, worker_id="w-lost", transient_retries=5), now=NOW, attempt=1)
    capped = rules.worker_lost(make(RUN, worker_id="w-lost", cost_usd=10.0), now=NOW)
    for d in (limit, capped):
        new = ok(d)
        assert new.status is F and new.worker_id == "" and new.heartbeat_at is None
        assert new.close_reason.startswith(rules.WORKER_LOST)


@pytest.mark.parametrize("status", [s for s in ALL if s is not RUN])
def test_worker_lost_only_from_running(status):
    task = make(status)
    refused(rules.worker_lost(task, now=NOW), task, "not running")


def test_worker_lost_about_another_attempt_is_ignored():
    task = make(RUN, attempt=4, worker_id="w-new")
    refused(rules.worker_lost(task, now=NOW, attempt=3), task, "attempt 3", "attempt 4")


def test_the_lost_worker_is_replaced_by_a_claim_and_cleared_when_the_task_leaves_pending():
    lost = rules.worker_lost(make(RUN, attempt=2, worker_id="w-lost"), now=NOW, attempt=2).task
    assert lost.worker_id == "w-lost"
    reclaimed = rules.claimed(lost, worker_id="w-2", now=lost.not_before)
    assert reclaimed.accepted and (reclaimed.task.status, reclaimed.task.worker_id) == (RUN, "w-2")
    assert ok(rules.spec_edited(lost, title="New", spec="S", now=NOW)).worker_id == "w-lost"  # still pending
    for d in (
        rules.stop(lost, now=NOW),
        rules.cancel(lost, now=NOW),
        rules.issue_closed(lost, now=NOW),
        rules.unlabeled(lost, now=NOW),
    ):
        new = ok(d)
        assert new.status in (PA, C) and new.worker_id == "" and d.changes["worker_id"] == ""
    assert ok(rules.start_over(lost, max_attempts=5, now=NOW)).worker_id == ""


def test_transient_does_not_count_against_a_spent_budget_but_the_cost_gate_applies():
    new = ok(rules.transient(make(RUN, attempt=5, max_attempts=5), reason="x", now=NOW))
    assert (new.status, new.attempt, new.max_attempts) == (P, 6, 6)
    capped = ok(rules.transient(make(RUN), reason="x", now=NOW, cost_usd=10.0))
    assert capped.status is F and capped.cost_usd == 10.0


@pytest.mark.parametrize("status", [s for s in ALL if s is not RUN])
def test_transient_only_from_running(status):
    task = make(status)
    refused(rules.transient(task, reason="x", now=NOW), task, "not running")


def test_transient_backoff_rejects_zero():
    with pytest.raises(ValueError):
        rules.transient_backoff(0)


# -- manual retry --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,attempt,max_attempts,expected_attempt,expected_max",
    [
        (F, 5, 5, 6, 8),  # max = attempt + 2 when that is larger
        (F, 3, 5, 4, 6),
        (F, 2, 10, 3, 10),  # kept when larger
        (F, 4, 6, 5, 7),
        (PA, 3, 5, 3, 5),  # a paused attempt has not run: it keeps its number
        (PA, 5, 5, 5, 7),
    ],
)
def test_manual_retry_max_rule(status, attempt, max_attempts, expected_attempt, expected_max):
    task = make(
        status,
        attempt=attempt,
        max_attempts=max_attempts,
        consecutive_failures=2,
        failure_category="ci_failure:t",
        conflict_retries=3,
        transient_retries=4,
        last_error_signature="sig",
        close_reason="CI failed",
    )
    new = ok(rules.manual_retry(task, instructions="Try the other API.", author="carol", now=NOW))
    assert (new.status, new.attempt, new.max_attempts) == (P, expected_attempt, expected_max)
    assert budget_left(new) >= rules.MANUAL_RETRY_GRANT
    assert (new.retry_kind, new.retry_context) == (RetryKind.MANUAL, "carol wrote:\nTry the other API.")
    assert (new.consecutive_failures, new.failure_category, new.conflict_retries, new.transient_retries) == (
        0,
        "",
        0,
        0,
    )
    assert new.last_error_signature == "" and new.close_reason == ""


def test_manual_retry_in_review_is_a_feedback_retry():
    task = make(REV, attempt=2, max_attempts=5, consecutive_failures=1)
    new = ok(rules.manual_retry(task, instructions="Use a dict.", author="dan", now=NOW))
    assert (new.retry_kind, new.attempt, new.max_attempts, new.feedback_retries) == (RetryKind.FEEDBACK, 3, 6, 1)
    assert new.retry_context == "dan wrote:\nUse a dict." and new.consecutive_failures == 0
    plain = ok(rules.manual_retry(task, now=NOW))
    assert plain.retry_context == rules.MANUAL_RETRY_DEFAULT_TEXT


def test_manual_retry_in_review_at_the_cost_cap_may_raise_the_cap():
    task = make(REV, cost_usd=10.0, max_cost_usd=10.0)
    refused(rules.manual_retry(task, now=NOW), task, "cost cap")
    d = rules.manual_retry(task, now=NOW, max_cost_usd=15.0)
    new = ok(d)
    assert (new.status, new.retry_kind, new.max_cost_usd) == (P, RetryKind.FEEDBACK, 15.0)
    assert d.previous is task and d.changes["max_cost_usd"] == 15.0


@pytest.mark.parametrize(
    "status,words", [(P, "worker"), (RUN, "stop` first"), (W, "answer"), (M, "start over"), (C, "start over")]
)
def test_manual_retry_refused(status, words):
    task = make(status)
    refused(rules.manual_retry(task, now=NOW), task, "cannot retry", words)


def test_manual_retry_at_the_cost_cap():
    task = make(F, cost_usd=10.0, max_cost_usd=10.0)
    refused(rules.manual_retry(task, now=NOW), task, "cost cap", "max_cost_usd")
    refused(rules.manual_retry(task, now=NOW, max_cost_usd=10.0), task, "cost cap")
    new = ok(rules.manual_retry(task, now=NOW, max_cost_usd=20.0))
    assert new.max_cost_usd == 20.0 and new.status is P
    lower = ok(rules.manual_retry(make(F, max_cost_usd=10.0), now=NOW, max_cost_usd=5.0))
    assert lower.max_cost_usd == 10.0  # the repo's cap never lowers a task's cap here


def test_manual_retry_takes_queued_feedback_along():
    task = make(PA, with_pr=True, queued_feedback=("bob wrote:\nq",))
    new = ok(rules.manual_retry(task, instructions="go", now=NOW))
    assert new.retry_context == "go\n\n---\n\nbob wrote:\nq" and new.queued_feedback == ()


# -- stop, unlabel, resume -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,expected_attempt,expected_max,effects",
    [(P, 2, 5, ()), (RUN, 3, 6, (Effect.STOP_AGENT,)), (W, 3, 6, ())],
)
def test_stop(status, expected_attempt, expected_max, effects):
    task = make(status, attempt=2, max_attempts=5)
    d = rules.stop(task, now=NOW, author="erin")
    new = ok(d)
    assert (new.status, new.attempt, new.max_attempts) == (PA, expected_attempt, expected_max)
    assert d.effects == effects
    assert "erin" in d.reason


@pytest.mark.parametrize("status,words", [(REV, "cancel"), (PA, "resume"), (M, "merged"), (C, "closed"), (F, "retry")])
def test_stop_refused(status, words):
    task = make(status)
    refused(rules.stop(task, now=NOW), task, "cannot stop", words)


@pytest.mark.parametrize("status,accepted", [(P, True), (RUN, True), (W, False), (REV, False), (PA, False), (F, False)])
def test_unlabeled_pauses_pending_or_running(status, accepted):
    task = make(status)
    d = rules.unlabeled(task, now=NOW)
    if accepted:
        assert ok(d).status is PA and "label" in d.reason
    else:
        refused(d, task, "label removed")


def test_resume_keeps_the_job():
    task = make(PA, attempt=3, retry_kind=RetryKind.CI_FAILURE, retry_context="log")
    d = rules.resume(task, now=NOW)
    new = ok(d)
    assert (new.status, new.attempt, new.retry_kind, new.retry_context) == (P, 3, RetryKind.CI_FAILURE, "log")
    assert Effect.WAKE_WORKERS in d.effects


def test_resume_turns_queued_feedback_into_a_feedback_retry():
    task = make(PA, with_pr=True, attempt=3, queued_feedback=("a wrote:\n1", "b wrote:\n2"), consecutive_failures=1)
    new = ok(rules.resume(task, now=NOW))
    assert new.retry_kind is RetryKind.FEEDBACK and new.retry_context == "a wrote:\n1\n\n---\n\nb wrote:\n2"
    assert (new.queued_feedback, new.feedback_retries, new.consecutive_failures) == ((), 1, 0)


@pytest.mark.parametrize("status", [s for s in ALL if s is not PA])
def test_resume_refused(status):
    task = make(status)
    refused(rules.resume(task, now=NOW), task, "cannot resume")


def test_resume_at_the_cost_cap_is_refused():
    task = make(PA, cost_usd=10.0)
    refused(rules.resume(task, now=NOW), task, "cost cap")


def test_stop_then_resume_costs_no_budget():
    task = make(RUN, attempt=2, max_attempts=5)
    paused = ok(rules.stop(task, now=NOW))
    again = ok(rules.resume(paused, now=NOW))
    assert budget_left(again) == budget_left(task) and again.attempt == 3


# -- cancel and closing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,effects",
    [
        (P, ()),
        (RUN, (Effect.STOP_AGENT,)),
        (REV, (Effect.CLOSE_PR, Effect.DELETE_BRANCH)),
        (W, (Effect.CLOSE_PR, Effect.DELETE_BRANCH)),
        (PA, ()),
        (F, (Effect.CLOSE_PR, Effect.DELETE_BRANCH)),
    ],
)
def test_cancel(status, effects):
    d = rules.cancel(make(status), now=NOW, author="fay")
    new = ok(d)
    assert new.status is C and d.effects == effects and "fay" in new.close_reason


def test_cancel_running_with_pr_has_every_effect():
    d = rules.cancel(make(RUN, with_pr=True), now=NOW)
    assert d.effects == (Effect.STOP_AGENT, Effect.CLOSE_PR, Effect.DELETE_BRANCH)


@pytest.mark.parametrize("status", [M, C])
def test_cancel_refused_when_final(status):
    task = make(status)
    refused(rules.cancel(task, now=NOW), task, "cannot cancel")


@pytest.mark.parametrize(
    "status,accepted,effects",
    [
        (P, True, ()),
        (RUN, True, (Effect.STOP_AGENT,)),
        (REV, True, ()),
        (W, True, ()),
        (PA, True, ()),
        (F, True, ()),
        (M, False, ()),
        (C, False, ()),
    ],
)
def test_issue_closed(status, accepted, effects):
    task = make(status)
    d = rules.issue_closed(task, now=NOW)
    if accepted:
        assert ok(d).status is C and d.effects == effects  # the PR is left to humans
    else:
        refused(d, task, "already")


@pytest.mark.parametrize("status", [s for s in ALL if s is not M])
def test_pr_merged_from_any_other_status(status):
    task = make(status, with_pr=True)
    d = rules.pr_merged(task, pr_number=12, now=NOW)
    assert ok(d).status is M
    assert d.effects == ((Effect.STOP_AGENT,) if status is RUN else ())


def test_pr_merged_refusals():
    merged = make(M)
    refused(rules.pr_merged(merged, pr_number=12, now=NOW), merged, "already merged")
    other = make(REV)
    refused(rules.pr_merged(other, pr_number=99, now=NOW), other, "#99", "not this task")
    none = make(P)
    refused(rules.pr_merged(none, pr_number=12, now=NOW), none, "not this task")


@pytest.mark.parametrize(
    "status,accepted", [(P, True), (RUN, True), (REV, True), (W, True), (PA, True), (F, True), (M, False), (C, False)]
)
def test_pr_closed(status, accepted):
    task = make(status, with_pr=True)
    d = rules.pr_closed(task, pr_number=12, now=NOW)
    if accepted:
        assert ok(d).status is C and "without merging" in d.task.close_reason
    else:
        refused(d, task, "already")
    other = make(REV)
    refused(rules.pr_closed(other, pr_number=13, now=NOW), other, "not this task")


# -- issue edits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,accepted",
    [(P, True), (PA, True), (W, True), (RUN, False), (REV, False), (M, False), (C, False), (F, False)],
)
def test_spec_edited(status, accepted):
    task = make(status)
    d = rules.spec_edited(task, title="New title", spec="New text", now=NOW)
    if accepted:
        new = ok(d)
        assert (new.status, new.title, new.spec) == (status, "New title", "New text")
    else:
        refused(d, task, "not used", "start over")


def test_spec_edit_without_change_is_ignored():
    task = make(P)
    refused(rules.spec_edited(task, title=task.title, spec=task.spec, now=NOW), task, "unchanged")


# -- the end of an attempt -----------------------------------------------------------------------


def test_attempt_pushed_moves_to_review_and_ends_streaks():
    task = make(
        RUN,
        attempt=2,
        conflict_retries=3,
        transient_retries=2,
        last_error_signature="e",
        consecutive_failures=1,
        failure_category="ci_failure:t",
        cost_usd=1.0,
    )
    d = rules.attempt_pushed(
        task,
        head_sha="beef1234",
        pr_number=5,
        pr_url="u",
        branch="b",
        cost_usd=0.5,
        summary="Fixed the test\nmore",
        now=NOW,
        agent_session="s1",
    )
    new = ok(d)
    assert (new.status, new.head_sha, new.pr_number, new.pr_url, new.branch) == (REV, "beef1234", 5, "u", "b")
    assert (new.conflict_retries, new.transient_retries, new.last_error_signature) == (0, 0, "")
    assert (new.consecutive_failures, new.failure_category) == (1, "ci_failure:t")  # the CI breaker spans pushes
    assert new.cost_usd == 1.5 and new.agent_session == "s1" and new.attempt == 2
    assert d.reason == "Attempt 2 pushed beef123 to #5: Fixed the test"


def test_attempt_pushed_with_queued_feedback_goes_straight_back_to_pending():
    task = make(
        RUN, attempt=2, max_attempts=5, queued_feedback=("a wrote:\none", "b wrote:\ntwo"), consecutive_failures=2
    )
    new = ok(rules.attempt_pushed(task, head_sha="beef", pr_number=5, pr_url="u", branch="b", now=NOW))
    assert (new.status, new.attempt, new.max_attempts, new.head_sha) == (P, 3, 6, "beef")
    assert (new.retry_kind, new.retry_context) == (RetryKind.FEEDBACK, "a wrote:\none\n\n---\n\nb wrote:\ntwo")
    assert (new.queued_feedback, new.feedback_retries, new.consecutive_failures) == ((), 1, 0)


def test_attempt_pushed_with_queued_feedback_at_the_cost_cap_stays_in_review():
    task = make(RUN, queued_feedback=("a wrote:\none",), cost_usd=9.0)
    d = rules.attempt_pushed(task, head_sha="beef", pr_number=5, pr_url="u", branch="b", cost_usd=1.0, now=NOW)
    new = ok(d)
    assert new.status is REV and new.queued_feedback == () and "not used" in d.reason


@pytest.mark.parametrize("status", [PA, P])
def test_a_late_push_is_recorded_without_a_status_change(status):
    task = make(status, attempt=3)
    d = rules.attempt_pushed(
        task, head_sha="beef", pr_number=5, pr_url="u", branch="b", cost_usd=0.25, now=NOW, attempt=2
    )
    new = ok(d)
    assert (new.status, new.head_sha, new.pr_number, new.attempt, new.cost_usd) == (status, "beef", 5, 3, 0.25)


@pytest.mark.parametrize("attempt", [None, 1, 3])
def test_a_late_push_from_another_attempt_is_ignored(attempt):
    task = make(PA, attempt=3)
    d = rules.attempt_pushed(task, head_sha="beef", pr_number=5, pr_url="u", branch="b", now=NOW, attempt=attempt)
    refused(d, task, "not running")


def test_a_push_racing_a_start_over_is_not_attached_to_the_new_task():
    running = make(RUN, attempt=1)
    fresh = ok(rules.start_over(running, max_attempts=5, now=NOW))
    d = rules.attempt_pushed(fresh, head_sha="beef", pr_number=5, pr_url="u", branch="b", now=NOW, attempt=1)
    refused(d, fresh, "not running")


@pytest.mark.parametrize(
    "report",
    [
        lambda t: rules.attempt_pushed(t, head_sha="beef", pr_number=5, pr_url="u", branch="b", now=NOW, attempt=2),
        lambda t: rules.attempt_failed(t, error="x", category="c", retryable=True, now=NOW, attempt=2),
        lambda t: rules.no_progress(t, now=NOW, attempt=2),
        lambda t: rules.transient(t, reason="x", now=NOW, attempt=2),
        lambda t: rules.questions_asked(t, questions=["q"], now=NOW, attempt=2),
    ],
)
def test_reports_about_an_earlier_attempt_are_ignored(report):
    task = make(RUN, with_pr=True, attempt=3)
    refused(report(task), task, "from attempt 2", "on attempt 3")
    assert ok(report(task.replace(attempt=2))).attempt >= 2


@pytest.mark.parametrize("status", [REV, W, M, C, F])
def test_attempt_pushed_refused(status):
    task = make(status)
    refused(
        rules.attempt_pushed(task, head_sha="beef", pr_number=5, pr_url="u", branch="b", now=NOW), task, "not running"
    )


def test_attempt_pushed_needs_facts():
    with pytest.raises(ValueError):
        rules.attempt_pushed(make(RUN), head_sha="", pr_number=5, pr_url="u", branch="b", now=NOW)


def test_questions_then_answers():
    task = make(RUN, attempt=1, max_attempts=5, transient_retries=1)
    asked = rules.questions_asked(task, questions=["Which DB?", "Which port?"], now=NOW, cost_usd=0.3)
    waiting = ok(asked)
    assert waiting.status is W and asked.effects == (Effect.POST_QUESTIONS,) and "2 question" in asked.reason
    assert waiting.attempt == 1 and waiting.cost_usd == 0.3 and waiting.transient_retries == 0
    new = ok(rules.answered(waiting, text="Postgres, 5432", author="gus", now=NOW))
    assert (new.status, new.attempt, new.max_attempts, new.retry_kind) == (P, 2, 6, RetryKind.ANSWERS)
    assert new.retry_context == "gus wrote:\nPostgres, 5432"


def test_questions_need_content_and_a_running_task():
    with pytest.raises(ValueError):
        rules.questions_asked(make(RUN), questions=[], now=NOW)
    task = make(REV)
    refused(rules.questions_asked(task, questions=["q"], now=NOW), task, "not running")


@pytest.mark.parametrize("status", [s for s in ALL if s is not W])
def test_answers_only_while_waiting(status):
    task = make(status)
    refused(rules.answered(task, text="x", now=NOW), task, "not waiting")


def test_answers_refused_at_cost_cap_or_empty():
    task = make(W, cost_usd=10.0)
    refused(rules.answered(task, text="x", now=NOW), task, "cost cap")
    empty = make(W)
    refused(rules.answered(empty, text=" ", now=NOW), empty, "empty")


def test_not_retryable_failure_fails_with_the_error():
    task = make(RUN, attempt=1)
    d = rules.attempt_failed(
        task, error="Invalid .github/patchwright.yml\nline 3", category="config", retryable=False, now=NOW, cost_usd=0.1
    )
    new = ok(d)
    assert new.status is F and new.close_reason == "Invalid .github/patchwright.yml\nline 3"
    assert d.reason.startswith("Attempt 1 failed: Invalid .github/patchwright.yml. Use `{bot} retry")
    assert new.cost_usd == 0.1


@pytest.mark.parametrize(
    "previous_category,previous_signature,count,category,signature,expected_count,expected_status",
    [
        ("", "", 0, "agent_error", "sig-a", 1, P),
        ("agent_error", "sig-a", 1, "agent_error", "sig-b", 2, P),
        ("agent_error", "sig-a", 2, "agent_error", "sig-b", 3, F),
        ("timeout", "sig-a", 1, "agent_error", "sig-a", 2, P),  # same signature: counts as a repeat
        ("timeout", "sig-a", 2, "agent_error", "sig-a", 3, F),
        ("timeout", "sig-a", 2, "agent_error", "sig-b", 1, P),
        ("timeout", "", 2, "agent_error", "", 1, P),  # empty signatures never match
    ],
)
def test_retryable_failure_breaker_and_error_signature(
    previous_category, previous_signature, count, category, signature, expected_count, expected_status
):
    task = make(
        RUN,
        attempt=1,
        max_attempts=9,
        failure_category=previous_category,
        last_error_signature=previous_signature,
        consecutive_failures=count,
        retry_kind=RetryKind.FIRST,
    )
    new = ok(
        rules.attempt_failed(task, error="boom", category=category, error_signature=signature, retryable=True, now=NOW)
    )
    assert (new.status, new.consecutive_failures, new.failure_category) == (expected_status, expected_count, category)
    assert new.last_error_signature == signature
    if expected_status is P:
        assert (new.attempt, new.max_attempts, new.retry_kind) == (2, 9, RetryKind.FIRST)  # the same job, counted


def test_retryable_failure_budget_and_cost():
    spent = make(RUN, attempt=5, max_attempts=5)
    assert ok(rules.attempt_failed(spent, error="x", category="c", retryable=True, now=NOW)).status is F
    capped = make(RUN, cost_usd=9.5)
    new = ok(rules.attempt_failed(capped, error="x", category="c", retryable=True, now=NOW, cost_usd=0.5))
    assert new.status is F and "Cost cap reached" in new.close_reason


def test_failed_conflict_attempt_is_retried_as_a_conflict_retry():
    task = make(
        RUN,
        with_pr=True,
        attempt=4,
        max_attempts=5,
        retry_kind=RetryKind.MERGE_CONFLICT,
        conflict_retries=2,
        consecutive_failures=1,
        failure_category="ci_failure:t",
    )
    new = ok(rules.attempt_failed(task, error="x", category="agent_error", retryable=True, now=NOW))
    assert (new.status, new.attempt, new.max_attempts, new.conflict_retries) == (P, 5, 6, 3)
    assert (new.consecutive_failures, new.failure_category) == (1, "ci_failure:t")
    sixth = make(RUN, with_pr=True, retry_kind=RetryKind.MERGE_CONFLICT, conflict_retries=5)
    assert ok(rules.attempt_failed(sixth, error="x", category="c", retryable=True, now=NOW)).status is F


def test_failure_with_queued_feedback_becomes_a_feedback_retry():
    task = make(
        RUN, with_pr=True, attempt=5, max_attempts=5, queued_feedback=("a wrote:\nx",), retry_kind=RetryKind.CI_FAILURE
    )
    new = ok(rules.attempt_failed(task, error="boom", category="agent_error", retryable=True, now=NOW))
    assert (new.status, new.attempt, new.max_attempts, new.retry_kind) == (P, 6, 6, RetryKind.FEEDBACK)


@pytest.mark.parametrize("status", [s for s in ALL if s is not RUN])
def test_attempt_failed_only_from_running(status):
    task = make(status)
    refused(rules.attempt_failed(task, error="x", category="c", retryable=True, now=NOW), task, "not running")


def test_no_changes_on_the_first_attempt_fails():
    new = ok(rules.no_progress(make(RUN), now=NOW))
    assert new.status is F and new.close_reason == "The agent made no changes."


@pytest.mark.parametrize("count,expected_status", [(1, P), (2, F)])
def test_no_progress_on_a_ci_retry_counts_as_the_same_ci_failure(count, expected_status):
    task = make(
        RUN,
        with_pr=True,
        attempt=2,
        max_attempts=9,
        retry_kind=RetryKind.CI_FAILURE,
        failure_category="ci_failure:t",
        consecutive_failures=count,
        retry_context="log",
    )
    new = ok(rules.no_progress(task, now=NOW))
    assert (new.status, new.consecutive_failures, new.failure_category) == (expected_status, count + 1, "ci_failure:t")
    if expected_status is P:
        assert (new.retry_kind, new.retry_context, new.attempt, new.max_attempts) == (RetryKind.CI_FAILURE, "log", 3, 9)


def test_no_progress_on_a_feedback_retry_has_its_own_category():
    task = make(
        RUN, with_pr=True, retry_kind=RetryKind.FEEDBACK, failure_category="ci_failure:t", consecutive_failures=0
    )
    first = ok(rules.no_progress(task, now=NOW))
    assert (first.failure_category, first.consecutive_failures) == ("no_changes:feedback", 1)


# -- start over and relabel ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,effects",
    [
        (P, (Effect.WAKE_WORKERS,)),
        (RUN, (Effect.STOP_AGENT, Effect.WAKE_WORKERS)),
        (REV, (Effect.CLOSE_PR, Effect.DELETE_BRANCH, Effect.WAKE_WORKERS)),
        (W, (Effect.CLOSE_PR, Effect.DELETE_BRANCH, Effect.WAKE_WORKERS)),
        (PA, (Effect.WAKE_WORKERS,)),
        (M, (Effect.DELETE_BRANCH, Effect.WAKE_WORKERS)),  # a merged PR stays merged
        (C, (Effect.CLOSE_PR, Effect.DELETE_BRANCH, Effect.WAKE_WORKERS)),
        (F, (Effect.CLOSE_PR, Effect.DELETE_BRANCH, Effect.WAKE_WORKERS)),
    ],
)
def test_start_over_from_any_status(status, effects):
    task = make(
        status,
        attempt=4,
        max_attempts=6,
        cost_usd=3.0,
        consecutive_failures=2,
        failure_category="c",
        conflict_retries=1,
        transient_retries=1,
        feedback_retries=3,
        queued_feedback=("q",),
        agent_session="s",
        close_reason="x",
        status_comment_id=99,
        last_error_signature="e",
    )
    d = rules.start_over(task, max_attempts=5, now=NOW)
    new = ok(d)
    assert d.effects == effects
    assert (new.status, new.attempt, new.max_attempts, new.retry_kind) == (P, 1, 5, RetryKind.FIRST)
    assert (new.cost_usd, new.consecutive_failures, new.failure_category, new.conflict_retries) == (0.0, 0, "", 0)
    assert (new.transient_retries, new.feedback_retries, new.queued_feedback, new.last_error_signature) == (
        0,
        0,
        (),
        "",
    )
    assert (new.pr_number, new.pr_url, new.branch, new.head_sha, new.agent_session) == (None, "", "", "", "")
    assert new.close_reason == "" and new.status_comment_id == 99  # the status comment is edited in place
    assert d.previous is task  # effects name the old PR and branch


@pytest.mark.parametrize("status", [s for s in ALL if s not in (F, C, M)])
def test_relabel_of_an_active_task_is_refused(status):
    task = make(status)
    refused(rules.relabeled(task, title="T", spec="S", defaults=TaskDefaults(), now=NOW), task, "already has a task")


@pytest.mark.parametrize("status", [F, C])
def test_relabel_of_a_failed_or_closed_task_starts_over_with_current_defaults(status):
    task = make(status, attempt=5, max_attempts=5, cost_usd=4.0, agent="aider")
    defaults = TaskDefaults(max_attempts=7, max_cost_usd=3.0, agent="claude", model="opus", base_branch="")
    d = rules.relabeled(task, title="New", spec="Text", defaults=defaults, now=NOW)
    new = ok(d)
    assert (new.status, new.attempt, new.max_attempts, new.max_cost_usd, new.cost_usd) == (P, 1, 7, 3.0, 0.0)
    assert (new.title, new.spec, new.agent, new.model, new.base_branch) == ("New", "Text", "claude", "opus", "main")
    assert Effect.CLOSE_PR in d.effects and Effect.DELETE_BRANCH in d.effects


def test_relabel_of_a_merged_task_is_refused():
    task = make(M)
    refused(rules.relabeled(task, title="T", spec="S", defaults=TaskDefaults(), now=NOW), task, "merged", "start over")


def test_start_over_rejects_a_zero_budget():
    with pytest.raises(ValueError):
        rules.start_over(make(F), max_attempts=0, now=NOW)


# -- cost and feedback helpers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "cost,cap,blocked", [(0.0, 10.0, False), (9.999, 10.0, False), (10.0, 10.0, True), (11.0, 10.0, True)]
)
def test_cost_gate(cost, cap, blocked):
    gate = rules.cost_gate(make(REV, cost_usd=cost, max_cost_usd=cap))
    assert (gate is not None) is blocked
    if blocked:
        assert gate == f"Cost cap reached: spent ${cost:.2f} of ${cap:.2f}."


def test_add_cost():
    d = rules.add_cost(make(REV, cost_usd=1.1), 0.2)
    assert ok(d).cost_usd == 1.3 and d.effects == ()
    over = rules.add_cost(make(RUN, cost_usd=9.9), 0.2)
    assert ok(over).cost_usd == 10.1 and over.effects == (Effect.STOP_AGENT,)
    task = make(P)
    refused(rules.add_cost(task, 0.0), task, "no cost")
    for bad in (-0.01, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            rules.add_cost(task, bad)


def test_coalesce_feedback():
    assert rules.coalesce_feedback([]) == ""
    assert rules.coalesce_feedback([" a ", "", "b", "a"]) == "a\n\n---\n\nb"
    assert rules.feedback_item(" hi ", "zoe") == "zoe wrote:\nhi"
    assert rules.feedback_item("hi") == "hi"


# -- the reasons' words -----------------------------------------------------------------------


def test_reasons_module_imports_only_the_task_model_and_the_standard_library():
    tree = ast.parse(inspect.getsource(reasons))
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert {name for name in imported if name.split(".")[0] == "bot"} == {"bot.tasks.model"}


def test_rules_still_export_the_reason_templates_others_use():
    for name in ("WORKER_LOST", "CLAIMED", "NO_CHANGES_FIRST", "MANUAL_RETRY_DEFAULT_TEXT", "STATE_WORDS"):
        assert getattr(rules, name) is getattr(reasons, name)
    assert all(hasattr(rules, name) for name in rules.__all__)


# -- a whole story -------------------------------------------------------------------------------


def test_demo_story_budget_accounting():
    """Label -> PR -> CI fails -> retry -> review feedback -> conflict -> merged (SPEC §11)."""
    t = rules.new_task(
        id="task_1",
        repo="o/r",
        installation_id=1,
        issue_number=3,
        title="T",
        spec="S",
        max_cost_usd=10.0,
        agent="command",
        model="",
        base_branch="main",
        now=NOW,
    )
    t = ok(rules.claimed(t, worker_id="w", now=NOW))
    t = ok(rules.attempt_pushed(t, head_sha="s1", pr_number=4, pr_url="u", branch="b", cost_usd=0.5, now=NOW))
    t = ok(rules.ci_failed(t, failing_checks=["tests"], head_sha="s1", context="log", now=NOW))
    assert (t.attempt, t.max_attempts) == (2, 5)
    t = ok(rules.claimed(t, worker_id="w", now=NOW))
    t = ok(rules.attempt_pushed(t, head_sha="s2", pr_number=4, pr_url="u", branch="b", cost_usd=0.5, now=NOW))
    t = ok(rules.feedback(t, text="rename", author="rev", now=NOW))
    assert (t.attempt, t.max_attempts) == (3, 6)
    t = ok(rules.claimed(t, worker_id="w", now=NOW))
    t = ok(rules.attempt_pushed(t, head_sha="s3", pr_number=4, pr_url="u", branch="b", now=NOW))
    t = ok(rules.merge_conflict(t, now=NOW))
    assert (t.attempt, t.max_attempts, t.budget_left) == (4, 7, 3)
    t = ok(rules.claimed(t, worker_id="w", now=NOW))
    t = ok(rules.attempt_pushed(t, head_sha="s4", pr_number=4, pr_url="u", branch="b", now=NOW))
    assert t.conflict_retries == 0
    t = ok(rules.pr_merged(t, pr_number=4, now=NOW))
    assert t.status is M and t.cost_usd == 1.0
