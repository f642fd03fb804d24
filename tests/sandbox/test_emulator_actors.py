"""The actor API over HTTP (``/_emulator/…``): each actor, the REST state and the webhooks."""

from __future__ import annotations

import json
from pathlib import Path

from gidgethub import apps


async def test_setup_actors_create_app_installation_repo_and_users(
    emulator, receiver, session, tmp_path: Path
):
    async def actor(method, path, body=None):
        async with session.request(method, f"{emulator.base_url}/_emulator{path}", json=body) as response:
            return response.status, await response.json()

    source = tmp_path / "src"
    (source / "pkg").mkdir(parents=True)
    (source / "pkg" / "mod.py").write_text("VALUE = 1\n")
    status, repo = await actor(
        "POST",
        "/repos",
        {"owner": "octo-org", "name": "from-dir", "source_dir": str(source), "owner_type": "Organization"},
    )
    assert status == 201 and repo["full_name"] == "octo-org/from-dir" and repo["default_branch"] == "main"
    status, repo = await actor(
        "POST",
        "/repos",
        {"owner": "alice", "name": "files", "default_branch": "trunk", "files": {"a.md": "A\n"}},
    )
    assert status == 201 and repo["default_branch"] == "trunk" and repo["owner"]["type"] == "User"
    status, error = await actor("POST", "/repos", {"owner": "alice", "name": "files"})
    assert status == 422

    status, app = await actor(
        "POST", "/apps", {"name": "My Bot", "webhook_url": receiver.url, "webhook_secret": receiver.secret}
    )
    assert (
        status == 201
        and app["slug"] == "my-bot"
        and app["private_key"].startswith("-----BEGIN RSA PRIVATE KEY")
    )
    assert app["webhook_secret"] == receiver.secret and app["client_id"]
    status, installation = await actor(
        "POST",
        "/installations",
        {"app_id": app["id"], "account": "octo-org", "repositories": ["octo-org/from-dir"]},
    )
    assert status == 201 and installation["app_id"] == app["id"]
    status, user = await actor(
        "POST",
        "/users",
        {"login": "bob", "type": "User", "repo": "octo-org/from-dir", "permission": "triage"},
    )
    assert status == 201 and user["login"] == "bob"
    status, _ = await actor(
        "POST", "/users", {"login": "bob", "repo": "octo-org/from-dir", "permission": "owner"}
    )
    assert status == 422

    async with session.post(
        f"{emulator.base_url}/_emulator/installations/{installation['id']}/tokens"
    ) as response:
        token = (await response.json())["token"]
    from gidgethub.aiohttp import GitHubAPI

    gh = GitHubAPI(session, "tests", oauth_token=token, base_url=emulator.base_url)
    jwt = apps.get_jwt(app_id=str(app["id"]), private_key=app["private_key"])
    assert (await gh.getitem("/app", jwt=jwt))["name"] == "My Bot"
    content = await gh.getitem("/repos/octo-org/from-dir/contents/pkg/mod.py")
    assert content["path"] == "pkg/mod.py"
    permission = await gh.getitem("/repos/octo-org/from-dir/collaborators/bob/permission")
    assert (permission["permission"], permission["role_name"]) == ("read", "triage")
    await emulator.idle()
    created = receiver.of("installation", "created")[0].data
    assert created["installation"]["id"] == installation["id"]
    assert [r["full_name"] for r in created["repositories"]] == ["octo-org/from-dir"]

    status, _ = await actor("PATCH", f"/apps/{app['id']}", {"webhook_url": receiver.url + "?moved=1"})
    assert status == 200 and emulator.app(app["id"]).webhook_url.endswith("moved=1")
    status, ping = await actor("POST", f"/apps/{app['id']}/ping")
    await emulator.idle()
    assert status == 201 and receiver.of("ping")[0].data["hook"]["app_id"] == app["id"]


