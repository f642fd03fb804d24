"""Running git processes for the worker (:class:`GitRunner`).

Every git call is an asyncio subprocess with an explicit environment: no system or global git
config, no inherited ``GIT_*`` variables, hooks off. The installation token reaches git only
through the environment of the network commands (``GIT_CONFIG_COUNT`` with
``http.extraHeader``) — never argv, the remote URL or a file. A command that times out or is
cancelled is killed with its whole process group. Everything git prints is redacted before
it is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .git_parse import config_env, redact_git_output, summarize_stderr
from .git_values import (
    STDERR_KEPT,
    STREAM_CHUNK,
    GitAuth,
    GitAuthError,
    GitCommandError,
    GitResult,
)

__all__ = ["GitRunner"]

# Config every git call gets with the highest precedence: no hooks (an agent may have written
# some), no credential helpers, no fsmonitor daemon.
_SAFE_CONFIG: tuple[tuple[str, str], ...] = (
    ("core.hooksPath", os.devnull),
    ("credential.helper", ""),
    ("core.fsmonitor", "false"),
)
_AUTH_FAILURE = re.compile(
    r"Authentication failed|could not read (?:Username|Password)|terminal prompts disabled"
    r"|returned error: 40[13]|Invalid username or (?:token|password)",
    re.IGNORECASE,
)


class GitRunner:
    """Runs git as an asyncio subprocess with an explicit environment."""

    def __init__(
        self,
        *,
        git: str,
        identity: tuple[str, str],
        search_path: str,
        extra_env: Mapping[str, str] | None,
        network_timeout: float,
        command_timeout: float,
    ) -> None:
        name, email = identity
        if extra_env and any(key.upper().startswith("GIT_") for key in extra_env):
            raise ValueError("extra_env must not set GIT_* variables")
        self.git = git
        self.network_timeout = network_timeout
        self.command_timeout = command_timeout
        self._base_env = {
            **(extra_env or {}),
            "PATH": search_path,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }

    def environment(
        self, auth: GitAuth | None, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        env = dict(self._base_env)
        if extra:
            env.update(extra)
        pairs = list(_SAFE_CONFIG) + (list(auth.config()) if auth is not None else [])
        env.update(config_env(pairs))
        return env

    async def run(
        self,
        args: Sequence[str],
        *,
        git_dir: Path | None = None,
        work_tree: Path | None = None,
        cwd: Path | None = None,
        auth: GitAuth | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        network: bool = False,
        input: bytes | None = None,
    ) -> GitResult:
        """Run ``git [--git-dir] [--work-tree] args`` (``input`` on its stdin); raise
        :class:`GitCommandError` (with redacted output) on a non-zero exit when ``check``.
        Its whole output is kept: for commands whose output the agent can make large, use
        :meth:`stream`."""
        argv = self._argv(args, git_dir, work_tree)
        timeout = self.network_timeout if network else self.command_timeout
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL if input is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=self.environment(auth, env),
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(input), timeout)
        except TimeoutError:
            await _kill(proc)
            raise GitCommandError(
                f"git {args[0]} timed out after {timeout:g} s", command=args[0]
            ) from None
        except BaseException:
            await _kill(proc)
            raise
        result = GitResult(proc.returncode or 0, out, err)
        if check and result.returncode != 0:
            raise self.error(args[0], result, auth)
        return result

    def _argv(self, args: Sequence[str], git_dir: Path | None, work_tree: Path | None) -> list[str]:
        argv = [self.git]
        if git_dir is not None:
            argv.append(f"--git-dir={git_dir}")
        if work_tree is not None:
            argv.append(f"--work-tree={work_tree}")
        argv.extend(args)
        return argv

    async def stream(
        self,
        args: Sequence[str],
        consume: Callable[[bytes], None],
        *,
        git_dir: Path | None = None,
        work_tree: Path | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Run a local git command and hand its stdout to ``consume`` in chunks of at most
        :data:`STREAM_CHUNK` bytes as it comes: memory stays bounded whatever git prints.
        Only the end of stderr is kept. Raises :class:`GitCommandError` on a non-zero exit
        or after ``timeout`` (default: the command timeout); an exception from ``consume``
        kills git and propagates."""
        argv = self._argv(args, git_dir, work_tree)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=self.environment(None, env),
            start_new_session=True,
            limit=STREAM_CHUNK,
        )
        assert proc.stdout is not None and proc.stderr is not None
        stdout, stderr = proc.stdout, proc.stderr
        err_tail = bytearray()

        async def drain_stderr() -> None:
            while data := await stderr.read(STREAM_CHUNK):
                err_tail.extend(data)
                del err_tail[:-STDERR_KEPT]

        async def pump() -> None:
            while data := await stdout.read(STREAM_CHUNK):
                consume(data)
            await proc.wait()

        limit = self.command_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                async with asyncio.TaskGroup() as group:
                    group.create_task(drain_stderr())
                    group.create_task(pump())
        except TimeoutError:
            await _kill(proc)
            raise GitCommandError(f"git {args[0]} timed out after {limit:g} s", command=args[0]) from None
        except BaseException as exc:
            await _kill(proc)
            if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                raise exc.exceptions[0] from None
            raise
        if proc.returncode:
            raise self.error(args[0], GitResult(proc.returncode, b"", bytes(err_tail)), None)

    @staticmethod
    def error(command: str, result: GitResult, auth: GitAuth | None) -> GitCommandError:
        """A :class:`GitCommandError` for a failed command, with everything redacted."""
        secrets = auth.secrets() if auth is not None else ()
        output = redact_git_output(
            (result.stderr + b"\n" + result.stdout).decode("utf-8", "replace"), secrets
        )
        detail = summarize_stderr(
            redact_git_output(result.stderr.decode("utf-8", "replace"), secrets)
        )
        if auth is not None and _AUTH_FAILURE.search(output):
            return GitAuthError(
                f"git {command}: authentication failed; the installation token was rejected or "
                f"has no access to this repository ({detail})",
                command=command,
                returncode=result.returncode,
                output=output,
            )
        return GitCommandError(
            f"git {command} failed (exit {result.returncode}): {detail or 'no output'}",
            command=command,
            returncode=result.returncode,
            output=output,
        )


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
