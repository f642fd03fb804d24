"""Launching the agent for one attempt (SPEC §6.3, §6.4).

The runner decides *what* runs — a :class:`LaunchPlan`: the preset, the sandbox mode, the
prompt, the directories, the cost limit — and :class:`AgentLaunch` runs it:

1. prepares the directories (HOME per task, so a resumed session finds its store; TMPDIR and
   the prompt file per attempt) and clears a leftover signal file;
2. builds the environment from the allowlist and the preset's command line;
3. plans the confinement (bubblewrap and the egress proxy, or the supervisor alone);
4. starts the process under the attempt's :class:`Supervision` and watches its cost (as it
   streams, or polled) and the disk it writes, killing it past either limit;
5. reads what it reported (signal file, structured output) and returns one outcome value.

Every outcome is a value the runner matches on; none is raised. An unexpected error is not
an outcome: it propagates (the runner reads :attr:`AgentLaunch.spent_usd` in any case).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bot import messages
from bot.agents.presets import DEFAULT_PRICES, Invocation, Preset, StreamState, command_env, get_preset
from bot.agents.process import DEFAULT_GRACE_S, AgentProcess
from bot.agents.providers import provider_endpoints
from bot.agents.result import AgentOutcome, AgentResult, KillReason
from bot.agents.sandbox import BwrapProbe, SandboxError, agent_env, is_secret_name
from bot.agents.signal import clear_signal, read_signal
from bot.config import RepoConfig
from bot.messages import failures
from bot.worker.confinement import (
    DISK_LIMIT_MESSAGE,
    PROVIDER_UNREACHABLE,
    REFUSED_LOG_LINE,
    SANDBOX_BWRAP,
    SANDBOX_NONE,
    disk_usage_mb,
    plan_confinement,
)

# -- what runs ------------------------------------------------------------------------------


def task_home(data_dir: Path, task_id: str) -> Path:
    """The agent's HOME for every attempt of a task (removed when the task ends)."""
    return data_dir / "homes" / task_id


@dataclass(frozen=True)
class AgentDirs:
    """Where one attempt's agent lives: ``agent_dir`` per attempt (TMPDIR, the prompt, the
    sandbox's status; removed after the attempt) and ``home`` per task."""

    agent_dir: Path
    home: Path

    @classmethod
    def for_attempt(cls, data_dir: Path, task_id: str, attempt: int) -> AgentDirs:
        return cls(agent_dir=data_dir / "agents" / f"{task_id}-{attempt}", home=task_home(data_dir, task_id))

    @property
    def tmp(self) -> Path:
        return self.agent_dir / "tmp"

    @property
    def prompt_dir(self) -> Path:
        return self.agent_dir / "prompt"

    @property
    def prompt_file(self) -> Path:
        return self.prompt_dir / "prompt.md"


@dataclass(frozen=True)
class CostLimit:
    """What this attempt may spend; ``daily`` when the repository's daily cap is the
    tighter limit (a kill for it ends the attempt with the daily cap's message)."""

    usd: float
    daily: bool = False


def cost_limit(task_left: float, daily_left: float | None) -> CostLimit:
    """The attempt's limit: what is left of the task's cap, or of the repository's daily
    cap when that is less (``daily_left`` is None without a daily cap)."""
    if daily_left is None:
        return CostLimit(task_left)
    return CostLimit(min(task_left, daily_left), daily=daily_left < task_left)


def operator_template(preset_name: str, repo_command: str | None, worker_command: str | None) -> str | None:
    """The ``command`` template the operator set on the worker, when that is the one that
    runs (a repository's own template names nothing the sandbox shows)."""
    return worker_command if preset_name == "command" and not repo_command else None


