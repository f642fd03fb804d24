"""`patchwright replay FILE` tells the event from the payload's shape (GitHub sends it in a
header, not in the body), or refuses in one line naming `--event`; checked against GitHub's
own payload examples (tests/sandbox/fixtures/webhooks/<event>/…)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web

import bot.__main__ as cli
from bot.admin import AdminError, infer_event, run_replay

WEBHOOKS = Path(__file__).resolve().parents[1] / "sandbox" / "fixtures" / "webhooks"
EXAMPLES = sorted(WEBHOOKS.rglob("*.json"))


def _event_of(path: Path) -> str:
    """The event of an example: the first folder under webhooks/ (``<event>/ghes-35/…`` too)."""
    return path.relative_to(WEBHOOKS).parts[0]


def test_there_are_examples_of_every_event_the_app_subscribes_to():
    events = {_event_of(p) for p in EXAMPLES}
    subscribed = {"issues", "issue_comment", "pull_request", "pull_request_review", "pull_request_review_comment",
                  "check_suite", "check_run", "workflow_run", "status", "push", "installation",
                  "installation_repositories"}
    assert subscribed <= events


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(WEBHOOKS)))
def test_the_event_of_every_example_is_told_by_its_payload(path: Path):
    assert infer_event(json.loads(path.read_bytes())) == _event_of(path)


@pytest.mark.parametrize(
    ("payload", "event"),
    [
        ({"action": "created", "issue": {}, "comment": {}, "repository": {}}, "issue_comment"),
        ({"action": "completed", "check_run": {}}, "check_run"),
        ({"action": "closed", "number": 3, "pull_request": {}}, "pull_request"),
        ({"action": "submitted", "review": {}, "pull_request": {}}, "pull_request_review"),
        ({"ref": "refs/heads/main", "before": "a", "after": "b", "commits": []}, "push"),
        ({"state": "failure", "sha": "a", "context": "ci"}, "status"),
        ({"action": "suspend", "installation": {}}, "installation"),
    ],
)
def test_github_shapes(payload: dict, event: str):
    assert infer_event(payload) == event


@pytest.mark.parametrize(
    "payload",
    [
        {"action": "created", "label": {}, "repository": {}},  # label: an event this table does not know
        {"action": "created", "comment": {}, "discussion": {}},  # discussion_comment
        {"ref": "v1", "ref_type": "tag"},  # create or delete: the shapes are the same
        {"action": "renamed", "installation": {}},  # installation_target
        {},
        [],
        "issues",
    ],
)
def test_a_shape_it_cannot_tell_is_none(payload: object):
    assert infer_event(payload) is None


async def test_replay_sends_the_inferred_event_or_the_one_given(aiohttp_server, tmp_path: Path):
    seen: list[tuple[str, bytes]] = []

    async def webhook(request: web.Request) -> web.Response:
        seen.append((request.headers["X-GitHub-Event"], await request.read()))
        return web.Response(status=202, text="accepted")

    app = web.Application()
    app.router.add_post("/webhook", webhook)
    server = await aiohttp_server(app)
    url = str(server.make_url("/webhook"))
    # A file outside any folder named after its event: the payload tells it.
    example = WEBHOOKS / "issue_comment" / "created.payload.json"
    copy = tmp_path / "labeled.json"
    copy.write_bytes(example.read_bytes())

    line = await run_replay(copy, url=url, secret="s", event=None)
    assert line.startswith("202 accepted (event issue_comment, delivery ")
    line = await run_replay(copy, url=url, secret="s", event="issues")  # --event wins
    assert "(event issues," in line
    assert seen == [("issue_comment", example.read_bytes()), ("issues", example.read_bytes())]


async def test_replay_refuses_a_payload_it_cannot_tell_before_sending(tmp_path: Path):
    path = tmp_path / "issues" / "odd.json"  # the folder's name is not taken for the event
    path.parent.mkdir()
    path.write_text(json.dumps({"action": "created", "label": {"name": "bug"}}))
    with pytest.raises(AdminError) as refused:
        await run_replay(path, url="http://127.0.0.1:9/webhook", secret="s", event=None)
    message = str(refused.value)
    assert "\n" not in message and "--event" in message and "action, label" in message


def test_the_command_refuses_in_one_line_naming_event(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setenv("PATCHWRIGHT_DATABASE_URL", f"sqlite:///{tmp_path / 'p.db'}")
    monkeypatch.setenv("PATCHWRIGHT_WEBHOOK_SECRET", "s")
    path = tmp_path / "payload.json"
    path.write_text(json.dumps({"zen": "no hook id"}))
    code = cli.main(["replay", str(path), "--url", "http://127.0.0.1:9/webhook"])
    out, err = capsys.readouterr()
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and "--event" in err, err
