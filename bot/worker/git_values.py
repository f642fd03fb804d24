"""Constants, values and errors of the worker's git operations (SPEC §6.2, §6.5, §6.6, §6.7).

The bottom layer of the git modules (see :mod:`bot.worker.git`): imports nothing of them. The
token of :class:`GitAuth` never shows in its repr, and the message of every
:class:`GitCommandError` is safe to show users (secrets are redacted before it is raised).
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "COMMAND_TIMEOUT",
    "DEFAULT_SEARCH_PATH",
    "EXCLUDE_STATE_DIR",
    "EXCLUDE_TEXT",
    "FETCH_REFSPEC",
    "IGNORED_SCRATCH",
    "MARKER_SCAN_LIMIT",
    "MAX_EXCLUDED_PATHS",
    "MAX_LINE_PIECE",
    "MAX_PUSH_ROUNDS",
    "NETWORK_TIMEOUT",
    "REMOTE_NAME",
    "STATE_DIR",
    "STDERR_KEPT",
    "STREAM_CHUNK",
    "TRACKING_PREFIX",
    "BranchNotFoundError",
    "GitAuth",
    "GitAuthError",
    "GitCommandError",
    "GitResult",
    "MergeOutcome",
    "PushRefStatus",
    "PushResult",
    "UnresolvedMergeError",
    "UnstageablePathError",
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
