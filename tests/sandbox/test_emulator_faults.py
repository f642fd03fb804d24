"""Seeded fault injection, webhook loss, delivery log and redelivery."""

from __future__ import annotations

import base64
import re
import time
from typing import Any

import gidgethub
import pytest
from gidgethub import apps

from bot.sandbox.emulator import Emulator
from bot.sandbox.faults import FaultConfig, FaultInjector


def test_fault_decisions_are_reproducible_under_a_seed():
    def run(seed: int) -> list[str | None]:
        injector = FaultInjector(seed)
        injector.configure({"error_rate": 0.2})
        return [getattr(injector.request_fault(), "kind", None) for _ in range(500)]

    first, second, other = run(7), run(7), run(8)
    assert first == second and first != other
    rate = first.count("server_error") / len(first)
    assert 0.15 < rate < 0.25
    quiet = FaultInjector(7)
    assert all(quiet.request_fault() is None for _ in range(100))


def test_fault_config_rejects_bad_values():
    config = FaultConfig()
    assert config.updated({"error_rate": 0.5}).error_rate == 0.5
    for bad in ({"error_rate": 2}, {"nope": 1}, {"error_statuses": [404]}, {"latency": -1}):
        with pytest.raises(ValueError):
            config.updated(bad)


async def _statuses(world, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        async with world.session.get(
            world.url(f"/repos/{world.repo}"), headers={"Authorization": f"token {world.token}"}
        ) as response:
            statuses.append(response.status)
            if response.status >= 500:
                assert (await response.json())["message"]
    return statuses


async def test_twenty_percent_5xx_is_reproducible_over_http(world):
    status, described = await world.actor("POST", "/faults", {"error_rate": 0.2, "seed": 42})
    assert status == 200 and described["error_rate"] == 0.2 and described["seed"] == 42
    first = await _statuses(world, 60)
    await world.actor("POST", "/faults", {"error_rate": 0.2, "seed": 42})
    second = await _statuses(world, 60)
    assert first == second
    failures = [s for s in first if s >= 500]
    assert 5 <= len(failures) <= 20 and set(failures) <= {500, 502, 503}
    status, _ = await world.actor("GET", "/state")  # never faulted
    assert status == 200
    with pytest.raises(gidgethub.GitHubBroken):
        for _ in range(60):
            await world.gh().getitem(f"/repos/{world.repo}")
    await world.actor("POST", "/faults", {"reset": True})
    assert set(await _statuses(world, 10)) == {200}


async def test_same_seed_same_faults_in_a_new_emulator(tmp_path, rest_description, key_pair, session):
    async def sequence(root) -> list[int]:
        emulator = Emulator(root, seed=3, description=rest_description, validate_responses=True)
        await emulator.start()
        try:
            await emulator.create_repo("o", "r")
            app = await emulator.create_app("a", public_key=key_pair[1])
            installation = await emulator.create_installation(app["id"], "o", ["o/r"])
            token = (await emulator.create_token(installation["id"])).token
            emulator.faults.configure({"error_rate": 0.2})
            result = []
            for _ in range(40):
                async with session.get(
                    f"{emulator.base_url}/repos/o/r", headers={"Authorization": f"token {token}"}
                ) as response:
                    result.append(response.status)
            assert not [v for v in emulator.violations() if v.kind == "response"]
            return result
        finally:
            await emulator.stop()

    assert await sequence(tmp_path / "one") == await sequence(tmp_path / "two")


async def test_rate_limit_faults_and_latency(world):
    await world.actor("POST", "/faults", {"secondary_rate_limit_rate": 1.0, "retry_after": 7})
    async with world.session.get(
        world.url(f"/repos/{world.repo}"), headers={"Authorization": f"token {world.token}"}
    ) as response:
        assert response.status == 403 and response.headers["retry-after"] == "7"
        assert "secondary rate limit" in (await response.json())["message"]
    assert world.emulator.faults.describe()["injected"]["secondary_rate_limit"] == 1
    await world.actor("POST", "/faults", {"reset": True, "primary_rate_limit_rate": 1.0})
    with pytest.raises(gidgethub.RateLimitExceeded) as exhausted:
        await world.gh().getitem(f"/repos/{world.repo}")
    assert exhausted.value.rate_limit.remaining == 0
    assert exhausted.value.rate_limit.reset_datetime.timestamp() > time.time()
    await world.actor("POST", "/faults", {"reset": True, "latency": 0.2})
    started = time.monotonic()
    await world.gh().getitem(f"/repos/{world.repo}")
    assert time.monotonic() - started >= 0.2
    await world.actor("POST", "/faults", {"reset": True})
    assert world.emulator.faults.describe()["injected"]["primary_rate_limit"] == 0


async def test_real_rate_limit_exhaustion(world):
    world.emulator.rate_limit = 3
    gh = world.gh()
    for _ in range(3):
        await gh.getitem(f"/repos/{world.repo}")
    with pytest.raises(gidgethub.RateLimitExceeded):
        await gh.getitem(f"/repos/{world.repo}")


async def test_webhook_drops_are_logged_and_redelivery_keeps_the_delivery_id(world):
    await world.actor("POST", "/faults", {"webhook_drop_rate": 1.0})
    await world.emulator.open_issue(world.repo, title="lost", user="alice")
    await world.settle()
    assert world.receiver.received == []
    status, deliveries = await world.actor("GET", "/deliveries?event=issues")
    assert status == 200 and [d["status"] for d in deliveries] == ["dropped"]
    await world.actor("POST", "/faults", {"reset": True})
    status, again = await world.actor("POST", f"/deliveries/{deliveries[0]['id']}/redeliver")
    assert status == 202 and again["redelivery"] is True and again["guid"] == deliveries[0]["guid"]
    await world.settle()
    assert [(r.event, r.delivery_id) for r in world.receiver.received] == [("issues", deliveries[0]["guid"])]
    # redelivering a delivered one sends the same body and id again, as GitHub's "Redeliver"
    world.emulator.redeliver(again["id"])
    await world.settle()
    first, second = world.receiver.received
    assert first.delivery_id == second.delivery_id and first.body == second.body
    status, detail = await world.actor("GET", f"/deliveries/{again['id']}")
    assert (
        detail["status"] == "delivered"
        and detail["status_code"] == 202
        and detail["response_body"] == "accepted"
    )
    assert detail["duration"] >= 0 and detail["payload"]["issue"]["title"] == "lost"
    assert detail["request_headers"]["X-GitHub-Event"] == "issues"
    status, _ = await world.actor("POST", "/deliveries/999999/redeliver")
    assert status == 404


async def test_failed_deliveries_are_recorded_not_retried(world):
    world.receiver.status = 500
    await world.emulator.open_issue(world.repo, title="boom", user="alice")
    await world.settle()
    deliveries = [d for d in world.emulator.deliveries() if d.event == "issues"]
    assert [(d.status, d.status_code) for d in deliveries] == [("failed", 500)]
    assert len(world.receiver.received) == 1
    world.emulator.update_app(world.app["id"], webhook_url="http://127.0.0.1:9/unreachable")
    await world.emulator.comment_on(world.repo, 1, "again", user="alice")
    await world.settle()
    last = world.emulator.deliveries()[-1]
    assert last.status == "failed" and last.status_code is None and last.error


async def _get_repo(world, token: str | None = None) -> tuple[int, dict, Any]:
    async with world.session.get(
        world.url(f"/repos/{world.repo}"), headers={"Authorization": f"token {token or world.token}"}
    ) as response:
        return response.status, await response.json(), response.headers.copy()


SECONDARY = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID "
)


