"""The REST description: operation lookup and validation (pure, no server)."""

from __future__ import annotations

from bot.sandbox.openapi import RestDescription
from bot.sandbox.rest import RestApi


def test_the_description_has_54_operations_and_each_has_a_handler(rest_description: RestDescription):
    # 53 cut from GitHub's description (shared/github/SOURCE.md), plus apps/get-webhook-config-for-app
    # (GET /app/hook/config, GitHub's text), which `patchwright doctor` reads
    assert len(rest_description.operations) == 54
    handled = {name for name in dir(RestApi) if name.startswith("op_")}
    expected = {"op_" + op.replace("/", "__").replace("-", "_") for op in rest_description.operations}
    assert expected == handled


def test_match_picks_the_most_specific_operation_and_decodes_parameters(rest_description: RestDescription):
    match = rest_description.match("GET", "/repos/o/r/issues/comments/5")
    assert match is not None and match.operation.operation_id == "issues/get-comment"
    match = rest_description.match("GET", "/repos/o/r/issues/5")
    assert match is not None and match.operation.operation_id == "issues/get"
    match = rest_description.match("GET", "/repos/o/r/git/ref/heads%2Fpatchwright%2F1-x")
    assert match is not None and match.raw_params["ref"] == "heads/patchwright/1-x"
    match = rest_description.match("GET", "/repos/o/r/commits/feature/with-slash/check-runs")
    assert match is not None and match.operation.operation_id == "checks/list-for-ref"
    assert match.raw_params["ref"] == "feature/with-slash"
    match = rest_description.match("GET", "/repos/o/r/contents/.github/patchwright.yml")
    assert match is not None and match.raw_params["path"] == ".github/patchwright.yml"
    assert rest_description.match("PUT", "/repos/o/r/issues/5") is None
    assert rest_description.match("GET", "/repos/o/r/unknown") is None


def test_path_and_query_parameters_are_typed_and_checked(rest_description: RestDescription):
    match = rest_description.match("GET", "/repos/o/r/issues/12")
    assert match is not None
    values, problems = rest_description.path_params(match)
    assert values == {"owner": "o", "repo": "r", "issue_number": 12} and problems == []
    bad = rest_description.match("GET", "/repos/o/r/issues/twelve")
    assert bad is not None and rest_description.path_params(bad)[1][0].field == "issue_number"

    operation = rest_description.operations["issues/list-for-repo"]
    values, problems = rest_description.query_params(
        operation, {"state": "all", "per_page": "5", "unknown": "x"}
    )
    assert values == {"state": "all", "per_page": 5} and problems == []
    _, problems = rest_description.query_params(operation, {"state": "bogus", "page": "x"})
    assert sorted(p.field for p in problems) == ["page", "state"]


def test_request_bodies_are_checked_against_their_schema(rest_description: RestDescription):
    create_comment = rest_description.operations["issues/create-comment"]
    assert rest_description.body_problems(create_comment, {"body": "hi"}) == []
    missing = rest_description.body_problems(create_comment, {})
    assert [(p.field, p.code) for p in missing] == [("body", "missing_field")]
    wrong = rest_description.body_problems(create_comment, {"body": 1})
    assert [(p.field, p.code) for p in wrong] == [("body", "invalid")]
    check_create = rest_description.operations["checks/create"]
    assert rest_description.body_problems(check_create, {"name": "x", "head_sha": "a" * 40}) == []
    assert (
        rest_description.body_problems(
            check_create, {"name": "x", "head_sha": "a", "status": "completed", "conclusion": "success"}
        )
        == []
    )
    assert rest_description.body_problems(check_create, {"name": "x", "head_sha": "a", "conclusion": "sure"})
    add_labels = rest_description.operations["issues/add-labels"]
    assert rest_description.body_problems(add_labels, ["bug"]) == []
    assert rest_description.body_problems(add_labels, {"labels": ["bug"]}) == []


def test_responses_are_checked_against_the_documented_status(rest_description: RestDescription):
    get_label = rest_description.operations["issues/create-label"]
    label = {
        "id": 1,
        "node_id": "x",
        "url": "http://h/l",
        "name": "bug",
        "description": None,
        "color": "f00",
        "default": False,
    }
    assert rest_description.response_problems(get_label, 201, label) == []
    assert rest_description.response_problems(get_label, 201, {"id": 1})
    assert (
        rest_description.response_problems(get_label, 418, {"message": "teapot"}) == []
    )  # errors: basic-error
    assert rest_description.response_problems(get_label, 299, {}) != []
