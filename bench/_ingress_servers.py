"""The servers ``bench/ingress.py`` compares, each run as ``python -m bench._ingress_servers KIND``.

- ``bare``: aiohttp answering 202 to ``POST /webhook`` after reading the body (the floor).
- ``gidgethub``: reads the body, ``gidgethub.sansio.Event.from_http(headers, body, secret=…)``
  (verifies the signature, parses the JSON) and ``await router.dispatch(event)`` to a no-op
  handler, answers 202: the usual minimal gidgethub bot.
- ``patchwright``: ``bot.app.create_app(settings, store=…)`` without a runtime (ingress and
  health only) on the store ``--database-url`` names, migrated first.
- ``patchwright-no-ledger``: the same app on a store whose ``record_delivery`` builds the
  ledger row and records nothing (:class:`NoLedgerStore`): a control, what the web stack and
  the ingress's own checks cost on this machine without any durable write.

One process, one event loop, access log off, 127.0.0.1 on a free port. Protocol with the
parent: the secret arrives as the first stdin line; the process prints ``{"port": N}`` once
it listens, serves until stdin closes, then shuts down (a patchwright store is closed, which
writes what it has queued) and prints ``{"statuses": {...}, "cpu_s": …, …}``: the answers it
sent by status, counted on ``on_response_prepare`` (also answers whose client had already
gone away), the CPU time (user + system, all threads, and the SQLite ledger's writer
process) it used while serving, the wall time, the main thread's CPU time (Linux), the
writer's own and, for the SQLite ledger, its committed batches, the calls they answered and
its WAL syncs while serving.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from bot.store.base import Store

KINDS = ("bare", "gidgethub", "patchwright", "patchwright-no-ledger")


class StatusCounter:
    """Counts the answers an application starts sending, by status."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        self.counts[response.status] += 1


def cpu_seconds() -> float:
    """User + system CPU time of this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of another process so far (0 where the system does not tell)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main_thread_cpu_seconds() -> float | None:
    """User + system CPU time of the main thread (the event loop) so far; None where the
    system does not tell (it is read from /proc)."""
    try:
        with open(f"/proc/self/task/{os.getpid()}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bare_app() -> web.Application:
    async def webhook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/webhook", webhook)
    return app


def gidgethub_app(secret: str) -> web.Application:
    from gidgethub import BadRequest, ValidationFailure, routing, sansio

    router = routing.Router()

    @router.register("issues", action="labeled")
    async def labeled(event: sansio.Event) -> None:
        return None

    async def webhook(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = sansio.Event.from_http(request.headers, body, secret=secret)
        except ValidationFailure as exc:
            return web.Response(status=401, text=str(exc))
        except BadRequest as exc:
            return web.Response(status=exc.status_code, text=str(exc))
        except ValueError as exc:  # invalid JSON
            return web.Response(status=400, text=str(exc))
        await router.dispatch(event)
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/webhook", webhook)
    return app


class NoLedgerStore:
    """The control's store: ``record_delivery`` builds the ledger's row as the store would and
    answers "recorded" without writing it; everything else is the real store's."""

    def __init__(self, store: Store) -> None:
        from bot.store.rows import delivery_params
        from bot.store.sqlite import encode_time

        self._store = store
        self._row = lambda delivery: delivery_params(delivery, encode_time)

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    async def record_delivery(self, delivery) -> bool:
        self._row(delivery)
        return True


async def patchwright_app(
    secret: str, database_url: str, schema: str | None, *, ledger: bool = True
) -> tuple[web.Application, Store, Callable[[], dict[str, int]] | None]:
    from bot.app import create_app
    from bot.config import load_settings
    from bot.store.factory import SERVE_LEDGER_WRITER, open_store

    # the SQLite ledger's writer as `patchwright serve` runs it (a process of its own)
    store = await open_store(database_url, schema=schema, ledger_writer=SERVE_LEDGER_WRITER, environ=os.environ)
    try:
        await store.migrate()
        settings = load_settings(
            {"PATCHWRIGHT_WEBHOOK_SECRET": secret, "PATCHWRIGHT_DATABASE_URL": database_url}, env_file=None
        )
        if not ledger:
            return create_app(settings, store=NoLedgerStore(store)), store, None  # type: ignore[arg-type]
        return create_app(settings, store=store), store, getattr(store, "ledger_stats", None)
    except BaseException:
        await store.close()
        raise


async def serve(kind: str, database_url: str | None, schema: str | None, profile: Path | None) -> dict:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    secret = (await stdin.readline()).decode().rstrip("\n")
    store: Store | None = None
    ledger_stats: Callable[[], dict[str, int]] | None = None
    if kind == "bare":
        app = bare_app()
    elif kind == "gidgethub":
        app = gidgethub_app(secret)
    else:
        if not database_url:
            raise SystemExit("patchwright needs --database-url")
        app, store, ledger_stats = await patchwright_app(
            secret, database_url, schema, ledger=kind == "patchwright"
        )
    writer_pid = getattr(store, "ledger_writer_pid", None) if ledger_stats is not None else None
    counter = StatusCounter()
    app.on_response_prepare.append(counter.on_response_prepare)
    if kind not in ("bare", "gidgethub"):  # patchwright's ingress, with the connection guards `serve` runs
        from bot.app import IngressRunner

        runner: web.AppRunner = IngressRunner(app, access_log=None, handle_signals=False)
    else:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
    profiler = cProfile.Profile() if profile is not None else None
    cpu = wall = 0.0
    main_cpu: float | None = None
    ledger: dict[str, int] | None = None
    try:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        print(json.dumps({"port": port}), flush=True)
        if profiler is not None:
            profiler.enable()
        cpu, main_cpu, wall = cpu_seconds(), main_thread_cpu_seconds(), time.monotonic()
        writer_cpu = process_cpu_seconds(writer_pid)
        ledger_before = ledger_stats() if ledger_stats is not None else {}
        await stdin.read()  # until the parent closes our stdin
        writer_cpu = process_cpu_seconds(writer_pid) - writer_cpu
        cpu = cpu_seconds() - cpu + writer_cpu
        if main_cpu is not None:
            main_cpu = (main_thread_cpu_seconds() or 0.0) - main_cpu
        wall = time.monotonic() - wall
        if ledger_stats is not None:
            ledger = {key: value - ledger_before[key] for key, value in ledger_stats().items()}
        if profiler is not None:
            profiler.disable()
    finally:
        await runner.cleanup()
        if store is not None:
            await store.close()
    if profiler is not None and profile is not None:
        profiler.dump_stats(str(profile))
    return {
        "statuses": {str(status): n for status, n in sorted(counter.counts.items())},
        "cpu_s": cpu,
        "wall_s": wall,
        "main_thread_cpu_s": main_cpu,
        "writer_cpu_s": writer_cpu if writer_pid is not None else None,
        "ledger": ledger,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="One server of bench/ingress.py (see the module docstring).")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--database-url", help="patchwright only: the ledger's store URL")
    parser.add_argument("--schema", help="patchwright on PostgreSQL: the schema to use")
    parser.add_argument("--profile", type=Path, help="write cProfile stats of the serving loop here")
    args = parser.parse_args(argv)
    result = asyncio.run(serve(args.kind, args.database_url, args.schema, args.profile))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
