"""API helpers: requests match GitHub's REST description; edge answers; the job-log redirect."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import gidgethub
import pytest
from aiohttp import web
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry
from referencing.jsonschema import DRAFT4

from bot.github import api
from bot.github.auth import AppCredentials, TokenProvider
from bot.github.client import GitHubClient, GitHubClientFactory, RetryPolicy
from bot.github.permissions import PermissionCache
from bot.github.repo_config import fetch_repo_config

REPO = "octo-org/hello-world"
BRANCH = "patchwright/12-fix-the-thing"
SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
EXTERNAL = "https://pipelines.actions.example/signed/19?sig=abc%3D"
DOC_URI = "urn:github-rest-subset"
METHODS = ("get", "post", "patch", "put", "delete")


def load_description() -> dict[str, Any]:
    """The REST description: the copy shipped in bot/sandbox/data, else the shared folder."""
    packaged = resources.files("bot.sandbox").joinpath("data/rest-openapi-subset.json")
    if packaged.is_file():
        return json.loads(packaged.read_text(encoding="utf-8"))
    shared = Path(__file__).resolve().parents[3] / "shared/github/rest-openapi-subset.json"
    return json.loads(shared.read_text(encoding="utf-8"))


def _pointer(*tokens: str) -> str:
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)


def _without_unmapped_discriminators(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: _without_unmapped_discriminators(v)
            for k, v in node.items()
            if not (k == "discriminator" and isinstance(v, dict) and "mapping" not in v)
        }
    if isinstance(node, list):
        return [_without_unmapped_discriminators(v) for v in node]
    return node


class RestContract:
    """Matches requests to the description's operations and validates them."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        # `checks/create` declares a discriminator without a mapping over inline oneOf
        # alternatives; the validator would look for #/components/schemas/<status>. The oneOf
        # alone says the same (status "completed" needs a conclusion), so drop such hints.
        self.registry = Registry().with_resource(
            DOC_URI, DRAFT4.create_resource(_without_unmapped_discriminators(document))
        )
        self.routes: list[
            tuple[int, str, re.Pattern[str], dict[str, Any], list[dict[str, Any]], str]
        ] = []
        for template, item in document["paths"].items():
            shared = item.get("parameters", [])
            for method in METHODS:
                if method not in item:
                    continue
                op = item[method]
                params = [self.resolve(p) for p in [*shared, *op.get("parameters", [])]]
                multi = {
                    p["name"] for p in params if p["in"] == "path" and p.get("x-multi-segment")
                }
                regex, literal = "", 0
                for chunk in re.split(r"(\{[^}]+\})", template):
                    if chunk.startswith("{"):
                        name = chunk[1:-1]
                        regex += f"(?P<{name}>{'.+' if name in multi else '[^/]+'})"
                    else:
                        regex += re.escape(chunk)
                        literal += len(chunk)
                pointer = _pointer("paths", template, method)
                self.routes.append(
                    (literal, method.upper(), re.compile(f"^{regex}$"), op, params, pointer)
                )
        self.routes.sort(key=lambda r: -r[0])

    def resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            target: Any = self.document
            for token in node["$ref"].removeprefix("#/").split("/"):
                target = target[token.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def validate(self, pointer: str, value: Any) -> list[str]:
        validator = OAS30Validator(
            {"$ref": f"{DOC_URI}#{pointer}"},
            registry=self.registry,
            format_checker=oas30_format_checker,
        )
        return [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(value)
        ]

    def check(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[dict, list[str]]:
        """``(operation, problems)`` for one request sent to the API base."""
        parts = urlsplit(url)
        assert parts.scheme == "https" and parts.netloc == "api.github.test", url
        for _, route_method, pattern, op, params, pointer in self.routes:
            found = pattern.match(parts.path) if route_method == method else None
            if found is None:
                continue
            problems: list[str] = []
            for param in params:
                schema = self.resolve(param.get("schema", {}))
                if param["in"] == "path":
                    raw = found.group(param["name"])
                    if schema.get("type") == "integer" and not raw.isdigit():
                        problems.append(f"path {param['name']}={raw!r} is not an integer")
                    if re.search(r"[^A-Za-z0-9\-._~%/:@!$&'()*+,;=]", raw):
                        problems.append(f"path {param['name']}={raw!r} is not percent-encoded")
            declared = {p["name"]: p for p in params if p["in"] == "query"}
            for name, raw in parse_qsl(parts.query, keep_blank_values=True):
                if name not in declared:
                    problems.append(f"query {name!r} is not a parameter of {op['operationId']}")
                    continue
                schema = self.resolve(declared[name].get("schema", {}))
                value: Any = raw
                if schema.get("type") == "integer":
                    value = int(raw) if raw.isdigit() else raw
                elif schema.get("type") == "boolean":
                    value = {"true": True, "false": False}.get(raw, raw)
                validator = OAS30Validator(schema, format_checker=oas30_format_checker)
                problems += [f"query {name}: {e.message}" for e in validator.iter_errors(value)]
            request_body = self.resolve(op.get("requestBody")) if op.get("requestBody") else None
            if body:
                if request_body is None:
                    problems.append(f"{op['operationId']} takes no request body")
                else:
                    assert headers.get("content-type", "").startswith("application/json")
                    problems += self.validate(
                        pointer + _pointer("requestBody", "content", "application/json", "schema"),
                        json.loads(body),
                    )
            elif request_body is not None and request_body.get("required"):
                problems.append(f"{op['operationId']} needs a request body")
            return op, problems
        raise AssertionError(f"no operation in the description for {method} {parts.path}")

    def example_response(self, op: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        """The operation's first documented success, with GitHub's example body."""
        status = min(int(code) for code in op["responses"] if code[0] in "23")
        response = self.resolve(op["responses"][str(status)])
        if status == 302:
            return 302, {"location": EXTERNAL}, b""
        if op["operationId"] == "repos/get-content":
            # GitHub's example holds a cut-off base64 text; answer with a whole file instead.
            value = {"type": "file", "encoding": "base64", "content": "YTogMQo=\n", "path": "x"}
            return status, {"content-type": "application/json"}, json.dumps(value).encode()
        content = response.get("content", {}).get("application/json")
        if content is None:
            return status, {}, b""
        examples = content.get("examples") or {}
        value = self.resolve(next(iter(examples.values())))["value"] if examples else {}
        return (
            status,
            {"content-type": "application/json; charset=utf-8"},
            json.dumps(value).encode(),
        )


@pytest.fixture(scope="module")
def contract() -> RestContract:
    return RestContract(load_description())


class ContractTransport:
    """A transport that validates every API request and answers with the example response."""

    def __init__(self, contract: RestContract) -> None:
        self.contract = contract
        self.operations: list[str] = []
        self.problems: list[str] = []
        self.sent: list[tuple[str, str, dict[str, str], bytes]] = []

    async def __call__(self, method, url, headers, body):
        headers = {k.lower(): v for k, v in headers.items()}
        self.sent.append((method, url, headers, body))
        if url.startswith("https://api.github.test/"):
            op, problems = self.contract.check(method, url, headers, body)
            self.operations.append(op["operationId"])
            self.problems += [f"{op['operationId']}: {p}" for p in problems]
            assert headers["x-github-api-version"] == "2022-11-28"
            return self.contract.example_response(op)
        self.operations.append("external")
        return (
            200,
            {"content-type": "text/plain"},
            b"2024-01-01T00:00:00Z ##[group]Run tests\nFAILED\n",
        )


async def collect(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return [item async for item in value]


OUTPUT = {"title": "Attempt 2", "summary": "Fixed the failing test", "text": "details"}
ACTIONS = [{"label": "Retry", "description": "Run the agent again", "identifier": "retry"}]

# (expected operationIds, helper, args, kwargs)
CALLS: list[tuple[list[str], Any, tuple, dict]] = [
    (["apps/get-authenticated"], api.get_app, (), {}),
    (["repos/get"], api.get_repo, (REPO,), {}),
    (["repos/get-branch"], api.get_branch, (REPO, BRANCH), {}),
    (["git/delete-ref"], api.delete_branch, (REPO, BRANCH), {}),
    (["repos/compare-commits"], api.compare_commits, (REPO, "main", BRANCH), {}),
    (["repos/get-content"], api.get_content, (REPO, ".github/patchwright.yml"), {"ref": "main"}),
    (
        ["repos/get-collaborator-permission-level"],
        api.get_collaborator_permission,
        (REPO, "octocat"),
        {},
    ),
    (["issues/get"], api.get_issue, (REPO, 12), {}),
    (
        ["issues/create-comment"],
        api.create_comment,
        (REPO, 12, "<!-- patchwright:status -->\nWorking on it"),
        {},
    ),
    (["issues/update-comment"], api.update_comment, (REPO, 1, "updated"), {}),
    (["issues/list-comments"], api.list_comments, (REPO, 12), {"since": "2024-01-01T00:00:00Z"}),
    (
        ["issues/list-comments"],
        api.find_comment,
        (REPO, 12, "<!-- patchwright:status -->"),
        {"author": "x[bot]"},
    ),
    (["reactions/create-for-issue"], api.add_reaction, (REPO, "issue", 12, "eyes"), {}),
    (
        ["reactions/create-for-issue-comment"],
        api.add_reaction,
        (REPO, "issue_comment", 5, "+1"),
        {},
    ),
    (
        ["reactions/create-for-pull-request-review-comment"],
        api.add_reaction,
        (REPO, "review_comment", 5, "confused"),
        {},
    ),
    (["issues/add-labels"], api.add_labels, (REPO, 12, ["patchwright:running"]), {}),
    (["issues/remove-label"], api.remove_label, (REPO, 12, "patchwright: running/now"), {}),
    (
        ["issues/create-label"],
        api.create_label,
        (REPO, "patchwright:failed"),
        {"color": "#d73a4a", "description": "x"},
    ),
    (["issues/create-label"], api.create_label, (REPO, "patchwright:review"), {"color": "0e8a16"}),
    (["pulls/get"], api.get_pull, (REPO, 42), {}),
    (
        ["pulls/create"],
        api.create_pull,
        (REPO,),
        {
            "title": "Fix the thing",
            "head": BRANCH,
            "base": "main",
            "body": "Closes #12",
            "draft": True,
        },
    ),
    (["pulls/update"], api.update_pull, (REPO, 42), {"body": "new body", "state": "closed"}),
    (["pulls/list"], api.list_pulls, (REPO,), {"head": BRANCH, "base": "main", "state": "all"}),
    (["pulls/list-comments-for-review"], api.list_review_comments_for_review, (REPO, 42, 80), {}),
    (
        ["pulls/create-reply-for-review-comment"],
        api.reply_to_review_comment,
        (REPO, 42, 10, "addressed in abc"),
        {},
    ),
    (
        ["checks/create"],
        api.create_check_run,
        (REPO,),
        {
            "name": "patchwright",
            "head_sha": SHA,
            "external_id": "task_01",
            "output": OUTPUT,
            "actions": ACTIONS,
            "started_at": "2024-01-01T00:00:00Z",
            "details_url": "https://bot.example/tasks/task_01",
        },
    ),
    (
        ["checks/create"],
        api.create_check_run,
        (REPO,),
        {
            "name": "patchwright",
            "head_sha": SHA,
            "status": "completed",
            "conclusion": "failure",
            "completed_at": "2024-01-01T00:10:00Z",
            "output": OUTPUT,
        },
    ),
    (
        ["checks/update"],
        api.update_check_run,
        (REPO, 4),
        {"status": "in_progress", "output": OUTPUT, "actions": ACTIONS},
    ),
    (
        ["checks/update"],
        api.update_check_run,
        (REPO, 4),
        {
            "conclusion": "success",
            "completed_at": "2024-01-01T00:10:00Z",
            "output": OUTPUT,
            "actions": [],
        },
    ),
    (
        ["checks/list-for-ref"],
        api.list_check_runs_for_ref,
        (REPO, SHA),
        {"check_name": "test", "status": "completed"},
    ),
    (["checks/list-for-ref"], api.list_check_runs_for_ref, (REPO, "heads/main"), {"filter": "all"}),
    (["repos/get-combined-status-for-ref"], api.get_combined_status, (REPO, SHA), {}),
    (["actions/list-jobs-for-workflow-run"], api.list_jobs_for_run, (REPO, 30433642), {}),
    (["actions/get-job-for-workflow-run"], api.get_job, (REPO, 399444496), {}),
    (
        ["actions/download-job-logs-for-workflow-run", "external"],
        api.download_job_log,
        (REPO, 399444496),
        {},
    ),
]


@pytest.fixture
def contract_client(contract, sleeps, clock) -> tuple[GitHubClient, ContractTransport]:
    transport = ContractTransport(contract)

    class Auth:
        async def authorization(self) -> str:
            return "token ghs_contract"

        def invalidate(self, authorization: str) -> None:
            raise AssertionError("no 401 expected")

    client = GitHubClient(
        None,
        "patchwright-tests",
        base_url="https://api.github.test",
        authorizer=Auth(),
        transport=transport,
        sleep=sleeps,
        clock=clock,
    )
    return client, transport


@pytest.mark.parametrize(
    ("operations", "helper", "args", "kwargs"),
    CALLS,
    ids=[f"{helper.__name__}-{i}" for i, (_, helper, _, _) in enumerate(CALLS)],
)
async def test_helper_requests_match_the_rest_description(
    contract_client, operations, helper, args, kwargs
):
    client, transport = contract_client
    await collect(helper(client, *args, **kwargs))
    assert transport.operations == operations
    assert transport.problems == []


def test_every_public_helper_is_checked_against_the_description():
    checked = {helper.__name__ for _, helper, _, _ in CALLS}
    helpers = {
        name
        for name, fn in vars(api).items()
        if inspect.isfunction(fn)
        and fn.__module__ == api.__name__
        and not name.startswith("_")
        and (inspect.iscoroutinefunction(fn) or name.startswith("list_"))
    }
    assert helpers - checked == set()


async def test_token_permission_and_config_requests_match_the_description(
    contract_client, rsa_keys, clock
):
    client, transport = contract_client
    provider = TokenProvider(AppCredentials(1, rsa_keys[0]), client, clock=clock)
    assert (
        await provider.installation_token(1) == "ghs_16C7e42F292c6912E7710c838347Ae178B4a"
    )  # GitHub's example
    assert await PermissionCache().permission(client, REPO, "octocat") == "admin"
    result = await fetch_repo_config(client, REPO, "main", str.upper)
    assert result.ok and result.value == result.text.upper() and result.text
    assert transport.operations == [
        "apps/create-installation-access-token",
        "repos/get-collaborator-permission-level",
        "repos/get-content",
    ]
    assert transport.problems == []


def test_contract_catches_bad_requests(contract):
    _, problems = contract.check(
        "POST",
        f"https://api.github.test/repos/{REPO}/pulls",
        {"content-type": "application/json"},
        b'{"title": "x"}',
    )
    assert any("'head' is a required property" in p for p in problems)
    _, problems = contract.check(
        "GET", f"https://api.github.test/repos/{REPO}/pulls?colour=red", {}, b""
    )
    assert problems == ["query 'colour' is not a parameter of pulls/list"]
    _, problems = contract.check("GET", f"https://api.github.test/repos/{REPO}/issues/abc", {}, b"")
    assert problems == ["path issue_number='abc' is not an integer"]
    with pytest.raises(AssertionError):
        contract.check("PUT", f"https://api.github.test/repos/{REPO}/pulls", {}, b"")


# -- request details ---------------------------------------------------------------------------


async def test_paths_keep_slashes_only_in_multi_segment_parameters(contract_client):
    client, transport = contract_client
    await api.get_branch(client, REPO, BRANCH)
    await api.remove_label(client, REPO, 12, "needs/triage now")
    await api.compare_commits(client, REPO, "main", BRANCH)
    await api.delete_branch(client, REPO, BRANCH)
    urls = [sent[1] for sent in transport.sent]
    assert urls == [
        f"https://api.github.test/repos/{REPO}/branches/patchwright/12-fix-the-thing",
        f"https://api.github.test/repos/{REPO}/issues/12/labels/needs%2Ftriage%20now",
        f"https://api.github.test/repos/{REPO}/compare/main...patchwright/12-fix-the-thing",
        f"https://api.github.test/repos/{REPO}/git/refs/heads/patchwright/12-fix-the-thing",
    ]


async def test_list_pulls_qualifies_head_with_the_owner(contract_client):
    client, transport = contract_client
    await api.list_pulls(client, REPO, head=BRANCH)
    await api.list_pulls(client, REPO, head="someone:branch")
    queries = [dict(parse_qsl(urlsplit(sent[1]).query)) for sent in transport.sent]
    assert queries[0] == {"state": "open", "head": f"octo-org:{BRANCH}", "per_page": "100"}
    assert queries[1]["head"] == "someone:branch"


def test_split_repo_rejects_malformed_names():
    assert api.split_repo("a/b") == ("a", "b")
    for bad in ["a", "a/", "/b", "a/b/c", ""]:
        with pytest.raises(ValueError):
            api.split_repo(bad)


async def test_argument_checks(make_client):
    gh = make_client()
    with pytest.raises(ValueError):
        await api.add_labels(gh, REPO, 1, [])
    with pytest.raises(ValueError):
        await api.update_pull(gh, REPO, 1)


# -- answers the helpers interpret ----------------------------------------------------------------


async def test_missing_things_are_none_or_false(make_client, transport, fakes):
    transport.script = [
        fakes.reply(404, {"message": "Branch not found"}),
        fakes.reply(422, {"message": "Reference does not exist"}),
        fakes.reply(404, {"message": "Label does not exist"}),
        fakes.reply(
            422,
            {
                "message": "Validation Failed",
                "errors": [{"resource": "Label", "code": "already_exists", "field": "name"}],
            },
        ),
        fakes.reply(204),
        fakes.reply(200, [{"name": "patchwright"}]),
    ]
    gh = make_client()
    assert await api.get_branch(gh, REPO, "gone") is None
    assert await api.delete_branch(gh, REPO, "gone") is False
    assert await api.remove_label(gh, REPO, 1, "absent") is False
    assert await api.create_label(gh, REPO, "patchwright", color="ededed") is None
    assert await api.delete_branch(gh, REPO, "there") is True
    assert await api.remove_label(gh, REPO, 1, "there") is True


async def test_other_errors_are_raised(make_client, transport, fakes):
    transport.script = [
        fakes.reply(
            422,
            {
                "message": "Validation Failed",
                "errors": [{"resource": "Label", "code": "invalid", "field": "color"}],
            },
        ),
        fakes.reply(403, {"message": "Resource not accessible by integration"}),
    ]
    gh = make_client()
    with pytest.raises(gidgethub.InvalidField):
        await api.create_label(gh, REPO, "x", color="nope")
    with pytest.raises(gidgethub.BadRequest):
        await api.get_branch(gh, REPO, "main")


async def test_list_comments_follows_pages_and_find_comment_stops_early(
    make_client, transport, fakes
):
    page2 = f"{fakes.BASE_URL}/repositories/1/issues/12/comments?per_page=100&page=2"
    page3 = f"{fakes.BASE_URL}/repositories/1/issues/12/comments?per_page=100&page=3"
    first = [{"id": 1, "body": "hello", "user": {"login": "alice"}}]
    second = [
        {"id": 2, "body": "<!-- patchwright:status --> fake", "user": {"login": "mallory"}},
        {
            "id": 3,
            "body": "<!-- patchwright:status --> real",
            "user": {"login": "patchwright[bot]"},
        },
    ]
    transport.script = [
        fakes.reply(200, first, {"link": f'<{page2}>; rel="next"'}),
        fakes.reply(200, second, {"link": f'<{page3}>; rel="next"'}),
    ]
    found = await api.find_comment(
        make_client(), REPO, 12, "<!-- patchwright:status -->", author="patchwright[bot]"
    )
    assert found is not None and found["id"] == 3
    assert [s.url for s in transport.sent] == [
        f"{fakes.BASE_URL}/repos/{REPO}/issues/12/comments?per_page=100",
        page2,
    ]  # page 3 never fetched


async def test_download_job_log_follows_the_redirect_without_authorization(
    make_client, transport, authorizer, fakes
):
    transport.script = [
        (302, {"location": EXTERNAL}, b""),
        (200, {"content-type": "text/plain; charset=utf-8"}, "step ✓\n".encode()),
    ]
    log = await api.download_job_log(make_client(authorizer=authorizer), REPO, 7)
    assert log == "step ✓\n"
    api_request, blob_request = transport.sent
    assert api_request.headers["authorization"] == "token t1"
    assert blob_request.url == EXTERNAL
    assert "authorization" not in blob_request.headers
    assert "x-github-api-version" not in blob_request.headers


async def test_download_job_log_accepts_a_direct_answer(make_client, transport, fakes):
    transport.script = [(200, {"content-type": "text/plain"}, b"inline log")]
    assert await api.download_job_log(make_client(), REPO, 7) == "inline log"


# -- against a real HTTP server -------------------------------------------------------------------


async def test_real_http_redirect_token_and_etag(aiohttp_server, rsa_keys, clock, sleeps):
    """Through aiohttp to a local server: token exchange, 503 retry, ETag 304, and a log
    redirect to the same host that must not receive the token."""
    seen: list[tuple[str, str, Mapping[str, str]]] = []
    failures = {"left": 1}

    async def record(request: web.Request) -> None:
        seen.append((request.method, request.path_qs, request.headers.copy()))  # case-insensitive

    async def access_token(request: web.Request) -> web.Response:
        await record(request)
        assert request.headers["Authorization"].startswith("bearer ")
        return web.json_response(
            {"token": "ghs_REALTOKEN", "expires_at": "2099-01-01T00:00:00Z"}, status=201
        )

    async def pull(request: web.Request) -> web.Response:
        await record(request)
        if failures["left"]:
            failures["left"] -= 1
            return web.Response(status=503)
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return web.json_response({"number": 3}, headers={"ETag": '"v1"'})

    async def logs(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound(location="/blobs/job-7.txt?sig=xyz")  # relative, same host

    async def blob(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="the log\n")

    app = web.Application()
    app.router.add_post("/app/installations/{id}/access_tokens", access_token)
    app.router.add_get("/repos/{owner}/{repo}/pulls/{number}", pull)
    app.router.add_get("/repos/{owner}/{repo}/actions/jobs/{job}/logs", logs)
    app.router.add_get("/blobs/{name}", blob)
    server = await aiohttp_server(app)

    async with aiohttp.ClientSession() as session:
        factory = GitHubClientFactory(
            session,
            AppCredentials(7, rsa_keys[0]),
            base_url=str(server.make_url("/")),
            clock=clock,
            sleep=sleeps,
            policy=RetryPolicy(),
        )
        gh = factory.for_installation(99)
        assert await api.get_pull(gh, "o/r", 3) == {"number": 3}
        assert await api.get_pull(gh, "o/r", 3) == {"number": 3}
        assert await api.download_job_log(gh, "o/r", 7) == "the log\n"

    paths = [(method, path) for method, path, _ in seen]
    assert paths == [
        ("POST", "/app/installations/99/access_tokens"),
        ("GET", "/repos/o/r/pulls/3"),  # 503
        ("GET", "/repos/o/r/pulls/3"),
        ("GET", "/repos/o/r/pulls/3"),  # conditional → 304
        ("GET", "/repos/o/r/actions/jobs/7/logs"),
        ("GET", "/blobs/job-7.txt?sig=xyz"),
    ]
    headers = [h for _, _, h in seen]
    assert len(sleeps.delays) == 1
    assert headers[2]["Authorization"] == "token ghs_REALTOKEN"
    assert headers[2]["X-GitHub-Api-Version"] == "2022-11-28"
    assert headers[3]["If-None-Match"] == '"v1"'
    assert headers[4]["Authorization"] == "token ghs_REALTOKEN"
    assert "Authorization" not in headers[5]
