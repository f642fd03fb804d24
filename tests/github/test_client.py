"""GitHubClient: headers, retries, backoff, rate limits, ETags, 401 refresh, credential scope."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import types

import aiohttp
import cachetools
import gidgethub
import pytest

from bot.github.client import (
    API_VERSION,
    GitHubClient,
    RateLimited,
    RetryPolicy,
    backoff_delay,
    is_api_url,
    is_refusal,
    loggable_url,
    may_resend,
    parse_retry_after,
    rate_limit_wait,
    scrub_queries,
)

REPO_URL = "/repos/octo/demo"


def connector_error() -> aiohttp.ClientConnectorError:
    key = types.SimpleNamespace(host="api.github.test", port=443, ssl=True)
    return aiohttp.ClientConnectorError(key, OSError(111, "Connection refused"))


# -- pure decisions ----------------------------------------------------------------------------


def test_backoff_delay_is_bounded_exponential_with_jitter():
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    rand = random.Random(1)
    for retry, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (9, 8.0)]:
        for _ in range(50):
            delay = backoff_delay(retry, policy, rand)
            assert cap / 2 <= delay <= cap


def test_backoff_delay_is_reproducible_with_a_seed():
    policy = RetryPolicy()
    first = [backoff_delay(n, policy, random.Random(3)) for n in (1, 2, 3)]
    again = [backoff_delay(n, policy, random.Random(3)) for n in (1, 2, 3)]
    assert first == again


def test_parse_retry_after_seconds_and_http_date():
    now = 1_700_000_000.0
    assert parse_retry_after("30", now) == 30.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:14:20 GMT", now) == pytest.approx(60.0)
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now) == 0.0  # in the past
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_rate_limit_wait_classifies_responses():
    policy = RetryPolicy(secondary_default_wait=60.0)
    now = 1_000.0
    assert rate_limit_wait(403, {"retry-after": "7"}, now, policy) == ("secondary", 7.0)
    assert rate_limit_wait(429, {"retry-after": "7"}, now, policy) == ("secondary", 7.0)
    primary = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1100"}
    assert rate_limit_wait(403, primary, now, policy) == ("primary", 101.0)
    assert rate_limit_wait(429, primary, now, policy) == ("primary", 101.0)
    # retry-after wins over the reset time, as GitHub documents
    assert rate_limit_wait(403, {**primary, "retry-after": "5"}, now, policy) == ("secondary", 5.0)
    assert rate_limit_wait(429, {}, now, policy) == ("secondary", 60.0)
    # a 403 with quota left is a permission error, not a limit
    assert (
        rate_limit_wait(
            403, {"x-ratelimit-remaining": "10", "x-ratelimit-reset": "1100"}, now, policy
        )
        is None
    )
    assert rate_limit_wait(403, {}, now, policy) is None
    assert rate_limit_wait(503, {"retry-after": "5"}, now, policy) is None


def test_may_resend_only_idempotent_methods_or_unsent_requests():
    timeout = TimeoutError()
    for method in ("GET", "HEAD", "PUT", "PATCH", "DELETE", "get"):
        assert may_resend(method, timeout)
    assert not may_resend("POST", timeout)
    assert not may_resend("POST", aiohttp.ServerDisconnectedError())
    assert may_resend("POST", connector_error())
    assert may_resend("POST", aiohttp.ConnectionTimeoutError())


def test_scrub_queries():
    text = "Cannot fetch https://blob.test/x?sig=abc&se=1 (later 'https://b/y?z=1')"
    assert scrub_queries(text) == "Cannot fetch https://blob.test/x?… (later 'https://b/y?…')"


def test_is_api_url_and_loggable_url():
    assert is_api_url("https://ghe.test/api/v3/repos/a/b", "https://ghe.test/api/v3/")
    assert is_api_url("https://ghe.test/api/v3", "https://ghe.test/api/v3")
    assert not is_api_url("https://ghe.test/api/v3x/repos", "https://ghe.test/api/v3")
    assert not is_api_url("https://blob.test/logs", "https://ghe.test/api/v3")
    assert loggable_url("https://blob.test/x?sig=secret") == "https://blob.test/x"


# -- headers and credentials -------------------------------------------------------------------


async def test_adds_api_version_and_installation_authorization(
    make_client, transport, authorizer, fakes
):
    transport.script = [fakes.reply(200, {"full_name": "octo/demo"})]
    client = make_client(authorizer=authorizer)
    assert await client.getitem(REPO_URL) == {"full_name": "octo/demo"}
    [sent] = transport.sent
    assert sent.method == "GET"
    assert sent.url == f"{fakes.BASE_URL}/repos/octo/demo"
    assert sent.headers["x-github-api-version"] == API_VERSION == "2022-11-28"
    assert sent.headers["authorization"] == "token t1"
    assert sent.headers["user-agent"] == "patchwright-tests"
    assert sent.headers["accept"] == "application/vnd.github.v3+json"


async def test_explicit_jwt_is_kept(make_client, transport, authorizer, fakes):
    transport.script = [fakes.reply(200, {})]
    client = make_client(authorizer=authorizer)
    await client.getitem("/app", jwt="the.jwt.value")
    assert transport.sent[0].headers["authorization"] == "bearer the.jwt.value"


async def test_credentials_never_leave_the_api_host(make_client, transport, fakes):
    transport.script = [fakes.reply(200, {"ok": True})]
    client = make_client(authorizer=fakes.StaticAuthorizer())
    await client.getitem("https://elsewhere.test/thing", oauth_token="should-not-leak")
    [sent] = transport.sent
    assert "authorization" not in sent.headers
    assert "x-github-api-version" not in sent.headers


async def test_401_refreshes_the_token_once(make_client, transport, authorizer, fakes):
    transport.script = [
        fakes.reply(401, {"message": "Bad credentials"}),
        fakes.reply(200, {"id": 1}),
    ]
    client = make_client(authorizer=authorizer)
    assert await client.getitem(REPO_URL) == {"id": 1}
    assert [s.headers["authorization"] for s in transport.sent] == ["token t1", "token t2"]
    assert authorizer.invalidated == ["token t1"]


async def test_401_twice_is_raised(make_client, transport, authorizer, fakes):
    transport.script = [fakes.reply(401, {"message": "Bad credentials"})] * 2
    client = make_client(authorizer=authorizer)
    with pytest.raises(gidgethub.BadRequest) as info:
        await client.getitem(REPO_URL)
    assert info.value.status_code == 401
    assert len(transport.sent) == 2


async def test_401_to_a_caller_supplied_credential_is_not_retried(
    make_client, transport, authorizer, fakes
):
    transport.script = [fakes.reply(401, {"message": "Bad credentials"})]
    client = make_client(authorizer=authorizer)
    with pytest.raises(gidgethub.BadRequest):
        await client.getitem("/app", jwt="expired.jwt")
    assert len(transport.sent) == 1 and authorizer.invalidated == []


# -- retries -------------------------------------------------------------------------------------


async def test_retries_502_and_503_with_the_backoff_sequence(make_client, transport, sleeps, fakes):
    transport.script = [fakes.reply(502), fakes.reply(503), fakes.reply(200, {"id": 7})]
    policy = RetryPolicy(base_delay=1.0, max_delay=16.0)
    client = make_client(policy=policy, rand=random.Random(42))
    assert await client.getitem(REPO_URL) == {"id": 7}
    assert len(transport.sent) == 3
    expected_rand = random.Random(42)
    assert sleeps.delays == [
        backoff_delay(1, policy, expected_rand),
        backoff_delay(2, policy, expected_rand),
    ]
    assert 0.5 <= sleeps.delays[0] <= 1.0 and 1.0 <= sleeps.delays[1] <= 2.0


async def test_gives_up_after_max_attempts_with_the_last_error(
    make_client, transport, sleeps, fakes
):
    transport.script = [
        fakes.reply(502),
        fakes.reply(503),
        fakes.reply(502),
        fakes.reply(500, {"message": "boom"}),
    ]
    client = make_client(policy=RetryPolicy(max_attempts=4))
    with pytest.raises(gidgethub.GitHubBroken) as info:
        await client.getitem(REPO_URL)
    assert info.value.status_code == 500
    assert str(info.value) == "boom"
    assert len(transport.sent) == 4
    assert len(sleeps.delays) == 3


async def test_gives_up_when_the_total_delay_budget_is_spent(make_client, transport, sleeps, fakes):
    transport.script = [fakes.reply(503)] * 10
    policy = RetryPolicy(max_attempts=10, base_delay=4.0, max_delay=4.0, max_total_delay=10.0)
    client = make_client(policy=policy)
    with pytest.raises(gidgethub.GitHubBroken) as info:
        await client.getitem(REPO_URL)
    assert info.value.status_code == 503
    assert sum(sleeps.delays) <= 10.0
    assert len(transport.sent) == len(sleeps.delays) + 1 < 10


async def test_retry_after_on_a_5xx_sets_the_delay(make_client, transport, sleeps, fakes):
    transport.script = [fakes.reply(503, headers={"retry-after": "3"}), fakes.reply(200, {})]
    await make_client().getitem(REPO_URL)
    assert sleeps.delays == [3.0]


async def test_post_is_retried_on_5xx(make_client, transport, sleeps, fakes):
    transport.script = [fakes.reply(502), fakes.reply(201, {"id": 5})]
    client = make_client()
    assert await client.post(f"{REPO_URL}/issues/1/comments", data={"body": "hi"}) == {"id": 5}
    assert [s.json for s in transport.sent] == [{"body": "hi"}, {"body": "hi"}]


async def test_4xx_is_not_retried(make_client, transport, sleeps, fakes):
    transport.script = [fakes.reply(404, {"message": "Not Found"})]
    with pytest.raises(gidgethub.BadRequest):
        await make_client().getitem(REPO_URL)
    assert len(transport.sent) == 1 and sleeps.delays == []


@pytest.mark.parametrize(
    "error",
    [
        aiohttp.ClientConnectionError("reset"),
        aiohttp.ServerDisconnectedError(),
        TimeoutError(),
    ],
    ids=["connection", "disconnected", "timeout"],
)
async def test_network_errors_are_retried_for_get(make_client, transport, sleeps, fakes, error):
    transport.script = [error, fakes.reply(200, {"ok": 1})]
    assert await make_client().getitem(REPO_URL) == {"ok": 1}
    assert len(transport.sent) == 2 and len(sleeps.delays) == 1


async def test_network_errors_give_up_with_the_last_error(make_client, transport, fakes):
    transport.script = [
        aiohttp.ClientConnectionError("first"),
        aiohttp.ClientConnectionError("last"),
    ]
    client = make_client(policy=RetryPolicy(max_attempts=2))
    with pytest.raises(aiohttp.ClientConnectionError, match="last"):
        await client.getitem(REPO_URL)


async def test_post_is_not_resent_after_a_timeout(make_client, transport, sleeps):
    transport.script = [TimeoutError()]
    with pytest.raises(asyncio.TimeoutError):
        await make_client().post(f"{REPO_URL}/issues/1/comments", data={"body": "once"})
    assert len(transport.sent) == 1 and sleeps.delays == []


async def test_post_is_resent_when_the_connection_never_opened(make_client, transport, fakes):
    transport.script = [connector_error(), fakes.reply(201, {"id": 1})]
    assert await make_client().post(f"{REPO_URL}/issues/1/comments", data={"body": "x"}) == {
        "id": 1
    }
    assert len(transport.sent) == 2


# -- rate limits -----------------------------------------------------------------------------------


async def test_secondary_rate_limit_waits_retry_after(make_client, transport, sleeps, fakes):
    limited = fakes.reply(
        403, {"message": "You have exceeded a secondary rate limit"}, {"retry-after": "30"}
    )
    transport.script = [limited, fakes.reply(201, {"id": 1})]
    client = make_client()
    assert await client.post(f"{REPO_URL}/issues/1/comments", data={"body": "x"}) == {"id": 1}
    assert sleeps.delays == [30.0]
    assert len(transport.sent) == 2


async def test_primary_rate_limit_waits_until_reset(make_client, transport, sleeps, clock, fakes):
    reset = int(clock.now) + 50
    headers = {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": str(reset),
    }
    transport.script = [
        fakes.reply(403, {"message": "API rate limit exceeded"}, headers),
        fakes.reply(200, {"ok": 1}),
    ]
    assert await make_client().getitem(REPO_URL) == {"ok": 1}
    assert sleeps.delays == [51.0]  # until the reset, plus one second


async def test_primary_rate_limit_429_waits_until_reset(
    make_client, transport, sleeps, clock, fakes
):
    headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(clock.now) + 9)}
    transport.script = [fakes.reply(429, {"message": "slow down"}, headers), fakes.reply(200, {})]
    await make_client().getitem(REPO_URL)
    assert sleeps.delays == [10.0]


async def test_primary_rate_limit_beyond_the_max_wait_raises_a_clear_error(
    make_client, transport, sleeps, clock, fakes
):
    headers = {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": str(int(clock.now) + 3600),
    }
    transport.script = [fakes.reply(403, {"message": "API rate limit exceeded"}, headers)]
    client = make_client(policy=RetryPolicy(max_rate_limit_wait=300))
    with pytest.raises(RateLimited) as info:
        await client.getitem(REPO_URL)
    error = info.value
    assert isinstance(error, gidgethub.RateLimitExceeded)
    assert error.status_code == 403
    assert error.retry_after == 3601.0
    assert error.rate_limit is not None and error.rate_limit.remaining == 0
    assert "primary rate limit on GET https://api.github.test/repos/octo/demo" in str(error)
    assert "3601s" in str(error) and "300s" in str(error)
    assert sleeps.delays == []


async def test_rate_limit_waits_are_bounded(make_client, transport, sleeps, fakes):
    transport.script = [fakes.reply(429, {"message": "slow"}, {"retry-after": "1"})] * 5
    client = make_client(policy=RetryPolicy(max_rate_limit_retries=3))
    with pytest.raises(RateLimited, match="still limited after 3 waits") as info:
        await client.getitem(REPO_URL)
    assert info.value.status_code == 429
    assert sleeps.delays == [1.0, 1.0, 1.0]
    assert len(transport.sent) == 4


async def test_permission_403_is_not_a_rate_limit(make_client, transport, sleeps, fakes):
    transport.script = [fakes.reply(403, {"message": "Resource not accessible by integration"})]
    with pytest.raises(gidgethub.BadRequest) as info:
        await make_client().getitem(REPO_URL)
    assert not isinstance(info.value, gidgethub.RateLimitExceeded)
    assert sleeps.delays == []


SECONDARY_BODY = {
    "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you "
    "try again. If you reach out to GitHub Support for help, please include the request ID.",
    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
}


def test_rate_limit_wait_reads_a_secondary_limit_from_the_body():
    """GitHub may answer a secondary limit with 403 and no retry-after: its body says so."""
    policy = RetryPolicy(secondary_default_wait=60.0)
    now = 1_000.0
    body = json.dumps(SECONDARY_BODY).encode()
    assert rate_limit_wait(403, {}, now, policy, body) == ("secondary", 60.0)
    # quota left in the primary headers does not make it a permission error
    quota_left = {"x-ratelimit-remaining": "4990", "x-ratelimit-reset": "1100"}
    assert rate_limit_wait(403, quota_left, now, policy, body) == ("secondary", 60.0)
    # the documented order still holds: retry-after, then an exhausted primary quota
    assert rate_limit_wait(403, {"retry-after": "9"}, now, policy, body) == ("secondary", 9.0)
    exhausted = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1100"}
    assert rate_limit_wait(403, exhausted, now, policy, body) == ("primary", 101.0)
    # the older wording of the same refusal
    abuse = json.dumps({"message": "You have triggered an abuse detection mechanism."}).encode()
    assert rate_limit_wait(403, {}, now, policy, abuse) == ("secondary", 60.0)
    # a permission error stays one, whatever else the body holds
    denied = json.dumps({"message": "Resource not accessible by integration"}).encode()
    assert rate_limit_wait(403, {}, now, policy, denied) is None
    assert rate_limit_wait(403, {}, now, policy, b"not json") is None
    assert rate_limit_wait(403, {}, now, policy, b'["secondary rate limit"]') is None
    assert rate_limit_wait(404, {}, now, policy, body) is None


async def test_secondary_rate_limit_403_without_headers_waits_a_minute_and_retries(
    make_client, transport, sleeps, fakes
):
    transport.script = [fakes.reply(403, SECONDARY_BODY), fakes.reply(201, {"id": 1})]
    client = make_client()
    assert await client.post(f"{REPO_URL}/issues/1/comments", data={"body": "x"}) == {"id": 1}
    assert sleeps.delays == [60.0]
    assert len(transport.sent) == 2


async def test_secondary_rate_limit_403_without_headers_is_bounded_and_never_a_permission_error(
    make_client, transport, sleeps, fakes
):
    transport.script = [fakes.reply(403, SECONDARY_BODY)] * 4
    client = make_client(policy=RetryPolicy(max_rate_limit_retries=2))
    with pytest.raises(RateLimited, match="still limited after 2 waits") as info:
        await client.getitem(REPO_URL)
    assert isinstance(info.value, gidgethub.RateLimitExceeded)
    assert info.value.status_code == 403
    assert sleeps.delays == [60.0, 60.0]
    assert len(transport.sent) == 3


async def test_secondary_rate_limit_403_longer_than_the_max_wait_raises_rate_limited(
    make_client, transport, sleeps, fakes
):
    transport.script = [fakes.reply(403, SECONDARY_BODY)]
    client = make_client(policy=RetryPolicy(max_rate_limit_wait=30.0))
    with pytest.raises(RateLimited, match="secondary rate limit"):
        await client.getitem(REPO_URL)
    assert sleeps.delays == []


# -- ETags -----------------------------------------------------------------------------------------


async def test_etag_second_get_is_conditional_and_304_serves_the_cache(
    make_client, transport, fakes
):
    transport.script = [
        fakes.reply(200, {"number": 3, "mergeable": True}, {"etag": '"abc"'}),
        (304, {"etag": '"abc"'}, b""),
    ]
    client = make_client(cache=cachetools.LRUCache(maxsize=16))
    first = await client.getitem(f"{REPO_URL}/pulls/3")
    second = await client.getitem(f"{REPO_URL}/pulls/3")
    assert first == second == {"number": 3, "mergeable": True}
    assert "if-none-match" not in transport.sent[0].headers
    assert transport.sent[1].headers["if-none-match"] == '"abc"'


async def test_etag_changed_resource_replaces_the_cache(make_client, transport, fakes):
    transport.script = [
        fakes.reply(200, {"v": 1}, {"etag": '"one"'}),
        fakes.reply(200, {"v": 2}, {"etag": '"two"'}),
        (304, {}, b""),
    ]
    client = make_client(cache=cachetools.LRUCache(maxsize=16))
    assert await client.getitem(REPO_URL) == {"v": 1}
    assert await client.getitem(REPO_URL) == {"v": 2}
    assert await client.getitem(REPO_URL) == {"v": 2}
    assert transport.sent[2].headers["if-none-match"] == '"two"'


async def test_304_is_not_retried(make_client, transport, sleeps, fakes):
    transport.script = [fakes.reply(200, {"v": 1}, {"etag": '"e"'}), (304, {}, b"")]
    client = make_client(cache=cachetools.LRUCache(maxsize=4))
    await client.getitem(REPO_URL)
    await client.getitem(REPO_URL)
    assert sleeps.delays == [] and len(transport.sent) == 2


# -- external fetches and logging ------------------------------------------------------------------


async def test_fetch_external_sends_no_credentials_and_retries(
    make_client, transport, authorizer, sleeps, fakes
):
    transport.script = [(503, {}, b""), (200, {"content-type": "text/plain"}, b"log line\n")]
    client = make_client(authorizer=authorizer)
    assert await client.fetch_external(f"{fakes.BASE_URL}/blob/1?sig=x") == b"log line\n"
    for sent in transport.sent:
        assert "authorization" not in sent.headers
        assert "x-github-api-version" not in sent.headers
    assert len(sleeps.delays) == 1


async def test_fetch_external_raises_for_errors(make_client, transport, fakes):
    transport.script = [(410, {"content-type": "text/plain"}, b"expired")]
    with pytest.raises(gidgethub.BadRequest) as info:
        await make_client().fetch_external("https://blob.test/x")
    assert info.value.status_code == 410


async def test_retries_log_no_token_and_no_signed_query(make_client, transport, caplog, fakes):
    class SecretAuthorizer(fakes.StaticAuthorizer):
        async def authorization(self) -> str:
            return "token ghs_SECRETSECRETSECRET"

    transport.script = [
        fakes.reply(502),
        aiohttp.ClientConnectionError("reset reading https://api.github.test/x?sig=SIGNATURE"),
        fakes.reply(200, {}),
    ]
    client = make_client(authorizer=SecretAuthorizer())
    with caplog.at_level(logging.DEBUG):
        await client.getitem(f"{REPO_URL}?sig=SIGNATURE")
    assert "retry" in caplog.text
    assert "SECRET" not in caplog.text
    assert "SIGNATURE" not in caplog.text
    assert "SECRET" not in repr(client)


def test_client_needs_a_session_or_a_transport():
    with pytest.raises(ValueError):
        GitHubClient(None, "x")


def test_a_rate_limit_is_not_a_refusal_though_gidgethub_raises_it_as_a_4xx() -> None:
    import http

    limited = RateLimited("secondary rate limit", status=403, retry_after=None, headers={})
    assert isinstance(limited, gidgethub.BadRequest) and not is_refusal(limited)
    assert is_refusal(gidgethub.BadRequest(http.HTTPStatus.FORBIDDEN))
    assert is_refusal(gidgethub.BadRequest(http.HTTPStatus.NOT_FOUND))
    assert not is_refusal(gidgethub.GitHubBroken(http.HTTPStatus.BAD_GATEWAY))
    assert not is_refusal(asyncio.TimeoutError())
