"""Typed helpers for the REST operations patchwright calls, one call each.

Each function takes a gidgethub client (normally a :class:`bot.github.client.GitHubClient`
for the repository's installation) and ``repo`` as ``"owner/name"``. Paths and bodies follow
GitHub's REST description (``rest-openapi-subset.json``); parameters marked
``x-multi-segment`` there (branch, ref, path, basehead) keep their slashes, every other path
parameter is percent-encoded whole.

Results are GitHub's JSON as plain dicts/lists. Treat them as read-only: a GET answered 304
returns the very object held in the ETag cache.
"""

from __future__ import annotations

import http
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote, urlencode, urljoin

import gidgethub
import gidgethub.abc

from bot.github.client import GitHubClient

JSON = dict[str, Any]
PER_PAGE = 100

ReactionContent = Literal["+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"]
ReactionSubject = Literal["issue", "issue_comment", "review_comment"]


# -- URL building (pure) --------------------------------------------------------------------------


def split_repo(repo: str) -> tuple[str, str]:
    """``"owner/name"`` → ``("owner", "name")``."""
    owner, sep, name = repo.partition("/")
    if not sep or not owner or not name or "/" in name:
        raise ValueError(f"expected a repository as 'owner/name', got {repo!r}")
    return owner, name


def segment(value: str | int) -> str:
    """One path segment, slashes included, percent-encoded."""
    return quote(str(value), safe="")


def multi_segment(value: str) -> str:
    """A path parameter that may span segments (branch names, refs, file paths)."""
    if not value:
        raise ValueError("empty path parameter")
    return quote(value, safe="/")


def repo_path(repo: str) -> str:
    owner, name = split_repo(repo)
    return f"/repos/{segment(owner)}/{segment(name)}"


def with_query(path: str, **params: str | int | bool | None) -> str:
    """``path`` plus the non-None ``params`` as a query string."""
    items = {
        k: (str(v).lower() if isinstance(v, bool) else str(v))
        for k, v in params.items()
        if v is not None
    }
    return f"{path}?{urlencode(items)}" if items else path


def _drop_none(fields: Mapping[str, Any]) -> JSON:
    return {k: v for k, v in fields.items() if v is not None}


def _status_of(exc: gidgethub.HTTPException) -> int:
    return int(exc.status_code)


# -- App ---------------------------------------------------------------------------------------


async def get_app(gh: gidgethub.abc.GitHubAPI) -> JSON:
    """``GET /app`` — needs the App (JWT) client: slug, name, owner…"""
    return await gh.getitem("/app")


# -- repository ----------------------------------------------------------------------------------


async def get_repo(gh: gidgethub.abc.GitHubAPI, repo: str) -> JSON:
    return await gh.getitem(repo_path(repo))


async def get_branch(gh: gidgethub.abc.GitHubAPI, repo: str, branch: str) -> JSON | None:
    """The branch with its head commit; None when it does not exist."""
    try:
        return await gh.getitem(f"{repo_path(repo)}/branches/{multi_segment(branch)}")
    except gidgethub.BadRequest as exc:
        if _status_of(exc) == http.HTTPStatus.NOT_FOUND:
            return None
        raise


async def delete_branch(gh: gidgethub.abc.GitHubAPI, repo: str, branch: str) -> bool:
    """Delete ``refs/heads/<branch>``; False when it was already gone."""
    try:
        await gh.delete(f"{repo_path(repo)}/git/refs/heads/{multi_segment(branch)}")
    except gidgethub.BadRequest as exc:
        # GitHub answers 422 "Reference does not exist" (404 on some servers).
        if _status_of(exc) in (404, 422):
            return False
        raise
    return True


async def compare_commits(gh: gidgethub.abc.GitHubAPI, repo: str, base: str, head: str) -> JSON:
    """``base...head``: ``status`` (ahead/behind/diverged/identical), ``ahead_by``, commits."""
    return await gh.getitem(f"{repo_path(repo)}/compare/{multi_segment(f'{base}...{head}')}")


