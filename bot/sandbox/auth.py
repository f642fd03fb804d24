"""GitHub App authentication as GitHub does it: RS256 JWTs and opaque installation tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .errors import ApiError
from .state import App, Installation, InstallationToken

MAX_JWT_LIFETIME = 600  # seconds between iat and exp
_IAT_INVALID = (
    "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued."
)
_EXP_INVALID = (
    "'Expiration time' claim ('exp') must be a numeric value representing the future time at which "
    "the assertion expires."
)
TOKEN_PREFIX = "ghs_"
_TOKEN_ALPHABET = string.ascii_letters + string.digits
STATELESS_TOKEN_LENGTH = 520  # GitHub: "~520 characters", ghs_<app id>_<JWT>
_JWT_HEADER = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9"  # {"alg":"RS256","typ":"JWT"}
_RS256_SIGNATURE_LENGTH = 342  # base64url of 256 bytes, unpadded

NOT_ACCESSIBLE = "Resource not accessible by integration"
ACCESS_LEVELS = ("read", "write", "admin")
Requirement = tuple[tuple[str, str], ...]  # alternatives: any one (permission, level) suffices

# What an installation token needs per REST operation (GitHub's "Permissions required for
# GitHub Apps", server-to-server). Alternatives are listed where GitHub accepts either
# permission; the issue-number operations also accept ``pull_requests`` when the issue is a
# pull request (see PULL_REQUEST_AWARE). ``metadata: read`` every installation has.
# Operations that take the App's JWT instead are not listed (JWT_OPERATIONS in rest.py).
OPERATION_PERMISSIONS: Mapping[str, Requirement] = MappingProxyType(
    {
        "apps/list-repos-accessible-to-installation": (),
        "repos/get": (("metadata", "read"),),
        "repos/get-collaborator-permission-level": (("metadata", "read"),),
        "actions/get-job-for-workflow-run": (("actions", "read"),),
        "actions/download-job-logs-for-workflow-run": (("actions", "read"),),
        "actions/re-run-job-for-workflow-run": (("actions", "write"),),
        "actions/list-workflow-runs-for-repo": (("actions", "read"),),
        "actions/get-workflow-run": (("actions", "read"),),
        "actions/list-jobs-for-workflow-run": (("actions", "read"),),
        "actions/list-workflow-runs": (("actions", "read"),),
        "repos/get-branch": (("contents", "read"),),
        "checks/create": (("checks", "write"),),
        "checks/get": (("checks", "read"),),
        "checks/update": (("checks", "write"),),
        "checks/list-annotations": (("checks", "read"),),
        "checks/rerequest-run": (("checks", "write"),),
        "checks/get-suite": (("checks", "read"),),
        "checks/list-for-suite": (("checks", "read"),),
        "checks/list-for-ref": (("checks", "read"),),
        "repos/get-combined-status-for-ref": (("statuses", "read"),),
        "repos/list-commit-statuses-for-ref": (("statuses", "read"),),
        "repos/compare-commits": (("contents", "read"),),
        "repos/get-content": (("contents", "read"),),
        "git/get-ref": (("contents", "read"),),
        "git/delete-ref": (("contents", "write"),),
        "issues/list-for-repo": (("issues", "read"),),
        "issues/get": (("issues", "read"),),
        "issues/update": (("issues", "write"),),
        "issues/list-comments": (("issues", "read"),),
        "issues/create-comment": (("issues", "write"),),
        "issues/get-comment": (("issues", "read"),),
        "issues/update-comment": (("issues", "write"),),
        "issues/add-labels": (("issues", "write"),),
        "issues/remove-label": (("issues", "write"),),
        "issues/create-label": (("issues", "write"), ("pull_requests", "write")),
        "reactions/create-for-issue": (("issues", "write"),),
        "reactions/create-for-issue-comment": (("issues", "write"),),
        "reactions/create-for-pull-request-review-comment": (("pull_requests", "write"),),
        "pulls/list": (("pull_requests", "read"),),
        "pulls/create": (("pull_requests", "write"),),
        "pulls/get": (("pull_requests", "read"), ("contents", "read")),
        "pulls/update": (("pull_requests", "write"),),
        "pulls/list-files": (("pull_requests", "read"),),
        "pulls/list-review-comments": (("pull_requests", "read"),),
        "pulls/create-reply-for-review-comment": (("pull_requests", "write"),),
        "pulls/list-reviews": (("pull_requests", "read"),),
        "pulls/get-review": (("pull_requests", "read"),),
        "pulls/list-comments-for-review": (("pull_requests", "read"),),
    }
)
# Issue operations that ``pull_requests`` (same level) also allows when the issue is a PR.
PULL_REQUEST_AWARE = frozenset(
    {
        "issues/get",
        "issues/update",
        "issues/list-comments",
        "issues/create-comment",
        "issues/get-comment",
        "issues/update-comment",
        "issues/add-labels",
        "issues/remove-label",
        "reactions/create-for-issue",
        "reactions/create-for-issue-comment",
    }
)


@dataclass(frozen=True)
class Principal:
    """Who made an API request."""

    kind: str  # app | installation | anonymous
    app: App | None = None
    installation: Installation | None = None
    token: InstallationToken | None = None

    @property
    def label(self) -> str:
        if self.kind == "app" and self.app is not None:
            return f"app:{self.app.id}"
        if self.kind == "installation" and self.installation is not None:
            return f"installation:{self.installation.id}"
        return "anonymous"


ANONYMOUS = Principal("anonymous")


def generate_key_pair() -> tuple[str, str]:
    """A new 2048-bit RSA key pair as (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


def check_public_key(pem: str) -> str:
    """``pem`` when it is an RSA public key (or a private key, whose public half is kept)."""
    data = pem.encode()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError("public_key is not a PEM RSA key") from exc
        key = private.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("public_key must be an RSA key")
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _random_text(length: int) -> str:
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(length))


