"""One verb, four ways in (SPEC §4.2, §9): a comment, a check-run button, ``patchwright
tasks`` and the web API apply the same row of the verb table through the same operation —
the task ends the same and the audit trail gets the same record, but for who asked. The
command line is given as argv, parsed by the real parser (its ``tasks`` actions are generated
from the verb table) and naming the task by ``owner/repo#N``."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gidgethub.abc
import pytest
from aiohttp import web
from gidgethub import sansio

from bot import admin
from bot.__main__ import _parser
from bot.admin import AdminError, cli_reason, run_tasks_command
from bot.config import Settings
from bot.operations.context import Context
from bot.operations.services import build_services
from bot.outcome import Ignored
from bot.store.base import TaskEvent
from bot.store.factory import open_store
from bot.tasks import rules, verbs
from bot.tasks.model import Status, Task
from bot.web.routes import add_web_routes
from handlers.checks import on_check_run_action
from handlers.comments import on_comment_created

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
REPO = "octo/widgets"
TOKEN = "admin-token-for-tests"


class RecordingGitHub(gidgethub.abc.GitHubAPI):
    """A repository without a config file where everyone may write; records every call."""

    def __init__(self) -> None:
        super().__init__("verb-tests")
        self.calls: list[tuple[str, str]] = []

    async def _request(self, method: str, url: str, headers: Any, body: bytes = b"") -> tuple[int, dict, bytes]:
        path = url.split("?", 1)[0]
        self.calls.append((method, path))
        if method == "GET" and "/contents/" in path:
            status, data = 404, {"message": "Not Found"}
        elif method == "GET" and path.endswith("/permission"):
            status, data = 200, {"permission": "write", "role_name": "write", "user": {"login": "alice"}}
        elif method == "GET" and path.endswith("/comments"):
            status, data = 200, []
        elif method == "GET":
            status, data = 404, {"message": "Not Found"}
        else:
            status, data = (201 if method == "POST" else 200), {"id": 99}
        return status, {"content-type": "application/json; charset=utf-8"}, json.dumps(data).encode()

    async def sleep(self, seconds: float) -> None:
        return None


@pytest.fixture
async def world(tmp_path: Path, aiohttp_client) -> Any:
    store = await open_store(f"sqlite:///{tmp_path / 'bot.db'}")
    await store.migrate()
    gh = RecordingGitHub()
    settings = Settings(admin_token=TOKEN, data_dir=tmp_path / "data")
    services = build_services(settings, store, github_for=lambda _id: gh, app_slug="patchwright", clock=lambda: NOW)
    app = web.Application()
    add_web_routes(app, store=store, settings=settings, clock=lambda: NOW, services=lambda: services)
    client = await aiohttp_client(app)

    class World:
        pass

    w = World()
    w.store, w.services, w.client, w.gh = store, services, client, gh
    yield w
    await store.close()


async def _task(store: Any, number: int, status: Status) -> Task:
    task = rules.new_task(
        id=f"task_{number:04d}", repo=REPO, installation_id=1, issue_number=number, title="Fix it", spec="s",
        max_attempts=5, max_cost_usd=3.0, agent="command", model="", base_branch="main", now=NOW,
    )
    stored, _ = await store.create_task(task, event=TaskEvent(task_id=task.id, kind="created", reason="made", to_status=task.status))
    if status is not stored.status:
        stored = await store.transition(
            stored.id, from_statuses=[stored.status], changes={"status": status, "pr_number": 40 + number}
        )
    return stored


def _comment(task: Task, body: str) -> sansio.Event:
    user = {"login": "alice", "id": 7, "type": "User"}
    data = {
        "action": "created",
        "issue": {"number": task.issue_number, "title": task.title, "body": "", "user": user, "labels": []},
        "comment": {"id": 1000 + task.issue_number, "body": body, "user": user},
        "repository": {"full_name": REPO, "default_branch": "main", "name": "widgets", "owner": {"login": "octo"}},
        "sender": user,
        "installation": {"id": 1},
    }
    return sansio.Event(data, event="issue_comment", delivery_id=f"d-{task.id}")


def _button(task: Task, identifier: str) -> sansio.Event:
    user = {"login": "alice", "id": 7, "type": "User"}
    data = {
        "action": "requested_action",
        "check_run": {"id": 5, "external_id": task.id, "head_sha": "a" * 40, "app": {"slug": "patchwright"}},
        "requested_action": {"identifier": identifier},
        "repository": {"full_name": REPO, "default_branch": "main", "name": "widgets", "owner": {"login": "octo"}},
        "sender": user,
        "installation": {"id": 1},
    }
    return sansio.Event(data, event="check_run", delivery_id=f"d-{task.id}")


async def _by_comment(w: Any, task: Task, verb: str, instructions: str) -> str:
    body = f"@patchwright {verb} {instructions}".rstrip()
    await on_comment_created(_comment(task, body), Context(w.services, 1, f"d-{task.id}"))
    return "alice"


async def _by_button(w: Any, task: Task, verb: str, instructions: str) -> str:
    assert not instructions  # a button carries none
    await on_check_run_action(_button(task, verb), Context(w.services, 1, f"d-{task.id}"))
    return "alice"


async def _by_cli(w: Any, task: Task, verb: str, instructions: str) -> str:
    argv = ["tasks", admin.task_subcommand(verb), f"{task.repo}#{task.issue_number}", *instructions.split()]
    printed: list[str] = []
    await admin.run(_parser().parse_args(argv), w.store, settings=w.services.settings, services=w.services,
                    write=printed.append)
    assert len(printed) == 1 and printed[0].startswith(f"{task.id}: "), printed
    return "cli"


async def _by_api(w: Any, task: Task, verb: str, instructions: str) -> str:
    body = json.dumps({"instructions": instructions}) if instructions else ""
    resp = await w.client.post(
        f"/api/tasks/{task.id}/{verbs.slug(verb)}", data=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert resp.status == 200, await resp.text()
    return "the API"


ENTRY_POINTS = {"comment": _by_comment, "button": _by_button, "cli": _by_cli, "api": _by_api}

CASES = [
    (verbs.STOP, Status.RUNNING, "", ("comment", "button", "cli", "api")),
    (verbs.RETRY, Status.FAILED, "use the other parser", ("comment", "cli", "api")),
    (verbs.RETRY, Status.PAUSED, "", ("comment", "button", "cli", "api")),
    # Buttons are retry and stop only; every verb arrives by comment, command line and API.
    (verbs.RESUME, Status.PAUSED, "", ("comment", "cli", "api")),
    (verbs.CANCEL, Status.REVIEW, "", ("comment", "cli", "api")),
    (verbs.CANCEL, Status.RUNNING, "", ("comment", "cli", "api")),
    (verbs.START_OVER, Status.REVIEW, "", ("comment", "cli", "api")),
    (verbs.START_OVER, Status.FAILED, "", ("comment", "cli", "api")),
]


def test_every_verb_of_the_table_is_compared() -> None:
    assert {case[0] for case in CASES} == {v.name for v in verbs.TASK_VERBS}


def _who(value: Any, author: str, actor: str) -> Any:
    """``value`` with the asker's names replaced, so records from different askers compare."""
    text = json.dumps(value, default=str).replace(author, "<who>").replace(actor, "<who>")
    return json.loads(text)


