"""Running an agent subprocess (SPEC §6.3): its own process group, streamed and redacted
output, a wall-clock timeout, stop and cost kills, and no orphans left behind.

Ending the agent is always the same sequence: SIGTERM to the whole process group, then
SIGKILL after a grace period. When the agent exits by itself, whatever it left running in
its group is killed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from bot.agents.result import KillReason
from bot.redaction import redact

LineCallback = Callable[[str], "KillReason | Awaitable[KillReason | None] | None"]

DEFAULT_GRACE_S = 3.0
MAX_LINE_BYTES = 4 * 1024 * 1024
_READ_CHUNK = 64 * 1024
_DRAIN_AFTER_EXIT_S = 1.0
_EXIT_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """How the agent process ended. ``exit_code`` is negative when a signal killed it."""

    exit_code: int | None
    timed_out: bool
    stopped: bool
    killed_reason: KillReason | None
    duration: float


class AgentProcess:
    """One agent run. ``await run()`` starts it and returns when it (and its group) ended.

    ``on_line`` receives every stdout/stderr line (decoded, redacted, without the newline);
    it may return :class:`KillReason` (e.g. ``COST``) to have the agent killed. ``stop()``
    and ``kill()`` may be called from any coroutine; cancelling ``run()`` also kills it.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike[str],
        env: Mapping[str, str],
        stdin_data: bytes | None = None,
        timeout: float,
        on_line: LineCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        redact: Sequence[str] = (),
        grace: float = DEFAULT_GRACE_S,
        poll_interval: float = 0.25,
    ) -> None:
        if not argv:
            raise ValueError("argv must not be empty")
        self.argv = list(argv)
        self.cwd = os.fspath(cwd)
        self.env = dict(env)
        self.stdin_data = stdin_data
        self.timeout = timeout
        self.on_line = on_line
        self.should_stop = should_stop
        self.secrets = tuple(s for s in redact if s)
        self.grace = grace
        self.poll_interval = poll_interval
        self.pid: int | None = None
        self._kill_reason: KillReason | None = None
        self._kill_requested = asyncio.Event()

    # -- control ---------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the agent to end (outcome STOPPED): SIGTERM now, SIGKILL after the grace period."""
        self.kill(KillReason.STOPPED)

    def kill(self, reason: KillReason) -> None:
        """End the agent for ``reason``; the first reason given is the one reported."""
        if self._kill_reason is None:
            self._kill_reason = reason
        self._kill_requested.set()

    @property
    def kill_reason(self) -> KillReason | None:
        return self._kill_reason

    # -- running ---------------------------------------------------------------------
    async def run(self) -> ProcessResult:
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=asyncio.subprocess.PIPE if self.stdin_data is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        self.pid = proc.pid
        pgid = proc.pid  # start_new_session: the child leads its own session and process group
        assert proc.stdout is not None and proc.stderr is not None
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        readers = [
            asyncio.create_task(self._read_stream(proc.stdout, lines), name="agent-stdout"),
            asyncio.create_task(self._read_stream(proc.stderr, lines), name="agent-stderr"),
        ]
        consumer = asyncio.create_task(self._consume(lines, len(readers)), name="agent-lines")
        helpers: list[asyncio.Task[None]] = []
        if self.stdin_data is not None and proc.stdin is not None:
            helpers.append(asyncio.create_task(self._feed_stdin(proc.stdin), name="agent-stdin"))
        if self.should_stop is not None:
            helpers.append(asyncio.create_task(self._poll_should_stop(), name="agent-should-stop"))

        try:
            exit_code = await self._wait(proc, pgid, started)
            # The leader is gone; kill whatever it left behind in its group so the pipes close.
            _signal_group(pgid, signal.SIGKILL)
            await self._drain_readers(readers)
            await consumer  # re-raises an exception from on_line
        except asyncio.CancelledError:
            # Cancelled (e.g. the worker shuts down): end the agent the usual way, then re-raise.
            # A second cancellation lands in `finally`, which SIGKILLs the group.
            self.kill(KillReason.STOPPED)
            await self._cleanup_after_cancel(proc, pgid, readers, consumer)
            raise
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if proc.returncode is None:  # an unexpected error above: never leave it running
                _signal_group(pgid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(_exited(proc), timeout=5)
            for task in (*readers, consumer):
                if not task.done():
                    task.cancel()
            await asyncio.gather(*readers, consumer, return_exceptions=True)
            # Pipes still held by a process outside the group: close our ends.
            transport = getattr(proc, "_transport", None)
            if transport is not None and not transport.is_closing():
                transport.close()

        reason = self._kill_reason
        return ProcessResult(
            exit_code=exit_code,
            timed_out=reason is KillReason.TIMEOUT,
            stopped=reason is KillReason.STOPPED,
            killed_reason=reason,
            duration=time.monotonic() - started,
        )

    async def _cleanup_after_cancel(
        self,
        proc: asyncio.subprocess.Process,
        pgid: int,
        readers: list[asyncio.Task[None]],
        consumer: asyncio.Task[None],
    ) -> None:
        await self._terminate(proc, pgid)
        await self._drain_readers(readers)
        with contextlib.suppress(Exception):  # the run is being cancelled: errors do not matter
            await asyncio.wait_for(consumer, timeout=_DRAIN_AFTER_EXIT_S)

    async def _wait(self, proc: asyncio.subprocess.Process, pgid: int, started: float) -> int | None:
        """Wait for exit, the timeout, or a kill request; end the group in the latter cases."""
        exited = asyncio.ensure_future(_exited(proc))
        kill_wait = asyncio.ensure_future(self._kill_requested.wait())
        try:
            remaining = self.timeout - (time.monotonic() - started)
            done, _ = await asyncio.wait(
                {exited, kill_wait}, timeout=max(0.0, remaining), return_when=asyncio.FIRST_COMPLETED
            )
            if exited in done:
                return proc.returncode
            if kill_wait not in done:
                self.kill(KillReason.TIMEOUT)
            await self._terminate(proc, pgid)
            return proc.returncode
        finally:
            for fut in (exited, kill_wait):
                if not fut.done():
                    fut.cancel()
            await asyncio.gather(exited, kill_wait, return_exceptions=True)

    async def _terminate(self, proc: asyncio.subprocess.Process, pgid: int) -> None:
        """SIGTERM the group, SIGKILL it after the grace period, reap the leader."""
        _signal_group(pgid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_exited(proc), timeout=self.grace)
        # Even when the leader obeyed, children that ignore SIGTERM must not outlive it.
        _signal_group(pgid, signal.SIGKILL)
        await _exited(proc)

    async def _drain_readers(self, readers: list[asyncio.Task[None]]) -> None:
        """Let the readers reach end of file (the pipes close once the group is dead); give up
        after a moment when something outside the group (a process that left it) holds one."""
        _, pending = await asyncio.wait(readers, timeout=_DRAIN_AFTER_EXIT_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    async def _read_stream(self, stream: asyncio.StreamReader, lines: asyncio.Queue[str | None]) -> None:
        buffer = b""
        try:
            while True:
                chunk = await stream.read(_READ_CHUNK)
                if not chunk:
                    break
                buffer += chunk
                while True:
                    limit = MAX_LINE_BYTES
                    newline = buffer.find(b"\n", 0, limit + 1)
                    if newline == -1:
                        if len(buffer) < limit:
                            break
                        # An overlong line is passed on in pieces of at most `limit` bytes.
                        lines.put_nowait(self._decode(buffer[:limit]))
                        buffer = buffer[limit:]
                        continue
                    lines.put_nowait(self._decode(buffer[:newline]))
                    buffer = buffer[newline + 1 :]
        finally:
            if buffer:
                lines.put_nowait(self._decode(buffer))
            lines.put_nowait(None)

    def _decode(self, raw: bytes) -> str:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        return redact(text, self.secrets)

    async def _consume(self, lines: asyncio.Queue[str | None], producers: int) -> None:
        finished = 0
        while finished < producers:
            line = await lines.get()
            if line is None:
                finished += 1
                continue
            if self.on_line is None:
                continue
            try:
                verdict = self.on_line(line)
                if inspect.isawaitable(verdict):
                    verdict = await verdict
            except Exception:
                # A broken callback (e.g. the cost check) must not leave the agent unsupervised.
                self.kill(KillReason.STOPPED)
                raise
            if isinstance(verdict, KillReason):
                self.kill(verdict)

    async def _feed_stdin(self, stdin: asyncio.StreamWriter) -> None:
        assert self.stdin_data is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.write(self.stdin_data)
            await stdin.drain()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.close()
            await stdin.wait_closed()

    async def _poll_should_stop(self) -> None:
        assert self.should_stop is not None
        while not self._kill_requested.is_set():
            if self.should_stop():
                self.stop()
                return
            await asyncio.sleep(self.poll_interval)


async def _exited(proc: asyncio.subprocess.Process) -> int:
    """The leader's exit status, as soon as it exits. (``proc.wait()`` also waits for the
    pipes to close, which a child still holding them would delay indefinitely.)"""
    while proc.returncode is None:
        await asyncio.sleep(_EXIT_POLL_S)
    return proc.returncode


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def run_agent(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    env: Mapping[str, str],
    stdin_data: bytes | None = None,
    timeout: float,
    on_line: LineCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    redact: Sequence[str] = (),
    grace: float = DEFAULT_GRACE_S,
) -> ProcessResult:
    """Run ``argv`` to completion (see :class:`AgentProcess`)."""
    process = AgentProcess(
        argv,
        cwd=cwd,
        env=env,
        stdin_data=stdin_data,
        timeout=timeout,
        on_line=on_line,
        should_stop=should_stop,
        redact=redact,
        grace=grace,
    )
    return await process.run()
