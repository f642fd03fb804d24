"""``patchwright demo``: the whole loop on one machine, with no GitHub App and no network.

It starts the local GitHub emulator (:mod:`bot.sandbox.emulator`), the bot exactly as
``patchwright serve`` runs it (webhook ingress, dispatcher, handlers, reconciler, an embedded
worker pool) on SQLite (or PostgreSQL), a small Python repository whose test suite is its CI
and fails until a bug is fixed, and the deterministic agent (:mod:`bot.sandbox.fake_agent`)
through the ``command`` preset — the real subprocess path. Then scripted humans play the story
of SPEC §11:

1. mona labels issue #1 → the agent's first fix is incomplete → CI fails → the CI retry, with
   the failing step's log in its prompt, fixes it → CI passes;
2. octocat requests a change in an inline comment → the feedback retry pushes to the same PR
   and the bot answers in the thread;
3. mona pushes a conflicting commit to ``main`` → git cannot merge, so the conflict retry runs
   the agent on the conflicted file, outside the budget → CI passes;
4. mona merges the PR → the task is ``merged`` and the issue closed.

The pieces are reusable: :class:`DemoWorld` (everything running, and :meth:`DemoWorld.settle`
to wait until nothing is in flight), :class:`Story` (the humans), :class:`Narrator` (prints what
GitHub sent and what the bot did as it happens) and :func:`run_demo` (the command). The
end-to-end tests and ``bench/loop.py`` play the same story with the same pieces.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TextIO

from aiohttp import web

from bot import messages
from bot.agents.sandbox import BwrapProbe
from bot.app import RUNTIME_KEY, IngressRunner, create_app
from bot.runtime import Runtime, start_runtime
from bot.config import ConfigError, Settings, load_settings
from bot.logs import configure_logging
from bot.sandbox import fake_agent
from bot.sandbox.emulator import Emulator
from bot.sandbox.openapi import RestDescription
from bot.sandbox.state import ACTIONS_APP_ID
from bot.store.base import (
    Attempt,
    Delivery,
    DeliveryState,
    Store,
    StoreError,
    TaskEvent,
)
from bot.store.factory import SERVE_LEDGER_WRITER, open_store
from bot.logs import redact_url
from bot.tasks.model import RetryKind, Status, Task
from bot.worker.attempt_log import LOG_PREFIX
from bot.worker.pool import WorkerPool
from bot.worker.runner import RunnerOptions

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------
# the story's material (plain data)
# --------------------------------------------------------------------------------------

OWNER = "octo-org"
REPO_NAME = "slugkit"
REPO = f"{OWNER}/{REPO_NAME}"
APP_SLUG = "patchwright"
MAINTAINER = "mona"
REVIEWER = "octocat"
TRIGGER_LABEL = "patchwright"
CI_CHECK = "tests"
PYTEST_COMMAND = "python -m pytest -q"
#: When the interpreter has no pytest (``pip install -e .`` without the test extra), the
#: repository's unittest-style tests run under the standard library's runner.
UNITTEST_COMMAND = "python -m unittest"


def ci_command(has_pytest: bool) -> str:
    """The demo repository's CI command."""
    return PYTEST_COMMAND if has_pytest else UNITTEST_COMMAND
MAX_ATTEMPTS = 5

SLUG_V0 = '''\
"""Turn titles into URL slugs."""


def slugify(text):
    """Lower-case ``text`` and join its words with hyphens."""
    return "-".join(text.lower().split())
'''

# The CI retry's fix: every run of characters that are not letters or digits separates words.
SLUG_V2 = '''\
"""Turn titles into URL slugs."""

import re


def slugify(text):
    """Lower-case ``text`` and join its words with hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
'''

# After the review: the pattern gets a name.
SLUG_V3 = '''\
"""Turn titles into URL slugs."""

import re

# Anything that is not a lower-case letter or a digit separates two words.
_SEPARATORS = re.compile(r"[^a-z0-9]+")


def slugify(text):
    """Lower-case ``text`` and join its words with hyphens, dropping punctuation."""
    return _SEPARATORS.sub("-", text.lower()).strip("-")
'''

CHANGELOG = """\
# Changelog

## Unreleased

## 0.1.0

- `slugify()` joins words with hyphens.
"""
CHANGELOG_FIX_ENTRY = "- `slugify()` drops punctuation (#1).\n"
CHANGELOG_MAIN_ENTRY = "- `slugkit.__version__` tells the installed version.\n"

REPO_FILES: Mapping[str, str] = MappingProxyType({
    "README.md": (
        "# slugkit\n\nTurn titles into URL slugs.\n\n"
        '    >>> from slugkit import slugify\n    >>> slugify("Hello World")\n    \'hello-world\'\n\n'
        "Run the tests with `python -m pytest -q` (or `python -m unittest`).\n"
    ),
    "pyproject.toml": (
        '[project]\nname = "slugkit"\nversion = "0.1.0"\nrequires-python = ">=3.9"\n\n'
        '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n'
    ),
    "slugkit/__init__.py": '"""slugkit: URL slugs from titles."""\n\nfrom slugkit.slug import slugify\n\n__all__ = ["slugify"]\n',
    "slugkit/slug.py": SLUG_V0,
    "tests/__init__.py": "",
    "tests/test_slug.py": (
        "import unittest\n\nfrom slugkit import slugify\n\n\n"
        "class SlugifyTest(unittest.TestCase):\n"
        "    def test_words_are_joined_with_hyphens(self):\n"
        '        self.assertEqual(slugify("Hello World"), "hello-world")\n\n'
        "    def test_punctuation_is_dropped(self):\n"
        '        self.assertEqual(slugify("Hello, World!"), "hello-world")\n'
    ),
    "CHANGELOG.md": CHANGELOG,
    ".github/workflows/ci.yml": (
        "name: CI\non: [push, pull_request]\njobs:\n  tests:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - uses: actions/checkout@v4\n      - run: python -m pytest -q\n"
    ),
    ".github/patchwright.yml": (
        "# patchwright's settings for this repository (check them with `patchwright check-config`).\n"
        f"trigger_label: {TRIGGER_LABEL}\nbudget:\n  max_attempts: {MAX_ATTEMPTS}\nagent:\n  timeout_minutes: 2\n"
    ),
})

