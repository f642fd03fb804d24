"""The emulator's webhooks validate against GitHub's webhook schemas (issue 14, criterion 1).

The schemas are trusted because GitHub's real payload examples validate against them (apart from
the drift listed in ``EXAMPLE_DRIFT``: the examples were recorded years before the schemas); a
broken payload names its event, field and schema place; and the emulator records a ``webhook``
violation for each problem of a payload it queues, and none for its own deliveries.
"""

from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from bot.sandbox.webhook_schemas import GITHUB, OCTOKIT, SchemaProblem, WebhookSchemas, default_schemas

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
EXAMPLES = sorted(FIXTURES.rglob("*.json"))

#: Keys GitHub's schemas require that older examples predate (added to GitHub later, or absent
#: on GitHub Enterprise Server 3.5): their absence from an example is not a fault of the schema.
KEYS_NEWER_THAN_EXAMPLES = frozenset(
    {
        "active_lock_reason",
        "app_slug",
        "auto_merge",
        "description",  # of labels
        "details_url",  # of the 2018 check run in check_run/rerequested
        "disabled",  # of the 2018 repository in check_run/rerequested
        "draft",  # GHES 3.5
        "events",  # of the 2018 app in check_run/rerequested
        "has_discussions",
        "line",
        "milestone",
        "node_id",  # of the 2018 check run in check_run/rerequested
        "original_line",
        "original_start_line",
        "performed_via_github_app",
        "permissions",  # of the 2018 app in check_run/rerequested
        "reactions",
        "requester",
        "side",
        "start_line",
        "start_side",
        "suspended_at",
        "suspended_by",
        "topics",  # GHES 3.5
        "verified_at",
        "visibility",  # GHES 3.5
    }
)
#: Other ways old examples differ from today's schemas: (field pattern, message pattern, why).
EXAMPLE_DRIFT = (
    (r"^installation\.(created|updated)_at$", r"is not of type 'string'", "epoch seconds in 2018-19"),
    (
        r"^check_run\.(check_suite\.)?app\.(created|updated)_at$",
        r"^'2018-04-25 20:42:10' is not a 'date-time'",
        "2018 timestamp format",
    ),
    (r"\.permissions\.(organization|repository)_pre_receive_hooks$", r"is not allowed in", "GHES only"),
)


@pytest.fixture(scope="module")
def schemas() -> WebhookSchemas:
    return default_schemas()


def _drift(problem: SchemaProblem) -> bool:
    missing = re.match(r"^'(.+)' is a required property$", problem.message)
    if missing:
        return missing.group(1) in KEYS_NEWER_THAN_EXAMPLES
    return any(
        re.search(field, problem.field) and re.search(message, problem.message)
        for field, message, _why in EXAMPLE_DRIFT
    )


def _example(path: str) -> dict[str, Any]:
    return json.loads((FIXTURES / path).read_text())


def test_the_fixtures_hold_every_shared_example():
    assert len(EXAMPLES) == 149
    assert {p.relative_to(FIXTURES).parts[0] for p in EXAMPLES} == {
        "check_run",
        "check_suite",
        "installation",
        "installation_repositories",
        "issue_comment",
        "issues",
        "ping",
        "pull_request",
        "pull_request_review",
        "pull_request_review_comment",
        "push",
        "status",
        "workflow_job",
        "workflow_run",
    }


@pytest.fixture(scope="module")
def example_problems(schemas: WebhookSchemas) -> dict[str, list[SchemaProblem]]:
    """Every example's problems (validated once for the tests below)."""
    found = {}
    for path in EXAMPLES:
        event = path.relative_to(FIXTURES).parts[0]
        payload = json.loads(path.read_text())
        assert schemas.pointer(GITHUB, event, payload.get("action")) is not None, path
        assert schemas.pointer(OCTOKIT, event, payload.get("action")) is not None, path
        found[str(path.relative_to(FIXTURES))] = schemas.problems(event, payload)
    return found


def test_every_real_example_validates(example_problems):
    failures = [f"{name}: {p}" for name, found in example_problems.items() for p in found if not _drift(p)]
    assert not failures, "\n".join(failures)


def test_the_drift_allowance_is_needed(example_problems):
    """Each allowance excuses at least one problem of a real example (no dead entries)."""
    found = [p for problems in example_problems.values() for p in problems]
    missing = {m.group(1) for p in found if (m := re.match(r"^'(.+)' is a required property$", p.message))}
    assert KEYS_NEWER_THAN_EXAMPLES <= missing
    for field, message, why in EXAMPLE_DRIFT:
        assert any(re.search(field, p.field) and re.search(message, p.message) for p in found), why


def test_events_without_an_action_have_their_own_entries(schemas):
    for event in ("push", "status", "ping"):
        assert schemas.pointer(GITHUB, event, None) == f"/components/schemas/webhook-{event}"
        assert schemas.pointer(OCTOKIT, event, None) == f"/definitions/{event}$event"
    assert schemas.pointer(GITHUB, "pull_request", "review_requested") is not None
    assert schemas.pointer(GITHUB, "pull_request_review", "requested") is None
    assert schemas.pointer(OCTOKIT, "check_run", "requested_action") == (
        "/definitions/check_run$requested_action"
    )


def test_a_broken_payload_names_event_field_and_schema_place(schemas):
    payload = _example("issues/labeled.payload.json")
    payload["repository"]["organization"] = "octo-org"  # a login: only push payloads have it so
    (problem,) = schemas.problems("issues", payload)
    assert (problem.schema, problem.event, problem.action) == ("github", "issues", "labeled")
    assert problem.field == "repository.organization"
    assert problem.schema_path == "#/components/schemas/nullable-simple-user/type"
    assert "is not of type 'object'" in problem.message
    assert "issues.labeled repository.organization" in str(problem)


