"""The end-to-end harness: the GitHub emulator, the App installed on a repository, a real store,
the bot's services pointed at the emulator, and worker pools running the fake agent.

Use the ``e2e`` fixture (an :class:`E2E`)::

    async def test_something(e2e):
        repo = await e2e.add_repo("demo", files={...}, script={...}, config={...})
        issue = await e2e.open_issue(repo, "Add a greeting", "- [ ] says hello")
        task = await e2e.create_task(repo, issue)
        pool = await e2e.start_pool()
        task = await e2e.wait_for(task.id, lambda t: t.status is Status.REVIEW)

What it sets up:

- ``e2e.emulator``: :class:`bot.sandbox.emulator.Emulator` on 127.0.0.1 (REST, git over smart
  HTTP, webhooks, actors), checking every REST answer against GitHub's description.
- The App ``patchwright`` (``e2e.app_id``, ``e2e.slug``, ``e2e.private_key``) registered with a
  key pair, installed on the ``octo-org`` account (``e2e.installation_id``); every repository
  made with :meth:`E2E.add_repo` is added to the installation. ``alice`` has write access.
- ``e2e.settings`` (:class:`bot.config.Settings`: app id and key, the emulator's URL, a data
  dir under ``tmp_path``, ``agent=command`` with the fake agent as the template),
  ``e2e.store`` (SQLite under ``tmp_path`` by default; override the ``e2e_store_url`` fixture
  for PostgreSQL), ``e2e.github`` (a :class:`GitHubClientFactory` on the emulator) and
  ``e2e.services`` (:func:`bot.operations.services.build_services`).
- The fake agent (:mod:`bot.sandbox.fake_agent`): a repository's ``.fake-agent.json`` script
  (the ``script=`` of :meth:`E2E.add_repo`) says what it does per attempt; it records each run
  in ``e2e.agent_out`` (``run-<attempt>.json``: argv, environment, prompt); rendezvous files go
  there too (``{out}`` in script paths). :meth:`E2E.claude_executable` gives a wrapper that
  runs it as the ``claude`` preset's CLI (stream-json, cost, sessions).
- :meth:`E2E.start_pool` starts a :class:`bot.worker.pool.WorkerPool` with short intervals
  (all stopped at teardown); :meth:`E2E.serve` also runs the webhook ingress and the
  dispatcher with the real handlers, and points the App's webhooks at them.
- :meth:`E2E.decide` applies a rule of :mod:`bot.tasks.rules` as a handler would (CI failure,
  feedback, conflict, stop…), :meth:`E2E.wait_for` polls the task until a predicate holds.

At teardown every pool and server is stopped, and any request or response that breaks
GitHub's REST description fails the test.

The ``make_world`` fixture starts what ``patchwright demo`` runs instead (:class:`bot.demo.
DemoWorld`: the emulator with the demo's repository and CI, the bot as ``serve`` runs it —
``create_app`` with the dispatcher, handlers and reconciler — and a worker pool), on SQLite or
PostgreSQL, optionally behind an emulator that fails 20 % of the requests; the story and the
scenarios use it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import stat
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import yaml
from aiohttp import web

from bot.config import Settings
from bot.github.auth import AppCredentials
from bot.github.client import GitHubClientFactory
from bot.sandbox import fake_agent
from bot.sandbox.auth import generate_key_pair
from bot.sandbox.emulator import Emulator
from bot.sandbox.openapi import RestDescription
from bot.operations.services import Services, build_services
from bot.store.base import Store
from bot.store.factory import open_store
from bot.tasks import rules
from bot.tasks.model import Status, Task, new_id, utcnow
from bot.worker.pool import WorkerPool
from bot.worker.runner import RunnerOptions

OWNER = "octo-org"
SLUG = "patchwright"
WEBHOOK_SECRET = "e2e-webhook-secret"
BASE_FILES: Mapping[str, str] = {
    "README.md": "# demo\n\nA small project.\n",
    "src/app.py": "def greet(name):\n    return 'hi ' + name\n",
    "tests/test_app.py": "from src.app import greet\n\n\ndef test_greet():\n    assert greet('x') == 'hi x'\n",
    ".github/workflows/ci.yml": "name: CI\non: [push]\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n      - run: pytest\n",
}
FAST_AGENT_CONFIG: Mapping[str, Any] = {"agent": {"timeout_minutes": 1}, "max_concurrent_tasks": 10}


@pytest.fixture(scope="session")
def e2e_rest_description() -> RestDescription:
    return RestDescription.load()


@pytest.fixture(scope="session")
def e2e_key_pair() -> tuple[str, str]:
    """(private PEM, public PEM) of the test App, made once per session."""
    return generate_key_pair()


@pytest.fixture
def e2e_store_url(tmp_path: Path) -> str:
    """The store the harness uses: SQLite under ``tmp_path``. Override it with a
    ``postgresql://`` URL to run on PostgreSQL (each test then gets a schema of its own,
    dropped at teardown)."""
    return f"sqlite:///{tmp_path / 'patchwright.db'}"


@dataclass
class E2E:
    """A running emulator, the installed App and the bot's services over a real store."""

    tmp_path: Path
    emulator: Emulator
    session: aiohttp.ClientSession
    store: Store
    settings: Settings
    github: GitHubClientFactory
    services: Services
    app_id: int
    slug: str
    private_key: str
    installation_id: int
    agent_out: Path
    pools: list[WorkerPool] = field(default_factory=list)
    _cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def use_settings(self, **update: Any) -> Settings:
        """Run the rest of the test with these settings changed (before ``serve`` and
        ``start_pool``): the services are built once and frozen, so they are replaced whole."""
        self.settings = self.settings.model_copy(update=update)
        self.services = dataclasses.replace(self.services, settings=self.settings)
        return self.settings

    @property
    def data_dir(self) -> Path:
        return Path(self.settings.data_dir)

    @property
    def bot_login(self) -> str:
        return f"{self.slug}[bot]"

    # -- repositories and issues ------------------------------------------------------------

    async def add_repo(
        self,
        name: str = "demo",
        *,
        files: Mapping[str, str] | None = None,
        script: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> str:
        """Create ``octo-org/<name>`` (``BASE_FILES`` plus ``files``), with the fake agent's
        ``script`` and ``.github/patchwright.yml`` from ``config`` (default: a 1-minute agent
        timeout), added to the installation; ``alice`` may write. Returns ``owner/name``."""
        contents = dict(BASE_FILES)
        contents.update(files or {})
        if script is not None:
            contents[fake_agent.SCRIPT_NAME] = json.dumps(script, indent=1)
        contents[".github/patchwright.yml"] = yaml.safe_dump(
            dict(config if config is not None else FAST_AGENT_CONFIG)
        )
        await self.emulator.create_repo(OWNER, name, owner_type="Organization", files=contents)
        full = f"{OWNER}/{name}"
        await self.emulator.change_installation_repositories(self.installation_id, add=[full])
        self.emulator.create_user("alice", repo=full, permission="write")
        return full

    async def open_issue(self, repo: str, title: str, body: str = "", *, labels: tuple[str, ...] = ()) -> int:
        issue = await self.emulator.open_issue(
            repo, title=title, body=body, user="alice", labels=list(labels)
        )
        return int(issue["number"])

    async def create_task(
        self,
        repo: str,
        issue_number: int,
        *,
        title: str | None = None,
        spec: str | None = None,
        max_attempts: int = 5,
        max_cost_usd: float = 10.0,
        agent: str = "",
        model: str = "",
    ) -> Task:
        """A pending task for the issue, as the issues handler would create it (title and
        body from the emulator's issue unless given)."""
        found = self.emulator.issue(self.emulator.repo(repo), issue_number)
        task = rules.new_task(
            id=new_id("task"),
            repo=repo,
            installation_id=self.installation_id,
            issue_number=issue_number,
            title=found.title if title is None else title,
            spec=(found.body or "") if spec is None else spec,
            max_attempts=max_attempts,
            max_cost_usd=max_cost_usd,
            agent=agent,
            model=model,
            base_branch="",
            now=utcnow(),
        )
        stored, created = await self.store.create_task(task)
        assert created
        await self.store.notify_pending()
        return stored

    # -- steering tasks --------------------------------------------------------------------

    async def decide(
        self, task_id: str, rule: Callable[[Task], rules.Decision], *, actor: str = "alice"
    ) -> Task:
        """Apply a rule as a handler would (status comment included); the decision must be accepted."""
        task = await self.store.get_task(task_id)
        assert task is not None
        decision, new = await self.services.tasks.decide(
            task, rule, gh=self.services.github_for(self.installation_id), actor=actor
        )
        assert new is not None, decision.reason
        return new

    async def wait_for(
        self, task_id: str, predicate: Callable[[Task], bool], *, timeout: float = 30.0
    ) -> Task:
        """Poll the store until ``predicate(task)`` holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        task: Task | None = None
        while loop.time() < deadline:
            task = await self.store.get_task(task_id)
            if task is not None and predicate(task):
                return task
            await asyncio.sleep(0.05)
        raise AssertionError(f"task {task_id} did not reach the expected state in {timeout} s: {task}")

    async def logs_once_written(self, task_id: str, text: str, *, timeout: float = 30.0) -> str:
        """A task's log lines, joined, once they contain ``text``. An attempt's log is written
        in batches and closed after the attempt's outcome is recorded, so a test that waited
        for the task's state may still be ahead of its last lines."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            logs = "\n".join(line for _, line in await self.store.read_logs(task_id))
            if text in logs:
                return logs
            if loop.time() > deadline:
                raise AssertionError(f"the log of {task_id} does not say {text!r} after {timeout} s:\n{logs}")
            await asyncio.sleep(0.05)

    async def wait_until(
        self, predicate: Callable[[], bool], *, timeout: float = 30.0, what: str = "condition"
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(f"{what} not met in {timeout} s")
            await asyncio.sleep(0.05)

    # -- workers ---------------------------------------------------------------------------

    async def start_pool(self, **kwargs: Any) -> WorkerPool:
        """A started worker pool with test-friendly intervals (override any with ``kwargs``;
        ``sandbox``/``environ``/``executables``/``kill_grace`` go to its RunnerOptions)."""
        option_keys = (
            "sandbox",
            "environ",
            "executables",
            "kill_grace",
            "log_batch_lines",
            "log_batch_seconds",
            "disk_check_seconds",
        )
        option_args = {key: kwargs.pop(key) for key in option_keys if key in kwargs}
        option_args.setdefault("sandbox", "none")
        option_args.setdefault("environ", {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        option_args.setdefault("kill_grace", 1.0)
        params: dict[str, Any] = {
            "workers": 2,
            "heartbeat_interval": 0.5,
            "status_interval": 0.2,
            "stale_after": 120.0,
            "idle_wait": 0.3,
            "shutdown_grace": 20.0,
        }
        params.update(kwargs)
        pool = WorkerPool(self.services, github=self.github, options=RunnerOptions(**option_args), **params)
        await pool.start()
        self.pools.append(pool)
        return pool

    def claude_executable(self) -> str:
        """A ``claude`` stand-in: runs the fake agent with whatever flags the preset passes."""
        path = self.tmp_path / "bin" / "claude"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f'#!/bin/sh\nexec {sys.executable} {Path(fake_agent.__file__).resolve()} --out {self.agent_out} "$@"\n'
        )
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return str(path)

    def agent_run(self, attempt: int) -> dict[str, Any]:
        """What the fake agent recorded about its run for ``attempt`` (argv, env, prompt…)."""
        return json.loads((self.agent_out / f"run-{attempt}.json").read_text())

    def agent_ran(self, attempt: int) -> bool:
        return (self.agent_out / f"run-{attempt}.json").exists()

    # -- reading GitHub's side --------------------------------------------------------------

    async def branch_sha(self, repo: str, branch: str) -> str | None:
        owner, name = repo.split("/")
        return await self.emulator.git.ref_sha(owner, name, f"refs/heads/{branch}")

    async def read(self, repo: str, ref: str, path: str) -> str | None:
        owner, name = repo.split("/")
        data = await self.emulator.git.read_file(owner, name, ref, path)
        return None if data is None else data.decode()

    async def git(self, repo: str, *args: str) -> str:
        """A read-only git command in the emulator's bare repository."""
        owner, name = repo.split("/")
        path = self.emulator.root_dir / "repos" / owner / f"{name}.git"
        proc = await asyncio.create_subprocess_exec(
            "git",
            f"--git-dir={path}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "HOME": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"},
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()

    def pull(self, repo: str, number: int) -> Any:
        return self.emulator.pull(self.emulator.repo(repo), number)

    def comments(self, repo: str, number: int) -> list[str]:
        """Bodies of the comments on an issue or PR, oldest first."""
        found = self.emulator.repo(repo)
        issue = self.emulator.issue(found, number)
        return [found.comments[i].body for i in issue.comment_ids if i in found.comments]

    def review_replies(self, repo: str, thread_id: int) -> list[str]:
        """Bodies of the replies in a review thread."""
        found = self.emulator.repo(repo)
        return [c.body for c in found.review_comments.values() if c.in_reply_to_id == thread_id]

    def check_runs(self, repo: str, head_sha: str, name: str = SLUG) -> list[Any]:
        found = self.emulator.repo(repo)
        return [r for r in found.check_runs.values() if r.head_sha == head_sha and r.name == name]

    # -- the full bot -------------------------------------------------------------------------

    async def serve(self) -> str:
        """Run the webhook ingress and a dispatcher with the real handlers over this store,
        and point the App's webhooks at it. Returns the webhook URL."""
        import handlers
        from bot.app import create_app
        from bot.dispatcher import Dispatcher
        from bot.runtime import context_factory

        app = create_app(self.settings, store=self.store)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhook"

        dispatcher = Dispatcher(self.store, handlers.router, context_factory(self.services), idle_wait=0.1)
        stop_dispatcher = await dispatcher.start()
        self._cleanups.append(runner.cleanup)
        self._cleanups.append(stop_dispatcher)
        self.emulator.update_app(self.app_id, webhook_url=url, webhook_secret=WEBHOOK_SECRET)
        return url

    async def close(self) -> None:
        for pool in reversed(self.pools):
            await pool.stop()
        for cleanup in reversed(self._cleanups):
            await cleanup()


@pytest.fixture
async def e2e(
    tmp_path: Path,
    e2e_rest_description: RestDescription,
    e2e_key_pair: tuple[str, str],
    e2e_store_url: str,
) -> AsyncIterator[E2E]:
    private_pem, public_pem = e2e_key_pair
    emulator = Emulator(tmp_path / "emulator", description=e2e_rest_description, validate_responses=True)
    await emulator.start()
    session = aiohttp.ClientSession()
    schema = None if e2e_store_url.startswith("sqlite") else f"e2e_{uuid.uuid4().hex[:16]}"
    store = await open_store(e2e_store_url, schema=schema)
    harness: E2E | None = None
    try:
        await store.migrate()
        app = await emulator.create_app(SLUG, public_key=public_pem, webhook_secret=WEBHOOK_SECRET)
        await emulator.create_repo(OWNER, "bootstrap", owner_type="Organization")
        installation = await emulator.create_installation(app["id"], OWNER, [f"{OWNER}/bootstrap"])
        agent_out = tmp_path / "agent-out"
        agent_out.mkdir()
        settings = Settings(
            app_id=app["id"],
            private_key=private_pem,
            webhook_secret=WEBHOOK_SECRET,
            app_slug=app["slug"],
            github_url=emulator.base_url,
            database_url=e2e_store_url,
            data_dir=tmp_path / "data",
            workers=2,
            agent="command",
            agent_command=fake_agent.command_template(out=str(agent_out)),
        )
        github = GitHubClientFactory(
            session, AppCredentials(app["id"], private_pem), base_url=emulator.base_url
        )
        services = build_services(
            settings,
            store,
            github_for=github.for_installation,
            app_slug=app["slug"],
            clock=utcnow,
            app_id=app["id"],
            forget_installation=github.drop,
        )
        harness = E2E(
            tmp_path=tmp_path,
            emulator=emulator,
            session=session,
            store=store,
            settings=settings,
            github=github,
            services=services,
            app_id=int(app["id"]),
            slug=str(app["slug"]),
            private_key=private_pem,
            installation_id=int(installation["id"]),
            agent_out=agent_out,
        )
        yield harness
    finally:
        if harness is not None:
            await harness.close()
        await store.close()
        await session.close()
        await emulator.stop()
        if schema is not None:
            conn = await asyncpg.connect(e2e_store_url)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()
    bad = [v.as_dict() for v in emulator.violations()]
    assert not bad, (
        f"requests or responses that break GitHub's REST description or webhook schemas: {json.dumps(bad, indent=1)[:4000]}"
    )


# -- the demo's world (bot.demo): the story and the scenarios -------------------------------

#: The emulator's fault injection for "the same story on an unreliable GitHub": 20 % of REST
#: calls answer 5xx, 5 % a secondary rate limit with ``retry-after: 1`` (seeded).
FAULTS: Mapping[str, Any] = {"error_rate": 0.2, "secondary_rate_limit_rate": 0.05, "retry_after": 1}


async def quick_sleep(seconds: float) -> None:
    """The GitHub client's backoff and retry-after waits, shortened so fault tests stay fast."""
    await asyncio.sleep(min(seconds, 0.01))


def fault_tolerant_options() -> dict[str, Any]:
    """World options for a GitHub that fails often: short client sleeps, and a client and
    dispatcher that retry more. With 20 % of calls failing, five tries give up on one call in
    ~3000; a worker that gives up backs off for a minute (a transient retry), so the client
    gets ten tries and a story's couple of hundred calls all get through."""
    from bot.github.client import RetryPolicy

    return {
        "github_options": {"sleep": quick_sleep, "policy": RetryPolicy(max_attempts=10)},
        "dispatcher_options": {"retry_delays": (0.05, 0.1, 0.2, 0.4)},
    }


@pytest.fixture
async def make_world(
    tmp_path: Path, e2e_key_pair: tuple[str, str], e2e_rest_description: RestDescription
) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """``await make_world(database_url=None, faults=False, **WorldOptions fields)``: a started
    :class:`bot.demo.DemoWorld` (emulator, the bot as ``serve`` runs it, worker pool, the demo's
    repository and agent) with the test App key, no sandbox (so the fake agent records its
    runs) and this process's PATH. ``database_url`` None is SQLite under ``tmp_path``; a
    PostgreSQL URL gets a schema of its own, dropped at teardown. ``faults=True`` makes the
    emulator answer as :data:`FAULTS` says once the world runs (and the bot patient enough
    for it, see :func:`fault_tolerant_options`). At teardown every world is stopped and no
    request or response may have broken GitHub's REST description."""
    from bot.demo import DemoWorld, WorldOptions

    worlds: list[DemoWorld] = []
    schemas: list[tuple[str, str]] = []

    async def make(*, database_url: str | None = None, faults: bool = False, **options: Any) -> DemoWorld:
        schema = None
        if database_url is not None:
            schema = f"e2e_{uuid.uuid4().hex[:16]}"
            schemas.append((database_url, schema))
        options.setdefault("sandbox", "none")
        options.setdefault("environ", {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        if faults:
            options = {**fault_tolerant_options(), **options}
        world = await DemoWorld.start(
            tmp_path / f"world-{len(worlds)}",
            WorldOptions(
                database_url=database_url,
                schema=schema,
                key_pair=e2e_key_pair,
                description=e2e_rest_description,
                **options,
            ),
        )
        worlds.append(world)
        if faults:
            world.emulator.faults.configure(dict(FAULTS), seed=7)
        return world

    try:
        yield make
    finally:
        for world in worlds:
            await world.stop()
        for url, schema in schemas:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()
    bad = [v.as_dict() for world in worlds for v in world.emulator.violations()]
    assert not bad, f"requests or responses that break GitHub's REST description or webhook schemas: {json.dumps(bad, indent=1)[:4000]}"


__all__ = [
    "BASE_FILES",
    "E2E",
    "FAST_AGENT_CONFIG",
    "FAULTS",
    "OWNER",
    "SLUG",
    "Status",
    "fault_tolerant_options",
    "quick_sleep",
]
