"""One attempt of a claimed task, end to end (SPEC §6.2–§6.8).

:class:`AttemptRunner` takes a task the pool claimed (status ``running``) and:

1. reads the repository (``clone_url``, default branch) and its ``.github/patchwright.yml``;
2. checks out the task branch (new from the base on the first attempt, else the branch as it
   is on the remote: the bot's last push plus any human commits);
3. for a merge-conflict retry merges the base itself: a clean merge is pushed without the agent;
4. plans the agent's run (preset, sandbox mode, prompt, cost limit) and has
   :mod:`bot.worker.launch` run it (prompt file, environment allowlist, bubblewrap when
   available, timeout, cost read as it streams, log lines batched into the store with secrets
   redacted); what came of it is an outcome value this module ends the attempt by;
5. commits what the agent left, refuses secrets and protected paths, pushes with
   compare-and-swap, opens or updates the PR, the check run and the review-thread replies;
6. reports the outcome through a rule of :mod:`bot.tasks.rules` (which refreshes the status
   comment) and finishes the attempt row.

Stopped, timed-out, cost-killed, crashed or questioning agents have their work salvaged to
``patchwright/wip/<task>-<attempt>`` (after the same pre-push checks). The texts of attempts
that end without a push are in :mod:`bot.messages.failures`. The installation token
is fetched per network step, reaches git only through :class:`GitAuth`, and never the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import re
import shutil
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import gidgethub

from bot import messages
from bot.agents.presets import Preset
from bot.agents.process import DEFAULT_GRACE_S, AgentProcess
from bot.agents.result import AgentOutcome, AgentResult
from bot.agents.sandbox import BwrapProbe
from bot.config import ConfigError, RepoConfig, decode_private_key
from bot.github import api
from bot.github.client import is_refusal
from bot.logs import log_context
from bot.messages import failures
from bot.prompts import AttemptContext, PreviousAttempt, TaskContext, build_prompt
from bot.operations.services import Services
from bot.store.base import Attempt, Store, StoreError
from bot.tasks import rules
from bot.tasks.model import RetryKind, Status, Task
from bot.tasks.rules import Decision
from bot.worker import launch, pr
from bot.worker.attempt_log import AttemptLog, full_log_path
from bot.tasks.branches import task_branch, wip_branch
from bot.worker.git import (
    BranchNotFoundError,
    Checkout,
    GitAuth,
    GitAuthError,
    GitCommandError,
    UnresolvedMergeError,
    UnstageablePathError,
    Workspaces,
    tracking_ref,
)
from bot.worker.guard import MIB, GuardPolicy, KnownSecret, Violation, describe

log = logging.getLogger(__name__)

RESUMED_KINDS = frozenset({RetryKind.FEEDBACK, RetryKind.ANSWERS, RetryKind.MERGE_CONFLICT})
MAX_SUMMARY_CHARS = 2000


class StopReason(str, enum.Enum):
    """Why the worker ends an attempt before the agent does."""

    LEFT_RUNNING = "left_running"  # stopped, closed or restarted by a human (status changed)
    LOST = "lost"  # the heartbeat was refused: another process took the task back
    SHUTDOWN = "shutdown"  # this worker is shutting down

    def __str__(self) -> str:
        return self.value


class AttemptControl:
    """The link between the pool's supervision (heartbeat, status checks, stop hook, shutdown)
    and a running attempt: ``stop()`` ends the agent at once, wherever the attempt is."""

    def __init__(self) -> None:
        self.reason: StopReason | None = None
        self.stopped = asyncio.Event()
        self._process: AgentProcess | None = None

    def stop(self, reason: StopReason) -> None:
        if self.reason is None:
            self.reason = reason
        self.stopped.set()
        if self._process is not None:
            self._process.stop()

    def attach(self, process: AgentProcess) -> None:
        self._process = process
        if self.reason is not None:
            process.stop()

    def detach(self) -> None:
        self._process = None


class _Stopped(Exception):
    """The attempt was stopped between steps (see :class:`AttemptControl`)."""


class _Abort(Exception):
    """End the attempt with an already-made report (raised from deep inside a step)."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


@dataclass(frozen=True)
class Salvage:
    """What became of an attempt's unfinished work (SPEC §6.6): ``saved`` on its wip branch
    or not, and ``note``, the sentence to append to why the attempt ended ("" when there
    was nothing to save)."""

    saved: bool = False
    note: str = ""


@dataclass(frozen=True)
class RunnerOptions:
    """How attempts run. ``environ`` is where PATH and the agents' provider keys come from
    (the process environment, handed down from ``__main__``); ``sandbox`` is ``auto``
    (bubblewrap when it works here), ``bwrap`` (required) or ``none``."""

    environ: Mapping[str, str] = field(default_factory=dict)
    sandbox: str = "auto"
    executables: Mapping[str, str] = field(default_factory=dict)
    kill_grace: float = DEFAULT_GRACE_S
    disk_check_seconds: float = 5.0
    log_batch_lines: int = 50
    log_batch_seconds: float = 1.0


