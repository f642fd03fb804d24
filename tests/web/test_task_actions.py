"""The dashboard's actions without a browser: who may act (login cookie + CSRF field, or the
bearer token), the forms a task page offers (derived from the rules), each form through the
same operation as the API (the same refusal text), the input edit (form and
``PATCH /api/tasks/{id}``) and the delivery page's replay form."""

from __future__ import annotations

import html
import itertools
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.store.base import DeliveryState, Store, TaskEvent
from bot.tasks import rules, verbs
from bot.tasks.model import Status, Task
from bot.web.actions import (
    NOTICE_COOKIE,
    csrf_token,
    decide_form_access,
    decode_notice,
    edited_fields,
    encode_notice,
)
from bot.web.auth import session_cookie_value
from bot.web.pages.actions import (
    ActionsView,
    Notice,
    offered_verbs,
    render_notice,
    render_task_actions,
)

TOKEN = "adm-3f9c1e5b7d2a-token"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
HOSTILE = '<script>alert("x")</script>'


def a_task(status: Status = Status.PENDING, **fields: Any) -> Task:
    task = rules.new_task(
        id="task_act", repo="octo/widgets", installation_id=1, issue_number=7, title="Fix it", spec="The spec.",
        max_attempts=5, max_cost_usd=10.0, agent="command", model="m1", base_branch="main", now=NOW,
    )
    return task.replace(status=status, **fields)


ISSUES = itertools.count(100)


async def stored(store: Store, task_id: str, status: Status, **fields: Any) -> Task:
    """A stored task (an issue of its own) moved to ``status`` with ``fields``."""
    task = a_task().replace(id=task_id, issue_number=next(ISSUES))
    assert (await store.create_task(task))[1]
    moved = await store.transition(
        task.id, from_statuses=[Status.PENDING], changes={"status": status, **fields},
        event=TaskEvent(task_id=task.id, kind="transition", reason="seeded", actor="test",
                        from_status=Status.PENDING, to_status=status),
    )
    assert moved is not None
    return moved


VIEW = ActionsView(token_configured=True, can_act=True, csrf="c5rf", next_path="/tasks/task_act")


# -- pure ---------------------------------------------------------------------------------------


def test_the_csrf_field_is_keyed_by_the_token():
    assert csrf_token(TOKEN) == csrf_token(TOKEN) != csrf_token(TOKEN + "x")
    assert TOKEN not in csrf_token(TOKEN)


def test_who_may_post_a_form():
    cookie = session_cookie_value(TOKEN)
    good = csrf_token(TOKEN)
    assert decide_form_access(admin_token=TOKEN, bearer=None, cookie=cookie, csrf=good).allowed
    assert decide_form_access(admin_token=TOKEN, bearer=TOKEN, cookie=None, csrf=None).allowed
    assert decide_form_access(admin_token=TOKEN, bearer=None, cookie=None, csrf=good).status == 401
    assert decide_form_access(admin_token=TOKEN, bearer="wrong", cookie=None, csrf=None).status == 401
    assert decide_form_access(admin_token=TOKEN, bearer=None, cookie="forged", csrf=good).status == 401
    assert decide_form_access(admin_token=TOKEN, bearer=None, cookie=cookie, csrf=None).status == 403
    assert decide_form_access(admin_token=TOKEN, bearer=None, cookie=cookie, csrf="0" * 64).status == 403
    assert decide_form_access(admin_token=None, bearer=TOKEN, cookie=cookie, csrf=good).status == 403


def test_a_notice_is_signed_and_about_one_subject():
    value = encode_notice(Notice("task_a", False, "Cannot stop: é <b>"), TOKEN)
    assert decode_notice(value, TOKEN, "task_a") == Notice("task_a", False, "Cannot stop: é <b>")
    assert decode_notice(value, TOKEN, "task_b") is None
    assert decode_notice(value, TOKEN + "x", "task_a") is None
    payload, mac = value.rsplit(".", 1)
    assert decode_notice(payload[:-2] + "AA." + mac, TOKEN, "task_a") is None
    assert decode_notice("garbage", TOKEN, "task_a") is None and decode_notice(value, None, "task_a") is None
    assert 'role="alert"' in render_notice(Notice("t", False, HOSTILE)) and "<script>" not in render_notice(
        Notice("t", False, HOSTILE))
    assert 'role="status"' in render_notice(Notice("t", True, "ok")) and render_notice(None) == ""


