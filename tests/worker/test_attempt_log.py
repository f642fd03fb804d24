"""The attempt log's cap (issue: "Attempt logs have no size cap: 200,000 lines printed by the
agent all go to the database"): the first and last lines of the agent's output are kept, the
middle is counted in one line, the worker's own lines are always kept — over a recording store."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot.store.base import StoreError
from bot.worker.attempt_log import (
    MAX_STORED_LINE_CHARS,
    DEFAULT_HEAD_LINES,
    DEFAULT_TAIL_LINES,
    LOG_PREFIX,
    AttemptLog,
    full_log_path,
)

DROPPED = re.compile(r"… ([\d,]+) lines \(([\d,]+) bytes\) of agent output dropped")


class RecordingStore:
    """Records every ``append_logs`` batch."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int, list[str]]] = []
        self.fail = False

    async def append_logs(self, task_id: str, attempt: int, lines: list[str]) -> None:
        if self.fail:
            raise StoreError("database went away")
        self.batches.append((task_id, attempt, list(lines)))

    @property
    def lines(self) -> list[str]:
        return [line for _, _, batch in self.batches for line in batch]


def make_log(store: RecordingStore, **kwargs) -> AttemptLog:
    kwargs.setdefault("batch_lines", 50)
    kwargs.setdefault("batch_seconds", 3600.0)
    return AttemptLog(store, "task_1", 2, **kwargs)  # type: ignore[arg-type]


def dropped_counts(lines: list[str]) -> list[tuple[int, int]]:
    found = []
    for line in lines:
        match = DROPPED.search(line)
        if match:
            found.append((int(match.group(1).replace(",", "")), int(match.group(2).replace(",", ""))))
    return found


async def test_a_200000_line_flood_is_capped_and_says_how_much_was_dropped() -> None:
    store = RecordingStore()
    alog = make_log(store)
    alog.start()
    await alog.note("running the agent")
    for i in range(200_000):
        await alog.add(f"line {i}")
    await alog.note("the agent ended")
    await alog.close()

    lines = store.lines
    head, tail = DEFAULT_HEAD_LINES, DEFAULT_TAIL_LINES
    assert len(lines) == 1 + head + 1 + tail + 1
    assert lines[0] == LOG_PREFIX + "running the agent"
    assert lines[1 : 1 + head] == [f"line {i}" for i in range(head)]
    dropped = 200_000 - head - tail
    assert lines[1 + head].startswith(LOG_PREFIX)
    assert dropped_counts(lines) == [(dropped, sum(len(f"line {i}") + 1 for i in range(head, 200_000 - tail)))]
    assert "196,000 lines" in lines[1 + head]
    assert lines[2 + head : -1] == [f"line {i}" for i in range(200_000 - tail, 200_000)]
    assert lines[-1] == LOG_PREFIX + "the agent ended"
    assert (alog.agent_lines, alog.dropped_lines) == (200_000, dropped)
    assert all((task, attempt) == ("task_1", 2) for task, attempt, _ in store.batches)


async def test_a_short_log_is_kept_whole_without_a_dropped_line() -> None:
    store = RecordingStore()
    alog = make_log(store, head_lines=3, tail_lines=3)
    for i in range(6):
        await alog.add(f"l{i}")
    await alog.close()
    assert store.lines == [f"l{i}" for i in range(6)]
    assert dropped_counts(store.lines) == []


async def test_head_lines_are_stored_as_they_come_and_the_tail_at_close() -> None:
    store = RecordingStore()
    alog = make_log(store, batch_lines=1, head_lines=2, tail_lines=2)
    for i in range(10):
        await alog.add(f"l{i}")
    assert store.lines == ["l0", "l1"]  # what a live viewer sees during the flood
    await alog.close()
    assert store.lines[:2] == ["l0", "l1"] and store.lines[-2:] == ["l8", "l9"]
    assert dropped_counts(store.lines) == [(6, sum(len(f"l{i}") + 1 for i in range(2, 8)))]


async def test_worker_lines_are_never_dropped_and_keep_their_place() -> None:
    store = RecordingStore()
    alog = make_log(store, head_lines=2, tail_lines=2)
    for i in range(5):
        await alog.add(f"a{i}")
    await alog.note("cost so far $1\nsecond line")
    for i in range(5, 10):
        await alog.add(f"a{i}")
    await alog.close()
    assert store.lines == [
        "a0", "a1",
        store.lines[2], "a3", "a4",  # a2 dropped
        LOG_PREFIX + "cost so far $1", LOG_PREFIX + "second line",
        store.lines[7], "a8", "a9",  # a5..a7 dropped
    ]
    assert dropped_counts(store.lines) == [(1, 3), (3, 9)]


