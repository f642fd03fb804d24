"""Malformed payloads are ignored with the reason, never raised (issue #11, criterion 6).

The cases are generated from the real payload corpus (shared/github/webhooks): for every event
and action the handlers act on, each top-level field the handlers read is removed, set to null
and replaced by a value of another JSON type than the corpus has there. Every variant of every
corpus example of that event and action goes through the path the ingress and the handler
tests use (``parse_delivery`` → ledger → dispatcher → ``handlers.router``), and must end as
*ignored* with "malformed payload: <field> …", not as *failed*.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import gidgethub.abc
import pytest
import pytest_asyncio
from gidgethub import routing, sansio

import handlers
from bot import payloads
from bot.config import load_settings
from bot.dispatcher import Dispatcher
from bot.operations.services import build_services
from bot.runtime import context_factory
from bot.store.base import Delivery, DeliveryState
from bot.store.factory import open_store
from bot.tasks.model import utcnow
from bot.webhook import parse_delivery

# -- what the handlers read -----------------------------------------------------------------------

REQUIRED, OPTIONAL = True, False  # OPTIONAL: GitHub may leave it out, but never sends it null

_ISSUES = {"action": REQUIRED, "repository": REQUIRED, "sender": REQUIRED, "issue": REQUIRED, "installation": OPTIONAL}
_PULL = {"action": REQUIRED, "repository": REQUIRED, "sender": REQUIRED, "pull_request": REQUIRED, "installation": OPTIONAL}
_INSTALLATION = {"action": REQUIRED, "installation": REQUIRED}

#: (event, action) the handlers subscribe to -> {top-level field the handlers read: required?}.
READS: dict[tuple[str, str], dict[str, bool]] = {
    ("issues", "labeled"): {**_ISSUES, "label": OPTIONAL},
    ("issues", "unlabeled"): {**_ISSUES, "label": OPTIONAL},
    ("issues", "opened"): _ISSUES,
    ("issues", "closed"): _ISSUES,
    ("issues", "edited"): _ISSUES,
    ("issue_comment", "created"): {**_ISSUES, "comment": REQUIRED},
    ("pull_request", "closed"): _PULL,
    ("pull_request", "synchronize"): {**_PULL, "before": REQUIRED},
    ("pull_request_review", "submitted"): {**_PULL, "review": REQUIRED},
    ("pull_request_review_comment", "created"): {"action": REQUIRED},
    ("check_run", "completed"): {
        "action": REQUIRED, "repository": REQUIRED, "check_run": REQUIRED, "installation": OPTIONAL,
    },
    ("check_run", "requested_action"): {
        "action": REQUIRED, "repository": REQUIRED, "sender": REQUIRED, "check_run": REQUIRED,
        "requested_action": OPTIONAL, "installation": OPTIONAL,
    },
    ("check_suite", "completed"): {
        "action": REQUIRED, "repository": REQUIRED, "check_suite": REQUIRED, "installation": OPTIONAL,
    },
    ("workflow_run", "completed"): {
        "action": REQUIRED, "repository": REQUIRED, "workflow_run": REQUIRED, "installation": OPTIONAL,
    },
    ("status", ""): {
        "repository": REQUIRED, "state": REQUIRED, "sha": REQUIRED, "branches": REQUIRED, "installation": OPTIONAL,
    },
    ("push", ""): {
        "repository": REQUIRED, "ref": REQUIRED, "deleted": REQUIRED, "sender": OPTIONAL, "installation": OPTIONAL,
    },
    ("installation", "created"): {**_INSTALLATION, "repositories": OPTIONAL},
    ("installation", "new_permissions_accepted"): {**_INSTALLATION, "repositories": OPTIONAL},
    ("installation", "unsuspend"): {**_INSTALLATION, "repositories": OPTIONAL},
    ("installation", "deleted"): _INSTALLATION,
    ("installation", "suspend"): _INSTALLATION,
    ("installation_repositories", "added"): {
        **_INSTALLATION, "repositories_added": REQUIRED, "repositories_removed": REQUIRED,
    },
    ("installation_repositories", "removed"): {
        **_INSTALLATION, "repositories_added": REQUIRED, "repositories_removed": REQUIRED,
    },
}

#: Actions the corpus has no example of: the example of another action of the event is the base.
BASE_ACTION = {("issues", "closed"): "reopened"}

#: The JSON type GitHub sends for a field the corpus examples at hand leave out.
TYPE_WHEN_ABSENT = {"installation": dict, "label": dict, "requested_action": dict, "repositories": list}

#: A value of another JSON type than the one GitHub sends (a string where an object belongs…).
WRONG_TYPE: dict[type, Any] = {
    dict: "not an object",
    list: "not an array",
    str: {"not": "a string"},
    bool: "not a boolean",
    int: "not an integer",
}


def cases() -> Iterator[Any]:
    for (event, action), fields in READS.items():
        for field, required in fields.items():
            for variant in ("missing", "null", "wrong type"):
                if variant == "missing" and not required:
                    continue  # GitHub leaves optional fields out: that is not malformed
                label = f"{event}.{action}" if action else event
                yield pytest.param(event, action, field, variant, id=f"{label}-{field}-{variant.replace(' ', '_')}")


CASES = list(cases())


def examples(shared_dir: Path, event: str, action: str) -> list[tuple[str, dict[str, Any]]]:
    """The corpus examples of ``event.action`` (github.com and GHES), by file name."""
    folder = shared_dir / "github" / "webhooks" / event
    files = sorted([*folder.glob("*.json"), *folder.glob("ghes-35/*.json")])
    loaded = [(str(f.relative_to(folder)), json.loads(f.read_text())) for f in files]
    wanted = BASE_ACTION.get((event, action), action)
    found = [(name, data) for name, data in loaded if (data.get("action") or "") == wanted]
    assert found, f"the corpus has no {event} example with action {wanted!r}"
    if wanted != action:
        found = [(name, {**data, "action": action}) for name, data in found]
    return found


def variant_of(payload: dict[str, Any], field: str, variant: str) -> dict[str, Any]:
    bad = copy.deepcopy(payload)
    if variant == "missing":
        bad.pop(field, None)
    elif variant == "null":
        bad[field] = None
    else:
        sent = type(payload[field]) if field in payload else TYPE_WHEN_ABSENT[field]
        bad[field] = WRONG_TYPE[sent]
    return bad


# -- a bot without HTTP: the real dispatcher, handlers and store; GitHub answered in memory -------


class QuietGitHub(gidgethub.abc.GitHubAPI):
    """Answers like a repository with no config file where everyone may write."""

    def __init__(self) -> None:
        super().__init__("malformed-payload-tests")

    async def _request(self, method: str, url: str, headers: Any, body: bytes = b"") -> tuple[int, dict, bytes]:
        path = url.split("?", 1)[0]
        if method == "GET" and "/contents/" in path:
            status, data = 404, {"message": "Not Found"}
        elif method == "GET" and path.endswith("/permission"):
            status, data = 200, {"permission": "admin", "role_name": "admin", "user": {"login": "someone"}}
        elif method == "GET" and path.endswith("/check-runs"):
            status, data = 200, {"total_count": 0, "check_runs": []}
        elif method == "GET" and path.endswith("/status"):
            status, data = 200, {"state": "pending", "statuses": []}
        elif method == "GET":
            status, data = 404, {"message": "Not Found"}
        else:
            status, data = (201 if method == "POST" else 200), {"id": 1}
        return status, {"content-type": "application/json; charset=utf-8"}, json.dumps(data).encode()

    async def sleep(self, seconds: float) -> None:
        return None


def unchecked_router() -> routing.Router:
    """The handlers behind gidgethub's plain Router: what the dispatcher ran before the check."""
    return routing.Router(
        handlers.issues.router, handlers.comments.router, handlers.checks.router,
        handlers.reviews.router, handlers.pulls.router, handlers.installation.router,
    )


