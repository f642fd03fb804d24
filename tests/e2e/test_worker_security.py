"""The agent is untrusted (issue 5, acceptance criterion 3): it never sees the installation
token, the token never shows in argv, files, logs or the database, what it writes is checked
before anything is pushed, and under bubblewrap it is confined to its checkout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bot.agents.sandbox import BwrapProbe
from bot.tasks.model import Status
from bot.worker.branches import task_branch

pytestmark = pytest.mark.slow


PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n-----END RSA PRIVATE KEY-----\n"
FAKE_GHP = "ghp_" + "A1b2C3d4E5f6G7h8I9j0" * 2
FAKE_PAT = "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"
FAKE_GHS = "ghs_" + "Zz9" * 12


async def test_the_token_reaches_neither_the_agent_nor_argv_files_logs_or_database(
    e2e, tmp_path: Path, leaks
) -> None:
    script = {
        "first": [
            {"dump_env": "{out}/env.json"},
            {"print": f"the agent prints a token-like value {FAKE_GHS}"},
            {"touch": "{out}/running"},
            {"wait_for": "{out}/go", "timeout": 20},
            {"write": {"src/app.py": "def greet(name):\n    return 'hello ' + name\n"}},
            {"done": "Changed the greeting."},
        ]
    }
    repo = await e2e.add_repo("demo", script=script)
    token = await e2e.github.tokens.installation_token(e2e.installation_id)  # the token the worker will use
    needles = leaks.token_forms(token)
    issue = await e2e.open_issue(repo, "Greet with hello")
    task = await e2e.create_task(repo, issue)
    async with leaks.sampling_cmdlines() as sampler:
        await e2e.start_pool()
        await e2e.wait_until(lambda: (e2e.agent_out / "running").exists(), what="the agent runs")
        during = leaks.files_containing(e2e.data_dir, needles)  # worktree, agent home and prompt exist now
        (e2e.agent_out / "go").touch()
        done = await e2e.wait_for(task.id, lambda t: t.status is Status.REVIEW)

    assert sampler.samples > 10
    issued = [t.token for t in e2e.emulator.issued_tokens()]
    assert token in issued
    every_form = [form for t in issued for form in leaks.token_forms(t)]
    assert sampler.containing(every_form) == []
    assert any(b"fake_agent.py" in cmd for cmd in sampler.seen)  # the sampler saw the agent run

    env = json.loads((e2e.agent_out / "env.json").read_text())
    assert not any(token in value or needle.decode() in value for value in env.values() for needle in needles)
    assert not [key for key in env if key.startswith(("PATCHWRIGHT", "GITHUB", "GH_", "GIT_"))]
    assert Path(env["HOME"]).is_relative_to(e2e.data_dir.resolve()) and env["HOME"] != os.environ.get("HOME")

    assert during == [] and leaks.files_containing(e2e.data_dir, every_form) == []
    configs = [p for p in e2e.data_dir.rglob("config") if p.is_file()]
    assert configs and all(b"extraheader" not in p.read_bytes().lower() for p in configs)
    logs = await e2e.logs_once_written(task.id, "token-like value [REDACTED]")
    assert FAKE_GHS not in logs
    assert not any(form.decode() in logs for form in every_form)
    db_files = [p for p in tmp_path.glob("patchwright.db*") if p.is_file()]
    assert db_files and not any(form in p.read_bytes() for p in db_files for form in every_form)
    assert done.head_sha == await e2e.branch_sha(repo, done.branch)


GUARD_CASES = {
    "key": ({"config/deploy.pem": PEM}, "config/deploy.pem"),
    "ghp": ({"src/settings.py": f"TOKEN = '{FAKE_GHP}'\n"}, "src/settings.py"),
    "pat": ({"notes.txt": f"use {FAKE_PAT}\n"}, "notes.txt"),
    "ghs": ({"src/client.py": f"AUTH = '{FAKE_GHS}'\n"}, "src/client.py"),
    "workflow": ({".github/workflows/ci.yml": "name: pwned\non: [push]\n"}, ".github/workflows/ci.yml"),
}


async def test_secrets_and_protected_paths_fail_the_attempt_and_nothing_is_pushed(e2e) -> None:
    tasks = {}
    for name, (files, _path) in GUARD_CASES.items():
        script = {
            "first": [{"write": {"src/app.py": "# also a normal change\n", **files}}, {"done": "Done."}]
        }
        repo = await e2e.add_repo(f"guard-{name}", script=script)
        issue = await e2e.open_issue(repo, f"Case {name}")
        tasks[name] = (repo, issue, await e2e.create_task(repo, issue))
    await e2e.start_pool(workers=3)
    for name, (repo, issue, task) in tasks.items():
        failed = await e2e.wait_for(task.id, lambda t: t.status is Status.FAILED)
        path = GUARD_CASES[name][1]
        assert path in failed.close_reason and "Refusing to push" in failed.close_reason, failed.close_reason
        assert "Nothing was pushed" in failed.close_reason
        for secret in (FAKE_GHP, FAKE_PAT, FAKE_GHS, "MIIEowIBAAKCAQEA"):
            assert secret not in failed.close_reason
        refs = await e2e.git(repo, "for-each-ref", "--format=%(refname)")
        assert refs.split() == ["refs/heads/main"], refs  # neither the task branch nor a wip branch
        assert failed.pr_number is None and failed.head_sha == ""
        [attempt] = await e2e.store.list_attempts(task.id)
        assert attempt.outcome == "failed" and path in attempt.error
        status = [c for c in e2e.comments(repo, issue) if "patchwright:status" in c]
        assert status and path in status[0] and "retry" in status[0]


def require_bwrap() -> None:
    probe = BwrapProbe()
    if probe.available():
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"bubblewrap does not work here: {probe.problem} (CI=true: a failure, not a skip)")
    pytest.skip(f"bubblewrap does not work here: {probe.problem}")


async def test_under_bubblewrap_the_agent_is_confined_to_its_checkout(e2e, tmp_path: Path) -> None:
    require_bwrap()
    port = e2e.emulator.base_url.rsplit(":", 1)[1]
    outside = tmp_path / "outside.txt"
    escape = e2e.data_dir / "escape.txt"
    db = tmp_path / "patchwright.db"
    probe = {
        "write": [str(outside), str(escape)],
        "read": [str(db)],
        "connect": [f"127.0.0.1:{port}"],
        "report": "probe.json",
    }
    script = {"first": [{"probe": probe}, {"write": {"inside.txt": "written inside\n"}}, {"done": "Probed."}]}
    offline = await e2e.add_repo(
        "offline", script=script, config={"agent": {"timeout_minutes": 1, "network": False}}
    )
    online = await e2e.add_repo(
        "online", script=script, config={"agent": {"timeout_minutes": 1, "network": True}}
    )
    tasks = {}
    for repo in (offline, online):
        issue = await e2e.open_issue(repo, "Probe the sandbox")
        tasks[repo] = await e2e.create_task(repo, issue)
    await e2e.start_pool(sandbox="bwrap")
    reports = {}
    for repo, task in tasks.items():
        done = await e2e.wait_for(task.id, lambda t: t.status is Status.REVIEW)
        branch = task_branch(task.issue_number, task.title)
        assert done.branch == branch
        assert await e2e.read(repo, branch, "inside.txt") == "written inside\n"
        reports[repo] = json.loads(await e2e.read(repo, branch, "probe.json"))
    assert not outside.exists() and not escape.exists()
    for report in reports.values():
        assert report["write"][str(outside)].startswith("OSError")  # read-only root
        masked = report["read"][str(db)]  # the database is masked by /dev/null
        assert masked == "ok: " or masked.startswith("PermissionError"), masked
    assert reports[offline]["connect"][f"127.0.0.1:{port}"].startswith(("OSError", "ConnectionRefusedError"))
    assert reports[online]["connect"][f"127.0.0.1:{port}"] == "ok"
