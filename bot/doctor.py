"""``patchwright doctor``: the preflight of what ``serve`` and ``worker`` need (SPEC §9).

Each check is a function that looks at one thing and returns :class:`Row` values — a mark
(✓ fine, ✗ broken, ! a warning, - not checked because something it needs is broken) and one
line saying what was found or, for ✗ and !, the cause and what to do. Credentials show by
name only, never their values. :func:`run_doctor` runs them in order and prints a line per
row (✓ and - on stdout, ✗ and ! on stderr); the exit code is the first ✗'s
(:class:`bot.errors.ExitCode`), 0 when there is none.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from bot import errors
from bot.config import (
    AGENT_PRESETS,
    ConfigError,
    Settings,
    agent_environ,
    check_private_key,
    did_you_mean,
    key_variable,
    load_settings,
    unknown_settings,
)
from bot.errors import ExitCode, UserError
from bot.logs import configure_logging, redact_url, scrub_url_secrets

# -- what the rows say -------------------------------------------------------------------

SETTINGS_READ = "read from {sources}"
KEY_OK = "RSA {bits}-bit, from {variable}"
SECRET_SET = "set (GitHub signs every delivery with it)"
NEEDS = "not checked: needs {what}"
APP_OK = "{name!r} ({slug}, id {id}) on {url}"
INSTALLED_NOWHERE = (
    "the App is installed nowhere yet: install it on your repositories at {url}/installations/new"
)
INSTALLATIONS_OK = "{count} — {accounts}"
INSTALLATION_SUSPENDED = "{account} suspended the App: unsuspend it in that account's settings (Applications)"
INSTALLATIONS_FAILED = "cannot list the App's installations ({error}): {fix}"
HOOK_NONE = (
    "the App has no webhook URL, so GitHub sends nothing: set it on the App's settings page "
    "(General → Webhook URL) to this server's https://…/webhook"
)
HOOK_OK = "GitHub delivers to {url}{note}"
HOOK_NOT_TRIED = " (add --reach to try it from here)"
HOOK_REACHED = " (reachable from here: HTTP {status})"
HOOK_UNREACHABLE = (
    "GitHub delivers to {url}, which cannot be reached from here ({error}): start `patchwright "
    "serve` behind that address, or fix the URL on the App's settings page"
)
HOOK_INSECURE = "GitHub delivers to {url} without checking its TLS certificate: turn SSL verification on in the App's settings"
HOOK_FAILED = "cannot read the App's webhook configuration ({error}): {fix}"
DB_SQLITE_NEW = "SQLite {path}: not created yet; `serve` (or `patchwright migrate`) creates and migrates it"
DB_OK = "{kind} {where}, migrated (version {version})"
DB_PENDING = "{kind} {where}: {count} migration(s) not applied yet ({versions}); `serve` applies them on start, or run `patchwright migrate`"
DB_NEWER = (
    "{kind} {where} has migrations this version does not know ({versions}): a newer patchwright "
    "migrated it; run that version (or newer) here"
)
DB_FAILED = "{kind} {where}: {error}: check PATCHWRIGHT_DATABASE_URL and that the database it names is up"
DATA_DIR_OK = "{path}: writable, {free} free"
DATA_DIR_NEW = "{path}: not created yet; {parent} is writable ({free} free)"
DATA_DIR_NOT_WRITABLE = (
    "{path} is not writable by this user ({error}): fix its owner or permissions, or set "
    "PATCHWRIGHT_DATA_DIR to a directory this user may write"
)
DATA_DIR_FULL = "{path}: only {free} free: free some space, or set PATCHWRIGHT_DATA_DIR to a larger disk"
DATA_DIR_LOW = (
    "{path}: {free} free, while {workers} agent(s) may write {need} (PATCHWRIGHT_AGENT_DISK_MB "
    "each): free some space or lower PATCHWRIGHT_WORKERS"
)
GIT_OK = "{version} ({path})"
GIT_MISSING = "git is not on PATH: install it (e.g. apt install git)"
GIT_BROKEN = "{path} --version failed ({error}): reinstall git"
SANDBOX_NONE = (
    "PATCHWRIGHT_SANDBOX=none: agents run unsandboxed and can read and reach whatever the server "
    "can; set PATCHWRIGHT_SANDBOX=auto to run them in bubblewrap"
)
SANDBOX_OK = "bubblewrap works: a sandbox started ({version}, {path})"
SANDBOX_BROKEN = (
    "bubblewrap does not work here ({problem}): install it (apt install bubblewrap) and allow "
    "unprivileged user namespaces; until then no agent runs (PATCHWRIGHT_SANDBOX=none would run "
    "them unsandboxed)"
)
AGENT_UNKNOWN = "{name} is not an agent preset: {hint}"
AGENT_NO_COMMAND = (
    "the command preset needs a template: set PATCHWRIGHT_AGENT_COMMAND, e.g. "
    "'my-agent --prompt-file {{prompt_file}}'"
)
AGENT_CLI_OK = "{version} ({path})"
AGENT_CLI_MISSING = "`{exe}` is not on PATH: {install}"
AGENT_CLI_BROKEN = "`{exe} --version` failed ({error}): reinstall it ({install})"
AGENT_KEYS_OK = "{names}"
AGENT_KEYS_NONE = "none of {names} is set: set one in .env or the environment (names only are shown here)"
AGENT_KEYS_ENDPOINT_ONLY = (
    "none of {names} is set; fine only if the server at {endpoint} needs no key"
)
AGENT_COMMAND_KEYS = "the command preset passes what a repository's agent.env names (none needed here)"

#: How each CLI preset is installed (README, "Agents and credentials").
INSTALL_HINTS: Mapping[str, str] = {
    "claude": "install Claude Code (npm install -g @anthropic-ai/claude-code)",
    "codex": "install Codex CLI (npm install -g @openai/codex)",
    "aider": "install aider (python3 -m pip install aider-chat)",
    "command": "install it, or fix PATCHWRIGHT_AGENT_COMMAND",
}
#: Below this much free space in the data directory the check fails.
MIN_FREE_BYTES = 256 * 1024 * 1024
#: Seconds one outside program (git, bwrap, an agent CLI) may take to answer.
PROGRAM_TIMEOUT_S = 15.0


class Mark(Enum):
    OK = "✓"
    FAIL = "✗"
    WARN = "!"
    SKIP = "-"


@dataclass(frozen=True)
class Row:
    """One line of the report: which check, its mark, and what it found (for ✗ and !: the
    cause and the fix). ``code`` is the exit code a ✗ stands for."""

    check: str
    mark: Mark
    text: str
    code: ExitCode = ExitCode.OK

    def line(self) -> str:
        return f"{self.mark.value} {self.check}: {self.text}"


def ok(check: str, text: str) -> Row:
    return Row(check, Mark.OK, text)


def fail(check: str, text: str, code: ExitCode) -> Row:
    return Row(check, Mark.FAIL, errors.one_line(text), code)


def warn(check: str, text: str) -> Row:
    return Row(check, Mark.WARN, errors.one_line(text))


def skip(check: str, text: str) -> Row:
    return Row(check, Mark.SKIP, text)


def exit_code(rows: Iterable[Row]) -> ExitCode:
    """The code of the first ✗, else 0."""
    return next((row.code for row in rows if row.mark is Mark.FAIL), ExitCode.OK)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit in ("B", "KiB") else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# -- settings ----------------------------------------------------------------------------


def check_settings(environ: Mapping[str, str], env_file: Path | None) -> tuple[Settings | None, list[Row]]:
    """The settings (None when a value is invalid: a ✗ per invalid value) and a ✗ per
    ``PATCHWRIGHT_*`` name that is no setting: the other commands run and warn about it, the
    check of an installation says it is wrong (a misspelt name leaves a setting unset)."""
    rows = [fail("settings", text, ExitCode.CONFIG) for text in unknown_settings(environ, env_file)]
    try:
        settings = load_settings(environ, env_file=env_file)
    except ConfigError as exc:
        return None, [*(fail("settings", line, exc.code) for line in str(exc).splitlines()), *rows]
    sources = "the environment" + (f" and {env_file}" if env_file is not None and env_file.is_file() else "")
    return settings, [ok("settings", SETTINGS_READ.format(sources=sources)), *rows]


def check_app_id(settings: Settings) -> Row:
    try:
        return ok("App id", str(settings.require_app_id()))
    except ConfigError as exc:
        return fail("App id", str(exc), exc.code)


def check_key(settings: Settings) -> Row:
    """The private key is set, readable, and an RSA key that parses."""
    from cryptography.hazmat.primitives import serialization

    variable = key_variable(settings)
    try:
        pem = settings.private_key_pem()
        check_private_key(pem, variable=variable)
    except ConfigError as exc:
        return fail("private key", str(exc), exc.code)
    key: Any = serialization.load_pem_private_key(pem.encode(), password=None)
    where = variable if variable == "PATCHWRIGHT_PRIVATE_KEY" else f"{variable} ({settings.private_key_path})"
    return ok("private key", KEY_OK.format(bits=key.key_size, variable=where))


def check_webhook_secret(settings: Settings) -> Row:
    try:
        settings.require_webhook_secret()
    except ConfigError as exc:
        return fail("webhook secret", str(exc), exc.code)
    return ok("webhook secret", SECRET_SET)


# -- GitHub ------------------------------------------------------------------------------


async def check_github(settings: Settings, *, reach: bool, session: aiohttp.ClientSession) -> list[Row]:
    """The App's JWT accepted (``GET /app``) and its slug, its installations and their
    repositories, and the webhook URL configured on the App (tried with ``reach``)."""
    from bot.github.client import GitHubClientFactory, RetryPolicy
    from bot.github.app_identity import identify_app

    github = GitHubClientFactory.from_settings(
        session,
        settings,
        policy=RetryPolicy(max_attempts=2, base_delay=0.5, max_total_delay=2.0, max_rate_limit_wait=5.0),
        timeout=aiohttp.ClientTimeout(total=20),
    )
    try:
        app = await identify_app(settings, github)
    except UserError as exc:
        needs = NEEDS.format(what="the GitHub App check to pass")
        return [fail("GitHub App", str(exc), exc.code), skip("installations", needs), skip("webhook URL", needs)]
    rows = [ok("GitHub App", APP_OK.format(name=app.name, slug=app.slug, id=app.id, url=settings.github_url))]
    rows.extend(await _installations(github, app_url=app.html_url))
    rows.append(await _webhook(github, reach=reach, session=session))
    return rows


def _github_error(exc: BaseException) -> str:
    return errors.one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


_GITHUB_FIX = "try again, and check the App's permissions on its settings page"


async def _installations(github: Any, *, app_url: str) -> list[Row]:
    try:
        installations = [i async for i in github.for_app().getiter("/app/installations")]
        described = []
        warnings = []
        for inst in installations:
            account = str((inst.get("account") or {}).get("login") or inst.get("id"))
            if inst.get("suspended_at"):
                warnings.append(warn("installations", INSTALLATION_SUSPENDED.format(account=account)))
                continue
            client = github.for_installation(int(inst["id"]))
            repos = [
                str(r.get("full_name"))
                async for r in client.getiter("/installation/repositories", iterable_key="repositories")
            ]
            described.append(_describe_installation(account, inst.get("repository_selection"), repos))
    except Exception as exc:  # noqa: BLE001 - reported as the row
        return [fail("installations", INSTALLATIONS_FAILED.format(error=_github_error(exc), fix=_GITHUB_FIX), ExitCode.GITHUB)]
    if not installations:
        return [warn("installations", INSTALLED_NOWHERE.format(url=app_url or "the App's page"))]
    rows = [ok("installations", INSTALLATIONS_OK.format(count=len(described), accounts="; ".join(described)))] if described else []
    return rows + warnings


def _describe_installation(account: str, selection: Any, repos: Sequence[str], *, shown: int = 5) -> str:
    names = ", ".join(repos[:shown]) + (f" and {len(repos) - shown} more" if len(repos) > shown else "")
    which = "all repositories" if selection == "all" else "selected repositories"
    return f"{account} ({which}: {len(repos)}{': ' + names if repos else ''})"


async def _webhook(github: Any, *, reach: bool, session: aiohttp.ClientSession) -> Row:
    try:
        config = await github.for_app().getitem("/app/hook/config")
    except Exception as exc:  # noqa: BLE001 - reported as the row
        return fail("webhook URL", HOOK_FAILED.format(error=_github_error(exc), fix=_GITHUB_FIX), ExitCode.GITHUB)
    url = str((config or {}).get("url") or "").strip()
    if not url:
        return fail("webhook URL", HOOK_NONE, ExitCode.GITHUB)
    if str((config or {}).get("insecure_ssl", "0")) not in ("0", ""):
        return warn("webhook URL", HOOK_INSECURE.format(url=url))
    if not reach:
        return ok("webhook URL", HOOK_OK.format(url=url, note=HOOK_NOT_TRIED))
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=10), allow_redirects=False) as resp:
            status = resp.status
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        return fail("webhook URL", HOOK_UNREACHABLE.format(url=url, error=_github_error(exc)), ExitCode.ENVIRONMENT)
    return ok("webhook URL", HOOK_OK.format(url=url, note=HOOK_REACHED.format(status=status)))


# -- the database ------------------------------------------------------------------------


def _versions(backend: str) -> list[int]:
    from bot.store.migrations import load_migrations

    return [m.version for m in load_migrations(backend)]


def _migration_row(kind: str, where: str, backend: str, applied: set[int] | None) -> Row:
    known = _versions(backend)
    applied = applied or set()
    newer = sorted(applied - set(known))
    if newer:
        return fail("database", DB_NEWER.format(kind=kind, where=where, versions=", ".join(map(str, newer))), ExitCode.DATABASE)
    pending = [v for v in known if v not in applied]
    if pending:
        return warn(
            "database",
            DB_PENDING.format(kind=kind, where=where, count=len(pending), versions=", ".join(map(str, pending))),
        )
    return ok("database", DB_OK.format(kind=kind, where=where, version=max(known) if known else 0))


def check_sqlite(url: str) -> Row:
    """The SQLite file: its migrations, read without changing (or creating) anything."""
    from bot.store.base import StoreError
    from bot.store.factory import parse_sqlite_url

    try:
        path, _options = parse_sqlite_url(url)
    except StoreError as exc:
        return fail("database", errors.DATABASE_FAILED.format(error=errors.one_line(str(exc))), ExitCode.DATABASE)
    where = str(path)
    if not Path(path).exists():
        return warn("database", DB_SQLITE_NEW.format(path=where))
    try:
        conn = sqlite3.connect(f"file:{Path(path).absolute()}?mode=ro", uri=True, timeout=5)
        try:
            known = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            ).fetchone()
            applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")} if known else set()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return fail("database", DB_FAILED.format(kind="SQLite", where=where, error=errors.one_line(str(exc))), ExitCode.DATABASE)
    return _migration_row("SQLite", where, "sqlite", applied)


async def check_postgres(url: str) -> Row:
    """The PostgreSQL database: it answers, and its migrations."""
    import asyncpg

    where = f"at {redact_url(url)}"
    try:
        conn = await asyncpg.connect(url, timeout=10)
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the row
        error = scrub_url_secrets(errors.one_line(str(exc) or type(exc).__name__), url)
        return fail("database", DB_FAILED.format(kind="PostgreSQL", where=where, error=error), ExitCode.DATABASE)
    try:
        version = conn.get_server_version()
        kind = f"PostgreSQL {version.major}.{version.minor}"
        table = await conn.fetchval("SELECT to_regclass('schema_migrations')")
        applied = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")} if table else set()
    except Exception as exc:  # noqa: BLE001
        error = scrub_url_secrets(errors.one_line(str(exc) or type(exc).__name__), url)
        return fail("database", DB_FAILED.format(kind="PostgreSQL", where=where, error=error), ExitCode.DATABASE)
    finally:
        await conn.close()
    return _migration_row(kind, where, "postgres", applied)


async def check_database(settings: Settings) -> Row:
    if settings.is_sqlite:
        return await asyncio.to_thread(check_sqlite, settings.database_url)
    return await check_postgres(settings.database_url)


# -- this machine ------------------------------------------------------------------------


def check_data_dir(settings: Settings) -> Row:
    """The data directory (or, before it exists, its nearest parent) is writable, with room."""
    path = Path(settings.data_dir)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "not a directory", str(existing))
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".patchwright-doctor-"):
            pass
        free = shutil.disk_usage(existing).free
    except OSError as exc:
        return fail("data dir", DATA_DIR_NOT_WRITABLE.format(path=existing, error=exc.strerror or exc), ExitCode.ENVIRONMENT)
    if free < MIN_FREE_BYTES:
        return fail("data dir", DATA_DIR_FULL.format(path=existing, free=_size(free)), ExitCode.ENVIRONMENT)
    workers = max(1, settings.workers)
    need = workers * settings.agent_disk_mb * 1024 * 1024
    if free < need:
        return warn("data dir", DATA_DIR_LOW.format(path=existing, free=_size(free), workers=workers, need=_size(need)))
    if existing != path:
        return ok("data dir", DATA_DIR_NEW.format(path=path, parent=existing, free=_size(free)))
    return ok("data dir", DATA_DIR_OK.format(path=path, free=_size(free)))


def _version_of(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The first line ``argv`` prints (its version); raises OSError or RuntimeError."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=PROGRAM_TIMEOUT_S, check=False,
            env=dict(env) if env is not None else None, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"no answer within {PROGRAM_TIMEOUT_S:.0f} s") from None
    out = (done.stdout.strip() or done.stderr.strip()).splitlines()
    if done.returncode != 0:
        raise RuntimeError(f"exit code {done.returncode}{': ' + out[-1] if out else ''}")
    return out[0].strip() if out else "version unknown"


def check_git(environ: Mapping[str, str]) -> Row:
    path = shutil.which("git", path=environ.get("PATH"))
    if path is None:
        return fail("git", GIT_MISSING, ExitCode.ENVIRONMENT)
    try:
        return ok("git", GIT_OK.format(version=_version_of([path, "--version"]), path=path))
    except (OSError, RuntimeError) as exc:
        return fail("git", GIT_BROKEN.format(path=path, error=exc), ExitCode.ENVIRONMENT)


def check_sandbox(settings: Settings) -> Row:
    """Bubblewrap, by starting a real sandbox (:class:`bot.agents.sandbox.BwrapProbe`)."""
    from bot.agents.sandbox import BwrapProbe

    if settings.sandbox == "none":
        return warn("sandbox", SANDBOX_NONE)
    probe = BwrapProbe()
    if not probe.available():
        return fail("sandbox", SANDBOX_BROKEN.format(problem=errors.one_line(probe.problem)), ExitCode.ENVIRONMENT)
    path = shutil.which(probe.bwrap) or probe.bwrap
    try:
        version = _version_of([path, "--version"])
    except (OSError, RuntimeError):
        version = "version unknown"
    return ok("sandbox", SANDBOX_OK.format(version=version, path=path))


def presets_in_use(settings: Settings, extra: Sequence[str] = ()) -> list[str]:
    """``PATCHWRIGHT_AGENT``'s preset and those asked for with ``--agent``, each once."""
    return list(dict.fromkeys([settings.agent, *extra]))


