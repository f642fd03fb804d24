"""`patchwright prune` and the replay refusal of `patchwright deliveries replay`, in-process on a
SQLite database in a temporary directory."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

import bot.__main__ as cli
from bot.store.base import Delivery, DeliveryState
from bot.store.factory import open_store
from bot.tasks.model import utcnow

DAY = timedelta(days=1)


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A ledger with deliveries processed 40 days ago (three done, one failed, one pending) and
    one processed now; the CLI's settings point at it."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    old = utcnow() - 40 * DAY

    async def fill() -> None:
        then = await open_store(url, clock=lambda: old)
        now = await open_store(url)
        try:
            await then.migrate()
            rows = [("old-1", DeliveryState.DONE), ("old-2", DeliveryState.DONE), ("old-3", DeliveryState.DONE),
                    ("old-failed", DeliveryState.FAILED), ("old-pending", None)]
            for delivery_id, state in rows:
                await then.record_delivery(Delivery(id=delivery_id, event="issues", action="labeled", repo="",
                                                    installation_id=1, payload=b'{"a": 1}', received_at=old))
                if state is not None:
                    await then.finish_delivery(delivery_id, state=state, outcome="handled")
            await now.record_delivery(Delivery(id="new", event="issues", action="labeled", repo="",
                                               installation_id=1, payload=b'{"a": 1}', received_at=utcnow()))
            await now.finish_delivery("new", state=DeliveryState.DONE, outcome="handled")
        finally:
            await then.close()
            await now.close()

    asyncio.run(fill())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "configure_logging", lambda *args, **kwargs: None)  # keep pytest's handlers
    monkeypatch.setenv("PATCHWRIGHT_DATABASE_URL", url)
    monkeypatch.delenv("PATCHWRIGHT_PAYLOAD_RETENTION_DAYS", raising=False)
    return url


def pruned_ids(url: str) -> set[str]:
    async def read() -> set[str]:
        store = await open_store(url)
        try:
            return {d.id for d in await store.list_deliveries(limit=100) if d.payload_pruned}
        finally:
            await store.close()

    return asyncio.run(read())


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_prune_dry_run_then_prune_then_nothing_left(db, capsys):
    assert run(capsys, "prune", "--dry-run") == (
        0, "would prune the payloads of 3 deliveries older than 30 days (dry run)\n", "")
    assert pruned_ids(db) == set()
    assert run(capsys, "prune") == (0, "pruned the payloads of 3 deliveries older than 30 days\n", "")
    assert pruned_ids(db) == {"old-1", "old-2", "old-3"}
    assert run(capsys, "prune") == (0, "pruned the payloads of 0 deliveries older than 30 days\n", "")


def test_prune_age_from_the_option_or_the_setting(db, capsys, monkeypatch):
    assert run(capsys, "prune", "--older-than-days", "50")[1] == (
        "pruned the payloads of 0 deliveries older than 50 days\n")
    monkeypatch.setenv("PATCHWRIGHT_PAYLOAD_RETENTION_DAYS", "0")
    assert run(capsys, "prune")[1] == "payload retention is off (PATCHWRIGHT_PAYLOAD_RETENTION_DAYS=0): nothing pruned\n"
    assert pruned_ids(db) == set()
    assert run(capsys, "prune", "--older-than-days", "1")[1] == (
        "pruned the payloads of 3 deliveries older than 1 day\n")
    assert pruned_ids(db) == {"old-1", "old-2", "old-3"}
    with pytest.raises(SystemExit):
        cli.main(["prune", "--older-than-days", "-3"])
    assert "0 or more" in capsys.readouterr().err


def test_replay_of_a_pruned_delivery_is_refused_in_one_line(db, capsys):
    assert run(capsys, "prune")[0] == 0
    code, out, err = run(capsys, "deliveries", "replay", "old-1")
    assert (code, out) == (1, "")
    assert err == ("patchwright: delivery old-1 cannot be replayed: its payload was pruned by the ledger "
                   "retention (PATCHWRIGHT_PAYLOAD_RETENTION_DAYS)\n")
    code, out, _ = run(capsys, "deliveries", "show", "old-1", "--payload")
    assert code == 0 and "payload       pruned " in out and '"a"' not in out
    assert run(capsys, "deliveries", "replay", "old-failed")[0] == 0  # its payload was kept