ISSUE_TITLE = "slugify() keeps punctuation"
ISSUE_BODY = (
    '`slugify("Hello, World!")` returns `hello,-world!`; it should return `hello-world`.\n'
    "`test_punctuation_is_dropped` in `tests/test_slug.py` shows it (CI is red).\n\n"
    "- [ ] punctuation never ends up in a slug\n"
    "- [ ] the changelog mentions the fix\n"
)
REVIEW_BODY = "Works now, thanks! One request before I merge."
REVIEW_COMMENT = "Please give this pattern a name (a module-level constant): it is hard to read inline."
MAIN_COMMIT_MESSAGE = "Add slugkit.__version__"
MAIN_COMMIT_FILES: Mapping[str, str] = MappingProxyType({
    "slugkit/__init__.py": (
        '"""slugkit: URL slugs from titles."""\n\nfrom slugkit.slug import slugify\n\n'
        '__version__ = "0.2.0"\n__all__ = ["__version__", "slugify"]\n'
    ),
    "CHANGELOG.md": CHANGELOG.replace("## Unreleased\n", "## Unreleased\n\n" + CHANGELOG_MAIN_ENTRY),
})

#: What the deterministic agent does per attempt kind (see :mod:`bot.sandbox.fake_agent`).
STORY_SCRIPT: Mapping[str, Any] = MappingProxyType({
    "first": (
        {"replace": {"slugkit/slug.py": (("text.lower().split()", 'text.lower().replace(",", " ").split()'),)}},
        {"replace": {"CHANGELOG.md": (("## Unreleased\n", "## Unreleased\n\n" + CHANGELOG_FIX_ENTRY),)}},
        {"done": "Commas no longer end up in slugs; added a changelog entry."},
    ),
    "ci_failure": (
        {"write": {"slugkit/slug.py": SLUG_V2}},
        {"done": "CI showed that '!' survived too: every run of non-alphanumeric characters now separates words."},
    ),
    "feedback": (
        {"write": {"slugkit/slug.py": SLUG_V3}},
        {"done": "Named the pattern _SEPARATORS, as the review asked."},
    ),
    "merge_conflict": (
        {"resolve_conflicts": "both"},
        {"done": "main's changelog entry conflicted with ours: kept both."},
    ),
})


def plain_json(value: Any) -> Any:
    """``value`` with read-only mappings and tuples turned into dicts and lists (for JSON)."""
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(v) for v in value]
    return value


class DemoError(Exception):
    """The demo could not go on (something did not happen in time, a setting is wrong)."""


# --------------------------------------------------------------------------------------
# the world: emulator + bot + worker pool
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldOptions:
    """How :meth:`DemoWorld.start` builds the world.

    ``database_url`` None means SQLite in the world's directory; ``schema`` keeps a
    PostgreSQL world's tables apart. ``environ`` is where agents get PATH from (handed down
    from ``__main__``). ``agent_command`` replaces the fake agent's command template;
    ``agent_script`` is what the fake agent does (default: the story). ``key_pair`` and
    ``description`` let tests reuse a generated App key and the loaded REST description;
    ``validate_responses`` has the emulator check its own answers against GitHub's
    description too (requests are always checked).
    """

    database_url: str | None = None
    schema: str | None = None
    sandbox: str = "auto"
    environ: Mapping[str, str] = field(default_factory=dict)
    workers: int = 2
    agent_script: Mapping[str, Any] = field(default_factory=lambda: STORY_SCRIPT)
    agent_command: str | None = None
    github_options: Mapping[str, Any] = field(default_factory=dict)
    dispatcher_options: Mapping[str, Any] = field(default_factory=dict)
    key_pair: tuple[str, str] | None = None
    description: RestDescription | None = None
    ci: bool = True
    validate_responses: bool = True
    heartbeat_interval: float = 2.0
    status_interval: float = 0.2
    idle_wait: float = 1.0


