"""The parts of GitHub's webhook payloads that the handlers read, as pydantic models.

A payload is checked against the model of its event kind before any handler runs; one that
does not fit is ignored with the reason ``malformed payload: <field path> <what is wrong>``
(:func:`malformed`), so a handler can index what it reads without guarding every access.

The models follow GitHub's webhook schemas (``x-webhooks`` of GitHub's REST description) and
are as permissive as GitHub is:

- fields the handlers do not read are not declared, and unknown fields are ignored;
- a field is required where GitHub's schema requires it for the event kind (or, in
  :data:`ACTION_MODELS`, for the action), and may be left out (:data:`Omissible`) where the
  schema says GitHub may leave it out;
- ``null`` is accepted only where GitHub's schema says the field is nullable;
- types are checked strictly, as GitHub sends them (an integer is never a string or a float).

Pure: no I/O, nothing here knows the handlers.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

T = TypeVar("T")

#: At most this many problems are named in one reason.
MAX_PROBLEMS = 3


def _not_null(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError("null", "is null")
    return value


#: A field GitHub may leave out, but never sends as ``null``.
Omissible = Annotated[T | None, BeforeValidator(_not_null)]


class Part(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


# -- the parts ------------------------------------------------------------------------------------


class User(Part):
    login: str
    type: Omissible[str] = None  # GitHub requires it of a sender, not of a comment's or review's user


class Repository(Part):
    full_name: str
    default_branch: str


class Installation(Part):
    id: int


class Account(Part):
    login: Omissible[str] = None  # an enterprise account has a slug, no login


class InstallationWithAccount(Installation):
    account: Account | None


class RepositoryRef(Part):
    full_name: str


class Label(Part):
    name: str


class IssueRef(Part):
    number: int
    pull_request: Omissible[dict[str, Any]] = None  # present when the issue is a pull request


class Issue(IssueRef):
    title: str
    body: str | None
    labels: Omissible[list[Label]] = None


class Comment(Part):
    id: int
    body: str
    user: User | None


class PullRequestRef(Part):
    number: int


class Head(Part):
    sha: str


class PullRequest(PullRequestRef):
    head: Head
    merged: bool | None = None  # optional and nullable in GitHub's schema, except on closed


class ClosedPullRequest(PullRequest):
    merged: bool  # type: ignore[assignment]  # what decides between a merged and a closed task


class Review(Part):
    id: int
    state: str
    body: str | None
    user: User | None


class App(Part):
    slug: Omissible[str] = None


class CheckSuiteRef(Part):
    head_branch: str | None = None


class CheckRun(Part):
    app: App | None
    head_sha: str
    external_id: str
    check_suite: CheckSuiteRef


class CheckSuite(Part):
    app: App
    head_sha: str
    head_branch: str | None


class WorkflowRun(Part):
    head_sha: str
    head_branch: str | None


class RequestedAction(Part):
    identifier: Omissible[str] = None


class Branch(Part):
    name: str


# -- the payloads, one per event kind -------------------------------------------------------------


class Payload(Part):
    """Every event: the ingress reads ``installation.id`` into the ledger row."""

    installation: Omissible[Installation] = None


class ActionPayload(Payload):
    action: str


class RepositoryPayload(ActionPayload):
    repository: Repository
    sender: User


class IssuesPayload(RepositoryPayload):
    issue: Issue
    label: Omissible[Label] = None  # labeled / unlabeled


class IssueCommentPayload(RepositoryPayload):
    issue: IssueRef
    comment: Comment


class PullRequestPayload(RepositoryPayload):
    pull_request: PullRequest


class PullRequestClosedPayload(PullRequestPayload):
    pull_request: ClosedPullRequest  # type: ignore[assignment]


class PullRequestSynchronizePayload(PullRequestPayload):
    before: str


class PullRequestReviewPayload(RepositoryPayload):
    pull_request: PullRequestRef
    review: Review


class CheckRunPayload(RepositoryPayload):
    check_run: CheckRun
    requested_action: Omissible[RequestedAction] = None  # requested_action


class CheckSuitePayload(ActionPayload):
    repository: Repository
    check_suite: CheckSuite


class WorkflowRunPayload(ActionPayload):
    repository: Repository
    workflow_run: WorkflowRun


class StatusPayload(Payload):
    repository: Repository
    state: str
    sha: str
    branches: list[Branch]


class PushPayload(Payload):
    repository: Repository
    ref: str
    deleted: bool
    sender: Omissible[User] = None


class InstallationPayload(ActionPayload):
    installation: InstallationWithAccount  # type: ignore[assignment]  # required here
    repositories: Omissible[list[RepositoryRef]] = None  # created


class InstallationRepositoriesPayload(ActionPayload):
    installation: Installation  # type: ignore[assignment]  # required here
    repositories_added: list[RepositoryRef]
    repositories_removed: list[RepositoryRef]


#: ``X-GitHub-Event`` -> the model its payload must fit. Events not named here are not checked.
#: (Only events the handlers act on are named: the others are ignored as they are.)
MODELS: dict[str, type[Payload]] = {
    "issues": IssuesPayload,
    "issue_comment": IssueCommentPayload,
    "pull_request": PullRequestPayload,
    "pull_request_review": PullRequestReviewPayload,
    "pull_request_review_comment": ActionPayload,
    "check_run": CheckRunPayload,
    "check_suite": CheckSuitePayload,
    "workflow_run": WorkflowRunPayload,
    "status": StatusPayload,
    "push": PushPayload,
    "installation": InstallationPayload,
    "installation_repositories": InstallationRepositoriesPayload,
}

#: (event, action) -> a stricter model, where GitHub's schema of that action requires more.
ACTION_MODELS: dict[tuple[str, str], type[Payload]] = {
    ("pull_request", "closed"): PullRequestClosedPayload,
    ("pull_request", "synchronize"): PullRequestSynchronizePayload,
}


def model_for(event: str, data: Any) -> type[Payload] | None:
    """The model a payload of ``event`` must fit (None: the event is not checked)."""
    action = data.get("action") if isinstance(data, dict) else None
    if isinstance(action, str) and (event, action) in ACTION_MODELS:
        return ACTION_MODELS[(event, action)]
    return MODELS.get(event)


# -- the check ------------------------------------------------------------------------------------

_EXPECTED = {
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dict_type": "an object",
    "list_type": "an array",
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "a boolean",
}


def json_type(value: Any) -> str:
    """The JSON type of a decoded value, with its article ("an object", "a string"…)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("issue", "labels", 0, "name")`` -> ``issue.labels[0].name``; ``()`` -> ``payload``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or "payload"


def describe(error: ErrorDetails) -> str:
    """One validation error as ``<field path> <what is wrong>``."""
    path = field_path(error["loc"])
    given = error.get("input")
    if error["type"] == "missing":
        return f"{path} missing"
    if given is None:
        return f"{path} is null"
    expected = _EXPECTED.get(error["type"])
    if expected is not None:
        return f"{path} should be {expected}, not {json_type(given)}"
    message = error["msg"]
    return f"{path}: {message[:1].lower()}{message[1:]}"


def problems(model: type[BaseModel], data: Any) -> list[str]:
    """What is wrong with ``data`` for ``model`` (empty when it fits)."""
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return [describe(error) for error in exc.errors(include_url=False)]
    return []


def malformed(event: str, data: Any) -> str | None:
    """``malformed payload: …`` when the payload does not fit its event's model, else None."""
    model = model_for(event, data)
    if model is None:
        return None
    found = problems(model, data)
    if not found:
        return None
    more = len(found) - MAX_PROBLEMS
    shown = "; ".join(found[:MAX_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
    return f"malformed payload: {shown}"


__all__ = ["ACTION_MODELS", "MODELS", "Omissible", "Payload", "describe", "field_path", "json_type", "malformed", "model_for", "problems"]
