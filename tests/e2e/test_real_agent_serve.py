"""`patchwright serve` as an operator starts it, with the agent's provider credentials only in
`.env` (issue 12, criterion 4): the real Claude Code CLI receives them under its own names and
opens the PR; the key shows nowhere else — not in the attempt log, the database, the data dir,
or any command line.

The server runs from a deploy directory whose `.env` holds every setting; its environment has
nothing but PATH and HOME. Its sandbox is its default (`auto`): bubblewrap, where it works.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bot.agents.sandbox import BwrapProbe
from bot.sandbox.emulator import Emulator
from bot.store.factory import open_store
from bot.tasks.model import Status
from tests.model_server import ModelServer
from tests.model_server import anthropic as scripted
from tests.model_server.anthropic import Final, Usage

pytestmark = pytest.mark.slow

SECRET = "serve-env-secret"
REPO = "octo-org/envy"
KEY = "sk-ant-api03-" + "Kq7" * 24
CONTENT = "Hello from the real agent.\n"


def require(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a missing tool is a failure, not a skip)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_provider_credentials_in_dotenv_reach_the_real_claude_and_nothing_else(
    tmp_path: Path, model_server: ModelServer, leaks
) -> None:
    require(shutil.which("claude") is not None, "the claude CLI is not on PATH (npm install -g @anthropic-ai/claude-code)")
    probe = BwrapProbe()
    require(probe.available(), f"bubblewrap does not work here: {probe.problem}")
    emulator = Emulator(tmp_path / "github")
    await emulator.start()
    proc: subprocess.Popen[bytes] | None = None
    deploy = tmp_path / "srv"
    deploy.mkdir()
    log = deploy / "server.log"
    try:
        app = await emulator.create_app("patchwright", slug="patchwright", webhook_secret=SECRET)
        config = "agent:\n  preset: claude\n  model: claude-sonnet-4-5\n  network: false\n  timeout_minutes: 2\n"
        await emulator.create_repo(
            "octo-org", "envy", files={"README.md": "hi\n", ".github/patchwright.yml": config}
        )
        await emulator.create_installation(app["id"], "octo-org", [REPO])
        emulator.create_user("maintainer", repo=REPO, permission="write")
        (deploy / "patchwright.private-key.pem").write_text(app["private_key"])
        port = free_port()
        (deploy / ".env").write_text(
            "\n".join(
                [
                    f"PATCHWRIGHT_APP_ID={app['id']}",
                    "PATCHWRIGHT_PRIVATE_KEY_PATH=patchwright.private-key.pem",
                    f"PATCHWRIGHT_WEBHOOK_SECRET={SECRET}",
                    f"PATCHWRIGHT_GITHUB_URL={emulator.base_url}",
                    f"PATCHWRIGHT_DATABASE_URL=sqlite:///{deploy / 'patchwright.db'}",
                    f"PATCHWRIGHT_DATA_DIR={deploy / 'data'}",
                    f"PATCHWRIGHT_PORT={port}",
                    "PATCHWRIGHT_WORKERS=1",
                    # The agent's credentials, under Claude Code's own names, nowhere else.
                    f"ANTHROPIC_API_KEY={KEY}",
                    f"ANTHROPIC_BASE_URL={model_server.base_url}",
                    "",
                ]
            )
        )
        model_server.script.extend(
            [
                scripted.write("NOTES.md", CONTENT, Usage(3000, 100)),
                Final("Wrote the notes.", Usage(3200, 20)),
            ]
        )
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bot", "serve"],
                cwd=deploy,
                env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            assert proc.poll() is None, log.read_text()
            if b"patchwright listening" in log.read_bytes():
                break
            await asyncio.sleep(0.05)
        emulator.update_app(app["id"], webhook_url=url + "/webhook")

        async with leaks.sampling_cmdlines() as sampler:
            await emulator.open_issue(REPO, title="Write notes", body="Add NOTES.md", user="maintainer", labels=["patchwright"])
            store = await open_store(f"sqlite:///{deploy / 'patchwright.db'}")
            try:
                task = None
                for _ in range(1200):
                    tasks = await store.list_tasks(limit=10)
                    task = tasks[0] if tasks else None
                    if task is not None and task.status in (Status.REVIEW, Status.FAILED):
                        break
                    await asyncio.sleep(0.05)
                assert task is not None and task.status is Status.REVIEW, (task, log.read_text()[-3000:])
                logs = "\n".join(line for _, line in await store.read_logs(task.id))
            finally:
                await store.close()
        assert await emulator.git.read_file("octo-org", "envy", task.branch, "NOTES.md") == CONTENT.encode()
        assert "in bubblewrap" in logs
        conversation = model_server.conversation_requests()
        assert conversation and all(r.headers.get("x-api-key") == KEY for r in conversation)
        # The key went to the model server and nowhere else.
        needles = [KEY.encode()]
        assert KEY not in logs and sampler.containing(needles) == []
        assert leaks.files_containing(deploy / "data", needles) == []
        db_files = [p for p in deploy.glob("patchwright.db*") if p.is_file()]
        assert db_files and not any(KEY.encode() in p.read_bytes() for p in db_files)
        assert KEY.encode() not in log.read_bytes()
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        await emulator.stop()