def test_the_edit_form_sends_only_what_changed():
    task = a_task(Status.PAUSED, spec="line 1\r\nline 2")
    assert edited_fields(task, "line 1\nline 2", "") == (None, None)
    assert edited_fields(task, "line 1\nline 3", "") == ("line 1\nline 3", None)
    assert edited_fields(task, "line 1\nline 2", "do it") == (None, "do it")


@pytest.mark.parametrize(
    ("status", "offered"),
    [
        (Status.PENDING, {"stop", "start over", "cancel"}),
        (Status.RUNNING, {"stop", "start over", "cancel"}),
        (Status.PAUSED, {"retry", "resume", "start over", "cancel"}),
        (Status.FAILED, {"retry", "start over", "cancel"}),
        (Status.MERGED, {"start over"}),
    ],
)
def test_the_offered_verbs_are_those_the_rules_accept(status, offered):
    task = a_task(status, attempt=2)
    names = {v.name for v in offered_verbs(task, NOW)}
    assert names == offered
    given = verbs.CommandInput(now=NOW, author="")
    assert names == {v.name for v in verbs.TASK_VERBS if v.decide(task, given).accepted}


def test_the_actions_section_has_labelled_fields_confirmations_and_the_csrf_field():
    html = render_task_actions(a_task(Status.PAUSED, spec=HOSTILE), VIEW, now=NOW)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count('name="csrf" value="c5rf"') == 5  # retry, resume, start over, cancel, edit
    for slug in ("retry", "resume", "start-over", "cancel", "edit"):
        assert f'action="/tasks/task_act/{slug}"' in html
    for field_id in re.findall(r'<textarea id="([^"]+)"', html):
        assert f'<label for="{field_id}">' in html
    assert html.count('type="checkbox" name="confirm" value="yes" required') == 2  # start over, cancel
    assert html.count("<label class=\"confirm\"><input") == 2  # the box inside its label
    assert "Stop" not in re.sub(r"<[^>]+>", " ", html).split()  # not offered while paused


def test_the_actions_section_without_the_token():
    login = render_task_actions(a_task(), ActionsView(True, False, "", "/tasks/task_act"), now=NOW)
    assert 'href="/login?next=%2Ftasks%2Ftask_act"' in login and "<form" not in login
    none = render_task_actions(a_task(), ActionsView(False, False, "", "/tasks/task_act"), now=NOW)
    assert "PATCHWRIGHT_ADMIN_TOKEN" in none and "<form" not in none


# -- over HTTP ----------------------------------------------------------------------------------


async def logged_in(make_client, store: Store, **settings: Any):
    client = await make_client(store, admin_token=TOKEN, **settings)
    resp = await client.post("/login", data={"token": TOKEN, "next": "/"}, allow_redirects=False)
    assert resp.status == 303
    return client


async def post_form(client, path: str, **fields: str):
    return await client.post(path, data={"csrf": csrf_token(TOKEN), **fields}, allow_redirects=False)


async def notice_after(client, resp) -> str:
    """The page a form's 303 leads to, and the notice on it."""
    assert resp.status == 303, await resp.text()
    page = await (await client.get(resp.headers["Location"])).text()
    found = re.search(r'<div class="notice (?:ok|refused)" role="\w+">(.*?)</div>', page)
    assert found is not None, page[:2000]
    return found.group(1)


async def test_retry_from_the_page_goes_through_the_same_verb_as_the_api(store, make_client):
    task = await stored(store, "task_failed", Status.FAILED, attempt=2, close_reason="tests failed")
    client = await logged_in(make_client, store)
    page = await (await client.get(f"/tasks/{task.id}")).text()
    assert f'action="/tasks/{task.id}/retry"' in page and csrf_token(TOKEN) in page
    assert f'action="/tasks/{task.id}/stop"' not in page

    resp = await post_form(client, f"/tasks/{task.id}/retry", instructions="Mind the\r\nempty case.")
    assert resp.headers["Location"] == f"/tasks/{task.id}" and NOTICE_COOKIE in resp.cookies
    notice = await notice_after(client, resp)
    assert notice.startswith("Retry requested by the dashboard: attempt 3 of")

    row = await store.get_task(task.id)
    assert row.status is Status.PENDING and "Mind the\nempty case." in row.retry_context
    event = (await store.list_events(task.id))[-1]
    assert event.actor == "dashboard" and event.to_status is Status.PENDING
    again = await (await client.get(f"/tasks/{task.id}")).text()
    assert 'class="notice' not in again  # shown once


