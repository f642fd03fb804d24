"""The admin login form is rate limited per client address (issue #11): after 5 failures in a
minute it answers 429 with Retry-After, even for the right token, until the minute is over."""

from __future__ import annotations

import pytest

from bot.web.auth import COOKIE_NAME, LoginLimiter
from bot.web.routes import WebOptions

ADMIN = "adm-login-limit-token-0123456789"


class Timer:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class IdleStore:
    """Enough of a store for pages that never read it (the login form), and the live feed."""

    async def list_tasks(self, **kwargs):
        return []


# -- the limiter (pure) -------------------------------------------------------------------------


def test_five_failures_in_a_minute_block_that_address_only() -> None:
    timer = Timer()
    limiter = LoginLimiter(max_failures=5, window_s=60.0, timer=timer)
    for _ in range(4):
        limiter.record_failure("10.0.0.1")
        assert limiter.retry_after("10.0.0.1") is None
        timer.now += 1
    limiter.record_failure("10.0.0.1")  # 5th failure, at t=1004: blocked until the first one is a minute old
    assert limiter.retry_after("10.0.0.1") == 56
    assert limiter.retry_after("10.0.0.2") is None  # another address is not affected
    timer.now += 55.5
    assert limiter.retry_after("10.0.0.1") == 1  # rounded up: never "try again in 0 s"
    timer.now += 0.5
    assert limiter.retry_after("10.0.0.1") is None  # the oldest failure left the window


def test_old_failures_do_not_count() -> None:
    timer = Timer()
    limiter = LoginLimiter(max_failures=3, window_s=60.0, timer=timer)
    for _ in range(10):  # one failure every 30 s never reaches 3 in a minute
        limiter.record_failure("a")
        assert limiter.retry_after("a") is None
        timer.now += 30


def test_success_forgets_the_failures() -> None:
    limiter = LoginLimiter(max_failures=2, window_s=60.0, timer=Timer())
    limiter.record_failure("a")
    limiter.forget("a")
    limiter.record_failure("a")
    assert limiter.retry_after("a") is None


def test_memory_is_bounded_by_addresses_and_failures() -> None:
    timer = Timer()
    limiter = LoginLimiter(max_failures=5, window_s=60.0, max_clients=100, timer=timer)
    for i in range(10_000):
        limiter.record_failure(f"10.0.{i // 256}.{i % 256}")
    assert limiter.tracked <= 100
    for _ in range(1000):
        limiter.record_failure("x")
    assert limiter.failures("x") <= 5
    timer.now += 61
    assert limiter.retry_after("x") is None and limiter.tracked == 0  # everything expired


def test_the_limiter_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        LoginLimiter(max_failures=0)
    with pytest.raises(ValueError):
        LoginLimiter(window_s=0)


# -- over HTTP ---------------------------------------------------------------------------------


async def test_the_login_form_answers_429_after_five_failures(make_client) -> None:
    timer = Timer()
    client = await make_client(
        IdleStore(), admin_token=ADMIN, private_read_api=True,
        options=WebOptions(login_limiter=LoginLimiter(timer=timer)),
    )
    for i in range(5):
        if i % 2:
            resp = await client.post("/login", data={"token": f"wrong-{i}"}, allow_redirects=False)
        else:
            resp = await client.get(f"/login?token=wrong-{i}", allow_redirects=False)
        assert resp.status == 401, i
    for attempt in ({"token": "wrong"}, {"token": ADMIN}):  # blocked: the right token too
        resp = await client.post("/login", data=attempt, allow_redirects=False)
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "60"
        text = await resp.text()
        assert "Too many failed logins" in text and "60" in text
        assert COOKIE_NAME not in resp.cookies
    assert (await client.get(f"/login?token={ADMIN}", allow_redirects=False)).status == 429
    assert (await client.get("/login")).status == 200  # the form itself still shows

    timer.now += 60
    resp = await client.post("/login", data={"token": ADMIN, "next": "/"}, allow_redirects=False)
    assert resp.status == 303 and resp.cookies[COOKIE_NAME].value
    # a success forgets earlier failures: the next mistake is the first again
    assert (await client.post("/login", data={"token": "wrong"}, allow_redirects=False)).status == 401


async def test_the_limit_is_on_by_default(make_client) -> None:
    client = await make_client(IdleStore(), admin_token=ADMIN)
    statuses = [
        (await client.post("/login", data={"token": "wrong"}, allow_redirects=False)).status for _ in range(6)
    ]
    assert statuses == [401] * 5 + [429]