async def get_content(
    gh: gidgethub.abc.GitHubAPI, repo: str, path: str, *, ref: str | None = None
) -> Any:
    """``GET /repos/{o}/{r}/contents/{path}``: a file object (base64 ``content``) or a listing."""
    return await gh.getitem(
        with_query(f"{repo_path(repo)}/contents/{multi_segment(path)}", ref=ref)
    )


async def get_collaborator_permission(
    gh: gidgethub.abc.GitHubAPI, repo: str, username: str
) -> JSON:
    """``{"permission": …, "role_name": …, "user": …}``; raises ``BadRequest`` 404 for strangers."""
    return await gh.getitem(f"{repo_path(repo)}/collaborators/{segment(username)}/permission")


# -- issues and comments -------------------------------------------------------------------------


async def get_issue(gh: gidgethub.abc.GitHubAPI, repo: str, issue_number: int) -> JSON:
    return await gh.getitem(f"{repo_path(repo)}/issues/{segment(issue_number)}")


async def create_comment(
    gh: gidgethub.abc.GitHubAPI, repo: str, issue_number: int, body: str
) -> JSON:
    """Comment on an issue or pull request. Not idempotent: see :func:`find_comment`."""
    return await gh.post(
        f"{repo_path(repo)}/issues/{segment(issue_number)}/comments", data={"body": body}
    )


async def update_comment(
    gh: gidgethub.abc.GitHubAPI, repo: str, comment_id: int, body: str
) -> JSON:
    return await gh.patch(
        f"{repo_path(repo)}/issues/comments/{segment(comment_id)}", data={"body": body}
    )


def list_comments(
    gh: gidgethub.abc.GitHubAPI, repo: str, issue_number: int, *, since: str | None = None
) -> AsyncIterator[JSON]:
    """Every comment on the issue, oldest first, as an async iterator (pages of 100)."""
    url = with_query(
        f"{repo_path(repo)}/issues/{segment(issue_number)}/comments", since=since, per_page=PER_PAGE
    )
    return gh.getiter(url)


async def find_comment(
    gh: gidgethub.abc.GitHubAPI,
    repo: str,
    issue_number: int,
    marker: str,
    *,
    author: str | None = None,
) -> JSON | None:
    """The first comment whose body contains ``marker`` (and, if given, by ``author``)."""
    async for comment in list_comments(gh, repo, issue_number):
        if marker not in (comment.get("body") or ""):
            continue
        if author is not None and (comment.get("user") or {}).get("login") != author:
            continue
        return comment
    return None


async def add_reaction(
    gh: gidgethub.abc.GitHubAPI,
    repo: str,
    subject: ReactionSubject,
    subject_id: int,
    content: ReactionContent,
) -> JSON:
    """React to an issue/PR (``issue``: the number), an issue comment or a review comment.

    GitHub answers 200 with the existing reaction when it is already there.
    """
    base = repo_path(repo)
    paths = {
        "issue": f"{base}/issues/{segment(subject_id)}/reactions",
        "issue_comment": f"{base}/issues/comments/{segment(subject_id)}/reactions",
        "review_comment": f"{base}/pulls/comments/{segment(subject_id)}/reactions",
    }
    return await gh.post(paths[subject], data={"content": content})


# -- labels --------------------------------------------------------------------------------------


async def add_labels(
    gh: gidgethub.abc.GitHubAPI, repo: str, issue_number: int, labels: Iterable[str]
) -> list[JSON]:
    """Add labels (creating missing ones with default colours); returns the issue's labels."""
    names = list(labels)
    if not names:
        raise ValueError("add_labels needs at least one label")
    return await gh.post(
        f"{repo_path(repo)}/issues/{segment(issue_number)}/labels", data={"labels": names}
    )


async def remove_label(
    gh: gidgethub.abc.GitHubAPI, repo: str, issue_number: int, name: str
) -> bool:
    """Remove a label from the issue; False when it was not on it."""
    try:
        await gh.delete(f"{repo_path(repo)}/issues/{segment(issue_number)}/labels/{segment(name)}")
    except gidgethub.BadRequest as exc:
        if _status_of(exc) == http.HTTPStatus.NOT_FOUND:
            return False
        raise
    return True


