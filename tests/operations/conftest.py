"""Fast tests of the operations layer (:mod:`bot.operations`, :mod:`bot.reconciler`): a real
SQLite store, the real services, and GitHub answered in memory by :class:`RecordingGitHub`.

Test modules reach the helpers through fixtures (``gh``, ``store``, ``services``, ``ctx``,
``make_task``, ``now``, ``config_yaml``): conftest modules are not importable under
``--import-mode=importlib``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import gidgethub.abc
import pytest

from bot.config import Settings, load_settings
from bot.operations.context import Context
from bot.operations.services import Services, build_services
from bot.store.base import Store, TaskEvent
from bot.store.factory import open_store
from bot.tasks import rules
from bot.tasks.model import Status, Task

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
REPO = "octo/widgets"
BOT_LOGIN = "patchwright[bot]"
JSON_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Answer:
    """One scripted response: status, body (JSON-encoded unless ``content_type`` says text)."""

    status: int = 200
    data: Any = None
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[int, dict[str, str], bytes]:
        headers = dict(self.headers)
        if self.data is None:
            return self.status, headers, b""
        headers["content-type"] = self.content_type
        if self.content_type.startswith("application/json"):
            return self.status, headers, json.dumps(self.data).encode()
        return self.status, headers, str(self.data).encode()


@dataclass(frozen=True)
class Request:
    """One request the code under test sent."""

    method: str
    path: str  # without the base URL and the query
    query: dict[str, str]
    body: Any  # the decoded JSON body, None without one


class RecordingGitHub(gidgethub.abc.GitHubAPI):
    """A gidgethub client whose ``_request`` answers from routes and records every request.

    ``on(method, path, *answers)`` scripts a route: answers are JSON values or
    :class:`Answer`; they are given in order and the last one repeats. Unscripted requests
    get what an ordinary repository would answer: no ``.github/patchwright.yml``, admin
    permission for everyone, no check runs or statuses, and issue comments kept in memory
    (created by POST, edited by PATCH, listed by GET) so the status comment is found again.
    Any other GET is a 404; any other write succeeds. ``sleep`` returns at once (recorded).
    """

    def __init__(self) -> None:
        super().__init__("patchwright-operations-tests")
        self.routes: dict[tuple[str, str], list[Answer]] = {}
        self.requests: list[Request] = []
        self.sleeps: list[float] = []
        self.comments: dict[tuple[str, int], list[dict[str, Any]]] = {}  # (repo path, issue) -> comments
        self._ids = itertools.count(9001)

    # -- scripting ----------------------------------------------------------------------

    def on(self, method: str, path: str, *answers: Any) -> None:
        if not answers:
            raise ValueError("on() needs at least one answer")
        self.routes[(method.upper(), path)] = [a if isinstance(a, Answer) else Answer(200, a) for a in answers]

    def config(self, repo: str, text: str, *, ref: str = "main") -> None:
        """Serve ``text`` as the repository's ``.github/patchwright.yml``."""
        del ref  # the ref is a query parameter; one file per repository is enough here
        self.on(
            "GET",
            f"/repos/{repo}/contents/.github/patchwright.yml",
            {"type": "file", "encoding": "base64", "content": base64.b64encode(text.encode()).decode()},
        )

    def add_comment(self, repo: str, issue: int, body: str, *, login: str = BOT_LOGIN, comment_id: int | None = None) -> int:
        """Put a comment on an issue as if it existed before the test; returns its id."""
        cid = next(self._ids) if comment_id is None else comment_id
        self.comments.setdefault((f"repos/{repo}", issue), []).append({"id": cid, "body": body, "user": {"login": login}})
        return cid

    def comments_on(self, repo: str, issue: int) -> list[dict[str, Any]]:
        """The comments the issue has now (those of the test and those the code made)."""
        return list(self.comments.get((f"repos/{repo}", issue), []))

    def comment_bodies(self, repo: str, issue: int) -> list[str]:
        return [c["body"] for c in self.comments_on(repo, issue)]

    # -- what was sent ------------------------------------------------------------------

    def sent(self, method: str | None = None, path: str | None = None) -> list[Request]:
        """The requests sent, optionally only those with this method and/or exact path."""
        return [
            r for r in self.requests
            if (method is None or r.method == method.upper()) and (path is None or r.path == path)
        ]

    def writes(self) -> list[tuple[str, str]]:
        """(method, path) of every request that is not a GET, in order."""
        return [(r.method, r.path) for r in self.requests if r.method != "GET"]

    def clear(self) -> None:
        self.requests.clear()
        self.sleeps.clear()

    # -- gidgethub's seams --------------------------------------------------------------

    async def _request(self, method: str, url: str, headers: Any, body: bytes = b"") -> tuple[int, dict, bytes]:
        parts = urlsplit(url)
        path = parts.path
        decoded = json.loads(body) if body else None
        self.requests.append(Request(method, path, dict(parse_qsl(parts.query)), decoded))
        script = self.routes.get((method, path))
        if script is not None:
            answer = script.pop(0) if len(script) > 1 else script[0]
            return answer.encode()
        return self._default(method, path, decoded).encode()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def _default(self, method: str, path: str, body: Any) -> Answer:
        segments = path.strip("/").split("/")
        repo_path = "/".join(segments[:3])  # repos/owner/name
        if method == "GET":
            if "/contents/" in path:
                return Answer(404, {"message": "Not Found"})
            if path.endswith("/permission"):
                return Answer(200, {"permission": "admin", "role_name": "admin", "user": {"login": segments[-2]}})
            if path.endswith("/check-runs"):
                return Answer(200, {"total_count": 0, "check_runs": []})
            if path.endswith("/status"):
                return Answer(200, {"state": "pending", "statuses": []})
            if len(segments) == 6 and segments[3] == "issues" and segments[5] == "comments":
                return Answer(200, list(self.comments.get((repo_path, int(segments[4])), [])))
            return Answer(404, {"message": "Not Found"})
        if method == "POST" and len(segments) == 6 and segments[3] == "issues" and segments[5] == "comments":
            comment = {"id": next(self._ids), "body": body["body"], "user": {"login": BOT_LOGIN}}
            self.comments.setdefault((repo_path, int(segments[4])), []).append(comment)
            return Answer(201, comment)
        if method == "PATCH" and len(segments) == 6 and segments[3:5] == ["issues", "comments"]:
            for comments in self.comments.values():
                for comment in comments:
                    if comment["id"] == int(segments[5]):
                        comment["body"] = body["body"]
                        return Answer(200, comment)
            return Answer(404, {"message": "Not Found"})
        if method == "DELETE":
            return Answer(204)
        return Answer(201 if method == "POST" else 200, {"id": next(self._ids)})


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def gh() -> RecordingGitHub:
    return RecordingGitHub()