def ci_python_wrapper(bin_dir: Path, python: str = sys.executable) -> Path:
    """A ``python`` on the CI command's PATH that runs this interpreter (its packages, pytest)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "python"
    path.write_text(f"#!/bin/sh\nexec {shlex.quote(python)} \"$@\"\n")
    path.chmod(0o755)
    return path


class DemoWorld:
    """The emulator with the App installed on :data:`REPO`, and the bot serving it.

    Build it with :meth:`start`, end it with :meth:`stop`. Everything lives under ``root``:
    ``github/`` (the emulator's repositories), ``bot/`` (the bot's data dir), the SQLite
    database, ``agent-script.json`` and ``agent-runs/`` (what the fake agent recorded, when
    its sandbox lets it write there).
    """

    def __init__(self, root: Path, options: WorldOptions, emulator: Emulator) -> None:
        self.root = root
        self.options = options
        self.emulator = emulator
        self.store: Store | None = None
        self.settings: Settings | None = None
        self.runtime: Runtime | None = None
        self.pool: WorkerPool | None = None
        self.bot_url = ""
        self.app_id = 0
        self.installation_id = 0
        self.webhook_secret = secrets.token_hex(20)
        self.agent_runs = root / "agent-runs"
        self.ci_command = ci_command(importlib.util.find_spec("pytest") is not None)
        self._runner: web.AppRunner | None = None

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    async def start(cls, root: Path, options: WorldOptions | None = None) -> DemoWorld:
        options = options or WorldOptions()
        root = Path(root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        emulator = Emulator(
            root / "github", description=options.description, validate_responses=options.validate_responses
        )
        world = cls(root, options, emulator)
        try:
            await world._start()
        except BaseException:
            await world.stop()
            raise
        return world

    async def _start(self) -> None:
        options, emulator = self.options, self.emulator
        await emulator.start()
        public_key = options.key_pair[1] if options.key_pair else None
        app = await emulator.create_app(
            "patchwright",
            slug=APP_SLUG,
            owner=OWNER,
            public_key=public_key,
            webhook_secret=self.webhook_secret,
            description="Turns labelled issues into pull requests and shepherds them to merge.",
        )
        self.app_id = int(app["id"])
        private_key = options.key_pair[0] if options.key_pair else str(app["private_key"])

        script_path = self.root / "agent-script.json"
        script_path.write_text(json.dumps(plain_json(options.agent_script), indent=1))
        command = options.agent_command or fake_agent.command_template(
            script=str(script_path), out=str(self.agent_runs)
        )
        database_url = options.database_url or f"sqlite:///{self.root / 'patchwright.db'}"
        self.settings = load_settings(
            {
                "PATCHWRIGHT_APP_ID": str(self.app_id),
                "PATCHWRIGHT_PRIVATE_KEY": private_key,
                "PATCHWRIGHT_WEBHOOK_SECRET": self.webhook_secret,
                "PATCHWRIGHT_GITHUB_URL": emulator.base_url,
                "PATCHWRIGHT_DATABASE_URL": database_url,
                "PATCHWRIGHT_DATA_DIR": str(self.root / "bot"),
                "PATCHWRIGHT_WORKERS": str(options.workers),
                "PATCHWRIGHT_AGENT": "command",
                "PATCHWRIGHT_AGENT_COMMAND": command,
                "PATCHWRIGHT_SANDBOX": options.sandbox,
            },
            env_file=None,
        )
        self.store = await open_store(
            database_url, schema=options.schema, ledger_writer=SERVE_LEDGER_WRITER, environ=options.environ
        )
        await self.store.migrate()

        app_server = create_app(self.settings, store=self.store, runtime=self._start_runtime)
        self._runner = IngressRunner(app_server, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.bot_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self.runtime = app_server[RUNTIME_KEY]  # type: ignore[assignment]
        emulator.update_app(self.app_id, webhook_url=f"{self.bot_url}/webhook")

        # The maintainer's repository, then the App installed on it (the bot hears of it).
        await emulator.create_repo(
            OWNER, REPO_NAME, owner_type="Organization", files=REPO_FILES, description="URL slugs from titles"
        )
        emulator.create_label(emulator.repo(REPO), TRIGGER_LABEL, "7057ff", "Hand this issue to patchwright")
        emulator.create_user(MAINTAINER, repo=REPO, permission="maintain", name="Mona Lisa")
        emulator.create_user(REVIEWER, repo=REPO, permission="write", name="The Octocat")
        installation = await emulator.create_installation(self.app_id, OWNER, [REPO], sender=MAINTAINER)
        self.installation_id = int(installation["id"])
        if options.ci:
            python = ci_python_wrapper(self.root / "bin")
            emulator.configure_ci(
                REPO,
                self.ci_command,
                checks=(CI_CHECK,),
                timeout=60,
                env={
                    "PATH": f"{python.parent}:/usr/local/bin:/usr/bin:/bin",
                    "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
                    "PYTHONDONTWRITEBYTECODE": "1",
                },
            )

    async def _start_runtime(self, settings: Settings, store: Store) -> Runtime:
        """``patchwright serve``'s runtime (dispatcher, reconciler) plus a worker pool whose
        intervals suit a demo that lasts seconds."""
        options = self.options
        runtime = await start_runtime(
            settings,
            store,
            with_workers=False,
            environ=options.environ,
            github_options=dict(options.github_options),
            dispatcher_options=dict(options.dispatcher_options),
        )
        pool = WorkerPool(
            runtime.services,
            github=runtime.github,
            options=RunnerOptions(environ=dict(options.environ), sandbox=settings.sandbox, kill_grace=2.0),
            heartbeat_interval=options.heartbeat_interval,
            status_interval=options.status_interval,
            idle_wait=options.idle_wait,
            shutdown_grace=15.0,
        )
        try:
            await pool.start()
        except BaseException:
            await runtime.stop()
            raise
        self.pool = pool
        return runtime

    async def stop(self) -> None:
        """Stop the workers, the bot and the emulator; close the store."""
        if self.pool is not None:
            await self.pool.stop()
            self.pool = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.emulator.stop()
        if self.store is not None:
            await self.store.close()
            self.store = None

    # -- reading the world --------------------------------------------------------------

    @property
    def db(self) -> Store:
        if self.store is None:
            raise DemoError("the world is not running")
        return self.store

    async def task(self, issue: int = 1) -> Task:
        found = await self.db.get_task_by_issue(REPO, issue)
        if found is None:
            raise DemoError(f"issue #{issue} has no task")
        return found

    def ci_results(self, sha: str) -> dict[str, str]:
        """Check name -> conclusion ("" while running) of the CI runs on ``sha``."""
        repo = self.emulator.repo(REPO)
        return {
            run.name: run.conclusion or ""
            for run in repo.check_runs.values()
            if run.app_id == ACTIONS_APP_ID and run.head_sha == sha
        }

    async def read_file(self, ref: str, path: str) -> str | None:
        data = await self.emulator.git.read_file(OWNER, REPO_NAME, ref, path)
        return None if data is None else data.decode()

    def agent_run(self, attempt: int) -> dict[str, Any] | None:
        """What the fake agent recorded about its run for ``attempt`` (None when it could
        not write there, e.g. inside bubblewrap)."""
        path = self.agent_runs / f"run-{attempt}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    async def busy(self) -> str:
        """What is still in flight, in words; "" when nothing is."""
        if self.pool is not None and self.pool.running:
            return "the agent works on " + ", ".join(f"attempt {n}" for n in self.pool.running.values())
        for state in (DeliveryState.PENDING, DeliveryState.PROCESSING):
            rows = await self.db.list_deliveries(state=state, limit=1)
            if rows:
                action = f".{rows[0].action}" if rows[0].action else ""
                return f"the bot handles {rows[0].event}{action} (delivery {rows[0].id})"
        for task in await self.db.list_tasks(statuses=[Status.PENDING, Status.RUNNING]):
            if task.not_before is not None:
                return f"task {task.id} waits until {task.not_before:%H:%M:%S} UTC: {task.retry_reason}"
            return f"task {task.id} is {task.status.value}"
        return ""

    async def settle(
        self,
        timeout: float = 60.0,
        *,
        quiet_rounds: int = 3,
        interval: float = 0.05,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        """Wait until nothing is in flight: CI runs and webhooks sent, every delivery
        processed, no task pending or running — ``quiet_rounds`` checks in a row. ``on_wait``
        hears what is still going on."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet = 0
        doing = ""
        while True:
            if on_wait is not None:
                on_wait(doing or "CI runs, webhooks travel")
            await self.emulator.idle()
            doing = await self.busy()
            quiet = 0 if doing else quiet + 1
            if quiet >= quiet_rounds:
                return
            if loop.time() > deadline:
                raise DemoError(f"nothing settled in {timeout:g} s: {doing}")
            await asyncio.sleep(interval)


