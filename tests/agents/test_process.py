"""The agent process runner, with real subprocesses as fake agents."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bot.agents import process as process_module
from bot.agents.process import AgentProcess, KillReason, run_agent

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}


def script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_gone(pid: int, within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await asyncio.sleep(0.05)
    return not alive(pid)


# A fake agent that ignores SIGTERM and starts a child that ignores SIGTERM too and sleeps.
# The child prints "child <pid>" once it ignores SIGTERM: from then on only SIGKILL works.
STUBBORN = """
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.Popen([sys.executable, "-c",
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print(f'child {os.getpid()}', flush=True); time.sleep(60)"])
    time.sleep(60)
"""


async def test_streams_both_pipes_line_by_line_with_secrets_redacted(tmp_path: Path) -> None:
    argv = script(
        tmp_path,
        "talk.py",
        r"""
        import sys
        print("hello from stdout", flush=True)
        sys.stderr.write("warning on stderr: key=TOPSECRET-123\n"); sys.stderr.flush()
        sys.stdout.buffer.write(b"bad bytes \xff\xfe end\r\n"); sys.stdout.flush()
        print("token ghs_" + "a" * 36, flush=True)
        sys.stdout.write("no trailing newline")
        """,
    )
    lines: list[str] = []
    result = await run_agent(
        argv, cwd=tmp_path, env=ENV, timeout=10, on_line=lines.append, redact=["TOPSECRET-123"], grace=0.5
    )
    assert result.exit_code == 0
    assert not result.timed_out and not result.stopped and result.killed_reason is None
    assert sorted(lines) == sorted(
        [
            "hello from stdout",
            "warning on stderr: key=[REDACTED]",
            "bad bytes \ufffd\ufffd end",
            "token [REDACTED]",
            "no trailing newline",
        ]
    )


async def test_stdin_is_delivered_even_when_large(tmp_path: Path) -> None:
    argv = script(
        tmp_path,
        "echo.py",
        """
        import sys
        data = sys.stdin.read()
        print(len(data), data[:5], data[-5:], flush=True)
        """,
    )
    payload = "start" + "x" * 2_000_000 + "final"
    lines: list[str] = []
    result = await run_agent(
        argv, cwd=tmp_path, env=ENV, stdin_data=payload.encode(), timeout=20, on_line=lines.append
    )
    assert result.exit_code == 0
    assert lines == [f"{len(payload)} start final"]


async def test_exit_code_cwd_and_exact_environment(tmp_path: Path) -> None:
    argv = script(
        tmp_path,
        "env.py",
        """
        import os, sys
        print(os.getcwd(), flush=True)
        print(sorted(k for k in os.environ if k not in ("LC_CTYPE",)), flush=True)
        sys.exit(7)
        """,
    )
    lines: list[str] = []
    env = {**ENV, "ONLY_THIS": "1"}
    result = await run_agent(argv, cwd=tmp_path, env=env, timeout=10, on_line=lines.append)
    assert result.exit_code == 7
    assert lines[0] == str(tmp_path)
    assert lines[1] == str(sorted(env))  # nothing inherited from the parent's environment


async def test_timeout_kills_a_stubborn_agent_and_its_child(tmp_path: Path) -> None:
    lines: list[str] = []
    started = time.monotonic()
    result = await run_agent(
        script(tmp_path, "stubborn.py", STUBBORN),
        cwd=tmp_path,
        env=ENV,
        timeout=1.0,
        on_line=lines.append,
        grace=0.5,
    )
    elapsed = time.monotonic() - started
    assert result.timed_out and result.killed_reason is KillReason.TIMEOUT and not result.stopped
    assert result.exit_code == -9  # it ignored SIGTERM, so SIGKILL ended it
    assert elapsed < 1.0 + 0.5 + 1.5
    assert 1.0 <= result.duration < 3.0
    child_pid = int(lines[0].split()[1])
    assert await wait_gone(child_pid)


async def test_leftover_children_are_killed_when_the_agent_exits(tmp_path: Path) -> None:
    argv = script(
        tmp_path,
        "leaver.py",
        """
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(f"child {child.pid}", flush=True)
        """,
    )
    lines: list[str] = []
    started = time.monotonic()
    result = await run_agent(argv, cwd=tmp_path, env=ENV, timeout=30, on_line=lines.append, grace=0.5)
    assert result.exit_code == 0 and result.killed_reason is None
    assert time.monotonic() - started < 5  # the child holding the pipes did not keep us waiting
    assert await wait_gone(int(lines[0].split()[1]))


async def test_stop_ends_the_agent_within_seconds(tmp_path: Path) -> None:
    first_line = asyncio.Event()
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        first_line.set()

    # The default grace period (3 s): SIGTERM is ignored, so SIGKILL ends it after 3 s.
    agent = AgentProcess(
        script(tmp_path, "stubborn.py", STUBBORN), cwd=tmp_path, env=ENV, timeout=60, on_line=on_line
    )
    run = asyncio.create_task(agent.run())
    await asyncio.wait_for(first_line.wait(), timeout=10)
    stopped_at = time.monotonic()
    agent.stop()
    result = await asyncio.wait_for(run, timeout=5)
    assert time.monotonic() - stopped_at < 5
    assert result.stopped and result.killed_reason is KillReason.STOPPED and not result.timed_out
    assert agent.pid is not None and await wait_gone(agent.pid)
    assert await wait_gone(int(lines[0].split()[1]))


async def test_should_stop_is_polled(tmp_path: Path) -> None:
    started = time.monotonic()
    flag = {"stop": False}
    loop = asyncio.get_running_loop()
    loop.call_later(0.5, flag.update, {"stop": True})
    result = await run_agent(
        script(tmp_path, "stubborn.py", STUBBORN),
        cwd=tmp_path,
        env=ENV,
        timeout=60,
        should_stop=lambda: flag["stop"],
        grace=0.5,
    )
    assert result.stopped and result.killed_reason is KillReason.STOPPED
    assert time.monotonic() - started < 5


async def test_cancelling_the_run_kills_the_group(tmp_path: Path) -> None:
    lines: list[str] = []
    seen = asyncio.Event()

    def on_line(line: str) -> None:
        lines.append(line)
        seen.set()

    agent = AgentProcess(
        script(tmp_path, "stubborn.py", STUBBORN),
        cwd=tmp_path,
        env=ENV,
        timeout=60,
        on_line=on_line,
        grace=1.0,
    )
    run = asyncio.create_task(agent.run())
    await asyncio.wait_for(seen.wait(), timeout=10)
    cancelled_at = time.monotonic()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert time.monotonic() - cancelled_at < 5
    assert agent.kill_reason is KillReason.STOPPED
    assert agent.pid is not None and await wait_gone(agent.pid)
    assert await wait_gone(int(lines[0].split()[1]))


async def test_a_line_callback_can_ask_for_a_cost_kill(tmp_path: Path) -> None:
    argv = script(
        tmp_path,
        "spender.py",
        """
        import time
        for i in range(100):
            print(f'{{"cost": {i / 10}}}', flush=True)
            time.sleep(0.05)
        """,
    )
    seen: list[str] = []

    async def on_line(line: str) -> KillReason | None:
        seen.append(line)
        await asyncio.sleep(0)
        return KillReason.COST if line == '{"cost": 0.3}' else None

    started = time.monotonic()
    result = await run_agent(argv, cwd=tmp_path, env=ENV, timeout=30, on_line=on_line, grace=0.5)
    assert result.killed_reason is KillReason.COST
    assert not result.timed_out and not result.stopped
    assert time.monotonic() - started < 3
    assert '{"cost": 0.3}' in seen and len(seen) < 20


async def test_a_failing_callback_kills_the_agent_and_raises(tmp_path: Path) -> None:
    agent = AgentProcess(
        script(tmp_path, "stubborn.py", STUBBORN),
        cwd=tmp_path,
        env=ENV,
        timeout=60,
        on_line=lambda line: 1 / 0,
        grace=0.5,
    )
    with pytest.raises(ZeroDivisionError):
        await asyncio.wait_for(agent.run(), timeout=5)
    assert agent.pid is not None and await wait_gone(agent.pid)


async def test_overlong_lines_are_passed_on_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process_module, "MAX_LINE_BYTES", 1000)
    argv = script(tmp_path, "long.py", 'print("y" * 2500)\nprint("short")\n')
    lines: list[str] = []
    result = await run_agent(argv, cwd=tmp_path, env=ENV, timeout=10, on_line=lines.append)
    assert result.exit_code == 0
    assert [len(line) for line in lines] == [1000, 1000, 500, 5]


async def test_empty_argv_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        AgentProcess([], cwd=tmp_path, env=ENV, timeout=1)
