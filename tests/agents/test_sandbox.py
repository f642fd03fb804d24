"""The agent sandbox: the environment allowlist, and bubblewrap for real."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.agents.process import KillReason, run_agent
from bot.agents.sandbox import BwrapProbe, SandboxError, agent_env, bwrap_argv, bwrap_available

WORKER_ENV = {
    "PATH": "/opt/tools/bin:/usr/bin:/bin",
    "LANG": "en_US.UTF-8",
    "LC_ALL": "en_US.UTF-8",
    "TERM": "xterm-256color",
    "HOME": "/root",
    "TMPDIR": "/var/tmp",
    "ANTHROPIC_API_KEY": "anthropic-key-value",
    "OPENAI_API_KEY": "openai-key-value",
    "GITHUB_TOKEN": "ghs_must_never_leak",
    "GH_TOKEN": "gh-must-never-leak",
    "PATCHWRIGHT_WEBHOOK_SECRET": "never",
    "PATCHWRIGHT_PRIVATE_KEY": "never",
    "AWS_SECRET_ACCESS_KEY": "never",
    "SSH_AUTH_SOCK": "/tmp/agent.sock",
}


def test_agent_env_is_an_allowlist(tmp_path: Path) -> None:
    env = agent_env(
        home=tmp_path / "home",
        tmpdir=tmp_path / "tmp",
        passthrough=WORKER_ENV,
        preset_keys=["ANTHROPIC_API_KEY"],
    )
    assert env == {
        "PATH": "/opt/tools/bin:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "TMPDIR": str(tmp_path / "tmp"),
        "LANG": "en_US.UTF-8",
        "LC_ALL": "en_US.UTF-8",
        "TERM": "xterm-256color",
        "ANTHROPIC_API_KEY": "anthropic-key-value",
    }


def test_agent_env_defaults_and_missing_keys(tmp_path: Path) -> None:
    env = agent_env(home="/h", tmpdir="/t", passthrough={}, preset_keys=["OPENAI_API_KEY"])
    assert env == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/h",
        "TMPDIR": "/t",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
    }


@pytest.mark.parametrize(
    "key",
    ["GITHUB_TOKEN", "GH_TOKEN", "PATCHWRIGHT_WEBHOOK_SECRET", "patchwright_admin_token", "GIT_ASKPASS"],
)
def test_agent_env_refuses_credentials_of_ours(key: str) -> None:
    with pytest.raises(SandboxError):
        agent_env(home="/h", tmpdir="/t", passthrough=WORKER_ENV, preset_keys=[key])


def test_bwrap_argv_shape() -> None:
    argv = bwrap_argv(
        ["claude", "-p"],
        workdir="/data/w",
        home="/data/h",
        tmpdir="/data/t",
        network=False,
        extra_ro_binds=["/opt/x"],
    )
    assert argv == [
        "bwrap",
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--ro-bind", "/opt/x", "/opt/x",
        "--bind", "/data/t", "/data/t",
        "--bind", "/data/h", "/data/h",
        "--bind", "/data/w", "/data/w",
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--chdir", "/data/w",
        "--",
        "claude", "-p",
    ]  # fmt: skip
    with_net = bwrap_argv(["x"], workdir="/w", home="/h", tmpdir="/t", network=True)
    assert with_net[with_net.index("--unshare-all") + 1] == "--share-net"


def test_probe_reports_a_missing_binary() -> None:
    probe = BwrapProbe("bwrap-does-not-exist-here")
    assert probe.available() is False
    assert "not on PATH" in probe.problem
    assert bwrap_available(probe) is False


def test_probe_caches_its_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = BwrapProbe()
    calls: list[int] = []
    monkeypatch.setattr(probe, "_probe", lambda: calls.append(1) or True)
    assert probe.available() and probe.available()
    assert calls == [1]


# -- real bubblewrap --------------------------------------------------------------------


@pytest.fixture(scope="module")
def bwrap_probe() -> BwrapProbe:
    return BwrapProbe()


@pytest.fixture
def bwrap(bwrap_probe: BwrapProbe, require: Callable[[bool, str], None]) -> BwrapProbe:
    require(bwrap_probe.available(), f"bubblewrap does not work here: {bwrap_probe.problem}")
    return bwrap_probe


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    out = {name: tmp_path / name for name in ("work", "home", "tmp", "other")}
    for path in out.values():
        path.mkdir()
    return out


async def run_sandboxed(
    dirs: dict[str, Path],
    code: str,
    *,
    network: bool,
    timeout: float = 20,
    grace: float = 3.0,
    on_line: Callable[[str], None] | None = None,
) -> tuple[int | None, list[str], KillReason | None]:
    script = dirs["tmp"] / "agent.py"
    script.write_text(textwrap.dedent(code))
    env = agent_env(home=dirs["home"], tmpdir=dirs["tmp"], passthrough=dict(os.environ), preset_keys=[])
    argv = bwrap_argv(
        [sys.executable, str(script)],
        workdir=dirs["work"],
        home=dirs["home"],
        tmpdir=dirs["tmp"],
        network=network,
    )
    lines: list[str] = []

    def collect(line: str) -> None:
        lines.append(line)
        if on_line is not None:
            on_line(line)

    result = await run_agent(argv, cwd=dirs["work"], env=env, timeout=timeout, on_line=collect, grace=grace)
    return result.exit_code, lines, result.killed_reason


async def test_bwrap_only_checkout_home_and_tmp_are_writable(
    bwrap: BwrapProbe, dirs: dict[str, Path]
) -> None:
    code = f"""
        import os
        def attempt(path):
            try:
                with open(path, "w") as f:
                    f.write("x")
                return "ok"
            except OSError as exc:
                return type(exc).__name__
        print("cwd", os.getcwd())
        print("work", attempt("result.txt"))
        print("home", attempt(os.path.join(os.environ["HOME"], "h.txt")))
        print("tmp", attempt(os.path.join(os.environ["TMPDIR"], "t.txt")))
        print("other", attempt({str(dirs["other"] / "escape.txt")!r}))
        print("etc", attempt("/etc/patchwright-escape"))
    """
    exit_code, lines, _ = await run_sandboxed(dirs, code, network=False)
    assert exit_code == 0, lines
    assert lines == [
        f"cwd {dirs['work']}",
        "work ok",
        "home ok",
        "tmp ok",
        "other OSError",
        "etc OSError",
    ]
    assert (dirs["work"] / "result.txt").read_text() == "x"
    assert not (dirs["other"] / "escape.txt").exists()
    assert not Path("/etc/patchwright-escape").exists()


async def connect_from_sandbox(dirs: dict[str, Path], *, network: bool) -> tuple[list[str], int]:
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    code = f"""
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
            print("connected")
        except OSError as exc:
            print("refused", type(exc).__name__)
    """
    try:
        _, lines, _ = await run_sandboxed(dirs, code, network=network)
        await asyncio.sleep(0.1)
    finally:
        server.close()
        await server.wait_closed()
    return lines, len(accepted)


async def test_bwrap_without_network_cannot_reach_a_local_server(
    bwrap: BwrapProbe, dirs: dict[str, Path]
) -> None:
    lines, accepted = await connect_from_sandbox(dirs, network=False)
    assert lines[0].startswith("refused"), lines
    assert accepted == 0


async def test_bwrap_with_network_can_reach_it(bwrap: BwrapProbe, dirs: dict[str, Path]) -> None:
    lines, accepted = await connect_from_sandbox(dirs, network=True)
    assert lines == ["connected"]
    assert accepted == 1


def processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if token.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


async def test_bwrap_agent_and_its_children_die_on_timeout(bwrap: BwrapProbe, dirs: dict[str, Path]) -> None:
    token = f"pw-sandbox-{uuid.uuid4().hex}"
    code = f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = (
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)"
        )
        subprocess.Popen([sys.executable, "-c", child, {token!r}])
        time.sleep(60)
    """
    seen_while_running: list[int] = []
    started = time.monotonic()
    _, lines, reason = await run_sandboxed(
        dirs,
        code,
        network=False,
        timeout=1.5,
        grace=0.5,
        on_line=lambda _: seen_while_running.extend(processes_with(token)),
    )
    assert reason is KillReason.TIMEOUT
    assert lines == ["ready"]
    assert seen_while_running  # the child was there (and findable) before the kill
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 2
    while processes_with(token) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert processes_with(token) == []
