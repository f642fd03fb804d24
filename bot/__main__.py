"""The `patchwright` command line (also `python -m bot`).

This is the only module that reads the process environment: it builds one Settings object
and passes it down.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import secrets
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from bot import errors
from bot.config import (
    ConfigError,
    RepoConfigError,
    Settings,
    agent_environ,
    dump_repo_config,
    load_settings,
    parse_repo_config,
    unknown_settings,
)
from bot.errors import ExitCode, UserError, exit_code_table
from bot.logs import configure_logging, redact_url
from bot.messages import COMMAND_HELP
from bot.store.base import DeliveryState, DeliveryVerdict, StoreError
from bot.tasks import verbs
from bot.tasks.model import Status
from bot.tasks.verbs import TASK_VERBS

log = logging.getLogger("patchwright")

#: The settings file read when ``--env-file`` is not given (when it exists).
DEFAULT_ENV_FILE = Path(".env")
#: Commands that do not read the settings (``setup`` writes its file, creating it).
_NO_SETTINGS_COMMANDS = frozenset({"check-config", "demo", "emulator", "setup"})


_JSON_HELP = "print one JSON document (the web API's shapes; times in ISO 8601)"
_TASK_ID_HELP = "a task id, a unique prefix of one, or owner/repo#N (the task of issue or pull request N)"


def package_version() -> str:
    """The installed package's version (``patchwright --version``)."""
    from importlib import metadata

    try:
        return metadata.version("patchwright")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchwright",
        description="Turn labelled GitHub issues into pull requests written by AI coding agents.",
        epilog="exit codes:\n" + exit_code_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--env-file", type=Path, default=None, help="settings file to read (default: .env, when it exists)"
    )
    parser.add_argument(
        "--debug", action="store_true", help="on an error, print its traceback too"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", help="run the webhook server, dispatcher and workers")
    serve.add_argument("--host", help="address to listen on (PATCHWRIGHT_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (PATCHWRIGHT_PORT)")
    serve.add_argument(
        "--dev",
        action="store_true",
        help="local development: generate a webhook secret when none is set, and print it; "
        "without a GitHub App (no PATCHWRIGHT_APP_ID, no private key) serve the webhook "
        "endpoint and the dashboard only",
    )

    doctor = sub.add_parser(
        "doctor",
        help="check settings, private key, GitHub App, database, sandbox and agent CLIs",
        description="Check what `serve` and `worker` need, one line each (✓, ✗ with what to do, "
        "! a warning): the settings, the private key, the GitHub App (its JWT, slug, "
        "installations, webhook URL), the database, the data directory, git, bubblewrap and "
        "each agent preset in use. Exits with the code of the first ✗ (0 when there is none).",
    )
    doctor.add_argument(
        "--reach", action="store_true",
        help="also send a request to the App's webhook URL, to see that it is reachable from here",
    )
    doctor.add_argument(
        "--agent", dest="agents", action="append", default=[], metavar="PRESET",
        help="check this agent preset too (repeatable; default: PATCHWRIGHT_AGENT's)",
    )

    sub.add_parser("migrate", help="apply database migrations and exit")
    sub.add_parser("worker", help="run a worker pool only (shares the database with serve)")

    demo = sub.add_parser(
        "demo",
        help="play the whole loop on a local GitHub emulator (no App, no network needed)",
        description="Start a local GitHub emulator, the bot and a deterministic agent, and play the "
        "story: issue -> PR -> CI failure fixed -> review feedback -> merge conflict -> merged.",
    )
    demo.add_argument(
        "--data-dir", type=Path, help="keep everything in this new or empty directory (default: a "
        "temporary directory, removed at the end)"
    )
    demo.add_argument("--keep", action="store_true", help="leave everything running afterwards, until Ctrl-C")
    demo.add_argument("--postgres", metavar="URL", help="use this PostgreSQL database instead of SQLite")

    from bot.sandbox import cli as emulator_cli

    emulator = sub.add_parser(
        "emulator",
        help="run the local GitHub emulator standalone",
        description="Run the local GitHub emulator (REST, git over HTTP, webhooks, CI) and print "
        "the App's credentials and URLs.",
    )
    emulator_cli.add_arguments(emulator)

    tasks = sub.add_parser(
        "tasks",
        help="list and inspect tasks, follow their logs, give them commands",
        description="Tasks on the server's database. ID is a task id, a unique prefix of one "
        "(with or without task_), or owner/repo#N: the task of issue N (or of pull request N). "
        "The commands are those of a comment (@patchwright retry, ...), applied the same way.",
    )
    tasks_sub = tasks.add_subparsers(dest="tasks_command", metavar="ACTION", required=True)
    t_list = tasks_sub.add_parser("list", help="tasks, newest first")
    t_list.add_argument("--status", choices=[s.value for s in Status])
    t_list.add_argument("--repo", help="owner/name")
    t_list.add_argument("--search", metavar="TEXT", help="title, owner/name or id containing TEXT, or #12: issue or PR 12")
    t_list.add_argument("--limit", type=int, default=50)
    t_list.add_argument("--json", action="store_true", help=_JSON_HELP)
    t_show = tasks_sub.add_parser("show", help="one task with its attempts and events")
    t_show.add_argument("task_id", metavar="ID", help=_TASK_ID_HELP)
    t_show.add_argument("--json", action="store_true", help=_JSON_HELP)
    t_logs = tasks_sub.add_parser("logs", help="a task's agent log")
    t_logs.add_argument("task_id", metavar="ID", help=_TASK_ID_HELP)
    t_logs.add_argument("--attempt", type=int)
    t_logs.add_argument(
        "--follow", "-f", action="store_true",
        help="keep printing new lines until the task is no longer pending or running "
        "(Ctrl-C ends it: exit code 130)",
    )
    for verb in TASK_VERBS:  # one action per row of the verb table: a new verb needs no edit here
        t_verb = tasks_sub.add_parser(
            verbs.slug(verb.name),  # the same as bot.admin.task_subcommand
            help=COMMAND_HELP[verb.name][1] if verb.name in COMMAND_HELP else f"the {verb.name} command",
        )
        t_verb.set_defaults(task_verb=verb.name)
        t_verb.add_argument("task_id", metavar="ID", help=_TASK_ID_HELP)
        if verb.takes_text:
            t_verb.add_argument("instructions", nargs="*", help="instructions for the agent")
    t_edit = tasks_sub.add_parser(
        "edit",
        help="edit a paused task's input: the issue text it works from, the next attempt's instructions",
        description="Only while the task is paused (stop it first); `resume` then starts the next "
        "attempt from the new input. Give --spec-file, --instructions or both.",
    )
    t_edit.add_argument("task_id", metavar="ID", help=_TASK_ID_HELP)
    t_edit.add_argument(
        "--spec-file", type=Path, metavar="FILE", help="the new issue text (spec), read from FILE ('-': standard input)"
    )
    t_edit.add_argument("--instructions", metavar="TEXT", help="the next attempt's instructions ('' removes them)")

    deliveries = sub.add_parser("deliveries", help="the webhook ledger: list, show, replay")
    d_sub = deliveries.add_subparsers(dest="deliveries_command", metavar="ACTION", required=True)
    d_list = d_sub.add_parser("list", help="deliveries, newest first, with outcome or ignore reason")
    d_list.add_argument("--state", choices=[s.value for s in DeliveryState])
    d_list.add_argument("--repo", help="owner/name")
    d_list.add_argument("--event", metavar="EVENT", help="an event (issues) or event.action (issues.labeled)")
    d_list.add_argument("--verdict", choices=[v.value for v in DeliveryVerdict], help="what became of it")
    d_list.add_argument("--bots", choices=("yes", "no"), help="only (yes) or no (no) deliveries a bot account sent")
    d_list.add_argument("--limit", type=int, default=50)
    d_list.add_argument("--json", action="store_true", help=_JSON_HELP)
    d_show = d_sub.add_parser("show", help="one delivery")
    d_show.add_argument("delivery_id")
    d_show.add_argument("--payload", action="store_true", help="print the payload too")
    d_show.add_argument("--json", action="store_true", help=_JSON_HELP)
    d_sub.add_parser("replay", help="process a recorded delivery again").add_argument("delivery_id")

    pruning = sub.add_parser(
        "prune",
        help="drop the payloads of old processed webhook deliveries now",
        description="Drop the payloads of processed webhook deliveries older than the retention "
        "(PATCHWRIGHT_PAYLOAD_RETENTION_DAYS, default 30); their rows and outcomes stay. "
        "`serve` does this hourly.",
    )
    pruning.add_argument("--older-than-days", type=_days, metavar="N",
                       help="prune deliveries older than N days (default: PATCHWRIGHT_PAYLOAD_RETENTION_DAYS)")
    pruning.add_argument("--dry-run", action="store_true", help="only count what would be pruned")

    replay = sub.add_parser("replay", help="send a payload file, signed, to a running server")
    replay.add_argument("file", type=Path)
    replay.add_argument(
        "--event", help="event name (default: told by the payload's shape; refused when it does not tell)"
    )
    replay.add_argument("--url", help="webhook URL (default: http://HOST:PORT/webhook from settings)")

    setup = sub.add_parser(
        "setup",
        help="register the GitHub App from app.yml and write its settings to .env",
        description="Serve a local page that registers the GitHub App described by app.yml "
        "(GitHub's manifest flow), then write the App's id, slug, webhook secret and private key "
        "path to the settings file. Secrets are never printed.",
    )
    setup.add_argument("--webhook-url", required=True, metavar="URL",
                       help="where GitHub will send webhooks, e.g. https://bot.example.com/webhook")
    setup.add_argument("--org", metavar="NAME", help="register the App for this organization "
                       "(default: your personal account)")
    setup.add_argument("--port", type=int, default=3000,
                       help="port of the registration page on 127.0.0.1 (default 3000; 0: any free port)")
    setup.add_argument("--env-file", dest="setup_env_file", type=Path, default=None, metavar="FILE",
                       help="settings file to update (default: the global --env-file, .env)")
    setup.add_argument("--no-browser", action="store_true", help="only print the page's address")
    setup.add_argument("--app-yml", type=Path, default=Path("app.yml"), metavar="FILE",
                       help="the App manifest (default: app.yml)")

    check = sub.add_parser(
        "check-config",
        help="validate a .github/patchwright.yml file",
        description="Validate a .github/patchwright.yml file: prints 'ok' and the effective "
        "configuration, or every error with its location (exit status 1).",
    )
    check.add_argument("file", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Whatever a user can get wrong ends with one line on stderr naming
    the cause and the fix, and an exit code of :class:`bot.errors.ExitCode` — a traceback only
    with ``--debug``."""
    args = _parser().parse_args(argv)
    env_file_given = args.env_file is not None
    if not env_file_given:
        args.env_file = DEFAULT_ENV_FILE
    try:
        if env_file_given and args.command not in _NO_SETTINGS_COMMANDS and not args.env_file.is_file():
            raise ConfigError(errors.ENV_FILE_MISSING.format(path=args.env_file))
        return _run(args)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure ends in one line
        return _failed(exc, debug=args.debug)


def _failed(exc: BaseException, *, debug: bool) -> int:
    """Report a command's failure in one line (the traceback too with ``--debug``) and give
    its exit code."""
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    code, message = failure(exc)
    for line in message.splitlines() or [""]:
        print(f"patchwright: {line}", file=sys.stderr, flush=True)
    return code


def failure(exc: BaseException) -> tuple[ExitCode, str]:
    """The exit code and the message (a line per problem) of a command that raised ``exc``."""
    if isinstance(exc, UserError):
        return exc.code, str(exc)
    if isinstance(exc, StoreError):
        return ExitCode.DATABASE, errors.DATABASE_FAILED.format(error=errors.one_line(str(exc)))
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return ExitCode.ENVIRONMENT, errors.OS_FAILED.format(
            where=where, error=errors.one_line(exc.strerror or str(exc))
        )
    return ExitCode.FAILED, errors.INTERNAL_ERROR.format(
        kind=type(exc).__name__, error=errors.one_line(str(exc))
    )


def _warn_about_settings(environ: Mapping[str, str], env_file: Path) -> None:
    """One warning line per ``PATCHWRIGHT_*`` name that is no setting (and is ignored)."""
    for warning in unknown_settings(environ, env_file):
        print(f"patchwright: warning: {warning}", file=sys.stderr, flush=True)


def _has_app(settings: Settings) -> bool:
    """Whether any of the App's credentials is set (``serve --dev`` runs without GitHub when
    none is)."""
    key = settings.private_key is not None and bool(settings.private_key.get_secret_value().strip())
    return settings.app_id is not None or key or settings.private_key_path is not None


def _run(args: argparse.Namespace) -> int:
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "demo":
        from bot import demo as demo_command

        return demo_command.run_from_args(args, os.environ)
    if args.command == "setup":
        from bot import setup as setup_command

        return setup_command.run_from_args(args, os.environ)
    if args.command == "emulator":
        from bot.sandbox import cli as emulator_cli

        return emulator_cli.run_from_args(args)
    if args.command == "doctor":
        from bot import doctor

        return doctor.run_from_args(args, os.environ)
    try:
        settings = load_settings(os.environ, env_file=args.env_file)
        _warn_about_settings(os.environ, args.env_file)
        configure_logging(settings.log_format, settings.log_level)
        if args.command == "migrate":
            return asyncio.run(migrate(settings))
        if args.command == "prune":
            days = settings.payload_retention_days if args.older_than_days is None else args.older_than_days
            return asyncio.run(prune(settings, days=days, dry_run=args.dry_run))
        if args.command in ("tasks", "deliveries"):
            return asyncio.run(admin(settings, args))
        if args.command == "replay":
            url = args.url or f"http://{settings.host}:{settings.port}/webhook"
            print(asyncio.run(replay(args.file, url=url, secret=settings.require_webhook_secret(), event=args.event)))
            return 0
        if args.command == "serve":
            overrides = {"host": args.host, "port": args.port}
            if args.dev and settings.webhook_secret is None:
                overrides["webhook_secret"] = secrets.token_urlsafe(24)
                print(
                    "Development mode: generated webhook secret "
                    f"{overrides['webhook_secret']} (set PATCHWRIGHT_WEBHOOK_SECRET to keep one)."
                )
            settings = settings.model_copy(
                update={k: _coerce(settings, k, v) for k, v in overrides.items() if v is not None}
            )
            for warning in settings.startup_warnings():
                log.warning("%s", warning)
            run_server = serve
            if args.dev and not _has_app(settings):
                print(DEV_WITHOUT_APP, flush=True)
                run_server = serve_without_github
            # The key file is read here, once; the running server keeps the key in memory.
            return asyncio.run(run_server(settings.with_private_key_loaded(), agent_environ(os.environ, args.env_file)))
        if args.command == "worker":
            return asyncio.run(worker(settings.with_private_key_loaded(), agent_environ(os.environ, args.env_file)))
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    raise AssertionError(f"unhandled command {args.command}")  # argparse restricts the choices


def _days(value: str) -> int:
    """A number of days for ``prune``: 0 or more."""
    try:
        days = int(value)
    except ValueError:
        days = -1
    if days < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of days, 0 or more, not {value!r}")
    return days


def _coerce(settings: Settings, name: str, value: object) -> object:
    if name == "webhook_secret":
        from pydantic import SecretStr

        return SecretStr(str(value))
    return value


def check_config(path: Path) -> int:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        config = parse_repo_config(text)
    except RepoConfigError as exc:
        for problem in exc.problems:
            where = f"{path}:{problem.line}" if problem.line else str(path)
            key = f" {problem.path}:" if problem.path else ""
            print(f"{where}:{key} {problem.message}", file=sys.stderr)
        print(f"{len(exc.problems)} error(s) in {path}", file=sys.stderr)
        return 1
    print("ok")
    print(dump_repo_config(config), end="")
    return 0


async def admin(settings: Settings, args: argparse.Namespace) -> int:
    """``tasks …`` and ``deliveries …`` (:func:`bot.admin.run`); the task verbs run without a
    GitHub client (the status comment follows with the next event or reconciler pass)."""
    from bot import admin as admin_commands
    from bot.store.factory import open_store

    store = await open_store(settings.database_url)
    try:
        await store.migrate()
        await admin_commands.run(args, store, settings=settings, write=functools.partial(print, flush=True))
    except admin_commands.AdminError as exc:
        print(f"patchwright: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    return 0


async def migrate(settings: Settings) -> int:
    from bot.store.factory import open_store

    store = await open_store(settings.database_url)
    try:
        applied = await store.migrate()
    finally:
        await store.close()
    print(f"migrations applied: {', '.join(map(str, applied)) if applied else 'none (up to date)'}")
    return 0


async def prune(settings: Settings, *, days: int, dry_run: bool) -> int:
    from bot.operations.retention import prune_payloads
    from bot.store.factory import open_store
    from bot.tasks.model import utcnow

    store = await open_store(settings.database_url)
    try:
        await store.migrate()
        run = await prune_payloads(store, days=days, now=utcnow(), dry_run=dry_run)
    finally:
        await store.close()
    print(run.line())
    return 0


async def worker(settings: Settings, environ: Mapping[str, str]) -> int:
    from bot.runtime import run_worker
    from bot.store.factory import open_store

    store = await open_store(settings.database_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await store.migrate()
        print(
            f"patchwright worker: {settings.workers} agent(s), database {redact_url(settings.database_url)}",
            flush=True,
        )
        await run_worker(settings, store, environ=environ, stop_event=stop, sandbox=settings.sandbox)
    finally:
        await store.close()
    return 0


async def replay(path: Path, *, url: str, secret: str, event: str | None) -> str:
    """``patchwright replay FILE``: the payload file checked here, so that a wrong file or a
    server that is not running ends in one line."""
    import json

    import aiohttp

    from bot import admin as admin_commands

    try:
        body = path.read_bytes()
    except OSError as exc:
        raise ConfigError(errors.REPLAY_FILE_UNREADABLE.format(path=path, reason=exc.strerror or exc)) from None
    try:
        json.loads(body)
    except ValueError as exc:
        raise ConfigError(errors.REPLAY_NOT_JSON.format(path=path, error=errors.one_line(str(exc)))) from None
    try:
        return await admin_commands.run_replay(path, url=url, secret=secret, event=event)
    except admin_commands.AdminError as exc:
        raise ConfigError(errors.one_line(str(exc))) from None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        raise UserError(
            errors.REPLAY_UNREACHABLE.format(url=url, error=errors.one_line(str(exc)) or type(exc).__name__),
            code=ExitCode.ENVIRONMENT,
        ) from None


#: What ``serve --dev`` says when it runs without a GitHub App.
DEV_WITHOUT_APP = (
    "Development mode without a GitHub App: webhooks are verified and recorded, and the dashboard "
    "and API run, but nothing acts on them until PATCHWRIGHT_APP_ID and the private key are set "
    "(`patchwright setup` writes them)."
)


async def serve_without_github(settings: Settings, environ: Mapping[str, str]) -> int:
    """``serve --dev`` without an App: the webhook endpoint, the ledger and the dashboard,
    no dispatcher or workers (they need GitHub)."""
    return await serve(settings, environ, github=False)


async def serve(settings: Settings, environ: Mapping[str, str], *, github: bool = True) -> int:
    from aiohttp import web

    settings.require_webhook_secret()

    from bot.app import RUNTIME_KEY, IngressRunner, create_app, raise_open_file_limit
    from bot.runtime import start_runtime_in_background
    from bot.store.factory import SERVE_LEDGER_WRITER, open_store

    raise_open_file_limit()  # connections, not the default soft limit, should be what runs out
    # The ledger writer process starts from a few variables of this environment (PATH, locale, TMPDIR).
    store = await open_store(settings.database_url, ledger_writer=SERVE_LEDGER_WRITER, environ=os.environ)
    runner: web.AppRunner | None = None
    try:
        await store.migrate()
        # The App's id and key are checked as the app starts; GitHub is waited for behind it.
        runtime = functools.partial(start_runtime_in_background, environ=environ) if github else None
        app = create_app(settings, store=store, runtime=runtime)
        # Ctrl-C and SIGTERM stop the server cleanly from here on (also while GitHub is awaited).
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = IngressRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else settings.port
        print(f"patchwright listening on http://{settings.host}:{port} (webhooks: POST /webhook)", flush=True)
        print(f"database: {redact_url(settings.database_url)}", flush=True)
        # GitHub refusing the App (or anything else ending the runtime's start) stops the server.
        failure = getattr(app.get(RUNTIME_KEY), "failure", None)
        if failure is not None:
            failure.add_done_callback(lambda _done: stop.set())
        await stop.wait()
        if failure is not None and failure.done():
            raise failure.result()
        log.info("shutting down")
    finally:
        if runner is not None:
            await runner.cleanup()
        await store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
