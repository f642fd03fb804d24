"""The emulator enforces what GitHub enforces: token permissions, event subscriptions, check-run
buttons on completed runs only, check suites on push, API versions, Basic-only git auth, 501 for
what it does not implement."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import gidgethub
import pytest
import yaml
from gidgethub import apps

from bot.sandbox import auth
from bot.sandbox.gitrepos import RefUpdate
from bot.sandbox.rest import JWT_OPERATIONS, PUBLIC_OPERATIONS, RestApi, _handler_name
from bot.sandbox.state import ALWAYS_DELIVERED_EVENTS, DEFAULT_APP_EVENTS, DEFAULT_APP_PERMISSIONS

from .conftest import WEBHOOK_SECRET, WebhookReceiver

APP_YML = Path(__file__).resolve().parents[2] / "app.yml"
COMMENT_DOCS = "https://docs.github.com/rest/issues/comments#create-an-issue-comment"


def request_violations(emulator) -> list:
    """Violations of the REST side (webhook-payload checks are another suite's business)."""
    return [v for v in emulator.violations() if v.kind not in ("response", "webhook")]


async def _call(world, method: str, path: str, token: str, **kwargs: Any) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"token {token}", **kwargs.pop("headers", {})}
    async with world.session.request(method, world.url(path), headers=headers, **kwargs) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else None), response.headers.copy()


# -- 1. installation-token permissions -----------------------------------------------------------
def test_every_implemented_operation_has_a_required_permission(rest_description):
    operations = {op for op in rest_description.operations if hasattr(RestApi, _handler_name(op))}
    installation_operations = operations - JWT_OPERATIONS - PUBLIC_OPERATIONS
    assert installation_operations <= set(auth.OPERATION_PERMISSIONS), sorted(
        installation_operations - set(auth.OPERATION_PERMISSIONS)
    )
    assert set(auth.OPERATION_PERMISSIONS) <= set(rest_description.operations)
    assert auth.OPERATION_PERMISSIONS["issues/create-comment"] == (("issues", "write"),)
    assert auth.OPERATION_PERMISSIONS["repos/get-content"] == (("contents", "read"),)
    assert auth.OPERATION_PERMISSIONS["checks/create"] == (("checks", "write"),)
    assert auth.OPERATION_PERMISSIONS["actions/download-job-logs-for-workflow-run"] == (("actions", "read"),)
    for requirement in auth.OPERATION_PERMISSIONS.values():
        assert all(level in auth.ACCESS_LEVELS for _, level in requirement)


async def test_a_token_is_held_to_its_permissions(world):
    em = world.emulator
    await em.open_issue(world.repo, title="x", user="alice")
    narrow = (await em.create_token(world.installation_id, permissions={"contents": "read"})).token
    assert next(t for t in em.issued_tokens() if t.token == narrow).permissions == {
        "contents": "read",
        "metadata": "read",  # implied
    }
    status, body, _ = await _call(
        world, "POST", f"/repos/{world.repo}/issues/1/comments", narrow, json={"body": "hi"}
    )
    assert (status, body) == (
        403,
        {"message": "Resource not accessible by integration", "documentation_url": COMMENT_DOCS, "status": "403"},
    )
    assert (await _call(world, "GET", f"/repos/{world.repo}", narrow))[0] == 200  # metadata
    assert (await _call(world, "GET", f"/repos/{world.repo}/contents/README.md", narrow))[0] == 200
    assert (await _call(world, "GET", f"/repos/{world.repo}/issues/1", narrow))[0] == 403
    status, _, _ = await _call(
        world, "POST", f"/repos/{world.repo}/check-runs", narrow, json={"name": "x", "head_sha": "a" * 40}
    )
    assert status == 403
    assert (await _call(world, "GET", f"/repos/{world.repo}/actions/jobs/1/logs", narrow))[0] == 403
    # a token's repository reach is checked before its permissions: hidden repos stay 404
    await em.create_repo("octo-org", "elsewhere", owner_type="Organization")
    assert (await _call(world, "GET", "/repos/octo-org/elsewhere/issues/1", narrow))[0] == 404
    # the full token can do all of it
    assert (
        await _call(world, "POST", f"/repos/{world.repo}/issues/1/comments", world.token, json={"body": "ok"})
    )[0] == 201
    assert not request_violations(em)


