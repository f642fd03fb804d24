"""The emulator's CI runner: real checkouts, real processes, Actions-shaped logs."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bot.sandbox.ci_runner import CIResult, log_timestamp, run_ci, step_title
from bot.sandbox.gitrepos import GitRepos

AUTHOR = ("Tester", "tester@example.com")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z ")
STEP_NAMES = ["Set up job", "Checkout"]


@pytest.fixture
async def repo(tmp_path: Path) -> tuple[GitRepos, str]:
    repos = GitRepos(tmp_path / "repos")
    sha = await repos.create(
        "octo", "ci", files={"README.md": "first version\n", "run.sh": "echo from-script\n"}
    )
    return repos, sha


@pytest.fixture
def workdir_root(tmp_path: Path) -> Path:
    root = tmp_path / "ci-work"
    root.mkdir()
    return root


def lines_of(result: CIResult) -> list[str]:
    """The log lines without their timestamps (asserting every line has one)."""
    out = []
    for line in result.log.rstrip("\n").split("\n"):
        assert STAMP.match(line), line
        out.append(line.split(" ", 1)[1])
    return out


def failed_step_section(log: str) -> list[str]:
    """What SPEC §4.3's reader does: the last ``##[group]Run`` section up to the next group."""
    lines = [line.split(" ", 1)[1] for line in log.rstrip("\n").split("\n")]
    starts = [i for i, line in enumerate(lines) if line.startswith("##[group]Run ")]
    start = starts[-1]
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith("##[group]")), len(lines)
    )
    return lines[start:end]


def process_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie waiting for its reaper


async def test_passing_command(repo: tuple[GitRepos, str], workdir_root: Path) -> None:
    repos, sha = repo
    command = 'echo "hello from CI"\ncat README.md\nbash run.sh\necho "ci=$CI extra=$EXTRA"'
    result = await run_ci(
        repos.path("octo", "ci"), sha, command, env={"EXTRA": "yes"}, workdir_root=workdir_root
    )

    assert result.conclusion == "success" and result.exit_code == 0 and result.sha == sha
    assert [s.name for s in result.steps] == [
        *STEP_NAMES,
        'Run echo "hello from CI"',
        "Complete job",
    ]
    assert [s.number for s in result.steps] == [1, 2, 3, 4]
    assert all(s.conclusion == "success" for s in result.steps)
    assert all(s.started_at <= s.completed_at for s in result.steps)
    assert (
        result.started_at
        <= result.steps[0].started_at
        <= result.steps[-1].completed_at
        <= result.completed_at
    )

    lines = lines_of(result)
    start = lines.index('##[group]Run echo "hello from CI"')
    end = lines.index("##[endgroup]", start)
    assert lines[start + 1 : end] == [*command.split("\n"), "shell: /usr/bin/bash -e {0}"]
    output = lines[end + 1 : lines.index("Cleaning up orphan processes")]
    assert output == ["hello from CI", "first version", "from-script", "ci=true extra=yes"]
    assert not any(line.startswith("##[error]") for line in lines)
    assert "##[group]Run actions/checkout@v4" in lines
    assert any(line.startswith("HEAD is now at " + sha[:7]) for line in lines)
    assert list(workdir_root.iterdir()) == []


