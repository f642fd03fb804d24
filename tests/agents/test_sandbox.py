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

from bot.agents.egress import EgressPolicy, EgressProxy
from bot.agents.process import KillReason, run_agent
from bot.agents.sandbox import (
    PROXY_PORT,
    PROXY_SOCKET_PATH,
    SUPERVISOR_PATH,
    BwrapProbe,
    SandboxError,
    SandboxLimits,
    SandboxSpec,
    agent_env,
    bwrap_argv,
    bwrap_available,
    proxy_env,
    toolchain_paths,
    visible_paths,
)

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


def _pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == flag]


def test_bwrap_argv_shows_only_an_allowlist(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shown = tmp_path / "tools"
    secret_inside = shown / "etc" / "secret.env"
    secret_inside.parent.mkdir(parents=True)
    secret_inside.write_text("S=1\n")
    for d in ("w", "h", "t"):
        (data / d).mkdir(parents=True)
    spec = SandboxSpec(
        workdir=data / "w",
        home=data / "h",
        tmpdir=data / "t",
        read_only=(shown, tmp_path / "missing"),
        protected=(data, secret_inside, tmp_path / "elsewhere.key"),
    )
    argv = bwrap_argv(["claude", "-p"], spec)
    assert argv[0] == "bwrap"
    assert ("/", "/") not in _pairs(argv, "--ro-bind")  # no whole root any more
    ro = dict(_pairs(argv, "--ro-bind"))
    assert ro[str(shown)] == str(shown) and str(tmp_path / "missing") not in ro
    assert "/usr" in ro or ("usr/bin", "/bin") in _pairs(argv, "--symlink")
    assert all(not src.startswith("/etc/shadow") and src not in ("/etc", "/root", "/srv", "/home") for src in ro)
    # The protected file inside a shown path is masked; protected paths shown nowhere are not named.
    assert (os.devnull, str(secret_inside)) in _pairs(argv, "--ro-bind")
    assert str(tmp_path / "elsewhere.key") not in argv and str(data) not in [a for a, _ in _pairs(argv, "--tmpfs")]
    # Writable: the checkout, HOME and TMPDIR only, bound after every mask.
    assert _pairs(argv, "--bind")[:3] == [(str(data / "t"),) * 2, (str(data / "h"),) * 2, (str(data / "w"),) * 2]
    assert argv.index(str(secret_inside)) < argv.index("--bind")
    assert argv[argv.index("--unshare-all") - 2 : argv.index("--unshare-all")] == ["--remount-ro", "/"]
    tail = argv[argv.index("--unshare-all") :]
    assert tail[:8] == ["--unshare-all", "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--chdir", str(data / "w"), "--"]
    assert "--share-net" not in argv  # the network namespace is always the sandbox's own
    command = tail[8:]
    assert command[2:4] == ["-S", SUPERVISOR_PATH] and command[-3:] == ["--", "claude", "-p"]
    assert "--count-processes" in command and "--bridge-port" not in command  # no proxy: no way out


def test_bwrap_argv_with_a_proxy_bridges_to_its_socket(tmp_path: Path) -> None:
    sock = tmp_path / "proxy.sock"
    spec = SandboxSpec(workdir=tmp_path, home=tmp_path, tmpdir=tmp_path, proxy_socket=sock, status_dir=tmp_path)
    argv = bwrap_argv(["x"], spec)
    assert (str(sock), PROXY_SOCKET_PATH) in _pairs(argv, "--bind")
    assert argv[argv.index("--bridge-port") : argv.index("--bridge-port") + 4] == [
        "--bridge-port", str(PROXY_PORT), "--proxy-socket", PROXY_SOCKET_PATH,
    ]  # fmt: skip
    assert proxy_env()["HTTPS_PROXY"] == f"http://127.0.0.1:{PROXY_PORT}" == proxy_env()["https_proxy"]


def test_visible_paths_never_show_what_contains_a_protected_directory(tmp_path: Path) -> None:
    (tmp_path / "srv" / "venv").mkdir(parents=True)
    (tmp_path / "srv" / "data").mkdir()
    protected = [tmp_path / "srv" / "data"]
    assert visible_paths([tmp_path / "srv", tmp_path / "srv" / "venv", Path("/usr/bin")], protected) == [
        tmp_path / "srv" / "venv"
    ]


def test_toolchain_paths_follow_symlinks_and_the_interpreter(tmp_path: Path) -> None:
    base = tmp_path / "python-base" / "bin"
    base.mkdir(parents=True)
    (base / "python3").write_text("")
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(base / "python3")
    tool = venv_bin / "tool"
    tool.write_text(f"#!{venv_bin / 'python'}\nprint('hi')\n")
    tool.chmod(0o755)
    link_dir = tmp_path / "local" / "bin"
    link_dir.mkdir(parents=True)
    (link_dir / "tool").symlink_to(tool)
    paths = toolchain_paths("tool", path_env=str(link_dir))
    assert tmp_path / "venv" in paths and tmp_path / "python-base" in paths
    assert toolchain_paths("no-such-tool-here", path_env=str(link_dir)) == []


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
    out = {name: tmp_path / name for name in ("work", "home", "tmp", "other", "status")}
    for path in out.values():
        path.mkdir()
    return out


async def run_sandboxed(
    dirs: dict[str, Path],
    code: str,
    *,
    proxy: EgressProxy | None = None,
    protected: tuple[Path, ...] = (),
    limits: SandboxLimits | None = None,
    timeout: float = 20,
    grace: float = 3.0,
    on_line: Callable[[str], None] | None = None,
) -> tuple[int | None, list[str], KillReason | None]:
    script = dirs["tmp"] / "agent.py"
    script.write_text(textwrap.dedent(code))
    env = agent_env(home=dirs["home"], tmpdir=dirs["tmp"], passthrough=dict(os.environ), preset_keys=[])
    if proxy is not None:
        env |= proxy_env()
    spec = SandboxSpec(
        workdir=dirs["work"],
        home=dirs["home"],
        tmpdir=dirs["tmp"],
        protected=protected,
        proxy_socket=proxy.path if proxy is not None else None,
        status_dir=dirs["status"],
        limits=limits or SandboxLimits(),
    )
    argv = bwrap_argv([sys.executable, str(script)], spec, grace=grace / 2)
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
    exit_code, lines, _ = await run_sandboxed(dirs, code)
    assert exit_code == 0, lines
    assert lines == [
        f"cwd {dirs['work']}",
        "work ok",
        "home ok",
        "tmp ok",
        "other FileNotFoundError",  # not even there to be written to
        "etc OSError",
    ]
    assert (dirs["work"] / "result.txt").read_text() == "x"
    assert not (dirs["other"] / "escape.txt").exists()
    assert not Path("/etc/patchwright-escape").exists()


async def local_server() -> tuple[asyncio.AbstractServer, int, list[bytes]]:
    """A TCP server on 127.0.0.1 standing in for a service (or, allowed by config, the internet)."""
    received: list[bytes] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(100))
        writer.write(b"pong")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], received


