"""``/_emulator/…``: the actor API over HTTP (humans, CI, setup) and the emulator's records.

Every route is a thin JSON wrapper over a method of :class:`~bot.sandbox.emulator.Emulator`.
Creating routes answer the created object's REST representation. Faults never apply here.
Also served: pre-signed job-log URLs (``/_emulator/logs/…``), external CI build logs
(``/_emulator/external-ci/…``) and GitHub's App-manifest form (``POST /settings/apps/new``),
which redirects to the manifest's ``redirect_url`` with a code.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from . import auth
from .errors import ApiError, not_found, validation_failed

if TYPE_CHECKING:
    from .emulator import Emulator

PREFIX = "/_emulator"
Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def _guard(handler: Route) -> Route:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            return _json(error.body(), error.status)
        except (KeyError, TypeError, ValueError) as error:
            message = f"missing field {error}" if isinstance(error, KeyError) else str(error)
            return _json({"message": f"Invalid request: {message}"}, 422)

    return wrapped


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "Problems parsing JSON") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "The body must be a JSON object")
    return data


def _repo_name(request: web.Request) -> str:
    return f"{request.match_info['owner']}/{request.match_info['repo']}"


def _number(request: web.Request, key: str = "number") -> int:
    value = request.match_info[key]
    if not value.isdigit():
        raise not_found()
    return int(value)


def add_actor_routes(app: web.Application, emulator: Emulator) -> None:
    """Register the ``/_emulator`` routes, the log URLs and the manifest form on ``app``."""
    em = emulator
    routes: list[tuple[str, str, Route]] = []

    def route(method: str, path: str) -> Callable[[Route], Route]:
        def register(handler: Route) -> Route:
            routes.append((method, path, _guard(handler)))
            return handler

        return register

    # -- apps and installations ----------------------------------------------------------
    @route("POST", "/apps")
    async def create_app(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        result = await em.create_app(
            body["name"],
            slug=body.get("slug"),
            webhook_url=body.get("webhook_url"),
            webhook_secret=body.get("webhook_secret"),
            public_key=body.get("public_key"),
            owner=body.get("owner", "octo-org"),
            permissions=body.get("permissions"),
            events=body.get("events"),
        )
        if body.get("ping"):
            em.ping(result["id"])
        return _json(result, 201)

    @route("PATCH", "/apps/{app_id}")
    async def update_app(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        app = em.update_app(
            _number(request, "app_id"),
            webhook_url=body.get("webhook_url"),
            webhook_secret=body.get("webhook_secret"),
        )
        return _json(em.shapes.integration(app))

    @route("POST", "/apps/{app_id}/ping")
    async def ping(request: web.Request) -> web.StreamResponse:
        delivery = em.ping(_number(request, "app_id"))
        return _json(delivery.summary(), 201)

    @route("POST", "/installations")
    async def create_installation(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        result = await em.create_installation(
            int(body["app_id"]), body["account"], body.get("repositories", []), sender=body.get("sender")
        )
        return _json(result, 201)

    @route("PATCH", "/installations/{installation_id}")
    async def change_installation(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        result = await em.change_installation_repositories(
            _number(request, "installation_id"),
            add=body.get("add", []),
            remove=body.get("remove", []),
            sender=body.get("sender"),
        )
        return _json(result)

    @route("DELETE", "/installations/{installation_id}")
    async def delete_installation(request: web.Request) -> web.StreamResponse:
        await em.delete_installation(_number(request, "installation_id"))
        return web.Response(status=204)

    @route("POST", "/installations/{installation_id}/tokens")
    async def create_token(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        stateless = body.get("stateless")
        record = await em.create_token(
            _number(request, "installation_id"),
            permissions=body.get("permissions"),
            stateless=bool(stateless) if stateless is not None else None,
        )
        return _json(
            {"token": record.token, "expires_at": record.expires_at, "permissions": record.permissions},
            201,
        )

    @route("POST", "/app-manifests")
    async def register_manifest(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        code = em.register_manifest(body.get("manifest", body))
        return _json({"code": code}, 201)

    # -- repositories and users ----------------------------------------------------------
    @route("POST", "/repos")
    async def create_repo(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        result = await em.create_repo(
            body["owner"],
            body["name"],
            default_branch=body.get("default_branch", "main"),
            files=body.get("files"),
            source_dir=body.get("source_dir"),
            owner_type=body.get("owner_type"),
            private=bool(body.get("private", False)),
            description=body.get("description"),
        )
        return _json(result, 201)

    @route("POST", "/users")
    async def create_user(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        result = em.create_user(
            body["login"],
            type=body.get("type", "User"),
            repo=body.get("repo"),
            permission=body.get("permission"),
            name=body.get("name"),
            email=body.get("email"),
        )
        return _json(result, 201)

    # -- issues --------------------------------------------------------------------------
    @route("POST", "/repos/{owner}/{repo}/issues")
    async def open_issue(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        result = await em.open_issue(
            _repo_name(request),
            title=body["title"],
            body=body.get("body", ""),
            user=body.get("user"),
            labels=body.get("labels", []),
        )
        return _json(result, 201)

    @route("PATCH", "/repos/{owner}/{repo}/issues/{number}")
    async def edit_issue(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        result = await em.edit_issue(
            _repo_name(request),
            _number(request),
            user=body.get("user"),
            state=body.get("state"),
            title=body.get("title"),
            body=body.get("body"),
            state_reason=body.get("state_reason"),
        )
        return _json(result)

    @route("POST", "/repos/{owner}/{repo}/issues/{number}/labels")
    async def label_issue(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        result = await em.label_issue(_repo_name(request), _number(request), body["labels"], body.get("user"))
        return _json(result)

    @route("DELETE", "/repos/{owner}/{repo}/issues/{number}/labels/{name}")
    async def unlabel_issue(request: web.Request) -> web.StreamResponse:
        result = await em.unlabel_issue(
            _repo_name(request), _number(request), request.match_info["name"], request.query.get("user")
        )
        return _json(result)

    @route("POST", "/repos/{owner}/{repo}/issues/{number}/comments")
    async def comment(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        result = await em.comment_on(_repo_name(request), _number(request), body["body"], body.get("user"))
        return _json(result, 201)

    # -- pull requests -------------------------------------------------------------------
    @route("POST", "/repos/{owner}/{repo}/pulls")
    async def open_pull(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        result = await em.open_pull(
            _repo_name(request),
            head=body["head"],
            base=body.get("base"),
            title=body["title"],
            body=body.get("body", ""),
            user=body.get("user"),
            draft=bool(body.get("draft", False)),
        )
        return _json(result, 201)

    @route("PATCH", "/repos/{owner}/{repo}/pulls/{number}")
    async def edit_pull(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        result = await em.edit_pull(
            _repo_name(request),
            _number(request),
            user=body.get("user"),
            state=body.get("state"),
            title=body.get("title"),
            body=body.get("body"),
            base=body.get("base"),
        )
        return _json(result)

    @route("POST", "/repos/{owner}/{repo}/pulls/{number}/reviews")
    async def review(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        result = await em.submit_review(
            _repo_name(request),
            _number(request),
            user=body.get("user"),
            event=body.get("event", "COMMENT"),
            body=body.get("body", ""),
            comments=body.get("comments", []),
        )
        return _json(result, 201)

    @route("POST", "/repos/{owner}/{repo}/pulls/{number}/merge")
    async def merge(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        result = await em.merge_pull(
            _repo_name(request),
            _number(request),
            user=body.get("user"),
            merge_method=body.get("merge_method", "merge"),
            commit_title=body.get("commit_title"),
        )
        return _json(result)

    @route("POST", "/repos/{owner}/{repo}/commits")
    async def push_commit(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        result = await em.push_commit(
            _repo_name(request),
            branch=body["branch"],
            files=body["files"],
            message=body.get("message", "Update files"),
            user=body.get("user"),
            create_from=body.get("create_from"),
        )
        return _json(result, 201)

    @route("POST", "/repos/{owner}/{repo}/check-runs/{number}/requested-action")
    async def requested_action(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        delivery = em.request_check_action(
            _repo_name(request), _number(request), body["identifier"], body.get("user")
        )
        return _json({"delivery": delivery.summary() if delivery else None}, 201)

    @route("PUT", "/repos/{owner}/{repo}/branches/{branch:.+}/protection")
    async def protect_branch(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        protection = em.protect_branch(
            _repo_name(request),
            request.match_info["branch"],
            required_checks=body.get("required_checks", []),
            strict=bool(body.get("strict", False)),
        )
        return _json(
            {
                "branch": protection.branch,
                "required_checks": list(protection.required_checks),
                "strict": protection.strict,
            }
        )

    @route("DELETE", "/repos/{owner}/{repo}/branches/{branch:.+}/protection")
    async def unprotect_branch(request: web.Request) -> web.StreamResponse:
        em.unprotect_branch(_repo_name(request), request.match_info["branch"])
        return web.Response(status=204)

    # -- CI ------------------------------------------------------------------------------
    @route("POST", "/ci")
    async def configure_ci(request: web.Request) -> web.StreamResponse:
        """``provider``: ``actions`` (check runs, workflow runs and jobs) or ``external``
        (commit statuses by ``creator``, one per name in ``checks``)."""
        body = await _body(request)
        provider = body.get("provider", "actions")
        extra = {"creator": body["creator"]} if body.get("creator") else {}
        config = em.configure_ci(
            body["repo"],
            body["command"],
            checks=body.get("checks") or (("ci",) if provider == "actions" else ("ci/external",)),
            timeout=float(body.get("timeout", 120)),
            env=body.get("env"),
            provider=provider,
            **extra,
        )
        return _json(
            {
                "repo": body["repo"],
                "provider": config.provider,
                "command": config.command,
                "checks": list(config.checks),
                "timeout": config.timeout,
                **({"creator": config.creator} if config.provider == "external" else {}),
            },
            201,
        )

    @route("GET", "/external-ci/{owner}/{repo}/builds/{number}")
    async def external_build_log(request: web.Request) -> web.StreamResponse:
        repo = em.repo(_repo_name(request))
        found = em.ci.external_logs.get(_number(request))
        if found is None or found[0] != repo.id:
            raise not_found()
        return web.Response(text=found[1], content_type="text/plain", charset="utf-8")

    @route("POST", "/idle")
    async def idle(request: web.Request) -> web.StreamResponse:
        await em.idle()
        return _json({"idle": True})

    # -- records ---------------------------------------------------------------------------
    @route("GET", "/state")
    async def state(request: web.Request) -> web.StreamResponse:
        return _json(await em.state_snapshot())

    @route("GET", "/deliveries")
    async def deliveries(request: web.Request) -> web.StreamResponse:
        event = request.query.get("event")
        full = request.query.get("full") in ("1", "true")
        items = []
        for delivery in em.deliveries():
            if event and delivery.event != event:
                continue
            entry = delivery.summary()
            if full:
                entry["payload"] = json.loads(delivery.body)
            items.append(entry)
        return _json(items)

    @route("GET", "/deliveries/{delivery_id}")
    async def delivery(request: web.Request) -> web.StreamResponse:
        found = em.webhooks.get(_number(request, "delivery_id"))
        if found is None:
            raise not_found()
        entry = found.summary()
        entry["request_headers"] = dict(found.headers)
        entry["payload"] = json.loads(found.body)
        return _json(entry)

    @route("POST", "/deliveries/{delivery_id}/redeliver")
    async def redeliver(request: web.Request) -> web.StreamResponse:
        return _json(em.redeliver(_number(request, "delivery_id")).summary(), 202)

    @route("GET", "/violations")
    async def violations(request: web.Request) -> web.StreamResponse:
        return _json([v.as_dict() for v in em.violations()])

    @route("GET", "/requests")
    async def requests(request: web.Request) -> web.StreamResponse:
        return _json([r.as_dict() for r in em.requests()])

    @route("GET", "/tokens")
    async def tokens(request: web.Request) -> web.StreamResponse:
        now = em.clock()
        return _json(
            [
                {
                    "token": t.token,
                    "installation_id": t.installation_id,
                    "created_at": t.created_at,
                    "expires_at": t.expires_at,
                    "expired": t.expires_at <= now,
                }
                for t in em.issued_tokens()
            ]
        )

    @route("GET", "/faults")
    async def get_faults(request: web.Request) -> web.StreamResponse:
        return _json(em.faults.describe())

    @route("POST", "/faults")
    async def set_faults(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        seed = body.pop("seed", None)
        if body.pop("reset", False):
            em.faults.reset(seed)
            seed = None
        try:
            em.faults.configure(body, seed=int(seed) if seed is not None else None)
        except ValueError as exc:
            raise validation_failed("Faults", "settings", "invalid", str(exc)) from exc
        return _json(em.faults.describe())

    @route("GET", "/logs/{owner}/{repo}/jobs/{number}")
    async def job_log(request: web.Request) -> web.StreamResponse:
        path = request.rel_url.path
        try:
            expires = int(request.query.get("expires", "0"))
        except ValueError:
            expires = 0
        expected = auth.log_url_signature(em.log_secret, path, expires)
        if expires < em.clock() or not hmac.compare_digest(expected, request.query.get("sig", "")):
            return web.Response(status=403, text="Request has expired or the signature does not match\n")
        repo = em.repo(_repo_name(request))
        job = repo.jobs.get(_number(request))
        if job is None:
            raise not_found()
        return web.Response(text=job.log, content_type="text/plain", charset="utf-8")

    for method, path, handler in routes:
        app.router.add_route(method, PREFIX + path, handler)

    async def manifest_form(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        raw = form.get("manifest")
        if not isinstance(raw, str):
            return web.Response(status=422, text="manifest is required\n")
        try:
            manifest = json.loads(raw)
        except json.JSONDecodeError:
            return web.Response(status=422, text="manifest is not JSON\n")
        try:
            code = em.register_manifest(manifest)
        except ApiError as error:
            return web.Response(status=error.status, text=error.message + "\n")
        query = {"code": code}
        if request.query.get("state"):
            query["state"] = request.query["state"]
        target = manifest.get("redirect_url")
        if not target:
            return _json({"code": code}, 201)
        separator = "&" if "?" in target else "?"
        raise web.HTTPFound(f"{target}{separator}{urlencode(query)}")

    app.router.add_post("/settings/apps/new", manifest_form)
    app.router.add_post("/organizations/{org}/settings/apps/new", manifest_form)