async def test_pull_requests_permission_reaches_pr_conversations_not_issues(world):
    em = world.emulator
    await em.open_issue(world.repo, title="an issue", user="alice")
    await em.push_commit(world.repo, branch="f", files={"f.txt": "f\n"}, user="alice")
    pr = await em.open_pull(world.repo, head="f", title="a PR", user="alice")
    token = (await em.create_token(world.installation_id, permissions={"pull_requests": "write"})).token
    on_pr = await _call(
        world, "POST", f"/repos/{world.repo}/issues/{pr['number']}/comments", token, json={"body": "hi"}
    )
    assert on_pr[0] == 201
    on_issue = await _call(world, "POST", f"/repos/{world.repo}/issues/1/comments", token, json={"body": "hi"})
    assert on_issue[0] == 403
    assert (await _call(world, "GET", f"/repos/{world.repo}/pulls/{pr['number']}", token))[0] == 200


async def test_tokens_asked_for_a_subset_of_permissions_carry_only_those(world):
    gh = world.gh(token=None)
    jwt = apps.get_jwt(app_id=str(world.app["id"]), private_key=world.private_key)
    url = f"/app/installations/{world.installation_id}/access_tokens"
    narrow = await gh.post(url, data={"permissions": {"issues": "read"}}, jwt=jwt)
    assert narrow["permissions"] == {"issues": "read", "metadata": "read"}
    reader = world.gh(token=narrow["token"])
    await world.emulator.open_issue(world.repo, title="x", user="alice")
    assert (await reader.getitem(f"/repos/{world.repo}/issues/1"))["number"] == 1
    with pytest.raises(gidgethub.BadRequest) as refused:
        await reader.post(f"/repos/{world.repo}/issues/1/comments", data={"body": "no"})
    assert refused.value.status_code == 403 and str(refused.value) == "Resource not accessible by integration"
    with pytest.raises(gidgethub.BadRequest) as too_much:  # app.yml grants actions: read only
        await gh.post(url, data={"permissions": {"actions": "write"}}, jwt=jwt)
    assert too_much.value.status_code == 422
    full = await gh.post(url, data=b"", jwt=jwt)
    assert full["permissions"] == dict(DEFAULT_APP_PERMISSIONS)


# -- 2. the App's permissions and events are app.yml's; only subscribed events are delivered -------
def test_default_app_is_app_yml():
    manifest = yaml.safe_load(APP_YML.read_text())
    assert dict(DEFAULT_APP_PERMISSIONS) == manifest["default_permissions"]
    assert sorted(DEFAULT_APP_EVENTS) == sorted(manifest["default_events"])
    assert "workflow_job" not in DEFAULT_APP_EVENTS


async def test_the_test_app_has_app_yml_permissions_and_events(world):
    manifest = yaml.safe_load(APP_YML.read_text())
    app = world.emulator.app(world.app["id"])
    assert app.permissions == manifest["default_permissions"]
    assert sorted(app.events) == sorted(manifest["default_events"])
    assert world.app["permissions"] == manifest["default_permissions"]


async def test_only_subscribed_events_are_delivered(world, key_pair):
    em = world.emulator
    watcher = WebhookReceiver(WEBHOOK_SECRET)
    await watcher.start()
    try:
        other = await em.create_app(
            "watcher",
            webhook_url=watcher.url,
            webhook_secret=WEBHOOK_SECRET,
            public_key=key_pair[1],
            events=["issues", "workflow_job"],
        )
        await em.create_installation(other["id"], "octo-org", [world.repo])
        em.configure_ci(world.repo, "true", checks=("ci",))
        await em.open_issue(world.repo, title="t", user="alice")
        await em.push_commit(world.repo, branch="main", files={"m.txt": "m\n"}, user="alice")
        await em.ci_idle()
        await em.idle()
        # the app.yml App: no workflow_job (it does not subscribe), but everything it does
        assert not world.receiver.of("workflow_job")
        assert {e for e, _ in world.receiver.events()} == {
            "issues",
            "push",
            "check_suite",
            "check_run",
            "workflow_run",
        }
        # the watcher: installation (always), issues and workflow_job only
        assert {e for e, _ in watcher.events()} == {"installation", "issues", "workflow_job"}
        assert [a for e, a in watcher.events() if e == "workflow_job"] == ["queued", "in_progress", "completed"]
        for delivery in em.deliveries():
            app = em.apps[delivery.app_id]
            assert delivery.event in app.events or delivery.event in ALWAYS_DELIVERED_EVENTS
    finally:
        await watcher.stop()