@pytest.fixture
def answer() -> type[Answer]:
    """:class:`Answer`, for a test that scripts a status code or a text body."""
    return Answer


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty database file, made once: each test's store starts from a copy."""
    path = tmp_path_factory.mktemp("operations-template") / "bot.db"

    async def make() -> None:
        template = await open_store(f"sqlite:///{path}", clock=lambda: NOW)
        try:
            await template.migrate()
        finally:
            await template.close()

    asyncio.run(make())
    return path


@pytest.fixture
async def store(tmp_path: Path, migrated_db: Path) -> AsyncIterator[Store]:
    """A migrated SQLite store whose clock is :data:`NOW` (overrides the per-backend one)."""
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{migrated_db}{suffix}").exists():
            shutil.copyfile(f"{migrated_db}{suffix}", tmp_path / f"bot.db{suffix}")
    opened = await open_store(f"sqlite:///{tmp_path / 'bot.db'}?synchronous=off", clock=lambda: NOW)
    assert await opened.migrate() == []  # the copy is up to date
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({"PATCHWRIGHT_DATA_DIR": str(tmp_path / "data")}, env_file=None)


@pytest.fixture
def services(settings: Settings, store: Store, gh: RecordingGitHub) -> Services:
    return build_services(settings, store, github_for=lambda _id: gh, app_slug="patchwright", clock=lambda: NOW)


@pytest.fixture
def ctx(services: Services) -> Context:
    return Context(services, installation_id=1, delivery_id="d1")


@pytest.fixture
def wakes(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """One entry per ``store.notify_pending()`` call (the call still goes through)."""
    calls: list[str] = []
    original = store.notify_pending

    async def notify_pending() -> None:
        calls.append("notify_pending")
        await original()

    monkeypatch.setattr(store, "notify_pending", notify_pending)
    return calls


MakeTask = Callable[..., Awaitable[Task]]


@pytest.fixture
def make_task(store: Store) -> MakeTask:
    """``await make_task(status, **fields)``: a stored task of issue #7 (or ``issue=``) in
    ``status`` with ``fields`` set. Its audit trail holds only the ``created`` event."""
    numbers = itertools.count(1)

    async def make(status: Status = Status.PENDING, *, issue: int = 7, repo: str = REPO, **fields: Any) -> Task:
        task = rules.new_task(
            id=f"task_{next(numbers):02d}op", repo=repo, installation_id=1, issue_number=issue,
            title="Fix the parser", spec="It crashes on empty input.", max_attempts=5, max_cost_usd=10.0,
            agent="claude", model="", base_branch="main", now=NOW,
        )
        stored, created = await store.create_task(
            task, event=TaskEvent(task_id=task.id, kind="created", reason="seeded", actor="test", to_status=task.status)
        )
        assert created
        changes = {**fields, "status": status}
        moved = await store.transition(stored.id, from_statuses=[Status.PENDING], changes=changes)
        assert moved is not None
        return moved

    return make


@pytest.fixture
def in_review(make_task: MakeTask) -> MakeTask:
    """``await in_review(**fields)``: a task in review with PR #12, branch and head ``a…``."""

    async def make(**fields: Any) -> Task:
        values = {
            "pr_number": 12, "pr_url": f"https://github.com/{REPO}/pull/12", "branch": "patchwright/issue-7",
            "head_sha": "a" * 40, "attempt": 1, **fields,
        }
        return await make_task(Status.REVIEW, **values)

    return make


@pytest.fixture
def config_yaml(gh: RecordingGitHub) -> Callable[[str], None]:
    """``config_yaml(text)``: serve ``text`` as the repository's config file."""
    return lambda text: gh.config(REPO, text)
