"""Git smart HTTP for the emulator's repositories, served by ``git http-backend``.

Each request runs ``git http-backend`` (CGI) as an asyncio subprocess; request and response
bodies are streamed. Access is decided by an ``authorize`` callback (a 401 with
``WWW-Authenticate: Basic realm="GitHub"`` otherwise, as GitHub answers), and every push that
changed refs is reported to ``on_push`` before the push's response ends — so when
``git push`` returns, the emulator has seen the push.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from aiohttp import web

from .gitrepos import GitRepos, RefUpdate, check_repo_name, diff_ref_updates, git_env

log = logging.getLogger(__name__)

UPLOAD_PACK = "git-upload-pack"
RECEIVE_PACK = "git-receive-pack"
SERVICES = frozenset({UPLOAD_PACK, RECEIVE_PACK})

Authorize = Callable[[web.Request, str, str, str], Awaitable[bool]]
OnPush = Callable[[str, str, list[RefUpdate], web.Request], Awaitable[None]]

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 64 * 1024
_STDERR_KEEP = 16 * 1024
_AUTH_SCHEMES_TOKEN = ("bearer", "token")
GIT_TOKEN_USER = "x-access-token"  # the user name GitHub expects with an installation token


def parse_basic(request: web.Request) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic`` header; ``None`` for any other scheme,
    a malformed value or a missing header. This is all GitHub's git endpoints accept."""
    return parse_basic_value(request.headers.get("Authorization", ""))


def parse_basic_value(value: str) -> tuple[str, str] | None:
    """:func:`parse_basic` for a raw header value."""
    scheme, _, credentials = value.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "basic" or not credentials:
        return None
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password


def parse_basic_or_bearer(request: web.Request) -> str | None:
    """The token of an ``Authorization`` header, leniently: ``Basic base64(user:token)`` (any
    user name; a token given as the user name with an empty password also counts),
    ``Bearer <token>`` or ``token <token>``. ``None`` when absent or malformed. (The REST API
    takes all of these; the emulator's git endpoints take only :func:`parse_basic` with
    :data:`GIT_TOKEN_USER`, as GitHub does.)"""
    return parse_authorization(request.headers.get("Authorization", ""))


def parse_authorization(value: str) -> str | None:
    """:func:`parse_basic_or_bearer` for a raw header value."""
    scheme, _, credentials = value.strip().partition(" ")
    credentials = credentials.strip()
    if not credentials:
        return None
    if scheme.lower() in _AUTH_SCHEMES_TOKEN:
        return credentials
    basic = parse_basic_value(value)
    if basic is None:
        return None
    user, password = basic
    return password or user or None


def add_git_routes(
    app: web.Application,
    repos: GitRepos,
    *,
    authorize: Authorize,
    on_push: OnPush,
    prefix: str = "",
) -> None:
    """Serve ``{prefix}/{owner}/{name}.git/…`` (also without ``.git``) over git smart HTTP."""
    server = GitHttpServer(repos, authorize=authorize, on_push=on_push)
    base = prefix.rstrip("/") + "/{owner}/{name}"
    app.router.add_get(base + "/info/refs", server.info_refs)
    app.router.add_post(base + "/" + UPLOAD_PACK, server.upload_pack)
    app.router.add_post(base + "/" + RECEIVE_PACK, server.receive_pack)


