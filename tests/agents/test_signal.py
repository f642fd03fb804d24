"""The signal file: read, validate, always delete, never follow links out of the checkout."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bot.agents.signal import (
    MAX_SIGNAL_BYTES,
    DoneSignal,
    ErrorSignal,
    QuestionsSignal,
    clear_signal,
    parse_signal,
    read_signal,
)


def write_signal(workdir: Path, content: str | bytes) -> Path:
    path = workdir / ".patchwright" / "signal.json"
    path.parent.mkdir(exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def test_no_file_means_no_signal(tmp_path: Path) -> None:
    read = read_signal(tmp_path)
    assert read.signal is None and read.problem == "" and not read.present


def test_done_is_read_and_deleted_with_its_directory(tmp_path: Path) -> None:
    path = write_signal(tmp_path, json.dumps({"status": "done", "summary": "  Added the flag.  "}))
    read = read_signal(tmp_path)
    assert isinstance(read.signal, DoneSignal)
    assert read.signal.summary == "Added the flag."
    assert not path.exists()
    assert not (tmp_path / ".patchwright").exists()


def test_questions_get_ids_when_missing(tmp_path: Path) -> None:
    write_signal(
        tmp_path,
        json.dumps(
            {
                "status": "questions",
                "questions": [
                    {"question": "Which format?"},
                    {"id": "q1", "question": "Keep v1?"},
                    {"question": "Name?"},
                ],
                "extra": "ignored",
            }
        ),
    )
    read = read_signal(tmp_path)
    assert isinstance(read.signal, QuestionsSignal)
    assert [(q.id, q.question) for q in read.signal.questions] == [
        ("q2", "Which format?"),
        ("q1", "Keep v1?"),
        ("q3", "Name?"),
    ]


def test_error_signal(tmp_path: Path) -> None:
    write_signal(tmp_path, '{"status": "error", "error": "The API it needs does not exist."}')
    read = read_signal(tmp_path)
    assert isinstance(read.signal, ErrorSignal)
    assert read.signal.error == "The API it needs does not exist."


def test_other_files_in_the_directory_are_left_alone(tmp_path: Path) -> None:
    write_signal(tmp_path, '{"status": "done"}')
    (tmp_path / ".patchwright" / "notes.md").write_text("x")
    assert isinstance(read_signal(tmp_path).signal, DoneSignal)
    assert not (tmp_path / ".patchwright" / "signal.json").exists()
    assert (tmp_path / ".patchwright" / "notes.md").exists()


def test_malformed_files_are_problems_and_still_deleted(tmp_path: Path) -> None:
    cases = {
        "{not json": "not valid JSON",
        "[1, 2]": "must hold a JSON object",
        '{"status": "finished"}': "not a valid signal",
        '{"status": "questions", "questions": []}': "questions",
        '{"status": "error"}': "error",
        '{"summary": "no status"}': "status",
    }
    for content, expected in cases.items():
        path = write_signal(tmp_path, content)
        read = read_signal(tmp_path)
        assert read.signal is None
        assert expected in read.problem, (content, read.problem)
        assert ".patchwright/signal.json" in read.problem
        assert not path.exists()
    write_signal(tmp_path, b"\xff\xfe{}")
    assert "UTF-8" in read_signal(tmp_path).problem


def test_oversized_file(tmp_path: Path) -> None:
    write_signal(tmp_path, json.dumps({"status": "done", "summary": "x" * (MAX_SIGNAL_BYTES + 10)}))
    read = read_signal(tmp_path)
    assert "larger than" in read.problem
    assert not (tmp_path / ".patchwright").exists()


def test_symlinked_file_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text('{"status": "done", "summary": "from outside"}')
    work = tmp_path / "work"
    (work / ".patchwright").mkdir(parents=True)
    os.symlink(outside, work / ".patchwright" / "signal.json")
    read = read_signal(work)
    assert read.signal is None and "symlink" in read.problem
    assert not os.path.lexists(work / ".patchwright" / "signal.json")
    assert outside.exists()


def test_symlinked_directory_is_removed_not_entered(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "signal.json").write_text('{"status": "done"}')
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(elsewhere, work / ".patchwright")
    read = read_signal(work)
    assert read.signal is None and "must be a directory" in read.problem
    assert not os.path.lexists(work / ".patchwright")
    assert (elsewhere / "signal.json").exists()  # nothing outside the checkout was deleted


def test_directory_named_signal_json(tmp_path: Path) -> None:
    (tmp_path / ".patchwright" / "signal.json").mkdir(parents=True)
    read = read_signal(tmp_path)
    assert "regular file" in read.problem
    assert not (tmp_path / ".patchwright").exists()


def test_clear_signal_removes_a_stale_file(tmp_path: Path) -> None:
    write_signal(tmp_path, '{"status": "done"}')
    clear_signal(tmp_path)
    assert not (tmp_path / ".patchwright").exists()
    clear_signal(tmp_path)  # nothing there: no error
    assert read_signal(tmp_path).signal is None


def test_parse_signal_pure() -> None:
    assert isinstance(parse_signal('{"status":"done"}').signal, DoneSignal)
    assert parse_signal(b'{"status":"done","summary":""}').signal == DoneSignal(status="done", summary="")
    assert parse_signal("null").problem