async def test_many_worker_lines_are_all_kept() -> None:
    store = RecordingStore()
    alog = make_log(store, head_lines=1, tail_lines=1)
    for i in range(3000):
        await alog.note(f"n{i}")
    await alog.close()
    assert store.lines == [LOG_PREFIX + f"n{i}" for i in range(3000)]


async def test_lines_are_redacted_wherever_they_are_kept() -> None:
    store = RecordingStore()
    alog = make_log(store, head_lines=1, tail_lines=1)
    alog.secrets.append("s3cr3t-value")
    for line in ("head s3cr3t-value", "middle s3cr3t-value", "tail s3cr3t-value"):
        await alog.add(line)
    await alog.note("note s3cr3t-value")
    await alog.close()
    assert store.lines and not any("s3cr3t-value" in line for line in store.lines)


async def test_zero_head_and_tail_keep_only_worker_lines() -> None:
    store = RecordingStore()
    alog = make_log(store, head_lines=0, tail_lines=0)
    for i in range(100):
        await alog.add(f"a{i}")
    await alog.note("done")
    await alog.close()
    assert dropped_counts(store.lines) == [(100, sum(len(f"a{i}") + 1 for i in range(100)))]
    assert store.lines[-1] == LOG_PREFIX + "done" and len(store.lines) == 2
    with pytest.raises(ValueError):
        make_log(store, head_lines=-1)


async def test_a_failing_store_loses_lines_but_not_the_attempt(caplog) -> None:
    store = RecordingStore()
    store.fail = True
    alog = make_log(store, batch_lines=1)
    await alog.add("x")
    await alog.close()
    assert "attempt log lines lost" in caplog.text


async def test_the_full_log_file_has_every_line_redacted(tmp_path: Path) -> None:
    settings = SimpleNamespace(data_dir=tmp_path / "data", full_agent_logs=True)
    path = full_log_path(settings, "task_1", 2)
    assert path == tmp_path / "data" / "logs" / "task_1-2.log"
    assert full_log_path(SimpleNamespace(data_dir=tmp_path, full_agent_logs=False), "task_1", 2) is None
    assert full_log_path(settings, "../evil/x", 1).parent == tmp_path / "data" / "logs"

    store = RecordingStore()
    alog = make_log(store, head_lines=2, tail_lines=2, full_log=path)
    alog.secrets.append("s3cr3t-value")
    alog.start()
    await alog.note("start")
    for i in range(5000):
        await alog.add(f"line {i} s3cr3t-value")
    await alog.close()
    text = path.read_text()
    assert "s3cr3t-value" not in text
    assert text.splitlines() == [LOG_PREFIX + "start"] + [f"line {i} [REDACTED]" for i in range(5000)]
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(store.lines) == 1 + 2 + 1 + 2  # the database still holds the capped log


async def test_a_long_line_is_stored_cut_and_says_how_much_was_cut() -> None:
    store = RecordingStore()
    log = make_log(store, head_lines=1, tail_lines=1)
    secret = "s3cr3t-value-" + "x" * 20
    log.secrets.append(secret)
    long_line = "a" * (MAX_STORED_LINE_CHARS - 5) + secret + "b" * 100_000
    await log.add(long_line)  # in the head
    await log.add(long_line)  # in the tail
    await log.close()
    stored = [line for line in store.lines if not line.startswith(LOG_PREFIX)]
    assert len(stored) == 2
    for line in stored:
        assert len(line) < MAX_STORED_LINE_CHARS + 40
        assert "s3cr3t" not in line
        assert line.endswith(" more characters]")


async def test_closing_while_the_timer_stores_a_batch_loses_no_line() -> None:
    class SlowStore(RecordingStore):
        async def append_logs(self, task_id: str, attempt: int, lines: list[str]) -> None:
            await asyncio.sleep(0.05)
            await super().append_logs(task_id, attempt, lines)

    store = SlowStore()
    log = make_log(store, batch_seconds=0.01)
    log.start()
    for n in range(5):
        await log.add(f"line {n}")
    await asyncio.sleep(0.02)  # the timer took the batch and is storing it
    await log.close()
    assert store.lines == [f"line {n}" for n in range(5)]
