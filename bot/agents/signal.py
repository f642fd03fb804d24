"""The signal file (SPEC §6.3): ``.patchwright/signal.json`` in the checkout.

The agent may end its run by writing one of::

    {"status": "done", "summary": "…"}
    {"status": "questions", "questions": [{"id": "q1", "question": "…"}]}
    {"status": "error", "error": "…"}

each optionally with ``"cost_usd": 0.42``, what the run cost (for agents whose CLI reports
no cost of its own, e.g. the ``command`` preset).

:func:`read_signal` validates it and always deletes it, so it is never committed. A file
that is not valid is reported as a problem (the caller turns it into an agent error).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

SIGNAL_DIR = ".patchwright"
SIGNAL_NAME = "signal.json"
SIGNAL_PATH = f"{SIGNAL_DIR}/{SIGNAL_NAME}"
MAX_SIGNAL_BYTES = 256 * 1024


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)


class _Signal(_Lenient):
    #: What the run cost in all (USD), for agents whose CLI reports no cost of its own.
    cost_usd: float | None = Field(default=None, ge=0, le=1_000_000)


class SignalQuestion(_Lenient):
    id: str = Field(default="", max_length=100)
    question: str = Field(min_length=1, max_length=4000)


class DoneSignal(_Signal):
    status: Literal["done"]
    summary: str = Field(default="", max_length=20_000)


class QuestionsSignal(_Signal):
    status: Literal["questions"]
    questions: list[SignalQuestion] = Field(min_length=1, max_length=20)
    summary: str = Field(default="", max_length=20_000)

    @field_validator("questions")
    @classmethod
    def _number_missing_ids(cls, questions: list[SignalQuestion]) -> list[SignalQuestion]:
        used = {q.id for q in questions if q.id}
        out: list[SignalQuestion] = []
        counter = 0
        for q in questions:
            if q.id:
                out.append(q)
                continue
            counter += 1
            while f"q{counter}" in used:
                counter += 1
            used.add(f"q{counter}")
            out.append(q.model_copy(update={"id": f"q{counter}"}))
        return out


class ErrorSignal(_Signal):
    status: Literal["error"]
    error: str = Field(min_length=1, max_length=20_000)


Signal = Annotated[DoneSignal | QuestionsSignal | ErrorSignal, Field(discriminator="status")]
_SIGNAL_ADAPTER: TypeAdapter[DoneSignal | QuestionsSignal | ErrorSignal] = TypeAdapter(Signal)


@dataclass(frozen=True, slots=True)
class SignalRead:
    """The outcome of reading the signal file: a valid ``signal``, a ``problem``, or neither
    (the agent wrote no file)."""

    signal: DoneSignal | QuestionsSignal | ErrorSignal | None = None
    problem: str = ""

    @property
    def present(self) -> bool:
        return self.signal is not None or bool(self.problem)


def parse_signal(data: bytes | str) -> SignalRead:
    """Validate signal file content (pure)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            return SignalRead(problem=f"{SIGNAL_PATH} is not valid UTF-8")
    try:
        raw = json.loads(data)
    except json.JSONDecodeError as exc:
        return SignalRead(problem=f"{SIGNAL_PATH} is not valid JSON ({exc.msg} at line {exc.lineno})")
    if not isinstance(raw, dict):
        return SignalRead(problem=f"{SIGNAL_PATH} must hold a JSON object, not {type(raw).__name__}")
    try:
        return SignalRead(signal=_SIGNAL_ADAPTER.validate_python(raw))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}" for err in exc.errors()[:5]
        )
        return SignalRead(
            problem=f"{SIGNAL_PATH} is not a valid signal ({problems}); expected status done, questions or error"
        )


def _discard(path: Path) -> None:
    """Delete ``path`` without following symlinks (a directory is removed with its content)."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def clear_signal(workdir: str | os.PathLike[str]) -> None:
    """Remove a leftover signal file (call before the agent starts)."""
    read_signal(workdir)


def read_signal(workdir: str | os.PathLike[str]) -> SignalRead:
    """Read, validate and delete ``.patchwright/signal.json`` under ``workdir``.

    Never follows symlinks out of the checkout: a symlinked directory or file is removed and
    reported as a problem. The ``.patchwright`` directory is removed when left empty.
    """
    root = Path(workdir)
    directory = root / SIGNAL_DIR
    try:
        dir_mode = os.lstat(directory).st_mode
    except FileNotFoundError:
        return SignalRead()
    if not stat.S_ISDIR(dir_mode):
        _discard(directory)
        return SignalRead(problem=f"{SIGNAL_DIR} must be a directory in the checkout (it was removed)")

    path = directory / SIGNAL_NAME
    result: SignalRead
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        result = SignalRead()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            result = SignalRead(problem=f"{SIGNAL_PATH} must be a regular file, not a symlink")
        else:
            result = SignalRead(problem=f"{SIGNAL_PATH} could not be read ({exc.strerror})")
        _discard(path)
    else:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                result = SignalRead(problem=f"{SIGNAL_PATH} must be a regular file")
            else:
                data = os.read(fd, MAX_SIGNAL_BYTES + 1)
                if len(data) > MAX_SIGNAL_BYTES:
                    result = SignalRead(problem=f"{SIGNAL_PATH} is larger than {MAX_SIGNAL_BYTES} bytes")
                else:
                    result = parse_signal(data)
        finally:
            os.close(fd)
        _discard(path)
    # Left in place when not empty: the agent put other files there; the worker's diff shows them.
    with contextlib.suppress(OSError):
        os.rmdir(directory)
    return result