def check_agent(preset: str, settings: Settings, agent_env: Mapping[str, str]) -> list[Row]:
    """The preset's CLI on the agents' PATH and its version; its credentials by name."""
    from bot.agents.presets import get_preset
    from bot.agents.providers import PRESET_ENDPOINTS

    check = f"agent {preset}"
    if preset not in AGENT_PRESETS:
        hint = did_you_mean(preset, AGENT_PRESETS, otherwise="choose one of " + ", ".join(AGENT_PRESETS))
        return [fail(check, AGENT_UNKNOWN.format(name=preset, hint=hint), ExitCode.CONFIG)]
    install = INSTALL_HINTS[preset]
    if preset == "command":
        if not settings.agent_command:
            return [fail(check, AGENT_NO_COMMAND, ExitCode.CONFIG)]
        try:
            exe = shlex.split(settings.agent_command)[0]
        except (ValueError, IndexError):
            return [fail(check, AGENT_NO_COMMAND, ExitCode.CONFIG)]
    else:
        exe = preset
    path = shutil.which(exe, path=agent_env.get("PATH"))
    if path is None:
        rows = [fail(check, AGENT_CLI_MISSING.format(exe=exe, install=install), ExitCode.ENVIRONMENT)]
    elif preset == "command":
        rows = [ok(check, AGENT_CLI_OK.format(version=exe, path=path))]
    else:
        try:
            env = {"PATH": agent_env.get("PATH", os.defpath), "HOME": agent_env.get("HOME", tempfile.gettempdir())}
            version = _version_of([path, "--version"], env=env)
            rows = [ok(check, AGENT_CLI_OK.format(version=version, path=path))]
        except (OSError, RuntimeError) as exc:
            rows = [fail(check, AGENT_CLI_BROKEN.format(exe=exe, error=exc, install=install), ExitCode.ENVIRONMENT)]
    credentials = f"agent {preset} credentials"
    if preset == "command":
        return [*rows, ok(credentials, AGENT_COMMAND_KEYS)]
    keys = [k for k in get_preset(preset).provider_keys if k.endswith(("_KEY", "_TOKEN"))]
    present = [k for k in keys if agent_env.get(k, "").strip()]
    if present:
        return [*rows, ok(credentials, AGENT_KEYS_OK.format(names=", ".join(present)))]
    endpoints = [v for v, _default in PRESET_ENDPOINTS.get(preset, ()) if agent_env.get(v, "").strip()]
    if endpoints:
        endpoint = f"{endpoints[0]}={agent_env[endpoints[0]].strip()}"
        return [*rows, warn(credentials, AGENT_KEYS_ENDPOINT_ONLY.format(names=" or ".join(keys), endpoint=endpoint))]
    return [*rows, fail(credentials, AGENT_KEYS_NONE.format(names=" or ".join(keys)), ExitCode.CONFIG)]


