"""The worker's git operations (SPEC §6.2, §6.5, §6.6, §6.7).

Layout under the data dir: one bare cache repository per GitHub repository
(``repos/<owner>/<name>.git``, remote branches under ``refs/remotes/origin/*``) and one
``git worktree`` per task (``work/<task_id>``), whose git directory stays in the cache.

The agent may use git in its checkout (SPEC §6.3): the checkout's ``.git`` is not the
worktree's link to the cache but a small repository of the agent's own
(:func:`make_agent_repository`), inside the checkout and so writable in the sandbox, reading
the cache's objects through ``objects/info/alternates`` (the sandbox shows the cache's
``objects`` read-only, nothing else of it) and writing its own. The bot never runs a command
in that repository, nor reads it: its commands name its own git directory and the work tree
explicitly, so the agent's config, hooks, index, refs, objects and alternates take no part in
what the bot commits, checks and pushes — the files in the checkout do. Repositories the
agent nests in the checkout are kept from running anything too (see :meth:`Checkout._stage_all`).

Every git call is an asyncio subprocess with an explicit environment: no system or global git
config, no inherited ``GIT_*`` variables, hooks off. The installation token reaches git only
through the environment of the network commands (``GIT_CONFIG_COUNT`` with
``http.extraHeader``) — never argv, the remote URL or a file. Network commands run against the
cache repository with the remote URL given explicitly, after rewriting the cache's config, so
nothing an agent writes into git config or a checkout's ``.git`` can redirect the token.
Everything git prints is redacted before it is raised.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import hashlib
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Protocol
from urllib.parse import urlsplit

from bot.tasks.branches import (
    check_branch_name,
    check_task_id,
    split_repo,
    task_branch,
    wip_branch,
)
from .guard import ChangedFile, GuardPolicy, Violation, redact

__all__ = [
    "BranchNotFoundError",
    "Checkout",
    "GitAuth",
    "GitAuthError",
    "GitCommandError",
    "MergeOutcome",
    "PushResult",
    "UnresolvedMergeError",
    "UnstageablePathError",
    "Workspaces",
    "bot_identity",
    "task_branch",
    "wip_branch",
]

# A PATH built from constants (never from the process environment): the interpreter's
# directory first, then the usual system directories.
DEFAULT_SEARCH_PATH = os.pathsep.join(
    dict.fromkeys(
        [
            os.path.dirname(sys.executable),
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]
    )
)

REMOTE_NAME = "origin"
TRACKING_PREFIX = f"refs/remotes/{REMOTE_NAME}/"
FETCH_REFSPEC = f"+refs/heads/*:{TRACKING_PREFIX}*"
STATE_DIR = ".patchwright"
EXCLUDE_STATE_DIR = f":(exclude){STATE_DIR}"
#: What neither the bot nor the agent's own git ever stages: the signal directory, and the
#: caches agent CLIs leave in their working directory (aider's repository map).
IGNORED_SCRATCH = (f"/{STATE_DIR}/", "/.aider.tags.cache.v*/")
EXCLUDE_TEXT = "".join(f"{pattern}\n" for pattern in IGNORED_SCRATCH)
MAX_PUSH_ROUNDS = 4
NETWORK_TIMEOUT = 600.0
COMMAND_TIMEOUT = 300.0
#: git's output that may be large (diffs) is read in chunks of this size…
STREAM_CHUNK = 64 * 1024
#: …and a line longer than this reaches the scans in pieces of this size.
MAX_LINE_PIECE = 256 * 1024
#: How much of a streaming command's stderr is kept for its error message.
STDERR_KEPT = 64 * 1024
#: Files larger than this (GitHub's own limit) are not read for conflict markers.
MARKER_SCAN_LIMIT = 100 * 1024 * 1024
#: At most this many files too large to read are left out of one diff by pathspec.
MAX_EXCLUDED_PATHS = 200

# Config every git call gets with the highest precedence: no hooks (an agent may have written
# some), no credential helpers, no fsmonitor daemon.
_SAFE_CONFIG: tuple[tuple[str, str], ...] = (
    ("core.hooksPath", os.devnull),
    ("credential.helper", ""),
    ("core.fsmonitor", "false"),
)
_DIFF_OPTIONS = ("--no-color", "--no-ext-diff", "--no-textconv", "--find-renames", "--no-abbrev")
#: What the agent's repository gets of the bot's state: the index (so ``git status`` starts
#: clean, or shows the conflicts of a merge left for the agent) and a merge in progress.
_AGENT_STATE_FILES = ("index", "MERGE_HEAD", "MERGE_MSG", "MERGE_MODE", "AUTO_MERGE", "ORIG_HEAD")
_GITLINK_MODE = b"160000 "
_IN_PROGRESS = ("MERGE_HEAD", "rebase-merge", "rebase-apply", "CHERRY_PICK_HEAD", "REVERT_HEAD")
_QUIT_COMMANDS: Mapping[str, str] = MappingProxyType(
    {"MERGE_HEAD": "merge", "CHERRY_PICK_HEAD": "cherry-pick", "REVERT_HEAD": "revert"}
)
_AUTH_FAILURE = re.compile(
    r"Authentication failed|could not read (?:Username|Password)|terminal prompts disabled"
    r"|returned error: 40[13]|Invalid username or (?:token|password)",
    re.IGNORECASE,
)
_AUTH_HEADER = re.compile(r"(?i)(authorization:\s*)(?:basic|bearer|token)?\s*\S+")
_USERINFO = re.compile(r"(?i)(https?://)[^/@\s]+@")
_MARKER_LINE = re.compile(r"^(?:<{7}|>{7}|\|{7})(?: |\r*$)", re.MULTILINE)


# --------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GitAuth:
    """An installation token for git over HTTPS. Its repr never shows the token."""

    token: str

    def __post_init__(self) -> None:
        if not self.token or any(ch in self.token for ch in "\r\n\0"):
            raise ValueError("a git token must be a non-empty single line")

    def __repr__(self) -> str:
        return "GitAuth(token=<redacted>)"

    @property
    def basic(self) -> str:
        """``base64("x-access-token:<token>")``, as GitHub expects it."""
        return base64.b64encode(f"x-access-token:{self.token}".encode()).decode("ascii")

    def config(self) -> tuple[tuple[str, str], ...]:
        """The git config entries that authenticate HTTP requests."""
        return (("http.extraHeader", f"Authorization: Basic {self.basic}"),)

    def secrets(self) -> tuple[str, ...]:
        """Every form of the token that must never be shown."""
        return (self.token, self.basic, f"x-access-token:{self.token}")


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


class GitCommandError(RuntimeError):
    """A git operation failed. The message is safe to show users: secrets are redacted."""

    def __init__(
        self, message: str, *, command: str = "", returncode: int | None = None, output: str = ""
    ) -> None:
        super().__init__(message)
        self.command = command
        self.returncode = returncode
        self.output = output


class GitAuthError(GitCommandError):
    """The remote refused the token (or none was accepted)."""


class BranchNotFoundError(GitCommandError):
    """A branch the operation needs does not exist on the remote."""


class UnresolvedMergeError(GitCommandError):
    """``conclude_merge`` found conflict markers or unresolved paths."""

    def __init__(self, message: str, *, paths: Sequence[str]) -> None:
        super().__init__(message, command="commit")
        self.paths = tuple(paths)


class UnstageablePathError(GitCommandError):
    """``git add`` refused paths in the worktree (an invalid path such as ``.GIT/config``, an
    embedded repository without a commit, an unreadable file): the agent's doing, so not a
    transient failure. ``paths`` are the paths git named, in order."""

    def __init__(self, message: str, *, paths: Sequence[str], returncode: int | None, output: str) -> None:
        super().__init__(message, command="add", returncode=returncode, output=output)
        self.paths = tuple(paths)


@dataclass(frozen=True)
class PushResult:
    """The outcome of :meth:`Checkout.push`. ``rebased``: human commits that arrived meanwhile
    were integrated (``merged`` when that took a merge commit instead of a rebase)."""

    ok: bool
    sha: str | None = None
    rebased: bool = False
    error: str | None = None
    merged: bool = False
    conflicts: tuple[str, ...] = ()


@dataclass(frozen=True)
class MergeOutcome:
    """The outcome of :meth:`Checkout.merge_base`. ``up_to_date``: the base was already merged,
    no commit was made."""

    clean: bool
    sha: str | None = None
    conflicts: tuple[str, ...] = ()
    up_to_date: bool = False


@dataclass(frozen=True)
class PushRefStatus:
    """One ref line of ``git push --porcelain``."""

    flag: str
    summary: str
    reason: str

    @property
    def ok(self) -> bool:
        return self.flag in (" ", "+", "*", "=", "-")

    @property
    def remote_moved(self) -> bool:
        """Rejected because the remote ref is not what we expected (lease or fast-forward)."""
        return self.flag == "!" and self.summary.startswith("[rejected]")


# --------------------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------------------


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


def make_agent_repository(
    git_dir: Path,
    *,
    objects: Path,
    state_from: Path,
    head_ref: str,
    refs: Mapping[str, str],
    config: str,
) -> None:
    """Replace whatever is at ``git_dir`` (a worktree's ``.git`` file, an earlier agent's
    repository) with a new repository for the agent: ``HEAD`` on ``head_ref``, the loose
    ``refs``, ``config``, the shared ``objects`` as its only alternate, and a copy of the
    index and merge state found in ``state_from`` (the bot's git directory). Written directly,
    without running git: a few small files and a copy of the index."""
    _remove_tree(git_dir)
    for sub in ("objects/info", "objects/pack", "refs/heads", "refs/tags", "info"):
        (git_dir / sub).mkdir(parents=True, exist_ok=True)
    (git_dir / "objects" / "info" / "alternates").write_text(f"{objects}\n", encoding="utf-8")
    for ref, sha in refs.items():
        target = git_dir / ref
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(sha + "\n", encoding="ascii")
    (git_dir / "config").write_text(config, encoding="utf-8")
    (git_dir / "info" / "exclude").write_text(EXCLUDE_TEXT, encoding="utf-8")
    for name in _AGENT_STATE_FILES:
        with contextlib.suppress(FileNotFoundError):
            shutil.copyfile(state_from / name, git_dir / name)
    (git_dir / "HEAD").write_text(f"ref: {head_ref}\n", encoding="utf-8")  # last: now it is a repository


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


def _fingerprint(path: Path) -> str | None:
    """sha256 of a working-tree file (a symlink's target text), ``None`` when missing."""
    try:
        if path.is_symlink():
            return "link:" + os.readlink(path)
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _write_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------
# the git runner
# --------------------------------------------------------------------------------------


class GitRunner:
    """Runs git as an asyncio subprocess with an explicit environment."""

    def __init__(
        self,
        *,
        git: str,
        identity: tuple[str, str],
        search_path: str,
        extra_env: Mapping[str, str] | None,
        network_timeout: float,
        command_timeout: float,
    ) -> None:
        name, email = identity
        if extra_env and any(key.upper().startswith("GIT_") for key in extra_env):
            raise ValueError("extra_env must not set GIT_* variables")
        self.git = git
        self.network_timeout = network_timeout
        self.command_timeout = command_timeout
        self._base_env = {
            **(extra_env or {}),
            "PATH": search_path,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }

    def environment(
        self, auth: GitAuth | None, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        env = dict(self._base_env)
        if extra:
            env.update(extra)
        pairs = list(_SAFE_CONFIG) + (list(auth.config()) if auth is not None else [])
        env.update(config_env(pairs))
        return env

    async def run(
        self,
        args: Sequence[str],
        *,
        git_dir: Path | None = None,
        work_tree: Path | None = None,
        cwd: Path | None = None,
        auth: GitAuth | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        network: bool = False,
        input: bytes | None = None,
    ) -> GitResult:
        """Run ``git [--git-dir] [--work-tree] args`` (``input`` on its stdin); raise
        :class:`GitCommandError` (with redacted output) on a non-zero exit when ``check``.
        Its whole output is kept: for commands whose output the agent can make large, use
        :meth:`stream`."""
        argv = self._argv(args, git_dir, work_tree)
        timeout = self.network_timeout if network else self.command_timeout
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL if input is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=self.environment(auth, env),
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(input), timeout)
        except TimeoutError:
            await _kill(proc)
            raise GitCommandError(
                f"git {args[0]} timed out after {timeout:g} s", command=args[0]
            ) from None
        except BaseException:
            await _kill(proc)
            raise
        result = GitResult(proc.returncode or 0, out, err)
        if check and result.returncode != 0:
            raise self.error(args[0], result, auth)
        return result

    def _argv(self, args: Sequence[str], git_dir: Path | None, work_tree: Path | None) -> list[str]:
        argv = [self.git]
        if git_dir is not None:
            argv.append(f"--git-dir={git_dir}")
        if work_tree is not None:
            argv.append(f"--work-tree={work_tree}")
        argv.extend(args)
        return argv

    async def stream(
        self,
        args: Sequence[str],
        consume: Callable[[bytes], None],
        *,
        git_dir: Path | None = None,
        work_tree: Path | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Run a local git command and hand its stdout to ``consume`` in chunks of at most
        :data:`STREAM_CHUNK` bytes as it comes: memory stays bounded whatever git prints.
        Only the end of stderr is kept. Raises :class:`GitCommandError` on a non-zero exit
        or after ``timeout`` (default: the command timeout); an exception from ``consume``
        kills git and propagates."""
        argv = self._argv(args, git_dir, work_tree)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=self.environment(None, env),
            start_new_session=True,
            limit=STREAM_CHUNK,
        )
        assert proc.stdout is not None and proc.stderr is not None
        stdout, stderr = proc.stdout, proc.stderr
        err_tail = bytearray()

        async def drain_stderr() -> None:
            while data := await stderr.read(STREAM_CHUNK):
                err_tail.extend(data)
                del err_tail[:-STDERR_KEPT]

        async def pump() -> None:
            while data := await stdout.read(STREAM_CHUNK):
                consume(data)
            await proc.wait()

        limit = self.command_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                async with asyncio.TaskGroup() as group:
                    group.create_task(drain_stderr())
                    group.create_task(pump())
        except TimeoutError:
            await _kill(proc)
            raise GitCommandError(f"git {args[0]} timed out after {limit:g} s", command=args[0]) from None
        except BaseException as exc:
            await _kill(proc)
            if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                raise exc.exceptions[0] from None
            raise
        if proc.returncode:
            raise self.error(args[0], GitResult(proc.returncode, b"", bytes(err_tail)), None)

    @staticmethod
    def error(command: str, result: GitResult, auth: GitAuth | None) -> GitCommandError:
        """A :class:`GitCommandError` for a failed command, with everything redacted."""
        secrets = auth.secrets() if auth is not None else ()
        output = redact_git_output(
            (result.stderr + b"\n" + result.stdout).decode("utf-8", "replace"), secrets
        )
        detail = summarize_stderr(
            redact_git_output(result.stderr.decode("utf-8", "replace"), secrets)
        )
        if auth is not None and _AUTH_FAILURE.search(output):
            return GitAuthError(
                f"git {command}: authentication failed; the installation token was rejected or "
                f"has no access to this repository ({detail})",
                command=command,
                returncode=result.returncode,
                output=output,
            )
        return GitCommandError(
            f"git {command} failed (exit {result.returncode}): {detail or 'no output'}",
            command=command,
            returncode=result.returncode,
            output=output,
        )


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


# --------------------------------------------------------------------------------------
# workspaces
# --------------------------------------------------------------------------------------


def bot_identity(app_slug: str, bot_user_id: int) -> tuple[str, str]:
    """The commit identity GitHub shows as the App's bot: ``("<slug>[bot]",
    "<id>+<slug>[bot]@users.noreply.github.com")``."""
    return f"{app_slug}[bot]", f"{bot_user_id}+{app_slug}[bot]@users.noreply.github.com"


class Workspaces:
    """Cache clones and per-task worktrees under ``data_dir``.

    ``identity`` is the (name, email) the bot commits as (see :func:`bot_identity`);
    ``extra_env`` may add operator settings such as ``HTTPS_PROXY`` (never ``GIT_*``).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        git: str = "git",
        identity: tuple[str, str],
        search_path: str = DEFAULT_SEARCH_PATH,
        extra_env: Mapping[str, str] | None = None,
        network_timeout: float = NETWORK_TIMEOUT,
        command_timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.identity = check_identity(identity)
        self.runner = GitRunner(
            git=git,
            identity=self.identity,
            search_path=search_path,
            extra_env=extra_env,
            network_timeout=network_timeout,
            command_timeout=command_timeout,
        )
        self._locks: dict[str, asyncio.Lock] = {}

    def cache_path(self, repo: str) -> Path:
        owner, name = split_repo(repo)
        return self.data_dir / "repos" / owner / f"{name}.git"

    def worktree_path(self, task_id: str) -> Path:
        return self.data_dir / "work" / check_task_id(task_id)

    def repo_lock(self, repo: str) -> asyncio.Lock:
        """Serialises what writes shared state of one cache repository (fetch, worktrees)."""
        return self._locks.setdefault(repo.lower(), asyncio.Lock())

    async def checkout(
        self,
        *,
        repo: str,
        remote_url: str,
        auth: GitAuth,
        task_id: str,
        branch: str,
        base_branch: str,
        fresh: bool,
    ) -> Checkout:
        """Fetch the cache clone and create the task's worktree on ``branch``: new from
        ``origin/<base_branch>`` when ``fresh``, else exactly the remote branch, with a git
        repository of the agent's own as its ``.git`` (see
        :meth:`Checkout.prepare_agent_repository`). A leftover worktree of the same task is
        discarded first."""
        check_branch_name(branch)
        check_branch_name(base_branch)
        check_remote_url(remote_url)
        cache = self.cache_path(repo)
        path = self.worktree_path(task_id)
        async with self.repo_lock(repo):
            await self._prepare_cache(cache)
            await self.fetch(cache, remote_url, auth)
            await self._discard(cache, path)
            tips = await self.branch_tips(cache, [base_branch, branch])
            base_sha, remote_sha = tips.get(base_branch), tips.get(branch)
            if fresh:
                if base_sha is None:
                    raise BranchNotFoundError(
                        f"the base branch {base_branch!r} does not exist on the remote",
                        command="checkout",
                    )
                start = base_sha
            else:
                if remote_sha is None:
                    raise BranchNotFoundError(
                        f"the branch {branch!r} does not exist on the remote", command="checkout"
                    )
                start = remote_sha
            await self._discard_other_worktrees_of(cache, branch)
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            await self.runner.run(
                ["worktree", "add", "--quiet", "-B", branch, str(path), start], git_dir=cache
            )
            admin = await self._admin_dir(path)
        checkout = Checkout(
            workspaces=self,
            repo=repo,
            remote_url=remote_url,
            cache=cache,
            admin_dir=admin,
            path=path,
            branch=branch,
            base_branch=base_branch,
            start_sha=start,
            remote_sha=remote_sha,
        )
        await checkout.prepare_agent_repository(head=start, base_sha=base_sha)
        return checkout

    async def discard(self, *, repo: str, task_id: str) -> None:
        """Remove a task's worktree, if any (for cleanup without a :class:`Checkout`)."""
        cache = self.cache_path(repo)
        async with self.repo_lock(repo):
            await self._discard(cache, self.worktree_path(task_id))

    # -- shared steps ------------------------------------------------------------------------

    async def run_network(
        self, cache: Path, args: Sequence[str], auth: GitAuth, *, check: bool = True
    ) -> GitResult:
        """Run a network command against the cache repository with ``auth``, after rewriting
        its config (so no URL rewrite, proxy or helper planted there takes effect)."""
        await self._write_config(cache)
        return await self.runner.run(args, git_dir=cache, auth=auth, network=True, check=check)

    async def fetch(self, cache: Path, remote_url: str, auth: GitAuth) -> None:
        """Update ``refs/remotes/origin/*`` of the cache from ``remote_url`` (call under the
        repo lock)."""
        await self.run_network(
            cache,
            [
                "fetch",
                "--quiet",
                "--prune",
                "--no-tags",
                "--no-write-fetch-head",
                "--no-recurse-submodules",
                check_remote_url(remote_url),
                FETCH_REFSPEC,
            ],
            auth,
        )

    async def resolve(self, git_dir: Path, ref: str) -> str | None:
        """The commit ``ref`` names, or ``None``."""
        out = await self.runner.run(
            ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
            git_dir=git_dir,
            check=False,
        )
        return out.text.strip() if out.returncode == 0 else None

    async def branch_tips(self, git_dir: Path, branches: Sequence[str]) -> dict[str, str]:
        """The commit each of ``branches`` points to on the remote (as last fetched), in one
        git call; branches the remote does not have are left out."""
        refs = {tracking_ref(branch): branch for branch in branches}
        out = await self.runner.run(
            ["for-each-ref", "--format=%(objecttype) %(objectname) %(refname)", "--end-of-options", *refs],
            git_dir=git_dir,
        )
        tips = {}
        for line in out.text.splitlines():
            kind, _, rest = line.partition(" ")
            sha, _, ref = rest.partition(" ")
            if kind == "commit" and ref in refs:
                tips[refs[ref]] = sha
        return tips

    async def _admin_dir(self, path: Path) -> Path:
        """A worktree's administrative directory, as its ``.git`` file names it."""
        try:
            text = await asyncio.to_thread((path / ".git").read_text)
        except OSError:
            text = ""
        named = Path(text.removeprefix("gitdir: ").strip())
        if text.startswith("gitdir: ") and named.is_absolute():
            return named
        out = await self.runner.run(["rev-parse", "--absolute-git-dir"], cwd=path)
        return Path(out.text.strip())

    async def _prepare_cache(self, cache: Path) -> None:
        if not (cache / "HEAD").is_file():
            await asyncio.to_thread(cache.parent.mkdir, parents=True, exist_ok=True)
            await self.runner.run(["init", "--quiet", "--bare", str(cache)])
        await asyncio.to_thread(_write_file, cache / "info" / "exclude", EXCLUDE_TEXT)

    async def _write_config(self, cache: Path) -> None:
        await asyncio.to_thread(_write_file, cache / "config", cache_config_text(self.identity))

    async def _discard_other_worktrees_of(self, cache: Path, branch: str) -> None:
        """Discard worktrees (of earlier tasks of the same issue) that hold ``branch``."""
        listing = await self.runner.run(["worktree", "list", "--porcelain", "-z"], git_dir=cache)
        work_root = (self.data_dir / "work").resolve()
        for path in worktrees_on_branch(listing.stdout, f"refs/heads/{branch}"):
            if path.resolve().parent == work_root:
                await self._discard(cache, path)

    async def _discard(self, cache: Path, path: Path) -> None:
        """Delete a worktree's files, then let git forget the worktree (``git worktree
        remove`` would refuse: its ``.git`` is the agent's repository, not a link)."""
        await asyncio.to_thread(_remove_tree, path)
        if (cache / "HEAD").is_file():
            await self.runner.run(["worktree", "prune"], git_dir=cache, check=False)


# --------------------------------------------------------------------------------------
# one task's checkout
# --------------------------------------------------------------------------------------


class _Sink(Protocol):
    """What the text a file adds streams into (e.g. :class:`bot.worker.guard.FileScan`)."""

    @property
    def wants_text(self) -> bool: ...

    def feed(self, text: str) -> None: ...


class _MarkerCount:
    """Counts the conflict marker lines a file adds."""

    def __init__(self, change: ChangedFile) -> None:
        self.wants_text = not change.status.startswith("D") and (change.size or 0) <= MARKER_SCAN_LIMIT
        self._complete = 0
        self._partial = ""  # the start of the line not ended yet: only its start matters

    @property
    def markers(self) -> int:
        return self._complete + conflict_marker_lines(self._partial)

    def feed(self, text: str) -> None:
        text = self._partial + text
        cut = text.rfind("\n") + 1
        self._partial = text[cut : cut + 64]
        self._complete += conflict_marker_lines(text[:cut])


@dataclass(eq=False)
class Checkout:
    """A task's worktree. ``start_sha``: the head the attempt started from; ``remote_sha``:
    the task branch on the remote when checked out (updated by successful pushes).

    ``admin_dir`` is the bot's git directory of the worktree (in the cache); the checkout's
    own ``.git`` is the agent's repository, which the bot never uses."""

    workspaces: Workspaces = field(repr=False)
    repo: str
    remote_url: str = field(repr=False)
    cache: Path = field(repr=False)
    admin_dir: Path = field(repr=False)
    path: Path
    branch: str
    base_branch: str
    start_sha: str
    remote_sha: str | None
    _conflict_fingerprints: dict[str, str | None] = field(default_factory=dict, repr=False)

    # -- plumbing ----------------------------------------------------------------------------

    async def _git(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        input: bytes | None = None,
    ) -> GitResult:
        """Run git in the worktree. The git and work dirs are given explicitly, so a ``.git``
        file the agent rewrote is never followed."""
        return await self.workspaces.runner.run(
            args,
            git_dir=self.admin_dir,
            work_tree=self.path,
            cwd=self.path,
            env=env,
            check=check,
            input=input,
        )

    @property
    def shared_objects(self) -> Path:
        """The cache's object store: the agent's repository reads it (alternates), so the
        sandbox shows it read-only."""
        return self.cache / "objects"

    async def prepare_agent_repository(self, *, head: str, base_sha: str | None) -> None:
        """(Re)make the agent's repository at ``<checkout>/.git``: on the task branch at
        ``head``, with ``origin/<base>`` and ``origin/<branch>`` as last fetched, the bot's
        index and any merge in progress. Called before the agent runs; whatever the agent
        leaves in it afterwards is never read by the bot."""
        refs = {f"refs/heads/{self.branch}": head}
        if base_sha is not None:
            refs[tracking_ref(self.base_branch)] = base_sha
        if self.remote_sha is not None:
            refs[tracking_ref(self.branch)] = self.remote_sha
        await asyncio.to_thread(
            make_agent_repository,
            self.path / ".git",
            objects=self.shared_objects,
            state_from=self.admin_dir,
            head_ref=f"refs/heads/{self.branch}",
            refs=refs,
            config=agent_config_text(self.workspaces.identity),
        )

    def _in_progress(self) -> list[str]:
        return [name for name in _IN_PROGRESS if (self.admin_dir / name).exists()]

    def merge_in_progress(self) -> bool:
        return (self.admin_dir / "MERGE_HEAD").exists()

    async def _resolve(self, ref: str) -> str | None:
        return await self.workspaces.resolve(self.admin_dir, ref)

    async def _is_ancestor(self, ancestor: str, descendant: str) -> bool:
        out = await self._git("merge-base", "--is-ancestor", ancestor, descendant, check=False)
        return out.returncode == 0

    async def _tree(self, rev: str) -> str:
        return (await self._git("rev-parse", "--verify", f"{rev}^{{tree}}")).text.strip()

    async def _fetch(self, auth: GitAuth) -> None:
        async with self.workspaces.repo_lock(self.repo):
            await self.workspaces.fetch(self.cache, self.remote_url, auth)

    async def _unmerged_paths(self) -> list[str]:
        return parse_unmerged((await self._git("ls-files", "--unmerged", "-z")).stdout)

    @contextlib.asynccontextmanager
    async def _temp_index(self) -> AsyncIterator[dict[str, str]]:
        """An environment whose index is a throwaway copy of the worktree's index."""
        with tempfile.TemporaryDirectory(prefix="pw-index-") as tmp:
            index = Path(tmp) / "index"
            source = self.admin_dir / "index"
            if source.is_file():
                await asyncio.to_thread(shutil.copyfile, source, index)
            else:
                await self._git("read-tree", "HEAD", env={"GIT_INDEX_FILE": str(index)})
            yield {"GIT_INDEX_FILE": str(index)}

    async def _stream(
        self, args: Sequence[str], consume: Callable[[bytes], None], env: Mapping[str, str] | None = None
    ) -> None:
        """:meth:`GitRunner.stream` in the worktree (git and work dirs explicit, as in :meth:`_git`)."""
        await self.workspaces.runner.stream(
            args, consume, git_dir=self.admin_dir, work_tree=self.path, cwd=self.path, env=env
        )

    async def _stage_all(self, env: Mapping[str, str] | None = None) -> None:
        """Stage every change except under ``.patchwright/`` (ignored through info/exclude;
        unstaged again in case the repository tracks it). Raises
        :class:`UnstageablePathError` when git refuses a path the agent wrote.

        Gitlinks whose directory holds a repository (a submodule the agent checked out, a
        repository it made that an earlier commit added) are left as they are: ``git add``
        would run ``git status`` inside them, with their own config — the agent's filters."""
        nested = await self._nested_repositories(env)
        if len(nested) > MAX_EXCLUDED_PATHS:
            reasons = ["a git repository inside the checkout"] * len(nested)
            raise UnstageablePathError(
                redact(unstageable_message(nested, reasons, "")), paths=nested, returncode=None, output=""
            )
        pathspec = ["--", ":(top)", *(":(top,exclude,literal)" + path for path in nested)] if nested else []
        added = await self._git("add", "--all", *pathspec, env=env, check=False)
        if added.returncode != 0:
            stderr = added.stderr.decode("utf-8", "replace")
            paths, reasons = parse_add_failure(stderr)
            if paths or "adding files failed" in stderr:
                error = self.workspaces.runner.error("add", added, None)
                detail = summarize_stderr(redact_git_output(stderr))
                raise UnstageablePathError(
                    redact(unstageable_message(paths, reasons, detail)),
                    paths=paths,
                    returncode=added.returncode,
                    output=error.output,
                )
            raise self.workspaces.runner.error("add", added, None)
        await self._git("reset", "--quiet", "--", STATE_DIR, env=env)

    async def _nested_repositories(self, env: Mapping[str, str] | None = None) -> list[str]:
        """Gitlinks of the index (``env``'s) whose directory in the checkout has a ``.git``."""
        lister = _GitlinkLister()
        await self._stream(["ls-files", "--stage", "-z"], lister.feed, env=env)
        if not lister.paths:
            return []

        def with_git(paths: Iterable[str]) -> list[str]:
            return [path for path in paths if os.path.lexists(self.path / path / ".git")]

        return await asyncio.to_thread(with_git, dict.fromkeys(lister.paths))  # once per conflict stage

    async def _changed_files(
        self, old: str, new: str | None, env: Mapping[str, str] | None = None
    ) -> list[ChangedFile]:
        """Files changed from ``old`` to ``new`` (a commit; ``None``: the index in ``env``),
        with the size of their new content as git stored it; no content is read."""
        revs = [old, new] if new is not None else ["--cached", old]
        raw = await self._git("diff", "--raw", "-z", *_DIFF_OPTIONS, *revs, "--", env=env)
        entries = parse_raw_entries(raw.stdout)
        sizes = await self._blob_sizes(
            e.new_sha for e in entries if e.status != "D" and e.new_mode != "160000"
        )
        return [
            ChangedFile(
                path=e.path,
                status=e.status,
                old_path=e.old_path,
                size=None if e.status == "D" else sizes.get(e.new_sha),
            )
            for e in entries
        ]

    async def _blob_sizes(self, shas: Iterable[str]) -> dict[str, int]:
        """The size of each blob, from git's object database (``cat-file --batch-check``)."""
        wanted = sorted({sha for sha in shas if sha and sha.strip("0")})
        if not wanted:
            return {}
        out = await self._git(
            "cat-file",
            "--batch-check=%(objectname) %(objecttype) %(objectsize)",
            input=("\n".join(wanted) + "\n").encode("ascii"),
        )
        return parse_batch_sizes(out.stdout)

    async def _scan_added(
        self,
        old: str,
        new: str | None,
        changes: Sequence[ChangedFile],
        make_sink: Callable[[ChangedFile], _Sink],
        env: Mapping[str, str] | None = None,
    ) -> list[_Sink]:
        """Stream the text each of ``changes`` adds (every file diffed as text, so attributes
        cannot hide it) into its sink, in bounded memory. Files whose sink does not want the
        text (deleted, too large) are left out of the diff, so git does not even read them."""
        sinks = [make_sink(change) for change in changes]
        listed = [i for i, change in enumerate(changes) if not change.status.startswith("D")]
        wanted = [i for i in listed if sinks[i].wants_text]
        if not wanted:
            return sinks
        skipped = [changes[i].path for i in listed if not sinks[i].wants_text]
        if len(skipped) > MAX_EXCLUDED_PATHS:
            return await self._scan_each(old, new, changes, wanted, make_sink, env)
        revs = [old, new] if new is not None else ["--cached", old]
        pathspecs = [":(top,exclude,literal)" + path for path in skipped]
        position = -1
        decoder: codecs.IncrementalDecoder | None = None

        def on_file() -> None:
            nonlocal position, decoder
            if decoder is not None and 0 <= position < len(wanted):
                sinks[wanted[position]].feed(decoder.decode(b"", final=True))
            position += 1
            decoder = codecs.getincrementaldecoder("utf-8")("replace")

        def on_added(data: bytes) -> None:
            if decoder is not None and 0 <= position < len(wanted):
                sinks[wanted[position]].feed(decoder.decode(data))

        parser = AddedLinesParser(on_file, on_added)
        await self._stream(
            ["diff", "-p", "-U0", "--text", "--diff-filter=d", *_DIFF_OPTIONS, *revs, "--", *pathspecs],
            parser.feed,
            env=env,
        )
        parser.close()
        on_file()
        if position != len(wanted):  # never attribute added text to the wrong file
            return await self._scan_each(old, new, changes, wanted, make_sink, env)
        return sinks

    async def _scan_each(
        self,
        old: str,
        new: str | None,
        changes: Sequence[ChangedFile],
        wanted: Sequence[int],
        make_sink: Callable[[ChangedFile], _Sink],
        env: Mapping[str, str] | None,
    ) -> list[_Sink]:
        """:meth:`_scan_added` one file at a time (when git's output did not line up)."""
        sinks = [make_sink(change) for change in changes]
        revs = [old, new] if new is not None else ["--cached", old]
        for index in wanted:
            change, sink = changes[index], sinks[index]
            paths = [p for p in (change.old_path, change.path) if p is not None]
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            parser = AddedLinesParser(lambda: None, lambda data, d=decoder, s=sink: s.feed(d.decode(data)))
            await self._stream(
                [
                    "diff", "-p", "-U0", "--text", *_DIFF_OPTIONS, *revs, "--",
                    *(":(top,literal)" + p for p in paths),
                ],
                parser.feed,
                env=env,
            )
            parser.close()
            sink.feed(decoder.decode(b"", final=True))
        return sinks

    async def _marked_paths(self, old: str, new: str | None, env: Mapping[str, str] | None = None) -> list[str]:
        """Files whose added lines include merge conflict markers."""
        changes = await self._changed_files(old, new, env)
        sinks = await self._scan_added(old, new, changes, _MarkerCount, env)
        return [change.path for change, sink in zip(changes, sinks, strict=True) if sink.markers]

    # -- public API --------------------------------------------------------------------------

    async def head(self) -> str:
        return (await self._git("rev-parse", "--verify", "HEAD")).text.strip()

    async def commit_all(self, message: str) -> str | None:
        """Stage everything except ``.patchwright/`` and commit it as the bot; ``None`` when
        there is nothing to commit. Refuses while a merge is in progress (see
        :meth:`conclude_merge`)."""
        if self.merge_in_progress():
            raise GitCommandError(
                "a merge is in progress; conclude it with conclude_merge()", command="commit"
            )
        await self._stage_all()
        staged = await self._git("diff", "--cached", "--quiet", "--no-ext-diff", check=False)
        if staged.returncode == 0:
            return None
        await self._git("commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", message)
        return await self.head()

    async def changes_since(self, sha: str) -> list[ChangedFile]:
        """Files changed between ``sha`` and HEAD (committed work), with their sizes (no
        content: see :meth:`check_since` and :meth:`scan_since`)."""
        return await self._changed_files(sha, "HEAD")

    async def check_since(self, sha: str, policy: GuardPolicy) -> list[Violation]:
        """The pre-push checks (:class:`GuardPolicy`) of everything changed between ``sha``
        and HEAD. File sizes are checked from git's object sizes before any content is read;
        files over the limit are not read at all. The added text of the others streams
        through the scans: the memory used does not grow with the size of the files."""
        changes = await self._changed_files(sha, "HEAD")
        scans = await self._scan_added(sha, "HEAD", changes, policy.scanner)
        return [violation for scan in scans for violation in scan.finish()]

    async def scan_since(self, sha: str, make_sink: Callable[[ChangedFile], _Sink]) -> list[_Sink]:
        """Stream the text each file changed between ``sha`` and HEAD adds into
        ``make_sink(file)`` (an object with ``wants_text`` and ``feed(text)``)."""
        changes = await self._changed_files(sha, "HEAD")
        return await self._scan_added(sha, "HEAD", changes, make_sink)

    async def has_diff_since(self, sha: str) -> bool:
        """Whether HEAD's tree, or uncommitted work, differs from ``sha``'s tree."""
        if await self._tree("HEAD") != await self._tree(sha):
            return True
        # Not the work trees of submodules: git would run `git status` inside them, with their
        # own config (the agent may have made them), and they are not the bot's to commit.
        status = await self._git(
            "status", "--porcelain", "-z", "--untracked-files=all", "--ignore-submodules=dirty",
            "--", ".", EXCLUDE_STATE_DIR,
        )  # fmt: skip
        return bool(status.stdout.strip(b"\0"))

    async def push(self, *, expected_remote: str | None, auth: GitAuth) -> PushResult:
        """Push HEAD to the task branch with compare-and-swap against ``expected_remote``
        (``None``: the branch must not exist). When someone pushed meanwhile, fetch, rebase the
        bot's commits onto theirs (merge when the rebase conflicts) and try again. Never drops
        a remote commit. Rejections and conflicts come back as ``ok=False``; failures to talk
        to the remote raise :class:`GitCommandError`."""
        expected = expected_remote
        integrated = merged = False
        dst = f"refs/heads/{self.branch}"
        for _ in range(MAX_PUSH_ROUNDS):
            head = await self.head()
            status = await self._push(head, dst, expected, auth)
            if status is not None and status.ok:
                self.remote_sha = head
                await self._set_tracking(head)
                return PushResult(ok=True, sha=head, rebased=integrated, merged=merged)
            if status is None or not status.remote_moved:
                reason = status.summary if status is not None else "no status reported"
                return PushResult(
                    ok=False,
                    rebased=integrated,
                    merged=merged,
                    error=f"the push to {self.branch} was rejected: {reason}",
                )
            await self._fetch(auth)
            remote_now = await self._resolve(tracking_ref(self.branch))
            if remote_now is None or await self._is_ancestor(remote_now, head):
                expected = remote_now  # deleted, or nothing of theirs is missing from ours
                continue
            upstream = await self._own_commits_base(expected, head)
            outcome = await self._integrate(remote_now, upstream)
            if isinstance(outcome, PushResult):
                return outcome
            integrated = True
            merged = merged or outcome
            expected = remote_now
        return PushResult(
            ok=False,
            rebased=integrated,
            merged=merged,
            error=f"gave up after {MAX_PUSH_ROUNDS} tries: {self.branch} kept moving on the remote",
        )

    async def salvage(self, *, task_id: str, attempt: int, auth: GitAuth) -> str | None:
        """Commit whatever changed since ``start_sha`` (ending any merge or rebase in progress,
        keeping the files) to ``wip_branch(task_id, attempt)`` and force-push only that branch.
        The worktree, its index and the task branch stay as they are. ``None`` if nothing
        changed."""
        branch = wip_branch(task_id, attempt)
        for state in self._in_progress():
            await self._git(_QUIT_COMMANDS.get(state, "rebase"), "--quit", check=False)
        head = await self.head()
        async with self._temp_index() as env:
            await self._stage_all(env)
            tree = (await self._git("write-tree", env=env)).text.strip()
        if tree == await self._tree(self.start_sha):
            return None
        sha = head
        if tree != await self._tree(head):
            message = f"patchwright: unfinished work of {task_id}, attempt {attempt}"
            sha = (await self._git("commit-tree", tree, "-p", head, "-m", message)).text.strip()
        await self.workspaces.run_network(
            self.cache,
            [
                "push",
                "--porcelain",
                "--force",
                "--no-verify",
                check_remote_url(self.remote_url),
                f"{sha}:refs/heads/{branch}",
            ],
            auth,
        )
        return sha

    async def merge_base(self, *, auth: GitAuth) -> MergeOutcome:
        """Fetch and merge ``origin/<base_branch>`` into the task branch. Clean: the merge
        commit is made. Conflicts: the merge is left in progress for the agent."""
        await self._fetch(auth)
        base_sha = await self._resolve(tracking_ref(self.base_branch))
        if base_sha is None:
            raise BranchNotFoundError(
                f"the base branch {self.base_branch!r} does not exist on the remote",
                command="merge",
            )
        before = await self.head()
        result = await self._git(
            "merge",
            "--no-ff",
            "--no-edit",
            "--no-verify",
            "--no-gpg-sign",
            "-m",
            f"Merge branch '{self.base_branch}' into {self.branch}",
            base_sha,
            check=False,
        )
        if result.returncode == 0:
            after = await self.head()
            await self.prepare_agent_repository(head=after, base_sha=base_sha)
            return MergeOutcome(clean=True, sha=after, up_to_date=after == before)
        if not self.merge_in_progress():
            raise self.workspaces.runner.error("merge", result, None)
        conflicts = await self._unmerged_paths()
        self._conflict_fingerprints = {
            path: await asyncio.to_thread(_fingerprint, self.path / path) for path in conflicts
        }
        await self.prepare_agent_repository(head=before, base_sha=base_sha)  # the agent resolves it
        return MergeOutcome(clean=False, conflicts=tuple(conflicts))

    async def conclude_merge(self) -> str:
        """Commit the merge the agent resolved. Raises :class:`UnresolvedMergeError` while
        conflict markers are added or conflicted paths are untouched since the merge."""
        if not self.merge_in_progress():
            base_sha = await self._resolve(tracking_ref(self.base_branch))
            head = await self.head()
            if (
                base_sha is not None
                and await self._is_ancestor(base_sha, head)
                and not await self._is_ancestor(base_sha, self.start_sha)
            ):
                await self._refuse_markers(await self._marked_paths(self.start_sha, "HEAD"), [])
                return head  # the agent committed the merge itself
            raise GitCommandError("no merge is in progress", command="commit")
        async with self._temp_index() as env:
            await self._stage_all(env)
            marked = await self._marked_paths("HEAD", None, env=env)
        untouched = []
        for path in await self._unmerged_paths():
            if path in self._conflict_fingerprints:
                now = await asyncio.to_thread(_fingerprint, self.path / path)
                if now == self._conflict_fingerprints[path]:
                    untouched.append(path)
        await self._refuse_markers(marked, untouched)
        conflicts = list(self._conflict_fingerprints)
        message = f"Merge branch '{self.base_branch}' into {self.branch}"
        if conflicts:
            message += "\n\nConflicts resolved in:\n" + "\n".join(f"- {p}" for p in conflicts)
        await self._stage_all()
        await self._git("commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", message)
        self._conflict_fingerprints = {}
        return await self.head()

    async def remove(self) -> None:
        """Remove the worktree and its local branch."""
        async with self.workspaces.repo_lock(self.repo):
            await self.workspaces._discard(self.cache, self.path)
            await self.workspaces.runner.run(
                ["update-ref", "-d", f"refs/heads/{self.branch}"], git_dir=self.cache, check=False
            )

    # -- push internals ----------------------------------------------------------------------

    async def _push(
        self, sha: str, dst: str, expected: str | None, auth: GitAuth
    ) -> PushRefStatus | None:
        result = await self.workspaces.run_network(
            self.cache,
            [
                "push",
                "--porcelain",
                "--no-verify",
                f"--force-with-lease={dst}:{expected or ''}",
                check_remote_url(self.remote_url),
                f"{sha}:{dst}",
            ],
            auth,
            check=False,
        )
        status = parse_push_porcelain(result.stdout.decode("utf-8", "replace"), dst)
        if status is None and result.returncode != 0:
            raise self.workspaces.runner.error("push", result, auth)
        return status

    async def _set_tracking(self, sha: str) -> None:
        async with self.workspaces.repo_lock(self.repo):
            await self.workspaces.runner.run(
                ["update-ref", tracking_ref(self.branch), sha], git_dir=self.cache, check=False
            )

    async def _own_commits_base(self, expected: str | None, head: str) -> str | None:
        """Where the bot's unpushed commits start: the expected remote head, else the attempt's
        start; ``None`` when neither is an ancestor of HEAD."""
        for candidate in (expected, self.start_sha):
            if candidate and await self._is_ancestor(candidate, head):
                return candidate
        return None

    async def _integrate(self, remote_sha: str, upstream: str | None) -> bool | PushResult:
        """Put HEAD on top of ``remote_sha``: rebase the commits after ``upstream``, or merge
        when that is impossible or conflicts. Returns whether a merge was used, or a failed
        :class:`PushResult` (HEAD restored) when even the merge conflicts."""
        head = await self.head()
        if upstream is not None:
            merges = await self._git("rev-list", "--merges", "--count", f"{upstream}..{head}")
            if merges.text.strip() == "0":
                rebased = await self._git(
                    "rebase",
                    "--no-verify",
                    "--no-autostash",
                    "--onto",
                    remote_sha,
                    upstream,
                    check=False,
                )
                if rebased.returncode == 0 and await self._is_ancestor(
                    remote_sha, await self.head()
                ):
                    return False
                if self._in_progress():
                    await self._git("rebase", "--abort", check=False)
        merged = await self._git(
            "merge",
            "--no-ff",
            "--no-edit",
            "--no-verify",
            "--no-gpg-sign",
            "-m",
            f"Merge commits pushed to {self.branch} meanwhile",
            remote_sha,
            check=False,
        )
        if merged.returncode == 0:
            return True
        conflicts = await self._unmerged_paths()
        if self.merge_in_progress():
            await self._git("merge", "--abort", check=False)
        detail = (
            f"conflicting files: {', '.join(conflicts)}"
            if conflicts
            else summarize_stderr(redact_git_output(merged.stderr.decode("utf-8", "replace")))
        )
        return PushResult(
            ok=False,
            error=(
                f"commits pushed to {self.branch} meanwhile conflict with the bot's changes "
                f"({detail}); nothing was pushed"
            ),
            conflicts=tuple(conflicts),
        )

    async def _refuse_markers(self, marked: Sequence[str], untouched: Sequence[str]) -> None:
        if not marked and not untouched:
            return
        parts = []
        if marked:
            parts.append("conflict markers remain in " + ", ".join(marked))
        if untouched:
            parts.append("still unresolved: " + ", ".join(untouched))
        raise UnresolvedMergeError(
            "the merge is not resolved: " + "; ".join(parts), paths=[*marked, *untouched]
        )
