"""Concurrency on both backends: many Store instances (separate connections) racing."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from datetime import timedelta

from bot.store.base import Delivery, DeliveryState, Store
from bot.tasks.model import Status, Task, new_id

CLAIMERS = 16


async def seed_tasks(store: Store, clock, count: int, repos: list[str]) -> list[Task]:
    """``count`` pending tasks spread round-robin over ``repos``, created in clock order."""
    tasks = [
        Task(
            id=new_id("task"),
            repo=repos[n % len(repos)],
            installation_id=1,
            issue_number=n,
            title=f"issue {n}",
            created_at=clock.now + timedelta(microseconds=n),
            updated_at=clock.now,
        )
        for n in range(count)
    ]
    for start in range(0, count, 50):
        await asyncio.gather(*(store.create_task(t) for t in tasks[start : start + 50]))
    clock.advance(timedelta(seconds=1))
    return tasks


async def test_concurrent_claimers_claim_every_task_exactly_once(store, make_store, clock):
    tasks = await seed_tasks(store, clock, 1000, [f"acme/r{n}" for n in range(7)])
    claimers = [await make_store() for _ in range(CLAIMERS)]

    async def claim_all(claimer: Store, worker: str) -> list[str]:
        got = []
        while (task := await claimer.claim_task(worker)) is not None:
            assert task.worker_id == worker and task.status is Status.RUNNING
            got.append(task.id)
        return got

    results = await asyncio.gather(*(claim_all(c, f"w{n}") for n, c in enumerate(claimers)))
    claimed = [task_id for got in results for task_id in got]
    assert len(claimed) == len(set(claimed)) == 1000
    assert set(claimed) == {t.id for t in tasks}
    assert sum(1 for got in results if got) > 1  # the claimers really raced
    owner = {task_id: f"w{n}" for n, got in enumerate(results) for task_id in got}
    stored = await store.list_tasks(limit=2000)
    assert all(t.status is Status.RUNNING and t.worker_id == owner[t.id] for t in stored)
    assert await store.claim_task("late") is None


async def test_concurrent_claimers_never_exceed_limits(store, make_store, clock):
    repos = ["acme/a", "acme/b", "acme/c", "acme/d"]
    limits = {"acme/a": 1, "acme/b": 2, "acme/c": 3, "acme/d": 2}
    global_limit = 6
    await seed_tasks(store, clock, 120, repos)
    claimers = [await make_store() for _ in range(CLAIMERS)]
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    done: list[str] = []

    async def work(claimer: Store, worker: str) -> None:
        idle = 0
        while idle < 3:
            task = await claimer.claim_task(worker, max_running=global_limit, repo_limits=limits)
            if task is None:
                if not await store.list_tasks(statuses=[Status.PENDING], limit=1):
                    return
                idle += 1
                await asyncio.sleep(0.01)
                continue
            idle = 0
            running[task.repo] += 1
            peak[task.repo] = max(peak[task.repo], running[task.repo])
            assert running[task.repo] <= limits[task.repo]
            assert sum(running.values()) <= global_limit
            await asyncio.sleep(0)  # "work"
            running[task.repo] -= 1
            finished = await claimer.transition(
                task.id, from_statuses=[Status.RUNNING], changes={"status": Status.REVIEW}
            )
            assert finished is not None
            done.append(task.id)

    await asyncio.gather(*(work(c, f"w{n}") for n, c in enumerate(claimers)))
    assert len(done) == len(set(done)) == 120
    assert all(peak[repo] <= limits[repo] for repo in repos)
    assert await store.list_tasks(statuses=[Status.PENDING, Status.RUNNING]) == []


async def test_concurrent_claimers_fill_the_limits_exactly(store, make_store, clock):
    repos = ["acme/a", "acme/b", "acme/c"]
    await seed_tasks(store, clock, 60, repos)
    claimers = [await make_store() for _ in range(CLAIMERS)]

    async def claim_until_none(claimer: Store, worker: str) -> int:
        count = 0
        while await claimer.claim_task(worker, max_running_per_repo=2) is not None:
            count += 1
        return count

    assert sum(await asyncio.gather(*(claim_until_none(c, f"w{n}") for n, c in enumerate(claimers)))) == 6
    running = await store.list_tasks(statuses=[Status.RUNNING])
    assert Counter(t.repo for t in running) == {repo: 2 for repo in repos}
    more = await asyncio.gather(*(c.claim_task("w", max_running=7, max_running_per_repo=3) for c in claimers))
    assert sum(1 for t in more if t is not None) == 1
    assert len(await store.list_tasks(statuses=[Status.RUNNING])) == 7


async def test_concurrent_record_delivery_keeps_one_row_per_id(store, make_store, clock):
    instances = [store] + [await make_store() for _ in range(3)]
    copies = [
        Delivery(
            f"delivery-{n:03d}", "issues", "labeled", f"acme/r{n % 9}", 1, f'{{"n": {n}}}'.encode(), clock.now
        )
        for n in range(200)
        for _ in range(5)
    ]
    random.Random(7).shuffle(copies)
    results = await asyncio.gather(
        *(instances[i % len(instances)].record_delivery(d) for i, d in enumerate(copies))
    )
    assert len(results) == 1000
    assert results.count(True) == 200
    assert results.count(False) == 800
    winners = Counter(d.id for d, won in zip(copies, results, strict=True) if won)
    assert set(winners.values()) == {1} and len(winners) == 200
    stored = await store.list_deliveries(limit=5000)
    assert len(stored) == 200
    assert len({d.seq for d in stored}) == 200
    assert all(d.payload == f'{{"n": {int(d.id[-3:])}}}'.encode() for d in stored)


async def test_concurrent_transitions_of_one_task_one_wins(store, make_store, clock):
    other = await make_store()
    for round_number in range(20):
        task, _ = await store.create_task(
            Task(id=new_id("task"), repo="acme/a", installation_id=1, issue_number=round_number, title="t")
        )
        by_status, by_version = await asyncio.gather(
            store.transition(
                task.id, from_statuses=[Status.PENDING], changes={"status": Status.PAUSED, "worker_id": "a"}
            ),
            other.transition(
                task.id, from_statuses=[Status.PENDING], changes={"status": Status.CLOSED, "worker_id": "b"}
            ),
        )
        assert (by_status is None) != (by_version is None)
        winner = by_status or by_version
        assert await store.get_task(task.id) == winner
        # compare-and-swap on version, with a status check that both pass
        cas = await asyncio.gather(
            store.transition(
                task.id, from_statuses=list(Status), changes={"spec": "a"}, expect_version=winner.version
            ),
            other.transition(
                task.id, from_statuses=list(Status), changes={"spec": "b"}, expect_version=winner.version
            ),
        )
        assert sum(1 for t in cas if t is not None) == 1
        assert (await store.get_task(task.id)).version == winner.version + 1


async def test_concurrent_dispatchers_keep_rows_exclusive_and_repos_in_order(store, make_store, clock):
    repos = ["acme/a", "acme/b", "acme/c", "acme/d", ""]
    deliveries = [
        Delivery(
            f"d-{n:03d}", "issue_comment", "created", repos[n % 5] if n % 7 else "acme/a", 1, b"{}", clock.now
        )
        for n in range(240)
    ]
    for delivery in deliveries:
        assert await store.record_delivery(delivery)
    seq_of = {d.id: d.seq for d in await store.list_deliveries(limit=1000)}
    dispatchers = [await make_store() for _ in range(6)]
    in_flight: set[str] = set()
    claims: Counter[str] = Counter()
    order: defaultdict[str, list[int]] = defaultdict(list)

    async def dispatch(dispatcher: Store, name: str) -> None:
        # until no row is pending: under load a dispatcher may find every repository busy for
        # a while (its rows in flight elsewhere), and must not give up while rows remain
        while True:
            batch = await dispatcher.claim_deliveries(name, limit=4)
            if not batch:
                if not await store.list_deliveries(state=DeliveryState.PENDING, limit=1):
                    return
                await asyncio.sleep(0.005)
                continue
            batch_repos = [d.repo for d in batch if d.repo]
            assert len(batch_repos) == len(set(batch_repos))
            for delivery in batch:
                claims[delivery.id] += 1
                if delivery.repo:
                    assert delivery.repo not in in_flight, f"two rows of {delivery.repo} in flight"
                    in_flight.add(delivery.repo)
                    order[delivery.repo].append(delivery.seq)
            await asyncio.sleep(0.005)  # "handlers": they take a moment, in which others claim
            for delivery in batch:
                in_flight.discard(delivery.repo)
                await dispatcher.finish_delivery(delivery.id, state=DeliveryState.DONE, outcome=name)

    await asyncio.wait_for(asyncio.gather(*(dispatch(d, f"disp-{n}") for n, d in enumerate(dispatchers))), 60)
    assert set(claims) == set(seq_of) and set(claims.values()) == {1}
    for repo, seqs in order.items():
        assert seqs == sorted(seqs), repo
    assert len({d.outcome for d in await store.list_deliveries(limit=1000)}) > 1  # several took part
    assert await store.list_deliveries(state=DeliveryState.PENDING) == []
    assert await store.list_deliveries(state=DeliveryState.PROCESSING) == []
