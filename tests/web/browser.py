"""Launching the system Chromium for the browser tests, through Playwright.

Chromium comes from Debian's ``chromium`` package. Without it (or without the ``playwright``
package) a test using the ``chromium`` fixture is skipped, except under ``CI=true``, where a
missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

LAUNCH_TIMEOUT_MS = 30_000


def find_chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip")
    pytest.skip(reason)


@pytest.fixture
def chromium() -> str:
    """The system Chromium's path (and Playwright importable), else skip (fail under CI=true)."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        _missing("the playwright package is not installed (pip install playwright)")
    path = find_chromium()
    if path is None:
        _missing("Chromium is not installed (Debian: apt-get install -y chromium)")
    assert path is not None
    return path


@asynccontextmanager
async def launch_chromium(executable: str) -> AsyncIterator[Any]:
    """A headless Playwright ``Browser`` running the given Chromium; closed on exit."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"], timeout=LAUNCH_TIMEOUT_MS
        )
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve an aiohttp application on a free loopback port; its base URL."""
    from aiohttp import web

    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