@dataclass(frozen=True)
class LaunchPlan:
    """One agent run as the runner decided it."""

    preset: Preset
    mode: str  # SANDBOX_BWRAP or SANDBOX_NONE (see sandbox_mode)
    prompt: str
    dirs: AgentDirs
    workdir: Path  # the checkout
    shared_objects: Path  # the objects the checkout's git directory borrows (shown read-only)
    config: RepoConfig
    cost_limit: CostLimit
    model: str = ""
    session_id: str = ""  # an agent session to resume ("" for a new one)
    operator_template: str | None = None  # see operator_template()
    label: str = ""  # names the watch tasks (the task id)

    @property
    def sandboxed(self) -> bool:
        return self.mode == SANDBOX_BWRAP

    @property
    def timeout_s(self) -> float:
        return self.config.agent.timeout_minutes * 60

    def invocation(self, env: Mapping[str, str]) -> Invocation:
        return Invocation(
            prompt=self.prompt,
            prompt_file=str(self.dirs.prompt_file),
            workdir=str(self.workdir),
            model=self.model,
            session_id=self.session_id,
            max_cost_usd=self.cost_limit.usd,
            sandboxed=self.sandboxed,
            env=dict(env),
        )


@dataclass(frozen=True)
class LaunchSettings:
    """What every launch of a worker shares: the server's settings, the environment PATH
    and provider keys come from, the bot's mention (for messages) and the timings."""

    settings: Any
    environ: Mapping[str, str]
    mention: str = messages.DEFAULT_MENTION
    kill_grace: float = DEFAULT_GRACE_S
    disk_check_seconds: float = 5.0


# -- what came of it --------------------------------------------------------------------------


@dataclass(frozen=True)
class NotStarted:
    """The agent was not started: ``error`` says why (a setup problem, not retried)."""

    error: str
    category: str


@dataclass(frozen=True)
class Stopped:
    """The attempt was stopped before the agent started."""


@dataclass(frozen=True)
class LimitReached:
    """The agent was stopped past a resource limit (disk, processes, CPU, file size)."""

    message: str
    refused: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProviderUnreachable:
    """The agent failed and its model provider never answered: a configuration error."""

    message: str
    result: AgentResult
    refused: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finished:
    """The agent ran and ended; ``result`` is what it reported (any outcome, stopped too)."""

    result: AgentResult
    refused: tuple[str, ...] = ()
    killed_for_daily: bool = False  # a cost kill was for the repository's daily cap

    @property
    def daily_cap_killed(self) -> bool:
        return self.result.outcome is AgentOutcome.KILLED_COST and self.killed_for_daily


LaunchOutcome = NotStarted | Stopped | LimitReached | ProviderUnreachable | Finished


# -- choosing -----------------------------------------------------------------------------------


def choose_preset(
    name: str,
    *,
    command: str | None,
    executables: Mapping[str, str],
    model_prices: str,
    env_names: Sequence[str],
    operator_env: str,
    mention: str = messages.DEFAULT_MENTION,
) -> Preset | NotStarted:
    """The agent preset named ``name`` (``command``: the ``command`` preset's template;
    ``model_prices``: ``PATCHWRIGHT_MODEL_PRICES``; ``env_names``: the repository's
    ``agent.env``, checked against ``PATCHWRIGHT_AGENT_ENV`` = ``operator_env``), or why
    there is none."""
    try:
        return get_preset(
            name,
            command=command,
            executables=executables,
            prices=DEFAULT_PRICES.with_overrides(model_prices),
            command_keys=command_env(env_names, operator_env),
        )
    except ValueError as exc:
        return NotStarted(failures.agent_not_configured(exc, mention), category="config")


def sandbox_mode(choice: str, bwrap: BwrapProbe, *, mention: str = messages.DEFAULT_MENTION) -> str | NotStarted:
    """``bwrap`` or ``none`` for ``PATCHWRIGHT_SANDBOX`` = ``choice``; never a silent
    downgrade: ``auto`` without a working bubblewrap runs no agent (only an explicit
    ``none`` runs one unsandboxed)."""
    if choice == "none":
        return SANDBOX_NONE
    if not bwrap.available():
        reason = messages.SANDBOX_UNAVAILABLE.format(problem=bwrap.problem)
        return NotStarted(messages.AGENT_NOT_RUN.format(reason=reason, mention=mention), category="sandbox")
    return SANDBOX_BWRAP


# -- running --------------------------------------------------------------------------------------


class LaunchLog(Protocol):
    """What a launch needs of :class:`bot.worker.attempt_log.AttemptLog`."""

    secrets: list[str]

    async def add(self, line: str) -> None: ...

    async def note(self, text: str) -> None: ...


class Supervision(Protocol):
    """What a launch needs of :class:`bot.worker.runner.AttemptControl`."""

    @property
    def reason(self) -> object | None: ...

    def attach(self, process: AgentProcess) -> None: ...

    def detach(self) -> None: ...