# -- 3. check-run buttons only on completed runs -----------------------------------------------------
async def test_check_run_actions_are_refused_until_the_run_is_completed(world):
    em = world.emulator
    head = await em.push_commit(world.repo, branch="f", files={"f.txt": "f\n"}, user="alice")
    gh = world.gh()
    actions = [{"label": "Stop", "description": "Stop the agent", "identifier": "stop"}]
    run = await gh.post(
        f"/repos/{world.repo}/check-runs",
        data={"name": "patchwright", "head_sha": head["sha"], "status": "in_progress", "actions": actions},
    )
    await world.forget_hooks()
    path = f"/repos/{world.repo}/check-runs/{run['id']}/requested-action"
    status, body = await world.actor("POST", path, {"identifier": "stop", "user": "alice"})
    assert status == 422 and "completed" in body["message"] and body["status"] == "422"
    await world.settle()
    assert not world.receiver.of("check_run", "requested_action")
    assert not [d for d in em.deliveries() if d.action == "requested_action"]

    await gh.patch(f"/repos/{world.repo}/check-runs/{run['id']}", data={"conclusion": "success", "actions": actions})
    status, body = await world.actor("POST", path, {"identifier": "stop", "user": "alice"})
    assert status == 201 and body["delivery"]["event"] == "check_run"
    await world.settle()
    assert world.receiver.of("check_run", "requested_action")[0].data["requested_action"] == {"identifier": "stop"}


@pytest.mark.emulator_options(check_actions_require_completed=False)
async def test_the_completed_run_rule_can_be_switched_off_per_test(world):
    head = await world.emulator.push_commit(world.repo, branch="f", files={"f.txt": "f\n"}, user="alice")
    run = await world.gh().post(
        f"/repos/{world.repo}/check-runs",
        data={
            "name": "patchwright",
            "head_sha": head["sha"],
            "status": "in_progress",
            "actions": [{"label": "Stop", "description": "Stop", "identifier": "stop"}],
        },
    )
    assert world.emulator.request_check_action(world.repo, run["id"], "stop", user="alice") is not None


# -- 4. a push requests a check suite from every App with checks: write ---------------------------
async def test_push_sends_check_suite_requested_to_apps_with_checks_write(world, key_pair):
    em = world.emulator
    plain = WebhookReceiver(WEBHOOK_SECRET)
    await plain.start()
    try:
        reader = await em.create_app(  # checks: read only, subscribed: no suite, no event
            "reader",
            webhook_url=plain.url,
            webhook_secret=WEBHOOK_SECRET,
            public_key=key_pair[1],
            permissions={"checks": "read", "metadata": "read"},
            events=["check_suite", "check_run"],
        )
        await em.create_installation(reader["id"], "octo-org", [world.repo])
        await em.push_commit(world.repo, branch="feature", files={"f.txt": "1\n"}, user="alice")
        pr = await em.open_pull(world.repo, head="feature", title="F", user="alice")
        await world.forget_hooks()
        before = pr["head"]["sha"]
        pushed = await em.push_commit(world.repo, branch="feature", files={"f.txt": "2\n"}, user="alice")
        await world.settle()
        assert world.receiver.events() == [
            ("push", None),
            ("pull_request", "synchronize"),
            ("check_suite", "requested"),
        ]
        suite = world.receiver.of("check_suite", "requested")[0].data["check_suite"]
        assert suite["status"] == "queued" and suite["conclusion"] is None
        assert (suite["head_sha"], suite["head_branch"]) == (pushed["sha"], "feature")
        assert (suite["before"], suite["after"]) == (before, pushed["sha"])
        assert [p["number"] for p in suite["pull_requests"]] == [pr["number"]]
        assert suite["app"]["id"] == world.app["id"] and suite["latest_check_runs_count"] == 0
        assert suite["head_commit"]["id"] == pushed["sha"]
        assert not plain.of("check_suite")
        suites = [s for s in em.repo(world.repo).check_suites.values() if s.head_sha == pushed["sha"]]
        assert [s.app_id for s in suites] == [world.app["id"]]

        # the App's check run lands in that suite; a second push of the same commit adds none
        run = await world.gh().post(
            f"/repos/{world.repo}/check-runs", data={"name": "patchwright", "head_sha": pushed["sha"]}
        )
        assert run["check_suite"]["id"] == suite["id"]
        await world.forget_hooks()
        await em.git.git("octo-org", "hello", "update-ref", "refs/heads/copy", pushed["sha"])
        await em.after_push(
            em.repo(world.repo), [RefUpdate("refs/heads/copy", None, pushed["sha"])], em.account("alice")
        )
        await world.settle()
        assert world.receiver.events() == [("push", None)]
        assert not world.receiver.of("check_suite")
    finally:
        await plain.stop()


