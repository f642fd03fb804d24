"""The REST API: every operation of GitHub's REST description, answered from emulator state.

One catch-all route takes each request through the same steps: check ``X-GitHub-Api-Version``
(400 and a violation for a version GitHub does not serve), match the operation (501 and a
violation if the emulator has none), authenticate (JWT or installation token), validate path,
query and body against the description (404/422 and a violation), inject configured faults,
apply the rate limit, find the repository (404 when the token cannot see it), hold the token to
the operation's permission (403 "Resource not accessible by integration"), run the operation,
then add ``ETag``/304, ``Link`` and ``x-ratelimit-*`` headers, check the answer against the
response schema when asked to, and record the request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import secrets
import time
from datetime import datetime, timezone
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from . import auth
from .errors import ApiError, not_found, unprocessable, validation_failed
from .git_http import parse_authorization
from .openapi import Operation, Problem, RouteMatch
from .shapes import ROLE_TO_PERMISSION, iso, parse_time
from .state import Issue, RecordedRequest, Repo, Violation

if TYPE_CHECKING:
    from .emulator import Emulator

JWT_OPERATIONS = frozenset(
    {
        "apps/get-authenticated",
        "apps/list-installations",
        "apps/create-installation-access-token",
        "apps/get-repo-installation",
        "apps/get-webhook-config-for-app",
    }
)
PUBLIC_OPERATIONS = frozenset({"apps/create-from-manifest"})
LOG_URL_TTL = 60
RATE_LIMIT_DOCS = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
SECONDARY_RATE_LIMIT_DOCS = (
    "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api"
    "#about-secondary-rate-limits"
)
_NOT_ACCESSIBLE = (
    "There is at least one repository that does not exist or is not accessible to the parent installation."
)
API_VERSION = "2022-11-28"  # what GitHub selects when a request names none
SUPPORTED_API_VERSIONS = ("2026-03-10", "2022-11-28")  # newest first
API_VERSION_HEADER = "X-GitHub-Api-Version"
STATELESS_TOKEN_HEADER = "X-GitHub-Stateless-S2S-Token"  # enabled | disabled, per token request


def unsupported_version_message(requested: str) -> str:
    """GitHub's text for an ``X-GitHub-Api-Version`` it does not serve."""
    newest, *others = SUPPORTED_API_VERSIONS
    listed = f'"{newest}" (most recent)'
    if others:
        listed += "".join(f', "{v}"' for v in others[:-1]) + f' and "{others[-1]}"'
    return (
        f'The version you specified in the "X-GitHub-API-Version" request header, "{requested}", '
        f"is not a supported version. The following versions are currently supported: {listed}."
    )


def github_request_id() -> str:
    """An id shaped like GitHub's ``X-GitHub-Request-Id`` (``D24F:221686:28BC1:9F91F:69D56197``)."""
    return ":".join(secrets.token_hex(n).upper().lstrip("0") or "0" for n in (2, 3, 3, 3, 4))


@dataclass
class Call:
    """One validated API request."""

    request: web.Request
    operation: Operation
    path: dict[str, Any]
    query: dict[str, Any]
    body: Any
    principal: auth.Principal
    repo: Repo | None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def app(self) -> Any:
        assert self.principal.app is not None
        return self.principal.app

    @property
    def actor(self) -> Any:
        """The account the App acts as (``<slug>[bot]``)."""
        return self.app.bot

    @property
    def the_repo(self) -> Repo:
        assert self.repo is not None
        return self.repo


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Call], Awaitable[Reply]]


def _handler_name(operation_id: str) -> str:
    return "op_" + operation_id.replace("/", "__").replace("-", "_")


def _etag_matches(header: str, etag: str) -> bool:
    candidates = [c.strip() for c in header.split(",")]
    bare = etag.removeprefix("W/")
    return any(c == "*" or c.removeprefix("W/") == bare for c in candidates)


