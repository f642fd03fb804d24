"""What `patchwright serve` and `patchwright worker` print at start-up: the database without
its password (issue #11), run in-process with a stand-in store."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

import bot.__main__ as cli
from bot.config import load_settings

PASSWORDS = ("hunter1", "hunter2", "hunter3")
URL = "postgresql://bot:hunter1@db.example:5432/pw?password=hunter2&sslpassword=hunter3&sslmode=require"


class FakeStore:
    async def migrate(self) -> list[int]:
        return []

    async def close(self) -> None:
        pass


@pytest.fixture
def fake_store(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    store = FakeStore()

    async def open_store(url: str, **kwargs) -> FakeStore:
        assert url == URL  # the real URL still reaches the store
        return store

    monkeypatch.setattr("bot.store.factory.open_store", open_store)
    return store


async def test_worker_prints_the_database_without_passwords(fake_store, monkeypatch, capsys) -> None:
    async def run_worker(*args, **kwargs) -> None:
        return None

    monkeypatch.setattr("bot.runtime.run_worker", run_worker)
    settings = load_settings({"PATCHWRIGHT_DATABASE_URL": URL}, env_file=None)
    assert await cli.worker(settings, {}) == 0
    out = capsys.readouterr().out
    assert "database postgresql://bot:***@db.example:5432/pw?password=***&sslpassword=***&sslmode=require" in out
    assert not any(p in out for p in PASSWORDS)


async def test_serve_prints_the_database_without_passwords(fake_store, monkeypatch, capsys) -> None:
    monkeypatch.setattr("bot.app.create_app", lambda settings, store, runtime: web.Application())
    settings = load_settings(
        {"PATCHWRIGHT_DATABASE_URL": URL, "PATCHWRIGHT_WEBHOOK_SECRET": "s", "PATCHWRIGHT_PORT": "0"},
        env_file=None,
    )
    serving = asyncio.ensure_future(cli.serve(settings, {}))
    out = ""
    for _ in range(200):
        await asyncio.sleep(0.01)
        out += capsys.readouterr().out
        if "database:" in out:
            break
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    assert "database: postgresql://bot:***@db.example:5432/pw?password=***" in out
    assert not any(p in out for p in PASSWORDS)


def test_a_store_error_is_one_line_without_the_password(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "configure_logging", lambda *args, **kwargs: None)  # keep pytest's handlers
    monkeypatch.setenv("PATCHWRIGHT_DATABASE_URL", "mysql://bot:hunter1@h/db?password=hunter2")
    assert cli.main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("patchwright: ") and err.count("\n") == 1
    assert "unsupported database URL" in err and not any(p in err for p in PASSWORDS)