# -- the runner --------------------------------------------------------------------------


async def doctor_rows(
    environ: Mapping[str, str],
    *,
    env_file: Path | None,
    reach: bool = False,
    agents: Sequence[str] = (),
) -> list[Row]:
    """Every check, in order (GitHub's only once the App's id and key are fine)."""
    settings, rows = check_settings(environ, env_file)
    if settings is None:
        return rows
    app_id, key, secret = check_app_id(settings), check_key(settings), check_webhook_secret(settings)
    rows += [app_id, key, secret]
    if app_id.mark is Mark.OK and key.mark is Mark.OK:
        async with aiohttp.ClientSession() as session:
            rows += await check_github(settings, reach=reach, session=session)
    else:
        needs = NEEDS.format(what="the App id and private key")
        rows += [skip(name, needs) for name in ("GitHub App", "installations", "webhook URL")]
    rows.append(await check_database(settings))
    rows.append(await asyncio.to_thread(check_data_dir, settings))
    rows.append(await asyncio.to_thread(check_git, environ))
    rows.append(await asyncio.to_thread(check_sandbox, settings))
    agent_env = agent_environ(environ, env_file)
    for preset in presets_in_use(settings, agents):
        rows += await asyncio.to_thread(check_agent, preset, settings, agent_env)
    return rows


def print_rows(rows: Iterable[Row], *, out: TextIO, err: TextIO) -> None:
    """A line per row: ✓ and - on ``out``, ✗ and ! on ``err``."""
    for row in rows:
        stream = err if row.mark in (Mark.FAIL, Mark.WARN) else out
        print(row.line(), file=stream, flush=True)


async def run_doctor(
    environ: Mapping[str, str],
    *,
    env_file: Path | None,
    reach: bool = False,
    agents: Sequence[str] = (),
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run every check, print the report, and give the exit code."""
    rows = await doctor_rows(environ, env_file=env_file, reach=reach, agents=agents)
    print_rows(rows, out=out or sys.stdout, err=err or sys.stderr)
    return exit_code(rows)


def run_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``patchwright doctor [--reach] [--agent PRESET]…``: what ``__main__`` calls."""
    # The report is the output: the libraries' own retry warnings would only repeat a row.
    configure_logging("text", "ERROR")
    return asyncio.run(run_doctor(environ, env_file=args.env_file, reach=args.reach, agents=args.agents))
