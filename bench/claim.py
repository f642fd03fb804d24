"""Task claims per second with 1, 4 and 16 concurrent workers, each its own Store.

    python bench/claim.py [--tasks N] [--workers 1,4,16] [--postgres-url URL]

For each backend (SQLite file, PostgreSQL schema) and worker count: a fresh database with N
pending tasks (seeding is not timed), then every worker claims until nothing is left.
Checks that every task was claimed exactly once, and prints claims/s with the ratio to the
single-worker figure of the same backend measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python bench/claim.py): make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._postgres import drop_schema, postgres_problem
from bot.store.base import Store, StoreError
from bot.store.factory import open_store
from bot.logs import redact_url
from bot.tasks.model import Task, new_id, utcnow

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Result:
    backend: str
    workers: int
    claims: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.claims / self.seconds


async def seed(store: Store, count: int) -> None:
    start = utcnow() - timedelta(hours=1)
    tasks = [
        Task(
            id=new_id("task"),
            repo=f"bench/r{n % 50}",
            installation_id=1,
            issue_number=n,
            title=f"issue {n}",
            created_at=start + timedelta(microseconds=n),
            updated_at=start,
        )
        for n in range(count)
    ]
    for first in range(0, count, 100):
        await asyncio.gather(*(store.create_task(task) for task in tasks[first : first + 100]))


async def run_one(backend: str, url: str, schema: str | None, tasks: int, workers: int) -> Result:
    seeder = await open_store(url, schema=schema)
    stores: list[Store] = []
    try:
        await seeder.migrate()
        await seed(seeder, tasks)
        stores = [await open_store(url, schema=schema) for _ in range(workers)]

        async def claim_all(store: Store, worker: str) -> list[str]:
            got = []
            while (task := await store.claim_task(worker)) is not None:
                got.append(task.id)
            return got

        started = time.perf_counter()
        results = await asyncio.gather(*(claim_all(s, f"w{n}") for n, s in enumerate(stores)))
        elapsed = time.perf_counter() - started
        claimed = [task_id for got in results for task_id in got]
        if len(claimed) != tasks or len(set(claimed)) != tasks:
            raise SystemExit(
                f"{backend}/{workers}: {len(claimed)} claims, {len(set(claimed))} distinct, {tasks} tasks"
            )
        return Result(backend, workers, len(claimed), elapsed)
    finally:
        for store in stores:
            await store.close()
        await seeder.close()


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=2000, help="pending tasks per run (default 2000)")
    parser.add_argument("--workers", default="1,4,16", help="worker counts (default 1,4,16)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args(argv)
    counts = sorted({int(n) for n in args.workers.split(",")})
    if 1 not in counts:
        counts.insert(0, 1)  # the baseline every ratio is measured against

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="patchwright-bench-") as tmp:
        for workers in counts:
            url = f"sqlite:///{Path(tmp) / f'claim-{workers}.db'}"
            results.append(await run_one("sqlite", url, None, args.tasks, workers))
            print(f"  sqlite   {workers:>2} workers done", file=sys.stderr)

    problem = await postgres_problem(args.postgres_url)
    if problem is not None:
        print(f"PostgreSQL skipped: {redact_url(args.postgres_url)} unreachable ({problem})")
    else:
        for workers in counts:
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            try:
                results.append(await run_one("postgres", args.postgres_url, schema, args.tasks, workers))
            except StoreError as exc:
                print(f"PostgreSQL run with {workers} workers failed: {exc}")
                break
            finally:
                await drop_schema(args.postgres_url, schema)
            print(f"  postgres {workers:>2} workers done", file=sys.stderr)

    print(f"\nclaims of {args.tasks} pending tasks, every task claimed exactly once")
    print(f"{'backend':<9} {'workers':>7} {'claims/s':>10} {'seconds':>8} {'vs 1 worker':>12}")
    for result in results:
        baseline = next(r for r in results if r.backend == result.backend and r.workers == 1)
        print(
            f"{result.backend:<9} {result.workers:>7} {result.rate:>10.0f} {result.seconds:>8.2f}"
            f" {result.rate / baseline.rate:>11.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