@pytest.mark.parametrize("status_code", [403, 429])
async def test_secondary_rate_limits_with_and_without_retry_after(world, status_code):
    await world.actor(
        "POST",
        "/faults",
        {"secondary_rate_limit_rate": 1.0, "secondary_rate_limit_statuses": [status_code], "retry_after": 9},
    )
    status, body, headers = await _get_repo(world)
    assert status == status_code and headers["retry-after"] == "9"
    assert body["message"].startswith(SECONDARY) and body["message"].endswith(".")
    assert body["documentation_url"].endswith("/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits")
    assert not [h for h in headers if h.lower().startswith("x-ratelimit")]  # GitHub sends none here
    await world.actor("POST", "/faults", {"retry_after": None})
    status, body, headers = await _get_repo(world)
    assert status == status_code and "retry-after" not in {h.lower() for h in headers}
    assert body["message"].startswith(SECONDARY)
    described = world.emulator.faults.describe()
    assert described["retry_after"] is None and described["injected"]["secondary_rate_limit"] == 2


async def test_secondary_limits_mix_403_and_429_reproducibly(world):
    def run(seed: int) -> list[int]:
        injector = FaultInjector(seed)
        injector.configure({"secondary_rate_limit_rate": 1.0, "secondary_rate_limit_statuses": [403, 429]})
        return [injector.request_fault().status for _ in range(200)]  # type: ignore[union-attr]

    first = run(5)
    assert first == run(5) and set(first) == {403, 429}


