"""The store queries of the operator's console, on every backend (fixtures in
tests/conftest.py): task search and keyset paging, delivery filters and paging, the sender
recorded at the ingress, log batches, bulk attempts and events, the task a delivery
changed, worker reports; plus the pure query builders."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest

from bot.app import create_app
from bot.config import load_settings
from bot.store import rows
from bot.store.base import (
    Attempt,
    Delivery,
    DeliveryState,
    DeliveryVerdict,
    StoreError,
    TaskCursor,
    TaskEvent,
)
from bot.store.sqlite import encode_time
from bot.tasks.model import RetryKind, Status, Task, new_id
from tests.conftest import hub_signature

SECRET = "console-queries-secret"


def make_task(clock, issue: int, *, title: str = "", repo: str = "acme/widgets", **fields) -> Task:
    return Task(
        id=fields.pop("id", None) or new_id("task", now_ms=int(clock.now.timestamp() * 1000)),
        repo=repo,
        installation_id=42,
        issue_number=issue,
        title=title or f"issue {issue}",
        created_at=clock.now,
        updated_at=clock.now,
        **fields,
    )


def make_delivery(
    clock, delivery_id: str, *, event: str = "issues", action: str = "labeled", **fields
) -> Delivery:
    return Delivery(
        id=delivery_id,
        event=event,
        action=action,
        repo=fields.pop("repo", "acme/widgets"),
        installation_id=42,
        payload=b'{"action": "labeled"}',
        received_at=clock.now,
        **fields,
    )


async def ids_of(store, **filters) -> list[str]:
    return [task.id for task in await store.list_tasks(**filters)]


# -- pure builders ----------------------------------------------------------------------------


def test_like_literal_and_search_number_are_pure():
    assert rows.like_literal("50%_a\\b") == "50\\%\\_a\\\\b"
    assert rows.search_number("12") == 12
    assert rows.search_number(" #12 ") == 12
    assert rows.search_number("#") is None
    assert rows.search_number("1.5") is None
    assert rows.search_number("١٢") is None  # digits, but not ASCII
    assert rows.search_number(str(2**63)) is None  # beyond the column


def test_dollar_placeholders_number_every_question_mark():
    numbered = rows.dollar_placeholders("a = ? AND (b = ? OR c < ?) LIMIT ?")
    assert numbered == "a = $1 AND (b = $2 OR c < $3) LIMIT $4"
    assert rows.dollar_placeholders("SELECT 1") == "SELECT 1"


def test_filters_build_terms_and_parameters_in_order(clock):
    terms, params = rows.task_filters(
        statuses=[Status.PENDING, "review"], repo="o/r", search=" #7 ", before=None, encode_time=encode_time
    )
    assert terms[0] == "status IN (?, ?)" and params[:3] == ["pending", "review", "o/r"]
    assert params[3:] == ["%#7%"] * 3 + [7, 7]
    assert sum(term.count("?") for term in terms) == len(params)
    nothing = {"repo": None, "before": None, "encode_time": encode_time}
    assert rows.task_filters(statuses=None, search="  ", **nothing) == ([], [])
    assert rows.task_filters(statuses=[], search=None, **nothing)[0] == ["1 = 0"]
    terms, params = rows.delivery_filters(
        state=None, repo=None, event="issues.labeled", verdict="ignored", from_bots=False, before_seq=9
    )
    assert params == ["issues", "labeled", 9] and sum(term.count("?") for term in terms) == 3
    with pytest.raises(StoreError):
        rows.delivery_filters(
            state=None, repo=None, event=None, verdict="maybe", from_bots=None, before_seq=None
        )


# -- tasks: search --------------------------------------------------------------------------


async def test_search_by_title_repo_id_and_number(store, clock):
    fix, _ = await store.create_task(make_task(clock, 12, title="Fix the Widget parser"))
    clock.advance(timedelta(seconds=1))
    other, _ = await store.create_task(make_task(clock, 5, title="Docs", repo="globex/Rockets", pr_number=12))
    clock.advance(timedelta(seconds=1))
    plain, _ = await store.create_task(make_task(clock, 7, title="Nothing to see"))

    assert await ids_of(store, search="widget PARSER") == [fix.id]
    assert await ids_of(store, search="rockets") == [other.id]
    assert await ids_of(store, search=plain.id.upper()) == [plain.id]
    assert await ids_of(store, search="12") == [other.id, fix.id]  # issue 12, and PR 12
    assert await ids_of(store, search="#12") == [other.id, fix.id]
    assert await ids_of(store, search="#7") == [plain.id]
    assert await ids_of(store, search="no such thing") == []
    assert await ids_of(store, search="  ") == [plain.id, other.id, fix.id]  # blank: no filter
    assert await ids_of(store, search="widget", statuses=[Status.REVIEW]) == []
    assert await ids_of(store, search="e", repo="globex/Rockets") == [other.id]


async def test_search_takes_like_wildcards_literally(store, clock):
    percent, _ = await store.create_task(make_task(clock, 1, title="Cut cost by 50%"))
    clock.advance(timedelta(seconds=1))
    underscore, _ = await store.create_task(make_task(clock, 2, title="rename snake_case"))
    clock.advance(timedelta(seconds=1))
    backslash, _ = await store.create_task(make_task(clock, 3, title="path C:\\temp"))
    clock.advance(timedelta(seconds=1))
    await store.create_task(make_task(clock, 4, title="50 widgets, snakeXcase, C:/temp"))

    assert await ids_of(store, search="50%") == [percent.id]
    assert await ids_of(store, search="%") == [percent.id]
    assert await ids_of(store, search="snake_case") == [underscore.id]
    assert await ids_of(store, search="e_c") == [underscore.id]  # not snakeXcase
    assert await ids_of(store, search="C:\\") == [backslash.id]


# -- tasks: keyset paging -----------------------------------------------------------------------


async def test_task_paging_returns_every_row_once_while_tasks_are_added(store, clock):
    created = []
    for issue in range(1, 11):
        if issue % 3:  # several tasks share a created_at: the id breaks the tie
            clock.advance(timedelta(seconds=1))
        task, _ = await store.create_task(make_task(clock, issue, id=f"task_{issue:02d}"))
        created.append(task.id)

    seen: list[str] = []
    cursor: TaskCursor | None = None
    added = 100
    while True:
        page = await store.list_tasks(limit=3, before=cursor)
        if not page:
            break
        seen.extend(task.id for task in page)
        cursor = TaskCursor(page[-1].created_at, page[-1].id)
        for _ in range(2):  # newer tasks arrive between page reads
            clock.advance(timedelta(milliseconds=10))
            added += 1
            await store.create_task(make_task(clock, added))

    assert sorted(seen) == sorted(created) and len(seen) == len(set(seen))
    assert seen == [task.id for task in await store.list_tasks(limit=1000) if task.id in set(created)]
    # a cursor in the middle of a tie still splits it exactly
    everything = await store.list_tasks(limit=1000)
    for index, task in enumerate(everything):
        after = await store.list_tasks(limit=1000, before=TaskCursor(task.created_at, task.id))
        assert [t.id for t in after] == [t.id for t in everything[index + 1 :]]


async def test_task_cursor_needs_an_aware_time(store, clock):
    with pytest.raises(StoreError):
        await store.list_tasks(before=TaskCursor(clock.now.replace(tzinfo=None), "task_x"))


# -- deliveries: sender, filters, paging ---------------------------------------------------------


async def seed_deliveries(store, clock) -> dict[str, Delivery]:
    """One delivery per verdict, of several events and senders."""
    specs = [
        ("d-acted", "issues", "labeled", "octocat"),
        ("d-ignored", "issue_comment", "edited", "patchwright[bot]"),
        ("d-failed", "issues", "opened", "octocat"),
        ("d-pending", "pull_request", "closed", ""),
        ("d-processing", "issues", "labeled", "dependabot[bot]"),
        ("d-shouty", "issues", "closed", "NOT[BOT]"),  # not a GitHub App login: from_bot is case-sensitive
    ]
    for delivery_id, event, action, sender in specs:
        clock.advance(timedelta(seconds=1))
        delivery = make_delivery(
            clock, delivery_id, event=event, action=action, sender=sender, repo=f"o/{delivery_id}"
        )
        assert await store.record_delivery(delivery)
    assert len(await store.claim_deliveries("dispatcher-1", limit=10)) == len(specs)  # one repository each
    await store.finish_delivery("d-acted", state=DeliveryState.DONE, outcome="task created")
    await store.finish_delivery("d-ignored", state=DeliveryState.DONE, ignore_reason="the bot's own comment")
    await store.finish_delivery("d-failed", state=DeliveryState.FAILED, outcome="boom")
    await store.finish_delivery("d-shouty", state=DeliveryState.DONE, outcome="closed")
    await store.finish_delivery("d-pending", state=DeliveryState.DONE, outcome="closed")
    assert await store.requeue_delivery("d-pending")  # pending again; d-processing stays claimed
    return {d.id: d for d in await store.list_deliveries(limit=100)}


async def delivery_ids(store, **filters) -> list[str]:
    return [d.id for d in await store.list_deliveries(limit=100, **filters)]


async def test_sender_round_trips_and_defaults_to_empty(store, clock):
    await store.record_delivery(make_delivery(clock, "d-app", sender="patchwright[bot]"))
    await store.record_delivery(make_delivery(clock, "d-none", repo="acme/other"))
    app, none = await store.get_delivery("d-app"), await store.get_delivery("d-none")
    assert (app.sender, app.from_bot) == ("patchwright[bot]", True)
    assert (none.sender, none.from_bot) == ("", False)
    senders = {d.id: d.sender for d in await store.list_deliveries()}
    assert senders == {"d-app": "patchwright[bot]", "d-none": ""}
    claimed = await store.claim_deliveries("dispatcher-1")
    assert {d.id: d.sender for d in claimed} == {"d-app": "patchwright[bot]", "d-none": ""}


async def test_delivery_filters_by_event_verdict_and_bot_sender(store, clock):
    seeded = await seed_deliveries(store, clock)
    verdicts = {delivery_id: d.verdict for delivery_id, d in seeded.items()}

    assert await delivery_ids(store, event="issues") == ["d-shouty", "d-processing", "d-failed", "d-acted"]
    assert await delivery_ids(store, event="issues.labeled") == ["d-processing", "d-acted"]
    assert await delivery_ids(store, event="issues.nothing") == []
    assert await delivery_ids(store, event="issue") == []  # the whole name, not a prefix
    for verdict in DeliveryVerdict:
        expected = [d for d in await delivery_ids(store) if verdicts[d] is verdict]
        assert await delivery_ids(store, verdict=verdict) == expected, verdict
        assert await delivery_ids(store, verdict=verdict.value) == expected
    assert await delivery_ids(store, verdict=DeliveryVerdict.ACTED) == ["d-shouty", "d-acted"]
    assert await delivery_ids(store, verdict=DeliveryVerdict.IGNORED) == ["d-ignored"]
    assert await delivery_ids(store, verdict=DeliveryVerdict.FAILED) == ["d-failed"]
    assert set(await delivery_ids(store, verdict=DeliveryVerdict.WAITING)) >= {"d-processing", "d-pending"}
    assert await delivery_ids(store, from_bots=True) == ["d-processing", "d-ignored"]
    assert await delivery_ids(store, from_bots=False) == ["d-shouty", "d-pending", "d-failed", "d-acted"]
    assert [d.from_bot for d in await store.list_deliveries(from_bots=True)] == [True, True]
    assert await delivery_ids(store, event="issues", from_bots=False, verdict=DeliveryVerdict.ACTED) == [
        "d-shouty",
        "d-acted",
    ]
    assert await delivery_ids(store, event="issues", state=DeliveryState.FAILED) == ["d-failed"]
    failed_seq = seeded["d-failed"].seq
    assert await delivery_ids(store, before_seq=failed_seq) == ["d-ignored", "d-acted"]
    assert await delivery_ids(store, before_seq=failed_seq, event="issues") == ["d-acted"]


async def test_delivery_paging_returns_every_row_once_while_rows_are_added(store, clock):
    for n in range(11):
        await store.record_delivery(make_delivery(clock, f"d-{n:02d}"))
    seen: list[str] = []
    before: int | None = None
    added = 0
    while True:
        page = await store.list_deliveries(limit=4, before_seq=before)
        if not page:
            break
        seen.extend(d.id for d in page)
        before = page[-1].seq
        for _ in range(3):  # newer deliveries arrive between page reads
            added += 1
            await store.record_delivery(make_delivery(clock, f"new-{added}"))
    assert seen == [f"d-{n:02d}" for n in reversed(range(11))]


async def test_sender_is_recorded_at_the_ingress(aiohttp_client, store, clock):
    settings = load_settings({"PATCHWRIGHT_WEBHOOK_SECRET": SECRET}, env_file=None)
    client = await aiohttp_client(create_app(settings, store=store))
    bodies = {
        "d-user": {"action": "created", "sender": {"login": "octocat", "id": 1}},
        "d-app": {"action": "edited", "sender": {"login": "patchwright[bot]", "type": "Bot"}},
        "d-none": {"action": "opened"},
        "d-odd": {"action": "opened", "sender": {"login": 7}},  # read leniently: no sender
        "d-odd-elsewhere": {"action": "opened", "installation": {"id": "x"}, "sender": {"login": "hubot"}},
    }
    for delivery_id, payload in bodies.items():
        body = json.dumps(payload).encode()
        resp = await client.post(
            "/webhook",
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "issue_comment",
                "X-GitHub-Delivery": delivery_id,
                "X-Hub-Signature-256": hub_signature(body, SECRET),
            },
        )
        assert resp.status == 202, await resp.text()
    recorded = {d.id: d for d in await store.list_deliveries()}
    assert {d.id: d.sender for d in recorded.values()} == {
        "d-user": "octocat",
        "d-app": "patchwright[bot]",
        "d-none": "",
        "d-odd": "",
        "d-odd-elsewhere": "hubot",
    }
    assert [d.id for d in await store.list_deliveries(from_bots=True)] == ["d-app"]


# -- logs, attempts, events, the task a delivery changed --------------------------------------


async def test_log_batches_with_times_after_a_seq(store, clock):
    task, _ = await store.create_task(make_task(clock, 1))
    first_at = clock.now
    await store.append_logs(task.id, 1, ["one", "two"])
    clock.advance(timedelta(seconds=2))
    await store.append_logs(task.id, 1, ["three"])
    clock.advance(timedelta(seconds=2))
    await store.append_logs(task.id, 2, ["again"])
    await store.append_logs(task.id, 1, ["late line of attempt 1"])

    batches = await store.read_log_batches(task.id)
    assert [(b.attempt, b.lines) for b in batches] == [
        (1, ("one", "two")),
        (1, ("three",)),
        (1, ("late line of attempt 1",)),
        (2, ("again",)),
    ]
    assert batches[0].at == first_at and batches[1].at == first_at + timedelta(seconds=2)
    assert [b.seq for b in batches[:3]] == sorted(b.seq for b in batches[:3])
    assert [line for b in batches for line in b.lines] == [line for _, line in await store.read_logs(task.id)]

    after = await store.read_log_batches(task.id, after_seq=batches[0].seq)
    assert [b.lines for b in after] == [b.lines for b in batches[1:]]
    only_one = await store.read_log_batches(task.id, 1, after_seq=batches[1].seq)
    assert [b.lines for b in only_one] == [("late line of attempt 1",)]
    first_two = await store.read_log_batches(task.id, 1, limit=2)
    assert [b.lines for b in first_two] == [("one", "two"), ("three",)]
    assert await store.read_log_batches(task.id, after_seq=max(b.seq for b in batches)) == []
    assert await store.read_log_batches("task_unknown") == []


async def test_attempts_and_events_of_many_tasks_in_one_call(store, clock):
    a, _ = await store.create_task(
        make_task(clock, 1), event=TaskEvent(task_id="", kind="created", reason="labelled")
    )
    b, _ = await store.create_task(
        make_task(clock, 2), event=TaskEvent(task_id="", kind="created", reason="labelled")
    )
    c, _ = await store.create_task(make_task(clock, 3))
    for number in (2, 1):
        await store.start_attempt(Attempt(a.id, number, RetryKind.FIRST, clock.now))
    await store.start_attempt(Attempt(b.id, 1, RetryKind.FIRST, clock.now))
    await store.finish_attempt(b.id, 1, outcome="pushed", cost_usd=0.5)
    await store.transition(
        a.id,
        from_statuses=[Status.PENDING],
        changes={"status": Status.RUNNING},
        event=TaskEvent(task_id=a.id, kind="transition", reason="started"),
    )
    await store.add_event(TaskEvent(task_id=b.id, kind="note", reason="hello"))

    attempts = await store.list_attempts_for([a.id, b.id, c.id, a.id, "task_unknown"])
    assert set(attempts) == {a.id, b.id}
    assert [x.number for x in attempts[a.id]] == [1, 2]
    assert attempts[b.id] == await store.list_attempts(b.id)
    assert await store.list_attempts_for([]) == {}

    events = await store.list_events_for([a.id, b.id, c.id])
    assert set(events) == {a.id, b.id}
    assert events[a.id] == await store.list_events(a.id)
    assert [e.kind for e in events[b.id]] == ["created", "note"]
    kinds = await store.list_events_for([a.id, b.id], kinds=["created"])
    assert {task_id: [e.kind for e in found] for task_id, found in kinds.items()} == {
        a.id: ["created"],
        b.id: ["created"],
    }
    assert await store.list_events_for([a.id], kinds=[]) == {}
    many = [a.id] + [f"task_{n}" for n in range(5000)]  # a long list is still one query
    assert set(await store.list_attempts_for(many)) == {a.id}
    with pytest.raises(StoreError):
        await store.list_events_for(a.id)  # one id is not a list of ids


async def test_the_task_each_delivery_changed(store, clock):
    a, _ = await store.create_task(
        make_task(clock, 1), event=TaskEvent(task_id="", kind="created", reason="labelled", delivery_id="d-1")
    )
    b, _ = await store.create_task(make_task(clock, 2))
    await store.add_event(TaskEvent(task_id=a.id, kind="note", reason="again", delivery_id="d-2"))
    await store.add_event(TaskEvent(task_id=b.id, kind="note", reason="newest", delivery_id="d-2"))
    await store.add_event(TaskEvent(task_id=b.id, kind="note", reason="none"))

    assert await store.tasks_for_deliveries(["d-1", "d-2", "d-3", ""]) == {"d-1": a.id, "d-2": b.id}
    assert await store.tasks_for_deliveries([]) == {}


# -- workers ---------------------------------------------------------------------------------


async def test_workers_report_list_and_forget(store, clock):
    started = clock.now
    await store.report_worker("w-1", {"running": 1, "github_requests": 10})
    clock.advance(timedelta(seconds=5))
    await store.report_worker("w-2", {"running": 0})
    clock.advance(timedelta(seconds=5))
    await store.report_worker("w-1", {"running": 2, "github_requests": 25, "nested": {"a": [1, 2]}})

    workers = await store.list_workers()
    assert [w.worker_id for w in workers] == ["w-1", "w-2"]
    w1, w2 = workers
    assert (w1.started_at, w1.seen_at) == (started, clock.now)
    assert dict(w1.stats) == {"running": 2, "github_requests": 25, "nested": {"a": [1, 2]}}
    assert (w2.started_at, w2.seen_at) == (started + timedelta(seconds=5), started + timedelta(seconds=5))

    assert await store.forget_workers(started + timedelta(seconds=6)) == 1
    assert [w.worker_id for w in await store.list_workers()] == ["w-1"]
    assert await store.forget_workers(started) == 0
    with pytest.raises(StoreError):
        await store.forget_workers(clock.now.replace(tzinfo=None))
    with pytest.raises(StoreError):
        await store.report_worker("w-3", ["not", "a", "mapping"])  # type: ignore[arg-type]


async def test_a_fresh_worker_id_starts_a_new_record(store, clock):
    worker_id = f"w-{uuid.uuid4().hex[:8]}"
    await store.report_worker(worker_id, {})
    [record] = await store.list_workers()
    assert record.stats == {} and record.started_at == record.seen_at == clock.now


async def test_which_facts_were_recorded_in_one_call(store, clock):
    await store.record_fact("ci-passed:o/r:aaa")
    await store.record_fact("ci-base:o/r:bbb", "x")
    asked = ["ci-passed:o/r:aaa", "ci-passed:o/r:bbb", "ci-base:o/r:bbb", "ci-passed:o/r:aaa", "nothing"]
    assert await store.which_facts(asked) == {"ci-passed:o/r:aaa", "ci-base:o/r:bbb"}
    assert await store.which_facts([]) == set()
