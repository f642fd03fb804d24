"""A scriptable command line (issue 15): `--version`, `--json` on every list and show, tasks
named by a unique prefix or `owner/repo#N`, one `tasks` action per row of the verb table, and
`tasks logs --follow` — in-process on a SQLite database in a temporary directory."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import bot.__main__ as cli
from bot import admin
from bot.config import Settings
from bot.store.base import Attempt, Delivery, DeliveryState, TaskEvent
from bot.store.factory import open_store
from bot.tasks import rules, verbs
from bot.tasks.model import RetryKind, Status, Task, utcnow
from bot.web import views

# Three tasks: two share the prefix task_01aaaa; one has a pull request (#20).
PENDING, IN_REVIEW, PAUSED = "task_01aaaa1xyz", "task_01aaaa2xyz", "task_01bbbb3xyz"


def _new(task_id: str, repo: str, issue: int) -> Task:
    return rules.new_task(
        id=task_id, repo=repo, installation_id=1, issue_number=issue, title=f"Fix {issue}", spec="s",
        max_attempts=5, max_cost_usd=3.0, agent="command", model="", base_branch="main", now=utcnow(),
    )


async def _fill(url: str) -> None:
    store = await open_store(url)
    try:
        await store.migrate()
        for task_id, repo, issue, status, changes in (
            (PENDING, "o/r", 7, Status.PENDING, {}),
            (IN_REVIEW, "o/r", 8, Status.REVIEW, {"pr_number": 20, "pr_url": "https://github.com/o/r/pull/20",
                                                 "branch": "patchwright/8"}),
            (PAUSED, "o/other", 7, Status.PAUSED, {}),
        ):
            task, _ = await store.create_task(
                _new(task_id, repo, issue), event=TaskEvent(task_id=task_id, kind="created", reason="made")
            )
            if status is not task.status:
                await store.transition(task_id, from_statuses=[task.status], changes={"status": status, **changes})
        await store.start_attempt(Attempt(task_id=IN_REVIEW, number=1, kind=RetryKind.FIRST, started_at=utcnow()))
        await store.append_logs(IN_REVIEW, 1, ["cloning", "editing"])
        await store.finish_attempt(IN_REVIEW, 1, outcome="pushed", cost_usd=0.5, summary="done")
        await store.record_delivery(
            Delivery(id="d-1", event="issues", action="labeled", repo="o/r", installation_id=1,
                     payload=json.dumps({"action": "labeled"}).encode(), received_at=utcnow())
        )
        await store.finish_delivery("d-1", state=DeliveryState.DONE, outcome="task created")
    finally:
        await store.close()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    asyncio.run(_fill(url))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "configure_logging", lambda *args, **kwargs: None)  # keep pytest's handlers
    monkeypatch.setenv("PATCHWRIGHT_DATABASE_URL", url)
    return url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def read_task(url: str, task_id: str) -> Task:
    async def read() -> Task:
        store = await open_store(url)
        try:
            task = await store.get_task(task_id)
            assert task is not None
            return task
        finally:
            await store.close()

    return asyncio.run(read())


def iso(value: str) -> datetime:
    when = datetime.fromisoformat(value)
    assert when.tzinfo is not None, value
    return when


# -- --version ---------------------------------------------------------------------------------


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out == f"patchwright {metadata.version('patchwright')}\n"


# -- --json --------------------------------------------------------------------------------------


def test_tasks_list_json_is_one_list_with_the_api_keys(db, capsys):
    code, out, _ = run(capsys, "tasks", "list", "--json")
    assert code == 0
    tasks = json.loads(out)
    assert isinstance(tasks, list) and {t["id"] for t in tasks} == {PENDING, IN_REVIEW, PAUSED}
    for task in tasks:
        assert list(task)[: len(views.TASK_SUMMARY_FIELDS)] == list(views.TASK_SUMMARY_FIELDS)
        iso(task["created_at"]), iso(task["updated_at"])
        assert "agent_session" not in task and "spec" not in task
    filtered = json.loads(run(capsys, "tasks", "list", "--json", "--status", "review")[1])
    assert [t["id"] for t in filtered] == [IN_REVIEW] and filtered[0]["pr_number"] == 20
    assert json.loads(run(capsys, "tasks", "list", "--json", "--repo", "nobody/none")[1]) == []


def test_tasks_show_json_is_the_task_with_attempts_and_events(db, capsys):
    code, out, _ = run(capsys, "tasks", "show", IN_REVIEW, "--json")
    assert code == 0
    task = json.loads(out)
    assert isinstance(task, dict) and task["id"] == IN_REVIEW and task["status"] == "review"
    assert set(views.TASK_DETAIL_FIELDS) <= set(task) and "agent_session" not in task
    assert [(a["number"], a["outcome"], a["cost_usd"]) for a in task["attempts"]] == [(1, "pushed", 0.5)]
    iso(task["attempts"][0]["started_at"]), iso(task["attempts"][0]["finished_at"])
    assert [e["kind"] for e in task["events"]] == ["created"]
    assert list(task["events"][0]) == list(views.EVENT_FIELDS)
    iso(task["events"][0]["at"])


def test_deliveries_list_and_show_json(db, capsys):
    code, out, _ = run(capsys, "deliveries", "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert isinstance(rows, list) and [d["id"] for d in rows] == ["d-1"]
    assert list(rows[0])[: len(views.DELIVERY_FIELDS)] == list(views.DELIVERY_FIELDS)
    iso(rows[0]["received_at"]), iso(rows[0]["processed_at"])
    assert rows[0]["state"] == "done" and "payload" not in rows[0]

    row = json.loads(run(capsys, "deliveries", "show", "d-1", "--json")[1])
    assert isinstance(row, dict) and row["id"] == "d-1" and row["outcome"] == "task created" and "payload" not in row
    with_payload = json.loads(run(capsys, "deliveries", "show", "d-1", "--json", "--payload")[1])
    assert with_payload["payload"] == {"action": "labeled"}


def test_delivery_document_of_a_pruned_row_has_a_null_payload():
    row = Delivery(id="d", event="issues", action="", repo="", installation_id=None, payload=b"",
                   received_at=utcnow(), payload_pruned_at=utcnow())
    assert admin.delivery_document(row, payload=True)["payload"] is None


# -- naming a task ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "task_id"),
    [
        (PAUSED, PAUSED),  # the id
        ("task_01b", PAUSED),  # a unique prefix
        ("01BBBB", PAUSED),  # without task_, any case
        ("task_01aaaa2", IN_REVIEW),
        ("o/r#7", PENDING),  # the task of issue 7 of o/r
        ("o/other#7", PAUSED),
        ("o/r#20", IN_REVIEW),  # pull request 20 of o/r
    ],
)
def test_a_task_is_named_by_id_prefix_or_issue(db, capsys, ref, task_id):
    code, out, _ = run(capsys, "tasks", "show", ref, "--json")
    assert code == 0 and json.loads(out)["id"] == task_id
    code, out, _ = run(capsys, "tasks", "logs", ref)
    assert code == 0


def test_an_ambiguous_prefix_lists_the_matches_on_one_line(db, capsys):
    for argv in (("tasks", "show", "task_01aaaa"), ("tasks", "logs", "01aaaa"), ("tasks", "stop", "task_01aaaa")):
        code, out, err = run(capsys, *argv)
        assert code != 0 and out == ""
        assert err.count("\n") == 1, err
        assert PENDING in err and IN_REVIEW in err and PAUSED not in err and "2 tasks" in err, err
    assert read_task(db, PENDING).status is Status.PENDING  # nothing was stopped


def test_an_unknown_task_is_one_line_naming_what_works(db, capsys):
    for ref in ("task_zzz", "o/r#99", "nobody/none#1", ""):
        code, out, err = run(capsys, "tasks", "show", ref)
        assert code == 1 and out == "" and err.count("\n") == 1, (ref, err)
        assert "`patchwright tasks list" in err


def test_every_task_command_takes_a_prefix_or_an_issue(db, capsys):
    code, out, _ = run(capsys, "tasks", "stop", "o/r#7")
    assert (code, out) == (0, f"{PENDING}: pending -> paused\n")
    code, out, _ = run(capsys, "tasks", "resume", PENDING[:-3])
    assert (code, out) == (0, f"{PENDING}: paused -> pending\n")
    code, out, _ = run(capsys, "tasks", "retry", "01bbbb", "use", "the", "parser")
    assert (code, out) == (0, f"{PAUSED}: paused -> pending\n")
    assert read_task(db, PAUSED).retry_context.endswith("use the parser")


# -- the verbs of the table --------------------------------------------------------------------------


def test_the_tasks_actions_are_the_rows_of_the_verb_table():
    parser = cli._parser()
    for verb in verbs.TASK_VERBS:
        name = admin.task_subcommand(verb.name)
        args = parser.parse_args(["tasks", name, "task_x", *(["a", "b"] if verb.takes_text else [])])
        assert args.task_verb == verb.name and args.task_id == "task_x"
        assert getattr(args, "instructions", None) == (["a", "b"] if verb.takes_text else None)
    assert admin.task_subcommand(verbs.START_OVER) == "start-over"
    for action in ("list", "show", "logs"):
        assert getattr(parser.parse_args(["tasks", action, *(["x"] if action != "list" else [])]), "task_verb", None) is None


def test_a_new_row_of_the_verb_table_is_a_new_action_without_an_edit(monkeypatch):
    rebase = verbs.Verb("re base", lambda task, given: rules.stop(task, now=given.now), takes_text=True)
    monkeypatch.setattr(cli, "TASK_VERBS", (*verbs.TASK_VERBS, rebase))
    args = cli._parser().parse_args(["tasks", "re-base", "o/r#1", "onto", "main"])
    assert (args.task_verb, args.task_id, args.instructions) == ("re base", "o/r#1", ["onto", "main"])


def test_cancel_and_start_over_say_what_is_left_to_do_on_github(db, capsys):
    code, out, _ = run(capsys, "tasks", "start-over", "o/r#20")
    assert code == 0
    first, note = out.splitlines()
    assert first == f"{IN_REVIEW}: review -> pending"
    assert "close pull request #20 and delete the branch patchwright/8 of o/r" in note
    task = read_task(db, IN_REVIEW)
    assert task.status is Status.PENDING and task.attempt == 1 and task.pr_number is None

    code, out, _ = run(capsys, "tasks", "cancel", "o/r#8")
    assert (code, out) == (0, f"{IN_REVIEW}: pending -> closed\n")  # no pull request left to close
    code, out, err = run(capsys, "tasks", "cancel", "o/r#8")
    assert code == 1 and out == "" and "Cannot cancel: this task is closed" in err
    assert f"`patchwright tasks start-over {IN_REVIEW}`" in err


# -- tasks logs --follow -------------------------------------------------------------------------------


async def test_follow_prints_new_lines_until_the_task_leaves_running(tmp_path: Path):
    store = await open_store(f"sqlite:///{tmp_path / 'f.db'}")
    try:
        await store.migrate()
        task, _ = await store.create_task(_new("task_follow", "o/r", 1))
        await store.transition(task.id, from_statuses=[Status.PENDING], changes={"status": Status.RUNNING})
        await store.append_logs(task.id, 1, ["one"])
        printed: list[str] = []
        wrote_two = asyncio.Event()

        def write(line: str) -> None:
            printed.append(line)
            if line == "[1] two":
                wrote_two.set()

        async def agent() -> None:
            await asyncio.sleep(0.03)
            await store.append_logs(task.id, 1, ["two"])
            await asyncio.wait_for(wrote_two.wait(), 5)  # printed while the task still runs
            await store.append_logs(task.id, 1, ["three", "four"])
            await store.append_logs(task.id, 2, ["a late line of attempt 2"])
            await store.transition(task.id, from_statuses=[Status.RUNNING], changes={"status": Status.REVIEW})

        args = cli._parser().parse_args(["tasks", "logs", "task_fol", "--follow"])
        follower = asyncio.create_task(
            admin.run(args, store, settings=Settings(), write=write, poll=0.01)
        )
        await asyncio.wait_for(asyncio.gather(agent(), follower), 10)
        assert printed == ["[1] one", "[1] two", "[1] three", "[1] four", "[2] a late line of attempt 2"]

        # A task that is not pending or running: its log, and the follow ends at once.
        printed.clear()
        ended = await admin.follow_tasks_logs(store, "task_follow", 1, write=printed.append, poll=60)
        assert ended is not None and ended.status is Status.REVIEW
        assert printed == ["[1] one", "[1] two", "[1] three", "[1] four"]
    finally:
        await store.close()


def test_follow_of_a_finished_task_prints_its_log_and_exits(db, capsys):
    code, out, _ = run(capsys, "tasks", "logs", IN_REVIEW, "--follow")
    assert (code, out) == (0, "[1] cloning\n[1] editing\n")


async def test_follow_stops_quietly_when_cancelled(tmp_path: Path):
    """Ctrl-C cancels the command's task (asyncio.run), and main() answers 130."""
    store = await open_store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        await store.migrate()
        task, _ = await store.create_task(_new("task_c", "o/r", 1))  # pending: followed until cancelled
        printed: list[str] = []
        follower = asyncio.create_task(admin.follow_tasks_logs(store, task.id, None, write=printed.append, poll=0.01))
        await asyncio.sleep(0.05)
        assert not follower.done()
        follower.cancel()
        with pytest.raises(asyncio.CancelledError):
            await follower
        assert printed == []
    finally:
        await store.close()


def test_ctrl_c_while_following_exits_130_without_a_traceback(db, capsys, monkeypatch):
    async def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(admin, "follow_tasks_logs", interrupted)
    code, out, err = run(capsys, "tasks", "logs", PENDING, "--follow")
    assert code == 130 and "Traceback" not in err


def test_a_real_sigint_while_following_exits_130_quietly(db, tmp_path: Path):
    """The real thing, in a child process: SIGINT while `--follow` waits for more lines of a
    pending task."""
    import os
    import signal
    import subprocess
    import sys

    async def log_a_line() -> None:
        store = await open_store(db)
        try:
            await store.append_logs(PENDING, 1, ["waiting for a worker"])
        finally:
            await store.close()

    asyncio.run(log_a_line())
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PATCHWRIGHT_DATABASE_URL": db,
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen(
        [sys.executable, "-m", "bot", "tasks", "logs", "o/r#7", "--follow"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        first = child.stdout.readline()  # printed (flushed) once the log was read: it now polls
        assert first == "[1] waiting for a worker\n", child.communicate(timeout=30)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, (out, err)
    assert out == "" and err == "", err
