"""The REST API through gidgethub, unchanged, with ``base_url`` pointing at the emulator."""

from __future__ import annotations

import base64
import json

import gidgethub
import pytest
from gidgethub import apps

from bot.sandbox.errors import ApiError


async def test_app_jwt_flow_and_installation_token(world):
    gh = world.gh(token=None)
    jwt = apps.get_jwt(app_id=str(world.app["id"]), private_key=world.private_key)
    app = await gh.getitem("/app", jwt=jwt)
    assert app["slug"] == "patchwright" and app["id"] == world.app["id"]
    installations = await gh.getitem("/app/installations", jwt=jwt)
    assert [i["id"] for i in installations] == [world.installation_id]
    installation = await gh.getitem(f"/repos/{world.repo}/installation", jwt=jwt)
    assert installation["id"] == world.installation_id and installation["app_slug"] == "patchwright"

    token = await apps.get_installation_access_token(
        gh,
        installation_id=str(world.installation_id),
        app_id=str(world.app["id"]),
        private_key=world.private_key,
    )
    assert token["token"].startswith("ghs_") and len(token["token"]) >= 40
    assert token["expires_at"].endswith("Z")
    repos = await world.gh(token=token["token"]).getitem("/installation/repositories")
    assert repos["total_count"] == 1 and repos["repositories"][0]["full_name"] == world.repo
    assert any(t.token == token["token"] for t in world.emulator.issued_tokens())


async def test_getiter_follows_link_pagination(world):
    for n in range(7):
        await world.emulator.open_issue(world.repo, title=f"issue {n}", user="alice")
    gh = world.gh()
    titles = [
        issue["title"] async for issue in gh.getiter(f"/repos/{world.repo}/issues?per_page=3&direction=asc")
    ]
    assert titles == [f"issue {n}" for n in range(7)]
    pages = [r for r in world.emulator.requests() if r.operation_id == "issues/list-for-repo"]
    assert len(pages) == 3 and "page=3" in pages[-1].query
    async with world.session.get(
        world.url(f"/repos/{world.repo}/issues?per_page=3&page=2"),
        headers={"Authorization": f"token {world.token}"},
    ) as response:
        link = response.headers["Link"]
    assert 'rel="next"' in link and 'rel="prev"' in link and 'rel="last"' in link and 'rel="first"' in link
    assert f"{world.base_url}/repos/{world.repo}/issues?" in link
    assert await gh.getitem(f"/repos/{world.repo}/issues?since=2999-01-01T00:00:00Z") == []


async def test_conditional_get_answers_304_and_costs_no_rate_limit(world):
    await world.emulator.open_issue(world.repo, title="cached", user="alice")
    cache: dict = {}
    gh = world.gh(cache=cache)
    first = await gh.getitem(f"/repos/{world.repo}/issues/1")
    remaining = gh.rate_limit.remaining
    second = await gh.getitem(f"/repos/{world.repo}/issues/1")
    assert first == second
    statuses = [r.status for r in world.emulator.requests() if r.operation_id == "issues/get"]
    assert statuses == [200, 304]
    async with world.session.get(
        world.url(f"/repos/{world.repo}/issues/1"),
        headers={"Authorization": f"token {world.token}", "If-None-Match": cache[next(iter(cache))][0]},
    ) as response:
        assert response.status == 304
        assert await response.read() == b""
        assert int(response.headers["x-ratelimit-remaining"]) == remaining
    # a change gives a new ETag and a 200
    await world.emulator.comment_on(world.repo, 1, "news", user="alice")
    await gh.getitem(f"/repos/{world.repo}/issues/1")
    assert [r.status for r in world.emulator.requests() if r.operation_id == "issues/get"][-1] == 200


async def test_rate_limit_headers_on_every_answer(world):
    seen = []
    for path in (f"/repos/{world.repo}", f"/repos/{world.repo}/issues/99", "/nope"):
        async with world.session.get(
            world.url(path), headers={"Authorization": f"token {world.token}"}
        ) as response:
            seen.append((response.status, response.headers))
    assert [s for s, _ in seen] == [200, 404, 501]  # 501: no such operation in the emulator
    remaining = [int(h["x-ratelimit-remaining"]) for _, h in seen]
    assert remaining == sorted(remaining, reverse=True) and remaining[0] > remaining[-1]
    for _, headers in seen:
        assert headers["x-ratelimit-limit"] == "5000"
        assert headers["x-ratelimit-resource"] == "core"
        assert int(headers["x-ratelimit-reset"]) > 0 and int(headers["x-ratelimit-used"]) >= 1