async def create_label(
    gh: gidgethub.abc.GitHubAPI, repo: str, name: str, *, color: str, description: str | None = None
) -> JSON | None:
    """Create a repository label; None when a label of that name already exists."""
    try:
        return await gh.post(
            f"{repo_path(repo)}/labels",
            data=_drop_none({"name": name, "color": color.lstrip("#"), "description": description}),
        )
    except gidgethub.BadRequest as exc:
        if _status_of(exc) == http.HTTPStatus.UNPROCESSABLE_ENTITY and _already_exists(exc):
            return None
        raise


def _already_exists(exc: gidgethub.HTTPException) -> bool:
    errors = getattr(exc, "errors", None) or []
    return any(isinstance(e, Mapping) and e.get("code") == "already_exists" for e in errors)


# -- pull requests -------------------------------------------------------------------------------


async def get_pull(gh: gidgethub.abc.GitHubAPI, repo: str, pull_number: int) -> JSON:
    """The PR, including ``mergeable`` (None while GitHub computes it) and ``mergeable_state``."""
    return await gh.getitem(f"{repo_path(repo)}/pulls/{segment(pull_number)}")


async def create_pull(
    gh: gidgethub.abc.GitHubAPI,
    repo: str,
    *,
    title: str,
    head: str,
    base: str,
    body: str,
    draft: bool = False,
    maintainer_can_modify: bool | None = None,
) -> JSON:
    """Open a PR from ``head`` into ``base``. GitHub answers 422 if one is already open."""
    data = _drop_none(
        {
            "title": title,
            "head": head,
            "base": base,
            "body": body,
            "draft": draft,
            "maintainer_can_modify": maintainer_can_modify,
        }
    )
    return await gh.post(f"{repo_path(repo)}/pulls", data=data)


async def update_pull(
    gh: gidgethub.abc.GitHubAPI,
    repo: str,
    pull_number: int,
    *,
    title: str | None = None,
    body: str | None = None,
    state: Literal["open", "closed"] | None = None,
    base: str | None = None,
) -> JSON:
    data = _drop_none({"title": title, "body": body, "state": state, "base": base})
    if not data:
        raise ValueError("update_pull needs at least one field to change")
    return await gh.patch(f"{repo_path(repo)}/pulls/{segment(pull_number)}", data=data)


async def list_pulls(
    gh: gidgethub.abc.GitHubAPI,
    repo: str,
    *,
    head: str | None = None,
    base: str | None = None,
    state: Literal["open", "closed", "all"] = "open",
) -> list[JSON]:
    """PRs filtered by ``head`` (a branch of ``repo``, or ``"owner:branch"``), base and state."""
    if head is not None and ":" not in head:
        head = f"{split_repo(repo)[0]}:{head}"
    url = with_query(
        f"{repo_path(repo)}/pulls", state=state, head=head, base=base, per_page=PER_PAGE
    )
    return [pull async for pull in gh.getiter(url)]


async def list_review_comments_for_review(
    gh: gidgethub.abc.GitHubAPI, repo: str, pull_number: int, review_id: int
) -> list[JSON]:
    """The inline comments of one review (path, line, diff_hunk, body…)."""
    url = with_query(
        f"{repo_path(repo)}/pulls/{segment(pull_number)}/reviews/{segment(review_id)}/comments",
        per_page=PER_PAGE,
    )
    return [comment async for comment in gh.getiter(url)]


async def reply_to_review_comment(
    gh: gidgethub.abc.GitHubAPI, repo: str, pull_number: int, comment_id: int, body: str
) -> JSON:
    """Reply in the thread of a top-level review comment."""
    return await gh.post(
        f"{repo_path(repo)}/pulls/{segment(pull_number)}/comments/{segment(comment_id)}/replies",
        data={"body": body},
    )


# -- checks, statuses, Actions ------------------------------------------------------------------