class TokenProvider(Protocol):
    async def installation_token(self, installation_id: int) -> str: ...


class TokenSource(Protocol):
    """What the runner needs of :class:`bot.github.client.GitHubClientFactory`."""

    @property
    def tokens(self) -> TokenProvider: ...


# --------------------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------------------


def error_signature(text: str) -> str:
    """A normalised error for the no-progress breaker: lower case, numbers and hex ids
    folded, whitespace collapsed, clipped."""
    folded = re.sub(r"\b[0-9a-f]{7,40}\b", "<sha>", text.lower())
    folded = re.sub(r"\d+", "#", folded)
    return " ".join(folded.split())[:200]


def commit_message(task: Task, kind: RetryKind, summary: str, attempt: int) -> str:
    """The bot's commit message for what the agent left."""
    title = " ".join(task.title.split())[:60] or "patchwright task"
    subjects = {
        RetryKind.CI_FAILURE: f"Fix CI failure (#{task.issue_number})",
        RetryKind.FEEDBACK: f"Address review feedback (#{task.issue_number})",
        RetryKind.MERGE_CONFLICT: f"Resolve merge conflict (#{task.issue_number})",
    }
    subject = subjects.get(kind, f"{title} (#{task.issue_number})")
    body = " ".join(summary.split())
    if len(body) > MAX_SUMMARY_CHARS:
        body = body[: MAX_SUMMARY_CHARS - 1] + "…"
    trailer = f"patchwright attempt {attempt} ({kind.value})"
    return f"{subject}\n\n{body}\n\n{trailer}" if body else f"{subject}\n\n{trailer}"


def conflict_violations(from_start: Sequence[Violation], from_base: Sequence[Violation]) -> list[Violation]:
    """After a merge of the base, the violations the attempt itself introduced: those found in
    the diff from the attempt's start that the diff from the merged base tip shows too (a
    file that arrived unchanged from the base is not the agent's doing)."""
    seen = {(v.path, v.rule) for v in from_base}
    return [v for v in from_start if (v.path, v.rule) in seen]


