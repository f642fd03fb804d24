"""`patchwright doctor` (issue 15): a fresh copy of `.env.example` gives a ✗ per missing setting
and a non-zero exit without a traceback; with the emulator standing in for GitHub and the
settings filled in, every check is ✓. Plus the checks one by one."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from bot.agents.sandbox import BwrapProbe
from bot.config import load_settings
from bot.doctor import (
    Mark,
    Row,
    check_agent,
    check_data_dir,
    check_key,
    check_postgres,
    check_settings,
    check_sqlite,
    exit_code,
    fail,
    ok,
    warn,
)
from bot.errors import ExitCode
from bot.sandbox.auth import generate_key_pair
from bot.sandbox.emulator import Emulator
from bot.store.factory import open_store
from tests.conftest import running_in_ci

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "doctor-test-secret"


def run_doctor(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "doctor", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def minimal_env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}


def test_a_fresh_copy_of_env_example_lists_each_missing_setting(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / ".env.example", tmp_path / ".env")
    proc = run_doctor(tmp_path, minimal_env(tmp_path))
    assert proc.returncode == ExitCode.CONFIG, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    failed = [line for line in proc.stderr.splitlines() if line.startswith("✗")]
    for variable in ("PATCHWRIGHT_APP_ID", "PATCHWRIGHT_PRIVATE_KEY", "PATCHWRIGHT_WEBHOOK_SECRET"):
        assert sum(variable in line for line in failed) >= 1, (variable, failed)
    assert "✓ settings: read from the environment and .env" in proc.stdout
    assert "- GitHub App: not checked" in proc.stdout
    # It looked without touching: no database file, no data directory.
    assert not (tmp_path / "patchwright.db").exists() and not (tmp_path / "patchwright-data").exists()


@pytest.fixture
async def github_world(tmp_path: Path, aiohttp_server):
    """The emulator with the App installed on a repository, its webhook URL at a local server,
    the key in a file, and a migrated SQLite database: everything a filled-in `.env` names."""
    private_pem, public_pem = await asyncio.to_thread(generate_key_pair)
    async def accept(request: web.Request) -> web.Response:
        return web.Response(status=202)

    receiver = web.Application()
    receiver.router.add_post("/webhook", accept)
    server = await aiohttp_server(receiver)
    emulator = Emulator(tmp_path / "github")
    await emulator.start()
    try:
        app = await emulator.create_app(
            "patchwright", slug="patchwright", public_key=public_pem, webhook_secret=SECRET,
            webhook_url=str(server.make_url("/webhook")),
        )
        await emulator.create_repo("octo-org", "widget", files={"README.md": "# widget\n"})
        await emulator.create_installation(app["id"], "octo-org", ["octo-org/widget"])
        key = tmp_path / "patchwright.private-key.pem"
        key.write_text(private_pem)
        key.chmod(0o600)
        database = f"sqlite:///{tmp_path / 'bot.db'}"
        store = await open_store(database)
        await store.migrate()
        await store.close()
        env = {
            **minimal_env(tmp_path),
            "PATCHWRIGHT_APP_ID": str(app["id"]),
            "PATCHWRIGHT_APP_SLUG": "patchwright",
            "PATCHWRIGHT_PRIVATE_KEY_PATH": str(key),
            "PATCHWRIGHT_WEBHOOK_SECRET": SECRET,
            "PATCHWRIGHT_GITHUB_URL": emulator.base_url,
            "PATCHWRIGHT_DATABASE_URL": database,
            "PATCHWRIGHT_DATA_DIR": str(tmp_path / "data"),
            "PATCHWRIGHT_AGENT": "command",
            "PATCHWRIGHT_AGENT_COMMAND": f"{sys.executable} -c pass {{prompt_file}}",
        }
        yield emulator, app, env
    finally:
        await emulator.stop()


def bubblewrap_may_fail() -> bool:
    """Off CI, a machine may have no working bubblewrap: then (only) the sandbox row may be ✗."""
    return not running_in_ci() and not BwrapProbe().available()


async def test_with_the_emulator_every_check_passes(github_world, tmp_path: Path) -> None:
    emulator, app, env = github_world
    proc = await asyncio.to_thread(run_doctor, tmp_path, env, "--reach")
    lines = proc.stdout.splitlines() + proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr
    tolerated = ("✗ sandbox:",) if bubblewrap_may_fail() else ()
    not_ok = [line for line in lines if not line.startswith("✓") and not line.startswith(tolerated)]
    assert not not_ok, "\n".join(lines)
    assert proc.returncode == (ExitCode.ENVIRONMENT if tolerated else ExitCode.OK), proc.stderr
    checks = {line.split(":")[0][2:] for line in lines}
    assert {"settings", "App id", "private key", "webhook secret", "GitHub App", "installations", "webhook URL",
            "database", "data dir", "git", "sandbox", "agent command", "agent command credentials"} <= checks
    text = proc.stdout
    assert f"'patchwright' (patchwright, id {app['id']})" in text
    assert "octo-org (selected repositories: 1: octo-org/widget)" in text
    assert "reachable from here: HTTP 405" in text  # a GET at the webhook: something answers
    assert "SQLite" in text and "migrated" in text
    assert SECRET not in proc.stdout + proc.stderr


async def test_an_app_without_a_webhook_url_and_a_slug_of_another_app(github_world, tmp_path: Path) -> None:
    emulator, app, env = github_world
    emulator.app(app["id"]).webhook_url = None
    proc = await asyncio.to_thread(run_doctor, tmp_path, {**env, "PATCHWRIGHT_SANDBOX": "none"})
    assert proc.returncode == ExitCode.GITHUB
    assert "✗ webhook URL: the App has no webhook URL" in proc.stderr
    proc = await asyncio.to_thread(
        run_doctor, tmp_path, {**env, "PATCHWRIGHT_SANDBOX": "none", "PATCHWRIGHT_APP_SLUG": "other"}
    )
    assert proc.returncode == ExitCode.GITHUB
    assert "✗ GitHub App: PATCHWRIGHT_APP_SLUG is 'other' but App" in proc.stderr
    assert "- installations: not checked" in proc.stdout


# -- the checks one by one ---------------------------------------------------------------------


def test_the_exit_code_is_the_first_failures() -> None:
    rows = [ok("a", "x"), warn("b", "y"), fail("c", "z", ExitCode.DATABASE), fail("d", "w", ExitCode.CONFIG)]
    assert exit_code(rows) == ExitCode.DATABASE
    assert exit_code([ok("a", "x"), warn("b", "y")]) == ExitCode.OK
    assert Row("c", Mark.FAIL, "z").line() == "✗ c: z"


def test_settings_rows(tmp_path: Path) -> None:
    settings, rows = check_settings({"PATCHWRIGHT_PORT": "x", "PATCHWRIGHT_AGENT": "gpt"}, None)
    assert settings is None
    assert [(r.mark, r.code) for r in rows] == [(Mark.FAIL, ExitCode.CONFIG)] * 2
    env_file = tmp_path / "x.env"
    env_file.write_text("PATCHWRIGHT_AGNET=codex\nPATCHWRIGHT_PORT=\n")
    settings, rows = check_settings({}, env_file)
    assert settings is not None and settings.port == 3000  # empty: the default
    assert rows[0].mark is Mark.OK and rows[1].mark is Mark.FAIL and "did you mean PATCHWRIGHT_AGENT?" in rows[1].text
    assert rows[1].code is ExitCode.CONFIG  # the installation check says a misspelt name is wrong


def test_a_damaged_or_foreign_key_is_one_failed_row(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    damaged = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAbroken\n-----END RSA PRIVATE KEY-----\n"
    row = check_key(load_settings({"PATCHWRIGHT_PRIVATE_KEY": damaged}, env_file=None))
    assert row.mark is Mark.FAIL and row.code == ExitCode.CONFIG and "damaged private key" in row.text
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    row = check_key(load_settings({"PATCHWRIGHT_PRIVATE_KEY": ec_pem}, env_file=None))
    assert row.mark is Mark.FAIL and "RSA" in row.text
    path = tmp_path / "app.pem"
    path.write_text(generate_key_pair()[0])
    row = check_key(load_settings({"PATCHWRIGHT_PRIVATE_KEY_PATH": str(path)}, env_file=None))
    assert row.mark is Mark.OK and "RSA 2048-bit" in row.text and str(path) in row.text


async def test_sqlite_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    assert check_sqlite(url).mark is Mark.WARN  # not created yet
    assert not (tmp_path / "bot.db").exists()
    store = await open_store(url)
    await store.migrate()
    await store.close()
    assert check_sqlite(url).mark is Mark.OK
    with sqlite3.connect(tmp_path / "bot.db") as conn:
        conn.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'future', 'x')")
    row = check_sqlite(url)
    assert row.mark is Mark.FAIL and row.code == ExitCode.DATABASE and "9999" in row.text
    (tmp_path / "junk.db").write_text("not a database " * 100)
    row = check_sqlite(f"sqlite:///{tmp_path / 'junk.db'}")
    assert row.mark is Mark.FAIL and row.code == ExitCode.DATABASE


async def test_postgres_rows(postgres_url: str) -> None:
    row = await check_postgres(postgres_url)
    assert row.mark in (Mark.OK, Mark.WARN) and row.text.startswith("PostgreSQL ")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    row = await check_postgres(f"postgresql://postgres:hunter2@127.0.0.1:{port}/test")
    assert row.mark is Mark.FAIL and row.code == ExitCode.DATABASE and "hunter2" not in row.text


def test_data_dir_rows(tmp_path: Path) -> None:
    settings = load_settings({"PATCHWRIGHT_DATA_DIR": str(tmp_path / "new" / "data")}, env_file=None)
    row = check_data_dir(settings)
    assert row.mark is Mark.OK and "not created yet" in row.text and not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    row = check_data_dir(load_settings({"PATCHWRIGHT_DATA_DIR": str(tmp_path / "file")}, env_file=None))
    assert row.mark is Mark.FAIL and row.code == ExitCode.ENVIRONMENT


def test_agent_rows_name_credentials_but_never_show_them(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cli = bin_dir / "claude"
    cli.write_text("#!/bin/sh\necho '2.1.197 (Claude Code)'\n")
    cli.chmod(0o755)
    settings = load_settings({}, env_file=None)
    rows = check_agent("claude", settings, {"PATH": str(bin_dir), "ANTHROPIC_API_KEY": "sk-ant-very-secret"})
    assert [r.mark for r in rows] == [Mark.OK, Mark.OK]
    assert "2.1.197 (Claude Code)" in rows[0].text and rows[1].text == "ANTHROPIC_API_KEY"
    assert not any("sk-ant-very-secret" in r.line() for r in rows)
    rows = check_agent("codex", settings, {"PATH": str(bin_dir)})
    assert rows[0].mark is Mark.FAIL and rows[0].code == ExitCode.ENVIRONMENT and "npm install -g @openai/codex" in rows[0].text
    assert rows[1].mark is Mark.FAIL and rows[1].code == ExitCode.CONFIG and "OPENAI_API_KEY" in rows[1].text
    rows = check_agent("codex", settings, {"PATH": str(bin_dir), "OPENAI_BASE_URL": "http://127.0.0.1:8000/v1"})
    assert rows[1].mark is Mark.WARN
    [row] = check_agent("gtp", settings, {})
    assert row.mark is Mark.FAIL and "choose one of" in row.text
    [row] = check_agent("command", settings, {"PATH": str(bin_dir)})
    assert row.mark is Mark.FAIL and "PATCHWRIGHT_AGENT_COMMAND" in row.text