@pytest.mark.parametrize(("verb", "status", "instructions", "ways"), CASES)
async def test_a_verb_does_the_same_whichever_way_it_arrives(world, verb, status, instructions, ways) -> None:
    results = {}
    for number, way in enumerate(ways, start=1):
        task = await _task(world.store, number, status)
        author = await ENTRY_POINTS[way](world, task, verb, instructions)
        after = await world.store.get_task(task.id)
        assert after is not None and after.status is not status, (way, after)
        event = (await world.store.list_events(task.id))[-1]
        actor = {"the API": "api"}.get(author, author)
        assert event.actor == actor, way
        assert event.delivery_id == (f"d-{task.id}" if way in ("comment", "button") else ""), way
        changes = task.diff(after)
        changes.pop("status_comment_id", None)  # only where a GitHub client posted the comment
        results[way] = _who(
            {
                "task": changes,
                "event": [event.kind, event.from_status, event.to_status, event.reason, event.changes],
            },
            author,
            actor,
        )
    first, *others = ways
    for way in others:
        assert results[way] == results[first], f"{way} differs from {first}"


async def test_a_refusal_reads_the_same_whichever_way_it_arrives(world) -> None:
    """``stop`` of a paused task is refused by its rule: the comment is answered with the
    rule's reason, the API gives the same text as its error and the command line the same
    words with its suggestions as ``patchwright tasks …`` commands; the task and its audit
    trail stay as they were."""
    task = await _task(world.store, 1, Status.PAUSED)
    expected = rules.stop(task, now=NOW).reason_for("@patchwright")
    assert not rules.stop(task, now=NOW).accepted

    with pytest.raises(Ignored) as by_comment:
        await on_comment_created(_comment(task, "@patchwright stop"), Context(world.services, 1, "d-x"))
    assert by_comment.value.reason == expected
    with pytest.raises(AdminError) as by_cli:
        await run_tasks_command(world.services, task.id, verbs.STOP)
    assert str(by_cli.value) == cli_reason(rules.stop(task, now=NOW).reason, task.id, "@patchwright")
    assert str(by_cli.value) == expected.replace("`@patchwright resume`", f"`patchwright tasks resume {task.id}`").replace(
        "`@patchwright retry [instructions]`", f"`patchwright tasks retry {task.id} [instructions]`"
    )
    resp = await world.client.post(f"/api/tasks/{task.id}/stop", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 409 and (await resp.json())["error"] == expected

    after = await world.store.get_task(task.id)
    assert after is not None and after.status is Status.PAUSED and after.version == task.version
    assert [e.kind for e in await world.store.list_events(task.id)] == ["created"]
