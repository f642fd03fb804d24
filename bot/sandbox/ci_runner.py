"""Run a repository's CI command on one commit, the way a GitHub Actions job would.

The commit is checked out into a throw-away ``git clone --shared`` of the bare repository
(always removed afterwards); the command runs as ``bash -e -c <command>`` in its own process
group with a minimal environment, and the whole group is killed at the timeout. The job log
has GitHub Actions' shape, which is what the bot's CI-log reader (SPEC §4.3) parses:

    2024-01-01T00:00:00.0000000Z ##[group]Run pytest -q
    2024-01-01T00:00:00.0000000Z pytest -q
    2024-01-01T00:00:00.0000000Z shell: /usr/bin/bash -e {0}
    2024-01-01T00:00:00.0000000Z ##[endgroup]
    2024-01-01T00:00:01.1234567Z …output…
    2024-01-01T00:00:01.2345678Z ##[error]Process completed with exit code 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .gitrepos import DEFAULT_PATH, GitError, run_git

RUNNER_VERSION = "2.317.0"
CHECKOUT_ACTION = "actions/checkout@v4"
SHELL_LINE = "shell: /usr/bin/bash -e {0}"
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class StepResult:
    number: int
    name: str
    conclusion: str  # success|failure|skipped
    started_at: datetime
    completed_at: datetime


@dataclass(frozen=True)
class CIResult:
    sha: str
    exit_code: int | None  # None when the command did not run to an exit (timeout, no checkout)
    conclusion: str  # success|failure|timed_out
    steps: tuple[StepResult, ...]
    log: str
    started_at: datetime
    completed_at: datetime


def log_timestamp(moment: datetime) -> str:
    """Actions' line prefix: ``2024-01-01T00:00:00.0000000Z`` (UTC, 7 fractional digits)."""
    moment = moment.astimezone(timezone.utc)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}0Z"


def step_title(command: str) -> str:
    """The step name Actions shows for ``run: command``: ``Run`` + its first non-empty line."""
    first = next((line.strip() for line in command.splitlines() if line.strip()), command.strip())
    return f"Run {first}"


class JobLog:
    """Accumulates timestamped log lines; keeps at most ``max_output_bytes`` of command output
    (the tail, which is what readers of failed steps want)."""

    def __init__(self, clock: Callable[[], datetime], max_output_bytes: int) -> None:
        self._clock = clock
        self._lines: list[str] = []
        self._output: deque[str] = deque()
        self._output_bytes = 0
        self._dropped = 0
        self._max_output_bytes = max_output_bytes

    def line(self, text: str) -> None:
        self._flush_output()
        self._lines.append(f"{log_timestamp(self._clock())} {text}")

    def output_line(self, text: str) -> None:
        stamped = f"{log_timestamp(self._clock())} {text}"
        self._output.append(stamped)
        self._output_bytes += len(stamped) + 1
        while self._output_bytes > self._max_output_bytes and len(self._output) > 1:
            self._output_bytes -= len(self._output.popleft()) + 1
            self._dropped += 1

    def _flush_output(self) -> None:
        if self._dropped:
            first = (
                self._output[0].split(" ", 1)[0] if self._output else log_timestamp(self._clock())
            )
            self._lines.append(
                f"{first} ##[warning]{self._dropped} earlier output lines were truncated."
            )
            self._dropped = 0
        self._lines.extend(self._output)
        self._output.clear()
        self._output_bytes = 0

    def text(self) -> str:
        self._flush_output()
        return "\n".join(self._lines) + "\n" if self._lines else ""


def ci_env(home: Path, tmp: Path, extra: Mapping[str, str] | None) -> dict[str, str]:
    """The command's environment: PATH, HOME and TMPDIR in the job's temp dir, LANG,
    CI=true, plus ``extra``."""
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        "CI": "true",
    }
    if extra:
        env.update(extra)
    return env


