"""The GitHub REST client: gidgethub's aiohttp client plus what a long-running bot needs.

:class:`GitHubClient` overrides only gidgethub's ``_request`` seam. On the way out it adds
``X-GitHub-Api-Version`` and the installation's (or the App's) ``Authorization``; then it
retries what is safe to retry and waits out rate limits. gidgethub itself keeps doing the rest:
URL templates, JSON, pagination, error exceptions, and the ETag cache (a GET with a cached entry
sends ``If-None-Match``; a 304 returns the cached body and costs no rate limit).

Retry policy (SPEC §5; all bounds in :class:`RetryPolicy`):

* **5xx** (500, 502, 503, 504) are retried for every method, POST included, with exponential
  backoff and jitter, at most ``max_attempts`` tries and ``max_total_delay`` seconds of
  sleeping; then the last response is handed to gidgethub, which raises ``GitHubBroken``.
  A 502/504 may hide a POST that GitHub did carry out, so a retried POST can create a
  duplicate. Callers whose POSTs must not repeat stay idempotent themselves: the status
  comment is found by its hidden marker before one is created, ``create_pull`` answers
  422 "already exists" and the caller looks the PR up, labels and reactions are idempotent
  on GitHub's side.
* **Network errors** (``aiohttp.ClientError``, ``asyncio.TimeoutError``) are retried for
  GET, HEAD, OPTIONS, PUT, PATCH and DELETE (PATCH sets fields to given values, so repeating
  it is harmless). POST is retried only when the connection was never established
  (``ClientConnectorError``, ``ConnectionTimeoutError``): otherwise the request may have been
  received, and the error is raised for the caller to decide.
* **Secondary rate limit** (403/429 with ``retry-after``): wait that long, then retry.
  **Primary rate limit** (403/429 with ``x-ratelimit-remaining: 0``): wait until
  ``x-ratelimit-reset``. A 429 with neither header, and a 403 with neither whose body says
  "secondary rate limit" (GitHub sends that without ``retry-after`` too), wait
  ``secondary_default_wait`` (one minute, GitHub's documented minimum). Any other 403 is a
  permission error and is not retried. A wait
  longer than ``max_rate_limit_wait``, or more than ``max_rate_limit_retries`` waits for one
  request, raises :class:`RateLimited` saying when the limit resets. Rate-limited requests
  were refused, not carried out, so every method is retried.
* **401** to a token this client added: the token is dropped from the cache and the request
  is sent once more with a fresh one (a token revoked early).
* **Redirects are never followed.** A 3xx reaches gidgethub, which raises
  ``RedirectionException`` carrying the ``Location`` header. The one redirect the bot expects
  (job logs → a signed storage URL) is followed explicitly by :meth:`GitHubClient.fetch_external`,
  which never sends ``Authorization``.

Credentials are only ever sent to URLs under ``base_url``; an ``Authorization`` header aimed
anywhere else is removed. Logged URLs are cut before the query string (signed URLs carry
their signature there).
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import cachetools
import gidgethub
import gidgethub.aiohttp
from gidgethub import sansio
from multidict import CIMultiDict, CIMultiDictProxy

from bot.github.auth import (
    AppAuthorizer,
    AppCredentials,
    InstallationAuthorizer,
    TokenProvider,
)
from bot.github.usage import APP_LABEL, GitHubUsage

logger = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
DEFAULT_BASE_URL = "https://api.github.com"
DEFAULT_REQUESTER = "patchwright"

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})
NETWORK_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, asyncio.TimeoutError)
NOT_SENT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
)

_QUERY_RE = re.compile(r"\?[^\s'\"<>]*")

Response = tuple[int, Mapping[str, str], bytes]
Transport = Callable[[str, str, Mapping[str, str], bytes], Awaitable[Response]]
"""Sends one HTTP request as given and returns ``(status, headers, body)``; follows no redirect."""

EtagCache = MutableMapping[str, tuple[str | None, str | None, Any, str | None]]


class Authorizer(Protocol):
    """Produces the ``Authorization`` header value for API requests."""

    async def authorization(self) -> str: ...

    def invalidate(self, authorization: str) -> None:
        """GitHub answered 401 to ``authorization``: do not hand it out again."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds for retries and rate-limit waits (seconds)."""

    max_attempts: int = 5  # tries per request for 5xx / network errors, the first included
    base_delay: float = 1.0  # backoff before retry n is drawn from [c/2, c], c = base * 2**(n-1)
    max_delay: float = 16.0  # cap of one backoff step
    max_total_delay: float = 60.0  # give up rather than sleep more than this in total
    max_rate_limit_wait: float = 120.0  # longest single wait for a rate limit
    max_rate_limit_retries: int = 3  # rate-limit waits per request
    secondary_default_wait: float = 60.0  # secondary limit without retry-after / x-ratelimit-*
    retry_statuses: frozenset[int] = frozenset({500, 502, 503, 504})


