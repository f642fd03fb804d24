"""The CI actor: runs a command on pushes and reports checks, Actions runs/jobs/logs, statuses."""

from __future__ import annotations

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
    assert combined["state"] == "failure" and sorted(s["context"] for s in combined["statuses"]) == [
        "lint",
        "test",
    ]

    events = [e for e in world.receiver.events() if e[0] != "pull_request"]
    assert events == [
        ("workflow_run", "requested"),
        ("check_run", "created"),
        ("workflow_job", "queued"),
        ("check_run", "created"),
        ("workflow_job", "queued"),
        ("workflow_job", "in_progress"),
        ("workflow_job", "in_progress"),
        ("workflow_job", "completed"),
        ("workflow_job", "completed"),
        ("check_run", "completed"),
        ("check_run", "completed"),
        ("check_suite", "completed"),
        ("workflow_run", "completed"),
        ("status", None),
        ("status", None),
    ]
    suite = world.receiver.of("check_suite", "completed")[0].data["check_suite"]
    assert suite["conclusion"] == "failure" and suite["head_sha"] == head
    assert suite["pull_requests"][0]["number"] == pr["number"]


async def test_passing_command_reports_success_and_rerun(world):
    pr = await _pr_with_ci(world, "test -f x.txt && echo ok", ["ci"])
    await world.emulator.ci_idle()
    gh = world.gh()
    runs = await gh.getitem(f"/repos/{world.repo}/commits/{pr['head']['sha']}/check-runs")
    assert [(r["name"], r["status"], r["conclusion"]) for r in runs["check_runs"]] == [
        ("ci", "completed", "success")
    ]
    status = await gh.getitem(f"/repos/{world.repo}/commits/{pr['head']['sha']}/status")
    assert status["state"] == "success"
    await world.forget_hooks()
    job_id = runs["check_runs"][0]["id"]
    assert await gh.post(f"/repos/{world.repo}/actions/jobs/{job_id}/rerun", data={}) == {}
    await world.emulator.ci_idle()
    assert ("workflow_run", "completed") in world.receiver.events()
    assert len(world.emulator.repo(world.repo).workflow_runs) == 2

    # a push to the default branch runs CI too
    await world.forget_hooks()
    await world.emulator.push_commit(world.repo, branch="main", files={"x.txt": "main\n"}, user="alice")
    await world.emulator.ci_idle()
    runs = await gh.getitem(f"/repos/{world.repo}/actions/runs?branch=main")
    assert runs["total_count"] == 1 and runs["workflow_runs"][0]["event"] == "push"
    assert runs["workflow_runs"][0]["conclusion"] == "success"