class RestApi:
    """HTTP translation of the REST operations onto an :class:`Emulator`."""

    def __init__(self, emulator: Emulator) -> None:
        self.em = emulator
        self.handlers: dict[str, Handler] = {}
        for operation_id in emulator.description.operations:
            handler = getattr(self, _handler_name(operation_id), None)
            if handler is not None:
                self.handlers[operation_id] = handler

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self.handle)

    # -- the pipeline ----------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        em = self.em
        raw_path = request.rel_url.raw_path
        method = request.method.upper()
        raw_body = await request.read()
        body: Any = None
        principal = auth.ANONYMOUS
        label = "anonymous"
        operation: Operation | None = None
        count = True
        rate_headers = True
        version = request.headers.get(API_VERSION_HEADER, "").strip() or API_VERSION
        try:
            if raw_path.startswith("/_emulator"):
                raise not_found()
            match = em.description.match(method, raw_path)
            if version not in SUPPORTED_API_VERSIONS:
                message = unsupported_version_message(version)
                self._violation(
                    "unsupported_api_version",
                    request,
                    match.operation if match else None,
                    400,
                    [{"message": message}],
                )
                version = API_VERSION
                raise ApiError(400, "Bad Request", errors=message)
            if match is None:
                label = self._identify(request).label
                raise self._not_implemented(request, None)
            operation = match.operation
            principal = self._authenticate(request, operation)
            label = principal.label
            call, body = self._validated(request, match, principal, raw_body)
            await self._inject_faults(label)
            if em.rate_limit_exhausted(label):
                raise self._primary_rate_limit(label, 403)
            handler = self.handlers.get(operation.operation_id)
            if handler is None:
                raise self._not_implemented(request, operation)
            call.repo = self._resolve_repo(call)
            self._authorize(call)
            reply = await handler(call)
            reply.headers.update(call.headers)
        except ApiError as error:
            reply = Reply(error.status, error.body(), dict(error.headers))
            rate_headers = error.rate_headers
        payload = None if reply.body is None else json.dumps(reply.body, separators=(",", ":")).encode()
        headers = {
            "X-GitHub-Media-Type": "github.v3; format=json",
            "X-GitHub-Api-Version-Selected": version,
            "X-GitHub-Request-Id": github_request_id(),
            "Vary": "Accept, Authorization, Cookie, X-GitHub-OTP",
        }
        status = reply.status
        if payload is not None and method == "GET" and status == 200:
            etag = 'W/"' + hashlib.sha256(payload).hexdigest()[:40] + '"'
            headers["ETag"] = etag
            headers["Cache-Control"] = "private, max-age=60, s-maxage=60"
            if _etag_matches(request.headers.get("If-None-Match", ""), etag):
                status, payload, count = 304, None, False
        rate = em.rate_limit_headers(label, count=count)
        if rate_headers:
            rate.update({k.lower(): v for k, v in reply.headers.items() if k.lower().startswith("x-ratelimit")})
            headers.update(rate)
        headers.update({k: v for k, v in reply.headers.items() if not k.lower().startswith("x-ratelimit")})
        if em.validate_responses and operation is not None and status != 304:
            problems = em.description.response_problems(operation, status, reply.body)
            if problems:
                self._violation(
                    "response", request, operation, status, [{"message": p} for p in problems[:20]]
                )
        em.record_request(
            RecordedRequest(
                time=em.clock(),
                method=method,
                path=raw_path,
                query=request.rel_url.raw_query_string,
                operation_id=operation.operation_id if operation else None,
                status=status,
                body=body,
                credential=label,
                duration=round(time.monotonic() - started, 6),
            )
        )
        if payload is None:
            return web.Response(status=status, headers=headers)
        headers["Content-Type"] = "application/json; charset=utf-8"
        return web.Response(status=status, body=payload, headers=headers)

    def _not_implemented(self, request: web.Request, operation: Operation | None) -> ApiError:
        """501 for a request the emulator cannot answer, and a violation: the bot called an
        operation outside the REST description (or one the emulator lacks)."""
        method, path = request.method.upper(), request.rel_url.raw_path
        named = f"{method} {path}"
        if operation is not None:
            named += f" ({operation.operation_id})"
        message = f"{named} is not implemented by the emulator"
        self._violation("unknown_operation", request, operation, 501, [{"message": message}])
        return ApiError(501, message)

    def _authorize(self, call: Call) -> None:
        """Hold an installation token to the operation's permission (GitHub's 403)."""
        principal = call.principal
        if principal.kind != "installation" or principal.token is None:
            return
        operation_id = call.operation.operation_id
        requirement = auth.OPERATION_PERMISSIONS.get(operation_id)
        if requirement is None:
            raise ApiError(
                403, auth.NOT_ACCESSIBLE, documentation_url=call.operation.documentation_url
            )
        if operation_id in auth.PULL_REQUEST_AWARE and self._targets_pull_request(call):
            requirement = requirement + tuple(("pull_requests", level) for _, level in requirement)
        if not auth.permits(principal.token.permissions, requirement):
            raise ApiError(403, auth.NOT_ACCESSIBLE, documentation_url=call.operation.documentation_url)

    def _targets_pull_request(self, call: Call) -> bool:
        repo = call.repo
        if repo is None:
            return False
        number = call.path.get("issue_number")
        if number is None and "comment_id" in call.path:
            comment = repo.comments.get(call.path["comment_id"])
            number = comment.issue_number if comment is not None else None
        issue = repo.issues.get(number) if isinstance(number, int) else None
        return issue is not None and issue.pull is not None

    def _violation(
        self,
        kind: str,
        request: web.Request,
        operation: Operation | None,
        status: int,
        errors: Sequence[dict[str, Any]],
    ) -> None:
        self.em.record_violation(
            Violation(
                kind=kind,
                method=request.method.upper(),
                path=request.rel_url.raw_path,
                operation_id=operation.operation_id if operation else None,
                status=status,
                errors=tuple(errors),
                time=self.em.clock(),
            )
        )

    def _identify(self, request: web.Request) -> auth.Principal:
        """The caller, if its credentials are valid (for rate-limit accounting only)."""
        header = request.headers.get("Authorization", "").strip()
        scheme, _, credential = header.partition(" ")
        try:
            if scheme.lower() == "bearer" and auth.looks_like_jwt(credential.strip()):
                app = auth.verify_app_jwt(
                    credential.strip(), self.em.apps, self.em.clock(), self.em.jwt_leeway
                )
                return auth.Principal("app", app=app)
            token = parse_authorization(header)
            return self.em.token_principal(token) if token else auth.ANONYMOUS
        except ApiError:
            return auth.ANONYMOUS

    def _authenticate(self, request: web.Request, operation: Operation) -> auth.Principal:
        if operation.operation_id in PUBLIC_OPERATIONS:
            return auth.ANONYMOUS
        header = request.headers.get("Authorization", "").strip()
        if not header:
            raise ApiError(401, "Requires authentication")
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() == "bearer" and auth.looks_like_jwt(credential):
            app = auth.verify_app_jwt(credential, self.em.apps, self.em.clock(), self.em.jwt_leeway)
            principal = auth.Principal("app", app=app)
        else:
            token = parse_authorization(header)
            if token is None:
                raise ApiError(401, "Bad credentials")
            principal = self.em.token_principal(token)
        if operation.operation_id in JWT_OPERATIONS and principal.kind != "app":
            raise ApiError(401, "A JSON web token could not be decoded")
        if operation.operation_id not in JWT_OPERATIONS and principal.kind == "app":
            raise ApiError(403, "Resource not accessible by integration")
        return principal

    def _validated(
        self, request: web.Request, match: RouteMatch, principal: auth.Principal, raw_body: bytes
    ) -> tuple[Call, Any]:
        description = self.em.description
        operation = match.operation
        path, problems = description.path_params(match)
        if problems:
            self._violation(
                "invalid_path", request, operation, 404, [p.as_error(operation.resource) for p in problems]
            )
            raise not_found()
        query, problems = description.query_params(operation, request.rel_url.query)
        if problems:
            self._invalid("invalid_query", request, operation, problems)
        body: Any = None
        if raw_body.strip():
            try:
                body = json.loads(raw_body)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                self._violation("invalid_json", request, operation, 400, [{"message": str(exc)}])
                raise ApiError(400, "Problems parsing JSON") from exc
        if operation.body_pointer is not None:
            if body is None and operation.body_required:
                body = {}
            if body is not None:
                problems = description.body_problems(operation, body)
                if problems:
                    self._invalid("invalid_body", request, operation, problems)
        call = Call(request, operation, path, query, body, principal, None)
        return call, body

    def _invalid(
        self, kind: str, request: web.Request, operation: Operation, problems: list[Problem]
    ) -> None:
        errors = [p.as_error(operation.resource) for p in problems]
        self._violation(kind, request, operation, 422, errors)
        details = "\n".join(f"For '{p.field or p.location}', {p.message}" for p in problems[:5])
        raise ApiError(422, f"Invalid request.\n\n{details}", errors=errors)

    async def _inject_faults(self, label: str) -> None:
        faults = self.em.faults
        delay = faults.latency()
        if delay > 0:
            await asyncio.sleep(delay)
        fault = faults.request_fault()
        if fault is None:
            return
        if fault.kind == "server_error":
            messages = {500: "Server Error", 502: "Server Error", 503: "Service Unavailable"}
            raise ApiError(fault.status, messages.get(fault.status, "Server Error"))
        if fault.kind == "secondary_rate_limit":
            headers = {} if fault.retry_after is None else {"retry-after": str(fault.retry_after)}
            raise ApiError(
                fault.status,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
                "again. If you reach out to GitHub Support for help, please include the request ID "
                f"{github_request_id()}.",
                headers=headers,
                documentation_url=SECONDARY_RATE_LIMIT_DOCS,
                rate_headers=False,
            )
        raise self._primary_rate_limit(label, fault.status)

    def _primary_rate_limit(self, label: str, status: int) -> ApiError:
        """GitHub's answer once the hourly quota is used up: ``x-ratelimit-remaining: 0`` and
        the ``x-ratelimit-reset`` epoch second when it refills."""
        rate = self.em.rate_limit_headers(label, count=False)
        rate["x-ratelimit-remaining"] = "0"
        rate["x-ratelimit-used"] = rate["x-ratelimit-limit"]
        stamp = datetime.fromtimestamp(self.em.clock(), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        return ApiError(
            status,
            f"API rate limit exceeded for {label.replace(':', ' ID ')}. If you reach out to GitHub "
            f"Support for help, please include the request ID {github_request_id()} and timestamp "
            f"{stamp}.",
            headers=rate,
            documentation_url=f"{RATE_LIMIT_DOCS}#about-rate-limits",
        )

    def _resolve_repo(self, call: Call) -> Repo | None:
        owner, name = call.path.get("owner"), call.path.get("repo")
        if owner is None or name is None:
            return None
        repo = self.em.repos.get(f"{owner}/{name}".lower())
        if repo is None:
            raise not_found()
        principal = call.principal
        if principal.kind == "installation" and not self.em.token_can_see(principal, repo):
            raise not_found()
        if principal.kind == "app":
            installed = any(
                i.app_id == principal.app.id and repo.id in i.repository_ids  # type: ignore[union-attr]
                for i in self.em.installations.values()
            )
            if not installed:
                raise not_found()
        return repo

    # -- helpers -------------------------------------------------------------------------------
    def paginate(self, call: Call, items: Sequence[Any]) -> list[Any]:
        per_page = max(1, min(int(call.query.get("per_page", 30)), 100))
        page = max(1, int(call.query.get("page", 1)))
        last = max(1, math.ceil(len(items) / per_page))
        if last > 1:
            query = dict(call.request.rel_url.query)

            def link(number: int, rel: str) -> str:
                query["page"] = str(number)
                query["per_page"] = str(per_page)
                return f'<{self.em.base_url}{call.request.rel_url.raw_path}?{urlencode(query)}>; rel="{rel}"'

            links = []
            if page > 1:
                links.append(link(min(page - 1, last), "prev"))
            if page < last:
                links.append(link(page + 1, "next"))
                links.append(link(last, "last"))
            if page > 1:
                links.append(link(1, "first"))
            call.headers["Link"] = ", ".join(links)
        start = (page - 1) * per_page
        return list(items[start : start + per_page])

    async def _sha_of(self, call: Call, ref: str) -> str | None:
        repo = call.the_repo
        sha = await self.em.git.ref_sha(repo.owner.login, repo.name, ref)
        return sha

    def _issue(self, call: Call) -> Issue:
        return self.em.issue(call.the_repo, call.path["issue_number"])

    def _pull(self, call: Call) -> Issue:
        return self.em.pull(call.the_repo, call.path["pull_number"])

    def _check_run(self, call: Call) -> Any:
        run = call.the_repo.check_runs.get(call.path["check_run_id"])
        if run is None:
            raise not_found()
        return run

    @property
    def shapes(self) -> Any:
        return self.em.shapes

    # == apps =========================================================================
    async def op_apps__get_authenticated(self, call: Call) -> Reply:
        data = self.shapes.integration(call.app)
        data["installations_count"] = sum(
            1 for i in self.em.installations.values() if i.app_id == call.app.id
        )
        return Reply(200, data)

    async def op_apps__get_webhook_config_for_app(self, call: Call) -> Reply:
        app = call.app
        data: dict[str, Any] = {"content_type": "json", "insecure_ssl": "0"}
        if app.webhook_url:
            data["url"] = app.webhook_url
        if app.webhook_secret:
            data["secret"] = "********"  # GitHub never shows the secret itself
        return Reply(200, data)

    async def op_apps__create_from_manifest(self, call: Call) -> Reply:
        result = await self.em.convert_manifest(call.path["code"])
        data = {k: v for k, v in result.items() if k not in ("private_key", "webhook_url", "bot_login")}
        return Reply(201, data)

    async def op_apps__list_installations(self, call: Call) -> Reply:
        items = [i for i in self.em.installations.values() if i.app_id == call.app.id]
        page = self.paginate(call, items)
        return Reply(200, [self.shapes.installation(i, call.app) for i in page])

    async def op_apps__create_installation_access_token(self, call: Call) -> Reply:
        installation = self.em.installations.get(call.path["installation_id"])
        if installation is None or installation.app_id != call.app.id:
            raise not_found()
        body = call.body or {}
        repo_ids: list[int] | None = None
        if body.get("repositories") or body.get("repository_ids"):
            repo_ids = []
            for name in body.get("repositories") or []:
                full = name if "/" in name else f"{installation.account.login}/{name}"
                repo = self.em.repos.get(full.lower())
                if repo is None or repo.id not in installation.repository_ids:
                    raise unprocessable(_NOT_ACCESSIBLE)
                repo_ids.append(repo.id)
            for repo_id in body.get("repository_ids") or []:
                if repo_id not in installation.repository_ids:
                    raise unprocessable(_NOT_ACCESSIBLE)
                repo_ids.append(repo_id)
        permissions = body.get("permissions")
        if permissions:
            granted = auth.with_metadata(call.app.permissions)
            for key, level in permissions.items():
                if not auth.level_allows(granted.get(key), level):
                    raise unprocessable("The permissions requested are not granted to this installation.")
        stateless: bool | None = None
        override = call.request.headers.get(STATELESS_TOKEN_HEADER, "").strip().lower()
        if override in ("enabled", "disabled"):
            stateless = override == "enabled"
        record = self.em.issue_token(
            installation, repository_ids=repo_ids, permissions=permissions, stateless=stateless
        )
        data: dict[str, Any] = {
            "token": record.token,
            "expires_at": iso(record.expires_at),
            "permissions": dict(record.permissions),
            "repository_selection": installation.repository_selection,
        }
        if repo_ids is not None:
            data["repositories"] = [
                self.shapes.repository(repo) for repo in (self.em.repo_by_id(i) for i in repo_ids) if repo
            ]
        return Reply(201, data)

    async def op_apps__list_repos_accessible_to_installation(self, call: Call) -> Reply:
        token, installation = call.principal.token, call.principal.installation
        assert token is not None and installation is not None
        repos = [r for r in (self.em.repo_by_id(i) for i in token.repository_ids) if r is not None]
        page = self.paginate(call, repos)
        return Reply(
            200,
            {
                "total_count": len(repos),
                "repositories": [self.shapes.repository(r) for r in page],
                "repository_selection": installation.repository_selection,
            },
        )

    async def op_apps__get_repo_installation(self, call: Call) -> Reply:
        repo = call.the_repo
        for installation in self.em.installations.values():
            if installation.app_id == call.app.id and repo.id in installation.repository_ids:
                return Reply(200, self.shapes.installation(installation, call.app))
        raise not_found()

    # == repositories ====================================================================
    async def op_repos__get(self, call: Call) -> Reply:
        repo = call.the_repo
        data = self.shapes.repository(repo, full=True)
        data["permissions"] = {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True}
        return Reply(200, data)

    async def op_repos__get_branch(self, call: Call) -> Reply:
        repo = call.the_repo
        branch = call.path["branch"]
        sha = await self._sha_of(call, f"refs/heads/{branch}")
        if sha is None:
            raise not_found("Branch not found")
        info = await self.em.commit(repo, sha)
        return Reply(200, self.shapes.branch(repo, branch, info))

    async def op_repos__get_collaborator_permission_level(self, call: Call) -> Reply:
        repo = call.the_repo
        login = call.path["username"]
        account = self.em.accounts.get(login.lower())
        if account is None:
            raise not_found()
        role = self.em.permission_of(repo, account)
        permission = ROLE_TO_PERMISSION[role]
        user = self.shapes.user(account)
        user["permissions"] = {
            "admin": role == "admin",
            "maintain": role in ("admin", "maintain"),
            "push": permission in ("admin", "write"),
            "triage": role in ("admin", "maintain", "write", "triage"),
            "pull": role != "none",
        }
        user["role_name"] = role
        return Reply(200, {"permission": permission, "role_name": role, "user": user})

    async def _statuses_for(self, call: Call) -> tuple[str, list[Any]]:
        sha = await self._sha_of(call, call.path["ref"])
        if sha is None:
            raise not_found(f"No commit found for SHA: {call.path['ref']}")
        statuses = [s for s in call.the_repo.statuses if s.sha == sha]
        statuses.sort(key=lambda s: (s.created_at, s.id), reverse=True)
        return sha, statuses

    async def op_repos__get_combined_status_for_ref(self, call: Call) -> Reply:
        repo = call.the_repo
        sha, statuses = await self._statuses_for(call)
        latest: dict[str, Any] = {}
        for status in statuses:
            latest.setdefault(status.context, status)
        states = {s.state for s in latest.values()}
        if states & {"error", "failure"}:
            state = "failure"
        elif not states or "pending" in states:
            state = "pending"
        else:
            state = "success"
        items = sorted(latest.values(), key=lambda s: s.context)
        page = self.paginate(call, items)
        api = f"{self.em.base_url}/repos/{repo.full_name}"
        return Reply(
            200,
            {
                "state": state,
                "statuses": [self.shapes.simple_status(repo, s) for s in page],
                "sha": sha,
                "total_count": len(items),
                "repository": self.shapes.minimal_repository(repo),
                "commit_url": f"{api}/commits/{sha}",
                "url": f"{api}/commits/{sha}/status",
            },
        )

    async def op_repos__list_commit_statuses_for_ref(self, call: Call) -> Reply:
        repo = call.the_repo
        _, statuses = await self._statuses_for(call)
        return Reply(200, [self.shapes.status(repo, s) for s in self.paginate(call, statuses)])

    async def op_repos__compare_commits(self, call: Call) -> Reply:
        repo = call.the_repo
        basehead = call.path["basehead"]
        base, sep, head = basehead.partition("...")
        if not sep:
            base, sep, head = basehead.partition("..")
        if not sep or not base or not head:
            raise not_found()
        base_sha = await self._sha_of(call, base)
        head_sha = await self._sha_of(call, head)
        if base_sha is None or head_sha is None:
            raise not_found()
        result = await self.em.git.compare(repo.owner.login, repo.name, base_sha, head_sha)
        base_info = await self.em.commit(repo, base_sha)
        merge_base = result["merge_base"] or base_sha
        merge_info = await self.em.commit(repo, merge_base)
        commits = self.paginate(call, result["commits"])
        html = f"{self.em.base_url}/{repo.full_name}/compare/{base}...{head}"
        return Reply(
            200,
            {
                "url": f"{self.em.base_url}/repos/{repo.full_name}/compare/{base}...{head}",
                "html_url": html,
                "permalink_url": f"{html.rsplit('/compare/', 1)[0]}/compare/{base_sha[:7]}...{head_sha[:7]}",
                "diff_url": f"{html}.diff",
                "patch_url": f"{html}.patch",
                "base_commit": self.shapes.commit(repo, base_info),
                "merge_base_commit": self.shapes.commit(repo, merge_info),
                "status": result["status"],
                "ahead_by": result["ahead_by"],
                "behind_by": result["behind_by"],
                "total_commits": result["total_commits"],
                "commits": [self.shapes.commit(repo, info) for info in commits],
                "files": [self.shapes.diff_entry(repo, f, head_sha) for f in result["files"]],
            },
        )

    async def op_repos__get_content(self, call: Call) -> Reply:
        repo = call.the_repo
        owner, name = repo.owner.login, repo.name
        ref = call.query.get("ref") or repo.default_branch
        path = call.path["path"].strip("/")
        try:
            entries = await self.em.git.list_tree(owner, name, ref, path)
        except ValueError as exc:
            raise not_found() from exc
        if not entries:
            raise not_found()
        if len(entries) == 1 and entries[0]["path"] == path and entries[0]["type"] != "dir":
            entry = entries[0]
            data = await self.em.git.read_file(owner, name, ref, path)
            if data is None:
                raise not_found()
            return Reply(200, self.shapes.content_file(repo, entry, data, ref))
        return Reply(200, [self.shapes.content_entry(repo, entry, ref) for entry in entries])

    async def op_git__get_ref(self, call: Call) -> Reply:
        ref = "refs/" + call.path["ref"].removeprefix("refs/")
        sha = await self._sha_of(call, ref)
        if sha is None:
            raise not_found()
        return Reply(200, self.shapes.git_ref(call.the_repo, ref, sha))

    async def op_git__delete_ref(self, call: Call) -> Reply:
        ref = call.path["ref"].removeprefix("refs/")
        if not ref.startswith("heads/"):
            raise unprocessable("Reference does not exist")
        await self.em.delete_branch(call.the_repo, ref.removeprefix("heads/"), call.actor)
        return Reply(204)

    # == issues =====================================================================
    async def op_issues__list_for_repo(self, call: Call) -> Reply:
        repo = call.the_repo
        state = call.query.get("state", "open")
        items = [i for i in repo.issues.values() if state == "all" or i.state == state]
        if call.query.get("labels"):
            wanted = {n.strip().lower() for n in call.query["labels"].split(",") if n.strip()}
            items = [i for i in items if wanted <= {n.lower() for n in i.labels}]
        if call.query.get("creator"):
            items = [i for i in items if i.user.login.lower() == call.query["creator"].lower()]
        since = parse_time(call.query.get("since"))
        if since is not None:
            items = [i for i in items if i.updated_at >= since]
        sort_key = "updated_at" if call.query.get("sort") == "updated" else "created_at"
        items.sort(
            key=lambda i: (getattr(i, sort_key), i.number),
            reverse=call.query.get("direction", "desc") == "desc",
        )
        return Reply(200, [self.shapes.issue(repo, i) for i in self.paginate(call, items)])

    async def op_issues__get(self, call: Call) -> Reply:
        return Reply(200, self.shapes.issue(call.the_repo, self._issue(call)))

    async def op_issues__update(self, call: Call) -> Reply:
        repo = call.the_repo
        issue = self._issue(call)
        body = call.body or {}
        title = body.get("title")
        self.em.update_issue(
            repo,
            issue,
            call.actor,
            title=str(title) if title is not None else None,
            body=body.get("body"),
            body_set="body" in body,
            state=body.get("state"),
            state_reason=body.get("state_reason"),
            labels=(
                [l if isinstance(l, str) else l.get("name", "") for l in body["labels"]]
                if "labels" in body
                else None
            ),
        )
        return Reply(200, self.shapes.issue(repo, issue))

    async def op_issues__list_comments(self, call: Call) -> Reply:
        repo = call.the_repo
        issue = self._issue(call)
        comments = [repo.comments[c] for c in issue.comment_ids]
        since = parse_time(call.query.get("since"))
        if since is not None:
            comments = [c for c in comments if c.updated_at >= since]
        return Reply(200, [self.shapes.issue_comment(repo, c) for c in self.paginate(call, comments)])

    async def op_issues__create_comment(self, call: Call) -> Reply:
        repo = call.the_repo
        issue = self._issue(call)
        comment = self.em.comment(repo, issue, call.body["body"], call.actor, app_id=call.app.id)
        data = self.shapes.issue_comment(repo, comment)
        return Reply(201, data, {"Location": data["url"]})

    def _comment(self, call: Call) -> Any:
        comment = call.the_repo.comments.get(call.path["comment_id"])
        if comment is None:
            raise not_found()
        return comment

    async def op_issues__get_comment(self, call: Call) -> Reply:
        return Reply(200, self.shapes.issue_comment(call.the_repo, self._comment(call)))

    async def op_issues__update_comment(self, call: Call) -> Reply:
        repo = call.the_repo
        comment = self.em.edit_comment(repo, self._comment(call), call.body["body"], call.actor)
        return Reply(200, self.shapes.issue_comment(repo, comment))

    async def op_issues__add_labels(self, call: Call) -> Reply:
        repo = call.the_repo
        issue = self._issue(call)
        body = call.body
        raw = body.get("labels", []) if isinstance(body, dict) else (body or [])
        names = [item if isinstance(item, str) else item["name"] for item in raw]
        if not names:
            raise validation_failed("Label", "labels", "missing_field")
        self.em.add_labels(repo, issue, names, call.actor)
        return Reply(200, self.shapes.labels_of(repo, issue.labels))

    async def op_issues__remove_label(self, call: Call) -> Reply:
        repo = call.the_repo
        issue = self._issue(call)
        self.em.remove_label(repo, issue, call.path["name"], call.actor)
        return Reply(200, self.shapes.labels_of(repo, issue.labels))

    async def op_issues__create_label(self, call: Call) -> Reply:
        repo = call.the_repo
        body = call.body
        label = self.em.create_label(repo, body["name"], body.get("color"), body.get("description"))
        data = self.shapes.label(repo, label)
        return Reply(201, data, {"Location": data["url"]})

    # == reactions ==================================================================
    def _reaction_reply(self, reaction: Any, created: bool) -> Reply:
        return Reply(201 if created else 200, self.shapes.reaction(reaction))

    async def op_reactions__create_for_issue(self, call: Call) -> Reply:
        issue = self._issue(call)
        return self._reaction_reply(*self.em.react(issue.reactions, call.body["content"], call.actor))

    async def op_reactions__create_for_issue_comment(self, call: Call) -> Reply:
        comment = self._comment(call)
        return self._reaction_reply(*self.em.react(comment.reactions, call.body["content"], call.actor))

    async def op_reactions__create_for_pull_request_review_comment(self, call: Call) -> Reply:
        comment = call.the_repo.review_comments.get(call.path["comment_id"])
        if comment is None:
            raise not_found()
        return self._reaction_reply(*self.em.react(comment.reactions, call.body["content"], call.actor))

    # == pulls ======================================================================
    async def op_pulls__list(self, call: Call) -> Reply:
        repo = call.the_repo
        state = call.query.get("state", "open")
        items = [i for i in repo.pulls() if state == "all" or i.state == state]
        head = call.query.get("head")
        if head:
            owner, sep, branch = head.partition(":")
            if not sep:
                owner, branch = repo.owner.login, head
            items = [
                i
                for i in items
                if owner.lower() == repo.owner.login.lower() and i.pull and i.pull.head_ref == branch
            ]
        if call.query.get("base"):
            items = [i for i in items if i.pull and i.pull.base_ref == call.query["base"]]
        sort = call.query.get("sort", "created")
        key = "updated_at" if sort in ("updated", "popularity", "long-running") else "created_at"
        items.sort(
            key=lambda i: (getattr(i, key), i.number), reverse=call.query.get("direction", "desc") == "desc"
        )
        return Reply(
            200, [self.shapes.pull_request(repo, i, simple=True) for i in self.paginate(call, items)]
        )

    async def op_pulls__create(self, call: Call) -> Reply:
        repo = call.the_repo
        body = call.body
        if body.get("issue") is not None:
            raise unprocessable("Converting an issue into a pull request is not supported by the emulator")
        if not body.get("title"):
            raise validation_failed("PullRequest", "title", "missing_field")
        issue = await self.em.create_pull(
            repo,
            call.actor,
            head=body["head"],
            base=body["base"],
            title=body["title"],
            body=body.get("body"),
            draft=bool(body.get("draft", False)),
            maintainer_can_modify=bool(body.get("maintainer_can_modify", False)),
            app_id=call.app.id,
        )
        data = self.shapes.pull_request(repo, issue)
        return Reply(201, data, {"Location": data["url"]})

    async def op_pulls__get(self, call: Call) -> Reply:
        repo = call.the_repo
        issue = self._pull(call)
        await self.em.refresh_mergeable(repo, issue)
        return Reply(200, self.shapes.pull_request(repo, issue))

    async def op_pulls__update(self, call: Call) -> Reply:
        repo = call.the_repo
        issue = self._pull(call)
        body = call.body or {}
        await self.em.update_pull(
            repo,
            issue,
            call.actor,
            title=body.get("title"),
            body=body.get("body"),
            body_set="body" in body,
            state=body.get("state"),
            base=body.get("base"),
        )
        if "maintainer_can_modify" in body and issue.pull is not None:
            issue.pull.maintainer_can_modify = bool(body["maintainer_can_modify"])
        return Reply(200, self.shapes.pull_request(repo, issue))

    async def op_pulls__list_files(self, call: Call) -> Reply:
        repo = call.the_repo
        issue = self._pull(call)
        pull = issue.pull
        assert pull is not None
        files = await self.em.git.changed_files(repo.owner.login, repo.name, pull.base_sha, pull.head_sha)
        return Reply(
            200, [self.shapes.diff_entry(repo, f, pull.head_sha) for f in self.paginate(call, files)]
        )

    async def op_pulls__list_review_comments(self, call: Call) -> Reply:
        repo = call.the_repo
        issue = self._pull(call)
        comments = [c for c in repo.review_comments.values() if c.pull_number == issue.number]
        since = parse_time(call.query.get("since"))
        if since is not None:
            comments = [c for c in comments if c.updated_at >= since]
        reverse = call.query.get("direction", "asc") == "desc"
        comments.sort(key=lambda c: (c.created_at, c.id), reverse=reverse)
        return Reply(200, [self.shapes.review_comment(repo, c) for c in self.paginate(call, comments)])

    async def op_pulls__create_reply_for_review_comment(self, call: Call) -> Reply:
        repo = call.the_repo
        issue = self._pull(call)
        parent = repo.review_comments.get(call.path["comment_id"])
        if parent is None or parent.pull_number != issue.number:
            raise not_found()
        reply = self.em.reply_to_review_comment(
            repo, issue, parent, call.body["body"], call.actor, app_id=call.app.id
        )
        data = self.shapes.review_comment(repo, reply)
        return Reply(201, data, {"Location": data["url"]})

    async def op_pulls__list_reviews(self, call: Call) -> Reply:
        repo = call.the_repo
        issue = self._pull(call)
        reviews = [r for r in repo.reviews.values() if r.pull_number == issue.number]
        return Reply(200, [self.shapes.review(repo, r) for r in self.paginate(call, reviews)])

    def _review(self, call: Call, issue: Issue) -> Any:
        review = call.the_repo.reviews.get(call.path["review_id"])
        if review is None or review.pull_number != issue.number:
            raise not_found()
        return review

    async def op_pulls__get_review(self, call: Call) -> Reply:
        issue = self._pull(call)
        return Reply(200, self.shapes.review(call.the_repo, self._review(call, issue)))

    async def op_pulls__list_comments_for_review(self, call: Call) -> Reply:
        repo = call.the_repo
        issue = self._pull(call)
        review = self._review(call, issue)
        comments = [repo.review_comments[c] for c in review.comment_ids]
        items = []
        for comment in self.paginate(call, comments):
            data = self.shapes.review_comment(repo, comment)
            data.pop("performed_via_github_app", None)
            items.append(data)
        return Reply(200, items)

    # == checks =====================================================================
    async def op_checks__create(self, call: Call) -> Reply:
        repo = call.the_repo
        body = call.body
        info = await self.em.commit(repo, body["head_sha"])
        if body.get("status") == "completed" and not body.get("conclusion"):
            raise validation_failed("CheckRun", "conclusion", "missing_field")
        run = self.em.create_check_run(
            repo,
            call.app,
            call.actor,
            name=body["name"],
            head_sha=info.sha,
            status=body.get("status", "queued"),
            conclusion=body.get("conclusion"),
            started_at=parse_time(body.get("started_at")),
            completed_at=parse_time(body.get("completed_at")),
            output=body.get("output"),
            actions=body.get("actions") or (),
            details_url=body.get("details_url"),
            external_id=body.get("external_id"),
        )
        return Reply(201, self.shapes.check_run(repo, run))

    async def op_checks__get(self, call: Call) -> Reply:
        return Reply(200, self.shapes.check_run(call.the_repo, self._check_run(call)))

    async def op_checks__update(self, call: Call) -> Reply:
        repo = call.the_repo
        run = self._check_run(call)
        if run.app_id != call.app.id:
            raise ApiError(
                403, "Invalid app_id - check run can only be modified by the GitHub App that created it."
            )
        self.em.update_check_run(repo, run, call.actor, call.body)
        return Reply(200, self.shapes.check_run(repo, run))

    async def op_checks__list_annotations(self, call: Call) -> Reply:
        repo = call.the_repo
        run = self._check_run(call)
        page = self.paginate(call, run.annotations)
        return Reply(200, [self.shapes.annotation(repo, run, a) for a in page])

    async def op_checks__rerequest_run(self, call: Call) -> Reply:
        repo = call.the_repo
        run = self._check_run(call)
        if run.status != "completed":
            raise ApiError(422, "This check run is not rerequestable")
        self.em.rerequest_check_run(repo, run, call.actor)
        return Reply(201, {})

    def _suite(self, call: Call) -> Any:
        suite = call.the_repo.check_suites.get(call.path["check_suite_id"])
        if suite is None:
            raise not_found()
        return suite

    async def op_checks__get_suite(self, call: Call) -> Reply:
        repo = call.the_repo
        suite = self._suite(call)
        info = await self.em.commit(repo, suite.head_sha)
        return Reply(200, self.shapes.check_suite(repo, suite, self.shapes.simple_commit(info)))

    def _filter_runs(self, call: Call, runs: list[Any]) -> list[Any]:
        query = call.query
        if query.get("check_name"):
            runs = [r for r in runs if r.name == query["check_name"]]
        if query.get("status"):
            runs = [r for r in runs if r.status == query["status"]]
        if query.get("app_id"):
            runs = [r for r in runs if r.app_id == query["app_id"]]
        runs.sort(key=lambda r: r.id, reverse=True)
        if query.get("filter", "latest") == "latest":
            seen: set[tuple[int, str]] = set()
            latest = []
            for run in runs:
                key = (run.app_id, run.name)
                if key not in seen:
                    seen.add(key)
                    latest.append(run)
            runs = latest
        return runs

    def _runs_reply(self, call: Call, runs: list[Any]) -> Reply:
        repo = call.the_repo
        runs = self._filter_runs(call, runs)
        page = self.paginate(call, runs)
        return Reply(
            200, {"total_count": len(runs), "check_runs": [self.shapes.check_run(repo, r) for r in page]}
        )

    async def op_checks__list_for_suite(self, call: Call) -> Reply:
        suite = self._suite(call)
        runs = [r for r in call.the_repo.check_runs.values() if r.suite_id == suite.id]
        return self._runs_reply(call, runs)

    async def op_checks__list_for_ref(self, call: Call) -> Reply:
        sha = await self._sha_of(call, call.path["ref"])
        if sha is None:
            raise unprocessable(f"No commit found for SHA: {call.path['ref']}")
        runs = [r for r in call.the_repo.check_runs.values() if r.head_sha == sha]
        return self._runs_reply(call, runs)

    # == actions ====================================================================
    def _job(self, call: Call) -> Any:
        job = call.the_repo.jobs.get(call.path["job_id"])
        if job is None:
            raise not_found()
        return job

    def _workflow_run(self, call: Call) -> Any:
        run = call.the_repo.workflow_runs.get(call.path["run_id"])
        if run is None:
            raise not_found()
        return run

    async def op_actions__get_job_for_workflow_run(self, call: Call) -> Reply:
        return Reply(200, self.shapes.job(call.the_repo, self._job(call)))

    async def op_actions__download_job_logs_for_workflow_run(self, call: Call) -> Reply:
        repo = call.the_repo
        job = self._job(call)
        path = f"/_emulator/logs/{repo.full_name}/jobs/{job.id}"
        expires = int(self.em.clock()) + LOG_URL_TTL
        signature = auth.log_url_signature(self.em.log_secret, path, expires)
        location = f"{self.em.base_url}{path}?{urlencode({'expires': expires, 'sig': signature})}"
        return Reply(302, None, {"Location": location})

    async def op_actions__re_run_job_for_workflow_run(self, call: Call) -> Reply:
        repo = call.the_repo
        job = self._job(call)
        if job.status != "completed":
            raise ApiError(403, "This job is not rerunnable yet")
        self.em.ci.schedule(repo, job.head_branch, job.head_sha, "push", force=True, actor=call.actor)
        return Reply(201, {})

    def _runs_list(self, call: Call, runs: list[Any]) -> Reply:
        repo = call.the_repo
        query = call.query
        if query.get("branch"):
            runs = [r for r in runs if r.head_branch == query["branch"]]
        if query.get("event"):
            runs = [r for r in runs if r.event == query["event"]]
        if query.get("status"):
            wanted = query["status"]
            runs = [r for r in runs if r.status == wanted or r.conclusion == wanted]
        if query.get("head_sha"):
            runs = [r for r in runs if r.head_sha == query["head_sha"]]
        if query.get("check_suite_id"):
            runs = [r for r in runs if r.check_suite_id == query["check_suite_id"]]
        runs.sort(key=lambda r: r.id, reverse=True)
        page = self.paginate(call, runs)
        exclude = bool(query.get("exclude_pull_requests"))
        items = []
        for run in page:
            data = self.shapes.workflow_run(repo, run, self.em.ci.head_commit_of(repo, run.head_sha))
            if exclude:
                data["pull_requests"] = []
            items.append(data)
        return Reply(200, {"total_count": len(runs), "workflow_runs": items})

    async def op_actions__list_workflow_runs_for_repo(self, call: Call) -> Reply:
        return self._runs_list(call, list(call.the_repo.workflow_runs.values()))

    async def op_actions__list_workflow_runs(self, call: Call) -> Reply:
        repo = call.the_repo
        wanted = str(call.path["workflow_id"])
        workflow = next(
            (
                w
                for w in repo.workflows.values()
                if str(w.id) == wanted or w.path.rsplit("/", 1)[-1] == wanted
            ),
            None,
        )
        if workflow is None:
            raise not_found()
        return self._runs_list(call, [r for r in repo.workflow_runs.values() if r.workflow_id == workflow.id])

    async def op_actions__get_workflow_run(self, call: Call) -> Reply:
        repo = call.the_repo
        run = self._workflow_run(call)
        data = self.shapes.workflow_run(repo, run, self.em.ci.head_commit_of(repo, run.head_sha))
        if call.query.get("exclude_pull_requests"):
            data["pull_requests"] = []
        return Reply(200, data)

    async def op_actions__list_jobs_for_workflow_run(self, call: Call) -> Reply:
        repo = call.the_repo
        run = self._workflow_run(call)
        jobs = [repo.jobs[j] for j in run.job_ids if j in repo.jobs]
        page = self.paginate(call, jobs)
        return Reply(200, {"total_count": len(jobs), "jobs": [self.shapes.job(repo, j) for j in page]})
