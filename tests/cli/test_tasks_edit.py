"""`patchwright tasks edit ID --spec-file F --instructions TEXT` through the real command line:
a paused task's input changes (with its audit record), any other status is refused with the
rule's reason (exit code 1), a bad command line is a usage error (exit code 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bot.prompts import AttemptContext, TaskContext, build_prompt
from bot.store.base import TaskEvent
from bot.store.factory import open_store
from bot.tasks import rules
from bot.tasks.model import Status, utcnow


def cli(tmp_path: Path, db: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PATCHWRIGHT_DATABASE_URL": f"sqlite:///{db}"}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        check=False,
        input=stdin,
    )


async def seed(db: Path) -> None:
    store = await open_store(f"sqlite:///{db}")
    await store.migrate()
    for number, status in ((7, Status.PAUSED), (8, Status.RUNNING), (9, Status.MERGED)):
        task = rules.new_task(
            id=f"task_0{number}edit", repo="o/r", installation_id=1, issue_number=number, title="Fix it",
            spec="old spec", max_attempts=5, max_cost_usd=3.0, agent="command", model="", base_branch="main",
            now=utcnow(),
        )
        await store.create_task(task)
        await store.transition(task.id, from_statuses=[Status.PENDING], changes={"status": status},
                               event=TaskEvent(task_id=task.id, kind="transition", reason="seeded", actor="test",
                                               from_status=Status.PENDING, to_status=status))
    await store.close()


async def test_tasks_edit(tmp_path: Path):
    db = tmp_path / "p.db"
    await seed(db)
    spec_file = tmp_path / "spec.md"
    spec_file.write_text("The new spec.\n\n- [ ] empty input gives []\n")

    edited = cli(tmp_path, db, "tasks", "edit", "o/r#7", "--spec-file", str(spec_file), "--instructions", "Add a test.")
    assert edited.returncode == 0, edited.stderr
    assert edited.stdout.startswith("task_07edit: input edited: Input edited by cli while paused")
    assert "`patchwright tasks resume task_07edit`" in edited.stdout

    from_stdin = cli(tmp_path, db, "tasks", "edit", "07edit", "--spec-file", "-", stdin="The new spec.\n\n- [ ] empty input gives []\n")
    assert from_stdin.returncode == 0 and "input unchanged" in from_stdin.stdout

    running = cli(tmp_path, db, "tasks", "edit", "task_08edit", "--instructions", "x")
    assert running.returncode == 1
    assert "this task is running" in running.stderr and "`patchwright tasks stop task_08edit` first" in running.stderr
    merged = cli(tmp_path, db, "tasks", "edit", "task_09edit", "--instructions", "x")
    assert merged.returncode == 1 and "this task is merged" in merged.stderr

    nothing = cli(tmp_path, db, "tasks", "edit", "task_07edit")
    assert nothing.returncode == 2 and "Give the new issue text" in nothing.stderr
    missing = cli(tmp_path, db, "tasks", "edit", "task_07edit", "--spec-file", str(tmp_path / "nope.md"))
    assert missing.returncode == 2 and "--spec-file" in missing.stderr and "nope.md" in missing.stderr

    store = await open_store(f"sqlite:///{db}")
    try:
        task = await store.get_task("task_07edit")
        assert task.status is Status.PAUSED and task.spec == spec_file.read_text()
        event = (await store.list_events(task.id))[-1]
        assert event.actor == "cli" and {"spec", "retry_context"} <= set(event.changes)
        resumed = rules.resume(task, now=utcnow()).task
        prompt = build_prompt(TaskContext.from_task(resumed), AttemptContext.from_task(resumed)).text
        assert "empty input gives []" in prompt and "Add a test." in prompt and "old spec" not in prompt
        for other in ("task_08edit", "task_09edit"):
            assert (await store.get_task(other)).spec == "old spec"
    finally:
        await store.close()
