"""Fixtures for the worker's git tests: a real git remote served over smart HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from bot.sandbox.git_http import add_git_routes, parse_basic_or_bearer
from bot.sandbox.gitrepos import GitRepos, RefUpdate
from bot.worker.git import Checkout, GitAuth, Workspaces

OWNER, NAME = "octo", "demo"
REPO = f"{OWNER}/{NAME}"
BOT = ("patchwright[bot]", "41898282+patchwright[bot]@users.noreply.github.com")
HUMAN = ("Mona Lisa", "mona@example.com")
INITIAL_FILES = {
    "README.md": "# demo\n\nA demo project.\n",
    "src/app.py": "def greet():\n    return 'hi'\n",
    "docs/guide.md": "line one\nline two\nline three\n",
}


@dataclass
class Remote:
    """The git server of a test: repositories, its URL, the accepted token, what it saw."""

    repos: GitRepos
    base_url: str
    token: str
    auth_headers: list[str] = field(default_factory=list)
    pushes: list[list[RefUpdate]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.base_url}/{OWNER}/{NAME}.git"

    @property
    def auth(self) -> GitAuth:
        return GitAuth(self.token)

    async def sha(self, branch: str) -> str | None:
        return await self.repos.ref_sha(OWNER, NAME, branch)

    async def human_commit(
        self, branch: str, files: Mapping[str, str | None], message: str = "Human edit"
    ) -> str:
        return await self.repos.commit_files(
            OWNER, NAME, branch=branch, files=files, message=message, author=HUMAN
        )

    async def read(self, ref: str, path: str) -> str | None:
        data = await self.repos.read_file(OWNER, NAME, ref, path)
        return None if data is None else data.decode()


@pytest.fixture
def token() -> str:
    """A fresh installation-token-like secret per test."""
    return "ghs_" + secrets.token_hex(18)


@pytest.fixture
async def remote(tmp_path: Path, aiohttp_server, token: str) -> Remote:
    repos = GitRepos(tmp_path / "remote")
    await repos.create(OWNER, NAME, files=INITIAL_FILES)
    holder: dict[str, Remote] = {}

    async def authorize(request: web.Request, owner: str, name: str, service: str) -> bool:
        holder["remote"].auth_headers.append(request.headers.get("Authorization", "").split(" ")[0])
        return parse_basic_or_bearer(request) == holder["remote"].token

    async def on_push(
        owner: str, name: str, updates: list[RefUpdate], request: web.Request
    ) -> None:
        holder["remote"].pushes.append(updates)

    app = web.Application()
    add_git_routes(app, repos, authorize=authorize, on_push=on_push)
    server = await aiohttp_server(app)
    holder["remote"] = Remote(repos, str(server.make_url("")).rstrip("/"), token)
    return holder["remote"]


@dataclass
class Harness:
    """What the git tests work with (conftest is not importable under importlib mode)."""

    remote: Remote
    workspaces: Workspaces
    data_dir: Path
    repo: str = REPO
    bot: tuple[str, str] = BOT
    initial_files: Mapping[str, str] = field(default_factory=lambda: dict(INITIAL_FILES))

    async def checkout(
        self,
        *,
        task_id: str = "task_01",
        branch: str = "patchwright/1-fix-it",
        fresh: bool = True,
        auth: GitAuth | None = None,
    ) -> Checkout:
        return await self.workspaces.checkout(
            repo=REPO,
            remote_url=self.remote.url,
            auth=auth or self.remote.auth,
            task_id=task_id,
            branch=branch,
            base_branch="main",
            fresh=fresh,
        )

    @staticmethod
    def write(root: Path, files: Mapping[str, str | None]) -> None:
        """Write (or, for ``None``, delete) files in a worktree."""
        for rel, content in files.items():
            target = root / rel
            if content is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)

    @staticmethod
    async def git_out(cwd: Path, *args: str) -> str:
        """Run a local git command in a worktree (no network) and return its stdout."""
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "HOME": "/dev/null",
                "GIT_CONFIG_NOSYSTEM": "1",
            },
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()

    @staticmethod
    async def bot_git(co: Checkout, *args: str) -> str:
        """A local git command on the bot's own view of a checkout (its git directory in the
        cache, the checkout as work tree), as :class:`Checkout` runs them."""
        result = await co.workspaces.runner.run(
            args, git_dir=co.admin_dir, work_tree=co.path, cwd=co.path
        )
        return result.text

    @staticmethod
    def loose_object(kind: str, data: bytes) -> tuple[str, bytes]:
        """(object id, loose object file content) of a git object of ``kind`` holding ``data``."""
        raw = f"{kind} {len(data)}\0".encode() + data
        return hashlib.sha1(raw).hexdigest(), zlib.compress(raw)

    @staticmethod
    async def agent_git(
        cwd: Path, *args: str, check: bool = True, input: bytes | None = None, home: Path | None = None
    ) -> tuple[int, str, str]:
        """Run git in a checkout as an agent would: the environment an agent gets (PATH, a
        HOME of its own, no ``GIT_*`` variable), so git finds the checkout's ``.git`` itself.
        Returns (exit code, stdout, stderr)."""
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL if input is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home or cwd.parent), "LANG": "C.UTF-8"},
        )
        out, err = await proc.communicate(input)
        if check:
            assert proc.returncode == 0, (args, err.decode())
        return proc.returncode or 0, out.decode(), err.decode()


@pytest.fixture
def harness(remote: Remote, tmp_path: Path) -> Harness:
    data_dir = tmp_path / "data"
    return Harness(remote=remote, workspaces=Workspaces(data_dir, identity=BOT), data_dir=data_dir)
