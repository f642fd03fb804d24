"""App JWT and installation tokens: claims, reuse, expiry-driven refresh, one refresh at a time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import gidgethub
import jwt
import pytest
from pydantic import SecretStr

from bot.config import load_settings
from bot.github.auth import (
    AppAuthorizer,
    AppCredentials,
    InstallationAuthorizer,
    InstallationToken,
    TokenError,
    TokenProvider,
    parse_token_response,
)
from bot.github.client import GitHubClientFactory, RetryPolicy

APP_ID = 12345


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenServer:
    """Answers access-token requests: ``tok-<installation>-<n>`` expiring ``lifetime`` from now."""

    def __init__(self, clock, public_key, fakes, lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.public_key = public_key
        self.fakes = fakes
        self.lifetime = lifetime
        self.issued = 0
        self.release: asyncio.Event | None = None  # when set, requests wait for it
        self.sent = []

    async def __call__(self, method, url, headers, body):
        self.sent.append((method, url, dict(headers)))
        if self.release is not None:
            await self.release.wait()
        installation = url.split("/app/installations/")[1].split("/")[0]
        scheme, _, token = headers["authorization"].partition(" ")
        assert scheme == "bearer"
        claims = jwt.decode(
            token,
            self.public_key,
            algorithms=["RS256"],
            options={"verify_iat": False, "verify_exp": False},
        )
        assert claims["iat"] <= self.clock() < claims["exp"] <= self.clock() + 600
        self.issued += 1
        return self.fakes.reply(
            201,
            {
                "token": f"tok-{installation}-{self.issued}",
                "expires_at": iso(self.clock() + self.lifetime),
            },
        )


@pytest.fixture
def credentials(rsa_keys) -> AppCredentials:
    return AppCredentials(APP_ID, SecretStr(rsa_keys[0]))


@pytest.fixture
def server(clock, rsa_keys, fakes) -> TokenServer:
    return TokenServer(clock, rsa_keys[1], fakes)


@pytest.fixture
def provider(credentials, server, make_client, clock) -> TokenProvider:
    return TokenProvider(credentials, make_client(transport=server), clock=clock)


# -- JWT -----------------------------------------------------------------------------------------


def test_jwt_claims(provider, rsa_keys, clock):
    token = provider.get_jwt(clock.now)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(
        token, rsa_keys[1], algorithms=["RS256"], options={"verify_iat": False, "verify_exp": False}
    )
    now = int(clock.now)
    assert claims == {"iat": now - 60, "exp": now + 9 * 60, "iss": str(APP_ID)}


def test_jwt_is_reused_until_a_minute_before_expiry(provider, clock):
    first = provider.get_jwt(clock.now)
    assert provider.get_jwt(clock.now + 479) == first
    renewed = provider.get_jwt(clock.now + 480)  # exp - 60 s
    assert renewed != first
    claims = jwt.decode(renewed, options={"verify_signature": False})
    assert claims["iat"] == int(clock.now + 480) - 60


def test_jwt_uses_the_injected_clock_by_default(provider, clock):
    claims = jwt.decode(provider.get_jwt(), options={"verify_signature": False})
    assert claims["exp"] == int(clock.now) + 540


def test_credentials_accept_plain_strings_and_hide_the_key(rsa_keys):
    creds = AppCredentials("  42 ", rsa_keys[0])
    assert creds.app_id == "42"
    assert creds.private_key.get_secret_value() == rsa_keys[0]
    assert "PRIVATE KEY" not in repr(creds)
    with pytest.raises(ValueError):
        AppCredentials("", rsa_keys[0])


# -- installation tokens ---------------------------------------------------------------------------


async def test_token_request_shape(provider, server, fakes):
    assert await provider.installation_token(77) == "tok-77-1"
    [(method, url, headers)] = server.sent
    assert method == "POST"
    assert url == f"{fakes.BASE_URL}/app/installations/77/access_tokens"
    assert headers["x-github-api-version"] == "2022-11-28"


async def test_token_cached_until_five_minutes_before_expiry(provider, server, clock):
    assert await provider.installation_token(1) == "tok-1-1"
    clock.advance(3600 - 301)
    assert await provider.installation_token(1) == "tok-1-1"
    assert server.issued == 1
    clock.advance(1)  # now exactly 5 minutes before expires_at
    assert await provider.installation_token(1) == "tok-1-2"
    assert server.issued == 2


async def test_20_concurrent_callers_cause_one_request(provider, server):
    server.release = asyncio.Event()
    callers = [asyncio.create_task(provider.installation_token(9)) for _ in range(20)]
    await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)
    server.release.set()
    tokens = await asyncio.gather(*callers)
    assert tokens == ["tok-9-1"] * 20
    assert len(server.sent) == 1


async def test_installations_refresh_independently(provider, server):
    server.release = asyncio.Event()
    first = asyncio.create_task(provider.installation_token(1))
    second = asyncio.create_task(provider.installation_token(2))
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(server.sent) == 2  # one installation's refresh does not block another's
    server.release.set()
    one, two = await asyncio.gather(first, second)
    assert one.startswith("tok-1-") and two.startswith("tok-2-")


async def test_drop_forgets_the_token(provider, server):
    await provider.installation_token(5)
    provider.drop(5)
    assert await provider.installation_token(5) == "tok-5-2"
    provider.drop(404)  # unknown installation: nothing happens
    assert server.issued == 2


async def test_invalidate_drops_only_the_rejected_token(provider, server):
    await provider.installation_token(5)
    provider.invalidate(5, "tok-5-999")
    assert await provider.installation_token(5) == "tok-5-1"
    provider.invalidate(5, "tok-5-1")
    assert await provider.installation_token(5) == "tok-5-2"


async def test_failed_refresh_propagates_and_the_next_caller_retries(
    credentials, make_client, clock, fakes
):
    transport = fakes.ScriptedTransport(
        script=[
            fakes.reply(404, {"message": "Not Found"}),
            fakes.reply(201, {"token": "t" * 2000, "expires_at": iso(clock.now + 3600)}),
        ]
    )
    provider = TokenProvider(credentials, make_client(transport=transport), clock=clock)
    with pytest.raises(gidgethub.BadRequest):
        await provider.installation_token(3)
    assert await provider.installation_token(3) == "t" * 2000  # tokens are opaque, any length


def test_parse_token_response():
    token = parse_token_response({"token": "ghs_abc", "expires_at": "2016-07-11T22:14:10Z"})
    assert token.token == "ghs_abc"
    assert token.expires_at == datetime(2016, 7, 11, 22, 14, 10, tzinfo=UTC)
    for bad in [
        [],
        {},
        {"token": "", "expires_at": "2016-07-11T22:14:10Z"},
        {"token": "x"},
        {"token": "x", "expires_at": "yesterday"},
        {"token": "x", "expires_at": "2016-07-11T22:14:10"},
    ]:
        with pytest.raises(TokenError) as info:
            parse_token_response(bad)
        assert "ghs_" not in str(info.value)


def test_reprs_never_show_tokens(credentials, make_client):
    token = InstallationToken("ghs_TOPSECRET", datetime(2030, 1, 1, tzinfo=UTC))
    assert "TOPSECRET" not in repr(token) and "TOPSECRET" not in str(token)
    assert "redacted" in repr(token)
    provider = TokenProvider(credentials, make_client())
    assert "PRIVATE" not in repr(provider)
    assert "PRIVATE" not in repr(InstallationAuthorizer(provider, 1)) + repr(
        AppAuthorizer(provider)
    )


async def test_authorizers_build_headers(provider):
    inst = InstallationAuthorizer(provider, 4)
    assert await inst.authorization() == "token tok-4-1"
    inst.invalidate("token tok-4-1")
    assert await inst.authorization() == "token tok-4-2"
    app = AppAuthorizer(provider)
    header = await app.authorization()
    assert header.startswith("bearer ") and header.count(".") == 2
    app.invalidate(header)
    assert provider._jwt is None  # the next call mints a new JWT
    assert (await app.authorization()).startswith("bearer ")
    assert provider._jwt is not None


# -- the factory -------------------------------------------------------------------------------


async def test_factory_one_client_per_installation_sharing_tokens(
    credentials, server, sleeps, clock, fakes
):
    calls: list[tuple[str, str, dict]] = []

    async def transport(method, url, headers, body):
        if "/access_tokens" in url:
            return await server(method, url, headers, body)
        calls.append((method, url, dict(headers)))
        return fakes.reply(200, {"url": url}, {"etag": '"same"'})

    factory = GitHubClientFactory(
        None,
        credentials,
        base_url=fakes.BASE_URL,
        transport=transport,
        sleep=sleeps,
        clock=clock,
        policy=RetryPolicy(),
    )
    one = factory.for_installation(1)
    assert factory.for_installation(1) is one
    two = factory.for_installation(2)
    assert two is not one and two._cache is not one._cache

    for _ in range(3):  # three deliveries for installation 1
        await one.getitem("/repos/octo/a")
    await two.getitem("/repos/octo/a")
    assert server.issued == 2  # one token per installation, not per delivery
    assert [c[2]["authorization"] for c in calls] == ["token tok-1-1"] * 3 + ["token tok-2-2"]
    # installation 2 did not see installation 1's ETag
    assert "if-none-match" not in calls[3][2]
    assert calls[1][2]["if-none-match"] == '"same"'

    factory.drop(1)
    assert factory.for_installation(1) is not one
    await factory.for_installation(1).getitem("/repos/octo/a")
    assert server.issued == 3

    app = factory.for_app()
    assert factory.for_app() is app
    await app.getitem("/app")
    assert calls[-1][2]["authorization"].startswith("bearer ")
    assert calls[-1][1] == f"{fakes.BASE_URL}/app"


def test_factory_from_settings(rsa_keys):
    settings = load_settings(
        {
            "PATCHWRIGHT_APP_ID": "31",
            "PATCHWRIGHT_PRIVATE_KEY": rsa_keys[0].replace("\n", "\\n"),
            "PATCHWRIGHT_GITHUB_URL": "https://ghe.example/api/v3/",
        },
        env_file=None,
    )
    factory = GitHubClientFactory.from_settings(None, settings, transport=lambda *a: None)
    assert factory.base_url == "https://ghe.example/api/v3"
    assert factory.for_installation(1).base_url == "https://ghe.example/api/v3"
    assert factory.tokens.credentials.app_id == "31"
    assert factory.tokens.credentials.private_key.get_secret_value().strip() == rsa_keys[0].strip()