@pytest.mark.parametrize("status_code", [403, 429])
async def test_primary_rate_limit_faults(world, status_code):
    await world.actor(
        "POST", "/faults", {"primary_rate_limit_rate": 1.0, "primary_rate_limit_statuses": [status_code]}
    )
    status, body, headers = await _get_repo(world)
    assert status == status_code
    assert headers["x-ratelimit-remaining"] == "0" and int(headers["x-ratelimit-reset"]) > time.time()
    assert headers["x-ratelimit-limit"] == headers["x-ratelimit-used"] == "5000"
    assert body["message"].startswith(f"API rate limit exceeded for installation ID {world.installation_id}.")
    assert "retry-after" not in {h.lower() for h in headers}
    # gidgethub raises RateLimitExceeded for 403s only; a 429 is a BadRequest with its status
    with pytest.raises(gidgethub.BadRequest) as limited:
        await world.gh().getitem(f"/repos/{world.repo}")
    assert limited.value.status_code == status_code
    assert isinstance(limited.value, gidgethub.RateLimitExceeded) == (status_code == 403)


def test_new_fault_settings_are_validated():
    config = FaultConfig()
    assert config.updated({"retry_after": None}).retry_after is None
    assert config.updated({"secondary_rate_limit_statuses": [429, 403]}).secondary_rate_limit_statuses == (429, 403)
    assert config.updated({"mergeable_null_reads": 3, "stateless_tokens": True}).stateless_tokens is True
    for bad in (
        {"secondary_rate_limit_statuses": [500]},
        {"primary_rate_limit_statuses": []},
        {"retry_after": -1},
        {"mergeable_null_reads": -1},
        {"stateless_tokens": "yes"},
    ):
        with pytest.raises(ValueError):
            config.updated(bad)


async def test_reset_returns_to_the_emulators_own_settings(tmp_path, rest_description):
    emulator = Emulator(tmp_path / "e", description=rest_description, mergeable_null_reads=3, stateless_tokens=True)
    emulator.faults.configure({"error_rate": 0.5, "mergeable_null_reads": 0})
    assert emulator.mergeable_null_reads == 0
    emulator.faults.reset()
    assert emulator.faults.config.error_rate == 0 and emulator.mergeable_null_reads == 3
    assert emulator.stateless_tokens is True
    assert Emulator(tmp_path / "f", description=rest_description).mergeable_null_reads == 1  # like GitHub


STATELESS = re.compile(r"^ghs_[A-Za-z0-9._]{36,}$")


async def test_stateless_tokens_switched_per_emulator_by_fault_or_per_request(world, tmp_path):
    em = world.emulator
    assert len(world.token) == 40  # the classic format by default
    status, described = await world.actor("POST", "/faults", {"stateless_tokens": True})
    assert status == 200 and described["stateless_tokens"] is True
    token = (await em.create_token(world.installation_id)).token
    assert STATELESS.match(token) and len(token) == 520 and token.count(".") == 2
    assert token.startswith(f"ghs_{world.app['id']}_")
    assert (await world.gh(token=token).getitem(f"/repos/{world.repo}"))["name"] == "hello"
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    async with world.session.get(
        world.url(f"/{world.repo}.git/info/refs?service=git-upload-pack"),
        headers={"Authorization": f"Basic {basic}"},
    ) as response:
        assert response.status == 200
    # GitHub's per-request override on the token exchange
    gh = world.gh(token=None)
    jwt = apps.get_jwt(app_id=str(world.app["id"]), private_key=world.private_key)
    url = f"/app/installations/{world.installation_id}/access_tokens"
    classic = await gh.post(url, data=b"", jwt=jwt, extra_headers={"X-GitHub-Stateless-S2S-Token": "disabled"})
    assert len(classic["token"]) == 40
    await world.actor("POST", "/faults", {"reset": True})
    new = await gh.post(url, data=b"", jwt=jwt, extra_headers={"X-GitHub-Stateless-S2S-Token": "enabled"})
    assert STATELESS.match(new["token"]) and len(new["token"]) == 520
    assert len((await gh.post(url, data=b"", jwt=jwt))["token"]) == 40