async def test_apps_without_check_suite_subscription_get_the_suite_but_no_event(world, key_pair):
    em = world.emulator
    quiet = await em.create_app(
        "quiet", public_key=key_pair[1], permissions={"checks": "write"}, events=["issues"]
    )
    await em.create_installation(quiet["id"], "octo-org", [world.repo])
    pushed = await em.push_commit(world.repo, branch="main", files={"q.txt": "q\n"}, user="alice")
    await em.idle()
    suites = {s.app_id for s in em.repo(world.repo).check_suites.values() if s.head_sha == pushed["sha"]}
    assert suites == {world.app["id"], quiet["id"]}
    assert not [d for d in em.deliveries() if d.app_id == quiet["id"] and d.event == "check_suite"]


# -- 6. X-GitHub-Api-Version ----------------------------------------------------------------------
async def test_only_githubs_api_versions_are_served(world):
    path = f"/repos/{world.repo}"
    status, _, headers = await _call(world, "GET", path, world.token)
    assert status == 200 and headers["X-GitHub-Api-Version-Selected"] == "2022-11-28"
    for version in ("2022-11-28", "2026-03-10"):
        status, _, headers = await _call(world, "GET", path, world.token, headers={"X-GitHub-Api-Version": version})
        assert status == 200 and headers["X-GitHub-Api-Version-Selected"] == version
    status, body, _ = await _call(world, "GET", path, world.token, headers={"X-GitHub-Api-Version": "2021-01-01"})
    assert status == 400
    assert body == {
        "message": "Bad Request",
        "errors": 'The version you specified in the "X-GitHub-API-Version" request header, "2021-01-01", '
        'is not a supported version. The following versions are currently supported: "2026-03-10" '
        '(most recent) and "2022-11-28".',
        "documentation_url": "https://docs.github.com/rest",
        "status": "400",
    }
    assert [v.kind for v in request_violations(world.emulator)] == ["unsupported_api_version"]


# -- 7. git over HTTP: Basic x-access-token only --------------------------------------------------
async def test_git_takes_installation_tokens_only_as_basic_x_access_token(world):
    url = world.url(f"/{world.repo}.git/info/refs?service=git-upload-pack")

    async def status_of(authorization: str | None) -> tuple[int, str | None]:
        headers = {"Authorization": authorization} if authorization else {}
        async with world.session.get(url, headers=headers) as response:
            await response.read()
            return response.status, response.headers.get("WWW-Authenticate")

    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    assert (await status_of(basic("x-access-token", world.token)))[0] == 200
    refused = [
        None,
        f"Bearer {world.token}",
        f"token {world.token}",
        basic("patchwright[bot]", world.token),
        basic(world.token, ""),
        basic("x-access-token", "ghs_" + "0" * 36),
    ]
    for authorization in refused:
        assert await status_of(authorization) == (401, 'Basic realm="GitHub"'), authorization
    no_contents = (await world.emulator.create_token(world.installation_id, permissions={"issues": "read"})).token
    assert (await status_of(basic("x-access-token", no_contents)))[0] == 401


def test_the_bots_git_auth_is_what_github_takes():
    from bot.worker.git_values import GitAuth

    header = dict(GitAuth("ghs_abc").config())["http.extraHeader"]
    scheme, _, value = header.removeprefix("Authorization: ").partition(" ")
    assert scheme == "Basic" and base64.b64decode(value).decode() == "x-access-token:ghs_abc"


# -- 8. what the emulator does not implement ---------------------------------------------------------
async def test_operations_the_emulator_lacks_answer_501_and_are_recorded(world):
    status, body, _ = await _call(world, "GET", f"/repos/{world.repo}/commits/main", world.token)
    assert status == 501 and body["status"] == "501"
    assert body["message"] == f"GET /repos/{world.repo}/commits/main is not implemented by the emulator"
    status, body, _ = await _call(world, "PUT", f"/repos/{world.repo}/pulls/1/merge", world.token, json={})
    assert status == 501 and body["message"].startswith("PUT /repos/")
    [first, second] = request_violations(world.emulator)
    assert (first.kind, first.method, first.status) == ("unknown_operation", "GET", 501)
    assert second.path == f"/repos/{world.repo}/pulls/1/merge"
    # a real missing resource stays 404, and is no violation
    assert (await _call(world, "GET", f"/repos/{world.repo}/issues/999", world.token))[0] == 404
    assert (await _call(world, "GET", "/repos/octo-org/nope", world.token))[0] == 404
    assert len(request_violations(world.emulator)) == 2