CONNECT_CODE = """
    import os, socket
    def direct(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=3).close()
            return "connected"
        except OSError as exc:
            return type(exc).__name__
    def via_proxy(host, port):
        try:
            s = socket.create_connection(("127.0.0.1", {proxy_port}), timeout=3)
        except OSError as exc:
            return "no proxy: " + type(exc).__name__
        s.sendall(f"CONNECT {{host}}:{{port}} HTTP/1.1\\r\\nHost: {{host}}:{{port}}\\r\\n\\r\\n".encode())
        head = s.recv(4096).split(b"\\r\\n")[0].decode()
        if " 200 " not in head:
            return head
        s.sendall(b"ping")
        return "tunnel " + s.recv(100).decode()
    print("direct", direct({port}))
    print("proxy", via_proxy("127.0.0.1", {port}))
    print("proxy-name", via_proxy("localhost", {port}))
"""


async def probe_network(dirs: dict[str, Path], *, policy: EgressPolicy | None) -> tuple[list[str], list[bytes]]:
    server, port, received = await local_server()
    code = CONNECT_CODE.format(port=port, proxy_port=PROXY_PORT)
    try:
        if policy is None:
            _, lines, _ = await run_sandboxed(dirs, code)
        else:
            async with EgressProxy(dirs["tmp"].parent / "p.sock", policy) as proxy:
                _, lines, _ = await run_sandboxed(dirs, code, proxy=proxy)
        await asyncio.sleep(0.05)
    finally:
        server.close()
        await server.wait_closed()
    return lines, received