# --------------------------------------------------------------------------------------
# the humans
# --------------------------------------------------------------------------------------


def line_of(text: str, needle: str) -> int:
    """1-based number of the first line of ``text`` containing ``needle``."""
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return number
    raise DemoError(f"no line contains {needle!r}")


@dataclass
class StoryMarks:
    """What the story's humans made (numbers and ids the tests look at)."""

    issue: int = 0
    pr: int = 0
    review_id: int = 0
    review_comment_id: int = 0
    main_commit: str = ""


class Story:
    """Mona, the maintainer, and octocat, the reviewer, acting through the emulator.

    Each step acts, then waits until the bot and CI are done with it (:meth:`DemoWorld.settle`).
    ``say`` hears one sentence per action; ``pace`` seconds pass before each action (so that a
    person can follow along).
    """

    STEPS = (
        "a maintainer labels an issue",
        "a reviewer requests a change",
        "a conflicting commit lands on main",
        "the maintainer merges",
    )

    def __init__(
        self,
        world: DemoWorld,
        *,
        say: Callable[[str, str], Awaitable[None]] | None = None,
        stage: Callable[[str], None] | None = None,
        pace: float = 0.0,
        timeout: float = 60.0,
    ) -> None:
        self.world = world
        self.say = say
        self.stage = stage or (lambda text: None)
        self.pace = pace
        self.timeout = timeout
        self.marks = StoryMarks()
        self._stage = ""

    async def _settle(self) -> None:
        await self.world.settle(self.timeout, on_wait=lambda doing: self.stage(f"{self._stage} — {doing}"))

    async def _act(self, step: int, who: str, text: str) -> None:
        self._stage = f"step {step}/{len(self.STEPS)}: {self.STEPS[step - 1]}"
        self.stage(self._stage)
        if self.pace:
            await asyncio.sleep(self.pace)
        if self.say is not None:
            await self.say(who, text)

    async def label_issue(self) -> Task:
        """Step 1: open issue #1 and add the trigger label; returns the task once CI passed
        on the CI retry's push."""
        em = self.world.emulator
        await self._act(1, MAINTAINER, f'opens issue "{ISSUE_TITLE}" and adds the label {TRIGGER_LABEL}')
        issue = await em.open_issue(REPO, title=ISSUE_TITLE, body=ISSUE_BODY, user=MAINTAINER)
        self.marks.issue = int(issue["number"])
        await em.label_issue(REPO, self.marks.issue, [TRIGGER_LABEL], user=MAINTAINER)
        await self._settle()
        task = await self.world.task(self.marks.issue)
        if task.pr_number is None:
            raise DemoError(f"no pull request was opened: the task is {task.status.value} ({task.close_reason or task.retry_reason})")
        self.marks.pr = task.pr_number
        return task

    async def request_changes(self) -> Task:
        """Step 2: a review that requests changes with one inline comment."""
        task = await self.world.task(self.marks.issue)
        source = await self.world.read_file(task.head_sha, "slugkit/slug.py") or ""
        line = line_of(source, "re.sub(") if "re.sub(" in source else len(source.splitlines())
        await self._act(2, REVIEWER, f"requests changes on PR #{self.marks.pr}, inline on slugkit/slug.py line {line}")
        review = await self.world.emulator.submit_review(
            REPO,
            self.marks.pr,
            user=REVIEWER,
            event="REQUEST_CHANGES",
            body=REVIEW_BODY,
            comments=[{"path": "slugkit/slug.py", "line": line, "body": REVIEW_COMMENT}],
        )
        self.marks.review_id = int(review["id"])
        stored = self.world.emulator.repo(REPO).reviews[self.marks.review_id]
        self.marks.review_comment_id = stored.comment_ids[0]
        await self._settle()
        return await self.world.task(self.marks.issue)

    async def push_conflicting_commit(self) -> Task:
        """Step 3: the maintainer pushes to main a changelog entry where the PR added its own."""
        await self._act(3, MAINTAINER, f'pushes "{MAIN_COMMIT_MESSAGE}" to main (it touches CHANGELOG.md too)')
        commit = await self.world.emulator.push_commit(
            REPO, branch="main", files=dict(MAIN_COMMIT_FILES), message=MAIN_COMMIT_MESSAGE, user=MAINTAINER
        )
        self.marks.main_commit = str(commit["sha"])
        await self._settle()
        return await self.world.task(self.marks.issue)

    async def merge(self) -> Task:
        """Step 4: the maintainer merges the PR."""
        await self._act(4, MAINTAINER, f"merges PR #{self.marks.pr}")
        await self.world.emulator.merge_pull(REPO, self.marks.pr, user=MAINTAINER)
        await self._settle()
        return await self.world.task(self.marks.issue)

    async def play(self) -> Task:
        """The whole story; returns the task as it ends."""
        await self.label_issue()
        await self.request_changes()
        await self.push_conflicting_commit()
        return await self.merge()


# --------------------------------------------------------------------------------------
# output: a console that knows whether it talks to a terminal
# --------------------------------------------------------------------------------------

_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_ASCII_SPINNER = "|/-\\"
_STYLES: Mapping[str, str] = MappingProxyType(
    {"dim": "2", "bold": "1", "red": "31", "green": "32", "yellow": "33", "blue": "34", "magenta": "35", "cyan": "36"}
)


