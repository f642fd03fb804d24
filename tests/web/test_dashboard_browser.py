"""The dashboard in a real browser: headless Chromium renders it, runs its script, follows
the live event stream, and the dumped DOM shows the tasks (moved live) with hostile text
escaped; a screenshot checks that it paints.

Chromium comes from Debian's ``chromium`` package. Without it the test is skipped, except
under ``CI=true``, where a missing browser is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import struct
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bot.config import Settings
from bot.store.factory import open_store
from bot.tasks.model import utcnow
from bot.web.events import EventStreamOptions
from bot.web.routes import TASK_FEED_KEY, WebOptions, add_web_routes

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=3000",
)
# Streams end after a second here, so the browser's virtual clock (which waits while a request
# is open) moves on: it reconnects after retry_ms, well within the 3000 ms budget.
LIVE_OPTIONS = WebOptions(
    events=EventStreamOptions(poll_interval_s=0.05, keepalive_s=0.5, lifetime_s=1.0, retry_ms=1000)
)


def find_chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture
def chromium() -> str:
    path = find_chromium()
    if path is None:
        reason = "Chromium is not installed (Debian: apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip")
        pytest.skip(reason)
    return path


async def run_browser(binary: str, tmp_path: Path, name: str, *args: str, timeout: float = 60) -> str:
    """Run Chromium with the test flags; returns its stdout. Kills its process group on timeout."""
    home = tmp_path / f"home-{name}"
    home.mkdir()
    proc = await asyncio.create_subprocess_exec(
        binary, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / f'profile-{name}'}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home)},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise AssertionError(f"chromium did not finish within {timeout}s") from None
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def sections(dom: str) -> dict[str, str]:
    """The board's status groups: status -> the group's HTML."""
    found = re.findall(r'<section class="group" id="status-\w+" data-status="(\w+)">(.*?)</section>', dom, re.DOTALL)
    return dict(found)


@pytest.fixture
async def live_server(tmp_path: Path, seeder, admin_token):
    store = await open_store(f"sqlite:///{tmp_path / 'web.db'}")
    await store.migrate()
    seeded = await seeder(store, utcnow())
    app = web.Application()
    add_web_routes(app, store=store, settings=Settings(admin_token=admin_token), options=LIVE_OPTIONS)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield app, f"http://127.0.0.1:{port}", seeded, admin_token
    finally:
        await runner.cleanup()
        await store.close()


async def stop_when_watched(app: web.Application, base: str, task_id: str, token: str) -> int:
    """Once the page's event stream is connected, stop a task through the API."""
    feed = app[TASK_FEED_KEY]
    while feed.subscriber_count == 0:
        await asyncio.sleep(0.02)
    async with aiohttp.ClientSession() as session, session.post(
        f"{base}/api/tasks/{task_id}/stop", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        return resp.status


async def test_dashboard_renders_live_in_chromium(chromium, live_server, tmp_path):
    app, base, seeded, token = live_server
    change = asyncio.create_task(stop_when_watched(app, base, seeded.pending.id, token))
    try:
        dom = await run_browser(chromium, tmp_path, "dom", "--dump-dom", f"{base}/")
        assert await asyncio.wait_for(change, 5) == 200
    finally:
        change.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await change

    body = re.search(r"<body[^>]*>", dom)
    assert body is not None, dom[:500]
    assert 'data-live="1"' in body.group(0), body.group(0)  # the script connected to /api/events
    events = re.search(r'data-events="(\d+)"', body.group(0))
    assert events is not None and int(events.group(1)) >= 1, body.group(0)  # a live task event arrived

    groups = sections(dom)
    assert seeded.pending.id in groups.get("paused", ""), groups.keys()  # moved live from pending
    assert "pending" not in groups
    assert seeded.failed.id in groups["failed"] and "Fix the flaky parser" in groups["failed"]
    assert seeded.hostile.id in groups["review"]
    assert "$1.50" in groups["failed"] and "2/5" in groups["failed"]
    assert 'href="https://github.com/octo/widgets/pull/12"' in groups["failed"]
    assert 'href="https://github.com/octo/widgets/issues/7"' in groups["failed"]
    # The hostile title is text, not markup; its javascript: PR link is not a link.
    assert "&lt;script&gt;alert" in groups["review"]
    assert "<script>alert" not in dom
    assert "javascript:" not in dom


async def test_dashboard_screenshot(chromium, live_server, tmp_path):
    _app, base, _seeded, _token = live_server
    shot = tmp_path / "dashboard.png"
    await run_browser(chromium, tmp_path, "shot", "--window-size=1280,800", f"--screenshot={shot}", f"{base}/")
    data = shot.read_bytes()
    assert png_size(data) == (1280, 800)
    assert len(data) > 15_000  # a blank page compresses to a few kilobytes
    copy_to = os.environ.get("PATCHWRIGHT_SCREENSHOT_DIR")
    if copy_to:
        shutil.copy(shot, Path(copy_to) / "dashboard.png")
