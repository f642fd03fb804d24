"""A server killed with SIGKILL after answering 202 loses nothing: after a restart every
accepted delivery is processed, and its effects happen once (SPEC §2, §12)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp

from bot import messages
from bot.sandbox.emulator import Emulator
from bot.store.base import DeliveryState
from bot.store.factory import open_store

SECRET = "crash-test-secret"
REPO = "octo-org/crashy"
ISSUES = 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "bot", "serve"], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            assert proc.poll() is None, log.read_text()
            try:
                async with session.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("server did not start:\n" + log.read_text())


async def test_sigkill_after_202_then_restart_processes_every_delivery_once(tmp_path: Path):
    emulator = Emulator(tmp_path / "github")
    await emulator.start()
    proc: subprocess.Popen | None = None
    try:
        app = await emulator.create_app("patchwright", slug="patchwright", webhook_secret=SECRET)
        await emulator.create_repo("octo-org", "crashy", files={"README.md": "hi\n"})
        await emulator.create_installation(app["id"], "octo-org", [REPO])
        emulator.create_user("maintainer", repo=REPO, permission="write")
        key = tmp_path / "app.pem"
        key.write_text(app["private_key"])
        port = free_port()
        db = tmp_path / "bot.db"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "PATCHWRIGHT_APP_ID": str(app["id"]),
            "PATCHWRIGHT_PRIVATE_KEY_PATH": str(key),
            "PATCHWRIGHT_WEBHOOK_SECRET": SECRET,
            "PATCHWRIGHT_GITHUB_URL": emulator.base_url,
            "PATCHWRIGHT_DATABASE_URL": f"sqlite:///{db}",
            "PATCHWRIGHT_DATA_DIR": str(tmp_path / "data"),
            "PATCHWRIGHT_PORT": str(port),
            "PATCHWRIGHT_WORKERS": "0",
            # Rows the killed process had claimed are taken back after this long.
            "PATCHWRIGHT_DISPATCH_STALE_SECONDS": "1",
        }
        log = tmp_path / "server.log"
        url = f"http://127.0.0.1:{port}"
        proc = start_server(env, tmp_path, log)
        await wait_healthy(url, proc, log)
        emulator.update_app(app["id"], webhook_url=url + "/webhook")

        emulator.faults.configure({"latency": 0.3})  # slow handlers: the kill finds work in flight
        for n in range(ISSUES):
            await emulator.open_issue(REPO, title=f"issue {n}", body="do it", user="maintainer", labels=["patchwright"])
        await emulator.webhooks_idle()
        accepted = [d for d in emulator.deliveries() if d.status_code == 202]
        proc.send_signal(signal.SIGKILL)  # right after the 202s: most rows are not processed yet
        proc.wait(timeout=10)
        assert len(accepted) >= 2 * ISSUES  # opened + labeled per issue
        emulator.faults.configure({"latency": 0.0})
        store = await open_store(f"sqlite:///{db}")
        try:
            left = [r for r in await store.list_deliveries(limit=10_000) if r.state is not DeliveryState.DONE]
        finally:
            await store.close()
        assert left, "the kill came too late to test recovery"
        assert {r.id for r in left} <= {d.guid for d in accepted}

        proc = start_server(env, tmp_path, log)
        await wait_healthy(url, proc, log)
        store = await open_store(f"sqlite:///{db}")
        try:
            for _ in range(600):
                rows = await store.list_deliveries(limit=10_000)
                ids = {r.id for r in rows}
                done = all(r.state in (DeliveryState.DONE, DeliveryState.FAILED) for r in rows)
                if done and {d.guid for d in accepted} <= ids:
                    break
                await asyncio.sleep(0.05)
            rows = {r.id: r for r in await store.list_deliveries(limit=10_000)}
            for delivery in accepted:
                row = rows[delivery.guid]
                assert row.state is DeliveryState.DONE, (row.id, row.outcome)
            tasks = await store.list_tasks(limit=100)
            assert sorted(t.issue_number for t in tasks) == list(range(1, ISSUES + 1))
        finally:
            await store.close()
        await emulator.webhooks_idle()
        snapshot = (await emulator.state_snapshot())[REPO]
        for issue in snapshot["issues"]:
            status = [c for c in issue["comments_list"] if messages.STATUS_MARKER in c["body"]]
            assert len(status) == 1, issue["number"]
            assert [r["content"] for r in issue["reactions_list"]] == ["eyes"]
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        await emulator.stop()
