"""Shared test fixtures.

Store fixtures: every test using ``store``/``make_store`` runs once per backend (ids
``sqlite`` and ``postgres``). PostgreSQL comes from ``PATCHWRIGHT_TEST_POSTGRES_URL``
(default ``postgresql://postgres@127.0.0.1:5432/test``), a fresh schema per test; when it is
unreachable the postgres cases are skipped, or fail when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import re
import socket
import threading
import types
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from bot.store.base import Store
from tests.model_server import ModelServer
from bot.store.factory import open_store
from bot.logs import redact_url

REPO_ROOT = Path(__file__).resolve().parent.parent


def running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Skip with a reason on a developer machine; under CI=true a missing dependency fails."""
    if running_in_ci():
        pytest.fail(f"{reason} (CI=true: this is a failure, not a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's shared/ folder (GitHub payload examples, REST description)."""
    candidates = (
        [Path(os.environ["PATCHWRIGHT_SHARED_DIR"])] if os.environ.get("PATCHWRIGHT_SHARED_DIR") else []
    )
    candidates.append(REPO_ROOT.parent / "shared")
    for path in candidates:
        if (path / "github" / "webhooks").is_dir():
            return path
    skip_or_fail("shared/ (GitHub webhook examples) not found beside the repository")
    raise AssertionError("unreachable")


def hub_signature(body: bytes, secret: str) -> str:
    """The X-Hub-Signature-256 value GitHub computes: HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def sign() -> Callable[[bytes, str], str]:
    return hub_signature


DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_URL_ENV = "PATCHWRIGHT_TEST_POSTGRES_URL"


class ManualClock:
    """A clock for stores under test: returns ``now`` until a test moves it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


@dataclass(frozen=True)
class StoreTarget:
    """Where a test's stores live: backend name, URL and (PostgreSQL) schema."""

    backend: str
    url: str
    schema: str | None


MakeStore = Callable[..., Awaitable[Store]]


def postgres_test_url() -> str:
    return os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL)