class CostWatch:
    """The attempt's spend against its :class:`CostLimit`."""

    def __init__(self, limit: CostLimit) -> None:
        self.limit = limit
        self.killed_for_daily = False

    def check(self, spent_usd: float) -> KillReason | None:
        """``COST`` once ``spent_usd`` reaches the limit (the agent is then killed)."""
        if spent_usd >= self.limit.usd:
            self.killed_for_daily = self.limit.daily
            return KillReason.COST
        return None


def provider_secrets(env: Mapping[str, str], keys: Sequence[str]) -> list[str]:
    """The values of the preset's provider variables that are secrets (API keys): they
    never show in a log or a message."""
    return [env[key] for key in keys if env.get(key) and is_secret_name(key)]


def running_note(
    preset_name: str, *, sandboxed: bool, session: str, resumed: bool, timeout_s: float, cost_limit_usd: float
) -> str:
    """The log line said as the agent starts."""
    return (
        f"running the {preset_name} agent"
        + (" in bubblewrap" if sandboxed else "")
        + (f", resuming session {session}" if resumed else "")
        + f" (timeout {timeout_s:g} s, cost limit ${cost_limit_usd:.2f})"
    )


def prepare_dirs(dirs: AgentDirs, prompt: str, workdir: Path) -> None:
    """A clean per-attempt directory with the prompt file, the task's HOME, and no signal
    file left in the checkout."""
    shutil.rmtree(dirs.agent_dir, ignore_errors=True)
    for path in (dirs.home, dirs.tmp, dirs.prompt_dir):
        path.mkdir(parents=True, exist_ok=True)
    dirs.prompt_file.write_text(prompt, encoding="utf-8")
    clear_signal(workdir)


async def watch_disk_usage(
    paths: Sequence[Path], *, limit_mb: float, every: float, on_over: Callable[[], None]
) -> None:
    """Call ``on_over`` (once) when the files under ``paths`` grow past ``limit_mb``
    (``PATCHWRIGHT_AGENT_DISK_MB``), checking every ``every`` seconds."""
    while True:
        await asyncio.sleep(every)
        if await asyncio.to_thread(disk_usage_mb, *paths) > limit_mb:
            on_over()
            return


