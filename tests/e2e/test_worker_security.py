"""The agent is untrusted (issue 5, acceptance criterion 3): it never sees the installation
token, the token never shows in argv, files, logs or the database, what it writes is checked
before anything is pushed, and under bubblewrap it is confined to its checkout."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

import pytest

from bot import messages
from bot.agents.sandbox import BwrapProbe
from bot.operations.services import build_services
from bot.tasks.model import Status, utcnow

pytestmark = pytest.mark.slow


PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n-----END RSA PRIVATE KEY-----\n"
FAKE_GHP = "ghp_" + "A1b2C3d4E5f6G7h8I9j0" * 2
FAKE_PAT = "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"
FAKE_GHS = "ghs_" + "Zz9" * 12
# GitHub's stateless installation-token format: ghs_<app id>_<JWT>, ~520 characters with dots.
FAKE_STATELESS = "ghs_1004_eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9." + "eyJpc3MiOjEwMDR9" * 9 + "." + "Sg9_xQ" * 55


@pytest.mark.parametrize("token_format", ["classic", "stateless"])
async def test_the_token_reaches_neither_the_agent_nor_argv_files_logs_or_database(
    e2e, tmp_path: Path, leaks, token_format: str
) -> None:
    e2e.emulator.stateless_tokens = token_format == "stateless"
    printed = FAKE_GHS if token_format == "classic" else FAKE_STATELESS
    script = {
        "first": [
            {"dump_env": "{out}/env.json"},
            {"print": f"the agent prints a token-like value {printed}"},
            {"touch": "{out}/running"},
            {"wait_for": "{out}/go", "timeout": 20},
            {"write": {"src/app.py": "def greet(name):\n    return 'hello ' + name\n"}},
            {"done": "Changed the greeting."},
        ]
    }
    repo = await e2e.add_repo("demo", script=script)
    token = await e2e.github.tokens.installation_token(e2e.installation_id)  # the token the worker will use
    assert (len(token) > 500 and token.count(".") == 2) is (token_format == "stateless")
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
    assert printed not in logs
    assert not any(form.decode() in logs for form in every_form)
    db_files = [p for p in tmp_path.glob("patchwright.db*") if p.is_file()]
    assert db_files and not any(form in p.read_bytes() for p in db_files for form in every_form)
    assert done.head_sha == await e2e.branch_sha(repo, done.branch)


GUARD_CASES = {
    "key": ({"config/deploy.pem": PEM}, "config/deploy.pem"),
    "ghp": ({"src/settings.py": f"TOKEN = '{FAKE_GHP}'\n"}, "src/settings.py"),
    "pat": ({"notes.txt": f"use {FAKE_PAT}\n"}, "notes.txt"),
    "ghs": ({"src/client.py": f"AUTH = '{FAKE_GHS}'\n"}, "src/client.py"),
    "stateless": ({"deploy/token.json": f'{{"token": "{FAKE_STATELESS}"}}\n'}, "deploy/token.json"),
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
        for secret in (FAKE_GHP, FAKE_PAT, FAKE_GHS, FAKE_STATELESS, "MIIEowIBAAKCAQEA"):
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


async def test_under_bubblewrap_the_agent_sees_and_reaches_nothing_of_the_server(
    e2e, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11, criterion 1: the attack chain (read the server's `.env` or key, forge a
    delivery or mint a token) is stopped at its first step; no local service is reachable,
    with `network: true` or `false`; an allowed host is reached through the proxy."""
    require_bwrap()
    # The server runs from a deploy directory holding its .env and key, as `patchwright setup` leaves it.
    server_dir = tmp_path / "srv"
    server_dir.mkdir()
    (server_dir / ".env").write_text("PATCHWRIGHT_WEBHOOK_SECRET=forge-me\n")
    (server_dir / "patchwright.private-key.pem").write_text(PEM)
    elsewhere = tmp_path / "deploy" / ".env"
    elsewhere.parent.mkdir()
    elsewhere.write_text("PATCHWRIGHT_PRIVATE_KEY=mint-me\n")
    monkeypatch.chdir(server_dir)

    async def serve(name: str) -> tuple[asyncio.AbstractServer, int, list[bytes]]:
        got: list[bytes] = []

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.append(await reader.read(100))
            writer.write(f"pong from {name}".encode())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        return server, server.sockets[0].getsockname()[1], got

    bot_port_server, bot_port, bot_got = await serve("the bot")  # stands in for the webhook port and API
    internet, internet_port, internet_got = await serve("the internet")  # allowed by config
    emulator_port = int(e2e.emulator.base_url.rsplit(":", 1)[1])
    db = tmp_path / "patchwright.db"
    pg_socket = "/var/run/postgresql/.s.PGSQL.5432"
    local = [f"127.0.0.1:{p}" for p in (bot_port, emulator_port, 5432, 6379)]
    probe = {
        "read": [
            str(server_dir / ".env"), str(server_dir / "patchwright.private-key.pem"), str(elsewhere),
            str(db), f"/proc/{os.getpid()}/environ", "/etc/shadow",
        ],
        "list": [
            str(server_dir), str(e2e.data_dir), *(str(e2e.data_dir / sub) for sub in ("agents", "homes", "repos", "work")),
            "/proc", "/root", "/home", "/srv",
        ],
        "write": [str(tmp_path / "outside.txt"), "/etc/escape", "/usr/escape"],
        "connect": [*local, "10.0.0.1:80"],
        "unix": [pg_socket],
        "proxy": [*local, "10.0.0.1:80", "169.254.169.254:80", "localhost:5432", f"127.0.0.1:{internet_port}"],
        "report": "probe.json",
    }  # fmt: skip
    script = {"first": [{"probe": probe}, {"write": {"inside.txt": "written inside\n"}}, {"done": "Probed."}]}
    # The operator allows the stand-in for the internet; a repository cannot open the server's own addresses.
    e2e.use_settings(agent_allow_hosts=f"127.0.0.1:{internet_port}")
    allow = ["127.0.0.1:5432", f"127.0.0.1:{bot_port}", "localhost"]
    tasks = {}
    for network in (False, True):
        repo = await e2e.add_repo(
            f"net-{str(network).lower()}",
            script=script,
            config={"agent": {"timeout_minutes": 1, "network": network, "allow_hosts": allow}},
        )
        issue = await e2e.open_issue(repo, "Probe the sandbox")
        tasks[network] = (repo, await e2e.create_task(repo, issue))
    try:
        await e2e.start_pool(sandbox="bwrap")
        reports = {}
        for network, (repo, task) in tasks.items():
            done = await e2e.wait_for(task.id, lambda t: t.status is Status.REVIEW)
            assert await e2e.read(repo, done.branch, "inside.txt") == "written inside\n"
            reports[network] = json.loads(await e2e.read(repo, done.branch, "probe.json"))
    finally:
        for server in (bot_port_server, internet):
            server.close()
            await server.wait_closed()

    assert not (tmp_path / "outside.txt").exists() and not Path("/etc/escape").exists()
    for network, report in reports.items():
        leaked = [path for path, result in report["read"].items() if result.startswith("ok: ") and len(result) > 4]
        assert leaked == [], (network, report["read"])
        for path in (server_dir, Path("/root"), Path("/home"), Path("/srv")):
            listing = report["list"][str(path)]
            # Nothing there but the way down to the interpreter the supervisor runs on, or to the checkout.
            allowed = {_first_part_below(Path(sys.base_prefix), path), _first_part_below(Path(done.branch), path)}
            names = set(listing.removeprefix("ok: ").split()) if listing.startswith("ok: ") else set()
            assert names <= allowed - {None}, (path, listing)
        # Of the data dir only its own directories are there (the mount points of its binds):
        # no other task's checkout, home or prompt, no database, no logs.
        assert report["list"][str(e2e.data_dir)] == "ok: agents homes repos work", report["list"]
        for sub in ("agents", "homes", "repos", "work"):
            assert len(report["list"][str(e2e.data_dir / sub)].removeprefix("ok: ").split()) == 1, report["list"]
        pids = [p for p in report["list"]["/proc"].removeprefix("ok: ").split() if p.isdigit()]
        assert len(pids) < 10, pids  # its own PID namespace: the server's processes are not there
        assert all(not r.startswith("ok") for r in report["write"].values() if r != "ok") and report["write"]["/etc/escape"] != "ok"
        assert all(result != "ok" for result in report["connect"].values()), report["connect"]
        assert report["unix"][pg_socket].startswith(("FileNotFoundError", "ConnectionRefusedError")), report["unix"]
        proxied = report["proxy"]
        for target in [*local, "10.0.0.1:80", "169.254.169.254:80", "localhost:5432"]:
            assert proxied[target] == "HTTP/1.1 403 Forbidden", (network, target, proxied[target])
    assert reports[True]["proxy"][f"127.0.0.1:{internet_port}"] == "tunnel: pong from the internet"
    assert reports[False]["proxy"][f"127.0.0.1:{internet_port}"] == "HTTP/1.1 403 Forbidden"
    assert bot_got == [] and internet_got == [b"ping"]
    logs = await e2e.logs_once_written(tasks[True][1].id, "the sandbox refused a connection to 10.0.0.1:80")
    assert "running the command agent in bubblewrap" in logs
    # Recorded on the attempt and shown on the status comment.
    repo, task = tasks[False]
    [attempt] = await e2e.store.list_attempts(task.id)
    assert f"127.0.0.1:{internet_port}: " in attempt.refused
    assert any("**The sandbox refused** connections of attempt 1 to" in c for c in e2e.comments(repo, task.issue_number))


