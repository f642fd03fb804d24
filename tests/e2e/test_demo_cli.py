"""``patchwright demo`` as a newcomer runs it: a subprocess, to the end (issue 6, point 1 and
acceptance criterion 1)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]


def demo_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in [k for k in env if k.startswith("PATCHWRIGHT_")]:
        del env[name]  # the demo builds its own settings; nothing of the caller's may leak in
    env["NO_COLOR"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"  # the narration's ✓ and ✗, whatever the locale
    return env


def test_the_demo_runs_to_the_end_in_well_under_two_minutes(tmp_path):
    data_dir = tmp_path / "demo"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bot", "demo", "--data-dir", str(data_dir)],
        cwd=tmp_path,
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    took = time.monotonic() - started
    out = done.stdout
    assert done.returncode == 0, f"exit {done.returncode}\n{out}\n{done.stderr}"
    assert took < 120
    for line in (
        "mona     opens issue \"slugify() keeps punctuation\" and adds the label patchwright",
        "GitHub   issues.labeled by mona → task task_",
        "worker   attempt 1 (first) started",
        "CI       ✗ tests: failure on",
        "GitHub   check_run.completed → CI failed (tests); retrying: attempt 2 of 5.",
        "the failing step's log goes into the next attempt's prompt:",
        "octocat  requests changes on PR #2",
        "Feedback from octocat: retrying as attempt 3 (not counted against the budget).",
        "bot      replied in octocat's review thread on slugkit/slug.py",
        "Merge conflict with main: resolving it as attempt 4 (not counted against the budget).",
        "git could not merge main (CHANGELOG.md conflicted), so the agent resolved it",
        "mona     merges PR #2",
        "Pull request #2 was merged.",
        "attempt  kind            outcome  head SHA  CI",
        "max_attempts 5 → 7 (feedback and conflicts are free); 3 retries left",
        "GitHub    PR #2 merged; issue #1 closed; 1 status comment, edited in place",
        "checks    0 violations of GitHub's REST description; 0 webhooks that break GitHub's payload schemas",
        "the story ended as it should.",
    ):
        assert line in out, f"{line!r} missing from the demo's output:\n{out}"
    rows = re.findall(r"^  (\d)\s+(\w+)\s+(\w+)\s+([0-9a-f]{7})\s+(\w+)", out, re.MULTILINE)
    assert [(n, kind, outcome, ci) for n, kind, outcome, _, ci in rows] == [
        ("1", "first", "pushed", "failure"),
        ("2", "ci_failure", "pushed", "success"),
        ("3", "feedback", "pushed", "success"),
        ("4", "merge_conflict", "pushed", "success"),
    ]
    assert "\x1b[" not in out  # no terminal: no progress line, no colors

    # The data stays, and the operator CLI reads it.
    assert (data_dir / "patchwright.db").is_file() and (data_dir / "patchwright.log").is_file()
    env = demo_env()
    env["PATCHWRIGHT_DATABASE_URL"] = f"sqlite:///{data_dir / 'patchwright.db'}"
    listed = subprocess.run(
        [sys.executable, "-m", "bot", "tasks", "list"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )
    assert re.search(r"octo-org/slugkit\s+#1\s+merged\s+4/7", listed.stdout), listed.stdout


def test_a_data_dir_that_holds_files_is_refused(tmp_path):
    (tmp_path / "something.txt").write_text("mine\n")
    done = subprocess.run(
        [sys.executable, "-m", "bot", "demo", "--data-dir", str(tmp_path)],
        env=demo_env(), capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "must be a new or empty directory" in done.stderr
    assert (tmp_path / "something.txt").read_text() == "mine\n"


async def test_keep_on_postgres_serves_until_ctrl_c_then_cleans_up(postgres_url):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "demo", "--keep", "--postgres", postgres_url,
        env=demo_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(120):
            while not lines or "Press Ctrl-C to stop." not in lines[-1]:
                raw = await proc.stdout.readline()
                assert raw, "the demo ended early:\n" + "".join(lines)
                lines.append(raw.decode())
        out = "".join(lines)
        assert "the story ended as it should." in out
        schema = re.search(r"\(schema (patchwright_demo_[0-9a-f]+)\)", out)
        dashboard = re.search(r"dashboard\s+(http://127\.0\.0\.1:\d+)/", out)
        assert schema and dashboard, out
        async with aiohttp.ClientSession() as session:
            async with session.get(dashboard.group(1) + "/healthz") as response:
                assert response.status == 200  # still serving after the story
            async with session.get(dashboard.group(1) + "/") as response:
                page = await response.text()
                assert response.status == 200 and "octo-org/slugkit" in page  # the dashboard shows the task
        conn = await asyncpg.connect(postgres_url)
        try:
            tables = await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1", schema.group(1)
            )
            assert tables > 0  # the store lives in the demo's own schema
            proc.send_signal(signal.SIGINT)
            rest = await asyncio.wait_for(proc.stdout.read(), 60)
            assert await proc.wait() == 0, out + rest.decode()
            gone = await conn.fetchval(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", schema.group(1)
            )
            assert gone == 0  # and it is dropped when the demo ends
        finally:
            await conn.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("runner", [["-m", "pytest", "-q", "-p", "no:cacheprovider"], ["-m", "unittest"]])
def test_the_demo_repository_is_red_until_the_ci_retry_fixes_it(tmp_path, runner):
    """Its tests run under pytest (the demo's CI when pytest is installed) and under the
    standard library's unittest (when ``pip install -e .`` brought no pytest)."""
    from bot import demo

    for path, content in demo.REPO_FILES.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    first_fix = demo.SLUG_V0  # what the fake agent's first attempt makes of it
    for old, new in demo.STORY_SCRIPT["first"][0]["replace"]["slugkit/slug.py"]:
        first_fix = first_fix.replace(old, new)
    assert first_fix != demo.SLUG_V0
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    codes = []
    for slug in (demo.SLUG_V0, first_fix, demo.SLUG_V2, demo.SLUG_V3):
        (tmp_path / "slugkit" / "slug.py").write_text(slug)
        done = subprocess.run(
            [sys.executable, *runner], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        codes.append(done.returncode)
        if done.returncode:
            assert "AssertionError: " in done.stdout + done.stderr
    assert codes == [1, 1, 0, 0]  # main, the first attempt, the CI retry, after the review


def test_the_demo_runs_its_own_agent_unsandboxed_only_where_bubblewrap_does_not_work() -> None:
    from bot.agents.sandbox import BwrapProbe
    from bot.demo import demo_sandbox

    missing = BwrapProbe("bwrap-is-not-installed-here")
    assert demo_sandbox(None, missing) == "none"
    assert demo_sandbox("bwrap", missing) == "bwrap"  # what the operator says wins
    working = BwrapProbe()
    working._available = True  # as probed on a machine where it works
    assert demo_sandbox(None, working) == "bwrap"