async def test_environment_is_minimal(repo: tuple[GitRepos, str], workdir_root: Path) -> None:
    repos, sha = repo
    result = await run_ci(
        repos.path("octo", "ci"),
        sha,
        "env | cut -d= -f1 | sort; echo home=$HOME",
        workdir_root=workdir_root,
    )
    assert result.conclusion == "success"
    output = failed_step_section(result.log)
    names = {line for line in output if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", line)}
    assert {"PATH", "HOME", "LANG", "CI"} <= names
    assert names <= {"PATH", "HOME", "LANG", "CI", "TMPDIR", "PWD", "SHLVL", "_", "OLDPWD"}
    home = next(line for line in output if line.startswith("home="))
    assert home.startswith(f"home={workdir_root}")


async def test_runs_the_given_commit_not_the_branch_tip(
    repo: tuple[GitRepos, str], workdir_root: Path
) -> None:
    repos, first = repo
    second = await repos.commit_files(
        "octo",
        "ci",
        branch="main",
        files={"README.md": "second version\n"},
        message="v2",
        author=AUTHOR,
    )
    path = repos.path("octo", "ci")
    old, new = await asyncio.gather(
        run_ci(path, first, "cat README.md", workdir_root=workdir_root),
        run_ci(path, second, "cat README.md", workdir_root=workdir_root),
    )
    assert "first version" in lines_of(old) and "second version" not in lines_of(old)
    assert "second version" in lines_of(new)
    assert list(workdir_root.iterdir()) == []


async def test_failing_command(repo: tuple[GitRepos, str], workdir_root: Path) -> None:
    repos, sha = repo
    command = "echo 'collected 3 items'\necho 'AssertionError: boom' >&2\nexit 3"
    result = await run_ci(repos.path("octo", "ci"), sha, command, workdir_root=workdir_root)

    assert result.conclusion == "failure" and result.exit_code == 3
    assert [s.conclusion for s in result.steps] == ["success", "success", "failure", "success"]
    section = failed_step_section(result.log)
    assert section[0] == "##[group]Run echo 'collected 3 items'"
    endgroup = section.index("##[endgroup]")
    assert section[endgroup + 1 : endgroup + 4] == [
        "collected 3 items",
        "AssertionError: boom",
        "##[error]Process completed with exit code 3.",
    ]
    assert list(workdir_root.iterdir()) == []


async def test_bash_e_stops_at_the_first_failing_line(
    repo: tuple[GitRepos, str], workdir_root: Path
) -> None:
    repos, sha = repo
    result = await run_ci(
        repos.path("octo", "ci"), sha, "false\necho not-reached", workdir_root=workdir_root
    )
    assert result.conclusion == "failure" and result.exit_code == 1
    assert "not-reached" not in lines_of(result)[-5:]
    assert "##[error]Process completed with exit code 1." in lines_of(result)


async def test_hanging_command_times_out_and_its_processes_die(
    repo: tuple[GitRepos, str], workdir_root: Path
) -> None:
    repos, sha = repo
    command = 'sleep 300 &\necho "child=$!"\necho started\nsleep 300'
    began = time.monotonic()
    result = await run_ci(
        repos.path("octo", "ci"), sha, command, timeout=1, workdir_root=workdir_root
    )
    elapsed = time.monotonic() - began

    assert result.conclusion == "timed_out" and result.exit_code is None
    assert 1 <= elapsed < 6
    assert result.steps[2].conclusion == "failure"
    lines = lines_of(result)
    assert "started" in lines
    assert any(
        line.startswith("##[error]The action 'Run sleep 300 &' has timed out") for line in lines
    )
    child = int(next(line for line in lines if line.startswith("child=")).split("=")[1])
    for _ in range(50):
        if process_gone(child):
            break
        await asyncio.sleep(0.05)
    assert process_gone(child)
    assert list(workdir_root.iterdir()) == []


async def test_background_orphans_do_not_keep_the_job_alive(
    repo: tuple[GitRepos, str], workdir_root: Path
) -> None:
    repos, sha = repo
    began = time.monotonic()
    result = await run_ci(
        repos.path("octo", "ci"),
        sha,
        "sleep 300 &\necho done",
        timeout=30,
        workdir_root=workdir_root,
    )
    assert result.conclusion == "success" and "done" in lines_of(result)
    assert time.monotonic() - began < 10


async def test_unknown_commit_fails_at_checkout(
    repo: tuple[GitRepos, str], workdir_root: Path
) -> None:
    repos, _ = repo
    missing = "1" * 40
    result = await run_ci(
        repos.path("octo", "ci"), missing, "echo never", workdir_root=workdir_root
    )
    assert result.conclusion == "failure" and result.exit_code is None
    assert [s.conclusion for s in result.steps] == ["success", "failure", "skipped", "success"]
    lines = lines_of(result)
    assert "never" not in lines
    assert any(line.startswith("##[error]The process '/usr/bin/git' failed") for line in lines)
    assert list(workdir_root.iterdir()) == []


async def test_long_lines_and_output_truncation_keep_the_tail(
    repo: tuple[GitRepos, str], workdir_root: Path
) -> None:
    repos, sha = repo
    result = await run_ci(
        repos.path("octo", "ci"),
        sha,
        "head -c 200000 /dev/zero | tr '\\0' a; echo\nseq 1 20000\nprintf no-newline-at-end",
        max_output_bytes=50_000,
        workdir_root=workdir_root,
    )
    assert result.conclusion == "success"
    lines = lines_of(result)
    assert any("earlier output lines were truncated" in line for line in lines)
    assert "20000" in lines and "no-newline-at-end" in lines
    assert "a" * 200000 not in lines  # the head was dropped to respect the limit
    assert len(result.log) < 120_000


async def test_cancelled_run_cleans_up(repo: tuple[GitRepos, str], workdir_root: Path) -> None:
    repos, sha = repo
    task = asyncio.ensure_future(
        run_ci(
            repos.path("octo", "ci"),
            sha,
            "echo $$ > ../pid; sleep 300",
            timeout=60,
            workdir_root=workdir_root,
        )
    )
    pid_file = None
    for _ in range(200):
        found = list(workdir_root.glob("*/pid"))
        if found and found[0].read_text().strip():
            pid_file = found[0]
            break
        await asyncio.sleep(0.05)
    assert pid_file is not None
    pid = int(pid_file.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert process_gone(pid)
    assert list(workdir_root.iterdir()) == []


def test_log_timestamp_and_step_title() -> None:
    moment = datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
    assert log_timestamp(moment) == "2024-01-02T03:04:05.1234560Z"
    assert (
        log_timestamp(datetime(2024, 1, 1, tzinfo=timezone.utc)) == "2024-01-01T00:00:00.0000000Z"
    )
    assert step_title("pytest -q") == "Run pytest -q"
    assert step_title("\n  make test\nmake lint\n") == "Run make test"