class RateLimited(gidgethub.RateLimitExceeded):
    """GitHub rate-limited a request for longer than this client is willing to wait."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        retry_after: float | None,
        headers: Mapping[str, str],
    ) -> None:
        super().__init__(sansio.RateLimit.from_http(headers), message, headers=headers)
        self.status_code = http.HTTPStatus(status)
        self.retry_after = retry_after


# -- pure decisions ----------------------------------------------------------------------------


def backoff_delay(retry: int, policy: RetryPolicy, rand: random.Random) -> float:
    """Sleep before retry number ``retry`` (1-based): "equal jitter" in ``[cap/2, cap]``."""
    cap = min(policy.max_delay, policy.base_delay * (2 ** (retry - 1)))
    return cap / 2 + rand.uniform(0, cap / 2)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``retry-after`` header (delta seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


#: Lower-cased phrases of the ``message`` GitHub sends with a secondary rate limit; the first is
#: today's wording ("You have exceeded a secondary rate limit…"), the second the older one
#: ("You have triggered an abuse detection mechanism…"). GitHub documents that a secondary
#: limit is a 403 or 429 whose message says so, and that ``retry-after`` may be absent.
SECONDARY_LIMIT_PHRASES = ("secondary rate limit", "abuse detection")


def says_secondary_rate_limit(body: bytes) -> bool:
    """Whether a response body is GitHub's secondary-rate-limit refusal (JSON ``message``)."""
    if not body:
        return False
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, str):
        return False
    lowered = message.lower()
    return any(phrase in lowered for phrase in SECONDARY_LIMIT_PHRASES)


def rate_limit_wait(
    status: int,
    headers: Mapping[str, str],
    now: float,
    policy: RetryPolicy,
    body: bytes = b"",
) -> tuple[str, float] | None:
    """``(kind, seconds)`` to wait for a rate-limited response; None when it is not one.

    ``kind`` is ``"secondary"`` or ``"primary"``. GitHub's documented order: ``retry-after``
    wins; then an exhausted primary quota (``x-ratelimit-remaining: 0``) waits until
    ``x-ratelimit-reset``; otherwise a secondary limit — any 429, or a 403 whose body says it
    is one — waits ``secondary_default_wait`` (GitHub: "at least one minute"). A 403 that is
    none of these is a permission error and is not waited on.
    """
    if status not in (403, 429):
        return None
    retry_after = parse_retry_after(headers.get("retry-after"), now)
    if retry_after is not None:
        return "secondary", retry_after
    if headers.get("x-ratelimit-remaining", "").strip() == "0":
        try:
            reset = float(headers["x-ratelimit-reset"])
        except (KeyError, ValueError):
            return "primary", policy.secondary_default_wait
        return "primary", max(0.0, reset - now) + 1.0  # one second for clock granularity
    if status == 429 or says_secondary_rate_limit(body):
        return "secondary", policy.secondary_default_wait
    return None


def is_refusal(error: BaseException) -> bool:
    """Whether GitHub refused a request for good (a 4xx that waiting will not change): not a
    rate limit, which gidgethub also raises as a 4xx (:class:`RateLimited` is one)."""
    return isinstance(error, gidgethub.BadRequest) and not isinstance(error, gidgethub.RateLimitExceeded)


def may_resend(method: str, error: BaseException) -> bool:
    """Whether a request that failed with ``error`` may be sent again."""
    if isinstance(error, aiohttp.InvalidURL):
        return False  # sending it again cannot help
    return method.upper() in IDEMPOTENT_METHODS or isinstance(error, NOT_SENT_ERRORS)


def is_api_url(url: str, base_url: str) -> bool:
    base = base_url.rstrip("/")
    return url == base or url.startswith(base + "/") or url.startswith(base + "?")


def loggable_url(url: str) -> str:
    """The URL without its query string (signed URLs carry credentials there)."""
    return url.split("?", 1)[0]


def scrub_queries(text: str) -> str:
    """``text`` with every URL query string cut out (error messages may quote URLs)."""
    return _QUERY_RE.sub("?…", text)


# -- the client ----------------------------------------------------------------------------------