class GitHttpServer:
    """The request handlers behind :func:`add_git_routes`."""

    def __init__(
        self, repos: GitRepos, *, authorize: Authorize, on_push: OnPush, git: str = "git"
    ) -> None:
        self.repos = repos
        self.authorize = authorize
        self.on_push = on_push
        self._git = git
        self._push_locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def info_refs(self, request: web.Request) -> web.StreamResponse:
        service = request.query.get("service", "")
        if service not in SERVICES:
            # GitHub does not serve the dumb protocol either.
            return web.Response(status=403, text="Please upgrade your git client.\n")
        return await self._handle(request, service, "info/refs")

    async def upload_pack(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, UPLOAD_PACK, UPLOAD_PACK)

    async def receive_pack(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, RECEIVE_PACK, RECEIVE_PACK)

    async def _handle(self, request: web.Request, service: str, suffix: str) -> web.StreamResponse:
        owner = request.match_info["owner"]
        name = request.match_info["name"].removesuffix(".git")
        try:
            check_repo_name(owner)
            check_repo_name(name)
        except ValueError:
            return web.Response(status=404, text="Repository not found.\n")
        if not await self.authorize(request, owner, name, service):
            return web.Response(
                status=401,
                text=(
                    "Invalid username or token."
                    " Password authentication is not supported for Git operations.\n"
                ),
                headers={"WWW-Authenticate": 'Basic realm="GitHub"'},
            )
        if not self.repos.exists(owner, name):
            return web.Response(status=404, text="Repository not found.\n")
        if service == RECEIVE_PACK and request.method == "POST":
            lock = self._push_locks.setdefault((owner, name), asyncio.Lock())
            async with lock:
                before = await self.repos.snapshot_refs(owner, name)
                response = await self._run_backend(request, owner, name, suffix)
                after = await self.repos.snapshot_refs(owner, name)
                updates = diff_ref_updates(before, after)
                if updates:
                    try:
                        await self.on_push(owner, name, updates, request)
                    except Exception:  # the refs did move: git must still see a successful push
                        log.exception("on_push failed for %s/%s", owner, name)
        else:
            response = await self._run_backend(request, owner, name, suffix)
        await response.write_eof()
        return response

    async def _run_backend(
        self, request: web.Request, owner: str, name: str, suffix: str
    ) -> web.StreamResponse:
        """Run ``git http-backend`` for this request and stream its answer (without the final
        EOF, which the caller writes)."""
        first = b""
        if request.method == "POST":
            first = await request.content.readany()
        env: dict[str, str] = {
            "GIT_PROJECT_ROOT": str(self.repos.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{owner}/{name}.git/{suffix}",
            "REQUEST_METHOD": request.method,
            "QUERY_STRING": request.query_string,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "REMOTE_USER": "x-access-token",
            "REMOTE_ADDR": request.remote or "127.0.0.1",
        }
        protocol = request.headers.get("Git-Protocol")
        if protocol:
            env["HTTP_GIT_PROTOCOL"] = protocol
        # aiohttp inflates gzip request bodies itself; pass the encoding on only when the
        # body still is gzip (git's pkt-lines never start with the gzip magic).
        encoding = request.headers.get("Content-Encoding", "").lower()
        if encoding in ("gzip", "x-gzip") and first.startswith(_GZIP_MAGIC):
            env["HTTP_CONTENT_ENCODING"] = encoding
        proc = await asyncio.create_subprocess_exec(
            self._git,
            "-c",
            "http.receivepack=true",
            "-c",
            "http.uploadpack=true",
            "http-backend",
            stdin=asyncio.subprocess.PIPE
            if request.method == "POST"
            else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=git_env(env),
        )
        feeder = asyncio.ensure_future(_feed(proc, request, first))
        stderr_reader = asyncio.ensure_future(_read_tail(proc.stderr))
        try:
            assert proc.stdout is not None
            status, headers = await _read_cgi_headers(proc.stdout)
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
            while chunk := await proc.stdout.read(_CHUNK):
                await response.write(chunk)
            await feeder
            stderr = await stderr_reader
            code = await proc.wait()
            if code != 0:
                log.warning(
                    "git http-backend %s for %s/%s exited %s: %s",
                    suffix,
                    owner,
                    name,
                    code,
                    stderr.decode("utf-8", "replace").strip()[-2000:],
                )
            return response
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            for task in (feeder, stderr_reader):
                task.cancel()
            await asyncio.gather(feeder, stderr_reader, return_exceptions=True)


async def _feed(proc: asyncio.subprocess.Process, request: web.Request, first: bytes) -> None:
    """Copy the request body into the backend's stdin, then close it."""
    if proc.stdin is None:
        return
    try:
        chunk = first
        while chunk:
            proc.stdin.write(chunk)
            await proc.stdin.drain()
            chunk = await request.content.readany()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the backend stopped reading (it answered an error); its output says why
    finally:
        proc.stdin.close()


async def _read_tail(stream: asyncio.StreamReader | None) -> bytes:
    """Read a stream to its end, keeping the last few KiB."""
    if stream is None:
        return b""
    tail = b""
    while chunk := await stream.read(_CHUNK):
        tail = (tail + chunk)[-_STDERR_KEEP:]
    return tail


async def _read_cgi_headers(stdout: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Parse CGI response headers: ``Status: 404 Not Found`` and ordinary headers. Output
    that ends before the blank line after the headers is answered as 502."""
    status = 200
    headers: dict[str, str] = {}
    while True:
        line = await stdout.readline()
        if not line:
            return 502, {"Content-Type": "text/plain"}
        if line in (b"\r\n", b"\n"):
            break
        key, _, value = line.decode("latin-1").rstrip("\r\n").partition(":")
        key, value = key.strip(), value.strip()
        if key.lower() == "status":
            code = value.split(" ", 1)[0]
            status = int(code) if code.isdigit() else 500
        elif key:
            headers[key] = value
    return status, headers
