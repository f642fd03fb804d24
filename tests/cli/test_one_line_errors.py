"""Every failure a user can cause by configuration or environment ends with one line on stderr
naming the cause and the fix, and a documented exit code — never a traceback (issue 15). Each
case runs the real command line (``python -m bot …``) in a subprocess; the GitHub-facing ones
against the local GitHub emulator."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.errors import EXIT_CODES, ExitCode
from bot.sandbox.auth import generate_key_pair
from bot.sandbox.emulator import Emulator

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "one-line-test-secret"
#: Has the PEM markers, so it reads as a key, but its body is no key at all.
CORRUPT_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAnotakeyatall\n-----END RSA PRIVATE KEY-----\n"
WARNING = re.compile(r"^(patchwright: warning: |! |\S+ \S+ WARNING )")


@pytest.fixture(scope="module")
def key_pairs() -> tuple[tuple[str, str], tuple[str, str]]:
    """Two (private, public) PEM pairs: the App's, and another that is no key of the App."""
    return generate_key_pair(), generate_key_pair()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(tmp_path: Path) -> dict[str, str]:
    """Nothing of this process's environment but PATH: only what a case sets counts."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO_ROOT),
        "PATCHWRIGHT_DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
        "PATCHWRIGHT_DATA_DIR": str(tmp_path / "data"),
        "PATCHWRIGHT_PORT": "0",
        "PATCHWRIGHT_WORKERS": "0",
        "PATCHWRIGHT_LOG_LEVEL": "WARNING",
    }


def run_cli(tmp_path: Path, env: Mapping[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=tmp_path, env=dict(env), capture_output=True, text=True,
        timeout=timeout,
    )


def assert_one_line(proc: subprocess.CompletedProcess[str], code: ExitCode, *, mentions: str) -> str:
    """The exit code, no traceback, and exactly one line on stderr besides warnings."""
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if not WARNING.match(line)]
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert len(errors) == 1, proc.stderr
    assert mentions in errors[0], errors[0]
    return errors[0]


@dataclass(frozen=True)
class World:
    tmp_path: Path
    github_url: str
    app_id: int
    slug: str
    private_key: str
    other_key: str


def app_env(world: World, **extra: str) -> dict[str, str]:
    env = base_env(world.tmp_path)
    env.update(
        PATCHWRIGHT_APP_ID=str(world.app_id),
        PATCHWRIGHT_PRIVATE_KEY=world.private_key,
        PATCHWRIGHT_WEBHOOK_SECRET=SECRET,
        PATCHWRIGHT_GITHUB_URL=world.github_url,
    )
    env.update(extra)
    return env


# -- without GitHub ------------------------------------------------------------------------

Case = Callable[[Path], tuple[list[str], dict[str, str]]]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**base_env(tmp_path), **extra}


def _copied_env_example(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    (tmp_path / ".env").write_text((REPO_ROOT / ".env.example").read_text())
    env = _env(tmp_path)
    del env["PATCHWRIGHT_DATABASE_URL"], env["PATCHWRIGHT_DATA_DIR"]
    return ["serve"], env


def _replay_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "issues" / "labeled.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


OFFLINE_CASES: dict[str, tuple[Case, ExitCode, str]] = {
    "env-example-copied-serve": (_copied_env_example, ExitCode.CONFIG, "PATCHWRIGHT_WEBHOOK_SECRET"),
    "corrupt-key": (
        lambda t: (["serve"], _env(t, PATCHWRIGHT_APP_ID="1", PATCHWRIGHT_PRIVATE_KEY=CORRUPT_KEY,
                                   PATCHWRIGHT_WEBHOOK_SECRET=SECRET,
                                   PATCHWRIGHT_GITHUB_URL=f"http://127.0.0.1:{closed_port()}")),
        ExitCode.CONFIG, "damaged private key",
    ),
    "unreadable-key-file": (
        lambda t: (["serve"], _env(t, PATCHWRIGHT_APP_ID="1", PATCHWRIGHT_WEBHOOK_SECRET=SECRET,
                                   PATCHWRIGHT_PRIVATE_KEY_PATH=str(t / "absent.pem"))),
        ExitCode.CONFIG, "PATCHWRIGHT_PRIVATE_KEY_PATH",
    ),
    "database-down": (
        lambda t: (["migrate"], _env(t, PATCHWRIGHT_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{closed_port()}/test")),
        ExitCode.DATABASE, "PATCHWRIGHT_DATABASE_URL",
    ),
    "unsupported-database-url": (
        lambda t: (["migrate"], _env(t, PATCHWRIGHT_DATABASE_URL="mysql://bot:hunter2@db/pw")),
        ExitCode.CONFIG, "unsupported database URL",
    ),
    "invalid-value": (
        lambda t: (["migrate"], _env(t, PATCHWRIGHT_PORT="eighty")), ExitCode.CONFIG, "PATCHWRIGHT_PORT=eighty",
    ),
    "unknown-preset": (
        lambda t: (["migrate"], _env(t, PATCHWRIGHT_AGENT="claud")), ExitCode.CONFIG, "did you mean claude?",
    ),
    "missing-env-file": (
        lambda t: (["--env-file", str(t / "prod.env"), "migrate"], _env(t)), ExitCode.CONFIG, "prod.env",
    ),
    "replay-file-missing": (
        lambda t: (["replay", str(t / "absent.json")], _env(t, PATCHWRIGHT_WEBHOOK_SECRET=SECRET)),
        ExitCode.CONFIG, "absent.json",
    ),
    "replay-file-not-json": (
        lambda t: (["replay", str(_replay_file(t, "{not json"))], _env(t, PATCHWRIGHT_WEBHOOK_SECRET=SECRET)),
        ExitCode.CONFIG, "is not JSON",
    ),
    "replay-server-down": (
        lambda t: (["replay", str(_replay_file(t, '{"action": "labeled"}')), "--event", "issues",
                    "--url", f"http://127.0.0.1:{closed_port()}/webhook"],
                   _env(t, PATCHWRIGHT_WEBHOOK_SECRET=SECRET)),
        ExitCode.ENVIRONMENT, "patchwright serve",
    ),
    "doctor-github-unreachable": (
        lambda t: (["doctor"], _env(
            t, PATCHWRIGHT_APP_ID="1", PATCHWRIGHT_PRIVATE_KEY=generate_key_pair()[0],
            PATCHWRIGHT_WEBHOOK_SECRET=SECRET, PATCHWRIGHT_GITHUB_URL=f"http://127.0.0.1:{closed_port()}",
            PATCHWRIGHT_SANDBOX="none", PATCHWRIGHT_AGENT="command", PATCHWRIGHT_AGENT_COMMAND="true {prompt_file}",
        )),
        ExitCode.GITHUB, "cannot reach GitHub",
    ),
}


@pytest.mark.parametrize("case", list(OFFLINE_CASES))
def test_a_mistake_ends_in_one_line(case: str, tmp_path: Path) -> None:
    make, code, mentions = OFFLINE_CASES[case]
    argv, env = make(tmp_path)
    line = assert_one_line(run_cli(tmp_path, env, *argv), code, mentions=mentions)
    assert "hunter2" not in line


def test_an_unknown_setting_is_a_warning_with_a_suggestion(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PATCHWRIGHT_WEBHOOK_SECRT=x\n")
    proc = run_cli(tmp_path, _env(tmp_path, PATCHWRIGHT_WORKRES="3"), "migrate")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("patchwright: warning: ") for line in lines), lines
    assert "PATCHWRIGHT_WORKRES (in the environment)" in lines[0] and "did you mean PATCHWRIGHT_WORKERS?" in lines[0]
    assert "PATCHWRIGHT_WEBHOOK_SECRT (in .env)" in lines[1] and "did you mean PATCHWRIGHT_WEBHOOK_SECRET?" in lines[1]


def test_doctor_fails_on_an_unknown_setting_with_a_suggestion(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PATCHWRIGHT_WEBHOOK_SECRT=x\n")
    proc = run_cli(tmp_path, _env(tmp_path), "doctor")
    assert proc.returncode == ExitCode.CONFIG and "Traceback" not in proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if "PATCHWRIGHT_WEBHOOK_SECRT" in line]
    assert line.startswith("✗") and "did you mean PATCHWRIGHT_WEBHOOK_SECRET?" in line


def test_debug_adds_the_traceback(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, _env(tmp_path, PATCHWRIGHT_AGENT="gpt"), "--debug", "migrate")
    assert proc.returncode == ExitCode.CONFIG
    assert "Traceback" in proc.stderr and proc.stderr.splitlines()[-1].startswith("patchwright: PATCHWRIGHT_AGENT=gpt")


def test_every_exit_code_is_documented_in_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    for code, _meaning in EXIT_CODES:
        assert re.search(rf"^\| `{int(code)}` \|", readme, re.M), f"exit code {int(code)} is not in README's table"


# -- against the emulator --------------------------------------------------------------------


@pytest.fixture
async def world(tmp_path: Path, key_pairs) -> AsyncIterator[World]:
    (private_pem, public_pem), (other_pem, _) = key_pairs
    emulator = Emulator(tmp_path / "github")
    await emulator.start()
    try:
        app = await emulator.create_app("patchwright", slug="patchwright", public_key=public_pem, webhook_secret=SECRET)
        yield World(tmp_path, emulator.base_url, int(app["id"]), str(app["slug"]), private_pem, other_pem)
    finally:
        await emulator.stop()


GITHUB_CASES: dict[str, tuple[Callable[[World], tuple[list[str], dict[str, str]]], ExitCode, str]] = {
    "serve-wrong-app-id": (
        lambda w: (["serve"], app_env(w, PATCHWRIGHT_APP_ID=str(w.app_id + 1000))), ExitCode.GITHUB, "refused the App's credentials",
    ),
    "serve-wrong-app-id-with-slug": (
        lambda w: (["serve"], app_env(w, PATCHWRIGHT_APP_ID=str(w.app_id + 1000), PATCHWRIGHT_APP_SLUG=w.slug)),
        ExitCode.GITHUB, "refused the App's credentials",
    ),
    "serve-wrong-key": (
        lambda w: (["serve"], app_env(w, PATCHWRIGHT_PRIVATE_KEY=w.other_key, PATCHWRIGHT_APP_SLUG=w.slug)),
        ExitCode.GITHUB, "refused the App's credentials",
    ),
    "serve-slug-of-another-app": (
        lambda w: (["serve"], app_env(w, PATCHWRIGHT_APP_SLUG="someone-else")), ExitCode.GITHUB, "PATCHWRIGHT_APP_SLUG=patchwright",
    ),
    "worker-wrong-key": (
        lambda w: (["worker"], app_env(w, PATCHWRIGHT_PRIVATE_KEY=w.other_key)), ExitCode.GITHUB, "refused the App's credentials",
    ),
    "doctor-wrong-key": (
        lambda w: (["doctor"], app_env(w, PATCHWRIGHT_PRIVATE_KEY=w.other_key, PATCHWRIGHT_SANDBOX="none",
                                       PATCHWRIGHT_AGENT="command", PATCHWRIGHT_AGENT_COMMAND="true {prompt_file}")),
        ExitCode.GITHUB, "refused the App's credentials",
    ),
}


@pytest.mark.parametrize("case", list(GITHUB_CASES))
async def test_github_refusing_the_app_ends_in_one_line(case: str, world: World) -> None:
    make, code, mentions = GITHUB_CASES[case]
    argv, env = make(world)
    proc = await asyncio.to_thread(run_cli, world.tmp_path, env, *argv)
    assert_one_line(proc, code, mentions=mentions)


@pytest.mark.parametrize("command", ["serve", "worker"])
async def test_an_unreachable_github_is_waited_for_and_logged(command: str, tmp_path: Path, key_pairs) -> None:
    env = {
        **base_env(tmp_path),
        "PATCHWRIGHT_APP_ID": "1",
        "PATCHWRIGHT_PRIVATE_KEY": key_pairs[0][0],
        "PATCHWRIGHT_WEBHOOK_SECRET": SECRET,
        "PATCHWRIGHT_GITHUB_URL": f"http://127.0.0.1:{closed_port()}",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", command, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 30)
        # serve listens (and records webhooks) while it waits for GitHub
        assert (b"patchwright listening on" if command == "serve" else b"patchwright worker:") in first
        retry = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert b"cannot reach GitHub" in retry and b"trying again in 1 s" in retry, retry
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        rest = (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0 and "Traceback" not in rest, rest
