"""How the ``patchwright`` command fails (SPEC §9): the exit codes, and :class:`UserError`,
the one-line error that names the cause and the fix.

Every failure a user can cause by configuration or environment ends with one line on stderr
(``patchwright: <cause>: <fix>``) and one of these exit codes, never a traceback; the global
``--debug`` adds the traceback. README's "Exit codes" lists the same table.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes of ``patchwright``; :data:`EXIT_CODES` says what each means."""

    OK = 0
    FAILED = 1
    CONFIG = 2
    GITHUB = 3
    DATABASE = 4
    ENVIRONMENT = 5
    INTERRUPTED = 130


#: Each exit code and what it means (README's table, ``patchwright --help``).
EXIT_CODES: tuple[tuple[ExitCode, str], ...] = (
    (ExitCode.OK, "success (doctor: every check passed; warnings allowed)"),
    (ExitCode.FAILED, "the command ran and reports a failure: check-config found errors, a task "
     "command was refused, or an internal error (rerun with --debug for the traceback)"),
    (ExitCode.CONFIG, "usage or settings: a bad command line, a missing or invalid setting, an "
     "unknown agent preset, an unsupported database URL, a damaged private key, a missing "
     "--env-file, a bad replay file"),
    (ExitCode.GITHUB, "GitHub: unreachable, or it refused the App's id or private key, or "
     "PATCHWRIGHT_APP_SLUG names another App"),
    (ExitCode.DATABASE, "the database: unreachable, or it refused the connection or a migration"),
    (ExitCode.ENVIRONMENT, "this machine: the data directory, git, bubblewrap or an agent CLI "
     "missing or not working, a server `replay` cannot reach"),
    (ExitCode.INTERRUPTED, "interrupted (Ctrl-C)"),
)


class UserError(Exception):
    """A failure the user can fix. ``str(error)`` is one line naming the cause and the fix;
    :attr:`code` is the exit code it ends the command with."""

    code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, code: ExitCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


# -- the one-line messages shared by `serve`/`worker` start-up and `doctor` -------------------

GITHUB_UNREACHABLE = (
    "cannot reach GitHub at {url} ({error}): check PATCHWRIGHT_GITHUB_URL and this machine's "
    "network, DNS and proxy"
)
GITHUB_REFUSED_APP = (
    "GitHub at {url} refused the App's credentials ({status}: {message}): PATCHWRIGHT_APP_ID "
    "({app_id}) must be the id of the App whose private key is configured; both are on the "
    "App's settings page, where you can also generate a new key"
)
APP_SLUG_MISMATCH = (
    "PATCHWRIGHT_APP_SLUG is {configured!r} but App {app_id} is {actual!r} on GitHub: set "
    "PATCHWRIGHT_APP_SLUG={actual} (or leave it empty to read it from GitHub)"
)
GITHUB_RETRYING = "{error}; trying again in {delay:.0f} s"
NOT_GITHUB = (
    "{url} did not answer GET /app as GitHub does: set PATCHWRIGHT_GITHUB_URL to "
    "https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server"
)
DATABASE_FAILED = "{error}: check PATCHWRIGHT_DATABASE_URL and that the database it names is up"
ENV_FILE_MISSING = (
    "--env-file {path}: no such file: create it (cp .env.example {path}) or leave out --env-file "
    "to read ./.env when it exists"
)
OS_FAILED = "{where}{error}: check the path and that this user may read and write it"
INTERNAL_ERROR = (
    "internal error: {kind}: {error} (rerun with --debug for the traceback, and please report it)"
)
REPLAY_FILE_UNREADABLE = "cannot read {path}: {reason}: pass the path of a webhook payload file"
REPLAY_NOT_JSON = (
    "{path} is not JSON ({error}): pass a webhook payload file, e.g. one copied from the App's "
    "Advanced → Recent Deliveries page"
)
REPLAY_UNREACHABLE = (
    "cannot reach {url} ({error}): start `patchwright serve` there, or pass the server's webhook "
    "URL with --url"
)


def one_line(text: str) -> str:
    """``text`` on one line: line breaks and runs of spaces folded (errors from libraries
    sometimes carry several lines)."""
    return " ".join(text.split())


def exit_code_table() -> str:
    """The exit codes as ``code  meaning`` lines (for ``--help``)."""
    return "\n".join(f"  {int(code):<3} {meaning}" for code, meaning in EXIT_CODES)
