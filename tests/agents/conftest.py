"""Fixtures for the agent tests."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest


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


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A real git repository with one commit (a README), like a task's checkout."""
    work = tmp_path / "checkout"
    work.mkdir()
    for args in (
        ["init", "-q", "-b", "main"],
        ["config", "user.email", "dev@example.com"],
        ["config", "user.name", "Dev"],
    ):
        subprocess.run(["git", *args], cwd=work, check=True, capture_output=True)
    (work / "README.md").write_text("# demo\n")
    subprocess.run(["git", "add", "README.md"], cwd=work, check=True, capture_output=True)
    subprocess.run(["git", "commit", "-q", "-m", "initial"], cwd=work, check=True, capture_output=True)
    return work
