"""The emulator's in-memory GitHub state: plain records, no behaviour beyond lookups."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

ACTIONS_APP_ID = 15368  # the "GitHub Actions" app that owns CI check runs
PERMISSION_LEVELS = ("none", "read", "triage", "write", "maintain", "admin")
# The App the demo and the tests register: the same permissions and events as the repository's
# ``app.yml`` (tests/sandbox/test_emulator_strict.py holds them equal).
DEFAULT_APP_PERMISSIONS = MappingProxyType(
    {
        "actions": "read",
        "checks": "write",
        "contents": "write",
        "issues": "write",
        "metadata": "read",
        "pull_requests": "write",
        "statuses": "read",
    }
)
DEFAULT_APP_EVENTS = (
    "check_run",
    "check_suite",
    "issue_comment",
    "issues",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "push",
    "status",
    "workflow_run",
)
# Sent to every App whatever it subscribes to.
ALWAYS_DELIVERED_EVENTS = frozenset({"ping", "installation", "installation_repositories"})


@dataclass
class Account:
    """A user, bot or organization."""

    id: int
    login: str
    type: str = "User"  # User | Bot | Organization
    name: str | None = None
    email: str | None = None
    site_admin: bool = False


@dataclass
class App:
    id: int
    slug: str
    name: str
    client_id: str
    client_secret: str
    webhook_url: str | None
    webhook_secret: str | None
    public_key_pem: str
    owner: Account
    bot: Account
    hook_id: int
    created_at: float
    description: str = ""
    permissions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_APP_PERMISSIONS))
    events: list[str] = field(default_factory=lambda: list(DEFAULT_APP_EVENTS))


@dataclass
class Installation:
    id: int
    app_id: int
    account: Account
    repository_ids: list[int]
    created_at: float
    updated_at: float
    repository_selection: str = "selected"


@dataclass
class InstallationToken:
    token: str
    installation_id: int
    created_at: float
    expires_at: float
    repository_ids: tuple[int, ...]
    permissions: dict[str, str]


@dataclass
class Label:
    id: int
    name: str
    color: str = "ededed"
    description: str | None = None
    default: bool = False


@dataclass
class Reaction:
    id: int
    user: Account
    content: str
    created_at: float


@dataclass
class IssueComment:
    id: int
    issue_number: int
    user: Account
    body: str
    created_at: float
    updated_at: float
    app_id: int | None = None  # set when an App wrote it
    reactions: list[Reaction] = field(default_factory=list)


@dataclass
class PullState:
    """The pull-request half of an issue that is a PR."""

    id: int
    head_ref: str
    head_sha: str
    base_ref: str
    base_sha: str
    draft: bool = False
    maintainer_can_modify: bool = False
    merged: bool = False
    merged_at: float | None = None
    merged_by: Account | None = None
    merge_commit_sha: str | None = None
    mergeable: bool | None = None
    mergeable_state: str = "unknown"
    mergeable_stale: bool = True  # recompute with git on the next read
    null_reads_left: int = 0
    conflicts: bool = False  # what git said when mergeability was last computed
    commits: int = 0
    additions: int = 0
    deletions: int = 0
    changed_files: int = 0


@dataclass
class Issue:
    id: int
    number: int
    title: str
    body: str | None
    user: Account
    created_at: float
    updated_at: float
    state: str = "open"
    state_reason: str | None = None
    closed_at: float | None = None
    closed_by: Account | None = None
    labels: list[str] = field(default_factory=list)  # label names, in order added
    comment_ids: list[int] = field(default_factory=list)
    reactions: list[Reaction] = field(default_factory=list)
    locked: bool = False
    app_id: int | None = None
    pull: PullState | None = None


@dataclass
class Review:
    id: int
    pull_number: int
    user: Account
    body: str
    state: str  # APPROVED | CHANGES_REQUESTED | COMMENTED | DISMISSED
    commit_id: str
    submitted_at: float
    comment_ids: list[int] = field(default_factory=list)


@dataclass
class ReviewComment:
    id: int
    pull_number: int
    review_id: int | None
    user: Account
    body: str
    path: str
    line: int | None
    side: str
    commit_id: str
    original_commit_id: str
    diff_hunk: str
    created_at: float
    updated_at: float
    in_reply_to_id: int | None = None
    start_line: int | None = None
    app_id: int | None = None
    reactions: list[Reaction] = field(default_factory=list)


@dataclass
class CheckSuite:
    id: int
    app_id: int
    head_branch: str | None
    head_sha: str
    before: str | None
    after: str | None
    created_at: float
    updated_at: float
    status: str = "queued"
    conclusion: str | None = None


@dataclass
class CheckRun:
    id: int
    suite_id: int
    app_id: int
    name: str
    head_sha: str
    status: str
    conclusion: str | None
    started_at: float | None
    completed_at: float | None
    external_id: str = ""
    details_url: str | None = None
    output: dict[str, Any] = field(default_factory=lambda: {"title": None, "summary": None, "text": None})
    annotations: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CommitStatus:
    id: int
    sha: str
    state: str  # error | failure | pending | success
    context: str
    description: str | None
    target_url: str | None
    creator: Account
    created_at: float
    updated_at: float


@dataclass
class Workflow:
    id: int
    name: str
    path: str
    created_at: float


@dataclass
class WorkflowStep:
    number: int
    name: str
    status: str
    conclusion: str | None
    started_at: float | None
    completed_at: float | None


@dataclass
class WorkflowJob:
    id: int  # equals the id of its check run, as on GitHub
    run_id: int
    name: str
    head_sha: str
    head_branch: str | None
    created_at: float
    status: str = "queued"
    conclusion: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    steps: list[WorkflowStep] = field(default_factory=list)
    log: str = ""
    runner_name: str | None = None


@dataclass
class WorkflowRun:
    id: int
    workflow_id: int
    name: str
    head_branch: str | None
    head_sha: str
    run_number: int
    event: str
    check_suite_id: int
    actor: Account
    created_at: float
    updated_at: float
    status: str = "queued"
    conclusion: str | None = None
    run_started_at: float | None = None
    pull_numbers: list[int] = field(default_factory=list)
    job_ids: list[int] = field(default_factory=list)
    display_title: str = ""


@dataclass
class BranchProtection:
    """The part of branch protection that shapes ``mergeable_state``: required status checks
    (check-run names or commit-status contexts) and whether the head must be up to date."""

    branch: str
    required_checks: tuple[str, ...] = ()
    strict: bool = False


@dataclass
class Repo:
    id: int
    owner: Account
    name: str
    default_branch: str
    created_at: float
    updated_at: float
    pushed_at: float
    description: str | None = None
    private: bool = False
    next_number: int = 1
    labels: dict[str, Label] = field(default_factory=dict)  # lower-case name -> label
    issues: dict[int, Issue] = field(default_factory=dict)
    comments: dict[int, IssueComment] = field(default_factory=dict)
    reviews: dict[int, Review] = field(default_factory=dict)
    review_comments: dict[int, ReviewComment] = field(default_factory=dict)
    check_suites: dict[int, CheckSuite] = field(default_factory=dict)
    check_runs: dict[int, CheckRun] = field(default_factory=dict)
    statuses: list[CommitStatus] = field(default_factory=list)
    workflows: dict[int, Workflow] = field(default_factory=dict)
    workflow_runs: dict[int, WorkflowRun] = field(default_factory=dict)
    jobs: dict[int, WorkflowJob] = field(default_factory=dict)
    collaborators: dict[str, str] = field(default_factory=dict)  # lower-case login -> level
    protections: dict[str, BranchProtection] = field(default_factory=dict)  # branch -> rules

    @property
    def full_name(self) -> str:
        return f"{self.owner.login}/{self.name}"

    def pulls(self) -> list[Issue]:
        return [issue for issue in self.issues.values() if issue.pull is not None]


@dataclass
class Delivery:
    """One webhook delivery attempt, as in GitHub's delivery log."""

    id: int  # numeric id of this attempt
    guid: str  # X-GitHub-Delivery (kept on redelivery)
    app_id: int
    event: str
    action: str | None
    installation_id: int | None
    repository: str | None
    url: str | None
    headers: dict[str, str]
    body: bytes
    created_at: float
    redelivery: bool = False
    status: str = "pending"  # pending | delivered | failed | dropped
    status_code: int | None = None
    duration: float | None = None
    response_body: str | None = None
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "guid": self.guid,
            "app_id": self.app_id,
            "event": self.event,
            "action": self.action,
            "installation_id": self.installation_id,
            "repository": self.repository,
            "url": self.url,
            "redelivery": self.redelivery,
            "status": self.status,
            "status_code": self.status_code,
            "duration": self.duration,
            "response_body": self.response_body,
            "error": self.error,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class RecordedRequest:
    time: float
    method: str
    path: str
    query: str
    operation_id: str | None
    status: int
    body: Any
    credential: str  # app:<id> | installation:<id> | anonymous | invalid
    duration: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "operation_id": self.operation_id,
            "status": self.status,
            "body": self.body,
            "credential": self.credential,
            "duration": self.duration,
        }


@dataclass(frozen=True)
class Violation:
    # unknown_operation | invalid_path | invalid_query | invalid_body | invalid_json | response
    # | unsupported_api_version | webhook (a delivery that breaks GitHub's payload schemas)
    kind: str
    method: str
    path: str
    operation_id: str | None
    status: int
    errors: tuple[dict[str, Any], ...]
    time: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "method": self.method,
            "path": self.path,
            "operation_id": self.operation_id,
            "status": self.status,
            "errors": list(self.errors),
            "time": self.time,
        }
