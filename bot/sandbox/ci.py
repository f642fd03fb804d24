"""The CI actors: run a repository's command on pushed commits and report the result.

Two providers, configurable side by side on one repository:

``actions`` (GitHub Actions): per run a check suite of the GitHub Actions app, one check run and
one workflow job per configured check name (the job id equals its check run id, as on GitHub)
and a workflow run; no commit statuses (Actions posts none). Webhooks in GitHub's order::

    workflow_run.requested, (check_run.created, workflow_job.queued) per name,
    workflow_job.in_progress per name, workflow_job.completed per name, check_run.completed per
    name, check_suite.completed, workflow_run.completed

``external`` (a CI service outside GitHub, e.g. Jenkins): commit statuses only, posted by the
account ``creator``: ``pending`` per context when the build starts, then ``success``,
``failure`` or ``error``, each with a ``target_url`` to the build log (served by the emulator
at ``/_emulator/external-ci/<owner>/<repo>/builds/<id>``). Webhooks: ``status`` per change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .ci_runner import CIResult, run_ci, step_title
from .state import (
    ACTIONS_APP_ID,
    Account,
    CheckRun,
    Repo,
    Workflow,
    WorkflowJob,
    WorkflowRun,
    WorkflowStep,
)

if TYPE_CHECKING:
    from .emulator import Emulator

WORKFLOW_PATH = ".github/workflows/ci.yml"
OUTPUT_TAIL_LINES = 60
STATUS_STATES = MappingProxyType({"success": "success", "failure": "failure", "timed_out": "error"})
CI_PROVIDERS = ("actions", "external")
EXTERNAL_CI_CREATOR = "external-ci"


@dataclass(frozen=True)
class CIConfig:
    """``checks``: check-run (and job) names for ``actions``, status contexts for ``external``."""

    command: str
    checks: tuple[str, ...] = ("ci",)
    timeout: float = 120.0
    env: Mapping[str, str] = field(default_factory=dict)
    workflow_name: str = "CI"
    provider: str = "actions"  # one of CI_PROVIDERS
    creator: str = EXTERNAL_CI_CREATOR  # external: who posts the statuses

    def __post_init__(self) -> None:
        if self.provider not in CI_PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(CI_PROVIDERS)}, not {self.provider!r}")


def output_tail(log: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    """The last ``lines`` lines of an Actions log without their timestamps."""
    kept = []
    for line in log.splitlines()[-lines:]:
        stamp, sep, rest = line.partition(" ")
        kept.append(rest if sep and stamp.endswith("Z") and stamp[:4].isdigit() else line)
    return "\n".join(kept)


class CIRunner:
    """Schedules CI runs in the background; ``idle()`` waits for all of them."""

    def __init__(self, emulator: Emulator, *, concurrency: int = 2) -> None:
        self.emulator = emulator
        self.configs: dict[int, dict[str, CIConfig]] = {}  # repo id -> provider -> config
        self._tasks: set[asyncio.Task[None]] = set()
        self._seen: set[tuple[int, str, str]] = set()  # (repo id, sha, provider)
        self._concurrency = concurrency
        self._semaphore: asyncio.Semaphore | None = None
        self.errors: list[str] = []
        self.external_logs: dict[int, tuple[int, str]] = {}  # build id -> (repo id, log)

    def configure(self, repo: Repo, config: CIConfig) -> None:
        """Run ``config`` on ``repo`` (replacing an earlier config of the same provider)."""
        self.configs.setdefault(repo.id, {})[config.provider] = config

    def unconfigure(self, repo: Repo, provider: str | None = None) -> None:
        """Stop running CI of ``provider`` (every provider when None) on ``repo``."""
        if provider is None:
            self.configs.pop(repo.id, None)
        else:
            self.configs.get(repo.id, {}).pop(provider, None)

    def head_commit_of(self, repo: Repo, sha: str) -> dict[str, Any] | None:
        info = self.emulator.cached_commit(repo, sha)
        return self.emulator.shapes.simple_commit(info) if info is not None else None

    def maybe_schedule(
        self, repo: Repo, branch: str | None, sha: str | None, event: str, actor: Account | None = None
    ) -> None:
        """Run each configured CI for ``sha`` if it has not run yet there, and the branch is the
        default branch or the head of an open PR."""
        if sha is None or branch is None or not self.configs.get(repo.id):
            return
        heads = {
            issue.pull.head_ref for issue in repo.pulls() if issue.pull is not None and issue.state == "open"
        }
        if branch != repo.default_branch and branch not in heads:
            return
        for provider in list(self.configs[repo.id]):
            self.schedule(repo, branch, sha, event, actor=actor, provider=provider)

    def schedule(
        self,
        repo: Repo,
        branch: str | None,
        sha: str,
        event: str,
        *,
        force: bool = False,
        actor: Account | None = None,
        provider: str = "actions",
    ) -> None:
        config = self.configs.get(repo.id, {}).get(provider)
        if config is None:
            return
        key = (repo.id, sha, provider)
        if not force and key in self._seen:
            return
        self._seen.add(key)
        task = asyncio.create_task(
            self._run(repo, config, branch, sha, event, actor or repo.owner),
            name=f"emulator-ci-{provider}-{repo.full_name}-{sha[:8]}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.idle()

    # -- one run ---------------------------------------------------------------------------
    def _workflow(self, repo: Repo, name: str) -> Workflow:
        for workflow in repo.workflows.values():
            if workflow.name == name:
                return workflow
        workflow = Workflow(
            id=self.emulator.new_id(), name=name, path=WORKFLOW_PATH, created_at=self.emulator.now()
        )
        repo.workflows[workflow.id] = workflow
        return workflow

    async def _run(
        self, repo: Repo, config: CIConfig, branch: str | None, sha: str, event: str, actor: Account
    ) -> None:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._concurrency)
        try:
            async with self._semaphore:
                if config.provider == "external":
                    await self._external(repo, config, sha)
                else:
                    await self._pipeline(repo, config, branch, sha, event, actor)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep the emulator alive; tests read ci.errors
            self.errors.append(f"{repo.full_name}@{sha[:8]}: {type(exc).__name__}: {exc}")

    async def _pipeline(
        self, repo: Repo, config: CIConfig, branch: str | None, sha: str, event: str, actor: Account
    ) -> None:
        em = self.emulator
        shapes = em.shapes
        actions = em.apps[ACTIONS_APP_ID]
        info = await em.commit(repo, sha)
        head_commit = shapes.simple_commit(info)
        workflow = self._workflow(repo, config.workflow_name)
        suite = em.new_check_suite(repo, actions.id, sha, branch)
        pull_numbers = [
            issue.number
            for issue in repo.pulls()
            if issue.pull is not None and issue.state == "open" and issue.pull.head_ref == branch
        ]
        now = em.now()
        run = WorkflowRun(
            id=em.new_id(),
            workflow_id=workflow.id,
            name=workflow.name,
            head_branch=branch,
            head_sha=sha,
            run_number=1 + sum(1 for r in repo.workflow_runs.values() if r.workflow_id == workflow.id),
            event=event,
            check_suite_id=suite.id,
            actor=actor,
            created_at=now,
            updated_at=now,
            pull_numbers=pull_numbers,
            display_title=info.message.splitlines()[0] if info.message else sha[:7],
        )
        repo.workflow_runs[run.id] = run

        def workflow_run_event(action: str) -> None:
            em.emit(
                repo,
                "workflow_run",
                em.envelope(
                    repo,
                    actor,
                    action,
                    workflow_run=shapes.workflow_run(repo, run, head_commit),
                    workflow=shapes.workflow(repo, workflow),
                ),
            )

        def job_event(action: str, job: WorkflowJob) -> None:
            em.emit(
                repo, "workflow_job", em.envelope(repo, actor, action, workflow_job=shapes.job(repo, job))
            )

        workflow_run_event("requested")
        checks: list[CheckRun] = []
        jobs: list[WorkflowJob] = []
        for name in config.checks:
            check = em.create_check_run(
                repo, actions, actor, name=name, head_sha=sha, status="queued", suite=suite
            )
            job = WorkflowJob(
                id=check.id,
                run_id=run.id,
                name=name,
                head_sha=sha,
                head_branch=branch,
                created_at=em.now(),
            )
            repo.jobs[job.id] = job
            run.job_ids.append(job.id)
            checks.append(check)
            jobs.append(job)
            job_event("queued", job)

        run.status = "in_progress"
        run.run_started_at = em.now()
        for check, job in zip(checks, jobs):
            started = em.now()
            job.status, job.started_at, job.runner_name = "in_progress", started, "patchwright-emulator"
            job.steps = [WorkflowStep(1, "Set up job", "in_progress", None, started, None)]
            check.status, check.started_at = "in_progress", started
            job_event("in_progress", job)

        result = await self._run_command(repo, config, sha)
        self._finish(repo, config, checks, jobs, result, actor, job_event)
        run.status, run.conclusion, run.updated_at = "completed", _run_conclusion(result), em.now()
        workflow_run_event("completed")

    async def _run_command(self, repo: Repo, config: CIConfig, sha: str) -> CIResult:
        """Run the configured CI command on ``sha`` of ``repo`` (either provider)."""
        em = self.emulator
        return await run_ci(
            em.git.path(repo.owner.login, repo.name),
            sha,
            config.command,
            timeout=config.timeout,
            env=config.env,
            workdir_root=em.ci_workdir(),
            job_name=config.checks[0],
            clock=lambda: datetime.fromtimestamp(em.clock(), timezone.utc),
        )

    async def _external(self, repo: Repo, config: CIConfig, sha: str) -> None:
        """An external CI service's build: statuses only (pending, then the result)."""
        em = self.emulator
        creator = em.account(config.creator)
        build_id = em.new_id()
        self.external_logs[build_id] = (repo.id, "")
        target_url = f"{em.base_url}/_emulator/external-ci/{repo.full_name}/builds/{build_id}"
        for context in config.checks:
            await em.create_status(
                repo,
                sha,
                state="pending",
                context=context,
                creator=creator,
                description="Build started",
                target_url=target_url,
            )
        result = await self._run_command(repo, config, sha)
        self.external_logs[build_id] = (repo.id, result.log)
        for context in config.checks:
            await em.create_status(
                repo,
                sha,
                state=STATUS_STATES.get(result.conclusion, "failure"),
                context=context,
                creator=creator,
                description=_status_description(result),
                target_url=target_url,
            )

    def _finish(
        self,
        repo: Repo,
        config: CIConfig,
        checks: list[CheckRun],
        jobs: list[WorkflowJob],
        result: CIResult,
        actor: Account,
        job_event: Any,
    ) -> None:
        em = self.emulator
        completed = em.now()
        for job in jobs:
            job.steps = [
                WorkflowStep(
                    step.number,
                    step.name,
                    "completed",
                    step.conclusion,
                    step.started_at.timestamp(),
                    step.completed_at.timestamp(),
                )
                for step in result.steps
            ]
            job.log = result.log
            job.status, job.conclusion, job.completed_at = "completed", result.conclusion, completed
            job_event("completed", job)
        title = step_title(config.command)
        output = {
            "title": f"{title}: {result.conclusion}",
            "summary": _status_description(result),
            "text": "```\n" + output_tail(result.log) + "\n```",
        }
        for check in checks:
            em.update_check_run(
                repo,
                check,
                actor,
                {"status": "completed", "conclusion": result.conclusion, "output": output},
            )


def _run_conclusion(result: CIResult) -> str:
    return "success" if result.conclusion == "success" else "failure"


def _status_description(result: CIResult) -> str:
    if result.conclusion == "success":
        return "Successful"
    if result.conclusion == "timed_out":
        return "Timed out"
    if result.exit_code is None:
        return "Failing"
    return f"Failing: exit code {result.exit_code}"