async def test_bwrap_without_a_proxy_reaches_nothing(bwrap: BwrapProbe, dirs: dict[str, Path]) -> None:
    lines, received = await probe_network(dirs, policy=None)
    assert lines[0] == "direct ConnectionRefusedError", lines  # its own loopback, not the host's
    assert lines[1] == "proxy no proxy: ConnectionRefusedError"
    assert received == []


@pytest.mark.parametrize("network", [True, False])
async def test_bwrap_proxy_refuses_local_addresses(
    bwrap: BwrapProbe, dirs: dict[str, Path], network: bool
) -> None:
    lines, received = await probe_network(dirs, policy=EgressPolicy(network=network))
    assert lines[0] == "direct ConnectionRefusedError", lines
    assert lines[1:] == ["proxy HTTP/1.1 403 Forbidden", "proxy-name HTTP/1.1 403 Forbidden"]
    assert received == []


async def test_bwrap_proxy_lets_an_allowed_host_through(bwrap: BwrapProbe, dirs: dict[str, Path]) -> None:
    lines, received = await probe_network(dirs, policy=EgressPolicy(operator_allow_hosts=("127.0.0.1",)))
    assert lines == ["direct ConnectionRefusedError", "proxy tunnel pong", "proxy-name HTTP/1.1 403 Forbidden"], lines
    assert received == [b"ping"]


async def test_bwrap_agent_and_its_children_die_on_timeout(
    bwrap: BwrapProbe, dirs: dict[str, Path], agent_processes
) -> None:
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
        timeout=1.5,
        grace=0.5,
        on_line=lambda _: seen_while_running.extend(agent_processes.matching(token)),
    )
    assert reason is KillReason.TIMEOUT
    assert lines == ["ready"]
    assert seen_while_running  # the child was there (and findable) before the kill
    assert time.monotonic() - started < 5
    assert await agent_processes.gone(token, within=2.0)


async def test_bwrap_a_loopback_provider_is_reached_at_its_own_address_and_nothing_else(
    bwrap: BwrapProbe, dirs: dict[str, Path]
) -> None:
    """`network: false` means "nothing but the model provider": a model server on the server's
    loopback is tunnelled into the sandbox at the same address; any other local port is not."""
    provider, provider_port, provider_got = await local_server()
    other, other_port, other_got = await local_server()
    code = f"""
        import socket
        def talk(port):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
                    s.sendall(b"hello")
                    return "answered " + s.recv(100).decode()
            except OSError as exc:
                return type(exc).__name__
        print("provider", talk({provider_port}))
        print("other", talk({other_port}))
    """
    policy = EgressPolicy(network=False, provider_hosts=(f"127.0.0.1:{provider_port}",))
    script = dirs["tmp"] / "agent.py"
    script.write_text(textwrap.dedent(code))
    env = agent_env(home=dirs["home"], tmpdir=dirs["tmp"], passthrough=dict(os.environ), preset_keys=[]) | proxy_env()
    try:
        async with EgressProxy(dirs["tmp"].parent / "p.sock", policy) as proxy:
            spec = SandboxSpec(
                workdir=dirs["work"], home=dirs["home"], tmpdir=dirs["tmp"],
                proxy_socket=proxy.path, forward_ports=(provider_port,),
            )  # fmt: skip
            lines: list[str] = []
            await run_agent(
                bwrap_argv([sys.executable, str(script)], spec), cwd=dirs["work"], env=env, timeout=20,
                on_line=lines.append,
            )  # fmt: skip
    finally:
        for server in (provider, other):
            server.close()
            await server.wait_closed()
    assert lines == ["provider answered pong", "other ConnectionRefusedError"], lines
    assert provider_got == [b"hello"] and other_got == []