async def test_issue_actors_and_their_webhooks(world):
    status, issue = await world.actor(
        "POST",
        f"/repos/{world.repo}/issues",
        {"title": "Add answer", "body": "42", "user": "alice", "labels": ["patchwright"]},
    )
    assert status == 201 and issue["number"] == 1 and [l["name"] for l in issue["labels"]] == ["patchwright"]
    status, labels = await world.actor(
        "POST", f"/repos/{world.repo}/issues/1/labels", {"labels": ["bug"], "user": "alice"}
    )
    assert status == 200 and [l["name"] for l in labels] == ["patchwright", "bug"]
    status, labels = await world.actor(
        "DELETE", f"/repos/{world.repo}/issues/1/labels/patchwright?user=alice"
    )
    assert status == 200 and [l["name"] for l in labels] == ["bug"]
    status, comment = await world.actor(
        "POST", f"/repos/{world.repo}/issues/1/comments", {"body": "@patchwright retry", "user": "alice"}
    )
    assert status == 201 and comment["id"] and comment["user"]["login"] == "alice"
    status, edited = await world.actor(
        "PATCH", f"/repos/{world.repo}/issues/1", {"title": "Add the answer", "body": "42!", "user": "alice"}
    )
    assert status == 200 and edited["title"] == "Add the answer"
    status, closed = await world.actor(
        "PATCH", f"/repos/{world.repo}/issues/1", {"state": "closed", "user": "mallory"}
    )
    assert status == 200 and closed["state"] == "closed" and closed["closed_by"]["login"] == "mallory"
    status, _ = await world.actor("POST", f"/repos/{world.repo}/issues/99/comments", {"body": "x"})
    assert status == 404

    fetched = await world.gh().getitem(f"/repos/{world.repo}/issues/1")
    assert fetched["state"] == "closed" and fetched["comments"] == 1 and fetched["body"] == "42!"
    await world.settle()
    assert world.receiver.events() == [
        ("issues", "opened"),
        ("issues", "labeled"),
        ("issues", "labeled"),
        ("issues", "unlabeled"),
        ("issue_comment", "created"),
        ("issues", "edited"),
        ("issues", "closed"),
    ]
    labeled = world.receiver.of("issues", "labeled")[0].data
    assert labeled["label"]["name"] == "patchwright" and labeled["sender"]["login"] == "alice"
    edited_event = world.receiver.of("issues", "edited")[0].data
    assert edited_event["changes"] == {"title": {"from": "Add answer"}, "body": {"from": "42"}}
    comment_event = world.receiver.of("issue_comment", "created")[0].data
    assert (
        comment_event["comment"]["body"] == "@patchwright retry"
        and "pull_request" not in comment_event["issue"]
    )


async def test_pull_request_actors_review_commit_merge(world):
    await world.emulator.open_issue(world.repo, title="Answer", user="alice")
    status, commit = await world.actor(
        "POST",
        f"/repos/{world.repo}/commits",
        {
            "branch": "patchwright/1-answer",
            "files": {"src/app.py": "def answer():\n    return 42\n"},
            "message": "Answer",
            "user": "alice",
        },
    )
    assert status == 201 and len(commit["sha"]) == 40
    status, pr = await world.actor(
        "POST",
        f"/repos/{world.repo}/pulls",
        {"head": "patchwright/1-answer", "title": "Answer", "body": "Closes #1", "user": "alice"},
    )
    assert status == 201 and pr["number"] == 2 and pr["head"]["sha"] == commit["sha"]
    await world.forget_hooks()

    status, review = await world.actor(
        "POST",
        f"/repos/{world.repo}/pulls/2/reviews",
        {
            "user": "alice",
            "event": "REQUEST_CHANGES",
            "body": "Close, but",
            "comments": [
                {"path": "src/app.py", "line": 2, "body": "Use a constant"},
                {"path": "src/app.py", "line": 1, "body": "Docstring?"},
            ],
        },
    )
    assert status == 201 and review["id"] and review["state"] == "CHANGES_REQUESTED"
    await world.settle()
    assert world.receiver.events() == [
        ("pull_request_review_comment", "created"),
        ("pull_request_review_comment", "created"),
        ("pull_request_review", "submitted"),
    ]
    submitted = world.receiver.of("pull_request_review")[0].data
    assert submitted["review"]["state"] == "changes_requested"  # lower case in webhooks, as on GitHub
    inline = world.receiver.of("pull_request_review_comment")[0].data["comment"]
    assert (
        inline["pull_request_review_id"] == review["id"]
        and inline["path"] == "src/app.py"
        and inline["line"] == 2
    )
    await world.forget_hooks()

    # a human pushes to the PR branch: synchronize by a User
    status, _ = await world.actor(
        "POST",
        f"/repos/{world.repo}/commits",
        {"branch": "patchwright/1-answer", "files": {"CONST.txt": "42\n"}, "user": "alice"},
    )
    await world.settle()
    assert world.receiver.events() == [
        ("push", None),
        ("pull_request", "synchronize"),
        ("check_suite", "requested"),  # a new head commit: a suite for the App (checks: write)
    ]
    assert world.receiver.of("pull_request")[0].data["sender"]["login"] == "alice"
    await world.forget_hooks()

    status, result = await world.actor("POST", f"/repos/{world.repo}/pulls/2/merge", {"user": "alice"})
    assert status == 200 and result["merged"] is True
    status, again = await world.actor("POST", f"/repos/{world.repo}/pulls/2/merge", {"user": "alice"})
    assert status == 405
    await world.settle()
    assert world.receiver.events() == [
        ("pull_request", "closed"),
        ("push", None),
        ("check_suite", "requested"),
        ("issues", "closed"),
    ]
    closed = world.receiver.of("pull_request", "closed")[0].data["pull_request"]
    assert (
        closed["merged"] is True
        and closed["merged_by"]["login"] == "alice"
        and closed["merge_commit_sha"] == result["sha"]
    )
    push = world.receiver.of("push")[0].data
    assert push["ref"] == "refs/heads/main" and push["after"] == result["sha"]
    gh = world.gh()
    assert (await gh.getitem(f"/repos/{world.repo}/issues/1"))["state_reason"] == "completed"
    main = await gh.getitem(f"/repos/{world.repo}/branches/main")
    assert main["commit"]["sha"] == result["sha"] and len(main["commit"]["parents"]) == 2
    assert (await gh.getitem(f"/repos/{world.repo}/pulls/2"))["merged"] is True


