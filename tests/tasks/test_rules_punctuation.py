"""A failure's own words ending in a full stop do not double the punctuation of the reason
that quotes them (seen on the dashboard as "tests failed.: the same failure…")."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from bot.tasks import rules
from bot.tasks.model import Status, Task

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DOUBLED = re.compile(r"(?<!\.)\.[.:;,]")


def running(**changes) -> Task:
    return Task(id="t", repo="o/r", installation_id=1, issue_number=1, title="t", status=Status.RUNNING,
                attempt=1, max_attempts=5, created_at=NOW, updated_at=NOW).replace(**changes)


def texts(decision) -> list[str]:
    return [decision.reason, decision.task.retry_reason, decision.task.close_reason]


def test_a_failed_attempt_quoting_a_sentence_reads_once_punctuated():
    retried = rules.attempt_failed(running(), error="Tests failed.", category="agent", retryable=True, now=NOW)
    assert retried.task.status is Status.PENDING and "Tests failed" in retried.reason
    tripped = rules.attempt_failed(running(failure_category="agent", consecutive_failures=2), error="Tests failed.",
                                   category="agent", retryable=True, now=NOW)
    assert tripped.task.status is Status.FAILED
    exhausted = rules.attempt_failed(running(attempt=5), error="Tests failed!", category="x", retryable=True, now=NOW)
    assert exhausted.task.status is Status.FAILED
    for decision in (retried, tripped, exhausted):
        assert not [t for t in texts(decision) if DOUBLED.search(t)], texts(decision)


def test_a_transient_failure_quoting_a_sentence_reads_once_punctuated():
    retried = rules.transient(running(), reason="GitHub is down.", now=NOW)
    limit = rules.transient(running(transient_retries=rules.TRANSIENT_RETRY_LIMIT), reason="GitHub is down.", now=NOW)
    assert (retried.task.status, limit.task.status) == (Status.PENDING, Status.FAILED)
    for decision in (retried, limit):
        assert not [t for t in texts(decision) if DOUBLED.search(t)], texts(decision)
    assert "GitHub is down" in limit.reason


def test_an_ellipsis_is_kept():
    decision = rules.transient(running(), reason="Reconnecting...", now=NOW)
    assert "Reconnecting...;" in decision.reason or "Reconnecting..." in decision.reason
