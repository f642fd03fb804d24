"""The whole loop: webhook-to-agent-start latency, and GitHub API requests per story.

    python bench/loop.py [--tasks 50] [--warmup 3] [--postgres-url URL | --no-postgres]

1. **Webhook to agent start** (SPEC §12: under 100 ms), per backend (SQLite file, PostgreSQL
   schema): the demo's world (:class:`bot.demo.DemoWorld`: the GitHub emulator, the bot as
   ``patchwright serve`` runs it with its embedded worker pool) with the ``command`` preset
   running ``bash -c 'echo $EPOCHREALTIME … >> starts; exec fake_agent …'``. For each of N
   issues, one at a time: open it, wait until that is handled, label it and wait until
   everything settled. The latency is the
   agent's first instruction minus the moment the emulator queued the ``issues.labeled``
   delivery, split into stages: to the task row (ingress, ledger, dispatcher, handler), to the
   attempt row (wake-up, claim, start), to the agent process (repository and config reads,
   status comment, checkout, prompt, spawn). The baseline is the same deliveries' ingress
   round trip (the emulator's POST until the bot's 202), measured in the same run. The first
   ``--warmup`` tasks (cold token, config and git caches) are reported apart.
2. **GitHub API requests per story**: the demo's story (``patchwright demo``) on SQLite, the
   emulator's request log counted by operation and by step, as ratios per attempt and per
   webhook the bot received.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python bench/loop.py): make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._postgres import drop_schema, postgres_problem
from bot.demo import MAINTAINER, REPO, TRIGGER_LABEL, DemoWorld, Story, WorldOptions
from bot.sandbox import fake_agent
from bot.logs import redact_url

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
TARGET_P99_MS = 100.0


@dataclass(frozen=True)
class Sample:
    """One task's path from webhook to agent, in seconds since the delivery was queued."""

    ingress: float  # the emulator's POST /webhook until the 202
    task_row: float
    attempt_row: float
    agent: float


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) with linear interpolation."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def stamping_command(starts: Path, script: Path) -> str:
    """A ``command`` preset template that writes the agent's start time, then becomes the fake agent."""
    agent = fake_agent.command_template(script=str(script))
    return f'echo "$EPOCHREALTIME" {{workdir}} >> {shlex.quote(str(starts))}; exec {agent}'


async def measure_latency(root: Path, tasks: int, *, database_url: str | None, schema: str | None) -> list[Sample]:
    starts = root / "agent-starts"
    script = root / "agent-script.json"
    world = await DemoWorld.start(
        root,
        WorldOptions(
            database_url=database_url,
            schema=schema,
            sandbox="none",
            ci=False,
            validate_responses=False,  # a test aid GitHub does not spend time on
            agent_script={"default": [{"exit": 0}]},  # no changes: the attempt ends at once
            agent_command=stamping_command(starts, script),
        ),
    )
    samples = []
    try:
        for n in range(tasks):
            issue = await world.emulator.open_issue(REPO, title=f"bench issue {n}", body="Do a thing.", user=MAINTAINER)
            number = int(issue["number"])
            await world.settle(60, quiet_rounds=1, interval=0.02)  # issues.opened is handled: nothing queued
            await world.emulator.label_issue(REPO, number, [TRIGGER_LABEL], user=MAINTAINER)
            await world.settle(60, quiet_rounds=2, interval=0.02)
            sent = next(
                d for d in reversed(world.emulator.deliveries())
                if d.event == "issues" and d.action == "labeled" and f'"number":{number},' in d.body.decode()
            )
            task = await world.task(number)
            [attempt] = await world.db.list_attempts(task.id)
            started = {line.split()[1].rsplit("/", 1)[1]: float(line.split()[0]) for line in starts.read_text().splitlines()}
            base = sent.created_at
            samples.append(
                Sample(
                    ingress=float(sent.duration or 0.0),
                    task_row=task.created_at.timestamp() - base,
                    attempt_row=attempt.started_at.timestamp() - base,
                    agent=started[task.id] - base,
                )
            )
    finally:
        await world.stop()
    return samples