class Console:
    """Lines of output, plus (on a terminal) a progress line kept at the bottom."""

    def __init__(self, out: TextIO, *, tty: bool, color: bool) -> None:
        self.out = out
        self.tty = tty
        self.color = color and tty
        encoding = (getattr(out, "encoding", None) or "ascii").lower()
        self.unicode = "utf" in encoding
        self._status = ""
        self._started = time.monotonic()
        self._frames = itertools.cycle(_SPINNER if self.unicode else _ASCII_SPINNER)
        self._ticker: asyncio.Task[None] | None = None

    def style(self, text: str, *styles: str) -> str:
        if not self.color or not styles:
            return text
        codes = ";".join(_STYLES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def glyph(self, fancy: str, plain: str) -> str:
        return fancy if self.unicode else plain

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def line(self, text: str = "") -> None:
        if self.tty and self._status:
            self.out.write("\r\x1b[2K")
        self.out.write(text + "\n")
        self._draw()
        self.out.flush()

    def status(self, text: str) -> None:
        """The progress line (terminals only)."""
        self._status = text
        if self.tty:
            self._draw()
            self.out.flush()

    def _width(self) -> int:
        try:
            columns = os.get_terminal_size(self.out.fileno()).columns
        except (OSError, ValueError, AttributeError):
            columns = 0
        return columns if columns >= 40 else 100

    def _draw(self) -> None:
        if self.tty and self._status:
            frame = next(self._frames)
            elapsed = f"{self.elapsed():.1f}s"
            room = max(10, self._width() - len(elapsed) - 4)
            text = self._status if len(self._status) <= room else self._status[: room - 1] + "…"
            self.out.write(f"\r\x1b[2K{self.style(frame, 'cyan')} {text} {self.style(elapsed, 'dim')}")

    def start(self) -> None:
        if self.tty and self._ticker is None:
            self._ticker = asyncio.create_task(self._tick(), name="demo-progress")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            if self._status:
                self._draw()
                self.out.flush()

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        if self.tty and self._status:
            self.out.write("\r\x1b[2K")
            self.out.flush()
        self._status = ""


# --------------------------------------------------------------------------------------
# narration: what GitHub sent, what the bot did
# --------------------------------------------------------------------------------------


def short(sha: str) -> str:
    return sha[:7]


def money(value: float) -> str:
    return f"${value:.2f}"


def log_excerpt(context: str, *, limit: int = 3) -> list[str]:
    """The lines of a CI log excerpt that say what failed (pytest's ``E`` lines or an
    ``…Error:`` line, else the last lines)."""
    lines = [line.rstrip() for line in context.splitlines() if line.strip() and not line.startswith("```")]
    errors = [line for line in lines if re.match(r"^\s*E\s", line)]
    errors = errors or [line for line in lines if re.match(r"^\s*\w+(Error|Exception):", line)]
    picked = errors[:limit] if errors else lines[-limit:]
    return [line.strip() for line in picked]


@dataclass
class TaskView:
    """The narrator's running copy of a task, replayed from its events."""

    status: str
    attempt: int
    max_attempts: int
    cost_usd: float
    seen_events: int = 0

    def apply(self, event: TaskEvent) -> None:
        changes = event.changes or {}
        if event.to_status is not None:
            self.status = event.to_status.value
        for name in ("attempt", "max_attempts"):
            if isinstance(changes.get(name), int):
                setattr(self, name, int(changes[name]))
        if isinstance(changes.get("cost_usd"), int | float):
            self.cost_usd = float(changes["cost_usd"])

    def suffix(self) -> str:
        left = max(0, self.max_attempts - self.attempt)
        return f"[{self.status} · attempt {self.attempt}/{self.max_attempts} · {left} retries left · {money(self.cost_usd)}]"


_FULL_SHA = re.compile(r"\b[0-9a-f]{40}\b")
#: Events whose sender is whoever pushed (CI and its bookkeeping): not worth naming.
_CI_EVENTS = frozenset({"check_run", "check_suite", "workflow_run", "workflow_job", "status"})


class Narrator:
    """Prints, as they happen: what GitHub sent that the bot acted on, each decision with the
    task's attempt, budget left and cost, the worker's attempts, CI results, and what the bot
    did on GitHub that people see (status comment, review-thread replies)."""

    def __init__(self, world: DemoWorld, console: Console, *, interval: float = 0.1) -> None:
        self.world = world
        self.console = console
        self.interval = interval
        self.lines: list[str] = []  # everything printed, without styles (tests read it)
        self._views: dict[str, TaskView] = {}
        self._seen: set[tuple[str, int]] = set()  # emulator objects already told
        # CI results wait until the push they judge was told (or a moment has passed).
        self._ci_waiting: list[tuple[float, str, str, bool]] = []  # (since, head SHA, line, passed)
        self._heads_told: set[str] = set()
        self._conflicts_told: set[tuple[str, int]] = set()
        self._deliveries: dict[str, Delivery | None] = {}
        self._lock = asyncio.Lock()
        self._loop: asyncio.Task[None] | None = None

    # -- output ------------------------------------------------------------------------

    def emit(self, who: str, text: str, *, style: tuple[str, ...] = (), detail: Sequence[str] = ()) -> None:
        c = self.console
        stamp = c.style(f"{c.elapsed():6.1f}s", "dim")
        name = c.style(f"{who:<8}", *style) if style else f"{who:<8}"
        self.lines.append(f"{who:<8} {text}")
        c.line(f"{stamp}  {name} {text}")
        for extra in detail:
            self.lines.append(f"         {extra}")
            c.line(f"{'':7}   {'':8} {c.style(c.glyph('│ ', '| ') + extra, 'dim')}")

    async def human(self, who: str, text: str) -> None:
        """A person acts: first tell everything that happened before."""
        await self.poll()
        self._flush_ci(force=True)
        self.emit(who, text, style=("bold", "magenta"))

    # -- polling -----------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="demo-narrator")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None
        await self.poll()
        self._flush_ci(force=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.poll()
            except (StoreError, OSError) as exc:
                log.warning("narrator: %s", exc)
            await asyncio.sleep(self.interval)

    async def poll(self) -> None:
        """Print what happened since the last poll."""
        async with self._lock:
            self._collect_ci()
            store = self.world.store
            if store is None:
                return
            tasks = await store.list_tasks(limit=50)
            for task in reversed(tasks):
                view = self._views.get(task.id)
                if view is None:
                    # First seen within moments of its creation: the budget it started with.
                    view = self._views[task.id] = TaskView(Status.PENDING.value, 1, task.max_attempts, 0.0)
                events = await store.list_events(task.id)
                for event in events[view.seen_events :]:
                    view.apply(event)
                    row = await self._delivery(event.delivery_id) if event.delivery_id else None
                    if row is not None and row.event in _CI_EVENTS:
                        self._flush_ci()  # the result before the decision it caused
                    await self._narrate(task, view, event, row)
                    head = (event.changes or {}).get("head_sha")
                    if isinstance(head, str) and head:
                        self._heads_told.add(head)
                view.seen_events = len(events)
                await self._tell_conflicts(task)
            self._flush_ci()
            self._poll_visible()

    def _first_time(self, kind: str, number: int) -> bool:
        if (kind, number) in self._seen:
            return False
        self._seen.add((kind, number))
        return True

    def _collect_ci(self) -> None:
        """Completed CI runs, from the emulator (told by :meth:`_flush_ci`)."""
        repo = self.world.emulator.repos.get(REPO.lower())
        if repo is None:
            return
        c = self.console
        heads = {i.pull.head_sha: f"PR #{i.number}" for i in repo.pulls() if i.pull is not None}
        main = {run.head_sha for run in repo.workflow_runs.values() if run.head_branch == repo.default_branch}
        for run in list(repo.check_runs.values()):
            if run.app_id != ACTIONS_APP_ID or run.status != "completed" or not self._first_time("check", run.id):
                continue
            where = heads.get(run.head_sha) or (repo.default_branch if run.head_sha in main else "a branch")
            if run.conclusion == "success":
                line = f"{c.glyph('✓', '+')} {run.name} passed on {short(run.head_sha)} ({where})"
            else:
                line = f"{c.glyph('✗', 'x')} {run.name}: {run.conclusion} on {short(run.head_sha)} ({where})"
            # Only the bot's pushes are announced by a task event; other heads need no wait.
            sha = run.head_sha if run.head_sha in heads else ""
            self._ci_waiting.append((time.monotonic(), sha, line, run.conclusion == "success"))

    def _flush_ci(self, *, force: bool = False) -> None:
        keep = []
        for since, sha, line, passed in self._ci_waiting:
            if force or not sha or sha in self._heads_told or time.monotonic() - since > 2.0:
                self.emit("CI", line, style=("green",) if passed else ("red",))
            else:
                keep.append((since, sha, line, passed))
        self._ci_waiting = keep

    def _poll_visible(self) -> None:
        """What the bot did on GitHub that people see, and the issue closing, from the emulator."""
        repo = self.world.emulator.repos.get(REPO.lower())
        if repo is None:
            return
        bot = f"{APP_SLUG}[bot]"
        for comment in list(repo.comments.values()):
            if comment.user.login == bot and messages.STATUS_MARKER in comment.body and self._first_time("status", comment.id):
                self.emit("bot", f"posted the status comment on issue #{comment.issue_number} (edited in place from now on)", style=("cyan",))
        for reply in list(repo.review_comments.values()):
            if reply.user.login == bot and reply.in_reply_to_id is not None and self._first_time("reply", reply.id):
                parent = repo.review_comments.get(reply.in_reply_to_id)
                whose = f"{parent.user.login}'s " if parent is not None else ""
                text = _FULL_SHA.sub(lambda m: short(m.group(0)), reply.body)
                self.emit("bot", f"replied in {whose}review thread on {reply.path}:{reply.line}: {text}", style=("cyan",))
        for issue in list(repo.issues.values()):
            if issue.pull is None and issue.state == "closed" and self._first_time("closed", issue.number):
                by = f" by {issue.closed_by.login}'s merge" if issue.closed_by is not None else ""
                self.emit("GitHub", f"closed issue #{issue.number}{by} (the PR says \"Closes #{issue.number}\")", style=("cyan",))

    async def _tell_conflicts(self, task: Task) -> None:
        """For a finished merge-conflict attempt: did git merge alone, or did the agent run?"""
        for attempt in await self.world.db.list_attempts(task.id):
            key = (task.id, attempt.number)
            if attempt.kind is not RetryKind.MERGE_CONFLICT or not attempt.outcome or key in self._conflicts_told:
                continue
            notes = [line.removeprefix(LOG_PREFIX) for _, line in await self.world.db.read_logs(task.id, attempt.number)]
            files = next((f for f in map(messages.conflicted_files_noted, notes) if f is not None), None)
            merged = any(map(messages.base_merged_noted, notes))
            if files is None and not merged:
                continue  # the log is flushed when the attempt wraps up
            self._conflicts_told.add(key)
            if files is not None:
                text = f"git could not merge {task.base_branch or 'the base'} ({files} conflicted), so the agent resolved it"
            else:
                text = "git merged the base cleanly: no agent, no cost"
            self.emit("worker", f"attempt {attempt.number}: {text}", style=("blue",))

    async def _delivery(self, delivery_id: str) -> Delivery | None:
        if delivery_id not in self._deliveries:
            self._deliveries[delivery_id] = await self.world.db.get_delivery(delivery_id)
        return self._deliveries[delivery_id]

    async def _narrate(self, task: Task, view: TaskView, event: TaskEvent, row: Delivery | None) -> None:
        reason = event.reason.strip()
        suffix = self.console.style(view.suffix(), "dim")
        if event.kind == "claimed":
            kind = task.retry_kind.value if task.attempt == view.attempt else "?"
            self.emit("worker", f"attempt {view.attempt} ({kind}) started {suffix}", style=("blue",))
            return
        if event.kind == "created":
            reason = f"task {task.id} created ({reason})"
        detail: list[str] = []
        changes = event.changes or {}
        if event.to_status is Status.PENDING and changes.get("retry_kind") == RetryKind.CI_FAILURE.value:
            excerpt = log_excerpt(str(changes.get("retry_context") or task.retry_context))
            if excerpt:
                detail = ["the failing step's log goes into the next attempt's prompt:", *excerpt]
        if event.delivery_id:
            sent = "a webhook" if row is None else (f"{row.event}.{row.action}" if row.action else row.event)
            who = "" if row is None or row.event in _CI_EVENTS else _sender_of(row)
            self.emit("GitHub", f"{sent}{who} {self.console.glyph('→', '->')} {reason} {suffix}", style=("cyan",), detail=detail)
        elif event.actor.startswith("worker:"):
            self.emit("worker", f"{reason} {suffix}", style=("blue",), detail=detail)
        else:
            self.emit("bot", f"{reason} {suffix}", style=("cyan",), detail=detail)


def _sender_of(row: Delivery) -> str:
    try:
        login = json.loads(row.payload).get("sender", {}).get("login")
    except (ValueError, AttributeError):
        return ""
    return f" by {login}" if login else ""


# --------------------------------------------------------------------------------------
# the summary
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryRow:
    attempt: int
    kind: str
    outcome: str
    head: str
    ci: str
    cost: float
    summary: str


def summary_rows(attempts: Sequence[Attempt], ci_of: Callable[[str], Mapping[str, str]]) -> list[SummaryRow]:
    """One row per attempt: kind, outcome, the head it pushed and CI's verdict there. Pure
    given ``ci_of`` (head SHA -> check name -> conclusion)."""
    rows = []
    for a in attempts:
        results = ci_of(a.head_after) if a.head_after else {}
        if not a.head_after:
            ci = "—"
        elif not results:
            ci = "not run"
        elif any(v == "" for v in results.values()):
            ci = "running"
        else:
            failed = sorted(k for k, v in results.items() if v != "success")
            ci = "success" if not failed else "failure (" + ", ".join(failed) + ")"
        rows.append(
            SummaryRow(a.number, a.kind.value, a.outcome or "running", short(a.head_after) or "—", ci, a.cost_usd,
                       " ".join((a.summary or a.error).split()))
        )
    return rows


def render_table(rows: Sequence[SummaryRow], *, summary_width: int = 60) -> list[str]:
    """The summary table as text lines (no colors)."""
    header = ("attempt", "kind", "outcome", "head SHA", "CI", "cost", "what the agent said")
    cells = [
        (str(r.attempt), r.kind, r.outcome, r.head, r.ci, money(r.cost),
         r.summary if len(r.summary) <= summary_width else r.summary[: summary_width - 1] + "…")
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return out


def requests_by_operation(world: DemoWorld) -> Counter[str]:
    """The bot's GitHub API requests, counted by operation (from the emulator's request log)."""
    return Counter(r.operation_id or f"{r.method} {r.path}" for r in world.emulator.requests())


async def story_facts(world: DemoWorld, story: Story) -> list[str]:
    """The closing lines: where the task, PR and issue ended, budget, GitHub traffic."""
    task = await world.task(story.marks.issue)
    violations = world.emulator.violations()
    repo = world.emulator.repo(REPO)
    issue = repo.issues[story.marks.issue]
    pr = repo.issues.get(story.marks.pr)
    status_ids = {
        c.id for c in (repo.comments[i] for i in issue.comment_ids if i in repo.comments) if messages.STATUS_MARKER in c.body
    }
    edits = sum(
        1
        for r in world.emulator.requests()
        if r.operation_id == "issues/update-comment" and r.status == 200 and int(r.path.rsplit("/", 1)[1]) in status_ids
    )
    rows = await world.db.list_deliveries(limit=100_000)
    acted = sum(1 for d in rows if d.state is DeliveryState.DONE and not d.ignore_reason)
    ops = requests_by_operation(world)
    merged = pr is not None and pr.pull is not None and pr.pull.merged
    return [
        (
            f"task      {task.id} {task.status.value} after {task.attempt} attempts; max_attempts "
            f"{MAX_ATTEMPTS} → {task.max_attempts} (feedback and conflicts are free); "
            f"{task.budget_left} retries left; cost {money(task.cost_usd)}"
        ),
        (
            f"GitHub    PR #{story.marks.pr} {'merged' if merged else 'not merged'}; issue #{story.marks.issue} "
            f"{issue.state}; {len(status_ids)} status comment, edited in place {edits} times"
        ),
        (
            f"traffic   {sum(ops.values())} API requests by the bot ({len(ops)} operations); {len(rows)} "
            f"webhooks: {acted} acted on, {len(rows) - acted} ignored with the reason recorded"
        ),
        (
            f"checks    {sum(v.kind != 'webhook' for v in violations)} violations of GitHub's REST description; "
            f"{sum(v.kind == 'webhook' for v in violations)} webhooks that break GitHub's payload schemas"
        ),
    ]


# --------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path | None = None
    keep: bool = False
    postgres: str | None = None


def run_from_args(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO | None = None) -> int:
    """``patchwright demo [--data-dir DIR] [--keep] [--postgres URL]``: what ``__main__`` calls."""
    options = DemoOptions(data_dir=args.data_dir, keep=args.keep, postgres=args.postgres)
    try:
        return asyncio.run(run_demo(options, environ=environ, out=out or sys.stdout))
    except KeyboardInterrupt:
        return 130


def demo_sandbox(requested: str | None, probe: BwrapProbe) -> str:
    """The sandbox the demo runs its agent in: what ``PATCHWRIGHT_SANDBOX`` says, else
    bubblewrap where it works and none where it does not (the demo's agent is the project's
    own deterministic script, not a model: it needs no sandbox, and a fresh machine may have
    no bubblewrap). ``patchwright serve`` never makes that choice by itself."""
    if requested:
        return requested
    return "bwrap" if probe.available() else "none"


def _prepare_root(data_dir: Path | None) -> tuple[Path, bool]:
    """(root, temporary). A given directory must be new or empty."""
    if data_dir is None:
        return Path(tempfile.mkdtemp(prefix="patchwright-demo-")), True
    root = data_dir.resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DemoError(f"--data-dir {data_dir} must be a new or empty directory (it holds files already)")
    root.mkdir(parents=True, exist_ok=True)
    return root, False


async def run_demo(options: DemoOptions, *, environ: Mapping[str, str], out: TextIO) -> int:
    """Start the world, play the story with narration, print the summary; with ``keep``,
    keep serving until SIGINT/SIGTERM. Returns the exit status."""
    isatty = getattr(out, "isatty", None)
    tty = bool(isatty and isatty())
    console = Console(out, tty=tty, color=not environ.get("NO_COLOR"))
    try:
        root, temporary = _prepare_root(options.data_dir)
    except DemoError as exc:
        print(f"patchwright demo: {exc}", file=sys.stderr)
        return 2
    log_path = root / "patchwright.log"
    log_file = log_path.open("a", encoding="utf-8")
    _log_to(log_file)
    schema = f"patchwright_demo_{secrets.token_hex(4)}" if options.postgres else None
    sandbox = demo_sandbox(environ.get("PATCHWRIGHT_SANDBOX"), BwrapProbe())
    world: DemoWorld | None = None
    status = 1
    started = time.monotonic()
    try:
        console.line(console.style("patchwright demo", "bold") + " — the whole loop on this machine: "
                     "a local GitHub, the bot, a deterministic agent.")
        console.status("starting the GitHub emulator and the bot")
        console.start()
        world = await DemoWorld.start(
            root,
            WorldOptions(database_url=options.postgres, schema=schema, sandbox=sandbox, environ=environ),
        )
        db = redact_url(options.postgres) + f" (schema {schema})" if options.postgres else str(root / "patchwright.db")
        console.line(f"  GitHub emulator  {world.emulator.base_url}   repository {REPO} (CI: {world.ci_command})")
        console.line(f"  bot              {world.bot_url}   database {db}")
        console.line(f"  agent            the command preset running bot/sandbox/fake_agent.py (sandbox: {sandbox}"
                     + (", bubblewrap does not work here; the demo's own agent needs none)" if sandbox == "none" else ")"))
        console.line()
        console.line("The story: a maintainer labels an issue; a reviewer asks for a change; a conflicting commit")
        console.line("lands on main; the maintainer merges. Everything else is the bot.")
        console.line()
        narrator = Narrator(world, console)
        story = Story(world, say=narrator.human, stage=console.status, pace=1.5 if tty else 0.0)
        narrator.start()
        try:
            task = await story.play()
        finally:
            await narrator.stop()
        await console.close()
        rows = summary_rows(await world.db.list_attempts(task.id), world.ci_results)
        status = _print_summary(console, world, task, rows, await story_facts(world, story), started)
        if options.keep and status == 0:
            await _keep_running(console, world, root, options, task)
        return status
    except Exception as exc:  # a CLI: say what went wrong in one line, the traceback goes to the log
        expected = isinstance(exc, DemoError | ConfigError | StoreError)
        log.error("the demo failed: %s", exc, exc_info=not expected)
        await console.close()
        print(f"patchwright demo failed: {exc}", file=sys.stderr)
        if not expected:
            _print_log_tail(log_path)
        return 1
    finally:
        await console.close()
        if world is not None:
            await world.stop()
        if schema is not None and options.postgres:
            await _drop_schema(options.postgres, schema, keep=not temporary)
        _log_to(None)
        log_file.close()
        if temporary and status == 0:
            shutil.rmtree(root, ignore_errors=True)
        elif temporary:
            print(f"(the files of this run are kept in {root})", file=sys.stderr)


def _print_summary(
    console: Console, world: DemoWorld, task: Task, rows: Sequence[SummaryRow], facts: Sequence[str], started: float
) -> int:
    console.line()
    console.line(console.style("Summary", "bold"))
    for line in render_table(rows):
        console.line("  " + line)
    console.line()
    for line in facts:
        console.line("  " + line)
    ok = task.status is Status.MERGED and not world.emulator.violations()
    verdict = "the story ended as it should" if ok else f"the story did not end as it should (task {task.status.value})"
    console.line(console.style(f"  Done in {time.monotonic() - started:.1f} s: {verdict}.", "green" if ok else "red"))
    return 0 if ok else 1


async def _keep_running(console: Console, world: DemoWorld, root: Path, options: DemoOptions, task: Task) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    console.line()
    console.line(console.style("Everything keeps running — explore:", "bold"))
    console.line(f"  dashboard  {world.bot_url}/")
    console.line(f"  the task   {world.bot_url}/tasks/{task.id}   (attempt timeline, logs)")
    console.line(f"  webhooks   {world.bot_url}/deliveries   (every delivery, and why most were ignored)")
    console.line(f"  emulator   {world.emulator.base_url}/_emulator/state   (GitHub's side: issues, PRs, checks)")
    if not options.postgres:
        console.line(
            f"  CLI        PATCHWRIGHT_DATABASE_URL=sqlite:///{root / 'patchwright.db'} patchwright tasks list"
        )
    console.line("Press Ctrl-C to stop.")
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    console.line("stopping")


def _log_to(stream: TextIO | None) -> None:
    """The bot's own log goes to the run's log file, not between the story's lines."""
    if stream is None:
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        return
    configure_logging("text", "INFO", stream=stream)


def _print_log_tail(path: Path, lines: int = 20) -> None:
    with contextlib.suppress(OSError):
        tail = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        if tail:
            print(f"last lines of {path}:", *("  " + line for line in tail), sep="\n", file=sys.stderr)


async def _drop_schema(url: str, schema: str, *, keep: bool) -> None:
    if keep:
        return
    import asyncpg

    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


__all__ = [
    "REPO",
    "STORY_SCRIPT",
    "DemoError",
    "DemoOptions",
    "DemoWorld",
    "Narrator",
    "Story",
    "StoryMarks",
    "SummaryRow",
    "WorldOptions",
    "render_table",
    "requests_by_operation",
    "run_demo",
    "run_from_args",
    "summary_rows",
]
