"""Who may use the web surface (SPEC §9): the decision is pure, the request parsing thin.

- Mutating API calls need ``Authorization: Bearer <PATCHWRIGHT_ADMIN_TOKEN>``; the
  dashboard cookie does not count for them (a cookie is sent by the browser on its own,
  a header is not, so no other site can make a logged-in browser retry or stop a task).
- When the read API is private (``PATCHWRIGHT_PRIVATE_READ_API=true``, and always when the
  server listens beyond loopback: ``Settings.read_api_private``) the read API, the dashboard,
  the event stream and ``/metrics`` need the token too: as the same header, or as the
  dashboard cookie that ``/login`` sets. The cookie holds an HMAC derived from the token,
  never the token itself, and stops working when the token changes.
- Tokens are compared in constant time (SHA-256 digests, so the length does not leak either).
- The login form is rate limited per client address (:class:`LoginLimiter`): after
  :data:`LOGIN_MAX_FAILURES` wrong tokens within :data:`LOGIN_WINDOW_S` seconds it answers
  429 with ``Retry-After`` — even to the right token — until the oldest failure is that old.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cachetools

COOKIE_NAME = "patchwright_session"
COOKIE_MAX_AGE_S = 7 * 24 * 3600
LOGIN_MAX_FAILURES = 5  # wrong tokens per client address …
LOGIN_WINDOW_S = 60.0  # … within this many seconds, then 429 until the oldest is this old
LOGIN_MAX_CLIENTS = 10_000  # addresses tracked at once (the least recently failing go first)
_COOKIE_CONTEXT = b"patchwright dashboard session v1"

NO_TOKEN_FOR_WRITES = (
    "Mutating API calls are disabled because no admin token is configured. Set "
    "PATCHWRIGHT_ADMIN_TOKEN on the server (a long random string) and send it as "
    "'Authorization: Bearer <token>'."
)
NO_TOKEN_FOR_READS = (
    "The read API is private (PATCHWRIGHT_PRIVATE_READ_API, or the server listens beyond "
    "loopback) but no PATCHWRIGHT_ADMIN_TOKEN is configured, so nobody can read. Set "
    "PATCHWRIGHT_ADMIN_TOKEN on the server."
)
TOKEN_NEEDED_FOR_WRITES = (
    "This call changes state: send the admin token as 'Authorization: Bearer <token>' "
    "(PATCHWRIGHT_ADMIN_TOKEN). The dashboard login cookie is not accepted here."
)
TOO_MANY_LOGINS = "Too many failed logins from your address: try again in {seconds} s."
TOKEN_NEEDED_FOR_READS = (
    "The read API is private: send the admin token as 'Authorization: Bearer <token>', "
    "or log in to the dashboard at /login."
)


class Verdict(str, enum.Enum):
    ALLOWED = "allowed"
    NOT_CONFIGURED = "not_configured"  # 403: no admin token on the server
    UNAUTHENTICATED = "unauthenticated"  # 401: missing or wrong token


@dataclass(frozen=True, slots=True)
class Access:
    verdict: Verdict
    message: str = ""

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOWED

    @property
    def status(self) -> int:
        return {Verdict.ALLOWED: 200, Verdict.NOT_CONFIGURED: 403, Verdict.UNAUTHENTICATED: 401}[self.verdict]


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presented: the bearer token and the dashboard cookie, if any."""

    bearer: str | None = None
    cookie: str | None = None


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def token_matches(presented: str, token: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    return hmac.compare_digest(_digest(presented), _digest(token))


def session_cookie_value(token: str) -> str:
    """The dashboard cookie for ``token``: an HMAC keyed by the token (not the token)."""
    return hmac.new(token.encode("utf-8", "surrogatepass"), _COOKIE_CONTEXT, hashlib.sha256).hexdigest()


def cookie_matches(presented: str, token: str) -> bool:
    return hmac.compare_digest(_digest(presented), _digest(session_cookie_value(token)))


def decide_access(
    *, mutating: bool, private_read: bool, admin_token: str | None, credentials: Credentials
) -> Access:
    """Whether a request may proceed, and if not, the status and the message to answer."""
    if not mutating and not private_read:
        return Access(Verdict.ALLOWED)
    if not admin_token:
        return Access(Verdict.NOT_CONFIGURED, NO_TOKEN_FOR_WRITES if mutating else NO_TOKEN_FOR_READS)
    if credentials.bearer is not None and token_matches(credentials.bearer, admin_token):
        return Access(Verdict.ALLOWED)
    if not mutating and credentials.cookie is not None and cookie_matches(credentials.cookie, admin_token):
        return Access(Verdict.ALLOWED)
    return Access(Verdict.UNAUTHENTICATED, TOKEN_NEEDED_FOR_WRITES if mutating else TOKEN_NEEDED_FOR_READS)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def request_credentials(headers: Any, cookies: Any) -> Credentials:
    """Read the credentials of a request (``headers``/``cookies`` are mappings)."""
    return Credentials(bearer=bearer_token(headers.get("Authorization")), cookie=cookies.get(COOKIE_NAME))


def safe_next_path(value: str | None) -> str:
    """Where to go after logging in: a local path only (no ``//host`` or ``scheme:``)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ch in value for ch in "\r\n\t") or ":" in value.split("?", 1)[0]:
        return "/"
    return value


class LoginLimiter:
    """Failed logins per client address, in bounded memory.

    Each address keeps the times of its last ``max_failures`` failures (a ``TTLCache`` entry
    that expires ``window_s`` after its latest failure; at most ``max_clients`` addresses).
    :meth:`retry_after` says how long an address must wait once ``max_failures`` of them fall
    within the window. ``timer`` is monotonic seconds (tests pass their own)."""

    def __init__(
        self,
        *,
        max_failures: int = LOGIN_MAX_FAILURES,
        window_s: float = LOGIN_WINDOW_S,
        max_clients: int = LOGIN_MAX_CLIENTS,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1 or window_s <= 0 or max_clients < 1:
            raise ValueError("max_failures, window_s and max_clients must be positive")
        self.max_failures = max_failures
        self.window_s = window_s
        self._timer = timer
        self._failures: cachetools.TTLCache[str, tuple[float, ...]] = cachetools.TTLCache(
            maxsize=max_clients, ttl=window_s, timer=timer
        )

    def _recent(self, client: str) -> tuple[float, ...]:
        horizon = self._timer() - self.window_s
        return tuple(t for t in self._failures.get(client, ()) if t > horizon)

    def failures(self, client: str) -> int:
        """Failures of ``client`` within the window."""
        return len(self._recent(client))

    @property
    def tracked(self) -> int:
        """Addresses with a failure within the window."""
        self._failures.expire()
        return len(self._failures)

    def retry_after(self, client: str) -> int | None:
        """Whole seconds ``client`` must wait before trying again, or None when it may try."""
        recent = self._recent(client)
        if len(recent) < self.max_failures:
            return None
        wait = recent[-self.max_failures] + self.window_s - self._timer()
        return max(1, math.ceil(wait))

    def record_failure(self, client: str) -> None:
        recent = self._recent(client) + (self._timer(),)
        self._failures[client] = recent[-self.max_failures :]

    def forget(self, client: str) -> None:
        """A successful login: earlier failures of ``client`` no longer count."""
        self._failures.pop(client, None)
