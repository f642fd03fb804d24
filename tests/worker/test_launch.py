"""The agent launch's pure parts (bot/worker/launch.py) and the failure texts
(bot/messages/failures.py): no subprocess, no emulator."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bot import messages
from bot.agents.presets import CommandPreset
from bot.agents.process import AgentProcess
from bot.agents.result import AgentOutcome, AgentResult, KillReason
from bot.config import RepoConfig
from bot.messages import failures
from bot.worker import launch
from bot.worker.confinement import SANDBOX_BWRAP, SANDBOX_NONE, UNSANDBOXED_LOG_NOTE
from bot.worker.runner import StopReason

MENTION = "@pw-bot"


# -- helpers ----------------------------------------------------------------------------------


class FakeProbe:
    def __init__(self, available: bool, problem: str = "") -> None:
        self._available = available
        self.problem = problem
        self.probed = 0

    def available(self) -> bool:
        self.probed += 1
        return self._available


class FakeLog:
    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.notes: list[str] = []
        self.lines: list[str] = []

    async def add(self, line: str) -> None:
        self.lines.append(line)

    async def note(self, text: str) -> None:
        self.notes.append(text)


class FakeControl:
    def __init__(self, reason: object | None = None) -> None:
        self.reason = reason
        self.attached: list[AgentProcess] = []

    def attach(self, process: AgentProcess) -> None:
        self.attached.append(process)

    def detach(self) -> None:
        pass


def preset(name: str = "command", **kwargs: Any) -> Any:
    chosen = launch.choose_preset(
        name,
        command=kwargs.pop("command", "echo {prompt_file}"),
        executables={},
        model_prices="",
        env_names=kwargs.pop("env_names", ()),
        operator_env=kwargs.pop("operator_env", ""),
        mention=MENTION,
    )
    assert not isinstance(chosen, launch.NotStarted), chosen
    return chosen


def plan(tmp_path: Path, **changes: Any) -> launch.LaunchPlan:
    workdir = tmp_path / "checkout"
    workdir.mkdir(exist_ok=True)
    fields: dict[str, Any] = {
        "preset": preset(),
        "mode": SANDBOX_NONE,
        "prompt": "Fix the bug.\n",
        "dirs": launch.AgentDirs.for_attempt(tmp_path / "data", "t1", 2),
        "workdir": workdir,
        "shared_objects": tmp_path / "objects",
        "config": RepoConfig(),
        "cost_limit": launch.CostLimit(1.5),
        "model": "m1",
        "session_id": "",
        "label": "t1",
    }
    fields.update(changes)
    return launch.LaunchPlan(**fields)


def settings(tmp_path: Path) -> Any:
    return SimpleNamespace(
        agent_max_processes=64,
        agent_memory_mb=1024,
        agent_cpu_seconds=60,
        agent_file_size_mb=10,
        agent_disk_mb=100,
        data_dir=str(tmp_path / "data"),
    )


# -- what runs --------------------------------------------------------------------------------


def test_agent_dirs_are_per_attempt_and_home_is_per_task(tmp_path: Path) -> None:
    dirs = launch.AgentDirs.for_attempt(tmp_path, "task-7", 3)
    assert dirs.agent_dir == tmp_path / "agents" / "task-7-3"
    assert dirs.home == tmp_path / "homes" / "task-7" == launch.task_home(tmp_path, "task-7")
    assert dirs.tmp == dirs.agent_dir / "tmp"
    assert dirs.prompt_file == dirs.agent_dir / "prompt" / "prompt.md"
    assert launch.AgentDirs.for_attempt(tmp_path, "task-7", 4).home == dirs.home


def test_cost_limit_is_the_task_cap_left_or_the_tighter_daily_cap() -> None:
    assert launch.cost_limit(2.0, None) == launch.CostLimit(2.0, daily=False)
    assert launch.cost_limit(2.0, 5.0) == launch.CostLimit(2.0, daily=False)
    assert launch.cost_limit(2.0, 0.5) == launch.CostLimit(0.5, daily=True)
    assert launch.cost_limit(2.0, 2.0) == launch.CostLimit(2.0, daily=False)  # a tie: the task's cap


def test_the_operator_template_is_shown_only_when_it_is_the_one_that_runs() -> None:
    assert launch.operator_template("command", None, "run {prompt_file}") == "run {prompt_file}"
    assert launch.operator_template("command", "repo {prompt_file}", "run {prompt_file}") is None
    assert launch.operator_template("claude", None, "run {prompt_file}") is None


def test_the_plan_makes_the_presets_invocation(tmp_path: Path) -> None:
    p = plan(tmp_path, mode=SANDBOX_BWRAP, session_id="s-1")
    env = {"HOME": "/h", "ANTHROPIC_API_KEY": "k"}
    invocation = p.invocation(env)
    assert invocation.prompt == "Fix the bug.\n"
    assert invocation.prompt_file == str(p.dirs.prompt_file)
    assert invocation.workdir == str(p.workdir)
    assert (invocation.model, invocation.session_id, invocation.max_cost_usd) == ("m1", "s-1", 1.5)
    assert invocation.sandboxed and p.sandboxed
    assert dict(invocation.env) == env and invocation.env is not env
    assert p.timeout_s == RepoConfig().agent.timeout_minutes * 60
    assert not plan(tmp_path).sandboxed


def test_choose_preset_says_why_there_is_no_agent() -> None:
    assert preset("claude").name == "claude"
    unknown = launch.choose_preset(
        "cursor", command=None, executables={}, model_prices="", env_names=(), operator_env="", mention=MENTION
    )
    assert isinstance(unknown, launch.NotStarted) and unknown.category == "config"
    assert unknown.error.startswith("The agent is not configured: unknown agent preset 'cursor'")
    assert f"`{MENTION} retry`" in unknown.error
    # The repository's agent.env and the price table are part of the choice, not a crash.
    refused_env = launch.choose_preset(
        "command", command="x", executables={}, model_prices="", env_names=("DATABASE_URL",), operator_env=""
    )
    assert isinstance(refused_env, launch.NotStarted) and "DATABASE_URL" in refused_env.error
    bad_prices = launch.choose_preset(
        "codex", command=None, executables={}, model_prices="nonsense", env_names=(), operator_env=""
    )
    assert isinstance(bad_prices, launch.NotStarted) and bad_prices.category == "config"
    allowed = preset("command", env_names=("MY_KEY",), operator_env="MY_KEY")
    assert allowed.provider_keys == ("MY_KEY",)


def test_sandbox_mode_never_downgrades_silently() -> None:
    probe = FakeProbe(available=False, problem="no user namespaces")
    assert launch.sandbox_mode("none", probe) == SANDBOX_NONE  # type: ignore[arg-type]
    assert probe.probed == 0  # an explicit none does not even probe
    assert launch.sandbox_mode("auto", FakeProbe(available=True)) == SANDBOX_BWRAP  # type: ignore[arg-type]
    assert launch.sandbox_mode("bwrap", FakeProbe(available=True)) == SANDBOX_BWRAP  # type: ignore[arg-type]
    for choice in ("auto", "bwrap"):
        refused = launch.sandbox_mode(choice, probe, mention=MENTION)  # type: ignore[arg-type]
        assert isinstance(refused, launch.NotStarted) and refused.category == "sandbox"
        reason = messages.SANDBOX_UNAVAILABLE.format(problem="no user namespaces")
        assert refused.error == messages.AGENT_NOT_RUN.format(reason=reason, mention=MENTION)


def test_cost_watch_kills_at_the_limit_and_remembers_whose_limit_it_was() -> None:
    task_cap = launch.CostWatch(launch.CostLimit(1.0))
    assert task_cap.check(0.99) is None
    assert task_cap.check(1.0) is KillReason.COST and not task_cap.killed_for_daily
    daily = launch.CostWatch(launch.CostLimit(0.25, daily=True))
    assert daily.check(0.1) is None and not daily.killed_for_daily
    assert daily.check(0.3) is KillReason.COST and daily.killed_for_daily


def test_a_daily_cap_kill_is_told_apart_from_other_endings() -> None:
    killed = AgentResult(AgentOutcome.KILLED_COST, cost_usd=0.3)
    assert launch.Finished(killed, killed_for_daily=True).daily_cap_killed
    assert not launch.Finished(killed, killed_for_daily=False).daily_cap_killed
    # The daily limit was the tighter one, but the agent ended on its own.
    assert not launch.Finished(AgentResult(AgentOutcome.DONE), killed_for_daily=True).daily_cap_killed


def test_provider_secrets_are_the_key_like_variables_with_a_value() -> None:
    env = {"ANTHROPIC_API_KEY": "sk-1", "ANTHROPIC_BASE_URL": "http://x", "OPENAI_API_KEY": "", "PATH": "/bin"}
    keys = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "MISSING_TOKEN")
    assert launch.provider_secrets(env, keys) == ["sk-1"]


def test_running_note() -> None:
    assert (
        launch.running_note("claude", sandboxed=True, session="s-9", resumed=True, timeout_s=1800, cost_limit_usd=2)
        == "running the claude agent in bubblewrap, resuming session s-9 (timeout 1800 s, cost limit $2.00)"
    )
    assert (
        launch.running_note("command", sandboxed=False, session="s-9", resumed=False, timeout_s=1.5, cost_limit_usd=0.125)
        == "running the command agent (timeout 1.5 s, cost limit $0.12)"
    )


def test_prepare_dirs_starts_the_attempt_clean(tmp_path: Path) -> None:
    dirs = launch.AgentDirs.for_attempt(tmp_path / "data", "t1", 1)
    workdir = tmp_path / "checkout"
    (workdir / ".patchwright").mkdir(parents=True)
    (workdir / ".patchwright" / "signal.json").write_text('{"status": "done"}')
    dirs.tmp.mkdir(parents=True)
    (dirs.tmp / "left-over").write_text("x")
    dirs.home.mkdir(parents=True)
    (dirs.home / "session").write_text("kept")
    launch.prepare_dirs(dirs, "The prompt.\n", workdir)
    assert dirs.prompt_file.read_text(encoding="utf-8") == "The prompt.\n"
    assert dirs.tmp.is_dir() and not (dirs.tmp / "left-over").exists()
    assert (dirs.home / "session").read_text() == "kept"  # HOME outlives the attempt
    assert not (workdir / ".patchwright" / "signal.json").exists()


async def test_the_disk_watch_calls_once_past_the_limit(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 4096)
    over: list[bool] = []
    await asyncio.wait_for(
        launch.watch_disk_usage([tmp_path], limit_mb=0, every=0.001, on_over=lambda: over.append(True)), 5
    )
    assert over == [True]
    under = asyncio.create_task(
        launch.watch_disk_usage([tmp_path], limit_mb=100, every=0.001, on_over=lambda: over.append(False))
    )
    await asyncio.sleep(0.02)
    assert not under.done()
    under.cancel()
    with pytest.raises(asyncio.CancelledError):
        await under
    assert over == [True]


async def test_a_stop_before_the_start_starts_no_process(tmp_path: Path) -> None:
    log, control = FakeLog(), FakeControl(reason=StopReason.LEFT_RUNNING)
    p = plan(tmp_path)
    agent = launch.AgentLaunch(p, launch.LaunchSettings(settings=settings(tmp_path), environ={"PATH": "/usr/bin"}))
    outcome = await agent.run(log=log, control=control)
    assert outcome == launch.Stopped()
    assert control.attached == [] and agent.spent_usd == 0.0
    assert p.dirs.prompt_file.read_text(encoding="utf-8") == "Fix the bug.\n"
    assert log.notes == [UNSANDBOXED_LOG_NOTE, "running the command agent (timeout 1800 s, cost limit $1.50)"]


async def test_provider_keys_are_redacted_before_anything_runs(tmp_path: Path) -> None:
    log, control = FakeLog(), FakeControl(reason=StopReason.SHUTDOWN)
    p = plan(tmp_path, preset=preset("command", env_names=("MY_API_KEY",), operator_env="MY_API_KEY"))
    worker = launch.LaunchSettings(settings=settings(tmp_path), environ={"MY_API_KEY": "sekrit-123"})
    await launch.AgentLaunch(p, worker).run(log=log, control=control)
    assert log.secrets == ["sekrit-123"]


async def test_an_environment_the_agent_may_never_get_is_not_started(tmp_path: Path) -> None:
    # (choose_preset refuses such a name already; the allowlist refuses it again.)
    p = plan(tmp_path, preset=CommandPreset("x {prompt_file}", provider_keys=("GITHUB_TOKEN",)))
    outcome = await launch.AgentLaunch(p, launch.LaunchSettings(settings=settings(tmp_path), environ={})).run(
        log=FakeLog(), control=FakeControl()
    )
    assert isinstance(outcome, launch.NotStarted) and outcome.category == "config"
    assert outcome.error == "The agent is not configured: the agent environment never includes GITHUB_TOKEN."


# -- bot/messages/failures.py -------------------------------------------------------------------


def test_failure_texts_keep_their_wording() -> None:
    assert failures.config_invalid("main", "agent: bad", MENTION) == (
        "`.github/patchwright.yml` on `main` is not valid:\nagent: bad\n"
        "Fix the file on `main`, then use `@pw-bot retry`."
    )
    assert failures.daily_cap_reached(3.456, MENTION) == (
        "The repository's daily cost cap ($3.46, `budget.daily_cost_usd`) is reached. "
        "Use `@pw-bot retry` after 00:00 UTC, or raise the cap in `.github/patchwright.yml`."
    )
    assert failures.agent_timed_out(30) == "The agent ran out of time (30 min) and was killed."
    assert failures.agent_timed_out(0.5) == "The agent ran out of time (0.5 min) and was killed."
    assert failures.agent_over_cost_cap(5) == (
        "The agent was killed: this attempt would pass the task's cost cap ($5.00, `budget.max_cost_usd`)."
    )
    assert failures.git_failed("pushing", "rejected") == "git failed while pushing: rejected"
    assert failures.push_failed("patchwright/1-x", "stale") == "Could not push to `patchwright/1-x`: stale"
    assert failures.pull_request_failed("0123456789abcdef", "502") == (
        "Pushed 0123456, but GitHub failed to open or update the pull request: 502"
    )
    assert failures.checks_refused("- `.env`: a secret", MENTION) == (
        "- `.env`: a secret\nNothing was pushed. Remove these changes from the request, or change "
        "them yourself, then use `@pw-bot retry [instructions]`."
    )
    assert failures.worker_failed("KeyError: 'x'") == "The worker failed while running this attempt (KeyError: 'x')."
    assert failures.FAILED_LOG_NOTE.format(error="e") == "attempt failed: e"
    assert failures.TRANSIENT_LOG_NOTE.format(reason="r") == "temporary failure: r"


def test_failure_texts_name_the_command_that_helps() -> None:
    error = ValueError("boom")
    assert "`@pw-bot start over`" in failures.branch_missing(error, MENTION)
    for text in (
        failures.github_refused("reading the repository", error, "o/r", MENTION),
        failures.git_refused("fetching", "denied", "o/r", MENTION),
        failures.agent_not_configured(error, MENTION),
        failures.agent_could_not_run("bad key", MENTION),
    ):
        assert "`@pw-bot retry`" in text and ("boom" in text or "denied" in text or "bad key" in text)
    assert "`@pw-bot retry [instructions]`" in failures.uncommittable("bad path", MENTION)
    assert "`@patchwright retry`" in failures.agent_could_not_run("x")  # the default mention


def test_salvage_notes_are_appended_sentences() -> None:
    for note in (
        failures.salvage_saved("patchwright/wip/t-1"),
        failures.salvage_refused(".env, key.pem"),
        failures.salvage_failed("network down"),
    ):
        assert note.startswith(" ") and not note.startswith("  ")
    assert failures.salvage_saved("patchwright/wip/t-1") == " Unfinished work saved on `patchwright/wip/t-1`."
    assert "(.env, key.pem)" in failures.salvage_refused(".env, key.pem")


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        (StopReason.LEFT_RUNNING, "the task was stopped"),
        (StopReason.LOST, "another worker took the task over"),
        (StopReason.SHUTDOWN, "the worker shut down"),
        (None, "it was stopped"),
    ],
)
def test_ended_early_says_why_for_every_stop_reason(reason: StopReason | None, words: str) -> None:
    note = failures.salvage_saved("patchwright/wip/t-2")
    assert failures.ended_early(2, reason, note) == f"Attempt 2 ended early: {words}.{note}"
    assert failures.ended_early(2, reason) == f"Attempt 2 ended early: {words}."


def test_every_stop_reason_has_words() -> None:
    assert set(failures.STOP_REASONS) == {r.value for r in StopReason}
