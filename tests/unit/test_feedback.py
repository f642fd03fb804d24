"""Review feedback (SPEC §4.4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.feedback import is_actionable, review_feedback, review_state, review_thread_ids


def review(state: str, body: str | None = None, *, id: int = 80, login: str = "octocat") -> dict[str, Any]:
    return {"id": id, "state": state, "body": body, "user": {"login": login}}


def comment(id: int, body: str, *, path: str = "src/app.py", line: int | None = 12,
            original_line: int | None = None, start_line: int | None = None,
            hunk: str = "@@ -10,3 +10,3 @@\n def f():\n-    return 1\n+    return 2",
            reply_to: int | None = None, review_id: int | None = 80) -> dict[str, Any]:
    return {
        "id": id, "body": body, "path": path, "line": line, "original_line": original_line,
        "start_line": start_line, "diff_hunk": hunk, "in_reply_to_id": reply_to,
        "pull_request_review_id": review_id,
    }


# (state, body, has comments, actionable)
ACTIONABLE_CASES = [
    ("CHANGES_REQUESTED", "please fix", False, True),
    ("changes_requested", "please fix", False, True),
    ("CHANGES_REQUESTED", None, False, True),
    ("COMMENTED", "a remark", False, True),
    ("commented", "a remark", False, True),
    ("COMMENTED", None, True, True),
    ("commented", "   ", True, True),
    ("COMMENTED", None, False, False),
    ("commented", "  \n ", False, False),
    ("APPROVED", "LGTM", True, False),
    ("approved", None, False, False),
    ("DISMISSED", "x", True, False),
    ("PENDING", "x", True, False),
    ("", "x", True, False),
]


@pytest.mark.parametrize("state,body,has_comments,expected", ACTIONABLE_CASES)
def test_is_actionable_and_none(state: str, body: str | None, has_comments: bool, expected: bool) -> None:
    comments = [comment(1, "rename this")] if has_comments else []
    assert is_actionable(review(state, body), comments) is expected
    assert (review_feedback(review(state, body), comments) is not None) is expected


def test_review_state_spellings() -> None:
    assert review_state({"state": "changes_requested"}) == "CHANGES_REQUESTED"
    assert review_state({"state": "COMMENTED"}) == "COMMENTED"
    assert review_state({}) == ""


def test_feedback_text_holds_body_and_inline_comments_in_order() -> None:
    comments = [
        comment(1, "Use a constant here."),
        comment(2, "Typo.", path="README.md", line=3, hunk="@@ -1,3 +1,3 @@\n-# Helo\n+# Hello"),
    ]
    text = review_feedback(review("CHANGES_REQUESTED", "Two things to fix."), comments)
    assert text is not None
    assert text.startswith("A reviewer by octocat requested changes on the pull request.")
    assert "Review comment:\nTwo things to fix." in text
    assert "Inline comments (2):" in text
    first = text.index("1. src/app.py line 12:")
    second = text.index("2. README.md line 3:")
    assert first < text.index("Use a constant here.") < second < text.index("Typo.")
    assert "```diff\n@@ -10,3 +10,3 @@\n def f():\n-    return 1\n+    return 2\n```" in text


def test_exact_rendering_of_one_comment() -> None:
    text = review_feedback(review("commented", None, login=""), [comment(5, "Why?", hunk="@@ -1 +1 @@\n-a\n+b")])
    assert text == (
        "A reviewer commented on the pull request.\n\n"
        "Inline comments (1):\n\n"
        "1. src/app.py line 12:\n```diff\n@@ -1 +1 @@\n-a\n+b\n```\nWhy?"
    )


@pytest.mark.parametrize(
    "kwargs,where",
    [
        ({"line": 7}, "src/app.py line 7:"),
        ({"line": 9, "start_line": 7}, "src/app.py lines 7-9:"),
        ({"line": 7, "start_line": 7}, "src/app.py line 7:"),
        ({"line": None, "original_line": 4}, "src/app.py line 4 (on an earlier version of the file):"),
        ({"line": None, "original_line": None}, "src/app.py (the whole file):"),
    ],
)
def test_comment_locations(kwargs: dict[str, Any], where: str) -> None:
    text = review_feedback(review("COMMENTED"), [comment(1, "x", **kwargs)])
    assert text is not None and f"1. {where}" in text


def test_diff_hunk_with_backticks_stays_fenced() -> None:
    hunk = "@@ -1 +1 @@\n-```py\n+````py"
    text = review_feedback(review("COMMENTED"), [comment(1, "fence", hunk=hunk)])
    assert text is not None and "`````diff\n" + hunk + "\n`````" in text


def test_replies_and_foreign_and_empty_comments() -> None:
    comments = [
        comment(1, "top level"),
        comment(2, "a reply in an old thread", reply_to=99),
        comment(3, "from another review", review_id=81),
        comment(4, "   "),
    ]
    text = review_feedback(review("COMMENTED"), comments)
    assert text is not None
    assert "Inline comments (2):" in text
    assert "2. src/app.py line 12 (reply in an existing thread):" in text
    assert "from another review" not in text


def test_changes_requested_without_any_text_still_asks_for_work() -> None:
    text = review_feedback(review("CHANGES_REQUESTED", None), [])
    assert text is not None and "requested changes" in text and "no comment" in text


def test_real_webhook_review_payload(shared_dir: Path) -> None:
    webhooks = shared_dir / "github" / "webhooks"
    payload = json.loads((webhooks / "pull_request_review/submitted.payload.json").read_text())
    review_obj = payload["review"]  # state "commented", body null
    assert review_feedback(review_obj, []) is None
    c = json.loads((webhooks / "pull_request_review_comment/created.payload.json").read_text())["comment"]
    text = review_feedback(review_obj, [c])
    assert text is not None
    assert "README.md line 265:" in text
    assert "```diff\n@@ -1 +1 @@\n-# Hello-World\n```" in text
    assert "Maybe you should use more emoji on this line." in text
    assert review_thread_ids([c]) == [284312630]


def test_review_thread_ids() -> None:
    comments = [
        comment(1, "a"),
        comment(2, "b", reply_to=1),
        comment(3, "c", reply_to=50),
        comment(4, "d"),
        comment(5, "e", reply_to=50),
        {"body": "no id"},
    ]
    assert review_thread_ids(comments) == [1, 50, 4]
    assert review_thread_ids([]) == []
