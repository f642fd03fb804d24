"""``patchwright emulator``: run the GitHub emulator standalone.

It creates the repositories given as ``owner/name=DIR`` (each from a directory's files), registers
a GitHub App installed on all of them, writes the App's private key to the data directory, and
prints the credentials and URLs a bot needs, as ``PATCHWRIGHT_*`` lines.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .emulator import Emulator


def parse_repo_arg(value: str) -> tuple[str, Path]:
    """``owner/name=DIR`` → (``owner/name``, DIR) (DIR as given; relative to the current
    directory, which :func:`run_emulator` resolves before anything changes it)."""
    name, sep, directory = value.partition("=")
    if not sep or name.count("/") != 1 or not all(name.split("/")) or not directory:
        raise argparse.ArgumentTypeError(f"expected owner/name=DIR, got {value!r}")
    return name, Path(directory)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``emulator`` command's options (the lead wires them into the main CLI)."""
    parser.add_argument("--port", type=int, default=3100, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument(
        "--repo",
        dest="repos",
        action="append",
        type=parse_repo_arg,
        default=[],
        metavar="OWNER/NAME=DIR",
        help="create a repository from DIR's files (repeatable)",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="where repositories and the key go")
    parser.add_argument("--app-name", default="patchwright")
    parser.add_argument("--webhook-url", default=None, help="the bot's webhook URL")
    parser.add_argument("--webhook-secret", default=None, help="default: a random secret")
    parser.add_argument("--ci-command", default=None, help="run this command as CI on every push")
    parser.add_argument(
        "--ci-check", dest="ci_checks", action="append", default=[], help="check name (repeatable)"
    )
    parser.add_argument(
        "--ci-provider",
        choices=("actions", "external"),
        default="actions",
        help="report CI as GitHub Actions (check runs) or as an external service (commit statuses)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for fault injection")
    parser.add_argument(
        "--stateless-tokens",
        action="store_true",
        help="issue installation tokens in GitHub's new ~520-character format",
    )
    parser.add_argument(
        "--mergeable-null-reads",
        type=int,
        default=1,
        metavar="N",
        help="reads of a changed pull request that answer mergeable: null (default 1)",
    )
    parser.add_argument(
        "--request-log", type=Path, default=None, help="append API requests to this JSONL file"
    )


async def run_emulator(
    port: int,
    repos: Sequence[tuple[str, Path]],
    *,
    data_dir: Path | None = None,
    app_name: str = "patchwright",
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    ci_command: str | None = None,
    ci_checks: Sequence[str] = (),
    ci_provider: str = "actions",
    seed: int = 0,
    stateless_tokens: bool = False,
    mergeable_null_reads: int = 1,
    request_log: Path | None = None,
    print_line: Callable[[str], None] = print,
    ready: Callable[[Emulator, dict[str, Any]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set (or the task is cancelled), after printing the credentials."""
    repos = [(full_name, Path(directory).expanduser().resolve()) for full_name, directory in repos]
    for full_name, directory in repos:
        if not directory.is_dir():
            raise SystemExit(f"patchwright emulator: --repo {full_name}={directory}: not a directory")
    with tempfile.TemporaryDirectory(prefix="pw-emulator-") as scratch:
        root = Path(data_dir).expanduser().resolve() if data_dir is not None else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        emulator = Emulator(
            root,
            seed=seed,
            request_log=Path(request_log).expanduser().resolve() if request_log is not None else None,
            stateless_tokens=stateless_tokens,
            mergeable_null_reads=mergeable_null_reads,
        )
        await emulator.start(port)
        try:
            secret = webhook_secret or secrets.token_hex(20)
            for full_name, directory in repos:
                owner, name = full_name.split("/")
                await emulator.create_repo(owner, name, source_dir=directory)
            app = await emulator.create_app(app_name, webhook_url=webhook_url, webhook_secret=secret)
            installation: dict[str, Any] | None = None
            if repos:
                account = repos[0][0].split("/")[0]
                installation = await emulator.create_installation(
                    app["id"], account, [full_name for full_name, _ in repos]
                )
            if ci_command:
                for full_name, _ in repos:
                    default = ("ci",) if ci_provider == "actions" else ("ci/external",)
                    emulator.configure_ci(
                        full_name, ci_command, checks=tuple(ci_checks) or default, provider=ci_provider
                    )
            key_path = root / f"{app['slug']}.private-key.pem"
            key_path.write_text(app["private_key"] or "")
            key_path.chmod(0o600)
            print_line(f"GitHub emulator on {emulator.base_url}")
            print_line(f"PATCHWRIGHT_GITHUB_URL={emulator.base_url}")
            print_line(f"PATCHWRIGHT_APP_ID={app['id']}")
            print_line(f"PATCHWRIGHT_APP_SLUG={app['slug']}")
            print_line(f"PATCHWRIGHT_PRIVATE_KEY_PATH={key_path}")
            print_line(f"PATCHWRIGHT_WEBHOOK_SECRET={secret}")
            if installation is not None:
                print_line(f"# installation id: {installation['id']}")
            for full_name, _ in repos:
                print_line(f"# {full_name}: {emulator.base_url}/{full_name}.git")
            print_line(f"# actors: {emulator.base_url}/_emulator/  (state, deliveries, violations)")
            if webhook_url is None:
                print_line(
                    f"# no webhook URL: set one with PATCH {emulator.base_url}/_emulator/apps/{app['id']}"
                )
            if ready is not None:
                ready(emulator, app)
            await (stop or asyncio.Event()).wait()
        finally:
            await emulator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m bot.sandbox.cli``; ``patchwright emulator`` does the same."""
    parser = argparse.ArgumentParser(prog="patchwright emulator", description=__doc__)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def run_from_args(args: argparse.Namespace) -> int:
    """Run the emulator with parsed ``add_arguments`` options until interrupted."""
    try:
        asyncio.run(
            run_emulator(
                args.port,
                args.repos,
                data_dir=args.data_dir,
                app_name=args.app_name,
                webhook_url=args.webhook_url,
                webhook_secret=args.webhook_secret,
                ci_command=args.ci_command,
                ci_checks=args.ci_checks,
                ci_provider=args.ci_provider,
                seed=args.seed,
                stateless_tokens=args.stateless_tokens,
                mergeable_null_reads=args.mergeable_null_reads,
                request_log=args.request_log,
            )
        )
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
