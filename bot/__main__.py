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

from bot.config import (
    ConfigError,
    RepoConfigError,
    Settings,
    dump_repo_config,
    agent_environ,
    load_settings,
    parse_repo_config,
)
from bot.logs import configure_logging, redact_url
from bot.store.base import DeliveryState, StoreError
from bot.tasks.model import Status

log = logging.getLogger("patchwright")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchwright",
        description="Turn labelled GitHub issues into pull requests written by AI coding agents.",
    )
    parser.add_argument(
        "--env-file", type=Path, default=Path(".env"), help="settings file to read (default: .env)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", help="run the webhook server, dispatcher and workers")
    serve.add_argument("--host", help="address to listen on (PATCHWRIGHT_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (PATCHWRIGHT_PORT)")
    serve.add_argument(
        "--dev",
        action="store_true",
        help="local development: generate a webhook secret when none is set, and print it",
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

    tasks = sub.add_parser("tasks", help="list, inspect, retry or stop tasks")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", metavar="ACTION", required=True)
    t_list = tasks_sub.add_parser("list", help="tasks, newest first")
    t_list.add_argument("--status", choices=[s.value for s in Status])
    t_list.add_argument("--repo", help="owner/name")
    t_list.add_argument("--limit", type=int, default=50)
    tasks_sub.add_parser("show", help="one task with its attempts and events").add_argument("task_id")
    t_logs = tasks_sub.add_parser("logs", help="a task's agent log")
    t_logs.add_argument("task_id")
    t_logs.add_argument("--attempt", type=int)
    t_retry = tasks_sub.add_parser("retry", help="retry a failed or paused task")
    t_retry.add_argument("task_id")
    t_retry.add_argument("instructions", nargs="*", help="instructions for the agent")
    tasks_sub.add_parser("stop", help="pause a pending or running task").add_argument("task_id")

    deliveries = sub.add_parser("deliveries", help="the webhook ledger: list, show, replay")
    d_sub = deliveries.add_subparsers(dest="deliveries_command", metavar="ACTION", required=True)
    d_list = d_sub.add_parser("list", help="deliveries, newest first, with outcome or ignore reason")
    d_list.add_argument("--state", choices=[s.value for s in DeliveryState])
    d_list.add_argument("--repo", help="owner/name")
    d_list.add_argument("--limit", type=int, default=50)
    d_show = d_sub.add_parser("show", help="one delivery")
    d_show.add_argument("delivery_id")
    d_show.add_argument("--payload", action="store_true", help="print the payload too")
    d_sub.add_parser("replay", help="process a recorded delivery again").add_argument("delivery_id")

    replay = sub.add_parser("replay", help="send a payload file, signed, to a running server")
    replay.add_argument("file", type=Path)
    replay.add_argument("--event", help="event name (default: the file's folder name)")
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
    args = _parser().parse_args(argv)
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
    try:
        settings = load_settings(os.environ, env_file=args.env_file)
        configure_logging(settings.log_format, settings.log_level)
        if args.command == "migrate":
            return asyncio.run(migrate(settings))
        if args.command in ("tasks", "deliveries"):
            return asyncio.run(admin(settings, args))
        if args.command == "replay":
            from bot import admin as admin_commands

            url = args.url or f"http://{settings.host}:{settings.port}/webhook"
            print(asyncio.run(admin_commands.run_replay(
                args.file, url=url, secret=settings.require_webhook_secret(), event=args.event
            )))
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
            # The key file is read here, once; the running server keeps the key in memory.
            return asyncio.run(serve(settings.with_private_key_loaded(), agent_environ(os.environ, args.env_file)))
        if args.command == "worker":
            return asyncio.run(worker(settings.with_private_key_loaded(), agent_environ(os.environ, args.env_file)))
    except (ConfigError, StoreError) as exc:
        print(f"patchwright: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")  # argparse restricts the choices


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
    from bot import admin as admin_commands
    from bot.operations.services import offline_services
    from bot.store.factory import open_store
    from bot.tasks.model import utcnow

    store = await open_store(settings.database_url)
    try:
        await store.migrate()
        if args.command == "tasks":
            verb = args.tasks_command
            if verb == "list":
                out = await admin_commands.run_tasks_list(store, status=args.status, repo=args.repo, limit=args.limit)
            elif verb == "show":
                out = await admin_commands.run_tasks_show(store, args.task_id)
            elif verb == "logs":
                out = await admin_commands.run_tasks_logs(store, args.task_id, args.attempt)
            else:
                out = await admin_commands.run_tasks_command(
                    offline_services(settings, store, clock=utcnow),
                    args.task_id,
                    verb,
                    " ".join(getattr(args, "instructions", []) or []),
                )
        else:
            verb = args.deliveries_command
            if verb == "list":
                out = await admin_commands.run_deliveries_list(store, state=args.state, repo=args.repo, limit=args.limit)
            elif verb == "show":
                out = await admin_commands.run_deliveries_show(store, args.delivery_id, payload=args.payload)
            else:
                out = await admin_commands.run_deliveries_replay(store, args.delivery_id)
    except admin_commands.AdminError as exc:
        print(f"patchwright: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    print(out)
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


async def worker(settings: Settings, environ: Mapping[str, str]) -> int:
    from bot.store.factory import open_store
    from bot.runtime import run_worker

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


async def serve(settings: Settings, environ: Mapping[str, str]) -> int:
    from aiohttp import web

    settings.require_webhook_secret()

    from bot.app import IngressRunner, create_app, raise_open_file_limit
    from bot.runtime import start_runtime
    from bot.store.factory import SERVE_LEDGER_WRITER, open_store

    raise_open_file_limit()  # connections, not the default soft limit, should be what runs out
    # The ledger writer process starts from a few variables of this environment (PATH, locale, TMPDIR).
    store = await open_store(settings.database_url, ledger_writer=SERVE_LEDGER_WRITER, environ=os.environ)
    runner: web.AppRunner | None = None
    try:
        await store.migrate()
        app = create_app(settings, store=store, runtime=functools.partial(start_runtime, environ=environ))
        runner = IngressRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else settings.port
        print(f"patchwright listening on http://{settings.host}:{port} (webhooks: POST /webhook)", flush=True)
        print(f"database: {redact_url(settings.database_url)}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        if runner is not None:
            await runner.cleanup()
        await store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
