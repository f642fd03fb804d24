"""The SQLite ledger's writer process (bot/store/ledger_writer.py).

The store contract as a whole also runs with it: the ``sqlite-writer-process`` cases of the
shared ``store`` fixture. Here: its wire format, and what only a process can do (die, be
stopped, outlive its web process, fail to start).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from datetime import UTC, datetime

import pytest

from bot.store.base import Delivery, StoreError
from bot.store.factory import open_store, parse_sqlite_url
from bot.store.ledger_writer import WRITER_EXITED, FrameReader, LedgerWriterProcess, encode_frame
from bot.store.sqlite import SQLiteStore
from bot.store.sqlite_ledger import CheckpointPolicy

RECEIVED = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def delivery(delivery_id: str) -> Delivery:
    return Delivery(
        id=delivery_id,
        event="issues",
        action="labeled",
        repo="octo/widgets",
        installation_id=7,
        payload=b'{"action": "labeled", "padding": "' + b"x" * 2000 + b'"}',
        received_at=RECEIVED,
    )


def ledger_ids(path: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM deliveries ORDER BY seq")]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether ``pid`` is gone (reaped, or a zombie nobody waits for) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.fixture
async def writer_store(tmp_path):
    store = await SQLiteStore.open(str(tmp_path / "ledger.db"), ledger_writer="process")
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


# -- the wire format ----------------------------------------------------------------------------


def test_frames_split_anywhere_read_back_whole():
    values = [[[0, ["a", None, 7, b"\x00\xffpayload"]]], ["ready"], ["batch", 0, 1, [True], 1, True, None]]
    stream = b"".join(encode_frame(value) for value in values)

    whole = FrameReader().feed(stream)
    reader, piecewise = FrameReader(), []
    for i in range(len(stream)):
        piecewise += reader.feed(stream[i : i + 1])

    assert whole == piecewise == values
    assert FrameReader().feed(stream[:-1]) == values[:-1]  # a partial frame waits


# -- the store with a writer process ------------------------------------------------------------


async def test_every_id_is_recorded_once_and_readable_when_its_answer_comes(writer_store):
    ids = [f"delivery-{n}" for n in range(10)]
    answers = await asyncio.gather(*(writer_store.record_delivery(delivery(i)) for i in ids * 5))

    assert [answers[n :: len(ids)].count(True) for n in range(len(ids))] == [1] * len(ids)
    assert answers[: len(ids)] == [True] * len(ids)  # the first copy of each id wins
    assert sorted(ledger_ids(writer_store.path)) == sorted(ids)  # another connection sees them
    stats = writer_store.ledger_stats()
    assert stats["rows"] == 50 and stats["starts"] == 1
    assert stats["wal_syncs"] == stats["batches"] >= 1  # each batch answered after a WAL sync
    stored = await writer_store.get_delivery("delivery-3")
    assert stored is not None and stored.payload == delivery("delivery-3").payload


async def test_a_dead_writer_fails_the_deliveries_it_held_and_the_next_one_starts_a_new_writer(writer_store):
    ledger = writer_store._ledger
    assert isinstance(ledger, LedgerWriterProcess)
    first_pid = ledger.pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGSTOP)  # it receives the row but never commits it
    try:
        held = asyncio.ensure_future(writer_store.record_delivery(delivery("held")))
        await asyncio.sleep(0.1)
        assert not held.done()
    finally:
        os.kill(first_pid, signal.SIGKILL)

    with pytest.raises(StoreError, match=WRITER_EXITED):
        await asyncio.wait_for(held, 10)
    assert await writer_store.record_delivery(delivery("after")) is True
    assert ledger.pid not in (None, first_pid)
    assert writer_store.ledger_stats()["starts"] == 2
    assert ledger_ids(writer_store.path) == ["after"]
    # redelivered after the 503, the held delivery is recorded once
    assert await writer_store.record_delivery(delivery("held")) is True


async def test_close_commits_what_was_queued_then_ends_the_writer(tmp_path):
    path = str(tmp_path / "ledger.db")
    store = await SQLiteStore.open(path, ledger_writer="process")
    await store.migrate()
    pid = store._ledger.pid
    queued = [asyncio.ensure_future(store.record_delivery(delivery(f"queued-{n}"))) for n in range(20)]
    await asyncio.sleep(0)  # queued, not yet answered

    await store.close()

    assert [task.result() for task in queued] == [True] * 20
    assert len(ledger_ids(path)) == 20
    assert await gone(pid)
    with pytest.raises(StoreError, match="closed"):
        await store.record_delivery(delivery("late"))


async def test_a_writer_that_cannot_open_the_ledger_says_why_and_is_not_restarted_at_once(tmp_path):
    writer = LedgerWriterProcess(
        str(tmp_path / "missing" / "ledger.db"),
        synchronous="full",
        busy_timeout=1.0,
        checkpoint=CheckpointPolicy(),
        on_committed=lambda bumps: None,
    )
    try:
        with pytest.raises(StoreError, match="did not start.*unable to open database file"):
            await writer.start()
        started = time.monotonic()
        with pytest.raises(StoreError, match="unable to open database file"):
            await writer.submit(["x"])
        assert time.monotonic() - started < 0.5  # failed at once: no second process
        assert writer.ledger_stats()["starts"] == 0 and writer.pid is None
    finally:
        await writer.close()


WEB_PROCESS = """
import asyncio, sys
from datetime import UTC, datetime
from bot.store.base import Delivery
from bot.store.sqlite import SQLiteStore