def _first_part_below(path: Path, parent: Path) -> str | None:
    """The name under ``parent`` on the way to ``path`` (None when ``path`` is not below it)."""
    try:
        return path.resolve().relative_to(parent.resolve()).parts[0]
    except (ValueError, IndexError):
        return None


async def test_without_a_working_bubblewrap_auto_runs_no_agent_and_says_why(
    e2e, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 11, criterion 2: no silent downgrade to running unsandboxed."""
    script = {"first": [{"write": {"pwned.txt": "ran unsandboxed\n"}}, {"done": "Ran."}]}
    repo = await e2e.add_repo("nobwrap", script=script)
    issue = await e2e.open_issue(repo, "Anything")
    task = await e2e.create_task(repo, issue)
    with caplog.at_level(logging.ERROR, logger="bot.worker.runner"):
        await e2e.start_pool(sandbox="auto", bwrap=BwrapProbe("bwrap-is-not-installed-here"))
        failed = await e2e.wait_for(task.id, lambda t: t.status is Status.FAILED)
    assert "bubblewrap does not work on this server" in failed.close_reason
    assert "PATCHWRIGHT_SANDBOX=none" in failed.close_reason
    assert not list(e2e.agent_out.glob("run-*.json"))  # the agent never started
    assert any("no agent will run" in r.getMessage() for r in caplog.records)
    assert any("bubblewrap does not work on this server" in c for c in e2e.comments(repo, issue))


async def test_with_sandbox_none_the_agent_runs_and_everyone_is_told(
    e2e, caplog: pytest.LogCaptureFixture
) -> None:
    script = {"first": [{"write": {"done.txt": "ok\n"}}, {"done": "Ran."}]}
    repo = await e2e.add_repo("none", script=script)
    issue = await e2e.open_issue(repo, "Anything")
    task = await e2e.create_task(repo, issue)
    with caplog.at_level(logging.WARNING, logger="bot.worker.runner"):
        await e2e.start_pool(sandbox="none")
        await e2e.wait_for(task.id, lambda t: t.status is Status.REVIEW)
    assert any(messages.UNSANDBOXED_STARTUP_WARNING in r.getMessage() for r in caplog.records)
    logs = await e2e.logs_once_written(task.id, "WITHOUT a sandbox")
    assert "supervisor.py" not in logs  # the wrapper is not the agent's business
    assert e2e.agent_run(1)["argv"][0].endswith("fake_agent.py")


async def test_the_status_card_says_when_agents_run_unsandboxed(e2e) -> None:
    repo = await e2e.add_repo("card", script={"first": [{"done": "x"}]})
    task = await e2e.create_task(repo, await e2e.open_issue(repo, "Anything"))
    none = build_services(
        e2e.settings.model_copy(update={"sandbox": "none"}),
        e2e.store,
        github_for=e2e.github.for_installation,
        app_slug=e2e.slug,
        clock=utcnow,
    )
    # The server's setting decides what every status comment says, whatever the task.
    unsandboxed = messages.render_status_comment(await none.reporter.card(task))
    sandboxed = messages.render_status_comment(await e2e.services.reporter.card(task))
    assert messages.UNSANDBOXED_NOTE in unsandboxed and messages.UNSANDBOXED_NOTE not in sandboxed


async def test_an_agent_that_writes_past_its_disk_limit_is_stopped(e2e) -> None:
    e2e.use_settings(agent_disk_mb=1)
    script = {"first": [{"write": {"big.txt": "x" * 2_000_000}}, {"hang": None}]}
    repo = await e2e.add_repo("fat", script=script)
    issue = await e2e.open_issue(repo, "Fill the disk")
    task = await e2e.create_task(repo, issue)
    await e2e.start_pool(disk_check_seconds=0.2)
    failed = await e2e.wait_for(task.id, lambda t: t.status is Status.FAILED, timeout=20)
    assert "grew past 1 MB" in failed.close_reason
    assert "PATCHWRIGHT_AGENT_DISK_MB" in failed.close_reason


async def test_a_command_agent_receives_exactly_the_variables_agent_env_names(e2e, tmp_path: Path, leaks) -> None:
    """Issue 12, criterion 4 (command preset): the keys reach the agent, and nowhere else."""
    key = "sk-ant-api03-" + "Q7x" * 20
    other = "sk-proj-" + "Z9y" * 20
    script = {
        "first": [
            {"dump_env": "{out}/env.json"},
            {"print": f"the agent echoes {key}"},
            {"write": {"done.txt": "ok\n"}},
            {"done": "Done."},
        ]
    }
    repo = await e2e.add_repo("envs", script=script, config={"agent": {"env": ["ANTHROPIC_API_KEY"]}})
    issue = await e2e.open_issue(repo, "Use the key")
    task = await e2e.create_task(repo, issue)
    environ = {"PATH": os.environ["PATH"], "ANTHROPIC_API_KEY": key, "OPENAI_API_KEY": other}
    async with leaks.sampling_cmdlines() as sampler:
        pool = await e2e.start_pool(environ=environ)
        await e2e.wait_for(task.id, lambda t: t.status is Status.REVIEW)
        # The task is in review before the worker removes the checkout, whose .fake-agent.json
        # (the repository's own file) holds the key the agent echoes: scan once it is gone.
        await e2e.wait_until(lambda: not pool.running, what="the attempt wrapped up")
    env = json.loads((e2e.agent_out / "env.json").read_text())
    assert env["ANTHROPIC_API_KEY"] == key and "OPENAI_API_KEY" not in env
    needles = [key.encode(), other.encode()]
    assert sampler.containing(needles) == []
    logs = await e2e.logs_once_written(task.id, "the agent echoes [REDACTED]")
    assert key not in logs
    assert leaks.files_containing(e2e.data_dir, needles) == []
    db_files = [p for p in tmp_path.glob("patchwright.db*") if p.is_file()]
    assert not any(n in p.read_bytes() for p in db_files for n in needles)


async def test_agent_env_asking_for_a_variable_the_server_does_not_pass_fails_clearly(e2e) -> None:
    repo = await e2e.add_repo("greedy", script={"first": [{"done": "x"}]}, config={"agent": {"env": ["AWS_SECRET_ACCESS_KEY"]}})
    issue = await e2e.open_issue(repo, "Exfiltrate")
    task = await e2e.create_task(repo, issue)
    await e2e.start_pool(environ={"PATH": os.environ["PATH"], "AWS_SECRET_ACCESS_KEY": "never"})
    failed = await e2e.wait_for(task.id, lambda t: t.status is Status.FAILED)
    assert "AWS_SECRET_ACCESS_KEY" in failed.close_reason and "PATCHWRIGHT_AGENT_ENV" in failed.close_reason
    assert not list(e2e.agent_out.glob("run-*.json"))


GREETING = "def greet(name):\n    return 'hello ' + name\n"


async def test_under_bubblewrap_the_agent_uses_git_in_its_checkout_and_nothing_it_plants_runs(
    e2e, tmp_path: Path
) -> None:
    """Issue 12, criterion 2: in bubblewrap the agent runs `git status`, `git add`, `git commit`,
    `git stash`, `git diff` in its checkout and they succeed; the bot pushes exactly the files
    it left (committed by the agent or not), in a commit of its own; the hooks, config and
    alternates it plants in its `.git` never run in the bot's commands; and it still cannot
    read or write the cache (but its objects, read-only), another task's checkout or the data
    dir."""
    require_bwrap()
    marker = tmp_path / "the-bot-ran-the-agents-code"
    hook = f"#!/bin/sh\necho \"$0 $*\" >> '{marker}'\ncat\n"
    name = "gitting"
    cache = e2e.data_dir / "repos" / "octo-org" / f"{name}.git"
    other = e2e.data_dir / "work" / "task_other"  # another task's checkout, as it is during its run
    (other / ".git" / "objects").mkdir(parents=True)
    (other / "work.txt").write_text("another task's work\n")
    writes = [cache / "objects" / "pwned", cache / "config", other / "pwned", e2e.data_dir / "pwned"]
    git_runs = [
        ["git", "status", "--porcelain"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "agent: greet with hello"],
        ["git", "log", "-1", "--format=%s"],
        ["git", "stash", "list"],
    ]
    script = {
        "first": [
            {"write": {"src/app.py": GREETING, "notes.md": "written and committed by the agent\n"}},
            *({"run": argv, "check": True} for argv in git_runs),
            {"write": {"stashed.txt": "stashed, then popped\n"}},
            {"run": ["git", "stash", "push", "-u", "-q", "--", "stashed.txt"], "check": True},
            {"run": ["git", "stash", "pop", "-q"], "check": True},
            {"write": {"later.txt": "left uncommitted by the agent\n"}},
            {"run": ["git", "diff", "HEAD~1", "--stat"], "check": True},
            {"run": ["git", "status", "--porcelain"], "check": True},
            # What it plants for the bot: hooks, fsmonitor, a filter, includes and alternates.
            {"write": {f".git/hooks/{h}": hook for h in ("pre-commit", "post-commit", "pre-push", "reference-transaction", "post-index-change")}},
            {"write": {".git/planted/hook": hook, ".git/planted/include": f"[core]\n\tfsmonitor = {marker}\n"}},
            {"run": ["chmod", "-R", "+x", ".git/hooks", ".git/planted"], "check": True},
            {"run": ["git", "config", "core.fsmonitor", ".git/planted/hook"], "check": True},
            {"run": ["git", "config", "filter.evil.clean", ".git/planted/hook"], "check": True},
            {"run": ["git", "config", "diff.external", ".git/planted/hook"], "check": True},
            {"run": ["git", "config", "credential.helper", "!.git/planted/hook"], "check": True},
            {"run": ["git", "config", "includeIf.gitdir:/.path", ".git/planted/include"], "check": True},
            {"write": {".gitattributes": "* filter=evil diff=evil merge=evil\n"}},
            {"append": {".git/objects/info/alternates": f"{other / '.git' / 'objects'}\n{e2e.data_dir}\n"}},
            {
                "probe": {
                    "read": [str(cache / "config"), str(cache / "HEAD"), str(other / "work.txt"), str(tmp_path / "patchwright.db")],
                    "list": [str(cache), str(e2e.data_dir / "work"), str(other)],
                    "report": "probe.json",
                }
            },
            # Writes outside the checkout fail or land in the sandbox's own /tmp (tmp_path is there).
            {"probe": {"write": [str(p) for p in writes], "report": "probe-writes.json"}},
            {"done": "Greeted with hello, using git."},
        ]
    }  # fmt: skip
    repo = await e2e.add_repo(name, script=script)
    issue = await e2e.open_issue(repo, "Greet with hello")
    task = await e2e.create_task(repo, issue)
    await e2e.start_pool(sandbox="bwrap")
    done = await e2e.wait_for(task.id, lambda t: t.status is Status.REVIEW or t.status is Status.FAILED, timeout=60)
    assert done.status is Status.REVIEW, done.last_error_signature

    runs = json.loads(await e2e.read(repo, done.branch, "run-report.json"))
    assert [r["argv"] for r in runs][: len(git_runs)] == git_runs
    failed = [r for r in runs if r["exit"] != 0]
    assert failed == [], failed
    assert runs[0]["stdout"].splitlines() == [" M src/app.py", "?? notes.md"]
    assert runs[3]["stdout"].strip() == "agent: greet with hello"
    diff, status = runs[7], runs[8]  # after stash push and pop
    assert diff["argv"][:2] == ["git", "diff"] and "src/app.py" in diff["stdout"] and "notes.md" in diff["stdout"]
    assert status["stdout"].splitlines() == [" M run-report.json", "?? later.txt", "?? stashed.txt"]

    # The bot pushed the files as the agent left them, in its own commit.
    for path, content in {
        "src/app.py": GREETING,
        "notes.md": "written and committed by the agent\n",
        "stashed.txt": "stashed, then popped\n",
        "later.txt": "left uncommitted by the agent\n",
    }.items():
        assert await e2e.read(repo, done.branch, path) == content, path
    assert done.head_sha == await e2e.branch_sha(repo, done.branch)
    log = await e2e.git(repo, "log", "-1", "--format=%an|%s", done.branch)
    assert log.startswith(f"{e2e.bot_login}|") and "agent: greet with hello" not in log
    tree = await e2e.git(repo, "ls-tree", "-r", "--name-only", done.branch)
    assert not [p for p in tree.split() if p == ".git" or p.startswith(".git/")]
    assert not marker.exists(), marker.read_text()

    probe = json.loads(await e2e.read(repo, done.branch, "probe.json"))
    assert [p for p, r in probe["read"].items() if r.startswith("ok")] == [], probe["read"]
    assert probe["list"][str(cache)] == "ok: objects", probe["list"]  # of the cache, its objects only
    assert probe["list"][str(e2e.data_dir / "work")] == f"ok: {task.id}", probe["list"]
    assert probe["list"][str(other)].startswith("FileNotFoundError"), probe["list"]
    writes_seen = json.loads(await e2e.read(repo, done.branch, "probe-writes.json"))["write"]
    assert writes_seen[str(cache / "objects" / "pwned")] == "OSError: Read-only file system", writes_seen
    assert not [p for p in writes if p.exists() and p.name == "pwned"]
    assert "written by the fake agent" not in (cache / "config").read_text()
    assert (other / "work.txt").read_text() == "another task's work\n"