async def test_conflicting_commit_then_close_pr_actor(world):
    em = world.emulator
    await em.push_commit(world.repo, branch="feature", files={"README.md": "# feature\n"}, user="alice")
    await world.actor(
        "POST",
        f"/repos/{world.repo}/pulls",
        {"head": "feature", "base": "main", "title": "F", "user": "alice"},
    )
    await world.actor(
        "POST",
        f"/repos/{world.repo}/commits",
        {"branch": "main", "files": {"README.md": "# conflict\n"}, "user": "alice"},
    )
    pr = await world.read_pull(1)
    assert (pr["mergeable"], pr["mergeable_state"]) == (False, "dirty")
    status, result = await world.actor("POST", f"/repos/{world.repo}/pulls/1/merge", {"user": "alice"})
    assert status == 405
    status, closed = await world.actor(
        "PATCH", f"/repos/{world.repo}/pulls/1", {"state": "closed", "user": "alice"}
    )
    assert status == 200 and closed["state"] == "closed" and closed["merged"] is False
    await world.settle()
    assert world.receiver.events()[-1] == ("pull_request", "closed")


async def test_records_state_requests_tokens_and_request_log(world, tmp_path: Path):
    log = tmp_path / "requests.jsonl"
    world.emulator.request_log = log
    await world.emulator.open_issue(world.repo, title="T", user="alice", labels=["patchwright"])
    await world.gh().post(f"/repos/{world.repo}/issues/1/comments", data={"body": "hi"})
    await world.emulator.push_commit(world.repo, branch="b", files={"b.txt": "b\n"}, user="alice")
    await world.emulator.open_pull(world.repo, head="b", title="B", user="alice")
    await world.emulator.submit_review(world.repo, 2, user="alice", event="APPROVE")
    status, state = await world.actor("GET", "/state")
    assert status == 200
    repo = state[world.repo]
    assert [i["number"] for i in repo["issues"]] == [1]
    assert repo["issues"][0]["comments_list"][0]["body"] == "hi"
    assert repo["issues"][0]["labels"][0]["name"] == "patchwright"
    pull = repo["pull_requests"][0]
    assert pull["head"]["ref"] == "b" and pull["base"]["ref"] == "main" and pull["merged"] is False
    assert pull["reviews"][0]["state"] == "APPROVED"
    assert repo["refs"]["refs/heads/b"] == pull["head"]["sha"]

    status, requests = await world.actor("GET", "/requests")
    assert [(r["method"], r["operation_id"], r["status"]) for r in requests] == [
        ("POST", "issues/create-comment", 201)
    ]
    assert (
        requests[0]["body"] == {"body": "hi"}
        and requests[0]["credential"] == f"installation:{world.installation_id}"
    )
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0]["operation_id"] == "issues/create-comment"
    assert world.token not in log.read_text() and world.token not in json.dumps(requests)
    status, tokens = await world.actor("GET", "/tokens")
    assert [t["token"] for t in tokens] == [world.token]
