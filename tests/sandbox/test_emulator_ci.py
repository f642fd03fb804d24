"""The CI actors: GitHub Actions (checks, Actions runs/jobs/logs; no statuses) and an external
CI service (commit statuses only)."""

from __future__ import annotations

import gidgethub
import pytest

FAILING = "echo 'FAILED tests/test_app.py::test_answer - assert 41 == 42'\nexit 3"


async def _pr_with_ci(world, command: str, checks: list[str]) -> dict:
    status, config = await world.actor(
        "POST", "/ci", {"repo": world.repo, "command": command, "checks": checks, "timeout": 30}
    )
    assert status == 201 and config["checks"] == checks
    await world.emulator.push_commit(
        world.repo, branch="patchwright/1-x", files={"x.txt": "x\n"}, user="alice"
    )
    await world.forget_hooks()  # the branch has no PR yet: no CI
    assert not world.emulator.repo(world.repo).workflow_runs
    return await world.emulator.open_pull(world.repo, head="patchwright/1-x", title="X", user="alice")


async def test_failing_command_reports_failure_with_log_between_step_markers(world):
    pr = await _pr_with_ci(world, FAILING, ["test", "lint"])
    await world.emulator.ci_idle()
    gh = world.gh()
    head = pr["head"]["sha"]
    runs = await gh.getitem(f"/repos/{world.repo}/commits/{head}/check-runs")
    assert sorted(r["name"] for r in runs["check_runs"]) == ["lint", "test"]
    assert {r["conclusion"] for r in runs["check_runs"]} == {"failure"}
    assert all(r["app"]["slug"] == "github-actions" for r in runs["check_runs"])
    assert "exit code 3" in runs["check_runs"][0]["output"]["summary"]

    workflow_runs = await gh.getitem(f"/repos/{world.repo}/actions/runs?head_sha={head}")
    assert workflow_runs["total_count"] == 1
    run = workflow_runs["workflow_runs"][0]
    assert run["conclusion"] == "failure" and run["event"] == "pull_request"
    assert run["pull_requests"][0]["number"] == pr["number"]
    assert (await gh.getitem(f"/repos/{world.repo}/actions/runs/{run['id']}"))["id"] == run["id"]
    assert (await gh.getitem(f"/repos/{world.repo}/actions/workflows/ci.yml/runs"))["total_count"] == 1
    jobs = await gh.getitem(f"/repos/{world.repo}/actions/runs/{run['id']}/jobs")
    assert jobs["total_count"] == 2
    job = jobs["jobs"][0]
    assert job["id"] in {r["id"] for r in runs["check_runs"]}  # job id == check run id, as on GitHub
    assert [s["name"] for s in job["steps"]][:2] == ["Set up job", "Checkout"]
    assert [s["conclusion"] for s in job["steps"]][2] == "failure"
    assert (await gh.getitem(f"/repos/{world.repo}/actions/jobs/{job['id']}"))["conclusion"] == "failure"

    async with world.session.get(
        world.url(f"/repos/{world.repo}/actions/jobs/{job['id']}/logs"),
        headers={"Authorization": f"token {world.token}"},
        allow_redirects=False,
    ) as response:
        assert response.status == 302
        location = response.headers["Location"]
    assert location.startswith(world.base_url)
    async with world.session.get(location) as response:  # pre-signed: no credentials needed
        assert response.status == 200 and response.content_type == "text/plain"
        log = await response.text()
    lines = log.splitlines()
    group = next(i for i, line in enumerate(lines) if "##[group]Run echo" in line)
    error = next(i for i, line in enumerate(lines) if "##[error]Process completed with exit code 3." in line)
    assert group < error
    assert any("assert 41 == 42" in line for line in lines[group:error])
    async with world.session.get(location.replace("sig=", "sig=x")) as response:
        assert response.status == 403

    combined = await gh.getitem(f"/repos/{world.repo}/commits/{head}/status")
    assert combined["state"] == "pending" and combined["total_count"] == 0  # Actions posts no statuses

    # workflow_job events exist, but this App (like app.yml) does not subscribe to them
    events = [e for e in world.receiver.events() if e[0] != "pull_request"]
    assert events == [
        ("workflow_run", "requested"),
        ("check_run", "created"),
        ("check_run", "created"),
        ("check_run", "completed"),
        ("check_run", "completed"),
        ("check_suite", "completed"),
        ("workflow_run", "completed"),
    ]
    suite = world.receiver.of("check_suite", "completed")[0].data["check_suite"]
    assert suite["conclusion"] == "failure" and suite["head_sha"] == head
    assert suite["pull_requests"][0]["number"] == pr["number"]


