"""Review feedback (SPEC §4.4): a submitted review and its comments as one retry text. Pure.

Input shapes are GitHub's: a pull request review (REST ``state`` is upper case,
``CHANGES_REQUESTED``; webhook payloads use lower case, ``changes_requested``) and the
review's comments (``path``, ``line``/``original_line``, ``start_line``, ``diff_hunk``,
``body``, ``id``, ``in_reply_to_id``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

CHANGES_REQUESTED = "CHANGES_REQUESTED"
COMMENTED = "COMMENTED"
APPROVED = "APPROVED"


def review_state(review: Mapping[str, Any]) -> str:
    """The review's state in REST spelling (``CHANGES_REQUESTED``, ``COMMENTED``…)."""
    return str(review.get("state") or "").strip().upper()


def _own_comments(
    review: Mapping[str, Any], comments: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Comments with a body that belong to ``review`` (when both sides say which review)."""
    review_id = review.get("id")
    out = []
    for comment in comments:
        owner = comment.get("pull_request_review_id")
        if review_id is not None and owner is not None and owner != review_id:
            continue
        if str(comment.get("body") or "").strip():
            out.append(comment)
    return out


def is_actionable(
    review: Mapping[str, Any], comments: Iterable[Mapping[str, Any]] = ()
) -> bool:
    """Whether the review asks for work: changes requested, or a comment with a body or
    inline comments. Approvals, dismissals and pending reviews never do."""
    state = review_state(review)
    if state == CHANGES_REQUESTED:
        return True
    if state == COMMENTED:
        return bool(str(review.get("body") or "").strip()) or bool(
            _own_comments(review, comments)
        )
    return False


def _fence(text: str, info: str = "") -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{info}\n{text}\n{ticks}"


def _where(comment: Mapping[str, Any]) -> str:
    path = str(comment.get("path") or "(unknown file)")
    line = comment.get("line")
    start = comment.get("start_line")
    outdated = False
    if line is None:
        line = comment.get("original_line")
        start = comment.get("original_start_line")
        outdated = line is not None
    if line is None:
        return f"{path} (the whole file)"
    where = (
        f"{path} lines {start}-{line}"
        if start and start != line
        else f"{path} line {line}"
    )
    if outdated:
        where += " (on an earlier version of the file)"
    return where


def review_feedback(
    review: Mapping[str, Any], comments: list[Mapping[str, Any]]
) -> str | None:
    """The feedback text of a submitted review, or None when it asks for nothing.

    The text holds the review body and each inline comment, in the given order, with its
    path, line and diff hunk (fenced).
    """
    if not is_actionable(review, comments):
        return None
    state = review_state(review)
    reviewer = str((review.get("user") or {}).get("login") or "").strip()
    by = f" by {reviewer}" if reviewer else ""
    verdict = "requested changes" if state == CHANGES_REQUESTED else "commented"
    parts = [f"A reviewer{by} {verdict} on the pull request."]
    body = str(review.get("body") or "").strip()
    if body:
        parts.append("Review comment:\n" + body)
    inline = _own_comments(review, comments)
    if inline:
        parts.append(f"Inline comments ({len(inline)}):")
        for number, comment in enumerate(inline, start=1):
            header = f"{number}. {_where(comment)}"
            if comment.get("in_reply_to_id") is not None:
                header += " (reply in an existing thread)"
            block = [header + ":"]
            hunk = str(comment.get("diff_hunk") or "").rstrip("\n")
            if hunk:
                block.append(_fence(hunk, "diff"))
            block.append(str(comment.get("body") or "").strip())
            parts.append("\n".join(block))
    elif not body:
        parts.append(
            "The review has no comment; look at the pull request discussion for what to change."
        )
    return "\n\n".join(parts)


def review_thread_ids(comments: Iterable[Mapping[str, Any]]) -> list[int]:
    """The top-level comment ids of the threads the comments are in, in order, once each:
    where to reply ("Addressed in <sha>.") after the retry pushes. A top-level comment is
    its own thread; a reply (``in_reply_to_id``) belongs to the thread it answers, since
    GitHub only accepts replies to top-level review comments."""
    seen: set[int] = set()
    out: list[int] = []
    for comment in comments:
        root = comment.get("in_reply_to_id")
        if root is None:
            root = comment.get("id")
        if isinstance(root, int) and not isinstance(root, bool) and root not in seen:
            seen.add(root)
            out.append(root)
    return out