async def run_ci(
    repo_path: Path,
    sha: str,
    command: str,
    *,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    workdir_root: Path | None = None,
    job_name: str = "ci",
    max_output_bytes: int = 8 * 1024 * 1024,
    clock: Callable[[], datetime] | None = None,
) -> CIResult:
    """Check out ``sha`` of the bare repository ``repo_path`` and run ``command`` on it as one
    Actions job with the steps "Set up job", "Checkout", "Run <command>", "Complete job"."""
    now = clock or (lambda: datetime.now(timezone.utc))
    job_log = JobLog(now, max_output_bytes)
    steps: list[StepResult] = []
    started_at = now()
    base = Path(tempfile.mkdtemp(prefix="pw-ci-", dir=workdir_root))
    exit_code: int | None = None
    conclusion = "success"
    try:
        # 1. Set up job
        step_start = now()
        job_log.line(f"Current runner version: '{RUNNER_VERSION}'")
        job_log.line("Runner name: 'patchwright-emulator'")
        job_log.line("##[group]Operating System")
        job_log.line(f"{sys.platform} (patchwright emulator)")
        job_log.line("##[endgroup]")
        job_log.line("Secret source: None")
        job_log.line("Prepare workflow directory")
        job_log.line(f"Complete job name: {job_name}")
        work, home, tmp = base / "work", base / "home", base / "tmp"
        home.mkdir()
        tmp.mkdir()
        steps.append(StepResult(1, "Set up job", "success", step_start, now()))

        # 2. Checkout
        step_start = now()
        job_log.line(f"##[group]Run {CHECKOUT_ACTION}")
        job_log.line("with:")
        job_log.line(f"  ref: {sha}")
        job_log.line("##[endgroup]")
        checkout_error = await _checkout(Path(repo_path), sha, work, job_log)
        if checkout_error is not None:
            job_log.line(f"##[error]{checkout_error}")
            conclusion = "failure"
        steps.append(StepResult(2, "Checkout", conclusion, step_start, now()))

        # 3. Run <command>
        title = step_title(command)
        step_start = now()
        if conclusion == "success":
            job_log.line(f"##[group]{title}")
            for script_line in command.strip("\n").splitlines() or [""]:
                job_log.line(script_line)
            job_log.line(SHELL_LINE)
            job_log.line("##[endgroup]")
            exit_code, timed_out = await _run_command(
                command, work, ci_env(home, tmp, env), timeout, job_log
            )
            if timed_out:
                conclusion = "timed_out"
                job_log.line(
                    f"##[error]The action '{title}' has timed out after {_duration(timeout)}."
                )
            elif exit_code != 0:
                conclusion = "failure"
                job_log.line(f"##[error]Process completed with exit code {exit_code}.")
            run_conclusion = "success" if conclusion == "success" else "failure"
        else:
            run_conclusion = "skipped"
        steps.append(StepResult(3, title, run_conclusion, step_start, now()))

        # 4. Complete job
        step_start = now()
        job_log.line("Cleaning up orphan processes")
        steps.append(StepResult(4, "Complete job", "success", step_start, now()))
    finally:
        await asyncio.shield(asyncio.to_thread(_remove_tree, base))
    return CIResult(
        sha=sha,
        exit_code=exit_code,
        conclusion=conclusion,
        steps=tuple(steps),
        log=job_log.text(),
        started_at=started_at,
        completed_at=now(),
    )


async def _checkout(repo_path: Path, sha: str, work: Path, job_log: JobLog) -> str | None:
    """Clone (sharing objects) and check out ``sha`` detached; return an error text or None."""
    job_log.line(f"Syncing repository: {repo_path.name.removesuffix('.git')}")
    try:
        await run_git(
            ["clone", "--shared", "--no-checkout", "--quiet", "--", str(repo_path), str(work)]
        )
        await run_git(
            ["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", sha, "--"],
            cwd=work,
        )
        described = await run_git(["log", "-1", "--format=%h %s"], cwd=work)
    except GitError as exc:
        for line in exc.stderr.strip().splitlines():
            job_log.line(line)
        return f"The process '/usr/bin/git' failed with exit code {exc.returncode}"
    job_log.line(f"HEAD is now at {described.text.strip()}")
    return None


async def _run_command(
    command: str, cwd: Path, env: Mapping[str, str], timeout: float, job_log: JobLog
) -> tuple[int | None, bool]:
    """Run ``bash -e -c command`` in its own process group, streaming its output (stdout and
    stderr merged) into the log. Returns (exit code, timed out)."""
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "--noprofile",
        "--norc",
        "-e",
        "-c",
        command,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    reader = asyncio.ensure_future(_pump_lines(proc.stdout, job_log))
    timed_out = False
    try:
        if not await _wait_exit(proc, timeout):
            timed_out = True
        # Kill the whole group: on timeout the command, otherwise any orphans it left
        # behind (e.g. `sleep 100 &`), which would also hold the output pipe open.
        _kill_group(proc.pid)
        try:
            await asyncio.wait_for(asyncio.shield(reader), 5)
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            pass  # something escaped the process group and keeps the pipe: stop reading
    finally:
        if proc.returncode is None:  # cancelled or failed midway
            _kill_group(proc.pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
        if not reader.done():
            reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    if timed_out:
        return None, True
    code = proc.returncode if proc.returncode is not None else -1
    return (128 - code if code < 0 else code), False


async def _wait_exit(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    """Wait until the process itself has exited (``Process.wait`` would also wait for every
    holder of its pipes); False at the timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    delay = 0.005
    while proc.returncode is None:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)
    return True


async def _pump_lines(stream: asyncio.StreamReader, job_log: JobLog) -> None:
    """Split a byte stream into lines (any length) and add each to the log as output."""
    pending = b""
    while chunk := await stream.read(_CHUNK):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            job_log.output_line(line.rstrip(b"\r").decode("utf-8", "replace"))
    if pending:
        job_log.output_line(pending.rstrip(b"\r").decode("utf-8", "replace"))


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute" + ("s" if minutes != 1 else "")
    return f"{seconds:g} seconds"


def _remove_tree(path: Path) -> None:
    """Remove a job directory, including read-only files and directories the command made."""

    def make_writable_and_retry(func: Callable[[str], object], target: str, *_: object) -> None:
        parent = os.path.dirname(target)
        for item in (parent, target):
            with contextlib.suppress(OSError):
                os.chmod(item, os.stat(item).st_mode | stat.S_IWUSR | stat.S_IXUSR | stat.S_IRUSR)
        func(target)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=make_writable_and_retry)
    else:
        shutil.rmtree(path, onerror=make_writable_and_retry)