async def test_a_refused_form_shows_the_rules_reason_exactly_as_the_api(store, make_client):
    task = await stored(store, "task_failed", Status.FAILED, attempt=2)
    client = await logged_in(make_client, store)
    notice = await notice_after(client, await post_form(client, f"/tasks/{task.id}/stop"))
    api = await client.post(f"/api/tasks/{task.id}/stop", headers={"Authorization": f"Bearer {TOKEN}"})
    assert api.status == 409
    error = (await api.json())["error"]
    assert error.startswith("Cannot stop: this task is failed.")
    assert html.unescape(notice) == error
    assert (await store.get_task(task.id)).status is Status.FAILED


async def test_destructive_verbs_need_the_confirmation(store, make_client):
    task = await stored(store, "task_review", Status.REVIEW, pr_number=3)
    client = await logged_in(make_client, store)
    unconfirmed = await notice_after(client, await post_form(client, f"/tasks/{task.id}/cancel"))
    assert unconfirmed == "Not done: tick the box to confirm cancel."
    assert (await store.get_task(task.id)).status is Status.REVIEW
    confirmed = await notice_after(client, await post_form(client, f"/tasks/{task.id}/cancel", confirm="yes"))
    assert confirmed.startswith("Cancelled by the dashboard")
    assert (await store.get_task(task.id)).status is Status.CLOSED


async def test_forms_without_the_token_are_refused_and_change_nothing(store, make_client):
    task = await stored(store, "task_run", Status.RUNNING, worker_id="w1")
    anonymous = await make_client(store, admin_token=TOKEN)
    page = await (await anonymous.get(f"/tasks/{task.id}")).text()
    assert "Log in to act" in page and f'action="/tasks/{task.id}/stop"' not in page
    forged = await anonymous.post(f"/tasks/{task.id}/stop", data={"csrf": csrf_token(TOKEN)}, allow_redirects=False)
    assert forged.status == 401 and 'action="/login"' in await forged.text()

    client = await logged_in(make_client, store)
    no_csrf = await client.post(f"/tasks/{task.id}/stop", allow_redirects=False)
    assert no_csrf.status == 403
    wrong = await client.post(f"/tasks/{task.id}/stop", data={"csrf": "0" * 64}, allow_redirects=False)
    assert wrong.status == 403

    unconfigured = await make_client(store)
    assert (await unconfigured.post(f"/tasks/{task.id}/stop", data={"csrf": "x"})).status == 403
    assert "PATCHWRIGHT_ADMIN_TOKEN" in await (await unconfigured.get(f"/tasks/{task.id}")).text()

    row = await store.get_task(task.id)
    assert row.status is Status.RUNNING and len(await store.list_events(task.id)) == 1

    scripted = await anonymous.post(f"/tasks/{task.id}/stop", headers={"Authorization": f"Bearer {TOKEN}"},
                                    allow_redirects=False)
    assert scripted.status == 303 and (await store.get_task(task.id)).status is Status.PAUSED


async def test_edit_form_on_a_paused_task_and_refused_on_a_running_one(store, make_client):
    task = await stored(store, "task_paused", Status.PAUSED, attempt=2)
    running = await stored(store, "task_running", Status.RUNNING, worker_id="w1")
    client = await logged_in(make_client, store)
    page = await (await client.get(f"/tasks/{task.id}")).text()
    assert f'action="/tasks/{task.id}/edit"' in page and '<label for="edit-spec">' in page
    assert f'action="/tasks/{running.id}/edit"' not in await (await client.get(f"/tasks/{running.id}")).text()

    notice = await notice_after(client, await post_form(
        client, f"/tasks/{task.id}/edit", spec="The new\r\nspec.", instructions="Be brief."))
    assert notice.startswith("Input edited by the dashboard while paused")
    row = await store.get_task(task.id)
    assert row.spec == "The new\nspec." and rules.instructions_of(row) == "Be brief."
    event = (await store.list_events(task.id))[-1]
    assert event.actor == "dashboard" and {"spec", "retry_context"} <= set(event.changes)

    unchanged = await notice_after(client, await post_form(
        client, f"/tasks/{task.id}/edit", spec="The new\r\nspec.", instructions="Be brief."))
    assert unchanged == rules.EDIT_UNCHANGED
    # a post with one field edits that field only (a missing field is not an empty one)
    await notice_after(client, await post_form(client, f"/tasks/{task.id}/edit", instructions="Be briefer."))
    row = await store.get_task(task.id)
    assert row.spec == "The new\nspec." and rules.instructions_of(row) == "Be briefer."
    refused = await notice_after(client, await post_form(client, f"/tasks/{running.id}/edit", spec="x"))
    assert "this task is running" in refused and "`@patchwright stop`" in html.unescape(refused)
    assert (await store.get_task(running.id)).spec == "The spec."


