"""The local GitHub emulator: all state, the Python actor API, and its aiohttp server.

One :class:`Emulator` holds everything (no module globals). Humans, CI and the App act through
its methods; every state change sends the webhooks GitHub would send. The REST API
(:mod:`.rest`), the actor routes (:mod:`.actors`) and git smart HTTP (:mod:`.git_http`) are thin
HTTP layers over it.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from aiohttp import web

from . import auth
from .actors import add_actor_routes
from .ci import EXTERNAL_CI_CREATOR, CIConfig, CIRunner
from .errors import ApiError, not_found, unprocessable, validation_failed
from .faults import FaultConfig, FaultInjector
from .git_http import GIT_TOKEN_USER, add_git_routes, parse_basic
from .gitrepos import GitRepos, RefUpdate
from .openapi import RestDescription
from .rest import RestApi
from .shapes import REACTION_CONTENTS, Shapes, iso, node_id, parse_time
from .state import (
    ACTIONS_APP_ID,
    ALWAYS_DELIVERED_EVENTS,
    PERMISSION_LEVELS,
    Account,
    App,
    BranchProtection,
    CheckRun,
    CheckSuite,
    CommitStatus,
    Delivery,
    Installation,
    InstallationToken,
    Issue,
    IssueComment,
    Label,
    PullState,
    Reaction,
    RecordedRequest,
    Repo,
    Review,
    ReviewComment,
    Violation,
)
from .webhooks import WebhookSender, WebhookTarget

REVIEW_EVENTS = MappingProxyType(
    {"APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED", "COMMENT": "COMMENTED"}
)
CONCLUSION_PRIORITY = (
    "action_required",
    "cancelled",
    "timed_out",
    "failure",
    "stale",
    "neutral",
    "skipped",
    "success",
)
PASSING_CONCLUSIONS = frozenset({"success", "neutral", "skipped"})
_CLOSING_KEYWORDS = re.compile(r"\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\s*:?\s+#(\d+)\b", re.IGNORECASE)
_ZEN = (
    "Design for failure.",
    "Keep it logically awesome.",
    "Anything added dilutes everything else.",
    "Practicality beats purity.",
)


class Emulator:
    """A stateful stand-in for GitHub on 127.0.0.1.

    ``clock`` returns the current time in epoch seconds (JWTs are checked against it, tokens
    expire by it). ``mergeable_null_reads`` is how many reads of a PR after each change to it
    or its base still answer ``mergeable: null`` before git computes the value (0: the first
    read computes it; GitHub computes lazily, so the default is 1). ``stateless_tokens``: issue
    installation tokens in GitHub's new ~520-character format. Both can also be switched with
    the fault settings (``faults.configure``). ``check_actions_require_completed``: a click on a
    check run's button is refused unless the run is completed (GitHub shows buttons only then).
    """

    def __init__(
        self,
        root_dir: Path,
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        token_ttl: float = 3600.0,
        jwt_leeway: float = 60.0,
        rate_limit: int = 5000,
        description: RestDescription | None = None,
        request_log: Path | None = None,
        validate_responses: bool = False,
        mergeable_null_reads: int = 1,
        stateless_tokens: bool = False,
        check_actions_require_completed: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        self.root_dir = Path(root_dir)
        self.clock = clock
        self.token_ttl = token_ttl
        self.jwt_leeway = jwt_leeway
        self.rate_limit = rate_limit
        self.request_log = request_log
        self.validate_responses = validate_responses
        self.check_actions_require_completed = check_actions_require_completed
        self.host = host
        self.description = description or RestDescription.load()
        self.git = GitRepos(self.root_dir / "repos")
        self.faults = FaultInjector(seed)
        self.webhooks = WebhookSender(clock=clock, faults=self.faults, record_violation=self.record_violation)
        self.ci = CIRunner(self)
        self.base_url = f"http://{host}:0"
        self._next_id = 1001
        self.accounts: dict[str, Account] = {}
        self.apps: dict[int, App] = {}
        self.installations: dict[int, Installation] = {}
        self.tokens: dict[str, InstallationToken] = {}
        self.repos: dict[str, Repo] = {}
        self.manifest_codes: dict[str, dict[str, Any]] = {}
        self._commits: dict[tuple[int, str], Any] = {}
        self.log_secret = secrets.token_hex(16)
        self._requests: list[RecordedRequest] = []
        self._violations: list[Violation] = []
        self._rate_buckets: dict[str, list[float]] = {}  # label -> [used, reset]
        self._runner: web.AppRunner | None = None
        self.shapes = Shapes(self.base_url, self.apps)
        self.faults.set_baseline(
            FaultConfig(mergeable_null_reads=mergeable_null_reads, stateless_tokens=stateless_tokens)
        )
        self._create_actions_app()

    @property
    def mergeable_null_reads(self) -> int:
        return self.faults.config.mergeable_null_reads

    @mergeable_null_reads.setter
    def mergeable_null_reads(self, reads: int) -> None:
        self.faults.configure({"mergeable_null_reads": reads})

    @property
    def stateless_tokens(self) -> bool:
        return self.faults.config.stateless_tokens

    @stateless_tokens.setter
    def stateless_tokens(self, enabled: bool) -> None:
        self.faults.configure({"stateless_tokens": bool(enabled)})

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, port: int = 0) -> str:
        """Serve on ``host:port`` (0 = a free port); return the base URL."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        add_actor_routes(app, self)
        add_git_routes(app, self.git, authorize=self._authorize_git, on_push=self._on_git_push)
        RestApi(self).add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{bound}"
        self.shapes = Shapes(self.base_url, self.apps)
        await self.webhooks.start()
        return self.base_url

    async def stop(self) -> None:
        """Finish CI runs and webhook deliveries, then stop the server."""
        await self.ci.stop()
        await self.webhooks.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def idle(self) -> None:
        """Wait until CI runs and webhook deliveries are done."""
        await self.ci.idle()
        await self.webhooks.drain()

    async def ci_idle(self) -> None:
        await self.ci.idle()
        await self.webhooks.drain()

    async def webhooks_idle(self) -> None:
        await self.webhooks.drain()

    def clone_url(self, full_name: str) -> str:
        return f"{self.base_url}/{self.repo(full_name).full_name}.git"

    # -- small helpers ---------------------------------------------------------------------
    async def commit(self, repo: Repo, sha: str) -> Any:
        """``CommitInfo`` of ``sha`` (a full sha or ref) in ``repo``, cached by full sha;
        ``ApiError(422)`` when there is no such commit."""
        key = (repo.id, sha)
        cached = self._commits.get(key)
        if cached is not None:
            return cached
        try:
            info = await self.git.commit_info(repo.owner.login, repo.name, sha)
        except (KeyError, ValueError) as exc:
            raise unprocessable(f"No commit found for SHA: {sha}") from exc
        self._commits[(repo.id, info.sha)] = info
        return info

    def cached_commit(self, repo: Repo, sha: str) -> Any:
        return self._commits.get((repo.id, sha))

    def ci_workdir(self) -> Path:
        path = self.root_dir / "ci"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def now(self) -> float:
        return float(int(self.clock()))

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def account(self, login: str, *, type: str = "User", create: bool = True) -> Account:
        key = login.lower()
        found = self.accounts.get(key)
        if found is None:
            if not create:
                raise not_found()
            found = Account(id=self.new_id(), login=login, type=type)
            self.accounts[key] = found
        return found

    def repo(self, full_name: str) -> Repo:
        found = self.repos.get(full_name.lower())
        if found is None:
            raise not_found()
        return found

    def repo_by_id(self, repo_id: int) -> Repo | None:
        for repo in self.repos.values():
            if repo.id == repo_id:
                return repo
        return None

    def issue(self, repo: Repo, number: int) -> Issue:
        found = repo.issues.get(number)
        if found is None:
            raise not_found()
        return found

    def pull(self, repo: Repo, number: int) -> Issue:
        found = repo.issues.get(number)
        if found is None or found.pull is None:
            raise not_found()
        return found

    def _create_actions_app(self) -> None:
        owner = self.account("github", type="Organization")
        bot = self.account("github-actions[bot]", type="Bot")
        app = App(
            id=ACTIONS_APP_ID,
            slug="github-actions",
            name="GitHub Actions",
            client_id="Iv1.actions",
            client_secret="",
            webhook_url=None,
            webhook_secret=None,
            public_key_pem="",
            owner=owner,
            bot=bot,
            hook_id=0,
            created_at=self.now(),
            description="Automate your workflow from idea to production",
        )
        self.apps[app.id] = app

    # -- records for tests -------------------------------------------------------------------
    def requests(self) -> list[RecordedRequest]:
        return list(self._requests)

    def violations(self) -> list[Violation]:
        return list(self._violations)

    def deliveries(self) -> list[Delivery]:
        return self.webhooks.deliveries()

    def issued_tokens(self) -> list[InstallationToken]:
        return list(self.tokens.values())

    def redeliver(self, delivery_id: int) -> Delivery:
        if self.webhooks.get(delivery_id) is None:
            raise not_found()
        return self.webhooks.redeliver(delivery_id)

    def record_request(self, entry: RecordedRequest) -> None:
        self._requests.append(entry)
        if self.request_log is not None:
            with self.request_log.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry.as_dict(), default=str) + "\n")

    def record_violation(self, violation: Violation) -> None:
        self._violations.append(violation)

    # -- rate limits ------------------------------------------------------------------------
    def rate_limit_headers(self, label: str, *, count: bool) -> dict[str, str]:
        limit = self.rate_limit if label != "anonymous" else 60
        now = self.clock()
        bucket = self._rate_buckets.get(label)
        if bucket is None or now >= bucket[1]:
            bucket = [0, float(int(now) + 3600)]
            self._rate_buckets[label] = bucket
        if count:
            bucket[0] += 1
        used = int(bucket[0])
        return {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(max(limit - used, 0)),
            "x-ratelimit-reset": str(int(bucket[1])),
            "x-ratelimit-used": str(used),
            "x-ratelimit-resource": "core",
        }

    def rate_limit_exhausted(self, label: str) -> bool:
        limit = self.rate_limit if label != "anonymous" else 60
        bucket = self._rate_buckets.get(label)
        return bucket is not None and self.clock() < bucket[1] and bucket[0] >= limit

    # -- webhooks ---------------------------------------------------------------------------
    def _targets(self, repo: Repo | None, only_app: int | None = None) -> list[tuple[App, Installation]]:
        targets = []
        for installation in self.installations.values():
            if repo is not None and repo.id not in installation.repository_ids:
                continue
            if only_app is not None and installation.app_id != only_app:
                continue
            app = self.apps.get(installation.app_id)
            if app is not None:
                targets.append((app, installation))
        return targets

    def envelope(
        self, repo: Repo, sender: Account, action: str | None = None, **objects: Any
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {}
        if action is not None:
            payload["action"] = action
        payload.update(objects)
        payload["repository"] = self.shapes.webhook_repository(repo)
        if repo.owner.type == "Organization":
            payload["organization"] = self.shapes.organization(repo.owner)
        payload["sender"] = self.shapes.user(sender)
        return payload

    def emit(
        self, repo: Repo, event: str, payload: dict[str, Any], *, only_app: int | None = None
    ) -> list[Delivery]:
        """Queue ``payload`` for every App installed on ``repo`` that subscribes to ``event``."""
        sent = []
        for app, installation in self._targets(repo, only_app):
            body = dict(payload)
            body["installation"] = {"id": installation.id, "node_id": node_id("II", installation.id)}
            delivery = self.deliver(app, installation, event, body, repository=repo.full_name)
            if delivery is not None:
                sent.append(delivery)
        return sent

    @staticmethod
    def subscribed(app: App, event: str) -> bool:
        """Whether GitHub sends ``event`` to ``app``: the events it subscribes to, and the
        installation events and pings every App gets."""
        return event in ALWAYS_DELIVERED_EVENTS or event in app.events

    def deliver(
        self,
        app: App,
        installation: Installation | None,
        event: str,
        payload: dict[str, Any],
        *,
        repository: str | None = None,
    ) -> Delivery | None:
        """The one way a webhook leaves the emulator: queued when ``app`` subscribes to ``event``
        (None otherwise)."""
        if not self.subscribed(app, event):
            return None
        if repository is None:
            return self.webhooks.enqueue(self._target(app, installation), event, payload)
        return self.webhooks.enqueue(self._target(app, installation), event, payload, repository=repository)

    def _target(self, app: App, installation: Installation | None) -> WebhookTarget:
        return WebhookTarget(
            app_id=app.id,
            hook_id=app.hook_id,
            url=app.webhook_url,
            secret=app.webhook_secret,
            installation_id=installation.id if installation else None,
        )

    # -- apps, installations, tokens ---------------------------------------------------------
    async def create_app(
        self,
        name: str,
        *,
        slug: str | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        public_key: str | None = None,
        owner: str = "octo-org",
        permissions: Mapping[str, str] | None = None,
        events: Iterable[str] | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        """Register a GitHub App. Answers its credentials; ``private_key`` only when generated."""
        slug = slug or re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "app"
        if any(app.slug == slug for app in self.apps.values()):
            raise validation_failed("Integration", "slug", "already_exists", f"slug {slug} is taken")
        private_pem: str | None = None
        if public_key is None:
            private_pem, public_pem = await asyncio.to_thread(auth.generate_key_pair)
        else:
            try:
                public_pem = auth.check_public_key(public_key)
            except ValueError as exc:
                raise validation_failed("Integration", "public_key", "invalid", str(exc)) from exc
        app_id = self.new_id()
        owner_account = self.account(owner, type="Organization")
        bot = self.account(f"{slug}[bot]", type="Bot")
        app = App(
            id=app_id,
            slug=slug,
            name=name,
            client_id=f"Iv1.{secrets.token_hex(8)}",
            client_secret=secrets.token_hex(20),
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            public_key_pem=public_pem,
            owner=owner_account,
            bot=bot,
            hook_id=self.new_id(),
            created_at=self.now(),
            description=description,
        )
        if permissions is not None:
            app.permissions = dict(permissions)
        if events is not None:
            app.events = list(events)
        self.apps[app_id] = app
        result = self.shapes.integration(app)
        result.update(
            {
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "webhook_secret": app.webhook_secret,
                "pem": private_pem,
                "private_key": private_pem,
                "webhook_url": webhook_url,
                "bot_login": bot.login,
            }
        )
        return result

    def app(self, app_id: int) -> App:
        found = self.apps.get(app_id)
        if found is None or found.id == ACTIONS_APP_ID:
            raise not_found()
        return found

    def update_app(
        self, app_id: int, *, webhook_url: str | None = None, webhook_secret: str | None = None
    ) -> App:
        app = self.app(app_id)
        if webhook_url is not None:
            app.webhook_url = webhook_url
        if webhook_secret is not None:
            app.webhook_secret = webhook_secret
        return app

    def ping(self, app_id: int) -> Delivery:
        """Send GitHub's ``ping`` to an App's webhook."""
        app = self.app(app_id)
        hook_url = f"{self.base_url}/app/hook"
        payload: dict[str, Any] = {
            "zen": _ZEN[app.id % len(_ZEN)],
            "hook_id": app.hook_id,
            "hook": {
                "type": "App",
                "id": app.hook_id,
                "name": "web",
                "active": True,
                "app_id": app.id,
                "events": list(app.events),
                "config": {"content_type": "json", "url": app.webhook_url, "insecure_ssl": "0"},
                "updated_at": iso(app.created_at),
                "created_at": iso(app.created_at),
                "url": hook_url,
                "test_url": f"{hook_url}/test",
                "ping_url": f"{hook_url}/pings",
                "deliveries_url": f"{hook_url}/deliveries",
                "last_response": {"code": None, "status": "unused", "message": None},
            },
        }
        repo = next(
            (
                self.repo_by_id(repo_id)
                for installation in self.installations.values()
                if installation.app_id == app.id
                for repo_id in installation.repository_ids
            ),
            None,
        )
        if repo is not None:
            payload["repository"] = self.shapes.webhook_repository(repo)
        payload["sender"] = self.shapes.user(app.owner)
        delivery = self.deliver(app, None, "ping", payload)
        assert delivery is not None  # pings always go out
        return delivery

    def _repository_ref(self, repo: Repo) -> dict[str, Any]:
        return {
            "id": repo.id,
            "node_id": node_id("R", repo.id),
            "name": repo.name,
            "full_name": repo.full_name,
            "private": repo.private,
        }

    async def create_installation(
        self, app_id: int, account: str, repositories: Iterable[str], *, sender: str | None = None
    ) -> dict[str, Any]:
        """Install an App on ``account`` for ``repositories`` (sends ``installation.created``)."""
        app = self.app(app_id)
        repos = [self.repo(name) for name in repositories]
        owner = self.account(account)
        now = self.now()
        installation = Installation(
            id=self.new_id(),
            app_id=app.id,
            account=owner,
            repository_ids=[repo.id for repo in repos],
            created_at=now,
            updated_at=now,
        )
        self.installations[installation.id] = installation
        who = self.account(sender) if sender else owner
        payload = {
            "action": "created",
            "installation": self.shapes.installation(installation, app),
            "repositories": [self._repository_ref(repo) for repo in repos],
            "requester": None,
            "sender": self.shapes.user(who),
        }
        self.deliver(app, installation, "installation", payload)
        return self.shapes.installation(installation, app)

    def installation(self, installation_id: int) -> Installation:
        found = self.installations.get(installation_id)
        if found is None:
            raise not_found()
        return found

    async def change_installation_repositories(
        self,
        installation_id: int,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        sender: str | None = None,
    ) -> dict[str, Any]:
        """Add/remove repositories (sends ``installation_repositories.added``/``removed``)."""
        installation = self.installation(installation_id)
        app = self.app(installation.app_id)
        added = [self.repo(name) for name in add]
        removed = [self.repo(name) for name in remove]
        for repo in added:
            if repo.id not in installation.repository_ids:
                installation.repository_ids.append(repo.id)
        for repo in removed:
            if repo.id in installation.repository_ids:
                installation.repository_ids.remove(repo.id)
        installation.updated_at = self.now()
        who = self.account(sender) if sender else installation.account
        for action, repos in (("added", added), ("removed", removed)):
            if not repos:
                continue
            payload = {
                "action": action,
                "installation": self.shapes.installation(installation, app),
                "repository_selection": installation.repository_selection,
                "repositories_added": [self._repository_ref(r) for r in repos] if action == "added" else [],
                "repositories_removed": (
                    [self._repository_ref(r) for r in repos] if action == "removed" else []
                ),
                "requester": None,
                "sender": self.shapes.user(who),
            }
            self.deliver(app, installation, "installation_repositories", payload)
        return self.shapes.installation(installation, app)

    async def delete_installation(self, installation_id: int) -> None:
        installation = self.installation(installation_id)
        app = self.app(installation.app_id)
        repos = [r for r in (self.repo_by_id(i) for i in installation.repository_ids) if r]
        payload = {
            "action": "deleted",
            "installation": self.shapes.installation(installation, app),
            "repositories": [self._repository_ref(repo) for repo in repos],
            "requester": None,
            "sender": self.shapes.user(installation.account),
        }
        del self.installations[installation_id]
        for token, record in list(self.tokens.items()):
            if record.installation_id == installation_id:
                record.expires_at = 0
        self.deliver(app, installation, "installation", payload)

    def issue_token(
        self,
        installation: Installation,
        *,
        repository_ids: Iterable[int] | None = None,
        permissions: Mapping[str, str] | None = None,
        stateless: bool | None = None,
    ) -> InstallationToken:
        """A new installation token: the App's permissions (or the subset asked for), always
        with ``metadata: read``; in the stateless format when ``stateless`` (default: the
        emulator's ``stateless_tokens`` setting)."""
        ids = tuple(repository_ids) if repository_ids is not None else tuple(installation.repository_ids)
        app = self.apps[installation.app_id]
        now = self.clock()
        if stateless is None:
            stateless = self.stateless_tokens
        record = InstallationToken(
            token=auth.new_stateless_token(app.id) if stateless else auth.new_token(),
            installation_id=installation.id,
            created_at=now,
            expires_at=now + self.token_ttl,
            repository_ids=ids,
            permissions=auth.with_metadata(permissions or app.permissions),
        )
        self.tokens[record.token] = record
        return record

    async def create_token(
        self,
        installation_id: int,
        *,
        permissions: Mapping[str, str] | None = None,
        stateless: bool | None = None,
    ) -> InstallationToken:
        """An installation token without going through the JWT exchange (for tests and demo)."""
        return self.issue_token(
            self.installation(installation_id), permissions=permissions, stateless=stateless
        )

    def token_principal(self, token: str) -> auth.Principal:
        """The installation behind a token; ``ApiError(401)`` if unknown or expired."""
        record = self.tokens.get(token)
        if record is None or record.expires_at <= self.clock():
            raise ApiError(401, "Bad credentials")
        installation = self.installations.get(record.installation_id)
        if installation is None:
            raise ApiError(401, "Bad credentials")
        return auth.Principal(
            "installation", app=self.apps[installation.app_id], installation=installation, token=record
        )

    def token_can_see(self, principal: auth.Principal, repo: Repo) -> bool:
        if principal.token is None or principal.installation is None:
            return False
        return repo.id in principal.token.repository_ids and repo.id in principal.installation.repository_ids

    # -- users and permissions ------------------------------------------------------------
    def create_user(
        self,
        login: str,
        *,
        type: str = "User",
        repo: str | None = None,
        permission: str | None = None,
        name: str | None = None,
        email: str | None = None,
    ) -> dict[str, Any]:
        if type not in ("User", "Bot", "Organization"):
            raise validation_failed("User", "type", "invalid", "type must be User, Bot or Organization")
        account = self.account(login, type=type)
        account.type = type
        if name is not None:
            account.name = name
        if email is not None:
            account.email = email
        if repo is not None:
            self.set_permission(repo, login, permission or "write")
        return self.shapes.user(account)

    def set_permission(self, repo_name: str, login: str, permission: str) -> None:
        if permission not in PERMISSION_LEVELS:
            raise validation_failed(
                "Collaborator", "permission", "invalid", f"unknown permission {permission!r}"
            )
        repo = self.repo(repo_name)
        self.account(login)
        repo.collaborators[login.lower()] = permission

    def permission_of(self, repo: Repo, account: Account) -> str:
        if account.login.lower() == repo.owner.login.lower():
            return "admin"
        return repo.collaborators.get(account.login.lower(), "none")

    # -- repositories ----------------------------------------------------------------------
    async def create_repo(
        self,
        owner: str,
        name: str,
        *,
        default_branch: str = "main",
        files: Mapping[str, str] | None = None,
        source_dir: Path | None = None,
        owner_type: str | None = None,
        private: bool = False,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Create a repository with one initial commit; answer its REST representation."""
        key = f"{owner}/{name}".lower()
        if key in self.repos:
            raise validation_failed("Repository", "name", "custom", "name already exists on this account")
        account = self.account(owner, type=owner_type or "User")
        if owner_type is not None:
            account.type = owner_type
        author = (account.name or account.login, account.email or f"{account.login}@users.noreply.local")
        if not files and source_dir is None:
            files = {"README.md": f"# {name}\n"}
        try:
            await self.git.create(
                account.login,
                name,
                default_branch=default_branch,
                files=files,
                source_dir=Path(source_dir) if source_dir is not None else None,
                author=author,
            )
        except ValueError as exc:
            raise validation_failed("Repository", "name", "invalid", str(exc)) from exc
        now = self.now()
        repo = Repo(
            id=self.new_id(),
            owner=account,
            name=name,
            default_branch=default_branch,
            created_at=now,
            updated_at=now,
            pushed_at=now,
            description=description,
            private=private,
        )
        self.repos[key] = repo
        return self.shapes.repository(repo, full=True)

    def _label(self, repo: Repo, name: str, *, create: bool = True) -> Label:
        key = name.lower()
        label = repo.labels.get(key)
        if label is None:
            if not create:
                raise not_found("Label does not exist")
            label = Label(id=self.new_id(), name=name)
            repo.labels[key] = label
        return label

    def create_label(
        self, repo: Repo, name: str, color: str | None = None, description: str | None = None
    ) -> Label:
        if name.lower() in repo.labels:
            raise validation_failed("Label", "name", "already_exists")
        label = self._label(repo, name)
        if color:
            label.color = color.lstrip("#")
        label.description = description
        return label

    # -- issues ------------------------------------------------------------------------------
    def _new_issue(self, repo: Repo, title: str, body: str | None, user: Account) -> Issue:
        now = self.now()
        issue = Issue(
            id=self.new_id(),
            number=repo.next_number,
            title=title,
            body=body,
            user=user,
            created_at=now,
            updated_at=now,
        )
        repo.next_number += 1
        repo.issues[issue.number] = issue
        return issue

    def _issue_event(self, repo: Repo, issue: Issue, action: str, sender: Account, **extra: Any) -> None:
        if issue.pull is not None:
            payload = self.envelope(
                repo,
                sender,
                action,
                number=issue.number,
                pull_request=self.shapes.pull_request(repo, issue),
                **extra,
            )
            self.emit(repo, "pull_request", payload)
        else:
            payload = self.envelope(repo, sender, action, issue=self.shapes.webhook_issue(repo, issue), **extra)
            self.emit(repo, "issues", payload)

    async def open_issue(
        self,
        repo_name: str,
        *,
        title: str,
        body: str | None = "",
        user: str | None = None,
        labels: Iterable[str] = (),
    ) -> dict[str, Any]:
        """A human opens an issue (``issues.opened`` then ``issues.labeled`` per label)."""
        repo = self.repo(repo_name)
        author = self.account(user) if user else repo.owner
        issue = self._new_issue(repo, title, body, author)
        labels = list(labels)
        for name in labels:
            label = self._label(repo, name)
            if label.name not in issue.labels:
                issue.labels.append(label.name)
        self._issue_event(repo, issue, "opened", author)
        for name in issue.labels:
            self._issue_event(
                repo, issue, "labeled", author, label=self.shapes.label(repo, repo.labels[name.lower()])
            )
        return self.shapes.issue(repo, issue)

    def add_labels(self, repo: Repo, issue: Issue, names: Iterable[str], sender: Account) -> None:
        for name in names:
            label = self._label(repo, name)
            if label.name in issue.labels:
                continue
            issue.labels.append(label.name)
            issue.updated_at = self.now()
            self._issue_event(repo, issue, "labeled", sender, label=self.shapes.label(repo, label))

    def remove_label(self, repo: Repo, issue: Issue, name: str, sender: Account) -> None:
        label = repo.labels.get(name.lower())
        if label is None or label.name not in issue.labels:
            raise not_found("Label does not exist")
        issue.labels.remove(label.name)
        issue.updated_at = self.now()
        self._issue_event(repo, issue, "unlabeled", sender, label=self.shapes.label(repo, label))

    def set_labels(self, repo: Repo, issue: Issue, names: Iterable[str], sender: Account) -> None:
        wanted = []
        for name in names:
            label = self._label(repo, name)
            if label.name not in wanted:
                wanted.append(label.name)
        for name in [n for n in issue.labels if n not in wanted]:
            self.remove_label(repo, issue, name, sender)
        self.add_labels(repo, issue, wanted, sender)

    def comment(
        self, repo: Repo, issue: Issue, body: str, sender: Account, *, app_id: int | None = None
    ) -> IssueComment:
        now = self.now()
        comment = IssueComment(
            id=self.new_id(),
            issue_number=issue.number,
            user=sender,
            body=body,
            created_at=now,
            updated_at=now,
            app_id=app_id,
        )
        repo.comments[comment.id] = comment
        issue.comment_ids.append(comment.id)
        issue.updated_at = now
        payload = self.envelope(
            repo,
            sender,
            "created",
            issue=self.shapes.webhook_issue(repo, issue),
            comment=self.shapes.issue_comment(repo, comment),
        )
        self.emit(repo, "issue_comment", payload)
        return comment

    def edit_comment(self, repo: Repo, comment: IssueComment, body: str, sender: Account) -> IssueComment:
        old = comment.body
        comment.body = body
        comment.updated_at = self.now()
        issue = repo.issues[comment.issue_number]
        payload = self.envelope(
            repo,
            sender,
            "edited",
            changes={"body": {"from": old}},
            issue=self.shapes.webhook_issue(repo, issue),
            comment=self.shapes.issue_comment(repo, comment),
        )
        self.emit(repo, "issue_comment", payload)
        return comment

    def react(self, reactions: list[Reaction], content: str, sender: Account) -> tuple[Reaction, bool]:
        """Add a reaction unless the same user already reacted so; (reaction, created)."""
        if content not in REACTION_CONTENTS:
            raise validation_failed("Reaction", "content", "invalid")
        for reaction in reactions:
            if reaction.user.id == sender.id and reaction.content == content:
                return reaction, False
        reaction = Reaction(id=self.new_id(), user=sender, content=content, created_at=self.now())
        reactions.append(reaction)
        return reaction, True

    def update_issue(
        self,
        repo: Repo,
        issue: Issue,
        sender: Account,
        *,
        title: str | None = None,
        body: str | None = None,
        state: str | None = None,
        state_reason: str | None = None,
        labels: Iterable[str] | None = None,
        body_set: bool = False,
    ) -> None:
        """Edit and/or close/reopen an issue or PR, sending the matching webhooks."""
        changes: dict[str, Any] = {}
        if title is not None and title != issue.title:
            changes["title"] = {"from": issue.title}
            issue.title = title
        if body_set and body != issue.body:
            changes["body"] = {"from": issue.body}
            issue.body = body
        if changes:
            issue.updated_at = self.now()
            self._issue_event(repo, issue, "edited", sender, changes=changes)
        if labels is not None:
            self.set_labels(repo, issue, labels, sender)
        if state is not None and state != issue.state:
            if state == "closed":
                self._close(repo, issue, sender, state_reason or "completed")
            else:
                self._reopen(repo, issue, sender)

    def _close(self, repo: Repo, issue: Issue, sender: Account, reason: str | None) -> None:
        now = self.now()
        issue.state = "closed"
        issue.closed_at = now
        issue.closed_by = sender
        issue.updated_at = now
        issue.state_reason = reason if issue.pull is None else None
        if issue.pull is not None:
            issue.pull.mergeable = None
            issue.pull.mergeable_state = "unknown"
        self._issue_event(repo, issue, "closed", sender)

    def _reopen(self, repo: Repo, issue: Issue, sender: Account) -> None:
        if issue.pull is not None and issue.pull.merged:
            raise unprocessable("A merged pull request cannot be reopened")
        issue.state = "open"
        issue.closed_at = None
        issue.closed_by = None
        issue.state_reason = "reopened" if issue.pull is None else None
        issue.updated_at = self.now()
        if issue.pull is not None:
            self._mark_unknown(issue)
        self._issue_event(repo, issue, "reopened", sender)
        if issue.pull is not None:
            self.ci.maybe_schedule(repo, issue.pull.head_ref, issue.pull.head_sha, "pull_request", sender)

    # -- human actor shortcuts (by name) ------------------------------------------------------
    def _who(self, repo: Repo, user: str | None) -> Account:
        return self.account(user) if user else repo.owner

    async def label_issue(
        self, repo_name: str, number: int, labels: Iterable[str], user: str | None = None
    ) -> list[dict[str, Any]]:
        repo = self.repo(repo_name)
        issue = self.issue(repo, number)
        self.add_labels(repo, issue, labels, self._who(repo, user))
        return self.shapes.labels_of(repo, issue.labels)

    async def unlabel_issue(
        self, repo_name: str, number: int, label: str, user: str | None = None
    ) -> list[dict[str, Any]]:
        repo = self.repo(repo_name)
        issue = self.issue(repo, number)
        self.remove_label(repo, issue, label, self._who(repo, user))
        return self.shapes.labels_of(repo, issue.labels)

    async def comment_on(
        self, repo_name: str, number: int, body: str, user: str | None = None
    ) -> dict[str, Any]:
        repo = self.repo(repo_name)
        issue = self.issue(repo, number)
        comment = self.comment(repo, issue, body, self._who(repo, user))
        return self.shapes.issue_comment(repo, comment)

    async def edit_issue(
        self,
        repo_name: str,
        number: int,
        *,
        user: str | None = None,
        state: str | None = None,
        title: str | None = None,
        body: str | None = None,
        state_reason: str | None = None,
    ) -> dict[str, Any]:
        repo = self.repo(repo_name)
        issue = self.issue(repo, number)
        self.update_issue(
            repo,
            issue,
            self._who(repo, user),
            title=title,
            body=body,
            body_set=body is not None,
            state=state,
            state_reason=state_reason,
        )
        return self.shapes.issue(repo, issue)

    # -- pull requests -----------------------------------------------------------------------
    def _mark_unknown(self, issue: Issue) -> None:
        assert issue.pull is not None
        issue.pull.mergeable = None
        issue.pull.mergeable_state = "unknown"
        issue.pull.mergeable_stale = True
        issue.pull.null_reads_left = self.mergeable_null_reads

    async def _refresh_stats(self, repo: Repo, issue: Issue) -> None:
        pull = issue.pull
        assert pull is not None
        owner, name = repo.owner.login, repo.name
        try:
            comparison = await self.git.compare(owner, name, pull.base_sha, pull.head_sha)
        except KeyError:
            return
        files = comparison["files"]
        pull.commits = comparison["ahead_by"]
        pull.additions = sum(f.additions for f in files)
        pull.deletions = sum(f.deletions for f in files)
        pull.changed_files = len(files)

    async def refresh_mergeable(self, repo: Repo, issue: Issue) -> None:
        """What a read of the PR shows. After a change to the PR or its base, ``mergeable`` is
        ``null`` (``mergeable_state: unknown``) for ``mergeable_null_reads`` reads, then git
        computes it (GitHub does this lazily). Once known, ``mergeable_state`` follows the
        current state on every read: ``dirty`` (conflicts), ``draft``, ``blocked`` (required
        checks of the base branch's protection missing, pending or failing), ``behind`` (strict
        protection and the head lacks the base's tip), ``unstable`` (other checks or statuses
        pending or failing), else ``clean``."""
        pull = issue.pull
        assert pull is not None
        if issue.state != "open":
            return
        if pull.mergeable_stale:
            if pull.null_reads_left > 0:
                pull.null_reads_left -= 1
                return
            owner, name = repo.owner.login, repo.name
            base_sha = await self.git.ref_sha(owner, name, pull.base_ref)
            head_sha = await self.git.ref_sha(owner, name, pull.head_ref)
            if base_sha is not None:
                pull.base_sha = base_sha
            if head_sha is not None:
                pull.head_sha = head_sha
            check = await self.git.merge_check(owner, name, pull.base_sha, pull.head_sha)
            pull.conflicts = not check.clean
            pull.mergeable = check.clean
            pull.mergeable_stale = False
        if pull.mergeable is None:
            return
        pull.mergeable_state = await self.mergeable_state(repo, issue)

    async def mergeable_state(self, repo: Repo, issue: Issue) -> str:
        """``mergeable_state`` of an open PR whose mergeability git has computed."""
        pull = issue.pull
        assert pull is not None
        if pull.conflicts:
            return "dirty"
        if pull.draft:
            return "draft"
        protection = repo.protections.get(pull.base_ref)
        required = set(protection.required_checks) if protection else set()
        checks = self.check_states(repo, pull.head_sha)
        if any(checks.get(name) != "success" for name in required):
            return "blocked"
        if protection is not None and protection.strict:
            owner, name = repo.owner.login, repo.name
            if not await self.git.is_ancestor(owner, name, pull.base_sha, pull.head_sha):
                return "behind"
        if any(state != "success" for name, state in checks.items() if name not in required):
            return "unstable"
        return "clean"

    def check_states(self, repo: Repo, sha: str) -> dict[str, str]:
        """Name -> ``success`` | ``pending`` | ``failure`` of the checks on ``sha``: the latest
        check run per name (of any App) and the latest commit status per context."""
        states: dict[str, str] = {}
        latest_runs: dict[str, CheckRun] = {}
        for run in sorted(repo.check_runs.values(), key=lambda r: r.id):
            if run.head_sha == sha:
                latest_runs[run.name] = run
        for name, run in latest_runs.items():
            if run.status != "completed":
                states[name] = "pending"
            else:
                states[name] = "success" if run.conclusion in PASSING_CONCLUSIONS else "failure"
        latest_statuses: dict[str, CommitStatus] = {}
        for status in sorted(repo.statuses, key=lambda s: (s.created_at, s.id)):
            if status.sha == sha:
                latest_statuses[status.context] = status
        for context, status in latest_statuses.items():
            state = {"success": "success", "pending": "pending"}.get(status.state, "failure")
            if states.get(context) in (None, "success"):
                states[context] = state
        return states

    def protect_branch(
        self,
        repo_name: str,
        branch: str | None = None,
        *,
        required_checks: Iterable[str] = (),
        strict: bool = False,
    ) -> BranchProtection:
        """Branch protection with required status checks (check-run names or status contexts);
        ``strict``: a PR's head must contain the branch's tip. Shapes ``mergeable_state``
        (``blocked``, ``behind``) and refuses merges that it blocks."""
        repo = self.repo(repo_name)
        name = branch or repo.default_branch
        protection = BranchProtection(name, tuple(required_checks), bool(strict))
        repo.protections[name] = protection
        return protection

    def unprotect_branch(self, repo_name: str, branch: str | None = None) -> None:
        repo = self.repo(repo_name)
        if repo.protections.pop(branch or repo.default_branch, None) is None:
            raise not_found("Branch not protected")

    async def create_pull(
        self,
        repo: Repo,
        sender: Account,
        *,
        head: str,
        base: str | None,
        title: str,
        body: str | None,
        draft: bool = False,
        maintainer_can_modify: bool = False,
        app_id: int | None = None,
    ) -> Issue:
        owner, name = repo.owner.login, repo.name
        head_ref = head.split(":", 1)[1] if ":" in head else head
        if ":" in head and head.split(":", 1)[0].lower() != repo.owner.login.lower():
            raise validation_failed("PullRequest", "head", "invalid")
        base_ref = base or repo.default_branch
        base_sha = await self.git.ref_sha(owner, name, f"refs/heads/{base_ref}")
        if base_sha is None:
            raise validation_failed("PullRequest", "base", "invalid")
        head_sha = await self.git.ref_sha(owner, name, f"refs/heads/{head_ref}")
        if head_sha is None:
            raise validation_failed("PullRequest", "head", "invalid")
        for other in repo.pulls():
            assert other.pull is not None
            if other.state == "open" and other.pull.head_ref == head_ref and other.pull.base_ref == base_ref:
                raise validation_failed(
                    "PullRequest",
                    "head",
                    "custom",
                    f"A pull request already exists for {repo.owner.login}:{head_ref}.",
                )
        if await self.git.is_ancestor(owner, name, head_sha, base_sha):
            raise validation_failed(
                "PullRequest", "base", "custom", f"No commits between {base_ref} and {head_ref}"
            )
        issue = self._new_issue(repo, title, body, sender)
        issue.app_id = app_id
        issue.pull = PullState(
            id=self.new_id(),
            head_ref=head_ref,
            head_sha=head_sha,
            base_ref=base_ref,
            base_sha=base_sha,
            draft=draft,
            maintainer_can_modify=maintainer_can_modify,
        )
        self._mark_unknown(issue)
        await self._refresh_stats(repo, issue)
        self._issue_event(repo, issue, "opened", sender)
        self.ci.maybe_schedule(repo, head_ref, head_sha, "pull_request", sender)
        return issue

    async def open_pull(
        self,
        repo_name: str,
        *,
        head: str,
        base: str | None = None,
        title: str,
        body: str | None = "",
        user: str | None = None,
        draft: bool = False,
    ) -> dict[str, Any]:
        """A human opens a pull request."""
        repo = self.repo(repo_name)
        issue = await self.create_pull(
            repo, self._who(repo, user), head=head, base=base, title=title, body=body, draft=draft
        )
        return self.shapes.pull_request(repo, issue)

    async def update_pull(
        self,
        repo: Repo,
        issue: Issue,
        sender: Account,
        *,
        title: str | None = None,
        body: str | None = None,
        body_set: bool = False,
        state: str | None = None,
        base: str | None = None,
    ) -> None:
        pull = issue.pull
        assert pull is not None
        changes: dict[str, Any] = {}
        if base is not None and base != pull.base_ref:
            sha = await self.git.ref_sha(repo.owner.login, repo.name, f"refs/heads/{base}")
            if sha is None:
                raise validation_failed("PullRequest", "base", "invalid")
            changes["base"] = {"ref": {"from": pull.base_ref}, "sha": {"from": pull.base_sha}}
            pull.base_ref, pull.base_sha = base, sha
            self._mark_unknown(issue)
            await self._refresh_stats(repo, issue)
        if title is not None and title != issue.title:
            changes["title"] = {"from": issue.title}
            issue.title = title
        if body_set and body != issue.body:
            changes["body"] = {"from": issue.body}
            issue.body = body
        if changes:
            issue.updated_at = self.now()
            self._issue_event(repo, issue, "edited", sender, changes=changes)
        if state is not None and state != issue.state:
            if state == "closed":
                self._close(repo, issue, sender, None)
            else:
                self._reopen(repo, issue, sender)

    async def close_pull(self, repo_name: str, number: int, user: str | None = None) -> dict[str, Any]:
        repo = self.repo(repo_name)
        issue = self.pull(repo, number)
        await self.update_pull(repo, issue, self._who(repo, user), state="closed")
        return self.shapes.pull_request(repo, issue)

    async def edit_pull(
        self,
        repo_name: str,
        number: int,
        *,
        user: str | None = None,
        state: str | None = None,
        title: str | None = None,
        body: str | None = None,
        base: str | None = None,
    ) -> dict[str, Any]:
        repo = self.repo(repo_name)
        issue = self.pull(repo, number)
        await self.update_pull(
            repo,
            issue,
            self._who(repo, user),
            title=title,
            body=body,
            body_set=body is not None,
            state=state,
            base=base,
        )
        return self.shapes.pull_request(repo, issue)

    async def merge_pull(
        self,
        repo_name: str,
        number: int,
        *,
        user: str | None = None,
        merge_method: str = "merge",
        commit_title: str | None = None,
    ) -> dict[str, Any]:
        """A human merges a PR: a real merge commit on the base branch, ``pull_request.closed``
        (merged), ``push`` of the base branch, and closing keywords close their issues."""
        repo = self.repo(repo_name)
        issue = self.pull(repo, number)
        pull = issue.pull
        assert pull is not None
        sender = self._who(repo, user)
        if issue.state != "open":
            raise ApiError(405, "Pull Request is not mergeable")
        owner, name = repo.owner.login, repo.name
        base_sha = await self.git.ref_sha(owner, name, f"refs/heads/{pull.base_ref}")
        head_sha = await self.git.ref_sha(owner, name, f"refs/heads/{pull.head_ref}") or pull.head_sha
        if base_sha is None:
            raise ApiError(405, "Base branch was modified. Review and try the merge again.")
        if pull.draft:
            raise ApiError(405, "Pull Request is still a draft")
        check = await self.git.merge_check(owner, name, base_sha, head_sha)
        if not check.clean or check.tree is None:
            pull.mergeable, pull.mergeable_state, pull.mergeable_stale = False, "dirty", False
            pull.conflicts = True
            raise ApiError(405, "Pull Request is not mergeable")
        protection = repo.protections.get(pull.base_ref)
        if protection is not None:
            checks = self.check_states(repo, head_sha)
            for context in protection.required_checks:
                state = checks.get(context)
                if state != "success":
                    verb = "expected" if state in (None, "pending") else "failing"
                    raise ApiError(405, f'Required status check "{context}" is {verb}.')
            if protection.strict and not await self.git.is_ancestor(owner, name, base_sha, head_sha):
                raise ApiError(405, "Head branch is out of date with the base branch.")
        identity = (sender.name or sender.login, sender.email or f"{sender.login}@users.noreply.local")
        title = commit_title or (
            f"Merge pull request #{issue.number} from {repo.owner.login}/{pull.head_ref}"
            if merge_method == "merge"
            else f"{issue.title} (#{issue.number})"
        )
        message = f"{title}\n\n{issue.title}\n" if merge_method == "merge" else f"{title}\n"
        parents = (base_sha, head_sha) if merge_method == "merge" else (base_sha,)
        merge_sha = await self.git.commit_tree(owner, name, check.tree, parents, message, identity)
        await self.git.git(owner, name, "update-ref", f"refs/heads/{pull.base_ref}", merge_sha, base_sha)
        now = self.now()
        pull.merged = True
        pull.merged_at = now
        pull.merged_by = sender
        pull.merge_commit_sha = merge_sha
        pull.head_sha = head_sha
        pull.mergeable, pull.mergeable_state, pull.mergeable_stale = None, "unknown", False
        issue.state = "closed"
        issue.closed_at = now
        issue.closed_by = sender
        issue.updated_at = now
        self._issue_event(repo, issue, "closed", sender)
        await self.after_push(repo, [RefUpdate(f"refs/heads/{pull.base_ref}", base_sha, merge_sha)], sender)
        if pull.base_ref == repo.default_branch:
            for match in _CLOSING_KEYWORDS.finditer(f"{issue.title}\n{issue.body or ''}"):
                target = repo.issues.get(int(match.group(1)))
                if target is not None and target.pull is None and target.state == "open":
                    self._close(repo, target, sender, "completed")
        return {"sha": merge_sha, "merged": True, "message": "Pull Request successfully merged"}

    # -- reviews -------------------------------------------------------------------------------
    async def _diff_hunk(self, repo: Repo, issue: Issue, path: str, line: int | None) -> str:
        pull = issue.pull
        assert pull is not None
        try:
            changes = await self.git.changed_files(repo.owner.login, repo.name, pull.base_sha, pull.head_sha)
        except KeyError:
            return ""
        for change in changes:
            if change.filename == path and change.patch:
                lines = change.patch.splitlines()
                if line is None:
                    return "\n".join(lines[:4])
                return _hunk_until(lines, line)
        return f"@@ -0,0 +1,{line or 1} @@"

    async def submit_review(
        self,
        repo_name: str,
        number: int,
        *,
        user: str | None = None,
        event: str = "COMMENT",
        body: str = "",
        comments: Iterable[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        """A human reviews a PR: ``pull_request_review_comment.created`` per inline comment, then
        one ``pull_request_review.submitted``."""
        repo = self.repo(repo_name)
        issue = self.pull(repo, number)
        pull = issue.pull
        assert pull is not None
        sender = self._who(repo, user)
        state = REVIEW_EVENTS.get(event.upper())
        if state is None:
            raise validation_failed("PullRequestReview", "event", "invalid")
        if state != "APPROVED" and not body and not list(comments):
            raise unprocessable("Unprocessable Entity: body is required for this event")
        now = self.now()
        review = Review(
            id=self.new_id(),
            pull_number=issue.number,
            user=sender,
            body=body or "",
            state=state,
            commit_id=pull.head_sha,
            submitted_at=now,
        )
        repo.reviews[review.id] = review
        for spec in comments:
            line = spec.get("line")
            comment = ReviewComment(
                id=self.new_id(),
                pull_number=issue.number,
                review_id=review.id,
                user=sender,
                body=str(spec.get("body", "")),
                path=str(spec["path"]),
                line=int(line) if line is not None else None,
                side=str(spec.get("side", "RIGHT")),
                commit_id=pull.head_sha,
                original_commit_id=pull.head_sha,
                diff_hunk=await self._diff_hunk(
                    repo, issue, str(spec["path"]), int(line) if line is not None else None
                ),
                created_at=now,
                updated_at=now,
                start_line=spec.get("start_line"),
            )
            repo.review_comments[comment.id] = comment
            review.comment_ids.append(comment.id)
        issue.updated_at = now
        pull_payload = self.shapes.pull_request(repo, issue, simple=True)
        for comment_id in review.comment_ids:
            payload = self.envelope(
                repo,
                sender,
                "created",
                comment=self.shapes.webhook_review_comment(repo, repo.review_comments[comment_id]),
                pull_request=pull_payload,
            )
            self.emit(repo, "pull_request_review_comment", payload)
        payload = self.envelope(
            repo,
            sender,
            "submitted",
            review=self.shapes.webhook_review(repo, review),
            pull_request=pull_payload,
        )
        self.emit(repo, "pull_request_review", payload)
        return self.shapes.review(repo, review)

    def reply_to_review_comment(
        self,
        repo: Repo,
        issue: Issue,
        parent: ReviewComment,
        body: str,
        sender: Account,
        *,
        app_id: int | None = None,
    ) -> ReviewComment:
        """A reply in a review thread; GitHub files it under a new COMMENTED review."""
        pull = issue.pull
        assert pull is not None
        root = parent
        while root.in_reply_to_id is not None and root.in_reply_to_id in repo.review_comments:
            root = repo.review_comments[root.in_reply_to_id]
        now = self.now()
        review = Review(
            id=self.new_id(),
            pull_number=issue.number,
            user=sender,
            body="",
            state="COMMENTED",
            commit_id=pull.head_sha,
            submitted_at=now,
        )
        repo.reviews[review.id] = review
        reply = ReviewComment(
            id=self.new_id(),
            pull_number=issue.number,
            review_id=review.id,
            user=sender,
            body=body,
            path=root.path,
            line=root.line,
            side=root.side,
            commit_id=pull.head_sha,
            original_commit_id=root.original_commit_id,
            diff_hunk=root.diff_hunk,
            created_at=now,
            updated_at=now,
            in_reply_to_id=root.id,
            start_line=root.start_line,
            app_id=app_id,
        )
        repo.review_comments[reply.id] = reply
        review.comment_ids.append(reply.id)
        pull_payload = self.shapes.pull_request(repo, issue, simple=True)
        self.emit(
            repo,
            "pull_request_review_comment",
            self.envelope(
                repo,
                sender,
                "created",
                comment=self.shapes.webhook_review_comment(repo, reply),
                pull_request=pull_payload,
            ),
        )
        self.emit(
            repo,
            "pull_request_review",
            self.envelope(
                repo,
                sender,
                "submitted",
                review=self.shapes.webhook_review(repo, review),
                pull_request=pull_payload,
            ),
        )
        return reply

    # -- commits and pushes ------------------------------------------------------------------
    async def push_commit(
        self,
        repo_name: str,
        *,
        branch: str,
        files: Mapping[str, str | None],
        message: str = "Update files",
        user: str | None = None,
        create_from: str | None = None,
    ) -> dict[str, Any]:
        """A human pushes one commit to ``branch`` (created from ``create_from`` if missing)."""
        repo = self.repo(repo_name)
        sender = self._who(repo, user)
        owner, name = repo.owner.login, repo.name
        ref = f"refs/heads/{branch}"
        before = await self.git.ref_sha(owner, name, ref)
        identity = (sender.name or sender.login, sender.email or f"{sender.login}@users.noreply.local")
        try:
            sha = await self.git.commit_files(
                owner,
                name,
                branch=branch,
                files=files,
                message=message,
                author=identity,
                create_from=create_from or (None if before else repo.default_branch),
            )
        except ValueError as exc:
            raise validation_failed("Commit", "files", "invalid", str(exc)) from exc
        await self.after_push(repo, [RefUpdate(ref, before, sha)], sender)
        info = await self.git.commit_info(owner, name, sha)
        return self.shapes.commit(repo, info)

    def _git_principal(self, request: web.Request) -> auth.Principal:
        """Who a git request authenticates as. GitHub takes an installation token only as
        ``Authorization: Basic base64("x-access-token:<token>")``; a ``Bearer``/``token``
        header, another user name or an unknown/expired token authenticate nobody."""
        credentials = parse_basic(request)
        if credentials is None or credentials[0] != GIT_TOKEN_USER or not credentials[1]:
            return auth.ANONYMOUS
        try:
            return self.token_principal(credentials[1])
        except ApiError:
            return auth.ANONYMOUS

    async def _authorize_git(self, request: web.Request, owner: str, name: str, service: str) -> bool:
        principal = self._git_principal(request)
        if principal.kind != "installation":
            return False
        repo = self.repos.get(f"{owner}/{name}".lower())
        if repo is None or not self.token_can_see(principal, repo):
            return False
        assert principal.token is not None
        need = "write" if service == "git-receive-pack" else "read"
        return auth.permits(principal.token.permissions, (("contents", need),))

    async def _on_git_push(
        self, owner: str, name: str, updates: list[RefUpdate], request: web.Request
    ) -> None:
        repo = self.repo(f"{owner}/{name}")
        principal = self._git_principal(request)
        pusher = principal.app.bot if principal.app is not None else repo.owner
        await self.after_push(repo, updates, pusher)

    async def after_push(self, repo: Repo, updates: Iterable[RefUpdate], pusher: Account) -> None:
        """What GitHub does after refs moved: ``push`` webhooks, PR head/base updates with
        ``pull_request.synchronize``, mergeability reset, and CI."""
        for update in updates:
            repo.pushed_at = self.now()
            await self._emit_push(repo, update, pusher)
            if not update.ref.startswith("refs/heads/"):
                continue
            branch = update.ref.removeprefix("refs/heads/")
            if update.new_sha is None:
                continue
            for issue in repo.pulls():
                pull = issue.pull
                assert pull is not None
                if issue.state != "open":
                    continue
                if pull.head_ref == branch and pull.head_sha != update.new_sha:
                    before = pull.head_sha
                    pull.head_sha = update.new_sha
                    self._mark_unknown(issue)
                    await self._refresh_stats(repo, issue)
                    issue.updated_at = self.now()
                    self._issue_event(repo, issue, "synchronize", pusher, before=before, after=update.new_sha)
                elif pull.base_ref == branch:
                    pull.base_sha = update.new_sha
                    self._mark_unknown(issue)
                    await self._refresh_stats(repo, issue)
            await self._request_check_suites(repo, branch, update, pusher)
            is_pr_head = any(
                i.pull is not None and i.state == "open" and i.pull.head_ref == branch for i in repo.pulls()
            )
            self.ci.maybe_schedule(
                repo, branch, update.new_sha, "pull_request" if is_pr_head else "push", pusher
            )

    async def _request_check_suites(
        self, repo: Repo, branch: str, update: RefUpdate, pusher: Account
    ) -> None:
        """As GitHub does for a newly pushed head commit: a check suite (queued) for every App
        installed on the repository with ``checks: write``, and ``check_suite.requested`` to it
        (when it subscribes). A commit that already has the App's suite gets no second one."""
        sha = update.new_sha
        assert sha is not None
        await self.commit(repo, sha)  # cached: the payload's head_commit
        for app, _installation in self._targets(repo):
            if not auth.level_allows(app.permissions.get("checks"), "write"):
                continue
            if any(s.app_id == app.id and s.head_sha == sha for s in repo.check_suites.values()):
                continue
            suite = self.new_check_suite(repo, app.id, sha, branch, update.old_sha or "0" * 40)
            payload = self.envelope(
                repo, pusher, "requested", check_suite=self._check_suite_payload(repo, suite)
            )
            self.emit(repo, "check_suite", payload, only_app=app.id)

    async def _emit_push(self, repo: Repo, update: RefUpdate, pusher: Account) -> None:
        owner, name = repo.owner.login, repo.name
        zero = "0" * 40
        created = update.old_sha is None
        deleted = update.new_sha is None
        commits: list[dict[str, Any]] = []
        head_commit: dict[str, Any] | None = None
        if not deleted:
            assert update.new_sha is not None
            if created:
                # a new branch lists the commits no other branch has (none when it points at one)
                others = [
                    f"^{sha}"
                    for ref, sha in (await self.git.branches(owner, name)).items()
                    if f"refs/heads/{ref}" != update.ref
                ]
                range_ = [update.new_sha, *others]
            else:
                range_ = [update.new_sha, f"^{update.old_sha}"]
            for info in await self.git.log(owner, name, range_, limit=20):
                commits.append(await self._push_commit(repo, info))
            if commits and commits[-1]["id"] == update.new_sha:
                head_commit = commits[-1]
            else:
                head_commit = await self._push_commit(repo, await self.commit(repo, update.new_sha))
        forced = False
        if not created and not deleted:
            assert update.old_sha is not None and update.new_sha is not None
            forced = not await self.git.is_ancestor(owner, name, update.old_sha, update.new_sha)
        before = update.old_sha or zero
        after = update.new_sha or zero
        payload: dict[str, Any] = {
            "ref": update.ref,
            "before": before,
            "after": after,
            "repository": self.shapes.push_repository(repo),
            "pusher": {"name": pusher.login, "email": pusher.email},
        }
        if repo.owner.type == "Organization":
            payload["organization"] = self.shapes.organization(repo.owner)
        payload.update(
            {
                "sender": self.shapes.user(pusher),
                "created": created,
                "deleted": deleted,
                "forced": forced,
                "base_ref": None,
                "compare": f"{self.base_url}/{repo.full_name}/compare/{before[:12]}...{after[:12]}",
                "commits": commits,
                "head_commit": head_commit,
            }
        )
        self.emit(repo, "push", payload)

    async def _push_commit(self, repo: Repo, info: Any) -> dict[str, Any]:
        owner, name = repo.owner.login, repo.name
        changes = await self.git.changed_files(owner, name, info.parents[0], info.sha) if info.parents else []
        return self.shapes.push_commit(repo, info, changes)

    async def delete_branch(self, repo: Repo, branch: str, sender: Account) -> None:
        if branch == repo.default_branch:
            raise unprocessable("Cannot delete the default branch")
        owner, name = repo.owner.login, repo.name
        sha = await self.git.ref_sha(owner, name, f"refs/heads/{branch}")
        if sha is None or not await self.git.delete_branch(owner, name, branch):
            raise unprocessable("Reference does not exist")
        await self.after_push(repo, [RefUpdate(f"refs/heads/{branch}", sha, None)], sender)

    # -- checks, statuses ----------------------------------------------------------------------
    def check_suite_for(
        self, repo: Repo, app_id: int, head_sha: str, head_branch: str | None, before: str | None = None
    ) -> CheckSuite:
        for suite in repo.check_suites.values():
            if suite.app_id == app_id and suite.head_sha == head_sha:
                return suite
        return self.new_check_suite(repo, app_id, head_sha, head_branch, before)

    def new_check_suite(
        self, repo: Repo, app_id: int, head_sha: str, head_branch: str | None, before: str | None = None
    ) -> CheckSuite:
        now = self.now()
        suite = CheckSuite(
            id=self.new_id(),
            app_id=app_id,
            head_branch=head_branch,
            head_sha=head_sha,
            before=before,
            after=head_sha,
            created_at=now,
            updated_at=now,
        )
        repo.check_suites[suite.id] = suite
        return suite

    def _branch_of_sha(self, repo: Repo, sha: str) -> str | None:
        for issue in repo.pulls():
            if issue.pull is not None and issue.pull.head_sha == sha:
                return issue.pull.head_ref
        return None

    def create_check_run(
        self,
        repo: Repo,
        app: App,
        sender: Account,
        *,
        name: str,
        head_sha: str,
        status: str = "queued",
        conclusion: str | None = None,
        started_at: float | None = None,
        completed_at: float | None = None,
        output: Mapping[str, Any] | None = None,
        actions: Iterable[Mapping[str, Any]] = (),
        details_url: str | None = None,
        external_id: str | None = None,
        suite: CheckSuite | None = None,
        run_id: int | None = None,
    ) -> CheckRun:
        if conclusion is not None:
            status = "completed"
        now = self.now()
        suite = suite or self.check_suite_for(repo, app.id, head_sha, self._branch_of_sha(repo, head_sha))
        run = CheckRun(
            id=run_id or self.new_id(),
            suite_id=suite.id,
            app_id=app.id,
            name=name,
            head_sha=head_sha,
            status=status,
            conclusion=conclusion,
            started_at=started_at if started_at is not None else now,
            completed_at=(
                completed_at if completed_at is not None else (now if status == "completed" else None)
            ),
            external_id=external_id or "",
            details_url=details_url,
            actions=[dict(a) for a in actions],
        )
        if output:
            self._apply_output(run, output)
        repo.check_runs[run.id] = run
        self._suite_progress(repo, suite, sender, announce=False)
        self.emit(
            repo,
            "check_run",
            self.envelope(repo, sender, "created", check_run=self.shapes.webhook_check_run(repo, run)),
        )
        if run.status == "completed":
            self.emit(
                repo,
                "check_run",
                self.envelope(repo, sender, "completed", check_run=self.shapes.webhook_check_run(repo, run)),
            )
            self._suite_progress(repo, suite, sender)
        return run

    def _apply_output(self, run: CheckRun, output: Mapping[str, Any]) -> None:
        for key in ("title", "summary", "text"):
            if key in output:
                run.output[key] = output[key]
        run.annotations.extend(dict(a) for a in output.get("annotations", ()) or ())

    def update_check_run(
        self, repo: Repo, run: CheckRun, sender: Account, changes: Mapping[str, Any]
    ) -> CheckRun:
        was_completed = run.status == "completed"
        now = self.now()
        for key in ("name", "details_url", "external_id"):
            if key in changes and changes[key] is not None:
                setattr(run, key, changes[key])
        if "started_at" in changes:
            run.started_at = parse_time(changes["started_at"]) or run.started_at
        if "status" in changes and changes["status"]:
            run.status = changes["status"]
            if run.status != "completed":
                run.conclusion = None
                run.completed_at = None
        if changes.get("conclusion"):
            run.conclusion = changes["conclusion"]
            run.status = "completed"
        if "completed_at" in changes and changes["completed_at"]:
            run.completed_at = parse_time(changes["completed_at"])
        if run.status == "completed" and run.completed_at is None:
            run.completed_at = now
        if run.status == "completed" and run.conclusion is None:
            raise validation_failed(
                "CheckRun", "conclusion", "missing_field", "conclusion is required when status is completed"
            )
        if "output" in changes and changes["output"]:
            self._apply_output(run, changes["output"])
        if "actions" in changes and changes["actions"] is not None:
            run.actions = [dict(a) for a in changes["actions"]]
        suite = repo.check_suites[run.suite_id]
        if run.status == "completed" and not was_completed:
            self.emit(
                repo,
                "check_run",
                self.envelope(repo, sender, "completed", check_run=self.shapes.webhook_check_run(repo, run)),
            )
        self._suite_progress(repo, suite, sender)
        return run

    def _suite_progress(
        self, repo: Repo, suite: CheckSuite, sender: Account, *, announce: bool = True
    ) -> None:
        runs = [run for run in repo.check_runs.values() if run.suite_id == suite.id]
        if not runs:
            return
        was = suite.status
        suite.updated_at = self.now()
        if all(run.status == "completed" for run in runs):
            conclusions = {run.conclusion for run in runs}
            suite.status = "completed"
            suite.conclusion = next((c for c in CONCLUSION_PRIORITY if c in conclusions), "success")
            if was != "completed" and announce:
                self.emit(
                    repo,
                    "check_suite",
                    self.envelope(
                        repo, sender, "completed", check_suite=self._check_suite_payload(repo, suite)
                    ),
                )
        elif any(run.status == "in_progress" for run in runs) or any(
            run.status == "completed" for run in runs
        ):
            suite.status, suite.conclusion = "in_progress", None
        else:
            suite.status, suite.conclusion = "queued", None

    def _check_suite_payload(self, repo: Repo, suite: CheckSuite) -> dict[str, Any]:
        data = self.shapes.webhook_check_suite(repo, suite)
        data["head_commit"] = self.ci.head_commit_of(repo, suite.head_sha)
        return data

    def request_check_action(
        self, repo_name: str, check_run_id: int, identifier: str, user: str | None = None
    ) -> Delivery | None:
        """A human clicks a check run's button (``check_run.requested_action`` to its App).
        ``ApiError(422)`` and no webhook when the run is not completed (GitHub displays the
        buttons of completed runs only; ``check_actions_require_completed=False`` lifts this)."""
        repo = self.repo(repo_name)
        run = repo.check_runs.get(check_run_id)
        if run is None:
            raise not_found()
        if self.check_actions_require_completed and run.status != "completed":
            raise unprocessable(
                f"Check run {run.id} is {run.status}: GitHub shows a check run's buttons only once "
                "it is completed, so nobody can click them"
            )
        if not any(action.get("identifier") == identifier for action in run.actions):
            raise validation_failed(
                "CheckRun", "identifier", "invalid", f"no action {identifier!r} on this check run"
            )
        sender = self._who(repo, user)
        payload = self.envelope(
            repo,
            sender,
            "requested_action",
            check_run=self.shapes.webhook_check_run(repo, run),
            requested_action={"identifier": identifier},
        )
        sent = self.emit(repo, "check_run", payload, only_app=run.app_id)
        return sent[0] if sent else None

    def rerequest_check_run(self, repo: Repo, run: CheckRun, sender: Account) -> None:
        if run.app_id == ACTIONS_APP_ID:
            job = repo.jobs.get(run.id)
            branch = job.head_branch if job else self._branch_of_sha(repo, run.head_sha)
            self.ci.schedule(repo, branch, run.head_sha, "push", force=True, actor=sender)
            return
        payload = self.envelope(
            repo, sender, "rerequested", check_run=self.shapes.webhook_check_run(repo, run)
        )
        self.emit(repo, "check_run", payload, only_app=run.app_id)

    async def create_status(
        self,
        repo: Repo,
        sha: str,
        *,
        state: str,
        context: str,
        creator: Account,
        description: str | None = None,
        target_url: str | None = None,
    ) -> CommitStatus:
        now = self.now()
        status = CommitStatus(
            id=self.new_id(),
            sha=sha,
            state=state,
            context=context,
            description=description,
            target_url=target_url,
            creator=creator,
            created_at=now,
            updated_at=now,
        )
        repo.statuses.append(status)
        owner, name = repo.owner.login, repo.name
        info = await self.git.commit_info(owner, name, sha)
        commit = self.shapes.commit(repo, info)
        branches = [
            {
                "name": branch,
                "commit": {"sha": tip, "url": f"{self.base_url}/repos/{repo.full_name}/commits/{tip}"},
                "protected": False,
            }
            for branch, tip in (await self.git.branches(owner, name)).items()
            if tip == sha
        ]
        payload: dict[str, Any] = {
            "id": status.id,
            "sha": sha,
            "name": repo.full_name,
            "target_url": target_url,
            "avatar_url": f"{self.base_url}/avatars/u/{creator.id}?v=4",
            "context": context,
            "description": description,
            "state": state,
            "commit": commit,
            "branches": branches,
            "created_at": iso(now),
            "updated_at": iso(now),
            "repository": self.shapes.webhook_repository(repo),
        }
        if repo.owner.type == "Organization":
            payload["organization"] = self.shapes.organization(repo.owner)
        payload["sender"] = self.shapes.user(creator)
        self.emit(repo, "status", payload)
        return status

    def configure_ci(
        self,
        repo_name: str,
        command: str,
        *,
        checks: Iterable[str] = ("ci",),
        timeout: float = 120.0,
        env: Mapping[str, str] | None = None,
        workflow_name: str = "CI",
        provider: str = "actions",
        creator: str = EXTERNAL_CI_CREATOR,
    ) -> CIConfig:
        """Run ``command`` on every push of the default branch or of a branch with an open PR.

        ``provider="actions"`` reports as GitHub Actions (check suite and runs, workflow run and
        jobs, job logs; no commit statuses); ``provider="external"`` as a CI service outside
        GitHub (commit statuses by ``creator``, one per name in ``checks``). Both can be
        configured on one repository."""
        repo = self.repo(repo_name)
        try:
            config = CIConfig(
                command=command,
                checks=tuple(checks) or ("ci",),
                timeout=float(timeout),
                env=dict(env or {}),
                workflow_name=workflow_name,
                provider=provider,
                creator=creator,
            )
        except ValueError as exc:
            raise validation_failed("CI", "provider", "invalid", str(exc)) from exc
        self.ci.configure(repo, config)
        return config

    def configure_external_ci(
        self,
        repo_name: str,
        command: str,
        *,
        contexts: Iterable[str] = ("ci/external",),
        timeout: float = 120.0,
        env: Mapping[str, str] | None = None,
        creator: str = EXTERNAL_CI_CREATOR,
    ) -> CIConfig:
        """An external CI service: commit statuses (``contexts``) for ``command``'s result."""
        return self.configure_ci(
            repo_name,
            command,
            checks=contexts,
            timeout=timeout,
            env=env,
            provider="external",
            creator=creator,
        )

    # -- snapshots -------------------------------------------------------------------------
    async def state_snapshot(self) -> dict[str, Any]:
        """Per repository: issues with comments and labels, PRs, reviews, checks, statuses, refs."""
        shapes = self.shapes
        result: dict[str, Any] = {}
        for repo in self.repos.values():
            issues = []
            pulls = []
            for issue in repo.issues.values():
                entry = shapes.issue(repo, issue)
                entry["comments_list"] = [
                    shapes.issue_comment(repo, repo.comments[c]) for c in issue.comment_ids
                ]
                entry["reactions_list"] = [shapes.reaction(r) for r in issue.reactions]
                if issue.pull is None:
                    issues.append(entry)
                    continue
                pr = shapes.pull_request(repo, issue)
                pr["comments_list"] = entry["comments_list"]
                pr["reviews"] = [
                    shapes.review(repo, review)
                    for review in repo.reviews.values()
                    if review.pull_number == issue.number
                ]
                pr["review_comments_list"] = [
                    shapes.review_comment(repo, c)
                    for c in repo.review_comments.values()
                    if c.pull_number == issue.number
                ]
                pulls.append(pr)
            result[repo.full_name] = {
                "repository": shapes.repository(repo, full=True),
                "issues": issues,
                "pull_requests": pulls,
                "labels": [shapes.label(repo, label) for label in repo.labels.values()],
                "check_suites": [shapes.webhook_check_suite(repo, s) for s in repo.check_suites.values()],
                "check_runs": [shapes.check_run(repo, r) for r in repo.check_runs.values()],
                "statuses": [shapes.status(repo, s) for s in repo.statuses],
                "workflow_runs": [
                    shapes.workflow_run(repo, r, self.ci.head_commit_of(repo, r.head_sha))
                    for r in repo.workflow_runs.values()
                ],
                "jobs": [shapes.job(repo, j) for j in repo.jobs.values()],
                "collaborators": dict(repo.collaborators),
                "refs": await self.git.snapshot_refs(repo.owner.login, repo.name),
            }
        return result

    # -- manifests ---------------------------------------------------------------------------
    def register_manifest(self, manifest: Mapping[str, Any]) -> str:
        """Remember a manifest and answer the one-time code GitHub would redirect with."""
        if not isinstance(manifest, Mapping) or not manifest.get("url"):
            raise validation_failed("Manifest", "url", "missing_field")
        code = secrets.token_hex(10)
        self.manifest_codes[code] = {"manifest": dict(manifest), "created_at": self.clock()}
        return code

    async def convert_manifest(self, code: str) -> dict[str, Any]:
        entry = self.manifest_codes.pop(code, None)
        if entry is None or self.clock() - entry["created_at"] > 3600:
            raise not_found()
        manifest = entry["manifest"]
        hook = manifest.get("hook_attributes") or {}
        result = await self.create_app(
            str(manifest.get("name") or "patchwright"),
            webhook_url=hook.get("url"),
            webhook_secret=secrets.token_hex(20),
            permissions=manifest.get("default_permissions"),
            events=manifest.get("default_events"),
            description=str(manifest.get("description") or ""),
        )
        return result


def _hunk_until(lines: list[str], target: int) -> str:
    """The diff hunk up to new-file line ``target`` (as GitHub's ``diff_hunk``)."""
    header_index = None
    new_line = 0
    for index, text in enumerate(lines):
        if text.startswith("@@"):
            match = re.match(r"@@ -\d+(?:,\d+)? \+(\d+)", text)
            header_index = index
            new_line = int(match.group(1)) - 1 if match else 0
            continue
        if header_index is None or text.startswith(("diff ", "index ", "--- ", "+++ ")):
            continue
        if not text.startswith("-"):
            new_line += 1
        if new_line >= target:
            return "\n".join(lines[header_index : index + 1])
    if header_index is not None:
        return "\n".join(lines[header_index:])
    return "\n".join(lines[:4])