class Bot:
    def __init__(self, store, make_context) -> None:
        self.store = store
        self.make_context = make_context
        self.dispatcher = self.dispatcher_for(handlers.router)
        self.sent = 0

    def dispatcher_for(self, router: routing.Router) -> Dispatcher:
        return Dispatcher(self.store, router, self.make_context, handler_timeout=5, retry_delays=())

    async def deliver(self, event: str, payload: dict[str, Any], *, dispatcher: Dispatcher | None = None) -> Delivery:
        """The ledger row after the dispatcher processed this payload, as the ingress records it."""
        self.sent += 1
        body = json.dumps(payload).encode()
        headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": f"malformed-{self.sent}"}
        parsed = parse_delivery(headers, body)
        await self.store.record_delivery(
            Delivery(
                id=parsed.delivery_id, event=parsed.event, action=parsed.action, repo=parsed.repo,
                installation_id=parsed.installation_id, payload=body, received_at=utcnow(),
            )
        )
        await (dispatcher or self.dispatcher).drain()
        row = await self.store.get_delivery(parsed.delivery_id)
        assert row is not None
        return row


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory) -> Any:
    tmp = tmp_path_factory.mktemp("malformed")
    store = await open_store(f"sqlite:///{tmp / 'bot.db'}?synchronous=off")
    await store.migrate()
    settings = load_settings({"PATCHWRIGHT_DATA_DIR": str(tmp / "data")}, env_file=None)
    github = QuietGitHub()
    services = build_services(
        settings, store, github_for=lambda installation_id: github, app_slug="patchwright", clock=utcnow
    )

    try:
        yield Bot(store, context_factory(services))
    finally:
        await store.close()


