"""GitHub App authentication: RS256 JWTs, installation tokens, their expiry and reach."""

from __future__ import annotations

import json
import time

import gidgethub
import pytest
from gidgethub import apps
from jwt.api_jws import PyJWS

from bot.sandbox.auth import generate_key_pair


async def _get(world, path: str, authorization: str | None) -> tuple[int, dict]:
    headers = {"Authorization": authorization} if authorization else {}
    async with world.session.get(world.url(path), headers=headers) as response:
        return response.status, await response.json()


def _jwt(world, *, iss=None, iat=None, exp=None, key=None) -> str:
    now = int(time.time())
    claims = {
        "iss": world.app["id"] if iss is None else iss,
        "iat": now - 60 if iat is None else iat,
        "exp": now + 540 if exp is None else exp,
    }
    # signed as raw JWS: PyJWT's encode() refuses a numeric iss, which other clients do send
    return PyJWS().encode(json.dumps(claims).encode(), key or world.private_key, algorithm="RS256")


async def test_jwt_is_checked_like_github(world, clock):
    assert (await _get(world, "/app", f"Bearer {_jwt(world)}"))[0] == 200  # iss as an int
    assert (await _get(world, "/app", f"Bearer {_jwt(world, iss=str(world.app['id']))}"))[0] == 200
    now = int(time.time())
    too_long = _jwt(world, iat=now - 60, exp=now + 660)
    status, body = await _get(world, "/app", f"Bearer {too_long}")
    assert status == 401 and "too far in the future" in body["message"]
    other_key, _ = generate_key_pair()
    assert (await _get(world, "/app", f"Bearer {_jwt(world, key=other_key)}"))[0] == 401
    assert (await _get(world, "/app", f"Bearer {_jwt(world, iss=999999)}"))[0] == 401
    assert (await _get(world, "/app", f"Bearer {_jwt(world, iat=now + 600, exp=now + 900)}"))[0] == 401
    assert (await _get(world, "/app", "Bearer not.a.jwt"))[0] == 401
    token = apps.get_jwt(app_id=str(world.app["id"]), private_key=world.private_key)
    assert (await _get(world, "/app", f"Bearer {token}"))[0] == 200
    clock.advance(11 * 60)  # gidgethub's JWTs live 10 minutes
    status, body = await _get(world, "/app", f"Bearer {token}")
    assert status == 401 and "exp" in body["message"]


async def test_credentials_must_fit_the_endpoint(world):
    jwt = _jwt(world)
    assert (await _get(world, "/app", None)) == (
        401,
        {
            "message": "Requires authentication",
            "documentation_url": "https://docs.github.com/rest",
            "status": "401",
        },
    )
    assert (await _get(world, "/app", f"token {world.token}"))[0] == 401
    assert (await _get(world, f"/repos/{world.repo}", f"Bearer {jwt}"))[0] == 403
    assert (await _get(world, f"/repos/{world.repo}", None))[0] == 401
    status, body = await _get(world, f"/repos/{world.repo}", "token ghs_" + "0" * 36)
    assert (status, body["message"]) == (401, "Bad credentials")
    assert (await _get(world, f"/repos/{world.repo}", f"Bearer {world.token}"))[0] == 200
    assert (await _get(world, f"/repos/{world.repo}", f"token {world.token}"))[0] == 200


async def test_installation_tokens_expire_after_an_hour(world, clock):
    gh = world.gh()
    await gh.getitem(f"/repos/{world.repo}")
    clock.advance(3599)
    await gh.getitem(f"/repos/{world.repo}")
    clock.advance(2)
    with pytest.raises(gidgethub.BadRequest) as expired:
        await gh.getitem(f"/repos/{world.repo}")
    assert expired.value.status_code == 401 and str(expired.value) == "Bad credentials"
    async with world.session.get(world.url("/_emulator/tokens")) as response:
        tokens = await response.json()
    assert [(t["token"], t["expired"]) for t in tokens] == [(world.token, True)]


async def test_token_ttl_is_configurable_and_tokens_can_be_narrowed(world):
    world.emulator.token_ttl = 5
    await world.emulator.create_repo("octo-org", "other", owner_type="Organization")
    await world.emulator.change_installation_repositories(world.installation_id, add=["octo-org/other"])
    gh = world.gh(token=None)
    jwt = apps.get_jwt(app_id=str(world.app["id"]), private_key=world.private_key)
    narrow = await gh.post(
        f"/app/installations/{world.installation_id}/access_tokens", data={"repositories": ["other"]}, jwt=jwt
    )
    assert [r["full_name"] for r in narrow["repositories"]] == ["octo-org/other"]
    record = next(t for t in world.emulator.issued_tokens() if t.token == narrow["token"])
    assert record.expires_at - record.created_at == 5
    narrow_gh = world.gh(token=narrow["token"])
    assert (await narrow_gh.getitem("/repos/octo-org/other"))["name"] == "other"
    with pytest.raises(gidgethub.BadRequest) as hidden:
        await narrow_gh.getitem(f"/repos/{world.repo}")
    assert hidden.value.status_code == 404
    with pytest.raises(gidgethub.BadRequest) as refused:
        await gh.post(
            f"/app/installations/{world.installation_id}/access_tokens",
            data={"repositories": ["nope"]},
            jwt=jwt,
        )
    assert refused.value.status_code == 422
    with pytest.raises(gidgethub.BadRequest) as unknown:
        await gh.post("/app/installations/1/access_tokens", data=b"", jwt=jwt)
    assert unknown.value.status_code == 404


async def test_manifest_flow_creates_an_app(world):
    manifest = {
        "name": "patchwright-local",
        "url": "https://example.invalid/patchwright",
        "hook_attributes": {"url": world.receiver.url},
        "redirect_url": "http://127.0.0.1:1/setup/done",
        "default_permissions": {"issues": "write", "checks": "write"},
        "default_events": ["issues", "issue_comment"],
    }
    async with world.session.post(
        world.url("/settings/apps/new?state=xyz"),
        data={"manifest": json.dumps(manifest)},
        allow_redirects=False,
    ) as response:
        assert response.status == 302
        location = response.headers["Location"]
    assert location.startswith("http://127.0.0.1:1/setup/done?code=") and location.endswith("&state=xyz")
    code = location.split("code=")[1].split("&")[0]
    gh = world.gh(token=None)
    created = await gh.post(f"/app-manifests/{code}/conversions", data=b"")
    assert created["name"] == "patchwright-local" and created["pem"].startswith("-----BEGIN")
    assert created["webhook_secret"] and created["client_secret"]
    assert created["permissions"] == {"issues": "write", "checks": "write"}
    jwt = apps.get_jwt(app_id=str(created["id"]), private_key=created["pem"])
    assert (await gh.getitem("/app", jwt=jwt))["slug"] == created["slug"]
    with pytest.raises(gidgethub.BadRequest) as used:
        await gh.post(f"/app-manifests/{code}/conversions", data=b"")
    assert used.value.status_code == 404
