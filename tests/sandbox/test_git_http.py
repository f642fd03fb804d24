"""Git smart HTTP against the real git client: clone, push, fetch with a header-only token."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bot.sandbox.git_http import add_git_routes, parse_authorization, parse_basic_or_bearer
from bot.sandbox.gitrepos import GitRepos, RefUpdate, git_env

TOKEN = "ghs_emulatorTokenForTests0123456789"
READ_ONLY_TOKEN = "ghs_readOnlyToken987654321"
AUTHOR = ("Tester", "tester@example.com")


class GitServer:
    """An aiohttp test server with the git routes, recording pushes and authorisations."""

    def __init__(self, repos: GitRepos, base_url: str) -> None:
        self.repos = repos
        self.base_url = base_url
        self.pushes: list[tuple[str, str, list[RefUpdate]]] = []
        self.auth_calls: list[tuple[str, str, str, str]] = []  # owner, name, service, method
        self.content_encodings: list[str] = []

    def url(self, owner: str = "octo", name: str = "demo", suffix: str = ".git") -> str:
        return f"{self.base_url}/{owner}/{name}{suffix}"


@pytest.fixture
async def server(tmp_path: Path, aiohttp_server, request: pytest.FixtureRequest) -> GitServer:
    """``request.param`` (default True): whether aiohttp inflates gzip request bodies itself."""
    repos = GitRepos(tmp_path / "repos")
    await repos.create(
        "octo", "demo", files={"README.md": "# demo\n", "src/app.py": "print('hi')\n"}
    )
    holder: dict[str, GitServer] = {}

    async def authorize(request: web.Request, owner: str, name: str, service: str) -> bool:
        srv = holder["server"]
        srv.auth_calls.append((owner, name, service, request.method))
        if request.method == "POST":
            srv.content_encodings.append(request.headers.get("Content-Encoding", ""))
        token = parse_basic_or_bearer(request)
        if token == TOKEN:
            return True
        return token == READ_ONLY_TOKEN and service == "git-upload-pack"

    async def on_push(
        owner: str, name: str, updates: list[RefUpdate], request: web.Request
    ) -> None:
        holder["server"].pushes.append((owner, name, updates))

    app = web.Application()
    add_git_routes(app, repos, authorize=authorize, on_push=on_push)
    test_server = await aiohttp_server(app, auto_decompress=getattr(request, "param", True))
    holder["server"] = GitServer(repos, str(test_server.make_url("")).rstrip("/"))
    return holder["server"]


def client_env(home: Path, token: str | None) -> dict[str, str]:
    """A git client environment whose only credential is an http.extraHeader from env vars."""
    env = git_env(
        {
            "HOME": str(home),
            "GIT_AUTHOR_NAME": AUTHOR[0],
            "GIT_AUTHOR_EMAIL": AUTHOR[1],
            "GIT_COMMITTER_NAME": AUTHOR[0],
            "GIT_COMMITTER_EMAIL": AUTHOR[1],
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
        }
    )
    if token is not None:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            }
        )
    return env


async def git(cwd: Path, *args: str, token: str | None = TOKEN) -> tuple[int, str]:
    """Run the git client (never blocking the loop that serves it); return (code, output)."""
    home = cwd.parent / "home"
    home.mkdir(exist_ok=True)
    for arg in args:
        assert TOKEN not in arg and READ_ONLY_TOKEN not in arg
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=client_env(home, token),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode("utf-8", "replace")


async def clone(
    server: GitServer, dest: Path, *, url: str | None = None, token: str | None = TOKEN
) -> tuple[int, str]:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return await git(dest.parent, "clone", url or server.url(), dest.name, token=token)


async def head(path: Path) -> str:
    code, out = await git(path, "rev-parse", "HEAD")
    assert code == 0, out
    return out.strip()


def assert_no_token_on_disk(path: Path) -> None:
    for file in (path / ".git").rglob("*"):
        if file.is_file() and file.stat().st_size < 1_000_000:
            data = file.read_bytes()
            assert TOKEN.encode() not in data, file
    config = (path / ".git" / "config").read_text()
    assert "extraheader" not in config.lower()
    assert "Authorization" not in config


async def test_clone_commit_push_fetch(server: GitServer, tmp_path: Path) -> None:
    work = tmp_path / "w" / "demo"
    code, out = await clone(server, work)
    assert code == 0, out
    assert (work / "README.md").read_text() == "# demo\n"
    assert (work / "src" / "app.py").exists()
    assert_no_token_on_disk(work)
    assert server.pushes == []

    old = await server.repos.ref_sha("octo", "demo", "main")
    (work / "src" / "app.py").write_text("print('hello')\n")
    assert (await git(work, "commit", "-qam", "say hello"))[0] == 0
    new = await head(work)
    code, out = await git(work, "push", "origin", "main")
    assert code == 0, out
    assert server.pushes == [("octo", "demo", [RefUpdate("refs/heads/main", old, new)])]
    assert await server.repos.ref_sha("octo", "demo", "main") == new
    info = await server.repos.commit_info("octo", "demo", new)
    assert info.message == "say hello" and info.author_name == AUTHOR[0]

    # A commit made on the server side arrives with fetch.
    server_sha = await server.repos.commit_files(
        "octo",
        "demo",
        branch="main",
        files={"NEW.md": "new\n"},
        message="server side",
        author=AUTHOR,
    )
    code, out = await git(work, "fetch", "origin")
    assert code == 0, out
    code, out = await git(work, "rev-parse", "origin/main")
    assert out.strip() == server_sha
    assert_no_token_on_disk(work)

    services = {(call[2], call[3]) for call in server.auth_calls}
    assert ("git-upload-pack", "GET") in services and ("git-upload-pack", "POST") in services
    assert ("git-receive-pack", "GET") in services and ("git-receive-pack", "POST") in services
    assert all(call[:2] == ("octo", "demo") for call in server.auth_calls)


async def test_push_creates_and_deletes_a_branch(server: GitServer, tmp_path: Path) -> None:
    work = tmp_path / "w" / "demo"
    assert (await clone(server, work))[0] == 0
    assert (await git(work, "checkout", "-qb", "feature/x"))[0] == 0
    (work / "feature.txt").write_text("feature\n")
    assert (await git(work, "add", "feature.txt"))[0] == 0
    assert (await git(work, "commit", "-qm", "feature"))[0] == 0
    sha = await head(work)

    code, out = await git(work, "push", "origin", "feature/x")
    assert code == 0, out
    assert server.pushes[-1] == ("octo", "demo", [RefUpdate("refs/heads/feature/x", None, sha)])
    assert (await server.repos.branches("octo", "demo"))["feature/x"] == sha

    code, out = await git(work, "push", "origin", "--delete", "feature/x")
    assert code == 0, out
    assert server.pushes[-1] == ("octo", "demo", [RefUpdate("refs/heads/feature/x", sha, None)])
    assert "feature/x" not in await server.repos.branches("octo", "demo")
    assert len(server.pushes) == 2


async def test_push_that_changes_nothing_reports_nothing(server: GitServer, tmp_path: Path) -> None:
    work = tmp_path / "w" / "demo"
    assert (await clone(server, work))[0] == 0
    code, out = await git(work, "push", "origin", "main")
    assert code == 0 and "Everything up-to-date" in out
    assert server.pushes == []


async def test_rejected_non_fast_forward_reports_nothing(server: GitServer, tmp_path: Path) -> None:
    work = tmp_path / "w" / "demo"
    assert (await clone(server, work))[0] == 0
    await server.repos.commit_files(
        "octo",
        "demo",
        branch="main",
        files={"other.txt": "x\n"},
        message="meanwhile",
        author=AUTHOR,
    )
    (work / "mine.txt").write_text("mine\n")
    assert (await git(work, "add", "mine.txt"))[0] == 0
    assert (await git(work, "commit", "-qm", "mine"))[0] == 0
    code, out = await git(work, "push", "origin", "main")
    assert code != 0 and "rejected" in out
    assert server.pushes == []


async def test_without_or_with_wrong_token_clone_and_push_fail(
    server: GitServer, tmp_path: Path
) -> None:
    for index, token in enumerate([None, "ghs_wrong", ""]):
        dest = tmp_path / f"denied{index}" / "demo"
        code, out = await clone(server, dest, token=token)
        assert code != 0
        assert "Authentication failed" in out or "could not read Username" in out, out
        assert not (dest / "README.md").exists()

    work = tmp_path / "w" / "demo"
    assert (await clone(server, work))[0] == 0
    before = await server.repos.snapshot_refs("octo", "demo")
    (work / "x.txt").write_text("x\n")
    assert (await git(work, "add", "x.txt"))[0] == 0
    assert (await git(work, "commit", "-qm", "x"))[0] == 0
    for token in [None, "ghs_wrong", READ_ONLY_TOKEN]:
        code, out = await git(work, "push", "origin", "main", token=token)
        assert code != 0, out
        assert "Authentication failed" in out or "could not read Username" in out, out
    assert server.pushes == []
    assert await server.repos.snapshot_refs("octo", "demo") == before


async def test_read_only_token_can_clone_but_not_push(server: GitServer, tmp_path: Path) -> None:
    work = tmp_path / "w" / "demo"
    code, out = await clone(server, work, token=READ_ONLY_TOKEN)
    assert code == 0, out
    assert (work / "README.md").exists()


async def test_url_without_dot_git_and_unknown_repository(
    server: GitServer, tmp_path: Path
) -> None:
    work = tmp_path / "w" / "demo"
    code, out = await clone(server, work, url=server.url(suffix=""))
    assert code == 0, out
    assert (work / "README.md").exists()

    code, out = await clone(server, tmp_path / "w" / "missing", url=server.url(name="missing"))
    assert code != 0 and "not found" in out.lower(), out


@pytest.mark.parametrize(
    "server", [True, False], ids=["aiohttp-inflates", "backend-inflates"], indirect=True
)
async def test_many_refs_gzip_request_and_large_push(server: GitServer, tmp_path: Path) -> None:
    repos = server.repos
    main = await repos.ref_sha("octo", "demo", "main")
    info = await repos.commit_info("octo", "demo", main)
    for i in range(60):  # distinct commits, so the clone's want list passes git's gzip threshold
        sha = await repos.commit_tree("octo", "demo", info.tree, [main], f"branch {i}", AUTHOR)
        await repos.set_ref("octo", "demo", f"b{i:02d}", sha)
    work = tmp_path / "w" / "demo"
    work.parent.mkdir(parents=True, exist_ok=True)
    code, out = await git(work.parent, "clone", "--mirror", server.url(), "demo.git")
    assert code == 0, out
    assert "gzip" in server.content_encodings

    # A push bigger than http.postBuffer (1 MiB) goes out chunked and streams through.
    code, out = await clone(server, work)
    assert code == 0, out
    (work / "blob.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    assert (await git(work, "add", "blob.bin"))[0] == 0
    assert (await git(work, "commit", "-qm", "big"))[0] == 0
    code, out = await git(work, "push", "origin", "main")
    assert code == 0, out
    assert server.pushes[-1][2][0].new_sha == await head(work)
    data = await repos.read_file("octo", "demo", "main", "blob.bin")
    assert data == (work / "blob.bin").read_bytes()


def test_parse_authorization_variants() -> None:
    basic = base64.b64encode(b"x-access-token:tok123").decode()
    assert parse_authorization(f"Basic {basic}") == "tok123"
    assert (
        parse_authorization("basic " + base64.b64encode(b"anyone:tok:with:colons").decode())
        == "tok:with:colons"
    )
    assert parse_authorization("Basic " + base64.b64encode(b"tokAsUser:").decode()) == "tokAsUser"
    assert parse_authorization("Bearer abc.def") == "abc.def"
    assert parse_authorization("token ghs_xyz") == "ghs_xyz"
    assert parse_authorization("") is None
    assert parse_authorization("Basic") is None
    assert parse_authorization("Basic !!notbase64") is None
    assert parse_authorization("Basic " + base64.b64encode(b"nocolon").decode()) is None
    assert parse_authorization("Basic " + base64.b64encode(b":").decode()) is None
    assert parse_authorization("Digest abc") is None


def test_parse_basic_or_bearer_reads_the_request_header() -> None:
    request = make_mocked_request("GET", "/", headers={"Authorization": "Bearer t0k"})
    assert parse_basic_or_bearer(request) == "t0k"
    assert parse_basic_or_bearer(make_mocked_request("GET", "/")) is None


def test_parse_basic_takes_basic_only() -> None:
    from bot.sandbox.git_http import parse_basic, parse_basic_value

    basic = base64.b64encode(b"x-access-token:tok:123").decode()
    assert parse_basic_value(f"Basic {basic}") == ("x-access-token", "tok:123")
    assert parse_basic_value("basic " + base64.b64encode(b"user:").decode()) == ("user", "")
    for value in ("Bearer abc", "token ghs_x", "", "Basic", "Basic !!", "Basic " + base64.b64encode(b"x").decode()):
        assert parse_basic_value(value) is None, value
    assert parse_basic(make_mocked_request("GET", "/", headers={"Authorization": f"Basic {basic}"})) == (
        "x-access-token",
        "tok:123",
    )
    assert parse_basic(make_mocked_request("GET", "/", headers={"Authorization": "Bearer t0k"})) is None
