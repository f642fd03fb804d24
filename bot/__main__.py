"""The `patchwright` command line (also `python -m bot`).

This is the only module that reads the process environment: it builds one Settings object
and passes it down.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.config import (
    ConfigError,
    RepoConfigError,
    Settings,
    dump_repo_config,
    load_settings,
    parse_repo_config,
)
from bot.logs import configure_logging

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

    from bot.sandbox import cli as emulator_cli

    emulator = sub.add_parser(
        "emulator",
        help="run the local GitHub emulator standalone",
        description="Run the local GitHub emulator (REST, git over HTTP, webhooks, CI) and print "
        "the App's credentials and URLs.",
    )
    emulator_cli.add_arguments(emulator)

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
    if args.command == "emulator":
        from bot.sandbox import cli as emulator_cli

        return emulator_cli.run_from_args(args)
    try:
        settings = load_settings(os.environ, env_file=args.env_file)
        configure_logging(settings.log_format, settings.log_level)
        if args.command == "migrate":
            return asyncio.run(migrate(settings))
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
            return asyncio.run(serve(settings))
    except ConfigError as exc:
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


async def migrate(settings: Settings) -> int:
    from bot.store.factory import open_store

    store = await open_store(settings.database_url)
    try:
        applied = await store.migrate()
    finally:
        await store.close()
    print(f"migrations applied: {', '.join(map(str, applied)) if applied else 'none (up to date)'}")
    return 0


async def serve(settings: Settings) -> int:
    from aiohttp import web

    settings.require_webhook_secret()

    from bot.app import create_app, start_runtime
    from bot.store.factory import open_store

    store = await open_store(settings.database_url)
    runner: web.AppRunner | None = None
    try:
        await store.migrate()
        app = create_app(settings, store=store, runtime=start_runtime)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else settings.port
        print(f"patchwright listening on http://{settings.host}:{port} (webhooks: POST /webhook)", flush=True)
        print(f"database: {settings.database_url}", flush=True)
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
