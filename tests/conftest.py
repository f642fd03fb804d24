"""Shared test fixtures. Area-specific fixtures live in tests/<area>/conftest.py."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Skip with a reason on a developer machine; under CI=true a missing dependency fails."""
    if running_in_ci():
        pytest.fail(f"{reason} (CI=true: this is a failure, not a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's shared/ folder (GitHub payload examples, REST description)."""
    candidates = [Path(os.environ["PATCHWRIGHT_SHARED_DIR"])] if os.environ.get("PATCHWRIGHT_SHARED_DIR") else []
    candidates.append(REPO_ROOT.parent / "shared")
    for path in candidates:
        if (path / "github" / "webhooks").is_dir():
            return path
    skip_or_fail("shared/ (GitHub webhook examples) not found beside the repository")
    raise AssertionError("unreachable")


def hub_signature(body: bytes, secret: str) -> str:
    """The X-Hub-Signature-256 value GitHub computes: HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def sign() -> Callable[[bytes, str], str]:
    return hub_signature