async def test_invalid_requests_are_answered_like_github_and_recorded(world):
    await world.emulator.open_issue(world.repo, title="x", user="alice")
    auth = {"Authorization": f"Bearer {world.token}"}

    async def call(method, path, headers=None, **kwargs):
        async with world.session.request(
            method, world.url(path), headers={**auth, **(headers or {})}, **kwargs
        ) as response:
            return response.status, await response.json()

    status, body = await call("GET", f"/repos/{world.repo}/unknown-thing")
    assert status == 501 and "documentation_url" in body
    assert body["message"] == f"GET /repos/{world.repo}/unknown-thing is not implemented by the emulator"
    status, body = await call("POST", f"/repos/{world.repo}/issues/1/comments", json={"body": 123})
    assert status == 422 and body["errors"][0]["code"] == "invalid" and body["errors"][0]["field"] == "body"
    status, body = await call("POST", f"/repos/{world.repo}/issues/1/comments", json={"text": "hi"})
    assert status == 422 and body["errors"][0]["code"] == "missing_field"
    status, body = await call("GET", f"/repos/{world.repo}/issues/one")
    assert status == 404
    status, body = await call("GET", f"/repos/{world.repo}/issues?state=bogus")
    assert status == 422
    status, body = await call(
        "POST", f"/repos/{world.repo}/labels", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and body["message"] == "Problems parsing JSON"
    kinds = [v.kind for v in world.emulator.violations()]
    assert kinds == [
        "unknown_operation",
        "invalid_body",
        "invalid_body",
        "invalid_path",
        "invalid_query",
        "invalid_json",
    ]
    async with world.session.get(world.url("/_emulator/violations")) as response:
        listed = await response.json()
    assert [v["kind"] for v in listed] == kinds and listed[1]["operation_id"] == "issues/create-comment"
    with pytest.raises(gidgethub.BadRequest) as raised:
        await world.gh().post(f"/repos/{world.repo}/issues/1/labels", data={"labels": "not-a-list"})
    assert raised.value.status_code == 422


async def test_issue_operations_and_their_webhooks(world):
    emulator, receiver = world.emulator, world.receiver
    await emulator.open_issue(world.repo, title="Add answer", body="make it 42", user="alice")
    gh = world.gh()
    issue = await gh.getitem(f"/repos/{world.repo}/issues/1")
    assert issue["user"]["login"] == "alice" and issue["author_association"] == "COLLABORATOR"

    labels = await gh.post(f"/repos/{world.repo}/issues/1/labels", data={"labels": ["patchwright:running"]})
    assert [l["name"] for l in labels] == ["patchwright:running"]
    labels = await gh.post(f"/repos/{world.repo}/issues/1/labels", data=["bug"])
    assert [l["name"] for l in labels] == ["patchwright:running", "bug"]
    await gh.delete(f"/repos/{world.repo}/issues/1/labels/bug")
    assert [l["name"] for l in (await gh.getitem(f"/repos/{world.repo}/issues/1"))["labels"]] == [
        "patchwright:running"
    ]
    label = await gh.post(f"/repos/{world.repo}/labels", data={"name": "triage", "color": "ff0000"})
    assert label["color"] == "ff0000"
    with pytest.raises(gidgethub.BadRequest):
        await gh.post(f"/repos/{world.repo}/labels", data={"name": "Triage"})
    with pytest.raises(gidgethub.BadRequest) as missing:
        await gh.delete(f"/repos/{world.repo}/issues/1/labels/nope")
    assert missing.value.status_code == 404

    comment = await gh.post(
        f"/repos/{world.repo}/issues/1/comments", data={"body": "<!-- patchwright:status --> pending"}
    )
    assert comment["user"]["login"] == "patchwright[bot]" and comment["user"]["type"] == "Bot"
    assert comment["performed_via_github_app"]["slug"] == "patchwright"
    edited = await gh.patch(f"/repos/{world.repo}/issues/comments/{comment['id']}", data={"body": "running"})
    assert edited["body"] == "running"
    assert (await gh.getitem(f"/repos/{world.repo}/issues/comments/{comment['id']}"))["body"] == "running"
    listed = [c async for c in gh.getiter(f"/repos/{world.repo}/issues/1/comments")]
    assert [c["id"] for c in listed] == [comment["id"]]

    reaction = await gh.post(f"/repos/{world.repo}/issues/1/reactions", data={"content": "eyes"})
    await gh.post(f"/repos/{world.repo}/issues/1/reactions", data={"content": "eyes"})
    again_status = [r.status for r in emulator.requests() if r.operation_id == "reactions/create-for-issue"]
    assert reaction["content"] == "eyes" and again_status == [201, 200]
    await gh.post(f"/repos/{world.repo}/issues/comments/{comment['id']}/reactions", data={"content": "+1"})
    assert (await gh.getitem(f"/repos/{world.repo}/issues/1"))["reactions"]["eyes"] == 1

    closed = await gh.patch(
        f"/repos/{world.repo}/issues/1", data={"state": "closed", "state_reason": "not_planned"}
    )
    assert closed["state"] == "closed" and closed["state_reason"] == "not_planned"
    await emulator.idle()
    assert receiver.events() == [
        ("issues", "opened"),
        ("issues", "labeled"),
        ("issues", "labeled"),
        ("issues", "unlabeled"),
        ("issue_comment", "created"),
        ("issue_comment", "edited"),
        ("issues", "closed"),
    ]
    bot_events = receiver.received[1:]
    assert all(r.data["sender"]["login"] == "patchwright[bot]" for r in bot_events)
    assert all(r.data["sender"]["type"] == "Bot" for r in bot_events)
    assert receiver.of("issue_comment", "edited")[0].data["changes"]["body"]["from"].startswith("<!--")


async def test_repository_contents_refs_and_permissions(world):
    gh = world.gh()
    repo = await gh.getitem(f"/repos/{world.repo}")
    assert repo["default_branch"] == "main" and repo["owner"]["type"] == "Organization"
    readme = await gh.getitem(f"/repos/{world.repo}/contents/README.md")
    assert base64.b64decode(readme["content"]) == b"# hello\n" and readme["encoding"] == "base64"
    listing = await gh.getitem(f"/repos/{world.repo}/contents/src")
    assert [e["name"] for e in listing] == ["app.py"]
    with pytest.raises(gidgethub.BadRequest) as missing:
        await gh.getitem(f"/repos/{world.repo}/contents/.github/patchwright.yml")
    assert missing.value.status_code == 404

    sha = (
        await world.emulator.push_commit(
            world.repo, branch="patchwright/1-x", files={"a.txt": "a\n"}, user="alice"
        )
    )["sha"]
    ref = await gh.getitem(f"/repos/{world.repo}/git/ref/heads/patchwright/1-x")
    assert ref["object"]["sha"] == sha and ref["ref"] == "refs/heads/patchwright/1-x"
    branch = await gh.getitem(
        "/repos/{owner}/{repo}/branches/{branch}",
        {"owner": "octo-org", "repo": "hello", "branch": "patchwright/1-x"},
    )
    assert branch["commit"]["sha"] == sha
    compare = await gh.getitem(f"/repos/{world.repo}/compare/main...patchwright/1-x")
    assert (
        compare["status"] == "ahead"
        and compare["ahead_by"] == 1
        and compare["files"][0]["filename"] == "a.txt"
    )
    await world.forget_hooks()
    await gh.delete(f"/repos/{world.repo}/git/refs/heads/patchwright/1-x")
    with pytest.raises(gidgethub.BadRequest):
        await gh.getitem(f"/repos/{world.repo}/git/ref/heads/patchwright/1-x")
    with pytest.raises(gidgethub.BadRequest) as gone:
        await gh.delete(f"/repos/{world.repo}/git/refs/heads/patchwright/1-x")
    assert gone.value.status_code == 422
    await world.settle()
    push = world.receiver.of("push")[0].data
    assert (
        push["deleted"] is True
        and push["after"] == "0" * 40
        and push["sender"]["login"] == "patchwright[bot]"
    )

    levels = {}
    for login in ("alice", "mallory", "octo-org"):
        levels[login] = await gh.getitem(f"/repos/{world.repo}/collaborators/{login}/permission")
    assert levels["alice"]["permission"] == "write" and levels["alice"]["role_name"] == "write"
    assert levels["mallory"]["permission"] == "read"
    assert levels["octo-org"]["permission"] == "admin"
    world.emulator.set_permission(world.repo, "mallory", "maintain")
    cache_free = await gh.getitem(f"/repos/{world.repo}/collaborators/mallory/permission")
    assert cache_free["permission"] == "write" and cache_free["role_name"] == "maintain"
    with pytest.raises(gidgethub.BadRequest):
        await gh.getitem(f"/repos/{world.repo}/collaborators/nobody/permission")


async def test_pull_request_lifecycle_over_rest(world):
    emulator, receiver = world.emulator, world.receiver
    gh = world.gh()
    await emulator.open_issue(world.repo, title="Answer", user="alice")
    head = await emulator.push_commit(
        world.repo,
        branch="patchwright/1-answer",
        files={"src/app.py": "def answer():\n    return 42\n"},
        user="alice",
    )
    with pytest.raises(gidgethub.BadRequest) as bad_head:
        await gh.post(f"/repos/{world.repo}/pulls", data={"title": "x", "head": "nope", "base": "main"})
    assert bad_head.value.status_code == 422
    pr = await gh.post(
        f"/repos/{world.repo}/pulls",
        data={"title": "Answer 42", "head": "patchwright/1-answer", "base": "main", "body": "Closes #1"},
    )
    assert pr["number"] == 2 and pr["head"]["sha"] == head["sha"] and pr["mergeable"] is None
    assert pr["commits"] == 1 and pr["additions"] == 1 and pr["deletions"] == 1 and pr["changed_files"] == 1
    with pytest.raises(gidgethub.BadRequest) as duplicate:
        await gh.post(
            f"/repos/{world.repo}/pulls",
            data={"title": "again", "head": "patchwright/1-answer", "base": "main"},
        )
    assert "already exists" in json.dumps(duplicate.value.errors)

    fetched = await world.read_pull(2)
    assert fetched["mergeable"] is True and fetched["mergeable_state"] == "clean"
    listed = await gh.getitem(f"/repos/{world.repo}/pulls?head=octo-org:patchwright/1-answer&state=open")
    assert [p["number"] for p in listed] == [2]
    assert await gh.getitem(f"/repos/{world.repo}/pulls?head=octo-org:other") == []
    files = [f async for f in gh.getiter(f"/repos/{world.repo}/pulls/2/files")]
    assert files[0]["filename"] == "src/app.py" and "+    return 42" in files[0]["patch"]

    updated = await gh.patch(
        f"/repos/{world.repo}/pulls/2", data={"body": "Closes #1\n\n<!-- patchwright:summary -->"}
    )
    assert updated["body"].endswith("summary -->")

    await emulator.submit_review(
        world.repo,
        2,
        user="alice",
        event="REQUEST_CHANGES",
        body="Please",
        comments=[{"path": "src/app.py", "line": 2, "body": "why 42?"}],
    )
    reviews = await gh.getitem(f"/repos/{world.repo}/pulls/2/reviews")
    assert reviews[0]["state"] == "CHANGES_REQUESTED" and reviews[0]["user"]["login"] == "alice"
    review = await gh.getitem(f"/repos/{world.repo}/pulls/2/reviews/{reviews[0]['id']}")
    comments = await gh.getitem(f"/repos/{world.repo}/pulls/2/reviews/{review['id']}/comments")
    assert (
        comments[0]["body"] == "why 42?"
        and comments[0]["line"] == 2
        and "return 42" in comments[0]["diff_hunk"]
    )
    reply = await gh.post(
        f"/repos/{world.repo}/pulls/2/comments/{comments[0]['id']}/replies", data={"body": "addressed in abc"}
    )
    assert reply["in_reply_to_id"] == comments[0]["id"] and reply["user"]["login"] == "patchwright[bot]"
    await gh.post(
        f"/repos/{world.repo}/pulls/comments/{comments[0]['id']}/reactions", data={"content": "rocket"}
    )
    all_comments = await gh.getitem(f"/repos/{world.repo}/pulls/2/comments")
    assert [c["id"] for c in all_comments] == [comments[0]["id"], reply["id"]]
    assert all_comments[0]["reactions"]["rocket"] == 1

    closed = await gh.patch(f"/repos/{world.repo}/pulls/2", data={"state": "closed"})
    assert closed["state"] == "closed" and closed["merged"] is False
    await world.settle()
    kinds = receiver.events()
    assert kinds[:4] == [
        ("issues", "opened"),
        ("push", None),
        ("check_suite", "requested"),
        ("pull_request", "opened"),
    ]
    assert ("pull_request", "edited") in kinds and kinds[-1] == ("pull_request", "closed")
    assert kinds.count(("pull_request_review", "submitted")) == 2  # the review, and the reply's review
    assert receiver.of("pull_request", "closed")[0].data["pull_request"]["merged"] is False


async def test_check_runs_suites_and_statuses(world):
    emulator, receiver = world.emulator, world.receiver
    gh = world.gh()
    head = await emulator.push_commit(world.repo, branch="feature", files={"f.txt": "f\n"}, user="alice")
    await emulator.open_pull(world.repo, head="feature", title="Feature", user="alice")
    await world.forget_hooks()
    with pytest.raises(gidgethub.BadRequest) as unknown_sha:
        await gh.post(f"/repos/{world.repo}/check-runs", data={"name": "patchwright", "head_sha": "f" * 40})
    assert unknown_sha.value.status_code == 422
    run = await gh.post(
        f"/repos/{world.repo}/check-runs",
        data={
            "name": "patchwright",
            "head_sha": head["sha"],
            "status": "in_progress",
            "output": {"title": "Attempt 1", "summary": "working"},
            "actions": [{"label": "Stop", "description": "Stop the agent", "identifier": "stop"}],
        },
    )
    assert run["status"] == "in_progress" and run["app"]["slug"] == "patchwright"
    assert run["pull_requests"][0]["number"] == 1
    with pytest.raises(ApiError) as not_completed:  # GitHub shows buttons on completed runs only
        emulator.request_check_action(world.repo, run["id"], "stop", user="alice")
    assert not_completed.value.status == 422
    done = await gh.patch(
        f"/repos/{world.repo}/check-runs/{run['id']}",
        data={
            "conclusion": "failure",
            "output": {
                "title": "Attempt 1 failed",
                "summary": "tests failed",
                "annotations": [
                    {
                        "path": "f.txt",
                        "start_line": 1,
                        "end_line": 1,
                        "annotation_level": "failure",
                        "message": "bad",
                    }
                ],
            },
        },
    )
    assert (
        done["status"] == "completed"
        and done["conclusion"] == "failure"
        and done["output"]["annotations_count"] == 1
    )
    assert (await gh.getitem(f"/repos/{world.repo}/check-runs/{run['id']}"))["output"][
        "title"
    ] == "Attempt 1 failed"
    emulator.request_check_action(world.repo, run["id"], "stop", user="alice")
    with pytest.raises(ApiError):
        emulator.request_check_action(world.repo, run["id"], "nope", user="alice")
    annotations = await gh.getitem(f"/repos/{world.repo}/check-runs/{run['id']}/annotations")
    assert annotations[0]["message"] == "bad" and annotations[0]["blob_href"].endswith("/f.txt")
    by_ref = await gh.getitem(f"/repos/{world.repo}/commits/feature/check-runs")
    assert by_ref["total_count"] == 1 and by_ref["check_runs"][0]["id"] == run["id"]
    assert (await gh.getitem(f"/repos/{world.repo}/commits/feature/check-runs?check_name=other"))[
        "total_count"
    ] == 0
    suite = await gh.getitem(f"/repos/{world.repo}/check-suites/{done['check_suite']['id']}")
    assert (
        suite["status"] == "completed"
        and suite["conclusion"] == "failure"
        and suite["head_sha"] == head["sha"]
    )
    in_suite = await gh.getitem(f"/repos/{world.repo}/check-suites/{suite['id']}/check-runs")
    assert [r["id"] for r in in_suite["check_runs"]] == [run["id"]]
    await gh.post(f"/repos/{world.repo}/check-runs/{run['id']}/rerequest", data={})

    combined = await gh.getitem(f"/repos/{world.repo}/commits/{head['sha']}/status")
    assert combined["state"] == "pending" and combined["total_count"] == 0
    await emulator.create_status(
        emulator.repo(world.repo),
        head["sha"],
        state="failure",
        context="lint",
        creator=emulator.account("alice"),
    )
    combined = await gh.getitem(f"/repos/{world.repo}/commits/feature/status")
    assert combined["state"] == "failure" and combined["statuses"][0]["context"] == "lint"
    statuses = await gh.getitem(f"/repos/{world.repo}/commits/feature/statuses")
    assert statuses[0]["creator"]["login"] == "alice"
    await world.settle()
    assert receiver.events() == [
        ("check_run", "created"),
        ("check_run", "completed"),
        ("check_suite", "completed"),
        ("check_run", "requested_action"),
        ("check_run", "rerequested"),
        ("status", None),
    ]
    assert receiver.of("check_run", "requested_action")[0].data["requested_action"] == {"identifier": "stop"}