def new_token() -> str:
    """An opaque installation token: ``ghs_`` and 36 random letters and digits."""
    return TOKEN_PREFIX + _random_text(36)


def new_stateless_token(app_id: int) -> str:
    """A token of GitHub's stateless format: ``ghs_<app id>_<JWT>``, 520 characters of
    ``[A-Za-z0-9._]`` with two dots (matches GitHub's advice ``ghs_[A-Za-z0-9._]{36,}``)."""
    head = f"{TOKEN_PREFIX}{app_id}_{_JWT_HEADER}."
    payload = STATELESS_TOKEN_LENGTH - len(head) - 1 - _RS256_SIGNATURE_LENGTH
    return f"{head}{_random_text(payload)}.{_random_text(_RS256_SIGNATURE_LENGTH)}"


def with_metadata(permissions: Mapping[str, str]) -> dict[str, str]:
    """``permissions`` plus the ``metadata: read`` every installation token carries."""
    granted = dict(permissions)
    if granted.get("metadata") not in ACCESS_LEVELS:
        granted["metadata"] = "read"
    return granted


def level_allows(have: str | None, need: str) -> bool:
    """Whether access level ``have`` (read < write < admin) covers ``need``."""
    if have not in ACCESS_LEVELS:
        return False
    return ACCESS_LEVELS.index(have) >= ACCESS_LEVELS.index(need)


def permits(permissions: Mapping[str, str], requirement: Requirement) -> bool:
    """Whether a token's ``permissions`` meet one of ``requirement``'s alternatives."""
    if not requirement:
        return True
    granted = with_metadata(permissions)
    return any(level_allows(granted.get(name), level) for name, level in requirement)


def looks_like_jwt(value: str) -> bool:
    """An App JWT (three dot-separated parts); installation tokens, stateless ones included,
    start with ``ghs_``."""
    return value.count(".") == 2 and not value.startswith(TOKEN_PREFIX)


def verify_app_jwt(token: str, apps: Mapping[int, App], now: float, leeway: float) -> App:
    """The App a JWT authenticates, checked as GitHub checks it; ``ApiError(401)`` otherwise."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise ApiError(401, "A JSON web token could not be decoded") from exc
    issuer = claims.get("iss")
    try:
        app_id = int(issuer) if not isinstance(issuer, bool) else -1
    except (TypeError, ValueError):
        app_id = -1
    app = apps.get(app_id)
    if app is None or not app.public_key_pem:
        raise ApiError(401, "'Issuer' claim ('iss') must be an Integer")
    try:
        jwt.decode(
            token,
            app.public_key_pem,
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    except jwt.PyJWTError as exc:
        raise ApiError(401, "A JSON web token could not be decoded") from exc  # wrong key or algorithm
    issued_at, expires_at = claims.get("iat"), claims.get("exp")
    if not isinstance(issued_at, (int, float)) or isinstance(issued_at, bool):
        raise ApiError(401, _IAT_INVALID)
    if not isinstance(expires_at, (int, float)) or isinstance(expires_at, bool):
        raise ApiError(401, _EXP_INVALID)
    if issued_at > now + leeway:
        raise ApiError(401, "'Issued at' claim ('iat') must be an Integer representing a time in the past.")
    if expires_at <= now - leeway:
        raise ApiError(401, _EXP_INVALID)
    if expires_at - issued_at > MAX_JWT_LIFETIME or expires_at > now + MAX_JWT_LIFETIME + leeway:
        raise ApiError(401, "'Expiration time' claim ('exp') is too far in the future.")
    return app


def log_url_signature(secret: str, path: str, expires: int) -> str:
    """The signature of a pre-signed job-log URL (like GitHub's short-lived blob links)."""
    digest = hmac.new(secret.encode(), f"{path}:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
