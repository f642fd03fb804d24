"""Collaborator permission: which roles may steer the bot, and the TTL cache in front of the API."""

from __future__ import annotations

import gidgethub
import pytest

from bot.github.client import RetryPolicy
from bot.github.permissions import PermissionCache, effective_permission, is_permitted

PERMISSION_URL = "https://api.github.test/repos/octo/demo/collaborators/{user}/permission"


def test_is_permitted():
    assert [
        p for p in ("admin", "maintain", "write", "triage", "read", "none", "") if is_permitted(p)
    ] == [
        "admin",
        "maintain",
        "write",
    ]
    assert is_permitted("Write")


def test_effective_permission_prefers_role_name():
    assert effective_permission({"permission": "write", "role_name": "maintain"}) == "maintain"
    assert effective_permission({"permission": "read", "role_name": "triage"}) == "triage"
    assert effective_permission({"permission": "admin", "role_name": "admin"}) == "admin"
    # a custom role: its base (legacy) permission decides
    assert effective_permission({"permission": "write", "role_name": "release-manager"}) == "write"
    assert effective_permission({"permission": "none", "role_name": ""}) == "none"
    assert effective_permission({}) == "none"


class Timer:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def timer() -> Timer:
    return Timer()


def answer(role: str, permission: str) -> dict:
    return {"permission": permission, "role_name": role, "user": {"login": "someone"}}


async def test_permission_is_read_and_cached_for_the_ttl(make_client, transport, timer, fakes):
    transport.script = [
        fakes.reply(200, answer("maintain", "write")),
        fakes.reply(200, answer("read", "read")),
    ]
    cache = PermissionCache(ttl=300, timer=timer)
    gh = make_client()
    assert await cache.permission(gh, "octo/demo", "alice") == "maintain"
    assert transport.sent[0].method == "GET"
    assert transport.sent[0].url == PERMISSION_URL.format(user="alice")
    timer.now = 299
    assert (
        await cache.permission(gh, "Octo/Demo", "ALICE") == "maintain"
    )  # names are case-insensitive
    assert len(transport.sent) == 1
    timer.now = 300
    assert await cache.permission(gh, "octo/demo", "alice") == "read"  # expired: asked again
    assert len(transport.sent) == 2


async def test_404_means_none_and_is_cached(make_client, transport, timer, fakes):
    transport.script = [fakes.reply(404, {"message": "Not Found"})]
    cache = PermissionCache(timer=timer)
    gh = make_client()
    assert await cache.permission(gh, "octo/demo", "stranger") == "none"
    assert not await cache.is_permitted_user(gh, "octo/demo", "stranger")
    assert len(transport.sent) == 1


async def test_other_errors_propagate_and_are_not_cached(make_client, transport, timer, fakes):
    transport.script = [fakes.reply(502), fakes.reply(200, answer("admin", "admin"))]
    cache = PermissionCache(timer=timer)
    gh = make_client(policy=RetryPolicy(max_attempts=1))
    with pytest.raises(gidgethub.GitHubBroken):
        await cache.permission(gh, "octo/demo", "bob")
    assert await cache.is_permitted_user(gh, "octo/demo", "bob")


async def test_forget(make_client, transport, timer, fakes):
    transport.script = [fakes.reply(200, answer("write", "write"))] * 4
    cache = PermissionCache(timer=timer)
    gh = make_client()
    await cache.permission(gh, "octo/demo", "a")
    await cache.permission(gh, "octo/demo", "b")
    cache.forget("octo/demo", "A")
    await cache.permission(gh, "octo/demo", "a")
    await cache.permission(gh, "octo/demo", "b")
    assert len(transport.sent) == 3
    cache.forget("octo/demo")
    await cache.permission(gh, "octo/demo", "b")
    assert len(transport.sent) == 4
