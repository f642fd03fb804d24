"""REST representations of the emulator's state, shaped like GitHub's (pure functions of state)."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

from .state import (
    Account,
    App,
    CheckRun,
    CheckSuite,
    CommitStatus,
    Installation,
    Issue,
    IssueComment,
    Label,
    Reaction,
    Repo,
    Review,
    ReviewComment,
    Workflow,
    WorkflowJob,
    WorkflowRun,
)

REACTION_CONTENTS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "eyes", "rocket")
ROLE_TO_PERMISSION = MappingProxyType(
    {
        "admin": "admin",
        "maintain": "write",
        "write": "write",
        "triage": "read",
        "read": "read",
        "none": "none",
    }
)
_REPO_URL_SUFFIXES = (
    ("archive_url", "/{archive_format}{/ref}"),
    ("assignees_url", "/assignees{/user}"),
    ("blobs_url", "/git/blobs{/sha}"),
    ("branches_url", "/branches{/branch}"),
    ("collaborators_url", "/collaborators{/collaborator}"),
    ("comments_url", "/comments{/number}"),
    ("commits_url", "/commits{/sha}"),
    ("compare_url", "/compare/{base}...{head}"),
    ("contents_url", "/contents/{+path}"),
    ("contributors_url", "/contributors"),
    ("deployments_url", "/deployments"),
    ("downloads_url", "/downloads"),
    ("events_url", "/events"),
    ("forks_url", "/forks"),
    ("git_commits_url", "/git/commits{/sha}"),
    ("git_refs_url", "/git/refs{/sha}"),
    ("git_tags_url", "/git/tags{/sha}"),
    ("hooks_url", "/hooks"),
    ("issue_comment_url", "/issues/comments{/number}"),
    ("issue_events_url", "/issues/events{/number}"),
    ("issues_url", "/issues{/number}"),
    ("keys_url", "/keys{/key_id}"),
    ("labels_url", "/labels{/name}"),
    ("languages_url", "/languages"),
    ("merges_url", "/merges"),
    ("milestones_url", "/milestones{/number}"),
    ("notifications_url", "/notifications{?since,all,participating}"),
    ("pulls_url", "/pulls{/number}"),
    ("releases_url", "/releases{/id}"),
    ("stargazers_url", "/stargazers"),
    ("statuses_url", "/statuses/{sha}"),
    ("subscribers_url", "/subscribers"),
    ("subscription_url", "/subscription"),
    ("tags_url", "/tags"),
    ("teams_url", "/teams"),
    ("trees_url", "/git/trees{/sha}"),
)

# The keys of ``check_run.check_suite`` in check_run webhooks (a subset of the check_suite event's).
_CHECK_RUN_SUITE_KEYS = (
    "id",
    "node_id",
    "head_branch",
    "head_sha",
    "status",
    "conclusion",
    "url",
    "before",
    "after",
    "pull_requests",
    "app",
    "created_at",
    "updated_at",
)


def iso(timestamp: float | None) -> str | None:
    """GitHub's timestamp format (UTC, seconds, ``Z``)."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_datetime(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> float | None:
    """Epoch seconds from an ISO 8601 string (or a number); None when absent or unreadable."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def node_id(kind: str, number: int) -> str:
    """An opaque global node id like GitHub's (base64 of a kind and a number)."""
    return base64.b64encode(f"0:{kind}{number}".encode()).decode().rstrip("=")


def author_association(repo: Repo, account: Account) -> str:
    if account.login.lower() == repo.owner.login.lower():
        return "OWNER"
    level = repo.collaborators.get(account.login.lower(), "none")
    if level != "none":
        return "COLLABORATOR"
    return "NONE"


