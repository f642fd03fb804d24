"""Fakes for the GitHub access layer: a scripted transport, a recording sleep, a settable clock."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.github.client import GitHubClient, RetryPolicy

BASE_URL = "https://api.github.test"
START = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@dataclass
class SentRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


Reply = tuple[int, Mapping[str, str], bytes] | BaseException
Handler = Callable[[SentRequest], Reply]


def reply(status: int = 200, data: Any = None, headers: Mapping[str, str] | None = None) -> tuple:
    """A scripted response; ``data`` is JSON-encoded (None → empty body)."""
    h = {"content-type": "application/json; charset=utf-8"} if data is not None else {}
    h.update(headers or {})
    return status, h, b"" if data is None else json.dumps(data).encode()


@dataclass
class ScriptedTransport:
    """Answers requests from a script (list of replies, or a handler) and records them."""

    script: list[Reply] = field(default_factory=list)
    handler: Handler | None = None
    sent: list[SentRequest] = field(default_factory=list)

    async def __call__(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> Any:
        request = SentRequest(method, url, {k.lower(): v for k, v in headers.items()}, body)
        self.sent.append(request)
        if self.handler is not None:
            answer = self.handler(request)
        else:
            assert self.script, f"unexpected request {method} {url}"
            answer = self.script.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


class RecordingSleep:
    """An async ``sleep`` that records the delays and advances a clock instead of waiting."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.delays: list[float] = []
        self._clock = clock

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self._clock is not None:
            self._clock.advance(seconds)


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def rsa_keys() -> tuple[str, Any]:
    """``(private PEM, public key)`` of a throwaway App key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, key.public_key()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleeps(clock: FakeClock) -> RecordingSleep:
    return RecordingSleep(clock)


@pytest.fixture
def transport() -> ScriptedTransport:
    return ScriptedTransport()


@pytest.fixture
def make_client(
    transport: ScriptedTransport, sleeps: RecordingSleep, clock: FakeClock
) -> Callable[..., GitHubClient]:
    """Build a :class:`GitHubClient` over the scripted transport (seeded jitter)."""

    def make(**kwargs: Any) -> GitHubClient:
        kwargs.setdefault("base_url", BASE_URL)
        kwargs.setdefault("transport", transport)
        kwargs.setdefault("sleep", sleeps)
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("rand", random.Random(7))
        kwargs.setdefault("policy", RetryPolicy())
        return GitHubClient(None, "patchwright-tests", **kwargs)

    return make


class StaticAuthorizer:
    """Hands out ``token t1``, ``token t2``… ; a new one after each invalidation."""

    def __init__(self) -> None:
        self.generation = 1
        self.invalidated: list[str] = []

    async def authorization(self) -> str:
        return f"token t{self.generation}"

    def invalidate(self, authorization: str) -> None:
        self.invalidated.append(authorization)
        self.generation += 1


@pytest.fixture
def authorizer() -> StaticAuthorizer:
    return StaticAuthorizer()


@pytest.fixture
def fakes() -> Any:
    """The helpers above, for test modules (conftest is not importable under importlib mode)."""
    import types

    return types.SimpleNamespace(
        BASE_URL=BASE_URL,
        START=START,
        reply=reply,
        SentRequest=SentRequest,
        ScriptedTransport=ScriptedTransport,
        RecordingSleep=RecordingSleep,
        FakeClock=FakeClock,
        StaticAuthorizer=StaticAuthorizer,
    )