async def main():
    store = await SQLiteStore.open(sys.argv[1], ledger_writer="process")
    await store.migrate()
    await store.record_delivery(Delivery(id="one", event="ping", action="", repo="", installation_id=None,
                                         payload=b"{}", received_at=datetime.now(UTC)))
    print(store._ledger.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_the_writer_ends_when_its_web_process_is_killed(tmp_path):
    path = str(tmp_path / "ledger.db")
    web = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WEB_PROCESS, path, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert web.stdout is not None
        line = await asyncio.wait_for(web.stdout.readline(), 30)
        writer_pid = int(line)
        assert alive(writer_pid)
    finally:
        web.kill()
        await web.wait()

    assert await gone(writer_pid)
    assert ledger_ids(path) == ["one"]


# -- choosing the writer ------------------------------------------------------------------------


async def test_the_url_option_chooses_the_writer_and_wins_over_the_callers_default(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert parse_sqlite_url(url + "?ledger_writer=PROCESS")[1] == {"ledger_writer": "process"}
    with pytest.raises(StoreError, match="ledger_writer must be one of"):
        await open_store(url + "?ledger_writer=fork")

    for target, default, expected in [
        (url, None, "thread"),
        (url, "process", "process"),
        (url + "?ledger_writer=thread", "process", "thread"),
    ]:
        store = await open_store(target, ledger_writer=default)
        try:
            kind = "process" if isinstance(store._ledger, LedgerWriterProcess) else "thread"
            assert kind == expected, target
        finally:
            await store.close()


async def test_a_batch_the_writer_cannot_commit_fails_its_senders_and_the_writer_goes_on(writer_store):
    from bot.store import rows
    from bot.store.sqlite import encode_time

    ledger = writer_store._ledger
    assert isinstance(ledger, LedgerWriterProcess)
    bad = rows.delivery_params(delivery("bad"), encode_time)
    bad[rows.DELIVERY_COLUMNS.index("state")] = "exploded"  # refused by the table's CHECK

    with pytest.raises(StoreError, match="CHECK constraint failed"):
        await ledger.submit(bad)
    assert await writer_store.record_delivery(delivery("good")) is True
    assert ledger_ids(writer_store.path) == ["good"]
    assert writer_store.ledger_stats()["starts"] == 1


async def test_the_writer_gets_no_secret_from_the_servers_environment(writer_store):
    ledger = writer_store._ledger
    assert isinstance(ledger, LedgerWriterProcess)
    with open(f"/proc/{ledger.pid}/environ", "rb") as environ:
        names = {entry.split(b"=", 1)[0].decode() for entry in environ.read().split(b"\0") if entry}
    assert "PYTHONPATH" in names
    assert names <= {"PATH", "LD_LIBRARY_PATH", "PYTHONHOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH"}


def writers_of(path: str) -> list[int]:
    """Live (not zombie) ledger writer processes for the database at ``path``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"bot.store.ledger_writer" in b" ".join(argv) and path.encode() in argv and state != "Z":
            found.append(int(entry))
    return found


async def test_closing_while_a_new_writer_starts_leaves_no_writer_behind(tmp_path):
    path = str(tmp_path / "ledger.db")
    store = await SQLiteStore.open(path, ledger_writer="process")
    await store.migrate()
    first = store._ledger.pid
    os.kill(first, signal.SIGKILL)
    assert await gone(first)
    await asyncio.sleep(0.05)  # the server notices the closed socket

    restarting = asyncio.ensure_future(store.record_delivery(delivery("during-restart")))
    await asyncio.sleep(0)  # the new writer is starting
    await store.close()

    assert await restarting is True  # sent before the close, so committed and answered
    assert ledger_ids(path) == ["during-restart"]
    assert writers_of(path) == []


def test_the_writer_environment_keeps_only_what_starting_python_needs():
    from bot.store.ledger_writer import writer_environment

    server = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "TMPDIR": "/var/tmp",
        "PATCHWRIGHT_WEBHOOK_SECRET": "never",
        "ANTHROPIC_API_KEY": "never",
        "HOME": "/root",
    }
    env = writer_environment(server)
    assert env["PATH"] == "/usr/bin" and env["LANG"] == "C.UTF-8" and env["TMPDIR"] == "/var/tmp"
    assert set(env) <= {"PATH", "LANG", "TMPDIR", "PYTHONPATH"}
    assert set(writer_environment({})) == {"PYTHONPATH"}
