"""`patchwright tasks …`, `deliveries …` and `replay` through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bot.admin import format_tasks, signed_request, table
from bot.store.base import Delivery, DeliveryState
from bot.store.factory import open_store
from bot.tasks import rules
from bot.tasks.model import Status, utcnow


def cli(tmp_path: Path, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PATCHWRIGHT_DATABASE_URL": f"sqlite:///{db}"}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


def test_pure_formatting():
    assert table([("a", 1)], ("x", "y")).splitlines() == ["x  y", "-  -", "a  1"]
    assert format_tasks([]) == "no tasks"
    h = signed_request(b"{}", event="ping", secret="s", delivery_id="d")
    assert h["X-Hub-Signature-256"].startswith("sha256=") and h["X-GitHub-Event"] == "ping"


async def test_tasks_and_deliveries_commands(tmp_path: Path):
    db = tmp_path / "p.db"
    store = await open_store(f"sqlite:///{db}")
    await store.migrate()
    task = rules.new_task(
        id="task_01abc", repo="o/r", installation_id=1, issue_number=7, title="Fix it", spec="s",
        max_attempts=5, max_cost_usd=3.0, agent="command", model="", base_branch="main", now=utcnow(),
    )
    await store.create_task(task)
    await store.record_delivery(
        Delivery(id="d-1", event="issues", action="labeled", repo="o/r", installation_id=1,
                 payload=json.dumps({"action": "labeled"}).encode(), received_at=utcnow())
    )
    await store.finish_delivery("d-1", state=DeliveryState.DONE, outcome="x", ignore_reason="not permitted")
    await store.close()

    out = cli(tmp_path, db, "tasks", "list")
    assert out.returncode == 0 and "task_01abc" in out.stdout and "pending" in out.stdout
    show = cli(tmp_path, db, "tasks", "show", "task_01abc")
    assert "o/r#7  Fix it" in show.stdout and "attempt     1 of 5" in show.stdout
    stop = cli(tmp_path, db, "tasks", "stop", "task_01abc")
    assert stop.returncode == 0 and "pending -> paused" in stop.stdout
    again = cli(tmp_path, db, "tasks", "stop", "task_01abc")
    assert again.returncode == 1 and "Cannot" in again.stderr
    retry = cli(tmp_path, db, "tasks", "retry", "task_01abc", "try", "harder")
    assert retry.returncode == 0 and "paused -> pending" in retry.stdout

    listing = cli(tmp_path, db, "deliveries", "list")
    assert "d-1" in listing.stdout and "not permitted" in listing.stdout
    detail = cli(tmp_path, db, "deliveries", "show", "d-1", "--payload")
    assert '"action": "labeled"' in detail.stdout
    replay = cli(tmp_path, db, "deliveries", "replay", "d-1")
    assert replay.returncode == 0 and "queued again" in replay.stdout

    store = await open_store(f"sqlite:///{db}")
    try:
        assert (await store.get_delivery("d-1")).state is DeliveryState.PENDING
        final = await store.get_task("task_01abc")
        assert final.status is Status.PENDING and final.retry_context.endswith("try harder")
    finally:
        await store.close()


async def test_list_filters_match_the_dashboards(tmp_path: Path):
    from bot.__main__ import _parser
    from bot.admin import BOTS_ANSWERS, run_deliveries_list, run_tasks_list

    store = await open_store(f"sqlite:///{tmp_path / 'f.db'}")
    await store.migrate()
    for number, title in ((7, "Fix the parser"), (8, "Speed up the cache")):
        await store.create_task(rules.new_task(
            id=f"task_0{number}", repo="o/r", installation_id=1, issue_number=number, title=title, spec="",
            max_cost_usd=3.0, agent="command", model="", base_branch="main", now=utcnow(),
        ))
    for n, (event, action, sender) in enumerate((("issues", "labeled", "mona"), ("issue_comment", "edited", "pw[bot]"))):
        await store.record_delivery(Delivery(id=f"d-{n}", event=event, action=action, repo="o/r", installation_id=1,
                                             payload=b"{}", received_at=utcnow(), sender=sender))
        await store.finish_delivery(f"d-{n}", state=DeliveryState.DONE, outcome="x", ignore_reason="own" if n else "")
    try:
        found = json.loads(await run_tasks_list(store, status=None, repo=None, limit=10, as_json=True, search="#8"))
        assert [t["id"] for t in found] == ["task_08"]

        async def ids(**filters) -> list[str]:
            listing = await run_deliveries_list(store, state=None, repo=None, limit=10, as_json=True, **filters)
            return [d["id"] for d in json.loads(listing)]

        assert await ids(event="issues") == ["d-0"]
        assert await ids(event="issue_comment.edited") == ["d-1"]
        assert await ids(verdict="ignored") == ["d-1"]
        assert await ids(from_bots=False) == ["d-0"]
        assert await ids(from_bots=True) == ["d-1"]
    finally:
        await store.close()
    args = _parser().parse_args(["deliveries", "list", "--bots", "no", "--verdict", "acted", "--event", "issues"])
    assert (BOTS_ANSWERS[args.bots], args.verdict, args.event) == (False, "acted", "issues")
    for answer in BOTS_ANSWERS:  # every answer the command takes is one the parser accepts
        assert _parser().parse_args(["deliveries", "list", "--bots", answer]).bots == answer
