"""GitHub App authentication as GitHub does it: RS256 JWTs and opaque installation tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass

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


def new_token() -> str:
    """An opaque installation token: ``ghs_`` and 36 random letters and digits."""
    return TOKEN_PREFIX + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(36))


def looks_like_jwt(value: str) -> bool:
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
