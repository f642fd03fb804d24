"""Fixtures for the agent tests."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest


@pytest.fixture
def require() -> Callable[[bool, str], None]:
    """``require(condition, reason)``: when a tool this test needs is missing, skip on a
    developer machine and fail under CI=true (CI installs it)."""

    def check(condition: bool, reason: str) -> None:
        if condition:
            return
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: a missing tool is a failure, not a skip)")
        pytest.skip(reason)

    return check
