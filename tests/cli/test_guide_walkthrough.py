"""The operator's guide's 15-minute path (docs/operating.md §1, steps 4–9), command by command,
with the emulator standing in for GitHub (``PATCHWRIGHT_GITHUB_URL``, as for GitHub Enterprise
Server) and the repository's deterministic agent standing in for a real one."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp
import pytest
from dotenv import dotenv_values

from bot.agents.sandbox import BwrapProbe
from bot.messages import STATUS_MARKER
from bot.sandbox import fake_agent
from bot.sandbox.emulator import Emulator
from bot.sandbox.state import IssueComment
from tests.conftest import running_in_ci
from tests.cli.registration_form import FormReader

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _patchwright(*args: str) -> list[str]:
    return [sys.executable, "-m", "bot", *args]


async def _run(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, _patchwright(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _wait_for(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_guides_fifteen_minute_path_on_the_emulator(tmp_path: Path) -> None:
    emulator = Emulator(tmp_path / "github")
    await emulator.start()
    workdir = tmp_path / "checkout"
    workdir.mkdir()
    shutil.copy(REPO_ROOT / "app.yml", workdir / "app.yml")
    port = _free_port()
    bot_url = f"http://127.0.0.1:{port}"
    bubblewrap_works = BwrapProbe().available()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
        # GitHub Enterprise Server's way of pointing patchwright elsewhere: here, the emulator.
        "PATCHWRIGHT_GITHUB_URL": emulator.base_url,
        # The server listens where the App's webhook URL points (step 6 prints the address).
        "PATCHWRIGHT_PORT": str(port),
        # The repository's deterministic agent instead of a real CLI and a model key.
        "PATCHWRIGHT_AGENT": "command",
        "PATCHWRIGHT_AGENT_COMMAND": fake_agent.command_template(),
        # Bubblewrap where it works; off CI a machine without it runs the agent unsandboxed.
        **({} if bubblewrap_works or running_in_ci() else {"PATCHWRIGHT_SANDBOX": "none"}),
    }
    if "CI" in os.environ:
        env["CI"] = os.environ["CI"]
    setup: asyncio.subprocess.Process | None = None
    serve: asyncio.subprocess.Process | None = None
    drainer: asyncio.Task[None] | None = None
    try:
        started = time.monotonic()

        # -- step 4: patchwright setup --webhook-url …/webhook, and a browser against "GitHub".
        setup = await asyncio.create_subprocess_exec(
            *_patchwright("setup", "--webhook-url", f"{bot_url}/webhook", "--no-browser", "--port", "0"),
            cwd=workdir, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        assert setup.stdout is not None
        first = (await asyncio.wait_for(setup.stdout.readline(), 30)).decode()
        assert first.startswith("Open http://127.0.0.1:"), first
        page_url = first.split()[1]
        async with aiohttp.ClientSession() as session:
            async with session.get(page_url) as response:
                assert response.status == 200
                form = FormReader()
                form.feed(await response.text())
            assert form.action is not None and form.action.startswith(f"{emulator.base_url}/settings/apps/new?state=")
            async with session.post(form.action, data=form.fields, allow_redirects=False) as response:
                assert response.status == 302
                callback = response.headers["Location"]
            assert urlsplit(callback).path == "/callback"
            async with session.get(callback) as response:
                assert response.status == 200
        out, err = await asyncio.wait_for(setup.communicate(), 30)
        setup_output = first + out.decode()
        assert setup.returncode == 0, err.decode()
        assert "/installations/new" in setup_output and "Then run: patchwright serve" in setup_output
        written = dotenv_values(workdir / ".env")
        app = emulator.app(int(str(written["PATCHWRIGHT_APP_ID"])))
        assert app.webhook_url == f"{bot_url}/webhook"
        assert (workdir / f"{app.slug}.private-key.pem").exists()

        # -- step 5: the admin token, exactly as the guide appends it (the agent is set in env).
        subprocess.run(
            ["bash", "-c",
             """echo "PATCHWRIGHT_ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')" >> .env"""],
            cwd=workdir, env=env, check=True, timeout=30,
        )
        assert len(str(dotenv_values(workdir / ".env")["PATCHWRIGHT_ADMIN_TOKEN"])) >= 32

        # -- step 6: patchwright serve, until /readyz answers ready.
        serve = await asyncio.create_subprocess_exec(
            *_patchwright("serve"), cwd=workdir, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        assert serve.stdout is not None
        listening = (await asyncio.wait_for(serve.stdout.readline(), 30)).decode()
        assert listening.startswith(f"patchwright listening on {bot_url} "), listening
        serve_output: list[bytes] = []

        async def drain(stream: asyncio.StreamReader) -> None:  # a full pipe would block the server
            while line := await stream.readline():
                serve_output.append(line)

        drainer = asyncio.create_task(drain(serve.stdout))

        async def ready() -> bool:
            try:
                async with aiohttp.ClientSession() as session, session.get(f"{bot_url}/readyz") as response:
                    return response.status == 200 and (await response.json()) == {"status": "ready"}
            except aiohttp.ClientError:
                return False

        deadline = time.monotonic() + 30
        while not await ready():
            assert serve.returncode is None and time.monotonic() < deadline, "serve never became ready"
            await asyncio.sleep(0.1)

        # -- step 7: install the App on one repository; `deliveries list` shows it.
        await emulator.create_repo("alice", "widget", files={"README.md": "# widget\n"})
        await emulator.create_installation(app.id, "alice", ["alice/widget"])
        await emulator.webhooks_idle()
        # "shows the installation delivery, processed"
        deliveries = ""
        deadline = time.monotonic() + 15
        while not any("installation.created" in line and " done " in line for line in deliveries.splitlines()):
            assert time.monotonic() < deadline, deliveries
            proc = await _run(workdir, env, "deliveries", "list")
            assert proc.returncode == 0, proc.stderr
            deliveries = proc.stdout
            await asyncio.sleep(0.1)

        # -- step 8: the label, an issue labelled by a maintainer, the bot's status comment.
        emulator.create_user("maintainer", repo="alice/widget", permission="maintain")
        repo = emulator.repo("alice/widget")
        emulator.create_label(repo, "patchwright")
        issue = await emulator.open_issue(
            "alice/widget", title="Greet in the README", body="Add a line `Hello` to README.md.", user="maintainer"
        )
        await emulator.label_issue("alice/widget", issue["number"], ["patchwright"], user="maintainer")
        emulator_issue = emulator.issue(repo, issue["number"])

        def status_comment() -> IssueComment | None:
            for comment_id in emulator_issue.comment_ids:
                comment = repo.comments.get(comment_id)
                if comment is not None and STATUS_MARKER in comment.body:
                    return comment
            return None

        comment = await _wait_for(status_comment, 20, "the status comment")
        seconds = time.monotonic() - started
        print(f"guide path: {seconds:.1f} s")
        assert comment.app_id == app.id

        proc = await _run(workdir, env, "tasks", "list")
        assert proc.returncode == 0, proc.stderr
        assert "alice/widget" in proc.stdout and f"#{issue['number']}" in proc.stdout, proc.stdout

        # -- step 9: patchwright doctor.
        # (Without bubblewrap, off CI, the sandbox row is a warning for PATCHWRIGHT_SANDBOX=none.)
        proc = await _run(workdir, env, "doctor")
        lines = proc.stdout.splitlines() + proc.stderr.splitlines()
        assert "Traceback" not in proc.stderr
        assert not [line for line in lines if line.startswith("✗")], "\n".join(lines)
        assert proc.returncode == 0, "\n".join(lines)
        assert not emulator.violations()
    finally:
        for proc in (setup, serve):
            if proc is not None:
                await _stop(proc)
        if drainer is not None:
            await asyncio.wait_for(drainer, 15)
        await emulator.stop()
