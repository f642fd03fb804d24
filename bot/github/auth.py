"""GitHub App authentication: the App's JWT and per-installation access tokens (SPEC §5).

The App signs a short-lived JWT (RS256) with its private key; with that JWT it asks GitHub for
an installation access token, which every repository call then uses. Installation tokens live
one hour; :class:`TokenProvider` caches each one until five minutes before it expires and lets
only one refresh per installation run at a time, so a burst of deliveries costs one request.

Tokens are opaque strings of any length. Nothing here logs them, and the holders' ``repr``
redacts them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import cachetools
import gidgethub.abc
import jwt
from pydantic import SecretStr

logger = logging.getLogger(__name__)

JWT_BACKDATE_SECONDS = 60  # `iat` = now - 60 s: tolerates a clock that runs ahead of GitHub's
JWT_LIFETIME_SECONDS = 9 * 60  # `exp` = now + 9 min (GitHub allows at most 10 min after `iat`)
JWT_REUSE_MARGIN_SECONDS = 60  # mint a new JWT one minute before the old one expires
TOKEN_REFRESH_MARGIN_SECONDS = 5 * 60  # refresh an installation token 5 min before it expires


class SecretLike(Protocol):
    def get_secret_value(self) -> str: ...


class TokenError(Exception):
    """GitHub answered the access-token request with something that is not a token."""


@dataclass(frozen=True, slots=True)
class AppCredentials:
    """The App's id and private key (PEM). The key never shows in ``repr``."""

    app_id: str
    private_key: SecretStr = field(repr=False)

    def __init__(self, app_id: int | str, private_key: SecretLike | str | bytes) -> None:
        if isinstance(private_key, bytes):
            private_key = private_key.decode("ascii")
        if isinstance(private_key, str):
            key = SecretStr(private_key)
        else:
            key = SecretStr(private_key.get_secret_value())
        if not str(app_id).strip():
            raise ValueError("app_id must not be empty")
        object.__setattr__(self, "app_id", str(app_id).strip())
        object.__setattr__(self, "private_key", key)


@dataclass(frozen=True, slots=True)
class InstallationToken:
    """An installation access token and when it expires. ``repr`` redacts the token."""

    token: str
    expires_at: datetime  # timezone-aware

    def __repr__(self) -> str:
        return f"InstallationToken(token=<redacted>, expires_at={self.expires_at.isoformat()})"

    __str__ = __repr__


def make_jwt(credentials: AppCredentials, now: float) -> tuple[str, float]:
    """Sign the App JWT for time ``now`` (epoch seconds); returns ``(jwt, exp)``."""
    issued = int(now)
    claims = {
        "iat": issued - JWT_BACKDATE_SECONDS,
        "exp": issued + JWT_LIFETIME_SECONDS,
        "iss": credentials.app_id,
    }
    token = jwt.encode(claims, credentials.private_key.get_secret_value(), algorithm="RS256")
    return token, float(claims["exp"])


def parse_token_response(data: Any) -> InstallationToken:
    """The token and expiry from ``POST /app/installations/{id}/access_tokens``."""
    if not isinstance(data, dict):
        raise TokenError("access token response is not a JSON object")
    token = data.get("token")
    expires_at = data.get("expires_at")
    if not isinstance(token, str) or not token:
        raise TokenError("access token response has no token")
    if not isinstance(expires_at, str):
        raise TokenError("access token response has no expires_at")
    try:
        expiry = datetime.fromisoformat(expires_at)
    except ValueError:
        raise TokenError(
            f"access token response has an unreadable expires_at: {expires_at!r}"
        ) from None
    if expiry.tzinfo is None:
        raise TokenError(f"access token expires_at has no time zone: {expires_at!r}")
    return InstallationToken(token=token, expires_at=expiry)


class TokenProvider:
    """Hands out the App JWT and cached installation tokens.

    ``api`` is a client used only for ``POST /app/installations/{id}/access_tokens``; the JWT is
    passed explicitly on that call. ``clock`` returns wall-clock epoch seconds.
    """

    def __init__(
        self,
        credentials: AppCredentials,
        api: gidgethub.abc.GitHubAPI,
        *,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = TOKEN_REFRESH_MARGIN_SECONDS,
        max_installations: int = 10_000,
    ) -> None:
        self.credentials = credentials
        self._api = api
        self._clock = clock
        self._jwt: str | None = None
        self._jwt_exp = 0.0
        self._tokens: cachetools.TLRUCache[int, InstallationToken] = cachetools.TLRUCache(
            maxsize=max_installations,
            ttu=lambda _id, tok, _now: tok.expires_at.timestamp() - refresh_margin,
            timer=clock,
        )
        self._locks: dict[int, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"TokenProvider(app_id={self.credentials.app_id!r}, cached={len(self._tokens)})"

    def get_jwt(self, now: float | None = None) -> str:
        """The App JWT, reused until a minute before it expires."""
        at = self._clock() if now is None else now
        if self._jwt is None or at >= self._jwt_exp - JWT_REUSE_MARGIN_SECONDS:
            self._jwt, self._jwt_exp = make_jwt(self.credentials, at)
        return self._jwt

    def forget_jwt(self) -> None:
        """Mint a fresh JWT next time (GitHub rejected the current one)."""
        self._jwt = None

    async def installation_token(self, installation_id: int) -> str:
        """A valid access token for the installation; at most one refresh at a time."""
        cached = self._tokens.get(installation_id)
        if cached is not None:
            return cached.token
        lock = self._locks.setdefault(installation_id, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(installation_id)
            if cached is not None:
                return cached.token
            fresh = await self._request_token(installation_id)
            self._tokens[installation_id] = fresh
            logger.info(
                "installation %s: new access token, expires %s",
                installation_id,
                fresh.expires_at.isoformat(),
            )
            return fresh.token

    def drop(self, installation_id: int) -> None:
        """Forget the installation's token (the App was uninstalled or suspended)."""
        self._tokens.pop(installation_id, None)
        lock = self._locks.get(installation_id)
        if lock is not None and not lock.locked():
            del self._locks[installation_id]

    def invalidate(self, installation_id: int, token: str) -> None:
        """Forget ``token`` if it is still the cached one (GitHub answered 401 to it)."""
        cached = self._tokens.get(installation_id)
        if cached is not None and cached.token == token:
            self._tokens.pop(installation_id, None)

    async def _request_token(self, installation_id: int) -> InstallationToken:
        data = await self._api.post(
            "/app/installations/{installation_id}/access_tokens",
            {"installation_id": installation_id},
            data=b"",
            jwt=self.get_jwt(),
        )
        return parse_token_response(data)


class InstallationAuthorizer:
    """Supplies ``Authorization: token …`` for one installation's client."""

    def __init__(self, tokens: TokenProvider, installation_id: int) -> None:
        self._tokens = tokens
        self.installation_id = installation_id

    def __repr__(self) -> str:
        return f"InstallationAuthorizer(installation_id={self.installation_id})"

    async def authorization(self) -> str:
        return f"token {await self._tokens.installation_token(self.installation_id)}"

    def invalidate(self, authorization: str) -> None:
        self._tokens.invalidate(self.installation_id, authorization.removeprefix("token "))


class AppAuthorizer:
    """Supplies ``Authorization: bearer <JWT>`` for App-level calls (``GET /app``…)."""

    def __init__(self, tokens: TokenProvider) -> None:
        self._tokens = tokens

    def __repr__(self) -> str:
        return "AppAuthorizer()"

    async def authorization(self) -> str:
        return f"bearer {self._tokens.get_jwt()}"

    def invalidate(self, authorization: str) -> None:
        self._tokens.forget_jwt()