async def create_check_run(
    gh: gidgethub.abc.GitHubAPI,
    repo: str,
    *,
    name: str,
    head_sha: str,
    status: Literal["queued", "in_progress", "completed"] | None = "in_progress",
    conclusion: str | None = None,
    external_id: str | None = None,
    details_url: str | None = None,
    started_at: str | None = None,
    completed_at: str | None = None,
    output: Mapping[str, Any] | None = None,
    actions: Sequence[Mapping[str, str]] | None = None,
) -> JSON:
    """Create a check run. ``actions`` are buttons: ``{"label", "description", "identifier"}``."""
    data = _drop_none(
        {
            "name": name,
            "head_sha": head_sha,
            "status": status,
            "conclusion": conclusion,
            "external_id": external_id,
            "details_url": details_url,
            "started_at": started_at,
            "completed_at": completed_at,
            "output": dict(output) if output is not None else None,
            "actions": [dict(a) for a in actions] if actions is not None else None,
        }
    )
    return await gh.post(f"{repo_path(repo)}/check-runs", data=data)


async def update_check_run(
    gh: gidgethub.abc.GitHubAPI,
    repo: str,
    check_run_id: int,
    *,
    status: Literal["queued", "in_progress", "completed"] | None = None,
    conclusion: str | None = None,
    completed_at: str | None = None,
    details_url: str | None = None,
    output: Mapping[str, Any] | None = None,
    actions: Sequence[Mapping[str, str]] | None = None,
) -> JSON:
    data = _drop_none(
        {
            "status": status,
            "conclusion": conclusion,
            "completed_at": completed_at,
            "details_url": details_url,
            "output": dict(output) if output is not None else None,
            "actions": [dict(a) for a in actions] if actions is not None else None,
        }
    )
    return await gh.patch(f"{repo_path(repo)}/check-runs/{segment(check_run_id)}", data=data)


async def list_check_runs_for_ref(
    gh: gidgethub.abc.GitHubAPI,
    repo: str,
    ref: str,
    *,
    check_name: str | None = None,
    status: Literal["queued", "in_progress", "completed"] | None = None,
    filter: Literal["latest", "all"] = "latest",
) -> list[JSON]:
    """Check runs on a commit SHA (or branch/tag ref); latest run per name by default."""
    url = with_query(
        f"{repo_path(repo)}/commits/{multi_segment(ref)}/check-runs",
        check_name=check_name,
        status=status,
        filter=filter,
        per_page=PER_PAGE,
    )
    return [run async for run in gh.getiter(url, iterable_key="check_runs")]


async def get_combined_status(gh: gidgethub.abc.GitHubAPI, repo: str, ref: str) -> JSON:
    """Commit statuses (the pre-checks API) of a ref: ``state`` and up to 100 ``statuses``."""
    return await gh.getitem(
        with_query(f"{repo_path(repo)}/commits/{multi_segment(ref)}/status", per_page=PER_PAGE)
    )


async def list_jobs_for_run(
    gh: gidgethub.abc.GitHubAPI,
    repo: str,
    run_id: int,
    *,
    filter: Literal["latest", "all"] = "latest",
) -> list[JSON]:
    """The jobs of a workflow run, with their steps and conclusions."""
    url = with_query(
        f"{repo_path(repo)}/actions/runs/{segment(run_id)}/jobs", filter=filter, per_page=PER_PAGE
    )
    return [job async for job in gh.getiter(url, iterable_key="jobs")]


async def get_job(gh: gidgethub.abc.GitHubAPI, repo: str, job_id: int) -> JSON:
    return await gh.getitem(f"{repo_path(repo)}/actions/jobs/{segment(job_id)}")


async def download_job_log(gh: GitHubClient, repo: str, job_id: int) -> str:
    """A job's plain-text log.

    GitHub answers ``302`` with a short-lived signed URL on another host. The redirect is
    followed explicitly with :meth:`GitHubClient.fetch_external`, which sends no
    ``Authorization`` header. A server that returns the log directly (200) works too.
    """
    url = f"{repo_path(repo)}/actions/jobs/{segment(job_id)}/logs"
    try:
        direct = await gh.getitem(url)
    except gidgethub.RedirectionException as exc:
        location = exc.headers.get("location")
        if not location:
            raise
        content = await gh.fetch_external(urljoin(f"{gh.base_url}{url}", location))
        return content.decode("utf-8", errors="replace")
    if isinstance(direct, str):
        return direct
    if direct is None:
        return ""
    raise ValueError(f"unexpected job log response of type {type(direct).__name__}")