class GitHubClient(gidgethub.aiohttp.GitHubAPI):
    """gidgethub's aiohttp client with auth, API version, retries and rate-limit waits.

    ``authorizer`` supplies ``Authorization`` for requests that do not carry one (None: send
    what gidgethub built). ``transport`` replaces the aiohttp call (tests); ``sleep``,
    ``rand`` and ``clock`` (wall-clock epoch seconds) are injected so that tests never sleep.
    ``usage`` counts every request sent (each retry too) under ``usage_label`` (the
    installation id, or ``app``), with the rate-limit budget GitHub reports.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None,
        requester: str = DEFAULT_REQUESTER,
        *,
        base_url: str = DEFAULT_BASE_URL,
        authorizer: Authorizer | None = None,
        cache: EtagCache | None = None,
        policy: RetryPolicy | None = None,
        transport: Transport | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rand: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        timeout: aiohttp.ClientTimeout | None = None,
        usage: GitHubUsage | None = None,
        usage_label: str = APP_LABEL,
    ) -> None:
        if session is None and transport is None:
            raise ValueError("GitHubClient needs an aiohttp session or a transport")
        super().__init__(session, requester, cache=cache, base_url=base_url.rstrip("/"))  # type: ignore[arg-type]
        self._authorizer = authorizer
        self._policy = policy or RetryPolicy()
        self._transport: Transport = transport or self._send_with_aiohttp
        self._sleep = sleep
        self._rand = rand or random.Random()
        self._clock = clock
        self._timeout = timeout
        self._usage = usage
        self._usage_label = usage_label

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, authorizer={self._authorizer!r})"

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, Mapping[str, str], bytes]:
        request_headers = dict(headers)
        added: str | None = None
        if is_api_url(url, self.base_url):
            request_headers["x-github-api-version"] = API_VERSION
            if "authorization" not in request_headers and self._authorizer is not None:
                added = await self._authorizer.authorization()
                request_headers["authorization"] = added
        else:
            request_headers.pop("authorization", None)
        response = await self._send(method, url, request_headers, body)
        if response[0] == 401 and added is not None and self._authorizer is not None:
            logger.warning(
                "GitHub %s %s answered 401; retrying with a fresh token", method, loggable_url(url)
            )
            self._authorizer.invalidate(added)
            request_headers["authorization"] = await self._authorizer.authorization()
            response = await self._send(method, url, request_headers, body)
        return response

    async def fetch_external(self, url: str, *, accept: str = "*/*") -> bytes:
        """GET an absolute URL outside the API (a signed download URL) without credentials.

        Retried like any GET. Raises gidgethub's ``HTTPException`` subclasses for non-2xx.
        """
        headers = {"user-agent": self.requester, "accept": accept}
        status, response_headers, body = await self._send("GET", url, headers, b"")
        if not 200 <= status < 300:
            sansio.decipher_response(status, response_headers, body)
            raise gidgethub.HTTPException(http.HTTPStatus(status), headers=response_headers)
        return body

    async def _send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> Response:
        """Send with retries for 5xx and network errors and waits for rate limits."""
        policy = self._policy
        failures = 0
        limit_waits = 0
        slept = 0.0
        while True:
            try:
                status, raw_headers, content = await self._transport(method, url, headers, body)
            except NETWORK_ERRORS as exc:
                self._count(method, None, {})
                failures += 1
                if not may_resend(method, exc) or failures >= policy.max_attempts:
                    raise
                delay = backoff_delay(failures, policy, self._rand)
                if slept + delay > policy.max_total_delay:
                    raise
                logger.warning(
                    "GitHub %s %s failed (%s: %s); retry %d in %.1fs",
                    method,
                    loggable_url(url),
                    type(exc).__name__,
                    scrub_queries(str(exc)),
                    failures,
                    delay,
                )
                await self._sleep(delay)
                slept += delay
                continue
            response_headers = CIMultiDictProxy(CIMultiDict(raw_headers))
            self._count(method, status, response_headers)
            limited = rate_limit_wait(status, response_headers, self._clock(), policy, content)
            if limited is not None:
                kind, wait = limited
                limit_waits += 1
                if wait > policy.max_rate_limit_wait or limit_waits > policy.max_rate_limit_retries:
                    raise RateLimited(
                        self._rate_limit_message(method, url, kind, wait, limit_waits),
                        status=status,
                        retry_after=wait,
                        headers=response_headers,
                    )
                logger.warning(
                    "GitHub %s %s: %s rate limit (%d); waiting %.0fs",
                    method,
                    loggable_url(url),
                    kind,
                    status,
                    wait,
                )
                await self._sleep(wait)
                continue
            if status in policy.retry_statuses:
                failures += 1
                if failures >= policy.max_attempts:
                    return status, response_headers, content
                hinted = parse_retry_after(response_headers.get("retry-after"), self._clock())
                delay = (
                    hinted if hinted is not None else backoff_delay(failures, policy, self._rand)
                )
                if slept + delay > policy.max_total_delay:
                    return status, response_headers, content
                logger.warning(
                    "GitHub %s %s answered %d; retry %d in %.1fs",
                    method,
                    loggable_url(url),
                    status,
                    failures,
                    delay,
                )
                await self._sleep(delay)
                slept += delay
                continue
            return status, response_headers, content

    def _count(self, method: str, status: int | None, headers: Mapping[str, str]) -> None:
        if self._usage is not None:
            self._usage.record(self._usage_label, method, status, headers, self._clock())

    def _rate_limit_message(self, method: str, url: str, kind: str, wait: float, waits: int) -> str:
        where = f"{method} {loggable_url(url)}"
        if waits > self._policy.max_rate_limit_retries:
            return (
                f"GitHub {kind} rate limit on {where}: still limited after "
                f"{self._policy.max_rate_limit_retries} waits (next wait {wait:.0f}s)"
            )
        resets = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock() + wait))
        return (
            f"GitHub {kind} rate limit on {where}: retry allowed in {wait:.0f}s (at {resets}), "
            f"longer than the {self._policy.max_rate_limit_wait:.0f}s this client waits"
        )

    async def _send_with_aiohttp(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> Response:
        kwargs: dict[str, Any] = {"headers": headers, "data": body, "allow_redirects": False}
        if self._timeout is not None:
            kwargs["timeout"] = self._timeout
        async with self._session.request(method, url, **kwargs) as response:
            return response.status, response.headers, await response.read()


class GitHubSettings(Protocol):
    """The part of ``bot.config.Settings`` the factory reads."""

    github_url: str

    def require_app_id(self) -> int: ...

    def private_key_pem(self) -> str: ...


class GitHubClientFactory:
    """One client per installation, all sharing one aiohttp session and one token provider.

    Each installation's client keeps its own ETag cache (``cachetools.LRUCache``), so
    conditional requests of one installation never see another's data. Clients are reused
    across deliveries; tokens are refreshed only when they near expiry. Every client counts
    its requests in :attr:`usage` (the process's :class:`~bot.github.usage.GitHubUsage`).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None,
        credentials: AppCredentials,
        *,
        base_url: str = DEFAULT_BASE_URL,
        requester: str = DEFAULT_REQUESTER,
        policy: RetryPolicy | None = None,
        etag_cache_size: int = 1024,
        transport: Transport | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rand: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        timeout: aiohttp.ClientTimeout | None = None,
        usage: GitHubUsage | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.usage = usage or GitHubUsage()
        self._client_args: dict[str, Any] = {
            "base_url": self.base_url,
            "policy": policy or RetryPolicy(),
            "transport": transport,
            "sleep": sleep,
            "rand": rand or random.Random(),
            "clock": clock,
            "timeout": timeout,
            "usage": self.usage,
        }
        self._session = session
        self._requester = requester
        self._etag_cache_size = etag_cache_size
        # Token requests carry the JWT themselves; this client adds no Authorization.
        self.tokens = TokenProvider(credentials, self._new_client(None, None, APP_LABEL), clock=clock)
        self._app_client: GitHubClient | None = None
        self._clients: dict[int, GitHubClient] = {}

    def __repr__(self) -> str:
        return (
            f"GitHubClientFactory(base_url={self.base_url!r}, installations={len(self._clients)})"
        )

    @classmethod
    def from_settings(
        cls, session: aiohttp.ClientSession | None, settings: GitHubSettings, **kwargs: Any
    ) -> GitHubClientFactory:
        """A factory for ``PATCHWRIGHT_GITHUB_URL`` with the App's id and private key."""
        credentials = AppCredentials(settings.require_app_id(), settings.private_key_pem())
        return cls(session, credentials, base_url=settings.github_url, **kwargs)

    def for_installation(self, installation_id: int) -> GitHubClient:
        """The installation's client (created on first use)."""
        client = self._clients.get(installation_id)
        if client is None:
            client = self._new_client(
                InstallationAuthorizer(self.tokens, installation_id),
                cachetools.LRUCache(maxsize=self._etag_cache_size),
                str(installation_id),
            )
            self._clients[installation_id] = client
        return client

    def for_app(self) -> GitHubClient:
        """The client that authenticates as the App itself (JWT): ``GET /app`` and friends."""
        if self._app_client is None:
            self._app_client = self._new_client(AppAuthorizer(self.tokens), None, APP_LABEL)
        return self._app_client

    def drop(self, installation_id: int) -> None:
        """Forget an installation's client, ETag cache and token (it was removed)."""
        self._clients.pop(installation_id, None)
        self.tokens.drop(installation_id)

    def _new_client(self, authorizer: Authorizer | None, cache: EtagCache | None, label: str) -> GitHubClient:
        return GitHubClient(
            self._session, self._requester, authorizer=authorizer, cache=cache, usage_label=label,
            **self._client_args,
        )