class Shapes:
    """Builds GitHub REST objects; ``base_url`` serves both the API and the "html" pages."""

    def __init__(self, base_url: str, apps: Mapping[int, App]) -> None:
        self.api = base_url.rstrip("/")
        self.html = self.api
        self.apps = apps

    # -- accounts and apps ---------------------------------------------------------------
    def user(self, account: Account) -> dict[str, Any]:
        url = f"{self.api}/users/{account.login}"
        html = (
            f"{self.html}/apps/{account.login.removesuffix('[bot]')}"
            if account.type == "Bot"
            else f"{self.html}/{account.login}"
        )
        return {
            "login": account.login,
            "id": account.id,
            "node_id": node_id("U", account.id),
            "avatar_url": f"{self.html}/avatars/u/{account.id}?v=4",
            "gravatar_id": "",
            "url": url,
            "html_url": html,
            "followers_url": f"{url}/followers",
            "following_url": f"{url}/following{{/other_user}}",
            "gists_url": f"{url}/gists{{/gist_id}}",
            "starred_url": f"{url}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{url}/subscriptions",
            "organizations_url": f"{url}/orgs",
            "repos_url": f"{url}/repos",
            "events_url": f"{url}/events{{/privacy}}",
            "received_events_url": f"{url}/received_events",
            "type": account.type,
            "user_view_type": "public",
            "site_admin": account.site_admin,
        }

    def user_or_none(self, account: Account | None) -> dict[str, Any] | None:
        return None if account is None else self.user(account)

    def organization(self, account: Account) -> dict[str, Any]:
        url = f"{self.api}/orgs/{account.login}"
        return {
            "login": account.login,
            "id": account.id,
            "node_id": node_id("O", account.id),
            "url": url,
            "repos_url": f"{url}/repos",
            "events_url": f"{url}/events",
            "hooks_url": f"{url}/hooks",
            "issues_url": f"{url}/issues",
            "members_url": f"{url}/members{{/member}}",
            "public_members_url": f"{url}/public_members{{/member}}",
            "avatar_url": f"{self.html}/avatars/u/{account.id}?v=4",
            "description": None,
        }

    def integration(self, app: App) -> dict[str, Any]:
        return {
            "id": app.id,
            "slug": app.slug,
            "node_id": node_id("A", app.id),
            "client_id": app.client_id,
            "owner": self.user(app.owner),
            "name": app.name,
            "description": app.description,
            "external_url": f"{self.html}/apps/{app.slug}",
            "html_url": f"{self.html}/apps/{app.slug}",
            "created_at": iso(app.created_at),
            "updated_at": iso(app.created_at),
            "permissions": dict(app.permissions),
            "events": list(app.events),
        }

    def app_by_id(self, app_id: int | None) -> dict[str, Any] | None:
        if app_id is None or app_id not in self.apps:
            return None
        return self.integration(self.apps[app_id])

    def installation(self, installation: Installation, app: App) -> dict[str, Any]:
        account = self.user(installation.account)
        # GitHub's description types the account of listed installations as allOf(simple-user,
        # enterprise); the enterprise keys are harmless extras elsewhere.
        account.update(
            {
                "name": installation.account.name or installation.account.login,
                "slug": installation.account.login.lower(),
                "created_at": iso(installation.created_at),
                "updated_at": iso(installation.created_at),
            }
        )
        return {
            "id": installation.id,
            "client_id": app.client_id,
            "account": account,
            "repository_selection": installation.repository_selection,
            "access_tokens_url": f"{self.api}/app/installations/{installation.id}/access_tokens",
            "repositories_url": f"{self.api}/installation/repositories",
            "html_url": f"{self.html}/settings/installations/{installation.id}",
            "app_id": app.id,
            "app_slug": app.slug,
            "target_id": installation.account.id,
            "target_type": installation.account.type,
            "permissions": dict(app.permissions),
            "events": list(app.events),
            "created_at": iso(installation.created_at),
            "updated_at": iso(installation.updated_at),
            "single_file_name": None,
            "has_multiple_single_files": False,
            "single_file_paths": [],
            "suspended_by": None,
            "suspended_at": None,
        }

    # -- repositories ----------------------------------------------------------------------
    def repository(self, repo: Repo, *, full: bool = False) -> dict[str, Any]:
        url = f"{self.api}/repos/{repo.full_name}"
        html = f"{self.html}/{repo.full_name}"
        open_issues = sum(1 for issue in repo.issues.values() if issue.state == "open")
        data: dict[str, Any] = {
            "id": repo.id,
            "node_id": node_id("R", repo.id),
            "name": repo.name,
            "full_name": repo.full_name,
            "private": repo.private,
            "owner": self.user(repo.owner),
            "html_url": html,
            "description": repo.description,
            "fork": False,
            "url": url,
        }
        for key, suffix in _REPO_URL_SUFFIXES:
            data[key] = url + suffix
        data.update(
            {
                "created_at": iso(repo.created_at),
                "updated_at": iso(repo.updated_at),
                "pushed_at": iso(repo.pushed_at),
                "git_url": f"{html}.git",
                "ssh_url": f"{html}.git",
                "clone_url": f"{html}.git",
                "svn_url": html,
                "homepage": None,
                "mirror_url": None,
                "size": 0,
                "stargazers_count": 0,
                "watchers_count": 0,
                "language": None,
                "has_issues": True,
                "has_projects": False,
                "has_downloads": True,
                "has_wiki": False,
                "has_pages": False,
                "has_discussions": False,
                "forks_count": 0,
                "archived": False,
                "disabled": False,
                "open_issues_count": open_issues,
                "license": None,
                "allow_forking": True,
                "is_template": False,
                "web_commit_signoff_required": False,
                "topics": [],
                "visibility": "private" if repo.private else "public",
                "forks": 0,
                "open_issues": open_issues,
                "watchers": 0,
                "default_branch": repo.default_branch,
                "custom_properties": {},
                "allow_squash_merge": True,
                "allow_merge_commit": True,
                "allow_rebase_merge": True,
                "allow_auto_merge": False,
                "delete_branch_on_merge": False,
                "allow_update_branch": False,
            }
        )
        if full:
            data["subscribers_count"] = 0
            data["network_count"] = 0
            data["temp_clone_token"] = None
            if repo.owner.type == "Organization":
                data["organization"] = self.user(repo.owner)
        return data

    def minimal_repository(self, repo: Repo) -> dict[str, Any]:
        return self.repository(repo)

    def webhook_repository(self, repo: Repo) -> dict[str, Any]:
        """The repository object of webhook payloads other than ``push`` (the organization is
        the payload's top-level ``organization``, not a key of the repository)."""
        return self.repository(repo)

    def push_repository(self, repo: Repo) -> dict[str, Any]:
        """The repository of ``push`` payloads: GitHub's legacy push shape, with epoch-second
        ``created_at``/``pushed_at``, ``stargazers``, ``master_branch`` and the organization's
        login as ``organization`` (GitHub's push schema; no other event has these)."""
        data = self.webhook_repository(repo)
        data["created_at"] = int(repo.created_at)
        data["pushed_at"] = int(repo.pushed_at)
        data["stargazers"] = 0
        data["master_branch"] = repo.default_branch
        if repo.owner.type == "Organization":
            data["organization"] = repo.owner.login
        return data

    def lite_repository(self, repo: Repo) -> dict[str, Any]:
        """The short repository of workflow runs (REST and webhooks alike): identity, owner and
        the API URLs, no counts, dates or settings."""
        url = f"{self.api}/repos/{repo.full_name}"
        data: dict[str, Any] = {
            "id": repo.id,
            "node_id": node_id("R", repo.id),
            "name": repo.name,
            "full_name": repo.full_name,
            "private": repo.private,
            "owner": self.user(repo.owner),
            "html_url": f"{self.html}/{repo.full_name}",
            "description": repo.description,
            "fork": False,
            "url": url,
        }
        for key, suffix in _REPO_URL_SUFFIXES:
            data[key] = url + suffix
        return data

    def label(self, repo: Repo, label: Label) -> dict[str, Any]:
        return {
            "id": label.id,
            "node_id": node_id("LA", label.id),
            "url": f"{self.api}/repos/{repo.full_name}/labels/{label.name}",
            "name": label.name,
            "color": label.color,
            "default": label.default,
            "description": label.description,
        }

    def labels_of(self, repo: Repo, names: Iterable[str]) -> list[dict[str, Any]]:
        return [self.label(repo, repo.labels[name.lower()]) for name in names]

    def reactions_rollup(self, url: str, reactions: list[Reaction]) -> dict[str, Any]:
        counts = {content: 0 for content in REACTION_CONTENTS}
        for reaction in reactions:
            counts[reaction.content] += 1
        return {"url": url, "total_count": len(reactions), **counts}

    def reaction(self, reaction: Reaction) -> dict[str, Any]:
        return {
            "id": reaction.id,
            "node_id": node_id("REA", reaction.id),
            "user": self.user(reaction.user),
            "content": reaction.content,
            "created_at": iso(reaction.created_at),
        }

    # -- issues --------------------------------------------------------------------------
    def issue(self, repo: Repo, issue: Issue) -> dict[str, Any]:
        repo_url = f"{self.api}/repos/{repo.full_name}"
        url = f"{repo_url}/issues/{issue.number}"
        kind = "pull" if issue.pull is not None else "issues"
        data: dict[str, Any] = {
            "url": url,
            "repository_url": repo_url,
            "labels_url": f"{url}/labels{{/name}}",
            "comments_url": f"{url}/comments",
            "events_url": f"{url}/events",
            "html_url": f"{self.html}/{repo.full_name}/{kind}/{issue.number}",
            "id": issue.id,
            "node_id": node_id("I", issue.id),
            "number": issue.number,
            "title": issue.title,
            "user": self.user(issue.user),
            "labels": self.labels_of(repo, issue.labels),
            "state": issue.state,
            "locked": issue.locked,
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "comments": len(issue.comment_ids),
            "created_at": iso(issue.created_at),
            "updated_at": iso(issue.updated_at),
            "closed_at": iso(issue.closed_at),
            "closed_by": self.user_or_none(issue.closed_by),
            "author_association": author_association(repo, issue.user),
            "active_lock_reason": None,
            "body": issue.body,
            "reactions": self.reactions_rollup(f"{url}/reactions", issue.reactions),
            "timeline_url": f"{url}/timeline",
            "performed_via_github_app": self.app_by_id(issue.app_id),
            "state_reason": issue.state_reason,
            "sub_issues_summary": {"total": 0, "completed": 0, "percent_completed": 0},
            "draft": False,
        }
        if issue.pull is not None:
            pulls = f"{repo_url}/pulls/{issue.number}"
            data["draft"] = issue.pull.draft
            data["pull_request"] = {
                "url": pulls,
                "html_url": f"{self.html}/{repo.full_name}/pull/{issue.number}",
                "diff_url": f"{self.html}/{repo.full_name}/pull/{issue.number}.diff",
                "patch_url": f"{self.html}/{repo.full_name}/pull/{issue.number}.patch",
                "merged_at": iso(issue.pull.merged_at),
            }
        return data

    def webhook_issue(self, repo: Repo, issue: Issue) -> dict[str, Any]:
        """The issue of ``issues`` and ``issue_comment`` payloads: no ``closed_by`` (REST only)."""
        data = self.issue(repo, issue)
        del data["closed_by"]
        return data

    def issue_comment(self, repo: Repo, comment: IssueComment) -> dict[str, Any]:
        repo_url = f"{self.api}/repos/{repo.full_name}"
        url = f"{repo_url}/issues/comments/{comment.id}"
        issue = repo.issues[comment.issue_number]
        kind = "pull" if issue.pull is not None else "issues"
        return {
            "url": url,
            "html_url": (
                f"{self.html}/{repo.full_name}/{kind}/{comment.issue_number}" f"#issuecomment-{comment.id}"
            ),
            "issue_url": f"{repo_url}/issues/{comment.issue_number}",
            "id": comment.id,
            "node_id": node_id("IC", comment.id),
            "user": self.user(comment.user),
            "created_at": iso(comment.created_at),
            "updated_at": iso(comment.updated_at),
            "author_association": author_association(repo, comment.user),
            "body": comment.body,
            "reactions": self.reactions_rollup(f"{url}/reactions", comment.reactions),
            "performed_via_github_app": self.app_by_id(comment.app_id),
        }

    # -- pull requests ---------------------------------------------------------------------
    def _pull_links(self, repo: Repo, issue: Issue) -> dict[str, Any]:
        assert issue.pull is not None
        repo_url = f"{self.api}/repos/{repo.full_name}"
        pulls = f"{repo_url}/pulls/{issue.number}"
        return {
            "self": {"href": pulls},
            "html": {"href": f"{self.html}/{repo.full_name}/pull/{issue.number}"},
            "issue": {"href": f"{repo_url}/issues/{issue.number}"},
            "comments": {"href": f"{repo_url}/issues/{issue.number}/comments"},
            "review_comments": {"href": f"{pulls}/comments"},
            "review_comment": {"href": f"{repo_url}/pulls/comments{{/number}}"},
            "commits": {"href": f"{pulls}/commits"},
            "statuses": {"href": f"{repo_url}/statuses/{issue.pull.head_sha}"},
        }

    def pull_request(self, repo: Repo, issue: Issue, *, simple: bool = False) -> dict[str, Any]:
        pull = issue.pull
        assert pull is not None
        repo_url = f"{self.api}/repos/{repo.full_name}"
        url = f"{repo_url}/pulls/{issue.number}"
        html = f"{self.html}/{repo.full_name}/pull/{issue.number}"
        repository = self.repository(repo)
        owner = self.user(repo.owner)
        data: dict[str, Any] = {
            "url": url,
            "id": pull.id,
            "node_id": node_id("PR", pull.id),
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": f"{repo_url}/issues/{issue.number}",
            "number": issue.number,
            "state": issue.state,
            "locked": issue.locked,
            "title": issue.title,
            "user": self.user(issue.user),
            "body": issue.body,
            "created_at": iso(issue.created_at),
            "updated_at": iso(issue.updated_at),
            "closed_at": iso(issue.closed_at),
            "merged_at": iso(pull.merged_at),
            "merge_commit_sha": pull.merge_commit_sha,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "labels": self.labels_of(repo, issue.labels),
            "milestone": None,
            "draft": pull.draft,
            "commits_url": f"{url}/commits",
            "review_comments_url": f"{url}/comments",
            "review_comment_url": f"{repo_url}/pulls/comments{{/number}}",
            "comments_url": f"{repo_url}/issues/{issue.number}/comments",
            "statuses_url": f"{repo_url}/statuses/{pull.head_sha}",
            "head": {
                "label": f"{repo.owner.login}:{pull.head_ref}",
                "ref": pull.head_ref,
                "sha": pull.head_sha,
                "user": owner,
                "repo": repository,
            },
            "base": {
                "label": f"{repo.owner.login}:{pull.base_ref}",
                "ref": pull.base_ref,
                "sha": pull.base_sha,
                "user": owner,
                "repo": repository,
            },
            "_links": self._pull_links(repo, issue),
            "author_association": author_association(repo, issue.user),
            "auto_merge": None,
            "active_lock_reason": None,
        }
        if not simple:
            data.update(
                {
                    "merged": pull.merged,
                    "mergeable": pull.mergeable,
                    "rebaseable": pull.mergeable,
                    "mergeable_state": pull.mergeable_state,
                    "merged_by": self.user_or_none(pull.merged_by),
                    "comments": len(issue.comment_ids),
                    "review_comments": sum(
                        1 for c in repo.review_comments.values() if c.pull_number == issue.number
                    ),
                    "maintainer_can_modify": pull.maintainer_can_modify,
                    "commits": pull.commits,
                    "additions": pull.additions,
                    "deletions": pull.deletions,
                    "changed_files": pull.changed_files,
                }
            )
        return data

    def pull_request_minimal(self, repo: Repo, issue: Issue) -> dict[str, Any]:
        pull = issue.pull
        assert pull is not None
        ref_repo = {"id": repo.id, "url": f"{self.api}/repos/{repo.full_name}", "name": repo.name}
        return {
            "url": f"{self.api}/repos/{repo.full_name}/pulls/{issue.number}",
            "id": pull.id,
            "number": issue.number,
            "head": {"ref": pull.head_ref, "sha": pull.head_sha, "repo": ref_repo},
            "base": {"ref": pull.base_ref, "sha": pull.base_sha, "repo": ref_repo},
        }

    def review(self, repo: Repo, review: Review) -> dict[str, Any]:
        pulls = f"{self.api}/repos/{repo.full_name}/pulls/{review.pull_number}"
        html = f"{self.html}/{repo.full_name}/pull/{review.pull_number}#pullrequestreview-{review.id}"
        return {
            "id": review.id,
            "node_id": node_id("PRR", review.id),
            "user": self.user(review.user),
            "body": review.body,
            "state": review.state,
            "html_url": html,
            "pull_request_url": pulls,
            "author_association": author_association(repo, review.user),
            "_links": {"html": {"href": html}, "pull_request": {"href": pulls}},
            "submitted_at": iso(review.submitted_at),
            "commit_id": review.commit_id,
        }

    def webhook_review(self, repo: Repo, review: Review) -> dict[str, Any]:
        """Webhook payloads spell review states in lower case (``changes_requested``)."""
        data = self.review(repo, review)
        data["state"] = review.state.lower()
        return data

    def review_comment(self, repo: Repo, comment: ReviewComment) -> dict[str, Any]:
        repo_url = f"{self.api}/repos/{repo.full_name}"
        url = f"{repo_url}/pulls/comments/{comment.id}"
        pulls = f"{repo_url}/pulls/{comment.pull_number}"
        html = f"{self.html}/{repo.full_name}/pull/{comment.pull_number}#discussion_r{comment.id}"
        data: dict[str, Any] = {
            "url": url,
            "pull_request_review_id": comment.review_id,
            "id": comment.id,
            "node_id": node_id("PRRC", comment.id),
            "diff_hunk": comment.diff_hunk,
            "path": comment.path,
            "position": comment.line,
            "original_position": comment.line or 1,
            "commit_id": comment.commit_id,
            "original_commit_id": comment.original_commit_id,
            "user": self.user(comment.user),
            "body": comment.body,
            "created_at": iso(comment.created_at),
            "updated_at": iso(comment.updated_at),
            "html_url": html,
            "pull_request_url": pulls,
            "author_association": author_association(repo, comment.user),
            "_links": {"self": {"href": url}, "html": {"href": html}, "pull_request": {"href": pulls}},
            "reactions": self.reactions_rollup(f"{url}/reactions", comment.reactions),
            "start_line": comment.start_line,
            "original_start_line": comment.start_line,
            "start_side": "RIGHT" if comment.start_line is not None else None,
            "line": comment.line or 1,
            "original_line": comment.line or 1,
            "side": comment.side,
            "subject_type": "line" if comment.line is not None else "file",
            "performed_via_github_app": self.app_by_id(comment.app_id),
        }
        if comment.in_reply_to_id is not None:
            data["in_reply_to_id"] = comment.in_reply_to_id
        return data

    def webhook_review_comment(self, repo: Repo, comment: ReviewComment) -> dict[str, Any]:
        """The comment of ``pull_request_review_comment`` payloads: no ``performed_via_github_app``
        (GitHub's webhook schema has none)."""
        data = self.review_comment(repo, comment)
        del data["performed_via_github_app"]
        return data

    # -- checks ----------------------------------------------------------------------------
    def _open_pulls_for_sha(self, repo: Repo, sha: str) -> list[dict[str, Any]]:
        return [
            self.pull_request_minimal(repo, issue)
            for issue in repo.issues.values()
            if issue.pull is not None and issue.state == "open" and issue.pull.head_sha == sha
        ]

    def check_run(self, repo: Repo, run: CheckRun) -> dict[str, Any]:
        url = f"{self.api}/repos/{repo.full_name}/check-runs/{run.id}"
        html = f"{self.html}/{repo.full_name}/runs/{run.id}"
        job = repo.jobs.get(run.id)
        if job is not None:
            html = f"{self.html}/{repo.full_name}/actions/runs/{job.run_id}/job/{job.id}"
        return {
            "id": run.id,
            "name": run.name,
            "node_id": node_id("CR", run.id),
            "head_sha": run.head_sha,
            "external_id": run.external_id,
            "url": url,
            "html_url": html,
            "details_url": run.details_url if run.details_url is not None else html,
            "status": run.status,
            "conclusion": run.conclusion,
            "started_at": iso(run.started_at),
            "completed_at": iso(run.completed_at),
            "output": {
                "title": run.output.get("title"),
                "summary": run.output.get("summary"),
                "text": run.output.get("text"),
                "annotations_count": len(run.annotations),
                "annotations_url": f"{url}/annotations",
            },
            "check_suite": {"id": run.suite_id},
            "app": self.app_by_id(run.app_id),
            "pull_requests": self._open_pulls_for_sha(repo, run.head_sha),
        }

    def webhook_check_run(self, repo: Repo, run: CheckRun) -> dict[str, Any]:
        """The check run of ``check_run`` payloads: its suite is the short one of GitHub's
        webhook (no ``check_runs_url``, counts or ``rerequestable``)."""
        data = self.check_run(repo, run)
        suite = self.webhook_check_suite(repo, repo.check_suites[run.suite_id])
        data["check_suite"] = {key: suite[key] for key in _CHECK_RUN_SUITE_KEYS}
        return data

    def check_suite(self, repo: Repo, suite: CheckSuite, head_commit: dict[str, Any]) -> dict[str, Any]:
        data = self.webhook_check_suite(repo, suite)
        data["repository"] = self.minimal_repository(repo)
        data["head_commit"] = head_commit
        data["rerequestable"] = True
        data["runs_rerequestable"] = True
        return data

    def webhook_check_suite(self, repo: Repo, suite: CheckSuite) -> dict[str, Any]:
        url = f"{self.api}/repos/{repo.full_name}/check-suites/{suite.id}"
        runs = [run for run in repo.check_runs.values() if run.suite_id == suite.id]
        return {
            "id": suite.id,
            "node_id": node_id("CS", suite.id),
            "head_branch": suite.head_branch,
            "head_sha": suite.head_sha,
            "status": suite.status,
            "conclusion": suite.conclusion,
            "url": url,
            "before": suite.before,
            "after": suite.after,
            "pull_requests": self._open_pulls_for_sha(repo, suite.head_sha),
            "app": self.app_by_id(suite.app_id),
            "created_at": iso(suite.created_at),
            "updated_at": iso(suite.updated_at),
            "latest_check_runs_count": len(runs),
            "check_runs_url": f"{url}/check-runs",
            "rerequestable": True,
            "runs_rerequestable": True,
        }

    def annotation(self, repo: Repo, run: CheckRun, annotation: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "path": annotation["path"],
            "start_line": annotation["start_line"],
            "end_line": annotation["end_line"],
            "start_column": annotation.get("start_column"),
            "end_column": annotation.get("end_column"),
            "annotation_level": annotation.get("annotation_level"),
            "title": annotation.get("title"),
            "message": annotation.get("message"),
            "raw_details": annotation.get("raw_details"),
            "blob_href": f"{self.html}/{repo.full_name}/blob/{run.head_sha}/{annotation['path']}",
        }

    def status(self, repo: Repo, status: CommitStatus) -> dict[str, Any]:
        return {
            "url": f"{self.api}/repos/{repo.full_name}/statuses/{status.sha}",
            "avatar_url": f"{self.html}/avatars/u/{status.creator.id}?v=4",
            "id": status.id,
            "node_id": node_id("SC", status.id),
            "state": status.state,
            "description": status.description,
            "target_url": status.target_url,
            "context": status.context,
            "created_at": iso(status.created_at),
            "updated_at": iso(status.updated_at),
            "creator": self.user(status.creator),
        }

    def simple_status(self, repo: Repo, status: CommitStatus) -> dict[str, Any]:
        data = self.status(repo, status)
        del data["creator"]
        data["required"] = False
        return data

    # -- actions ---------------------------------------------------------------------------
    def workflow(self, repo: Repo, workflow: Workflow) -> dict[str, Any]:
        url = f"{self.api}/repos/{repo.full_name}/actions/workflows/{workflow.id}"
        return {
            "id": workflow.id,
            "node_id": node_id("W", workflow.id),
            "name": workflow.name,
            "path": workflow.path,
            "state": "active",
            "created_at": iso(workflow.created_at),
            "updated_at": iso(workflow.created_at),
            "url": url,
            "html_url": f"{self.html}/{repo.full_name}/blob/{repo.default_branch}/{workflow.path}",
            "badge_url": f"{self.html}/{repo.full_name}/workflows/{workflow.name}/badge.svg",
        }

    def workflow_run(
        self, repo: Repo, run: WorkflowRun, head_commit: dict[str, Any] | None
    ) -> dict[str, Any]:
        repo_url = f"{self.api}/repos/{repo.full_name}"
        url = f"{repo_url}/actions/runs/{run.id}"
        workflow = repo.workflows[run.workflow_id]
        pulls = [
            self.pull_request_minimal(repo, repo.issues[number])
            for number in run.pull_numbers
            if number in repo.issues
        ]
        return {
            "id": run.id,
            "name": run.name,
            "node_id": node_id("WFR", run.id),
            "head_branch": run.head_branch,
            "head_sha": run.head_sha,
            "path": workflow.path,
            "display_title": run.display_title,
            "run_number": run.run_number,
            "event": run.event,
            "status": run.status,
            "conclusion": run.conclusion,
            "workflow_id": run.workflow_id,
            "check_suite_id": run.check_suite_id,
            "check_suite_node_id": node_id("CS", run.check_suite_id),
            "url": url,
            "html_url": f"{self.html}/{repo.full_name}/actions/runs/{run.id}",
            "pull_requests": pulls,
            "created_at": iso(run.created_at),
            "updated_at": iso(run.updated_at),
            "actor": self.user(run.actor),
            "triggering_actor": self.user(run.actor),
            "run_attempt": 1,
            "referenced_workflows": [],
            "run_started_at": iso(run.run_started_at or run.created_at),
            "jobs_url": f"{url}/jobs",
            "logs_url": f"{url}/logs",
            "check_suite_url": f"{repo_url}/check-suites/{run.check_suite_id}",
            "artifacts_url": f"{url}/artifacts",
            "cancel_url": f"{url}/cancel",
            "rerun_url": f"{url}/rerun",
            "previous_attempt_url": None,
            "workflow_url": f"{repo_url}/actions/workflows/{run.workflow_id}",
            "head_commit": head_commit,
            "repository": self.lite_repository(repo),
            "head_repository": self.lite_repository(repo),
        }

    def job(self, repo: Repo, job: WorkflowJob) -> dict[str, Any]:
        repo_url = f"{self.api}/repos/{repo.full_name}"
        run = repo.workflow_runs[job.run_id]
        return {
            "id": job.id,
            "run_id": job.run_id,
            "workflow_name": run.name,
            "head_branch": job.head_branch,
            "run_url": f"{repo_url}/actions/runs/{job.run_id}",
            "run_attempt": 1,
            "node_id": node_id("CR", job.id),
            "head_sha": job.head_sha,
            "url": f"{repo_url}/actions/jobs/{job.id}",
            "html_url": f"{self.html}/{repo.full_name}/actions/runs/{job.run_id}/job/{job.id}",
            "status": job.status,
            "conclusion": job.conclusion,
            "created_at": iso(job.created_at),
            "started_at": iso(job.started_at or job.created_at),
            "completed_at": iso(job.completed_at),
            "name": job.name,
            "steps": [
                {
                    "name": step.name,
                    "status": step.status,
                    "conclusion": step.conclusion,
                    "number": step.number,
                    "started_at": iso(step.started_at),
                    "completed_at": iso(step.completed_at),
                }
                for step in job.steps
            ],
            "check_run_url": f"{repo_url}/check-runs/{job.id}",
            "labels": ["ubuntu-latest"],
            "runner_id": 1 if job.runner_name else None,
            "runner_name": job.runner_name,
            "runner_group_id": 1 if job.runner_name else None,
            "runner_group_name": "GitHub Actions" if job.runner_name else None,
        }

    # -- git objects (duck-typed over gitrepos.CommitInfo / FileChange) ---------------------
    def git_actor(self, name: str, email: str, date: datetime) -> dict[str, Any]:
        return {"name": name, "email": email, "date": iso_datetime(date)}

    def commit(self, repo: Repo, info: Any, files: list[Any] | None = None) -> dict[str, Any]:
        repo_url = f"{self.api}/repos/{repo.full_name}"
        data: dict[str, Any] = {
            "url": f"{repo_url}/commits/{info.sha}",
            "sha": info.sha,
            "node_id": node_id("C", int(info.sha[:12], 16)),
            "html_url": f"{self.html}/{repo.full_name}/commit/{info.sha}",
            "comments_url": f"{repo_url}/commits/{info.sha}/comments",
            "commit": {
                "url": f"{repo_url}/git/commits/{info.sha}",
                "author": self.git_actor(info.author_name, info.author_email, info.author_date),
                "committer": self.git_actor(info.committer_name, info.committer_email, info.committer_date),
                "message": info.message,
                "comment_count": 0,
                "tree": {"sha": info.tree, "url": f"{repo_url}/git/trees/{info.tree}"},
                "verification": {
                    "verified": False,
                    "reason": "unsigned",
                    "payload": None,
                    "signature": None,
                    "verified_at": None,
                },
            },
            "author": None,
            "committer": None,
            "parents": [
                {
                    "sha": parent,
                    "url": f"{repo_url}/commits/{parent}",
                    "html_url": f"{self.html}/{repo.full_name}/commit/{parent}",
                }
                for parent in info.parents
            ],
        }
        if files is not None:
            additions = sum(f.additions for f in files)
            deletions = sum(f.deletions for f in files)
            data["stats"] = {"additions": additions, "deletions": deletions, "total": additions + deletions}
            data["files"] = [self.diff_entry(repo, change, info.sha) for change in files]
        return data

    def simple_commit(self, info: Any) -> dict[str, Any]:
        return {
            "id": info.sha,
            "tree_id": info.tree,
            "message": info.message,
            "timestamp": iso_datetime(info.committer_date),
            "author": {"name": info.author_name, "email": info.author_email},
            "committer": {"name": info.committer_name, "email": info.committer_email},
        }

    def push_commit(self, repo: Repo, info: Any, changes: list[Any]) -> dict[str, Any]:
        """A commit as listed in ``push`` webhook payloads."""
        added = [c.filename for c in changes if c.status == "added"]
        removed = [c.filename for c in changes if c.status == "removed"]
        modified = [c.filename for c in changes if c.status not in ("added", "removed")]
        return {
            "id": info.sha,
            "tree_id": info.tree,
            "distinct": True,
            "message": info.message,
            "timestamp": iso_datetime(info.committer_date),
            "url": f"{self.html}/{repo.full_name}/commit/{info.sha}",
            # no "username": GitHub sends it only when the address belongs to a GitHub account
            "author": {"name": info.author_name, "email": info.author_email},
            "committer": {"name": info.committer_name, "email": info.committer_email},
            "added": added,
            "removed": removed,
            "modified": modified,
        }

    def diff_entry(self, repo: Repo, change: Any, ref: str) -> dict[str, Any]:
        repo_url = f"{self.api}/repos/{repo.full_name}"
        data: dict[str, Any] = {
            "sha": change.sha or None,
            "filename": change.filename,
            "status": change.status,
            "additions": change.additions,
            "deletions": change.deletions,
            "changes": change.additions + change.deletions,
            "blob_url": f"{self.html}/{repo.full_name}/blob/{ref}/{change.filename}",
            "raw_url": f"{self.html}/{repo.full_name}/raw/{ref}/{change.filename}",
            "contents_url": f"{repo_url}/contents/{change.filename}?ref={ref}",
        }
        if change.patch:
            data["patch"] = change.patch
        if change.previous_filename:
            data["previous_filename"] = change.previous_filename
        return data

    def branch(self, repo: Repo, name: str, info: Any) -> dict[str, Any]:
        repo_url = f"{self.api}/repos/{repo.full_name}"
        return {
            "name": name,
            "commit": self.commit(repo, info),
            "_links": {
                "self": f"{repo_url}/branches/{name}",
                "html": f"{self.html}/{repo.full_name}/tree/{name}",
            },
            "protected": False,
            "protection": {
                "enabled": False,
                "required_status_checks": {
                    "enforcement_level": "off",
                    "contexts": [],
                    "checks": [],
                },
            },
            "protection_url": f"{repo_url}/branches/{name}/protection",
        }

    def git_ref(self, repo: Repo, ref: str, sha: str) -> dict[str, Any]:
        repo_url = f"{self.api}/repos/{repo.full_name}"
        return {
            "ref": ref,
            "node_id": node_id("REF", int(sha[:12], 16)),
            "url": f"{repo_url}/git/{ref}",
            "object": {"type": "commit", "sha": sha, "url": f"{repo_url}/git/commits/{sha}"},
        }

    def content_entry(self, repo: Repo, entry: Mapping[str, Any], ref: str) -> dict[str, Any]:
        repo_url = f"{self.api}/repos/{repo.full_name}"
        path = entry["path"]
        kind = entry["type"]
        url = f"{repo_url}/contents/{path}?ref={ref}"
        git_url = f"{repo_url}/git/{'trees' if kind == 'dir' else 'blobs'}/{entry['sha']}"
        html_url = f"{self.html}/{repo.full_name}/{'tree' if kind == 'dir' else 'blob'}/{ref}/{path}"
        return {
            "type": kind,
            "size": entry.get("size") or 0,
            "name": entry["name"],
            "path": path,
            "sha": entry["sha"],
            "url": url,
            "git_url": git_url,
            "html_url": html_url,
            "download_url": (f"{self.html}/{repo.full_name}/raw/{ref}/{path}" if kind == "file" else None),
            "_links": {"self": url, "git": git_url, "html": html_url},
        }

    def content_file(self, repo: Repo, entry: Mapping[str, Any], data: bytes, ref: str) -> dict[str, Any]:
        result = self.content_entry(repo, entry, ref)
        result["size"] = len(data)
        result["encoding"] = "base64"
        encoded = base64.b64encode(data).decode()
        result["content"] = "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60)) + (
            "\n" if encoded else ""
        )
        return result
