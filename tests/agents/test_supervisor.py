"""The agent's supervisor: no process outlives its attempt or the server, with or without
bubblewrap, and resource limits end a run with the limit named."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.agents import supervisor
from bot.agents.process import KillReason, run_agent
from bot.agents.sandbox import BwrapProbe, SandboxLimits, SandboxSpec, bwrap_argv, read_limit_status, supervised_argv

pytestmark = pytest.mark.slow

DAEMON = """
import os, sys, time
token = sys.argv[1]
if os.fork() == 0:
    os.setsid()                      # its own session and process group
    if os.fork() == 0:               # and re-parented away from the agent
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.execvp(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", token])
    os._exit(0)
time.sleep(0.3)
print("daemon started", flush=True)
"""


def test_limits_round_trip_and_signals_name_the_limit() -> None:
    text = SandboxLimits(max_processes=9, memory_mb=10, cpu_seconds=11, file_size_mb=12).as_supervisor_arg()
    assert supervisor.parse_limits(text) == {"processes": 9, "memory_mb": 10, "cpu_seconds": 11, "file_size_mb": 12}
    assert supervisor.limit_from_signal(signal.SIGXCPU) == supervisor.LIMIT_CPU
    assert supervisor.limit_from_signal(signal.SIGXFSZ) == supervisor.LIMIT_FILE_SIZE
    assert supervisor.limit_from_signal(signal.SIGKILL) is None


async def test_unsandboxed_a_double_forked_daemon_dies_with_its_attempt(tmp_path: Path, agent_processes) -> None:
    token = f"pw-daemon-{uuid.uuid4().hex}"
    script = tmp_path / "agent.py"
    script.write_text(DAEMON)
    argv = supervised_argv([sys.executable, str(script), token], limits=SandboxLimits(), grace=0.5, parent=os.getpid())
    lines: list[str] = []
    seen: list[int] = []

    def on_line(line: str) -> None:
        lines.append(line)
        seen.extend(agent_processes.matching(token))

    result = await run_agent(argv, cwd=tmp_path, env=dict(os.environ), timeout=20, on_line=on_line, grace=1.0)
    assert result.exit_code == 0 and lines == ["daemon started"]
    assert seen  # it was running (outside the agent's process group and session)
    assert await agent_processes.gone(token)


async def test_unsandboxed_a_stop_ends_a_daemon_that_ignores_sigterm(tmp_path: Path, agent_processes) -> None:
    token = f"pw-daemon-{uuid.uuid4().hex}"
    script = tmp_path / "agent.py"
    script.write_text(DAEMON + "\ntime.sleep(60)\n")
    argv = supervised_argv([sys.executable, str(script), token], limits=SandboxLimits(), grace=0.5, parent=os.getpid())
    result = await run_agent(argv, cwd=tmp_path, env=dict(os.environ), timeout=2, grace=1.0)
    assert result.killed_reason is KillReason.TIMEOUT
    assert await agent_processes.gone(token)


SERVER = """
import asyncio, os, sys
from bot.agents.process import run_agent
from bot.agents.sandbox import SandboxLimits, supervised_argv
agent, token, mode = sys.argv[1], sys.argv[2], sys.argv[3]
argv = supervised_argv([sys.executable, agent, token], limits=SandboxLimits(), grace=0.5, parent=os.getpid())
if mode == "bwrap":
    from pathlib import Path
    from bot.agents.sandbox import SandboxSpec, bwrap_argv
    work = Path(agent).parent
    argv = bwrap_argv([sys.executable, agent, token], SandboxSpec(workdir=work, home=work, tmpdir=work), grace=0.5)
print("server running", flush=True)
asyncio.run(run_agent(argv, cwd=os.path.dirname(agent), env=dict(os.environ), timeout=60,
                      on_line=lambda line: print(line, flush=True)))
"""


@pytest.mark.parametrize("mode", ["none", "bwrap"])
async def test_no_agent_process_survives_a_sigkill_of_the_server(
    tmp_path: Path, mode: str, require: Callable[[bool, str], None], agent_processes
) -> None:
    if mode == "bwrap":
        probe = BwrapProbe()
        require(probe.available(), f"bubblewrap does not work here: {probe.problem}")
    token = f"pw-daemon-{uuid.uuid4().hex}"
    agent = tmp_path / "agent.py"
    agent.write_text(DAEMON + "\ntime.sleep(60)\n")
    server_py = tmp_path / "server.py"
    server_py.write_text(SERVER)
    root = Path(__file__).resolve().parents[2]
    server = subprocess.Popen(
        [sys.executable, str(server_py), str(agent), token, mode],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert server.stdout is not None
        deadline = time.monotonic() + 15
        output = b""
        while b"daemon started" not in output and time.monotonic() < deadline:
            output += await asyncio.to_thread(server.stdout.readline)
        assert b"daemon started" in output, output
        assert agent_processes.matching(token)
        server.send_signal(signal.SIGKILL)
        server.wait(5)
        assert await agent_processes.gone(token, within=5.0), "an agent process outlived the server"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(5)
        if server.stdout is not None:
            server.stdout.close()


async def test_limits_end_the_run_and_say_which(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.mkdir()
    argv = supervised_argv(
        ["dd", "if=/dev/zero", "of=big.bin", "bs=1M", "count=3"],
        limits=SandboxLimits(file_size_mb=1),
        grace=0.5,
        status_file=str(status / "limit.json"),
    )
    result = await run_agent(argv, cwd=tmp_path, env=dict(os.environ), timeout=20)
    assert result.exit_code == 128 + signal.SIGXFSZ
    assert read_limit_status(status) == {"limit": "file_size", "value": 1}
    assert (tmp_path / "big.bin").stat().st_size <= 1024 * 1024


async def test_a_fork_bomb_in_bubblewrap_ends_at_the_process_limit(
    tmp_path: Path, require: Callable[[bool, str], None]
) -> None:
    probe = BwrapProbe()
    require(probe.available(), f"bubblewrap does not work here: {probe.problem}")
    status = tmp_path / "status"
    status.mkdir()
    script = tmp_path / "agent.py"
    script.write_text(
        textwrap.dedent(
            """
            import subprocess, sys, time
            children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) for _ in range(40)]
            print("all started", flush=True)
            time.sleep(30)
            """
        )
    )
    spec = SandboxSpec(
        workdir=tmp_path, home=tmp_path, tmpdir=tmp_path, status_dir=status, limits=SandboxLimits(max_processes=16)
    )
    started = time.monotonic()
    result = await run_agent(bwrap_argv([sys.executable, str(script)], spec, grace=0.5), cwd=tmp_path, env=dict(os.environ), timeout=30)
    assert time.monotonic() - started < 15
    assert result.exit_code != 0
    assert json.loads((status / "limit.json").read_text()) == {"limit": "processes", "value": 16}
