"""Pure parts of the web surface: JSON shapes, access decisions, parsing, SSE framing, HTML."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from bot.store.base import Delivery, DeliveryState, DeliveryVerdict
from bot.tasks.model import Status, Task
from bot.web import auth, views
from bot.web.api import (
    ApiError,
    check_id,
    parse_limit,
    parse_positive_int,
    parse_repo,
    parse_retry_body,
    parse_state,
    parse_status,
)
from bot.web.events import (
    StreamClosed,
    Subscription,
    changed_tasks,
    sse_comment,
    sse_event,
    sse_retry,
)
from bot.web.metrics import summarize_tasks
from bot.web.pages.board import render_board, render_board_filters
from bot.web.pages.deliveries import render_deliveries, render_deliveries_filters
from bot.web.pages.html import ago, link, render_message

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SECRETISH = ("token", "secret", "password", "private_key", "session")


def task(task_id: str = "task_1", **changes) -> Task:
    base = Task(id=task_id, repo="octo/widgets", installation_id=1, issue_number=7, title="Fix it",
                created_at=NOW, updated_at=NOW)
    return base.replace(**changes)


def keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys(v)}
    return set()


def test_task_json_is_an_allowlist_without_credentials():
    t = task(agent_session="sess-handle", spec="the spec", queued_feedback=("more",), pr_url="https://x/pull/1",
             status=Status.REVIEW)
    summary = views.task_summary_json(t, html_base="https://github.com")
    detail = views.task_json(t, html_base="https://github.com")
    for shape in (summary, detail):
        assert not [k for k in keys(shape) if any(word in k for word in SECRETISH)]
        assert "sess-handle" not in json.dumps(shape)
        assert shape["status"] == "review" and shape["budget_left"] == 4
        assert shape["issue_url"] == "https://github.com/octo/widgets/issues/7"
        assert shape["links"]["self"] == "/api/tasks/task_1"
        assert shape["created_at"] == NOW.isoformat()
    assert "spec" not in summary and detail["spec"] == "the spec" and detail["queued_feedback"] == ["more"]
    assert views.task_summary_json(task(pr_url="javascript:alert(1)"), html_base="h")["pr_url"] == ""


def test_delivery_json_has_no_payload():
    d = Delivery(id="d", event="issues", action="opened", repo="o/r", installation_id=3,
                 payload=b'{"token": "ghs_x"}', received_at=NOW, state=DeliveryState.DONE, ignore_reason="why")
    shape = views.delivery_json(d)
    assert shape["payload_bytes"] == 18 and "payload" not in shape and "ghs_x" not in json.dumps(shape)
    assert (shape["state"], shape["ignore_reason"], shape["received_at"]) == ("done", "why", NOW.isoformat())


def test_html_base_and_safe_urls():
    assert views.github_html_base("https://api.github.com") == "https://github.com"
    assert views.github_html_base("https://ghe.example.com/api/v3/") == "https://ghe.example.com"
    assert views.github_html_base("http://127.0.0.1:9000") == "http://127.0.0.1:9000"
    assert views.safe_http_url(" https://github.com/o/r/pull/1 ") == "https://github.com/o/r/pull/1"
    for bad in ("javascript:alert(1)", "data:text/html,x", "https://x/\"onmouseover=1", "//evil", ""):
        assert views.safe_http_url(bad) is None
    assert views.task_path("a/b c") == "/tasks/a%2Fb%20c"


def test_access_decisions():
    none = auth.Credentials()
    right = auth.Credentials(bearer="tok")
    wrong = auth.Credentials(bearer="nope")
    cookie = auth.Credentials(cookie=auth.session_cookie_value("tok"))

    def decide(mutating, private, token, creds):
        return auth.decide_access(mutating=mutating, private_read=private, admin_token=token, credentials=creds)

    assert decide(False, False, None, none).allowed  # public reads
    assert decide(True, False, None, right).status == 403  # no token configured: writes are off
    assert "PATCHWRIGHT_ADMIN_TOKEN" in decide(True, False, None, right).message
    assert decide(True, False, "tok", none).status == 401
    assert decide(True, False, "tok", wrong).status == 401
    assert decide(True, False, "tok", cookie).status == 401  # cookies never authorise writes
    assert decide(True, False, "tok", right).allowed
    assert decide(False, True, None, right).status == 403  # private reads without a token: nobody reads
    assert decide(False, True, "tok", none).status == 401
    assert decide(False, True, "tok", right).allowed and decide(False, True, "tok", cookie).allowed
    assert not decide(False, True, "other", cookie).allowed  # a new token invalidates old cookies


def test_credentials_parsing_and_cookie():
    assert auth.bearer_token("Bearer abc") == "abc" and auth.bearer_token("bearer  abc ") == "abc"
    assert auth.bearer_token("Basic abc") is None and auth.bearer_token("Bearer ") is None
    assert auth.bearer_token(None) is None
    value = auth.session_cookie_value("tok")
    assert "tok" not in value and len(value) == 64
    assert auth.cookie_matches(value, "tok") and not auth.cookie_matches(value + "0", "tok")
    assert auth.token_matches("tok", "tok") and not auth.token_matches("tok2", "tok")
    creds = auth.request_credentials({"Authorization": "Bearer x"}, {auth.COOKIE_NAME: "c"})
    assert creds == auth.Credentials(bearer="x", cookie="c")
    assert auth.safe_next_path("/tasks/t?x=1") == "/tasks/t?x=1"
    for bad in (None, "", "https://evil", "//evil", "/\\evil", "javascript:x", "/a\r\nSet-Cookie: x"):
        assert auth.safe_next_path(bad) == "/"


def test_query_and_body_parsing():
    assert parse_status("failed") is Status.FAILED and parse_status(None) is None and parse_status("") is None
    assert parse_state("done") is DeliveryState.DONE
    assert parse_repo("octo/widgets") == "octo/widgets"
    assert parse_limit(None, default=5, maximum=10) == 5 and parse_limit("7", default=5, maximum=10) == 7
    assert parse_positive_int("attempt", "3") == 3
    assert check_id("task", "task_1") == "task_1"
    assert parse_retry_body(b"") == "" and parse_retry_body(b'{"instructions": "do x"}') == "do x"
    assert parse_retry_body(b"{}") == "" and parse_retry_body(b'{"instructions": null}') == ""
    failures = [
        (lambda: parse_status("bogus"), 400, "pending, running"),
        (lambda: parse_state("nope"), 400, "pending, processing"),
        (lambda: parse_repo("not a repo"), 400, "owner/name"),
        (lambda: parse_limit("0", default=5, maximum=10), 400, "positive"),
        (lambda: parse_limit("11", default=5, maximum=10), 400, "at most 10"),
        (lambda: parse_positive_int("attempt", "-1"), 400, "positive"),
        (lambda: parse_positive_int("attempt", "\uff11"), 400, "positive"),  # a full-width digit
        (lambda: check_id("task", "x" * 500), 404, "No task"),
        (lambda: parse_retry_body(b"not json"), 400, "JSON"),
        (lambda: parse_retry_body(b'["x"]'), 400, "object"),
        (lambda: parse_retry_body(b'{"instruction": "x"}'), 400, "instruction"),
        (lambda: parse_retry_body(b'{"instructions": 5}'), 400, "string"),
        (lambda: parse_retry_body(b"\xff\xfe"), 400, "JSON"),
    ]
    for call, status, words in failures:
        with pytest.raises(ApiError) as info:
            call()
        assert info.value.status == status and words in info.value.message


def test_changed_tasks_by_version():
    a, b = task("a", version=1), task("b", version=1, updated_at=NOW - timedelta(seconds=5))
    changed, versions = changed_tasks({}, [a, b])
    assert [t.id for t in changed] == ["b", "a"]  # oldest change first
    assert versions == {"a": 1, "b": 1}
    changed, versions = changed_tasks(versions, [a.replace(version=2), b])
    assert [t.id for t in changed] == ["a"] and versions["a"] == 2
    assert changed_tasks(versions, [a.replace(version=2), b])[0] == []


def test_sse_framing():
    frame = sse_event("task", {"title": "two\nlines", "x": "é"})
    assert frame.startswith(b"event: task\ndata: {") and frame.endswith(b"}\n\n")
    assert frame.count(b"\n") == 3  # the data is one line whatever the text holds
    assert json.loads(frame.split(b"data: ", 1)[1]) == {"title": "two\nlines", "x": "é"}
    assert sse_comment("keep\nalive") == b": keep alive\n\n"
    assert sse_retry(1500) == b"retry: 1500\n\n"


async def test_subscription_drops_a_subscriber_that_falls_behind():
    sub = Subscription(queue_size=2)
    assert sub.offer(task("a")) and sub.offer(task("b"))
    assert not sub.offer(task("c")) and sub.closed
    assert (await sub.next(0.1)).id == "a"
    assert (await sub.next(0.1)).id == "b"
    with pytest.raises(StreamClosed):
        await sub.next(0.1)
    idle = Subscription(queue_size=2)
    assert await idle.next(0.01) is None
    await asyncio.sleep(0)


def test_ago():
    assert ago(None, NOW) == "-"
    assert ago(NOW - timedelta(seconds=3), NOW) == "just now"
    assert ago(NOW - timedelta(seconds=42), NOW) == "42s ago"
    assert ago(NOW - timedelta(minutes=5, seconds=3), NOW) == "5m ago"
    assert ago(NOW - timedelta(hours=3), NOW) == "3h ago"
    assert ago(NOW - timedelta(days=2, hours=1), NOW) == "2d ago"
    assert ago(NOW + timedelta(minutes=4), NOW) == "in 4m"


def test_html_escapes_untrusted_text():
    hostile = '<script>alert("x")</script>'
    t = task(title=hostile, pr_url="javascript:alert(1)", pr_number=3, status=Status.REVIEW,
             retry_reason="<b>reason</b>")
    board = render_board([t], now=NOW, html_base="https://github.com")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in board and "<script" not in board
    assert "javascript:" not in board and "&lt;b&gt;reason" in board
    assert link("javascript:alert(1)", "x") == "x"
    assert link("https://ok/", '"><x>') == '<a href="https://ok/" rel="noopener noreferrer">&quot;&gt;&lt;x&gt;</a>'
    d = Delivery(id="<d>", event="issues", action="<a>", repo="o/r", installation_id=None, payload=b"{}",
                 received_at=NOW, ignore_reason="<i>why</i>")
    rows = render_deliveries([d], now=NOW)
    assert "<i>" not in rows and "&lt;i&gt;why" in rows and "%3Cd%3E" in rows
    page = render_message("<t>", "<m>", login_next='/"><x>')
    assert "<t>" not in page and "<m>" not in page and '"><x>' not in page


def test_task_counts_for_metrics():
    counts, cost = summarize_tasks([task("a", cost_usd=1.25), task("b", status=Status.FAILED, cost_usd=0.5)])
    assert counts[Status.PENDING] == 1 and counts[Status.FAILED] == 1 and counts[Status.MERGED] == 0
    assert len(counts) == len(Status) and cost == 1.75


def test_filter_forms_keep_the_choice_and_escape_the_repository():
    board = render_board_filters(Status.REVIEW, 'a/"b"')
    assert 'action="/"' in board and 'name="status"' in board
    assert '<option value="review" selected>review</option>' in board
    assert '<option value="">any status</option>' in board and board.count(" selected") == 1
    assert 'value="a/&quot;b&quot;"' in board
    deliveries = render_deliveries_filters(None, None, None)
    assert 'action="/deliveries"' in deliveries and 'name="verdict"' in deliveries and 'name="event"' in deliveries
    assert " selected" not in deliveries
    assert [f'<option value="{v.value}">' in deliveries for v in DeliveryVerdict] == [True] * len(DeliveryVerdict)


def test_the_task_page_says_when_a_cost_is_unknown_and_what_the_sandbox_refused() -> None:
    from datetime import UTC, datetime

    from bot.store.base import Attempt
    from bot.tasks.model import RetryKind, Task
    from bot.web.pages.task import render_task

    now = datetime(2026, 12, 7, tzinfo=UTC)
    task = Task(id="task_1", repo="o/r", installation_id=1, issue_number=3, title="t")
    attempts = [
        Attempt("task_1", 1, RetryKind.FIRST, started_at=now, outcome="pushed", cost_known=False,
                refused="github.com:443: no network\n10.0.0.1:80: local"),
    ]  # fmt: skip
    page = render_task(task, attempts, [], [], now=now, html_base="https://github.com")
    assert "unknown" in page and "the cap cannot be enforced" in page
    assert "The sandbox refused connections to github.com:443, 10.0.0.1:80" in page
