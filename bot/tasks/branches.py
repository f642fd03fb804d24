"""Names the worker gives to branches (SPEC §6.2, §6.6), and checks on names it is given.

Pure functions, no I/O.
"""

from __future__ import annotations

import re
import unicodedata

BRANCH_PREFIX = "patchwright/"
WIP_PREFIX = "patchwright/wip/"
SLUG_MAX_LENGTH = 40

_NON_SLUG = re.compile(r"[^a-z0-9]+")
_TASK_ID = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_REPO_PART = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_FORBIDDEN_IN_REF = frozenset(" ~^:?*[\\")


def slugify(text: str, max_length: int = SLUG_MAX_LENGTH) -> str:
    """Lower-case ASCII words of ``text`` joined by ``-``: at most ``max_length`` characters,
    no leading or trailing ``-``; "" when nothing ASCII is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = _NON_SLUG.sub("-", ascii_text.lower()).strip("-")
    return slug[:max_length].rstrip("-")


def task_branch(issue_number: int, title: str) -> str:
    """The task branch of an issue: ``patchwright/<n>-<slug of the title>`` (``patchwright/<n>``
    when the title has no ASCII letters or digits)."""
    if issue_number < 1:
        raise ValueError(f"issue number must be positive, got {issue_number}")
    slug = slugify(title)
    return f"{BRANCH_PREFIX}{issue_number}-{slug}" if slug else f"{BRANCH_PREFIX}{issue_number}"


def wip_branch(task_id: str, attempt: int) -> str:
    """Where an attempt's unfinished work is salvaged: ``patchwright/wip/<task>-<attempt>``."""
    check_task_id(task_id)
    if attempt < 1:
        raise ValueError(f"attempt must be positive, got {attempt}")
    return f"{WIP_PREFIX}{task_id}-{attempt}"


def is_valid_branch_name(name: str) -> bool:
    """Whether ``name`` is a branch name git accepts (the rules of ``git check-ref-format
    --branch``) and cannot be mistaken for an option."""
    if not name or len(name) > 255 or name in ("HEAD", "@"):
        return False
    if name.startswith(("-", "/")) or name.endswith(("/", ".")):
        return False
    if "@{" in name or ".." in name or "//" in name:
        return False
    if any(ch < " " or ch == "\x7f" or ch in _FORBIDDEN_IN_REF for ch in name):
        return False
    return all(not part.startswith(".") and not part.endswith(".lock") for part in name.split("/"))


def check_branch_name(name: str) -> str:
    """Return ``name`` when it is a valid branch name, else raise ``ValueError``."""
    if not is_valid_branch_name(name):
        raise ValueError(f"invalid branch name: {name!r}")
    return name


def check_task_id(task_id: str) -> str:
    """Return ``task_id`` when it is safe as a path component and in a branch name."""
    if not _TASK_ID.match(task_id) or task_id.startswith(".") or task_id.endswith(".lock"):
        raise ValueError(f"invalid task id: {task_id!r}")
    return task_id


def split_repo(repo: str) -> tuple[str, str]:
    """``"owner/name"`` → ``("owner", "name")``; ``ValueError`` for anything else."""
    owner, sep, name = repo.partition("/")
    for part in (owner, name):
        if not sep or not _REPO_PART.match(part) or part in (".", "..") or part.endswith(".git"):
            raise ValueError(f"invalid repository name: {repo!r}")
    return owner, name