def _unreachable_reason(url: str) -> str | None:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host.startswith("/"):
        return None  # a Unix socket directory: let the connection itself report problems
    try:
        with socket.create_connection((host, parts.port or 5432), timeout=2):
            return None
    except OSError as exc:
        return f"{host}:{parts.port or 5432}: {exc}"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test server's URL; skips (or fails when CI=true) if it cannot be reached."""
    url = postgres_test_url()
    reason = _unreachable_reason(url)
    if reason is not None:
        message = f"PostgreSQL is not reachable at {redact_url(url)} ({reason}); set {POSTGRES_URL_ENV}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=123456))


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("sqlite-writer-process", id="sqlite-writer-process"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def store_target(request: pytest.FixtureRequest, tmp_path) -> StoreTarget:
    if request.param == "sqlite":
        return StoreTarget("sqlite", f"sqlite:///{tmp_path / 'store.db'}", None)
    if request.param == "sqlite-writer-process":  # the ledger as `patchwright serve` runs it
        return StoreTarget("sqlite", f"sqlite:///{tmp_path / 'store.db'}?ledger_writer=process", None)
    url = request.getfixturevalue("postgres_url")
    return StoreTarget("postgres", url, f"test_{uuid.uuid4().hex[:16]}")


@pytest.fixture
async def make_store(store_target: StoreTarget, clock: ManualClock) -> AsyncIterator[MakeStore]:
    """``await make_store(clock=None, migrate=False)``: another Store on the same database."""
    opened: list[Store] = []

    async def make(*, clock_fn: Callable[[], datetime] | None = None, migrate: bool = False) -> Store:
        store = await open_store(store_target.url, clock=clock_fn or clock, schema=store_target.schema)
        opened.append(store)
        if migrate:
            await store.migrate()
        return store

    try:
        yield make
    finally:
        for store in opened:
            await store.close()
        if store_target.schema is not None:
            conn = await asyncpg.connect(store_target.url)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{store_target.schema}" CASCADE')
            finally:
                await conn.close()


@pytest.fixture
async def store(make_store: MakeStore) -> Store:
    return await make_store(migrate=True)


# -- looking for a leaked token ---------------------------------------------------------------


def token_forms(token: str) -> list[bytes]:
    """An installation token as it could leak: itself, and the Basic credential git sends."""
    return [token.encode(), base64.b64encode(f"x-access-token:{token}".encode())]


def files_containing(root: Path, needles: Iterable[bytes]) -> list[Path]:
    """Regular files below ``root`` that contain any of ``needles``."""
    needles = list(needles)
    found = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if any(needle in data for needle in needles):
                found.append(path)
    return found


class CmdlineSampler:
    """Reads every process's ``/proc/<pid>/cmdline`` every few milliseconds, in a thread (so
    an event loop serving git is never blocked), keeping each distinct one in ``seen``."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        self.seen.add(f.read())
                except OSError:
                    continue
            self.samples += 1
            self.stop.wait(0.002)

    def containing(self, needles: Iterable[bytes]) -> list[bytes]:
        needles = list(needles)
        return [cmdline for cmdline in self.seen if any(needle in cmdline for needle in needles)]

    def git_commands(self) -> set[str]:
        """The git subcommands seen (first two arguments), and ``remote-http`` for git's HTTP helper."""
        commands: set[str] = set()
        for cmdline in self.seen:
            args = cmdline.split(b"\0")
            if args[0].endswith(b"git") and len(args) > 1:
                commands.update(arg.decode("utf-8", "replace") for arg in args[1:3])
            elif b"git-remote-http" in args[0]:
                commands.add("remote-http")
        return commands


@contextlib.asynccontextmanager
async def sampling_cmdlines() -> AsyncIterator[CmdlineSampler]:
    """A :class:`CmdlineSampler` running for the block."""
    sampler = CmdlineSampler()
    running = asyncio.ensure_future(asyncio.to_thread(sampler.run))
    try:
        yield sampler
    finally:
        sampler.stop.set()
        await running


@pytest.fixture
def leaks() -> types.SimpleNamespace:
    """The helpers above, for test modules (conftest is not importable under importlib mode)."""
    return types.SimpleNamespace(
        token_forms=token_forms, files_containing=files_containing, sampling_cmdlines=sampling_cmdlines
    )


def _measure_peak_rss() -> contextlib.AbstractContextManager[dict[str, float]]:
    """The peak resident memory of this process (the server's side: worker, store, emulator)
    while the block runs, over its start, in MiB (``result["MiB"]``): VmHWM after resetting it
    through /proc/self/clear_refs where allowed, and VmRSS sampled every few milliseconds.
    Child processes (git, the agent) are not counted."""

    def status(key: str) -> int:
        with open("/proc/self/status") as f:
            match = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
        assert match is not None
        return int(match.group(1))

    @contextlib.contextmanager
    def measure() -> Iterator[dict[str, float]]:
        result: dict[str, float] = {}
        base = status("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            reset = True
        except OSError:
            reset = False
        sampled = [base]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.002):
                sampled.append(status("VmRSS"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield result
        finally:
            done.set()
            sampler.join()
            peak = max(max(sampled), status("VmHWM") if reset else 0)
            result["MiB"] = (peak - base) / 1024
            result["samples"] = len(sampled)

    return measure()


@pytest.fixture
def peak_rss() -> Callable[[], contextlib.AbstractContextManager[dict[str, float]]]:
    """``with peak_rss() as grown: …`` then ``grown["MiB"]``: see :func:`_measure_peak_rss`."""
    return _measure_peak_rss


@pytest.fixture
async def model_server() -> AsyncIterator[ModelServer]:
    """A started :class:`tests.model_server.ModelServer` on 127.0.0.1 speaking every provider
    protocol the agent CLIs use (each protocol module adds its routes)."""
    from tests.model_server import anthropic, chat, responses

    server = ModelServer()
    for module in (anthropic, responses, chat):
        server.add_routes(module.routes(server))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Requirements:
    """``require(condition, reason)``: when a tool a test needs is missing, skip on a developer
    machine and fail under CI=true (CI installs it); ``require.cli(name, install)`` the path of
    an agent CLI; ``require.bwrap()`` a working bubblewrap."""

    def __call__(self, condition: bool, reason: str) -> None:
        if condition:
            return
        if running_in_ci():
            pytest.fail(f"{reason} (CI=true: a missing tool is a failure, not a skip)")
        pytest.skip(reason)

    def cli(self, name: str, install: str) -> str:
        import shutil

        path = shutil.which(name)
        self(path is not None, f"the {name} CLI is not on PATH ({install})")
        assert path is not None
        return path

    def bwrap(self) -> None:
        from bot.agents.sandbox import BwrapProbe

        probe = BwrapProbe()
        self(probe.available(), f"bubblewrap does not work here: {probe.problem}")


@pytest.fixture
def require() -> Requirements:
    return Requirements()