class AgentLaunch:
    """One run of the agent for a :class:`LaunchPlan`. ``await run(...)`` returns a
    :data:`LaunchOutcome`; :attr:`spent_usd` is what the agent spent so far, readable
    even when the run raised."""

    def __init__(self, plan: LaunchPlan, worker: LaunchSettings) -> None:
        self.plan = plan
        self.worker = worker
        self._state: StreamState | None = None

    @property
    def spent_usd(self) -> float:
        """What the agent spent so far (0 until the process is started)."""
        return self._state.cost_usd if self._state is not None else 0.0

    async def run(self, *, log: LaunchLog, control: Supervision) -> LaunchOutcome:
        plan, dirs, preset = self.plan, self.plan.dirs, self.plan.preset
        settings = self.worker.settings
        await asyncio.to_thread(prepare_dirs, dirs, plan.prompt, plan.workdir)
        try:
            env = agent_env(
                home=dirs.home, tmpdir=dirs.tmp, passthrough=self.worker.environ, preset_keys=preset.provider_keys
            )
        except SandboxError as exc:
            return NotStarted(failures.agent_env_refused(exc), category="config")
        command = preset.build(plan.invocation(env))
        env.update(command.env)
        for secret in provider_secrets(env, preset.provider_keys):
            if secret not in log.secrets:
                log.secrets.append(secret)
        endpoints = provider_endpoints(preset.name, env, command_env=preset.provider_keys)
        confinement = await asyncio.to_thread(
            plan_confinement,
            mode=plan.mode,
            launch_argv=command.argv,
            settings=settings,
            config=plan.config,
            environ=self.worker.environ,
            operator_template=plan.operator_template,
            workdir=plan.workdir,
            home=dirs.home,
            tmpdir=dirs.tmp,
            agent_dir=dirs.agent_dir,
            read_only=[plan.shared_objects, dirs.prompt_dir],  # the agent's .git reads the objects
            grace=self.worker.kill_grace,
            endpoints=endpoints,
        )
        env.update(confinement.env)
        state = preset.new_state()
        costs = CostWatch(plan.cost_limit)

        async def on_line(line: str) -> KillReason | None:
            preset.parse_line(line, state)
            await log.add(line)
            return costs.check(state.cost_usd)

        async def poll_cost(interval: float) -> None:
            # For a CLI that prints its spend only at the end: the preset reads it meanwhile.
            while True:
                await asyncio.sleep(interval)
                await preset.poll_cost(state)
                if costs.check(state.cost_usd) is not None:
                    process.kill(KillReason.COST)
                    return

        for note in confinement.notes:
            await log.note(note)
        await log.note(
            running_note(
                preset.name,
                sandboxed=plan.sandboxed,
                session=plan.session_id,
                resumed=command.resumed,
                timeout_s=plan.timeout_s,
                cost_limit_usd=plan.cost_limit.usd,
            )
        )
        if control.reason is not None:
            return Stopped()
        process = AgentProcess(
            confinement.argv,
            cwd=plan.workdir,
            env=env,
            stdin_data=command.stdin,
            timeout=plan.timeout_s,
            on_line=on_line,
            redact=log.secrets,
            grace=self.worker.kill_grace,
        )
        control.attach(process)
        confinement.stop_when_providers_unreachable(lambda: process.kill(KillReason.STOPPED))
        disk_over = asyncio.Event()

        def disk_full() -> None:
            disk_over.set()
            process.kill(KillReason.STOPPED)

        watches = [
            asyncio.create_task(
                watch_disk_usage(
                    (plan.workdir, dirs.home, dirs.tmp),
                    limit_mb=settings.agent_disk_mb,
                    every=self.worker.disk_check_seconds,
                    on_over=disk_full,
                ),
                name=f"disk-usage {plan.label}",
            )
        ]
        if preset.cost_poll_seconds:
            watches.append(asyncio.create_task(poll_cost(preset.cost_poll_seconds), name=f"cost {plan.label}"))
        self._state = state  # from here on, what the agent spends is spent
        try:
            async with confinement:
                ended = await process.run()
        finally:
            for watch in watches:
                watch.cancel()
            await asyncio.gather(*watches, return_exceptions=True)
            control.detach()
        refused = tuple(confinement.refusals())
        for line in refused:
            await log.note(REFUSED_LOG_LINE.format(refusal=line))
        limit_message = (
            DISK_LIMIT_MESSAGE.format(limit=settings.agent_disk_mb)
            if disk_over.is_set()
            else await asyncio.to_thread(confinement.limit_message)
        )
        if limit_message is not None:
            await log.note(limit_message)
            return LimitReached(limit_message, refused=refused)
        signal_read = await asyncio.to_thread(read_signal, plan.workdir)
        result = preset.finish(state, ended.exit_code, signal_read, killed=ended.killed_reason)
        unreachable = confinement.unreachable_providers()
        if unreachable and result.outcome not in (AgentOutcome.DONE, AgentOutcome.QUESTIONS):
            # A configuration error, not a passing one: retrying with backoff would only wait.
            message = PROVIDER_UNREACHABLE.format(
                addresses=", ".join(e.address for e in unreachable),
                variables=", ".join(dict.fromkeys(e.variable for e in unreachable)),
                mention=self.worker.mention,
            )
            await log.note(message)
            return ProviderUnreachable(message, result, refused=refused)
        await log.note(
            f"the agent ended: {result.outcome.value} (exit {ended.exit_code}, {ended.duration:.1f} s, ${result.cost_usd:.4f})"
        )
        return Finished(result, refused=refused, killed_for_daily=costs.killed_for_daily)


__all__ = [
    "AgentDirs",
    "AgentLaunch",
    "CostLimit",
    "CostWatch",
    "Finished",
    "LaunchLog",
    "LaunchOutcome",
    "LaunchPlan",
    "LaunchSettings",
    "LimitReached",
    "NotStarted",
    "ProviderUnreachable",
    "Stopped",
    "Supervision",
    "choose_preset",
    "cost_limit",
    "operator_template",
    "prepare_dirs",
    "provider_secrets",
    "running_note",
    "sandbox_mode",
    "task_home",
    "watch_disk_usage",
]