# -- the tests ------------------------------------------------------------------------------------


def test_the_cases_cover_the_fields_issue_11_names():
    covered = {field for _event, _action, field, _variant in (c.values for c in CASES)}
    assert {
        "repository", "installation", "sender", "issue", "comment", "pull_request", "review", "check_run",
        "check_suite", "workflow_run", "label", "action", "ref",
    } <= covered
    assert len(CASES) >= 41


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("event", "action", "field", "variant"), CASES)
async def test_malformed_payload_is_ignored_with_the_field_named(bot, shared_dir, event, action, field, variant):
    problems = []
    for name, payload in examples(shared_dir, event, action):
        if field in payload and field in TYPE_WHEN_ABSENT:
            assert isinstance(payload[field], TYPE_WHEN_ABSENT[field]), f"{name}: {field} is not as GitHub sends it"
        row = await bot.deliver(event, variant_of(payload, field, variant))
        # Only this field is wrong, so the reason names it first.
        if (
            row.state is not DeliveryState.DONE
            or "failed" in row.outcome
            or not row.ignore_reason.startswith(f"malformed payload: {field} ")
        ):
            problems.append(f"{name}: {row.state.value}: {row.outcome!r} (reason {row.ignore_reason!r})")
    assert not problems, "\n".join(problems)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_nested_field_of_the_wrong_type_is_named_by_its_path(bot, shared_dir):
    (_name, payload), *_ = examples(shared_dir, "issue_comment", "created")
    bad = copy.deepcopy(payload)
    bad["issue"]["number"] = "seven"
    row = await bot.deliver("issue_comment", bad)
    assert row.state is DeliveryState.DONE, row.outcome
    assert row.ignore_reason.startswith("malformed payload: issue.number "), row.ignore_reason


@pytest.mark.asyncio(loop_scope="module")
async def test_a_closed_pull_request_must_say_whether_it_was_merged(bot, shared_dir):
    for _name, payload in examples(shared_dir, "pull_request", "closed"):
        bad = copy.deepcopy(payload)
        bad["pull_request"]["merged"] = None
        row = await bot.deliver("pull_request", bad)
        assert row.ignore_reason == "malformed payload: pull_request.merged is null", row.ignore_reason
    # Other actions may leave it out (GitHub's schema): the payload is not malformed for that.
    (_name, payload), *_ = examples(shared_dir, "pull_request", "synchronize")
    lax = copy.deepcopy(payload)
    del lax["pull_request"]["merged"]
    assert payloads.malformed("pull_request", lax) is None


@pytest.mark.asyncio(loop_scope="module")
async def test_an_item_of_an_array_is_named_by_its_index(bot, shared_dir):
    (_name, payload), *_ = examples(shared_dir, "issues", "labeled")
    bad = copy.deepcopy(payload)
    bad["issue"]["labels"] = [{"name": "bug"}, {"name": None}]
    row = await bot.deliver("issues", bad)
    assert row.ignore_reason == "malformed payload: issue.labels[1].name is null", row.ignore_reason


# -- every real payload still fits, and the check changes nothing for it ----------------------------


def corpus_files(shared_dir: Path, events: Iterable[str] = payloads.MODELS) -> Iterator[tuple[str, Path]]:
    for event in sorted(events):
        folder = shared_dir / "github" / "webhooks" / event
        for path in sorted([*folder.glob("*.json"), *folder.glob("ghes-35/*.json")]):
            yield event, path


def test_the_models_are_of_the_events_the_handlers_act_on():
    handled = {event for event, _action in READS}
    assert set(payloads.MODELS) == handled
    for event, action in READS:
        probe = sansio.Event({"action": action} if action else {}, event=event, delivery_id="probe")
        assert unchecked_router().fetch(probe), f"no handler for {event}.{action}"


def test_every_real_payload_fits_its_model(shared_dir):
    files = list(corpus_files(shared_dir))
    assert len(files) >= 100
    misfits = {
        str(path.relative_to(shared_dir / "github" / "webhooks")): reason
        for event, path in files
        if (reason := payloads.malformed(event, json.loads(path.read_text()))) is not None
    }
    assert not misfits


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("kind", sorted(payloads.MODELS))
async def test_real_payloads_are_handled_as_without_the_check(bot, shared_dir, kind):
    unchecked = bot.dispatcher_for(unchecked_router())
    for event, path in corpus_files(shared_dir, [kind]):
        payload = json.loads(path.read_text())
        checked = await bot.deliver(event, payload)
        plain = await bot.deliver(event, payload, dispatcher=unchecked)
        assert not checked.ignore_reason.startswith("malformed payload"), (path.name, checked.ignore_reason)
        assert (checked.state, checked.outcome, checked.ignore_reason) == (
            plain.state, plain.outcome, plain.ignore_reason
        ), path.name
