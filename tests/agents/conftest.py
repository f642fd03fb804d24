"""Fixtures for the agent tests."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

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


class AgentProcesses:
    """The live (not zombie) processes of this machine whose command line holds a token: what
    an agent started, found from outside whatever session or group it moved to."""

    def matching(self, token: str) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            if token.encode() in cmdline and state != "Z":
                found.append(int(entry.name))
        return found

    async def gone(self, token: str, within: float = 3.0) -> bool:
        """Whether every such process is gone within ``within`` seconds."""
        deadline = time.monotonic() + within
        while self.matching(token) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return not self.matching(token)


@pytest.fixture
def agent_processes() -> AgentProcesses:
    return AgentProcesses()