def day_start(now: Any) -> Any:
    """Midnight UTC of ``now``'s day (the per-repo daily cap's window)."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


# --------------------------------------------------------------------------------------
# the runner
# --------------------------------------------------------------------------------------


@dataclass
class _Run:
    """Everything one attempt accumulates."""

    task: Task  # as claimed
    control: AttemptControl
    gh: Any
    log: AttemptLog
    number: int
    kind: RetryKind
    threads: tuple[str, ...]
    config: RepoConfig = field(default_factory=RepoConfig)
    remote_url: str = ""
    base: str = ""
    branch: str = ""
    checkout: Checkout | None = None
    agent_dir: Path | None = None
    running_checks: pr.RunningChecks | None = None
    cost: float = 0.0
    session: str | None = None
    summary: str = ""
    attempt_started: bool = False
    cost_known: bool = True
    refused: str = ""  # connections the sandbox refused, one a line


class AttemptRunner:
    """Runs attempts for a pool (one instance per pool; stateless between attempts)."""

    def __init__(
        self,
        services: Services,
        *,
        github: TokenSource,
        workspaces: Workspaces,
        worker_id: str,
        options: RunnerOptions | None = None,
        bwrap: BwrapProbe | None = None,
        on_repo_config: Callable[[str, RepoConfig], None] | None = None,
    ) -> None:
        self.services = services
        self.github = github
        self.workspaces = workspaces
        self.worker_id = worker_id
        self.options = options or RunnerOptions()
        self.bwrap = bwrap or BwrapProbe()
        self.on_repo_config = on_repo_config
        if self.options.sandbox not in ("auto", "bwrap", "none"):
            raise ValueError(f"sandbox must be auto, bwrap or none, not {self.options.sandbox!r}")
        # One attempt of a task at a time, cleanup included: the decision that ends attempt n
        # makes the task claimable at once, and attempt n+1 uses the same worktree path.
        self._task_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def actor(self) -> str:
        return f"worker:{self.worker_id}"

    @property
    def store(self) -> Store:
        return self.services.store

    # -- entry point ----------------------------------------------------------------------

    async def run(self, task: Task, control: AttemptControl) -> str:
        """Run the claimed ``task``'s current attempt; returns its outcome word."""
        lock = self._task_locks.get(task.id)
        if lock is None:
            lock = self._task_locks[task.id] = asyncio.Lock()
        async with lock:
            return await self._run_locked(task, control)

    async def _run_locked(self, task: Task, control: AttemptControl) -> str:
        with log_context(task_id=task.id, repo=task.repo):
            log_ = AttemptLog(
                self.store,
                task.id,
                task.attempt,
                batch_lines=self.options.log_batch_lines,
                batch_seconds=self.options.log_batch_seconds,
                full_log=full_log_path(self.services.settings, task.id, task.attempt),
            )
            run = _Run(
                task=task,
                control=control,
                gh=self.services.github_for(task.installation_id),
                log=log_,
                number=task.attempt,
                kind=task.retry_kind,
                threads=task.review_threads,
            )
            log_.start()
            try:
                return await self._run(run)
            except _Abort as done:
                return done.outcome
            except _Stopped:
                return await self._stopped(run)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or an unexpected failure: report it, never hang the task
                log.exception("attempt %s of %s failed unexpectedly", run.number, task.id)
                return await self._crashed(run, exc)
            finally:
                await self._cleanup(run)

    # -- the steps ------------------------------------------------------------------------

    async def _run(self, run: _Run) -> str:
        task = run.task
        await self._start_attempt(run)
        await run.log.note(f"attempt {run.number} ({run.kind.value}) on worker {self.worker_id}")
        repo_info = await self._github_step(run, "reading the repository", api.get_repo(run.gh, task.repo))
        default_branch = str(repo_info.get("default_branch") or "main")
        run.remote_url = str(repo_info.get("clone_url") or "")
        run.config, config_error = await self._github_step(
            run,
            "reading .github/patchwright.yml",
            self.services.repo_configs.get(run.gh, task.repo, default_branch),
        )
        if self.on_repo_config is not None:
            self.on_repo_config(task.repo, run.config)
        run.base = task.base_branch or default_branch
        run.branch = task.branch or task_branch(task.issue_number, task.title)
        await self._report_started(run)
        if config_error:
            return await self._fail(
                run,
                failures.config_invalid(default_branch, config_error, self.services.mention),
                retryable=False,
                category="config",
            )
        gate = rules.cost_gate(task)
        if gate:
            return await self._fail(run, gate, retryable=False, category="cost")
        daily_left = await self._daily_left(run)
        if daily_left is not None and daily_left <= 0:
            return await self._fail(run, self._daily_message(run), retryable=False, category="daily_cost")
        self._check_stop(run)

        if task.pr_number is not None and task.head_sha:
            run.running_checks = await pr.start_check_run(
                run.gh,
                repo=task.repo,
                head_sha=task.head_sha,
                task_id=task.id,
                attempt=run.number,
                max_attempts=task.max_attempts,
                kind=run.kind.value,
            )
        run.checkout = await self._checkout(run)
        self._check_stop(run)

        conflicts: tuple[str, ...] = ()
        if run.kind is RetryKind.MERGE_CONFLICT:
            outcome = await self._git_step(
                run, "merging the base branch", run.checkout.merge_base(auth=await self._auth(run))
            )
            if outcome.clean:
                await run.log.note(
                    (messages.LOG_BASE_MERGED if not outcome.up_to_date else messages.LOG_BASE_ALREADY_MERGED).format(
                        base=run.base
                    )
                )
                run.summary = (
                    f"Merged `{run.base}` without conflicts; the agent did not run."
                    if not outcome.up_to_date
                    else f"`{run.base}` was already merged; nothing to do."
                )
                return await self._push_and_report(run)
            conflicts = outcome.conflicts
            await run.log.note(messages.LOG_CONFLICTS.format(files=", ".join(conflicts)))

        return await self._run_agent(run, conflicts)

    async def _start_attempt(self, run: _Run) -> None:
        attempt = Attempt(
            task_id=run.task.id,
            number=run.number,
            kind=run.kind,
            started_at=self.services.clock(),
            head_before=run.task.head_sha,
        )
        try:
            await self.store.start_attempt(attempt)
            run.attempt_started = True
        except StoreError as exc:
            log.warning("attempt row not recorded: %s", exc)

    async def _report_started(self, run: _Run) -> None:
        reason = rules.CLAIMED.format(attempt=run.number, worker=self.worker_id)
        try:
            await self.services.reporter.update(run.gh, run.task, reason=reason)
        except (gidgethub.GitHubException, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("status comment not updated: %s", exc)

    async def _daily_left(self, run: _Run) -> float | None:
        cap = run.config.budget.daily_cost_usd
        if cap is None:
            return None
        spent = await self.store.repo_cost_since(run.task.repo, day_start(self.services.clock()))
        return cap - spent

    def _daily_message(self, run: _Run) -> str:
        return failures.daily_cap_reached(run.config.budget.daily_cost_usd or 0.0, self.services.mention)

    def _check_stop(self, run: _Run) -> None:
        if run.control.reason is not None:
            raise _Stopped()

    async def _auth(self, run: _Run) -> GitAuth:
        """A fresh installation token for one network step (the provider caches it); a
        failure to get one ends the attempt as a transient error."""
        try:
            return await self._fetch_auth(run)
        except (gidgethub.GitHubException, aiohttp.ClientError, TimeoutError) as exc:
            raise _Abort(await self._transient(run, failures.no_installation_token(exc))) from None

    async def _fetch_auth(self, run: _Run) -> GitAuth:
        token = await self.github.tokens.installation_token(run.task.installation_id)
        auth = GitAuth(token)
        for secret in auth.secrets():
            if secret not in run.log.secrets:
                run.log.secrets.append(secret)
        return auth

    async def _checkout(self, run: _Run) -> Checkout:
        task = run.task
        fresh = not task.head_sha
        await run.log.note(
            f"checking out {run.branch} " + (f"from {run.base}" if fresh else "as it is on the remote")
        )
        auth = await self._auth(run)
        try:
            checkout = await self.workspaces.checkout(
                repo=task.repo,
                remote_url=run.remote_url,
                auth=auth,
                task_id=task.id,
                branch=run.branch,
                base_branch=run.base,
                fresh=fresh,
            )
        except BranchNotFoundError as exc:
            raise _Abort(
                await self._fail(
                    run, failures.branch_missing(exc, self.services.mention), retryable=False, category="checkout"
                )
            ) from None
        except (GitCommandError, ValueError) as exc:
            raise _Abort(await self._git_failure(run, "checking out", exc)) from None
        await run.log.note(f"checked out {run.branch} at {checkout.start_sha[:12]}")
        return checkout

    async def _github_step(self, run: _Run, what: str, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except (gidgethub.GitHubException, aiohttp.ClientError, TimeoutError) as exc:
            if is_refusal(exc):
                raise _Abort(
                    await self._fail(
                        run,
                        failures.github_refused(what, exc, run.task.repo, self.services.mention),
                        retryable=False,
                        category="github",
                    )
                ) from None
            raise _Abort(await self._transient(run, failures.github_error(what, exc))) from None

    async def _git_step(self, run: _Run, what: str, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except GitCommandError as exc:
            raise _Abort(await self._git_failure(run, what, exc)) from None

    async def _git_failure(self, run: _Run, what: str, exc: Exception) -> str:
        message = run.log.redact(str(exc))
        if isinstance(exc, UnstageablePathError):
            # What the agent wrote, not a passing failure: rerunning it for free would loop.
            return await self._fail(
                run, failures.uncommittable(message, self.services.mention), retryable=False, category="guard"
            )
        if isinstance(exc, GitAuthError):
            return await self._fail(
                run,
                failures.git_refused(what, message, run.task.repo, self.services.mention),
                retryable=False,
                category="git_auth",
            )
        return await self._transient(run, failures.git_failed(what, message))

    # -- the agent (bot.worker.launch) ----------------------------------------------------

    def report_sandbox(self) -> None:
        """Say at start-up how agents will run: a warning without a sandbox, an error when no
        agent can run (``auto``/``bwrap`` without a working bubblewrap)."""
        if self.options.sandbox == "none":
            log.warning(messages.UNSANDBOXED_STARTUP_WARNING)
        elif not self.bwrap.available():
            log.error("no agent will run: %s", messages.SANDBOX_UNAVAILABLE.format(problem=self.bwrap.problem))

    def _preset(self, run: _Run) -> Preset | launch.NotStarted:
        settings = self.services.settings
        return launch.choose_preset(
            run.task.agent or run.config.agent.preset or settings.agent,
            command=run.config.agent.command or settings.agent_command,
            executables=self.options.executables,
            model_prices=settings.model_prices,
            env_names=run.config.agent.env,
            operator_env=settings.agent_env,
            mention=self.services.mention,
        )

    async def _previous(self, run: _Run) -> PreviousAttempt | None:
        attempts = [
            a for a in await self.store.list_attempts(run.task.id) if a.number < run.number and a.outcome
        ]
        if not attempts:
            return None
        last = attempts[-1]
        return PreviousAttempt(
            number=last.number, kind=last.kind.value, outcome=last.outcome, summary=last.summary or last.error
        )

    async def _plan_launch(self, run: _Run, conflicts: tuple[str, ...]) -> launch.LaunchPlan | launch.NotStarted:
        """What the agent runs as: the preset, the sandbox mode, the prompt, the directories,
        the session to resume and the spend left (or why no agent can run)."""
        task, checkout = run.task, run.checkout
        assert checkout is not None
        preset = self._preset(run)
        if isinstance(preset, launch.NotStarted):
            return preset
        mode = launch.sandbox_mode(self.options.sandbox, self.bwrap, mention=self.services.mention)
        if isinstance(mode, launch.NotStarted):
            return mode
        context = TaskContext.from_task(
            task.replace(branch=run.branch, base_branch=run.base), protected_paths=run.config.protected_paths
        )
        overrides: dict[str, Any] = {"conflicted_files": conflicts} if conflicts else {}
        prompt = build_prompt(
            context, AttemptContext.from_task(task, previous=await self._previous(run), **overrides)
        )
        return launch.LaunchPlan(
            preset=preset,
            mode=mode,
            prompt=prompt.text,
            dirs=launch.AgentDirs.for_attempt(self.workspaces.data_dir, task.id, run.number),
            workdir=checkout.path,
            shared_objects=checkout.shared_objects,
            config=run.config,
            cost_limit=launch.cost_limit(task.max_cost_usd - task.cost_usd, await self._daily_left(run)),
            model=task.model or run.config.agent.model or "",
            session_id=task.agent_session if preset.resumable and run.kind in RESUMED_KINDS else "",
            operator_template=launch.operator_template(
                preset.name, run.config.agent.command, self.services.settings.agent_command
            ),
            label=task.id,
        )

    async def _run_agent(self, run: _Run, conflicts: tuple[str, ...]) -> str:
        """Run the agent and end the attempt by what came of it; returns the outcome word."""
        plan = await self._plan_launch(run, conflicts)
        if isinstance(plan, launch.NotStarted):
            return await self._after_launch(run, plan)
        run.agent_dir = plan.dirs.agent_dir
        agent = launch.AgentLaunch(
            plan,
            launch.LaunchSettings(
                settings=self.services.settings,
                environ=self.options.environ,
                mention=self.services.mention,
                kill_grace=self.options.kill_grace,
                disk_check_seconds=self.options.disk_check_seconds,
            ),
        )
        try:
            outcome = await agent.run(log=run.log, control=run.control)
        finally:
            run.cost = agent.spent_usd  # spent even when the run itself raised
        return await self._after_launch(run, outcome)

    async def _after_launch(self, run: _Run, outcome: launch.LaunchOutcome) -> str:
        match outcome:
            case launch.NotStarted(error=error, category=category):
                return await self._fail(run, error, retryable=False, category=category)
            case launch.Stopped():
                raise _Stopped()
            case launch.LimitReached(message=message, refused=refused):
                run.refused = "\n".join(refused)
                return await self._salvage_and_fail(run, message, retryable=False, category="resource_limit")
            case launch.ProviderUnreachable(message=message, result=result, refused=refused):
                run.refused = "\n".join(refused)
                self._record_result(run, result)
                return await self._fail(run, message, retryable=False, category="agent_config")
            case launch.Finished(result=result, refused=refused):
                run.refused = "\n".join(refused)
                self._record_result(run, result)
                if outcome.daily_cap_killed:
                    return await self._salvage_and_fail(
                        run, self._daily_message(run), retryable=False, category="daily_cost"
                    )
                return await self._after_agent(run, result)
        raise AssertionError(f"unknown launch outcome {outcome!r}")

    @staticmethod
    def _record_result(run: _Run, result: AgentResult) -> None:
        run.cost = result.cost_usd
        run.cost_known = result.cost_known
        run.session = result.session_id or None
        run.summary = result.summary

    # -- after the agent ------------------------------------------------------------------

    async def _after_agent(self, run: _Run, result: AgentResult) -> str:
        outcome = result.outcome
        if outcome is AgentOutcome.STOPPED or run.control.reason is not None:
            raise _Stopped()
        if outcome is AgentOutcome.TIMEOUT:
            return await self._salvage_and_fail(
                run,
                failures.agent_timed_out(run.config.agent.timeout_minutes),
                retryable=True,
                category="timeout",
            )
        if outcome is AgentOutcome.KILLED_COST:
            return await self._salvage_and_fail(
                run, failures.agent_over_cost_cap(run.task.max_cost_usd), retryable=True, category="cost"
            )
        if outcome is AgentOutcome.CONFIG_ERROR:
            return await self._fail(
                run,
                failures.agent_could_not_run(result.error, self.services.mention),
                retryable=False,
                category="agent_config",
            )
        if outcome is AgentOutcome.TRANSIENT:
            salvage = await self._salvage(run)
            return await self._transient(run, failures.agent_provider_error(result.error) + salvage.note)
        if outcome is AgentOutcome.AGENT_ERROR:
            return await self._salvage_and_fail(
                run,
                failures.agent_failed(result.error),
                retryable=True,
                category="agent_error",
                signature=error_signature(result.error),
            )
        if outcome is AgentOutcome.QUESTIONS:
            return await self._questions(run, result)
        return await self._finish_work(run)

    async def _finish_work(self, run: _Run) -> str:
        checkout = run.checkout
        assert checkout is not None
        if run.kind is RetryKind.MERGE_CONFLICT and checkout.merge_in_progress():
            try:
                await checkout.conclude_merge()
            except UnresolvedMergeError as exc:
                return await self._salvage_and_fail(
                    run, failures.conflict_unresolved(exc), retryable=True, category="conflict"
                )
            except GitCommandError as exc:
                return await self._git_failure(run, "concluding the merge", exc)
        try:
            await checkout.commit_all(commit_message(run.task, run.kind, run.summary, run.number))
        except GitCommandError as exc:
            if checkout.merge_in_progress():
                return await self._salvage_and_fail(
                    run, failures.MERGE_UNFINISHED, retryable=True, category="conflict"
                )
            return await self._git_failure(run, "committing", exc)
        violations = await self._violations(run)
        if violations:
            return await self._fail(
                run,
                failures.checks_refused(describe(violations), self.services.mention),
                retryable=False,
                category="guard",
            )
        if not await checkout.changes_since(checkout.start_sha):
            return await self._no_changes(run)
        return await self._push_and_report(run)

    async def _violations(self, run: _Run) -> list[Violation]:
        checkout = run.checkout
        assert checkout is not None
        policy = self._guard_policy(run)
        found = await checkout.check_since(checkout.start_sha, policy)
        if found and run.kind is RetryKind.MERGE_CONFLICT:
            base_sha = await self.workspaces.resolve(checkout.cache, tracking_ref(run.base))
            if base_sha is not None:
                from_base = await checkout.check_since(base_sha, policy)
                found = conflict_violations(found, from_base)
        return found

    def _guard_policy(self, run: _Run) -> GuardPolicy:
        """The pre-push checks of this attempt: the repository's protected paths and file
        size limit, and every secret the bot holds."""
        return GuardPolicy(
            protected=run.config.protected_paths,
            known_secrets=self._known_secrets(run),
            max_file_size=int(run.config.max_file_size_mb * MIB),
        )

    def _known_secrets(self, run: _Run) -> list[KnownSecret]:
        """The secrets the agent must not push in any form: the installation tokens of the
        attempt (every form the log redacts), the webhook secret, the App's private key and
        the admin token."""
        known = [KnownSecret("a token the bot used for this attempt", s) for s in run.log.secrets]
        settings = self.services.settings
        for label, secret in (
            ("the App's webhook secret", settings.webhook_secret),
            ("the admin token", settings.admin_token),
        ):
            if secret is not None and secret.get_secret_value().strip():
                known.append(KnownSecret(label, secret.get_secret_value()))
        if settings.private_key is not None and settings.private_key.get_secret_value().strip():
            # As PEM whatever form it was given in (escaped, base64): its base64 lines are
            # what gets looked for. (The server loads a key file into this at start-up.)
            value = settings.private_key.get_secret_value()
            try:
                value = decode_private_key(value)
            except ConfigError:
                pass
            known.append(KnownSecret("the App's private key", value))
        return known

    async def _push_and_report(self, run: _Run) -> str:
        task, checkout = run.task, run.checkout
        assert checkout is not None
        auth = await self._auth(run)
        try:
            pushed = await checkout.push(expected_remote=checkout.remote_sha, auth=auth)
        except GitCommandError as exc:
            salvage = await self._salvage(run)
            return await self._transient(
                run, failures.git_failed("pushing", run.log.redact(str(exc))) + salvage.note
            )
        if not pushed.ok or pushed.sha is None:
            return await self._salvage_and_fail(
                run, failures.push_failed(run.branch, pushed.error), retryable=True, category="push"
            )
        sha = pushed.sha
        await run.log.note(
            f"pushed {sha[:12]} to {run.branch}"
            + (" (on top of commits pushed meanwhile)" if pushed.rebased else "")
        )
        total = round(task.cost_usd + run.cost, 6)
        current = messages.AttemptLine(
            run.number, run.kind.value, "pushed", run.cost, pr.one_line(run.summary)
        )
        lines = pr.attempt_lines(await self.store.list_attempts(task.id), current=current)
        try:
            pull = await pr.open_or_update_pull(
                run.gh,
                repo=task.repo,
                issue_number=task.issue_number,
                title=task.title,
                branch=run.branch,
                base=run.base,
                draft=run.config.pull_requests.draft,
                pr_number=task.pr_number,
                lines=lines,
                cost_usd=total,
            )
        except (gidgethub.GitHubException, aiohttp.ClientError, TimeoutError) as exc:
            return await self._transient(run, failures.pull_request_failed(sha, exc))
        await run.log.note(f"pull request #{pull.number}")
        await pr.report_pushed(
            run.gh,
            repo=task.repo,
            head_sha=sha,
            task_id=task.id,
            attempt=run.number,
            max_attempts=task.max_attempts,
            summary=run.summary,
            cost_usd=run.cost,
            running=run.running_checks,
        )
        run.running_checks = None
        answered: list[str] = []
        if run.threads:
            answered = await pr.reply_addressed(
                run.gh, repo=task.repo, pr_number=pull.number, thread_ids=run.threads, head_sha=sha
            )
        await self._finish_attempt(run, "pushed", head_after=sha)

        def rule(fresh: Task) -> Decision:
            decision = rules.attempt_pushed(
                fresh,
                head_sha=sha,
                pr_number=pull.number,
                pr_url=pull.url,
                branch=run.branch,
                cost_usd=run.cost,
                summary=run.summary,
                now=self.services.clock(),
                agent_session=run.session,
                attempt=run.number,
            )
            if not decision.accepted:
                return decision
            extra: dict[str, Any] = {}
            if answered:
                extra["review_threads"] = tuple(t for t in decision.task.review_threads if t not in answered)
            if not decision.task.base_branch:
                extra["base_branch"] = run.base
            return dataclasses.replace(decision, task=decision.task.replace(**extra)) if extra else decision

        await self._decide(run, rule)
        return "pushed"

    async def _no_changes(self, run: _Run) -> str:
        await self._finish_attempt(run, "no_changes", error=rules.NO_CHANGES_FIRST)
        await self._report_check(run, rules.NO_CHANGES_FIRST, failed=True)
        await self._decide(
            run,
            lambda t: rules.no_progress(
                t, now=self.services.clock(), cost_usd=run.cost, agent_session=run.session, attempt=run.number
            ),
        )
        await self._refresh_pr(run)
        return "no_changes"

    async def _questions(self, run: _Run, result: AgentResult) -> str:
        questions = [q.question for q in result.questions]
        salvage = await self._salvage(run)
        listing = "\n".join(f"{i}. {q}" for i, q in enumerate(questions, 1))
        await self._finish_attempt(run, "questions", summary=f"The agent asked:\n{listing}{salvage.note}")
        await self._report_check(run, "The agent asked questions on the issue.", failed=False)
        await self._decide(
            run,
            lambda t: rules.questions_asked(
                t,
                questions=questions,
                now=self.services.clock(),
                cost_usd=run.cost,
                agent_session=run.session,
                attempt=run.number,
            ),
            questions=questions,
        )
        await self._refresh_pr(run)
        return "questions"

    # -- failures -------------------------------------------------------------------------

    async def _salvage(self, run: _Run) -> Salvage:
        """Salvage the attempt's work to its wip branch (SPEC §6.6): whether it was saved,
        and a sentence saying where it went (or why it did not)."""
        checkout = run.checkout
        if checkout is None:
            return Salvage()
        try:
            if checkout.merge_in_progress():
                await self.workspaces.runner.run(
                    ["merge", "--quit"],
                    git_dir=checkout.admin_dir,
                    work_tree=checkout.path,
                    cwd=checkout.path,
                    check=False,
                )
            await checkout.commit_all(f"patchwright: unfinished work of attempt {run.number}")
            if not await checkout.changes_since(checkout.start_sha):
                return Salvage()
            violations = await checkout.check_since(checkout.start_sha, self._guard_policy(run))
            if violations:
                return Salvage(note=failures.salvage_refused(", ".join(sorted({v.path for v in violations}))))
            sha = await checkout.salvage(
                task_id=run.task.id, attempt=run.number, auth=await self._fetch_auth(run)
            )
        except (
            GitCommandError,
            OSError,
            gidgethub.GitHubException,
            aiohttp.ClientError,
            TimeoutError,
        ) as exc:
            log.warning("salvage failed: %s", exc)
            return Salvage(note=failures.salvage_failed(run.log.redact(str(exc))))
        if sha is None:
            return Salvage()
        branch = wip_branch(run.task.id, run.number)
        await run.log.note(f"salvaged the work to {branch} at {sha[:12]}")
        return Salvage(saved=True, note=failures.salvage_saved(branch))

    async def _salvage_and_fail(
        self, run: _Run, error: str, *, retryable: bool, category: str, signature: str = ""
    ) -> str:
        salvage = await self._salvage(run)
        return await self._fail(
            run, error + salvage.note, retryable=retryable, category=category, signature=signature
        )

    async def _fail(
        self, run: _Run, error: str, *, retryable: bool, category: str, signature: str = ""
    ) -> str:
        error = run.log.redact(error)
        await run.log.note(failures.FAILED_LOG_NOTE.format(error=error))
        await self._finish_attempt(run, "failed", error=error)
        await self._report_check(run, error, failed=True)
        await self._decide(
            run,
            lambda t: rules.attempt_failed(
                t,
                error=error,
                category=category,
                error_signature=signature or category,
                retryable=retryable,
                now=self.services.clock(),
                cost_usd=run.cost,
                agent_session=run.session,
                attempt=run.number,
            ),
        )
        await self._refresh_pr(run)
        return "failed"

    async def _transient(self, run: _Run, reason: str) -> str:
        reason = run.log.redact(reason)
        await run.log.note(failures.TRANSIENT_LOG_NOTE.format(reason=reason))
        await self._finish_attempt(run, "failed", error=reason)
        await self._report_check(run, reason, failed=False)
        await self._decide(
            run,
            lambda t: rules.transient(
                t,
                reason=reason,
                now=self.services.clock(),
                cost_usd=run.cost,
                agent_session=run.session,
                attempt=run.number,
            ),
        )
        await self._refresh_pr(run)
        return "transient"

    async def _stopped(self, run: _Run) -> str:
        """The attempt was stopped (by a human, a lost lease or shutdown): salvage, record."""
        reason = run.control.reason
        salvage = await self._salvage(run)
        outcome = "salvaged" if salvage.saved else "cancelled"
        what = failures.ended_early(run.number, reason, salvage.note)
        await run.log.note(what)
        await self._finish_attempt(run, outcome, error=what)
        await self._report_check(run, what, failed=False)
        fresh = await self.store.get_task(run.task.id)
        ours = (
            fresh is not None
            and fresh.status is Status.RUNNING
            and fresh.worker_id == self.worker_id
            and fresh.attempt == run.number
        )
        if ours:
            # Shutdown (or a stop whose decision has not landed): hand the task back.
            await self._decide(
                run,
                lambda t: rules.transient(
                    t,
                    reason=what,
                    now=self.services.clock(),
                    cost_usd=run.cost,
                    agent_session=run.session,
                    attempt=run.number,
                ),
            )
        elif fresh is not None:
            if run.cost > 0:
                await self._decide(
                    run, lambda t: _with_reason(rules.add_cost(t, run.cost), what), report=True
                )
            else:
                with contextlib.suppress(gidgethub.GitHubException):
                    await self.services.reporter.update(run.gh, fresh, reason=what)
        await self._refresh_pr(run)
        return outcome

    async def _crashed(self, run: _Run, exc: BaseException) -> str:
        message = run.log.redact(f"{type(exc).__name__}: {exc}")
        try:
            if run.control.reason is not None:
                return await self._stopped(run)
            return await self._salvage_and_fail(
                run,
                failures.worker_failed(message),
                retryable=True,
                category="worker_error",
                signature=error_signature(message),
            )
        except Exception:
            log.exception("could not report the failure of attempt %s of %s", run.number, run.task.id)
            return "crashed"

    # -- reporting ------------------------------------------------------------------------

    async def _finish_attempt(
        self, run: _Run, outcome: str, *, error: str = "", summary: str | None = None, head_after: str = ""
    ) -> None:
        if not run.attempt_started:
            return
        try:
            await self.store.finish_attempt(
                run.task.id,
                run.number,
                outcome=outcome,
                cost_usd=run.cost,
                summary=run.log.redact(summary if summary is not None else run.summary),
                head_after=head_after,
                error=error,
                cost_known=run.cost_known,
                refused=run.refused,
            )
        except StoreError as exc:
            log.warning("attempt row not finished: %s", exc)

    async def _report_check(self, run: _Run, text: str, *, failed: bool) -> None:
        if run.running_checks is None:
            return
        await pr.report_not_pushed(run.gh, repo=run.task.repo, running=run.running_checks, error=text, failed=failed)
        run.running_checks = None

    async def _refresh_pr(self, run: _Run) -> None:
        """After an attempt that pushed nothing: the PR body section shows it too."""
        fresh = await self.store.get_task(run.task.id)
        if fresh is None or fresh.pr_number is None:
            return
        lines = pr.attempt_lines(await self.store.list_attempts(fresh.id))
        await pr.refresh_summary(
            run.gh,
            repo=fresh.repo,
            issue_number=fresh.issue_number,
            pr_number=fresh.pr_number,
            lines=lines,
            cost_usd=fresh.cost_usd,
        )

    async def _decide(
        self,
        run: _Run,
        rule: Callable[[Task], Decision],
        *,
        questions: Sequence[str] = (),
        report: bool = True,
        tries: int = 5,
    ) -> Task | None:
        """Apply ``rule`` to the task as it is now, deciding again when a race is lost."""
        for _ in range(tries):
            fresh = await self.store.get_task(run.task.id)
            if fresh is None:
                return None
            decision = rule(fresh)
            if not decision.accepted:
                await run.log.note(decision.reason_for(self.services.mention))
                return None
            try:
                new = await self.services.tasks.apply(
                    decision,
                    gh=run.gh,
                    actor=self.actor,
                    state_labels=run.config.state_labels,
                    report=report,
                    questions=questions,
                )
            except gidgethub.GitHubException as exc:
                log.warning("applying %s: GitHub error %s", decision.reason, exc)
                return None
            if new is not None:
                return new
        log.warning("task %s: lost %d races applying the attempt's outcome", run.task.id, tries)
        return None

    async def _cleanup(self, run: _Run) -> None:
        with contextlib.suppress(Exception):
            await run.log.close()
        if run.checkout is not None:
            try:
                await run.checkout.remove()
            except Exception:
                log.exception("could not remove the worktree of %s", run.task.id)
        if run.agent_dir is not None:
            await asyncio.to_thread(shutil.rmtree, run.agent_dir, True)
        with contextlib.suppress(StoreError, OSError):
            fresh = await self.store.get_task(run.task.id)
            if fresh is None or fresh.is_terminal:  # no later attempt resumes a session
                home = launch.task_home(self.workspaces.data_dir, run.task.id)
                await asyncio.to_thread(shutil.rmtree, home, True)


def _with_reason(decision: Decision, reason: str) -> Decision:
    """``decision`` with ``reason`` said after its own (e.g. where salvaged work went)."""
    if not decision.accepted:
        return decision
    return dataclasses.replace(decision, reason=f"{decision.reason} {reason}")


__all__ = [
    "AttemptControl",
    "AttemptLog",
    "AttemptRunner",
    "RunnerOptions",
    "Salvage",
    "StopReason",
    "commit_message",
    "conflict_violations",
    "error_signature",
]
