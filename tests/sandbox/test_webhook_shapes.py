"""Every webhook kind the emulator sends carries (at least) the keys of GitHub's real examples
(and, as every delivery, validates against GitHub's webhook schemas: test_webhook_schemas.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"

# (event, action) -> reference example
REFERENCES = {
    ("issues", "opened"): "issues/opened.payload.json",
    ("issues", "labeled"): "issues/labeled.payload.json",
    ("issues", "unlabeled"): "issues/unlabeled.payload.json",
    ("issues", "edited"): "issues/edited.payload.json",
    ("issues", "closed"): "issues/reopened.payload.json",
    ("issues", "reopened"): "issues/reopened.payload.json",
    ("issue_comment", "created"): "issue_comment/created.payload.json",
    ("issue_comment", "edited"): "issue_comment/edited.payload.json",
    ("pull_request", "opened"): "pull_request/opened.payload.json",
    ("pull_request", "synchronize"): "pull_request/synchronize.payload.json",
    ("pull_request", "edited"): "pull_request/opened.payload.json",
    ("pull_request", "closed"): "pull_request/closed.payload.json",
    ("pull_request", "reopened"): "pull_request/reopened.payload.json",
    ("pull_request_review", "submitted"): "pull_request_review/submitted.payload.json",
    ("pull_request_review_comment", "created"): "pull_request_review_comment/created.payload.json",
    ("push", None): "push/with-organization.payload.json",
    ("check_suite", "requested"): "check_suite/requested.payload.json",
    ("check_suite", "completed"): "check_suite/completed.payload.json",
    ("check_run", "created"): "check_run/created.payload.json",
    ("check_run", "completed"): "check_run/completed.payload.json",
    ("check_run", "requested_action"): "check_run/requested_action.payload.json",
    ("check_run", "rerequested"): "check_run/rerequested.payload.json",
    ("workflow_run", "requested"): "workflow_run/requested.payload.json",
    ("workflow_run", "completed"): "workflow_run/completed.payload.json",
    ("workflow_job", "queued"): "workflow_job/queued.payload.json",
    ("workflow_job", "in_progress"): "workflow_job/in_progress.payload.json",
    ("workflow_job", "completed"): "workflow_job/completed.success.with-organization.payload.json",
    ("status", None): "status/payload.json",
    ("installation", "created"): "installation/created.payload.json",
    ("installation", "deleted"): "installation/deleted.payload.json",
    ("installation_repositories", "added"): "installation_repositories/added.payload.json",
    ("installation_repositories", "removed"): "installation_repositories/removed.payload.json",
    ("ping", None): "ping/with-app_id.payload.json",
}

# event -> paths of nested objects whose keys are compared too ("" = the payload itself)
MAIN_OBJECTS = {
    "issues": ["", "issue", "issue.user", "repository", "repository.owner", "sender"],
    "issue_comment": ["", "comment", "issue", "repository", "sender"],
    "pull_request": [
        "",
        "pull_request",
        "pull_request.head",
        "pull_request.base",
        "pull_request._links",
        "repository",
    ],
    "pull_request_review": ["", "review", "review._links", "pull_request", "pull_request.head"],
    "pull_request_review_comment": ["", "comment", "comment._links", "pull_request"],
    "push": ["", "head_commit", "commits.0", "pusher", "repository"],
    "check_suite": ["", "check_suite", "check_suite.app", "check_suite.head_commit"],
    "check_run": ["", "check_run", "check_run.output", "check_run.check_suite", "check_run.app"],
    "workflow_run": ["", "workflow_run", "workflow", "workflow_run.head_commit", "workflow_run.repository"],
    "workflow_job": ["", "workflow_job"],
    "status": ["", "commit", "commit.commit", "branches.0"],
    "installation": ["", "installation", "installation.account", "repositories.0"],
    "installation_repositories": ["", "installation", "repositories_added.0"],
    "ping": ["", "hook", "hook.config"],
}
# Keys a reference has that this emulator deliberately does not model (GitHub features out of scope).
NOT_MODELLED = {
    "check_run.check_suite.deployment",
}


def _at(payload: Any, path: str) -> Any:
    node = payload
    for part in [p for p in path.split(".") if p]:
        if isinstance(node, list):
            node = node[int(part)] if len(node) > int(part) else None
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
        if node is None:
            return None
    return node


async def _drive_every_event(world) -> None:
    em = world.emulator
    # workflow_job is not among an App's default events; statuses come from an external CI
    em.app(world.app["id"]).events.append("workflow_job")
    status, _ = await world.actor(
        "POST", "/ci", {"repo": world.repo, "command": "echo fine", "checks": ["ci"], "timeout": 30}
    )
    assert status == 201
    external = {"repo": world.repo, "command": "echo fine", "provider": "external", "checks": ["ext"]}
    status, _ = await world.actor("POST", "/ci", {**external, "timeout": 30})
    assert status == 201
    await em.create_repo("octo-org", "second", owner_type="Organization")
    await em.create_repo("octo-org", "third", owner_type="Organization")
    second = await em.create_installation(world.app["id"], "octo-org", ["octo-org/second"])
    await em.change_installation_repositories(second["id"], add=["octo-org/third"])
    await em.change_installation_repositories(second["id"], remove=["octo-org/third"])
    em.ping(world.app["id"])
    await em.open_issue(world.repo, title="Bug", body="fix", user="alice", labels=["patchwright"])
    await em.unlabel_issue(world.repo, 1, "patchwright", user="alice")
    await em.edit_issue(world.repo, 1, title="Bug!", user="alice")
    comment = await em.comment_on(world.repo, 1, "hello", user="alice")
    gh = world.gh()
    await gh.patch(f"/repos/{world.repo}/issues/comments/{comment['id']}", data={"body": "hello again"})
    await em.edit_issue(world.repo, 1, state="closed", user="alice")
    await em.edit_issue(world.repo, 1, state="open", user="alice")
    await em.push_commit(world.repo, branch="feature", files={"f.txt": "1\n"}, user="alice")
    pr = await em.open_pull(world.repo, head="feature", title="Feature", body="Fixes #1", user="alice")
    await em.ci_idle()
    await em.push_commit(world.repo, branch="feature", files={"f.txt": "2\n"}, user="alice")
    await em.ci_idle()
    await gh.patch(f"/repos/{world.repo}/pulls/{pr['number']}", data={"title": "Feature!"})
    await em.submit_review(
        world.repo,
        pr["number"],
        user="alice",
        event="COMMENT",
        body="hm",
        comments=[{"path": "f.txt", "line": 1, "body": "?"}],
    )
    run = await gh.post(
        f"/repos/{world.repo}/check-runs",
        data={
            "name": "patchwright",
            "head_sha": (await gh.getitem(f"/repos/{world.repo}/pulls/{pr['number']}"))["head"]["sha"],
            "status": "in_progress",
            "actions": [{"label": "Retry", "description": "Retry the task", "identifier": "retry"}],
        },
    )
    await gh.patch(f"/repos/{world.repo}/check-runs/{run['id']}", data={"conclusion": "success"})
    em.request_check_action(world.repo, run["id"], "retry", user="alice")  # buttons work once completed
    await gh.post(f"/repos/{world.repo}/check-runs/{run['id']}/rerequest", data={})
    await em.close_pull(world.repo, pr["number"], user="alice")
    await em.edit_pull(world.repo, pr["number"], state="open", user="alice")
    await em.merge_pull(world.repo, pr["number"], user="alice")
    await em.ci_idle()
    await em.delete_installation(second["id"])
    await em.idle()


async def test_payload_keys_include_those_of_real_examples(world):
    await _drive_every_event(world)
    invalid = [v.as_dict() for v in world.emulator.violations() if v.kind == "webhook"]
    assert not invalid, f"payloads GitHub's webhook schemas reject: {json.dumps(invalid, indent=1)[:4000]}"
    by_kind: dict[tuple[str, str | None], dict] = {}
    for received in world.receiver.received:
        by_kind.setdefault((received.event, received.action), received.data)
    sent_kinds = {event for event, _ in by_kind}
    assert sent_kinds == {event for event, _ in REFERENCES}, "every event kind is exercised"
    missing_refs = set(by_kind) - set(REFERENCES)
    assert not missing_refs, f"kinds sent without a reference: {missing_refs}"
    problems = []
    for kind, reference_file in REFERENCES.items():
        assert kind in by_kind, f"{kind} was not sent"
        ours = by_kind[kind]
        reference = json.loads((FIXTURES / reference_file).read_text())
        for path in MAIN_OBJECTS[kind[0]]:
            expected, actual = _at(reference, path), _at(ours, path)
            if not isinstance(expected, dict):
                continue
            if not isinstance(actual, dict):
                problems.append(f"{kind} {path or '<payload>'}: missing object")
                continue
            missing = {
                key
                for key in set(expected) - set(actual)
                if f"{path}.{key}".lstrip(".") not in NOT_MODELLED and key not in ("installation",)
            }
            if kind[0] != "ping" and path == "":
                missing.discard("installation")
            if missing:
                problems.append(f"{kind} {path or '<payload>'}: missing {sorted(missing)}")
    assert not problems, "\n".join(problems)


async def test_deliveries_carry_githubs_headers_and_the_app_as_sender(world):
    await world.emulator.open_issue(world.repo, title="Hi", user="alice")
    await world.gh().post(f"/repos/{world.repo}/issues/1/comments", data={"body": "ack"})
    await world.settle()
    opened, comment = world.receiver.received
    headers = {k.lower(): v for k, v in comment.headers.items()}
    assert headers["x-github-event"] == "issue_comment"
    assert len(headers["x-github-delivery"]) == 36 and headers["x-github-delivery"].count("-") == 4
    assert headers["x-github-hook-id"] == str(world.emulator.app(world.app["id"]).hook_id)
    assert headers["x-github-hook-installation-target-type"] == "integration"
    assert headers["x-github-hook-installation-target-id"] == str(world.app["id"])
    assert headers["user-agent"].startswith("GitHub-Hookshot/")
    assert headers["content-type"] == "application/json"
    assert headers["x-hub-signature-256"].startswith("sha256=") and headers["x-hub-signature"].startswith(
        "sha1="
    )
    assert comment.data["installation"] == {
        "id": world.installation_id,
        "node_id": comment.data["installation"]["node_id"],
    }
    assert comment.data["sender"] == {**comment.data["sender"], "login": "patchwright[bot]", "type": "Bot"}
    assert comment.data["organization"]["login"] == "octo-org"
    assert opened.data["sender"]["login"] == "alice" and opened.data["sender"]["type"] == "User"