async def test_passing_command_reports_success_and_rerun(world):
    status, _ = await world.actor(
        "POST",
        "/ci",
        {"repo": world.repo, "command": "test -f x.txt", "provider": "external", "checks": ["jenkins"]},
    )
    assert status == 201
    pr = await _pr_with_ci(world, "test -f x.txt && echo ok", ["ci"])
    await world.emulator.ci_idle()
    gh = world.gh()
    runs = await gh.getitem(f"/repos/{world.repo}/commits/{pr['head']['sha']}/check-runs")
    assert [(r["name"], r["status"], r["conclusion"]) for r in runs["check_runs"]] == [
        ("ci", "completed", "success")
    ]
    status = await gh.getitem(f"/repos/{world.repo}/commits/{pr['head']['sha']}/status")
    assert status["state"] == "success"  # the external CI's status; Actions posts none
    assert [(s["context"], s["state"]) for s in status["statuses"]] == [("jenkins", "success")]
    await world.forget_hooks()
    job_id = runs["check_runs"][0]["id"]
    with pytest.raises(gidgethub.BadRequest) as refused:  # app.yml grants actions: read only
        await gh.post(f"/repos/{world.repo}/actions/jobs/{job_id}/rerun", data={})
    assert refused.value.status_code == 403
    world.emulator.app(world.app["id"]).permissions["actions"] = "write"
    gh = world.gh(token=(await world.emulator.create_token(world.installation_id)).token)
    assert await gh.post(f"/repos/{world.repo}/actions/jobs/{job_id}/rerun", data={}) == {}
    await world.emulator.ci_idle()
    assert ("workflow_run", "completed") in world.receiver.events()
    assert ("status", None) not in world.receiver.events()  # re-running a job is Actions only
    assert len(world.emulator.repo(world.repo).workflow_runs) == 2

    # a push to the default branch runs CI too
    await world.forget_hooks()
    await world.emulator.push_commit(world.repo, branch="main", files={"x.txt": "main\n"}, user="alice")
    await world.emulator.ci_idle()
    runs = await gh.getitem(f"/repos/{world.repo}/actions/runs?branch=main")
    assert runs["total_count"] == 1 and runs["workflow_runs"][0]["event"] == "push"
    assert runs["workflow_runs"][0]["conclusion"] == "success"


async def test_external_ci_posts_commit_statuses_only(world):
    status, config = await world.actor(
        "POST",
        "/ci",
        {
            "repo": world.repo,
            "command": FAILING,
            "provider": "external",
            "checks": ["ci/jenkins", "ci/lint"],
            "creator": "jenkins",
            "timeout": 30,
        },
    )
    assert status == 201 and config["provider"] == "external" and config["creator"] == "jenkins"
    await world.emulator.push_commit(world.repo, branch="ext", files={"x.txt": "x\n"}, user="alice")
    pr = await world.emulator.open_pull(world.repo, head="ext", title="Ext", user="alice")
    await world.emulator.ci_idle()
    head = pr["head"]["sha"]
    repo = world.emulator.repo(world.repo)
    assert not repo.workflow_runs and not [r for r in repo.check_runs.values() if r.head_sha == head]
    statuses = [e for e in world.receiver.of("status")]
    assert [(d.data["context"], d.data["state"]) for d in statuses] == [
        ("ci/jenkins", "pending"),
        ("ci/lint", "pending"),
        ("ci/jenkins", "failure"),
        ("ci/lint", "failure"),
    ]
    assert {d.data["sender"]["login"] for d in statuses} == {"jenkins"}
    assert not [e for e in world.receiver.events() if e[0] in ("check_run", "workflow_run", "workflow_job")]
    gh = world.gh()
    combined = await gh.getitem(f"/repos/{world.repo}/commits/{head}/status")
    assert combined["state"] == "failure" and combined["total_count"] == 2
    assert combined["statuses"][0]["description"] == "Failing: exit code 3"
    async with world.session.get(combined["statuses"][0]["target_url"]) as response:
        assert response.status == 200
        assert "assert 41 == 42" in await response.text()
    bad, _ = await world.actor("POST", "/ci", {"repo": world.repo, "command": "true", "provider": "circle"})
    assert bad == 422
