"""Fixtures for the emulator's tests.

Every emulator made by the ``emulator`` fixture validates each of its REST answers against the
description's response schema; a mismatch fails the test at teardown (acceptance criterion 4).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from gidgethub import sansio
from gidgethub.aiohttp import GitHubAPI

from bot.sandbox.auth import generate_key_pair
from bot.sandbox.emulator import Emulator
from bot.sandbox.openapi import RestDescription

WEBHOOK_SECRET = "emulator-test-secret"
REPO = "octo-org/hello"
FILES = {
    "README.md": "# hello\n",
    "src/app.py": "def answer():\n    return 41\n",
    "tests/test_app.py": "from src.app import answer\n",
}


@pytest.fixture(scope="session")
def rest_description() -> RestDescription:
    """Loaded once: compiled validators are cached on it across tests."""
    return RestDescription.load()


@pytest.fixture(scope="session")
def key_pair() -> tuple[str, str]:
    """(private PEM, public PEM), generated once to keep the suite fast."""
    return generate_key_pair()


class Clock:
    """Wall-clock time plus an offset the test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "emulator_options(**kwargs): keyword arguments for the `emulator` fixture's Emulator "
        "(e.g. mergeable_null_reads=0, check_actions_require_completed=False)",
    )


@pytest.fixture
async def emulator(
    tmp_path: Path, rest_description: RestDescription, clock: Clock, request: pytest.FixtureRequest
) -> AsyncIterator[Emulator]:
    options: dict[str, Any] = {}
    marker = request.node.get_closest_marker("emulator_options")
    if marker is not None:
        options.update(marker.kwargs)
    em = Emulator(
        tmp_path / "emulator", description=rest_description, validate_responses=True, clock=clock, **options
    )
    await em.start()
    try:
        yield em
    finally:
        await em.stop()
    bad = [v.as_dict() for v in em.violations() if v.kind == "response"]
    assert not bad, f"responses that do not match the REST description: {json.dumps(bad, indent=1)[:4000]}"


@dataclass
class Received:
    event: str
    delivery_id: str
    headers: dict[str, str]
    body: bytes
    data: dict[str, Any]

    @property
    def action(self) -> str | None:
        return self.data.get("action")


@dataclass
class WebhookReceiver:
    """A bot stand-in: verifies each delivery's signature with gidgethub and keeps it."""

    secret: str
    status: int = 202
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/webhook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        event = sansio.Event.from_http(request.headers, body, secret=self.secret)
        self.received.append(
            Received(event.event, event.delivery_id, dict(request.headers), body, event.data)
        )
        return web.Response(status=self.status, text="accepted")

    def events(self) -> list[tuple[str, str | None]]:
        return [(r.event, r.action) for r in self.received]

    def of(self, event: str, action: str | None = None) -> list[Received]:
        return [r for r in self.received if r.event == event and (action is None or r.action == action)]

    def clear(self) -> None:
        self.received.clear()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    hook = WebhookReceiver(WEBHOOK_SECRET)
    await hook.start()
    try:
        yield hook
    finally:
        await hook.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@dataclass
class World:
    """An org repository with an installed App, a write collaborator and a token."""

    emulator: Emulator
    receiver: WebhookReceiver
    session: aiohttp.ClientSession
    app: dict[str, Any]
    private_key: str
    installation_id: int
    token: str
    repo: str = REPO

    @property
    def base_url(self) -> str:
        return self.emulator.base_url

    def gh(self, *, token: str | None = None, cache: Any = None) -> GitHubAPI:
        return GitHubAPI(
            self.session,
            "patchwright-tests",
            oauth_token=token or self.token,
            base_url=self.emulator.base_url,
            cache=cache,
        )

    def url(self, path: str) -> str:
        return f"{self.emulator.base_url}{path}"

    async def actor(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Call ``/_emulator{path}``; answer (status, JSON or None)."""
        async with self.session.request(method, self.url(f"/_emulator{path}"), json=body) as response:
            text = await response.text()
            return response.status, (json.loads(text) if text else None)

    async def settle(self) -> None:
        await self.emulator.idle()

    async def read_pull(self, number: int, *, gh: GitHubAPI | None = None, tries: int = 5) -> dict[str, Any]:
        """``GET`` the pull request until GitHub (the emulator) has computed ``mergeable``, as
        a client must: the first reads after a change answer ``null``."""
        gh = gh or self.gh()
        for _ in range(tries):
            pull = await gh.getitem(f"/repos/{self.repo}/pulls/{number}")
            if pull["mergeable"] is not None:
                return pull
        raise AssertionError(f"mergeable still null after {tries} reads")

    async def forget_hooks(self) -> None:
        """Wait for pending deliveries, then forget what the receiver got so far."""
        await self.emulator.idle()
        self.receiver.clear()


@pytest.fixture
async def world(
    emulator: Emulator,
    receiver: WebhookReceiver,
    session: aiohttp.ClientSession,
    key_pair: tuple[str, str],
) -> World:
    private_pem, public_pem = key_pair
    await emulator.create_repo("octo-org", "hello", owner_type="Organization", files=FILES)
    app = await emulator.create_app(
        "patchwright", webhook_url=receiver.url, webhook_secret=WEBHOOK_SECRET, public_key=public_pem
    )
    installation = await emulator.create_installation(app["id"], "octo-org", [REPO])
    emulator.create_user("alice", repo=REPO, permission="write")
    emulator.create_user("mallory", repo=REPO, permission="read")
    token = (await emulator.create_token(installation["id"])).token
    await emulator.idle()
    receiver.clear()
    return World(emulator, receiver, session, app, private_pem, installation["id"], token)


async def _wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    """``await wait_until(predicate, timeout=10)``."""
    return _wait_until