async def test_patch_edits_a_paused_task_and_answers_409_naming_any_other_status(store, make_client):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    paused = await stored(store, "task_p", Status.PAUSED, attempt=2)
    client = await make_client(store, admin_token=TOKEN)
    resp = await client.patch(f"/api/tasks/{paused.id}", json={"spec": "New.", "instructions": "Go."}, headers=auth)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["edited"] is True and body["task"]["status"] == "paused"
    assert body["reason"].startswith("Input edited by the API while paused")
    row = await store.get_task(paused.id)
    assert row.spec == "New." and rules.instructions_of(row) == "Go."
    assert (await store.list_events(paused.id))[-1].actor == "api"
    same = await client.patch(f"/api/tasks/{paused.id}", json={"spec": "New."}, headers=auth)
    assert same.status == 200 and (await same.json())["edited"] is False

    for status, fields in ((Status.RUNNING, {"worker_id": "w"}), (Status.PENDING, {}), (Status.REVIEW, {}),
                           (Status.MERGED, {}), (Status.CLOSED, {}), (Status.FAILED, {})):
        other = await stored(store, f"task_{status.value}", status, **fields)
        refused = await client.patch(f"/api/tasks/{other.id}", json={"spec": "x"}, headers=auth)
        assert refused.status == 409, status
        data = await refused.json()
        assert data["status"] == status.value and rules.STATE_WORDS[status] in data["error"]
        assert (await store.get_task(other.id)).spec == "The spec."


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "must be JSON"),
        (b"[1]", "must be a JSON object"),
        (b"", "must be a JSON object"),
        (b"{}", "Give the new issue text"),
        (b'{"title": "x"}', "Unknown field(s) title"),
        (b'{"spec": 3}', "'spec' must be a string"),
        (b'{"instructions": ["a"]}', "'instructions' must be a string"),
        (b'{"spec": "' + b"x" * 70_000 + b'"}', "longer than 65536"),
    ],
)
async def test_patch_refuses_bad_bodies(body, message, store, make_client):
    await stored(store, "task_p", Status.PAUSED)
    client = await make_client(store, admin_token=TOKEN)
    resp = await client.patch("/api/tasks/task_p", data=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 400 and message in (await resp.json())["error"]


async def test_patch_needs_the_bearer_token_not_the_cookie(store, make_client):
    await stored(store, "task_p", Status.PAUSED)
    client = await logged_in(make_client, store)
    assert (await client.patch("/api/tasks/task_p", json={"spec": "x"})).status == 401
    assert (await client.patch("/api/tasks/task_nope", json={"spec": "x"},
                               headers={"Authorization": f"Bearer {TOKEN}"})).status == 404
    assert (await store.get_task("task_p")).spec == "The spec."


async def test_replay_form_queues_a_finished_delivery_as_the_api_does(store, seeder, make_client):
    await seeder(store, NOW)
    client = await logged_in(make_client, store)
    resp = await post_form(client, "/deliveries/d-1/replay")
    assert resp.headers["Location"] == "/deliveries/d-1"
    assert await notice_after(client, resp) == "Delivery d-1 queued again; a running dispatcher processes it."
    assert (await store.get_delivery("d-1")).state is DeliveryState.PENDING
    again = await post_form(client, "/deliveries/d-1/replay")  # now waiting: refused, as the API says
    api = await client.post("/api/deliveries/d-1/replay", headers={"Authorization": f"Bearer {TOKEN}"})
    assert api.status == 409
    assert decode_notice(again.cookies[NOTICE_COOKIE].value, TOKEN, "d-1") == Notice(
        "d-1", False, (await api.json())["error"])
    anonymous = await make_client(store, admin_token=TOKEN)
    assert (await anonymous.post("/deliveries/d-3/replay", data={"csrf": csrf_token(TOKEN)})).status == 401
    assert (await store.get_delivery("d-3")).state is DeliveryState.FAILED
