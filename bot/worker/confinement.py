"""How one agent run is confined (SPEC §6.3): the sandbox's layout, the egress proxy, the
supervisor, and what the run reports back (refused connections, a resource limit).

The pure layout lives in :mod:`bot.agents.sandbox`; this module gathers its inputs from the
settings, the repository's configuration and the attempt's directories, and runs the proxy
for the length of the run. The runner calls :func:`plan_confinement`, then
``async with confinement:`` around the agent process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.agents.egress import EgressPolicy, EgressProxy, reserved_endpoints
from bot.agents.providers import Endpoint
from bot.agents.sandbox import (
    SandboxLimits,
    SandboxSpec,
    bwrap_argv,
    proxy_env,
    read_limit_status,
    supervised_argv,
    toolchain_paths,
)
from bot.config import RepoConfig
from bot.store.factory import parse_sqlite_url

#: Mode names (``PATCHWRIGHT_SANDBOX``).
SANDBOX_BWRAP = "bwrap"
SANDBOX_NONE = "none"

LIMIT_SETTINGS = {
    "processes": ("max_processes", "PATCHWRIGHT_AGENT_MAX_PROCESSES", "processes"),
    "cpu_seconds": ("cpu_seconds", "PATCHWRIGHT_AGENT_CPU_SECONDS", "seconds of CPU time"),
    "file_size": ("file_size_mb", "PATCHWRIGHT_AGENT_FILE_SIZE_MB", "MB per file"),
}
LIMIT_MESSAGE = (
    "The agent was stopped: it went past its limit of {value} {unit} (`{setting}` on the server)."
)
DISK_LIMIT_MESSAGE = (
    "The agent was stopped: its checkout, home and temporary files grew past {limit} MB "
    "(`PATCHWRIGHT_AGENT_DISK_MB` on the server)."
)
PROVIDER_UNREACHABLE = (
    "The agent could not reach its model provider at {addresses}: nothing answered there. "
    "Check the provider's endpoint ({variables}) and that it is up, then use `{mention} retry`."
)
UNSANDBOXED_LOG_NOTE = (
    "WARNING: the agent runs WITHOUT a sandbox (PATCHWRIGHT_SANDBOX=none): "
    "it can read and reach whatever the server can"
)
MAX_REFUSALS_LOGGED = 20
REFUSED_LOG_LINE = "the sandbox refused a connection to {refusal}"


def sandbox_limits(settings: Any) -> SandboxLimits:
    return SandboxLimits(
        max_processes=settings.agent_max_processes,
        memory_mb=settings.agent_memory_mb,
        cpu_seconds=settings.agent_cpu_seconds,
        file_size_mb=settings.agent_file_size_mb,
        disk_mb=settings.agent_disk_mb,
    )


def protected_paths(settings: Any, environ: Mapping[str, str]) -> list[Path]:
    """What an agent must never see, even inside a path it is shown: the data dir (other
    tasks' checkouts, cache clones, logs), the App's private key file, the SQLite database,
    and the server's working directory (its ``.env``) and home."""
    paths = [Path(settings.data_dir).resolve(), Path.cwd().resolve()]
    if environ.get("HOME"):
        paths.append(Path(environ["HOME"]).resolve())
    if getattr(settings, "private_key_path", None):
        paths.append(Path(settings.private_key_path).resolve())
    if getattr(settings, "is_sqlite", False):
        with contextlib.suppress(Exception):
            path = Path(parse_sqlite_url(settings.database_url)[0]).resolve()
            paths += [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return list(dict.fromkeys(paths))


def shown_paths(
    launch_argv: Sequence[str],
    *,
    operator_template: str | None,
    sandbox_paths: str,
    path_env: str | None,
) -> list[Path]:
    """What the agent's program needs to be found and run: the toolchain of a CLI preset's
    executable; for the ``command`` preset, only with the operator's own template (a
    repository's template names nothing to show), its first word's toolchain and the files
    it names by absolute path; and ``PATCHWRIGHT_SANDBOX_PATHS``."""
    out: list[Path] = []
    if operator_template is not None:
        try:
            words = shlex.split(operator_template)
        except ValueError:
            words = []
        if words:
            out += toolchain_paths(words[0], path_env=path_env)
        out += [Path(w) for w in words[1:] if os.path.isabs(w) and os.path.exists(w)]
    elif launch_argv:
        out += toolchain_paths(launch_argv[0], path_env=path_env)
    out += [Path(p) for p in sandbox_paths.split(os.pathsep) if p.strip()]
    return out


@dataclass
class Confinement:
    """One run's confinement; ``async with`` it around the agent process."""

    mode: str
    argv: list[str]
    env: dict[str, str]
    status_dir: Path
    proxy: EgressProxy | None = None
    socket_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    endpoints: tuple[Endpoint, ...] = ()

    async def __aenter__(self) -> Confinement:
        if self.proxy is not None:
            await self.proxy.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proxy is not None:
            await self.proxy.close()
        if self.socket_dir is not None:
            await asyncio.to_thread(shutil.rmtree, self.socket_dir, True)

    def refusals(self) -> list[str]:
        """The connections the proxy refused, ``host:port: reason`` each, the same target
        once (at most :data:`MAX_REFUSALS_LOGGED`)."""
        if self.proxy is None:
            return []
        lines = list(dict.fromkeys(f"{host}:{port}: {reason}" for host, port, reason in self.proxy.refused))
        return lines[:MAX_REFUSALS_LOGGED]

    def stop_when_providers_unreachable(self, stop: Callable[[], None], *, after: int = 3) -> None:
        """Call ``stop`` once the proxy failed to reach a provider endpoint ``after`` times:
        a CLI would otherwise retry a server that is down for minutes."""
        if self.proxy is None or not self.endpoints:
            return
        proxy = self.proxy

        def count(host: str, port: int) -> None:
            if len(proxy.unreachable) >= after and self.unreachable_providers():
                stop()

        proxy.on_unreachable = count

    def unreachable_providers(self) -> list[Endpoint]:
        """The provider endpoints the proxy could not connect to during the run."""
        if self.proxy is None:
            return []
        failed = {(host.lower(), port) for host, port in self.proxy.unreachable}
        # A loopback provider is reached through its tunnel, which asks for 127.0.0.1.
        return [e for e in self.endpoints if (("127.0.0.1" if e.loopback else e.host), e.port) in failed or (e.host, e.port) in failed]

    def limit_message(self) -> str | None:
        """Why the supervisor ended the run, if a resource limit did."""
        status = read_limit_status(self.status_dir)
        if status is None:
            return None
        limit = str(status.get("limit"))
        known = LIMIT_SETTINGS.get(limit)
        if known is None:
            return f"The agent was stopped: it went past a resource limit ({limit})."
        _, setting, unit = known
        return LIMIT_MESSAGE.format(value=status.get("value"), unit=unit, setting=setting)


def plan_confinement(
    *,
    mode: str,
    launch_argv: Sequence[str],
    settings: Any,
    config: RepoConfig,
    environ: Mapping[str, str],
    operator_template: str | None,
    workdir: Path,
    home: Path,
    tmpdir: Path,
    agent_dir: Path,
    read_only: Sequence[Path],
    grace: float,
    endpoints: Sequence[Endpoint] = (),
) -> Confinement:
    """The argv, environment additions and proxy for one run in ``mode`` (bwrap or none)."""
    status_dir = agent_dir / "sandbox-status"
    status_dir.mkdir(parents=True, exist_ok=True)
    limits = sandbox_limits(settings)
    inner_grace = max(0.1, grace / 2)  # the supervisor ends everything before the worker's SIGKILL
    if mode != SANDBOX_BWRAP:
        argv = supervised_argv(
            launch_argv,
            limits=limits,
            grace=inner_grace,
            parent=os.getpid(),
            status_file=str(status_dir / "limit.json"),
        )
        return Confinement(mode=SANDBOX_NONE, argv=argv, env={}, status_dir=status_dir, notes=[UNSANDBOXED_LOG_NOTE])
    # A short directory for the proxy's socket (a unix socket path has ~100 bytes at most).
    socket_dir = Path(tempfile.mkdtemp(prefix="pw-egress-"))
    proxy = EgressProxy(
        socket_dir / "proxy.sock",
        EgressPolicy(
            network=config.agent.network,
            allow_hosts=tuple(config.agent.allow_hosts),
            operator_allow_hosts=tuple(h.strip() for h in settings.agent_allow_hosts.split(",") if h.strip()),
            provider_hosts=tuple(e.address for e in endpoints)
            + tuple(f"127.0.0.1:{e.port}" for e in endpoints if e.loopback),
            reserved=reserved_endpoints(settings.host, settings.port, settings.database_url),
        ),
    )
    shown = shown_paths(
        launch_argv,
        operator_template=operator_template,
        sandbox_paths=settings.sandbox_paths,
        path_env=environ.get("PATH"),
    )
    spec = SandboxSpec(
        workdir=workdir,
        home=home,
        tmpdir=tmpdir,
        read_only=(*read_only, *shown),
        protected=tuple(protected_paths(settings, environ)),
        proxy_socket=proxy.path,
        status_dir=status_dir,
        limits=limits,
        forward_ports=tuple(dict.fromkeys(e.port for e in endpoints if e.loopback)),
    )
    argv = bwrap_argv(launch_argv, spec, grace=inner_grace)
    return Confinement(
        mode=SANDBOX_BWRAP,
        argv=argv,
        env=proxy_env(),
        status_dir=status_dir,
        proxy=proxy,
        socket_dir=socket_dir,
        endpoints=tuple(endpoints),
    )


def disk_usage_mb(*paths: Path) -> float:
    """What the files under ``paths`` take on disk, in MB (a checkout's ``.git`` too: it is
    the agent's repository, which the agent writes)."""
    return sum(_tree_bytes(path) for path in paths) / (1024 * 1024)


def _tree_bytes(path: Path) -> int:
    total = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total
