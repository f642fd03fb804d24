"""Pure helpers and parsers of the worker's git operations: no I/O, no processes.

Config given to git through the environment (:func:`config_env`), the redaction of what git
prints (:func:`redact_git_output`), the checks of remote URLs and identities, the config
texts of the cache and agent repositories, and parsers of git's output — some of them
streaming (:class:`AddedLinesParser`, :class:`_GitlinkLister`), holding a bounded amount of
it whatever git prints.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .git_values import MAX_LINE_PIECE, TRACKING_PREFIX, PushRefStatus
from .guard import redact

__all__ = [
    "AddedLinesParser",
    "DiffEntry",
    "agent_config_text",
    "cache_config_text",
    "check_identity",
    "check_remote_url",
    "config_env",
    "conflict_marker_lines",
    "parse_add_failure",
    "parse_batch_sizes",
    "parse_push_porcelain",
    "parse_raw_diff",
    "parse_raw_entries",
    "parse_unmerged",
    "redact_git_output",
    "show_path",
    "summarize_stderr",
    "tracking_ref",
    "unstageable_message",
    "worktrees_on_branch",
]

_GITLINK_MODE = b"160000 "
_AUTH_HEADER = re.compile(r"(?i)(authorization:\s*)(?:basic|bearer|token)?\s*\S+")
_USERINFO = re.compile(r"(?i)(https?://)[^/@\s]+@")
_MARKER_LINE = re.compile(r"^(?:<{7}|>{7}|\|{7})(?: |\r*$)", re.MULTILINE)


def config_env(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Environment variables that give git the config ``pairs`` (like ``-c``, but not in argv)."""
    env = {"GIT_CONFIG_COUNT": str(len(pairs))}
    for i, (key, value) in enumerate(pairs):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def redact_git_output(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secrets, authorization headers, credentials in URLs or
    anything that looks like a token."""
    text = redact(text, secrets)
    text = _AUTH_HEADER.sub(r"\1[REDACTED]", text)
    return _USERINFO.sub(r"\1[REDACTED]@", text)


def summarize_stderr(text: str, limit: int = 800) -> str:
    """The lines of git's stderr worth showing: ``fatal:``/``error:`` lines, else the last few."""
    lines = [line.strip() for line in text.replace("\r", "\n").split("\n") if line.strip()]
    important = [line for line in lines if line.lower().startswith(("fatal:", "error:", "remote:"))]
    chosen = important or lines[-5:]
    summary = "; ".join(chosen)
    return summary if len(summary) <= limit else summary[: limit - 1] + "…"


def check_remote_url(url: str) -> str:
    """Return ``url`` when it is an http(s) or file URL without credentials in it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "file") or url.startswith("-"):
        raise ValueError("the remote URL must be an http(s) or file URL")
    if "@" in parts.netloc:
        raise ValueError("the remote URL must not contain credentials")
    if any(ch in url for ch in "\r\n\0 "):
        raise ValueError("the remote URL contains invalid characters")
    return url


def check_identity(identity: tuple[str, str]) -> tuple[str, str]:
    name, email = identity
    for value in (name, email):
        if not value or any(ch in value for ch in "<>\r\n\0"):
            raise ValueError(f"invalid commit identity: {identity!r}")
    return name, email


def cache_config_text(identity: tuple[str, str]) -> str:
    """The complete config of a cache repository (rewritten before network commands)."""
    name, email = (v.replace("\\", "\\\\").replace('"', '\\"') for v in identity)
    return (
        "[core]\n"
        "\trepositoryformatversion = 0\n"
        "\tfilemode = true\n"
        "\tbare = true\n"
        "\tlogallrefupdates = false\n"
        "[gc]\n"
        "\tautoDetach = false\n"
        "[user]\n"
        f'\tname = "{name}"\n'
        f'\temail = "{email}"\n'
    )


def agent_config_text(identity: tuple[str, str]) -> str:
    """The config of an agent's repository: a plain non-bare repository, committing as the bot
    (the agent's commits never leave the checkout: the bot commits the files itself)."""
    name, email = (v.replace("\\", "\\\\").replace('"', '\\"') for v in identity)
    return (
        "[core]\n"
        "\trepositoryformatversion = 0\n"
        "\tfilemode = true\n"
        "\tbare = false\n"
        "\tlogallrefupdates = true\n"
        "[user]\n"
        f'\tname = "{name}"\n'
        f'\temail = "{email}"\n'
    )


class _GitlinkLister:
    """Reads ``git ls-files --stage -z`` as it streams and keeps the paths of gitlinks (mode
    160000); holds one record at a time."""

    def __init__(self) -> None:
        self.paths: list[str] = []  # as the file system names them (surrogate escapes kept)
        self._partial = b""
        self._overlong = False  # inside a record longer than any path: not one to keep

    def feed(self, chunk: bytes) -> None:
        records = (self._partial + chunk).split(b"\0")
        self._partial = records.pop()
        for record in records:
            if self._overlong:
                self._overlong = False
            elif record.startswith(_GITLINK_MODE):
                _, tab, path = record.partition(b"\t")
                if tab:
                    self.paths.append(path.decode("utf-8", "surrogateescape"))
        if len(self._partial) > MAX_LINE_PIECE:
            self._partial, self._overlong = b"", True


def tracking_ref(branch: str) -> str:
    return TRACKING_PREFIX + branch


def parse_push_porcelain(text: str, dst_ref: str) -> PushRefStatus | None:
    """The status of ``dst_ref`` in ``git push --porcelain`` output, if reported."""
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not parts[1].endswith(":" + dst_ref):
            continue
        summary = parts[2]
        reason = ""
        match = re.search(r"\(([^()]*)\)\s*$", summary)
        if match:
            reason = match.group(1)
        return PushRefStatus(flag=parts[0][:1], summary=summary, reason=reason)
    return None


@dataclass(frozen=True)
class DiffEntry:
    """One line of ``git diff --raw``: status letter, paths, and the new side's mode and
    object id (zeros for a deletion)."""

    status: str
    path: str
    old_path: str | None = None
    new_mode: str = ""
    new_sha: str = ""


def parse_raw_entries(raw: bytes) -> list[DiffEntry]:
    """``git diff --raw -z --no-abbrev`` → its entries, in git's order."""
    fields = raw.decode("utf-8", "surrogateescape").split("\0")
    entries: list[DiffEntry] = []
    i = 0
    while i < len(fields):
        meta = fields[i]
        if not meta.startswith(":"):
            i += 1
            continue
        parts = meta[1:].split(" ")
        letter = parts[-1][:1]
        new_mode = parts[1] if len(parts) >= 5 else ""
        new_sha = parts[3] if len(parts) >= 5 else ""
        if letter in ("R", "C") and i + 2 < len(fields):
            entries.append(
                DiffEntry(letter, _decode_path(fields[i + 2]), _decode_path(fields[i + 1]), new_mode, new_sha)
            )
            i += 3
        elif i + 1 < len(fields):
            entries.append(DiffEntry(letter, _decode_path(fields[i + 1]), None, new_mode, new_sha))
            i += 2
        else:
            break
    return entries


def parse_raw_diff(raw: bytes) -> list[tuple[str, str | None, str]]:
    """``git diff --raw -z`` → (status letter, old path for renames/copies, path)."""
    return [(e.status, e.old_path, e.path) for e in parse_raw_entries(raw)]


def parse_batch_sizes(raw: bytes) -> dict[str, int]:
    """``git cat-file --batch-check='%(objectname) %(objecttype) %(objectsize)'`` → the size
    of each blob (missing objects and other types left out)."""
    sizes: dict[str, int] = {}
    for line in raw.decode("ascii", "replace").splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[1] == "blob" and parts[2].isdigit():
            sizes[parts[0]] = int(parts[2])
    return sizes


_DIFF_HEADER = b"diff --git "
_PLUS = ord("+")
# For each kind of hunk line: the end of a run of such lines (a newline not followed by one).
_RUN_END = {c: re.compile(rb"\n(?!" + re.escape(bytes([c])) + rb")") for c in b"+- \\"}


class AddedLinesParser:
    """Reads ``git diff -p`` output as it streams and hands on what each file adds.

    ``on_file()`` is called at each file's ``diff --git`` header, ``on_added(data)`` with
    added lines of the current file: without their ``+``, each ending in ``\\n``, many lines
    at a time; a line longer than ``max_piece`` arrives in pieces. Holds at most the last
    chunk fed and ``max_piece`` bytes, whatever the size of a file or a line."""

    def __init__(
        self,
        on_file: Callable[[], None],
        on_added: Callable[[bytes], None],
        *,
        max_piece: int = MAX_LINE_PIECE,
    ) -> None:
        self._on_file = on_file
        self._on_added = on_added
        self._max_piece = max_piece
        self._buf = b""
        self._in_hunks = False
        self._rest_of_line: bool | None = None  # inside a long line: whether it is added text

    def feed(self, chunk: bytes) -> None:
        self._buf = self._buf + chunk if self._buf else bytes(chunk)
        self._parse(final=False)

    def close(self) -> None:
        self._parse(final=True)
        self._buf = b""

    def _parse(self, *, final: bool) -> None:
        buf, pos, n = self._buf, 0, len(self._buf)
        while pos < n:
            if self._rest_of_line is not None:
                newline = buf.find(b"\n", pos)
                end = n if newline == -1 else newline + 1
                if self._rest_of_line:
                    self._on_added(buf[pos:end])
                pos = end
                if newline != -1:
                    self._rest_of_line = None
                continue
            newline = buf.find(b"\n", pos)
            if newline == -1 and not final and n - pos <= self._max_piece:
                break  # wait for the rest of the line
            first = buf[pos]
            if self._in_hunks and first in _RUN_END:
                pos = self._run(buf, pos, first, final)
                continue
            if buf.startswith(_DIFF_HEADER, pos):
                self._on_file()
                self._in_hunks = False
            elif buf.startswith(b"@@", pos):
                self._in_hunks = True
            if newline == -1:
                self._rest_of_line = None if final else False
                pos = n
            else:
                pos = newline + 1
        self._buf = buf[pos:]

    def _run(self, buf: bytes, pos: int, first: int, final: bool) -> int:
        """Consume the lines from ``pos`` that start with ``first``; returns the new position."""
        n = len(buf)
        match = _RUN_END[first].search(buf, pos)
        if match is not None:
            end, after = match.start(), match.start() + 1
        else:
            last = buf.rfind(b"\n", pos)
            if last == -1:  # one unfinished line, long (or the end of the output)
                if first == _PLUS:
                    self._on_added(buf[pos + 1 : n])
                self._rest_of_line = None if final else first == _PLUS
                return n
            end, after = last, last + 1
        if first == _PLUS:
            self._on_added(buf[pos + 1 : end].replace(b"\n+", b"\n") + b"\n")
        return after


_ADD_FAILURES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^error: invalid path '(.*)'$"), "invalid path"),
    (re.compile(r"^error: '(.*)' does not have a commit checked out$"), "a git repository without a commit"),
    (re.compile(r"^error: open\(\"(.*)\"\): (.*)$"), ""),
    (re.compile(r"^error: readlink\(\"(.*)\"\): (.*)$"), ""),
    (re.compile(r"^error: (.*): can only add regular files, symbolic links or git-directories$"), "not a regular file"),
    (re.compile(r"^error: (.*): failed to insert into database$"), ""),
    (re.compile(r"^error: unable to index file '(.*)'$"), ""),
    (re.compile(r"^error: unable to add '(.*)' to index$"), ""),
)


def parse_add_failure(stderr: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The paths ``git add`` refused, in order, and why (git's words; "" when it did not say)."""
    reasons: dict[str, str] = {}
    for line in stderr.splitlines():
        line = line.rstrip("\r")
        for pattern, reason in _ADD_FAILURES:
            match = pattern.match(line)
            if match:
                path = match.group(1)
                said = reason or (match.group(2) if match.lastindex and match.lastindex >= 2 else "")
                if not reasons.get(path):
                    reasons[path] = said
                break
    return tuple(reasons), tuple(reasons.values())


def show_path(path: str, limit: int = 200) -> str:
    """A path an agent chose, safe to print on one line: control characters escaped, long
    paths shortened."""
    shown = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in path)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def unstageable_message(paths: Sequence[str], reasons: Sequence[str], detail: str) -> str:
    """``git refuses to add .GIT/config (invalid path)`` (one line)."""
    if not paths:
        return f"git refuses to add the agent's files ({detail or 'no reason given'})"
    named = [
        show_path(path) + (f" ({reason})" if reason else "") for path, reason in zip(paths, reasons, strict=True)
    ]
    shown = ", ".join(named[:5]) + (f" and {len(named) - 5} more" if len(named) > 5 else "")
    return f"git refuses to add {shown}"


def conflict_marker_lines(text: str) -> int:
    """How many lines of ``text`` are merge conflict markers (``<<<<<<<``, ``|||||||``,
    ``>>>>>>>``; a bare ``=======`` alone is too common in prose to count)."""
    return sum(1 for _ in _MARKER_LINE.finditer(text))


def parse_unmerged(raw: bytes) -> list[str]:
    """``git ls-files --unmerged -z`` → the unmerged paths, in order, once each."""
    paths: dict[str, None] = {}
    for record in raw.decode("utf-8", "surrogateescape").split("\0"):
        _, tab, path = record.partition("\t")
        if tab:
            paths[_decode_path(path)] = None
    return list(paths)


def worktrees_on_branch(raw: bytes, ref: str) -> list[Path]:
    """``git worktree list --porcelain -z`` → the worktrees that have ``ref`` checked out."""
    found = []
    path: str | None = None
    for attr in raw.decode("utf-8", "surrogateescape").split("\0"):
        if attr.startswith("worktree "):
            path = attr.removeprefix("worktree ")
        elif attr == f"branch {ref}" and path is not None:
            found.append(Path(path))
    return found


def _decode_path(path: str) -> str:
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