def test_octokit_catches_keys_github_does_not_send(schemas):
    payload = _example("check_run/completed.payload.json")
    payload["check_run"]["check_suite"]["check_runs_url"] = "https://api.github.com/x"  # REST only
    payload["workflow"] = None
    problems = schemas.problems("check_run", payload)
    assert {(p.schema, p.field) for p in problems} == {
        ("octokit", "check_run.check_suite.check_runs_url"),
        ("octokit", "workflow"),
    }
    (suite,) = [p for p in problems if p.field.startswith("check_run")]
    assert suite.schema_path.startswith("#/definitions/check_run$completed/")
    assert suite.schema_path.endswith("/additionalProperties")


def test_github_wins_over_octokit(schemas):
    """Octokit's copy lags: a key GitHub's own description declares is no problem."""
    payload = _example("issues/labeled.payload.json")
    payload["issue"]["sub_issues_summary"] = {"total": 0, "completed": 0, "percent_completed": 0}
    assert schemas.problems("issues", payload) == []
    raw = list(schemas.octokit.validator(schemas.pointer(OCTOKIT, "issues", "labeled")).iter_errors(payload))
    assert raw and "sub_issues_summary" in raw[0].message  # what GitHub's description overrides


def test_nulls_and_formats(schemas):
    payload = _example("push/with-no-username-committer.payload.json")
    assert "username" not in payload["commits"][0]["committer"]  # how GitHub says "no account"
    payload["commits"][0]["author"]["username"] = None
    payload["repository"]["html_url"] = "not a uri"
    payload["repository"]["updated_at"] = "yesterday"
    payload["repository"]["has_discussions"] = False  # the example predates the key
    problems = schemas.problems("push", payload)
    assert {(p.schema, p.field) for p in problems} == {
        (schema, field)
        for schema in (GITHUB, OCTOKIT)
        for field in ("commits[0].author.username", "repository.html_url", "repository.updated_at")
    }
    assert {p.message for p in problems if p.schema == GITHUB} == {
        "None is not of type 'string'",  # one problem for the null, not two
        "'not a uri' is not a 'uri'",
        "'yesterday' is not a 'date-time'",
    }


def test_unknown_event_or_action_is_a_problem(schemas):
    (problem,) = schemas.problems("issues", {"action": "exploded"})
    assert (problem.event, problem.action, problem.field) == ("issues", "exploded", "action")
    assert "no webhook issues.exploded" in problem.message
    (problem,) = schemas.problems("gollum", {})
    assert problem.event == "gollum" and problem.action is None


def test_validation_is_fast(schemas):
    payload = _example("pull_request/opened.payload.json")
    schemas.problems("pull_request", payload)  # compiles the validators
    payloads = [copy.deepcopy(payload) for _ in range(20)]
    started = time.perf_counter()
    for each in payloads:
        assert schemas.problems("pull_request", each) == []
    per_payload = (time.perf_counter() - started) / len(payloads)
    assert per_payload < 0.25, f"{per_payload * 1000:.1f} ms per validation"


# -- the emulator --------------------------------------------------------------------------------


def _webhook_violations(world: Any) -> list[dict[str, Any]]:
    return [v.as_dict() for v in world.emulator.violations() if v.kind == "webhook"]


async def test_the_emulator_records_a_violation_for_a_bad_payload(world):
    em = world.emulator
    repo = em.repo(world.repo)
    payload = em.envelope(repo, em.account("alice"), "opened", issue={"number": 1})
    em.emit(repo, "issues", payload)
    violations = _webhook_violations(world)
    assert violations, "a malformed issue is a violation"
    assert {v["operation_id"] for v in violations} == {"issues.opened"}
    errors = [v["errors"][0] for v in violations]
    assert all(e["event"] == "issues" and e["action"] == "opened" for e in errors)
    assert {"github", "octokit"} == {e["schema"] for e in errors}
    assert "issue.title" in {e["field"] for e in errors}
    delivery = em.deliveries()[-1]
    assert {e["delivery"] for e in errors} == {delivery.id}
    assert all(v["method"] == "POST" and v["path"] == world.receiver.url for v in violations)


async def test_a_small_scenario_sends_only_valid_webhooks(world):
    em = world.emulator
    await em.open_issue(world.repo, title="Bug", body="It breaks", user="alice", labels=["patchwright"])
    await em.comment_on(world.repo, 1, "@patchwright go", user="alice")
    await em.push_commit(world.repo, branch="fix", files={"fix.txt": "1\n"}, user="alice")
    pr = await em.open_pull(world.repo, head="fix", title="Fix", body="Fixes #1", user="alice")
    await em.submit_review(world.repo, pr["number"], user="alice", event="REQUEST_CHANGES", body="no")
    await em.merge_pull(world.repo, pr["number"], user="alice")
    await world.settle()
    kinds = set(world.receiver.events())
    assert {("issues", "opened"), ("issue_comment", "created"), ("push", None)} <= kinds
    assert {("pull_request", "opened"), ("pull_request_review", "submitted")} <= kinds
    assert ("pull_request", "closed") in kinds
    assert _webhook_violations(world) == []
    push = world.receiver.of("push")[0].data
    assert push["repository"]["organization"] == "octo-org"  # push only, GitHub's legacy login
    assert isinstance(push["repository"]["created_at"], int)
    assert "username" not in push["head_commit"]["author"]
    issue = world.receiver.of("issues", "opened")[0].data
    assert "organization" not in issue["repository"] and issue["organization"]["login"] == "octo-org"
    assert "closed_by" not in issue["issue"]