def print_latency(backend: str, samples: list[Sample], warmup: int) -> None:
    cold, warm = samples[:warmup], samples[warmup:]
    ms = 1000.0

    def stats(values: list[float]) -> str:
        return f"{percentile(values, 0.5) * ms:7.1f} {percentile(values, 0.99) * ms:7.1f}"

    agent = [s.agent for s in warm]
    ingress = [s.ingress for s in warm]
    print(f"\n{backend}: webhook to agent start, {len(warm)} tasks one at a time ({len(cold)} warm-up tasks apart)")
    print(f"  {'stage (ms since issues.labeled was sent)':<44} {'p50':>7} {'p99':>7}")
    print(f"  {'ingress round trip (POST → 202), baseline':<44} {stats(ingress)}")
    print(f"  {'task row written (ledger, dispatcher, handler)':<44} {stats([s.task_row for s in warm])}")
    print(f"  {'attempt row written (wake-up, claim)':<44} {stats([s.attempt_row for s in warm])}")
    print(f"  {'agent process started':<44} {stats(agent)}")
    p50, p99 = percentile(agent, 0.5), percentile(agent, 0.99)
    print(
        f"  webhook-to-agent-start / ingress round trip: {p50 / percentile(ingress, 0.5):.1f}x at p50, "
        f"{p99 / percentile(ingress, 0.99):.1f}x at p99"
    )
    if cold:
        print(f"  warm-up tasks (cold caches): agent started after {', '.join(f'{s.agent * ms:.0f}' for s in cold)} ms")
    met = p99 * ms < TARGET_P99_MS
    print(f"  target p99 < {TARGET_P99_MS:.0f} ms: {'met' if met else 'NOT met'} ({p99 * ms:.1f} ms)")


async def count_story_requests(root: Path) -> None:
    world = await DemoWorld.start(root, WorldOptions(sandbox="none"))
    try:
        story = Story(world)
        steps = [
            ("1 label → CI fails → CI retry → CI passes", story.label_issue),
            ("2 review → feedback retry → thread reply", story.request_changes),
            ("3 conflicting push → conflict retry", story.push_conflicting_commit),
            ("4 merge", story.merge),
        ]
        per_step = []
        before = 0
        for name, step in steps:
            await step()
            now = len(world.emulator.requests())
            per_step.append((name, now - before))
            before = now
        task = await world.task(story.marks.issue)
        requests = world.emulator.requests()
        attempts = len(await world.db.list_attempts(task.id))
        webhooks = len(await world.db.list_deliveries(limit=100_000))
        violations = len(world.emulator.violations())
    finally:
        await world.stop()

    by_operation = Counter(r.operation_id or f"{r.method} {r.path}" for r in requests)
    conditional = sum(1 for r in requests if r.status == 304)
    writes = sum(1 for r in requests if r.method != "GET")
    total = len(requests)
    print(f"\nGitHub API requests per story (`patchwright demo`, SQLite): {total} in {len(by_operation)} operations")
    print(f"  task {task.status.value} after {attempts} attempts; {webhooks} webhooks received; {violations} violations")
    print(f"  {'operation':<44} {'requests':>8}")
    for operation, count in by_operation.most_common():
        print(f"  {operation:<44} {count:>8}")
    print(f"  {'by step':<44}")
    for name, count in per_step:
        print(f"  {name:<44} {count:>8}")
    print(
        f"  {writes} writes, {total - writes} reads ({conditional} answered 304 from the ETag cache); "
        f"{total / attempts:.1f} requests per attempt, {total / webhooks:.2f} per webhook received"
    )


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=50, help="measured tasks per backend (default 50)")
    parser.add_argument("--warmup", type=int, default=3, help="tasks before those, reported apart (default 3)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    total = args.tasks + args.warmup

    with tempfile.TemporaryDirectory(prefix="patchwright-bench-loop-") as tmp:
        print(f"measuring {total} tasks on SQLite …", file=sys.stderr)
        sqlite = await measure_latency(Path(tmp) / "sqlite", total, database_url=None, schema=None)
        print_latency("SQLite", sqlite, args.warmup)

        problem = "skipped (--no-postgres)" if args.no_postgres else await postgres_problem(args.postgres_url)
        if problem is not None:
            print(f"\nPostgreSQL: {redact_url(args.postgres_url)} not measured: {problem}")
        else:
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            print(f"measuring {total} tasks on PostgreSQL …", file=sys.stderr)
            try:
                postgres = await measure_latency(
                    Path(tmp) / "postgres", total, database_url=args.postgres_url, schema=schema
                )
            finally:
                await drop_schema(args.postgres_url, schema)
            print_latency("PostgreSQL", postgres, args.warmup)
            print(
                f"  PostgreSQL / SQLite at p50: "
                f"{percentile([s.agent for s in postgres[args.warmup:]], 0.5) / percentile([s.agent for s in sqlite[args.warmup:]], 0.5):.2f}x"
            )

        print("playing the story …", file=sys.stderr)
        await count_story_requests(Path(tmp) / "story")
    return 0  # a missed target is a result, printed above, not an error


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
