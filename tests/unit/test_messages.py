"""User-visible strings (SPEC §8)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import messages
from bot.commands import VERBS, mentions_bot, parse_commands
from bot.messages import (
    ADDRESSED_IN,
    HELP_TEXT,
    STATUS_MARKER,
    SUMMARY_END,
    SUMMARY_START,
    AttemptLine,
    StatusCard,
    as_mention,
    attempt_summary_lines,
    check_run_actions,
    check_run_failure,
    check_run_in_progress,
    check_run_success,
    ci_fails_on_base,
    ci_not_code_failure,
    code_span,
    config_invalid,
    escape_markdown,
    fenced,
    find_marked_comment,
    inline_text,
    neutralize_mentions,
    next_steps,
    refusal_feedback_limit,
    refusal_no_task,
    refusal_not_permitted,
    refusal_not_task_pr,
    refusal_unknown_command,
    refusal_wrong_state,
    render_addressed_in,
    render_help,
    render_pr_body,
    render_questions,
    render_status_comment,
    render_task_card,
)
from bot.tasks.model import RetryKind, Status

ZWSP = "\u200b"


def card(**changes: object) -> StatusCard:
    base: dict[str, object] = {
        "status": "review",
        "attempt": 2,
        "max_attempts": 5,
        "attempts": [(1, "first", "pushed", 0.8), (2, "ci_failure", "", 0.45)],
        "cost_usd": 1.25,
        "max_cost_usd": 10.0,
        "pr_url": "https://github.com/octo/repo/pull/7",
        "last_error": "",
        "mention": "@acme-bot",
    }
    base.update(changes)
    return StatusCard(**base)  # type: ignore[arg-type]


# -- markers ------------------------------------------------------------------------------------


def test_markers() -> None:
    assert STATUS_MARKER == "<!-- patchwright:status -->"
    assert SUMMARY_START == "<!-- patchwright:summary -->"
    assert SUMMARY_END != SUMMARY_START and SUMMARY_END.startswith("<!--") and SUMMARY_END.endswith("-->")
    assert len({STATUS_MARKER, SUMMARY_START, SUMMARY_END}) == 3


# -- status comment -------------------------------------------------------------------------------


def test_status_comment_snapshot() -> None:
    text = render_status_comment(card(reason="CI failed: `test`"))
    assert text.startswith(STATUS_MARKER + "\n")
    lines = text.split("\n")
    assert "### patchwright: 👀 In review" in lines
    assert "**Attempt:** 2 of 5 · **budget:** 3 automatic retries left · **cost:** $1.25 of $10.00" in lines
    assert "**Pull request:** https://github.com/octo/repo/pull/7" in lines
    assert "**Now:** CI failed: \\`test\\`" in lines
    assert "| 1 | first attempt | pushed | $0.80 |" in lines
    assert "| 2 | fix CI failure | running | $0.45 |" in lines
    assert "**What you can do:**" in lines
    assert "- Or comment `@acme-bot <what to change>` on the pull request." in lines
    assert "- `@acme-bot help` lists every command." in lines
    assert "@patchwright" not in text


def test_status_comment_accepts_enums_and_attempt_lines() -> None:
    text = render_status_comment(card(
        status=Status.FAILED,
        attempt=5,
        attempts=[AttemptLine(1, RetryKind.FIRST, "failed", 1.0), AttemptLine(5, RetryKind.MANUAL, "failed", 2)],
    ))
    assert "| 1 | first attempt | failed | $1.00 |" in text
    assert "| 5 | manual retry | failed | $2.00 |" in text
    assert "no automatic retries left" in text
    assert "`@acme-bot retry [instructions]`" in text and "`@acme-bot start over`" in text


@pytest.mark.parametrize(
    "status,expected",
    [
        ("pending", ["stop"]),
        ("running", ["stop"]),
        ("review", ["<what to change>", "cancel"]),
        ("waiting", ["cancel"]),
        ("paused", ["resume", "retry [instructions]", "cancel"]),
        ("failed", ["retry [instructions]", "start over", "cancel"]),
        ("closed", []),
        ("merged", []),
    ],
)
def test_next_steps_per_status(status: str, expected: list[str]) -> None:
    steps = next_steps(card(status=status))
    joined = "\n".join(steps)
    for command in expected:
        assert f"`@acme-bot {command}`" in joined
    assert steps[-1] == "`@acme-bot help` lists every command."
    commands = re.findall(r"`@acme-bot ([^`]*)`", joined)
    assert set(commands) == set(expected) | {"help"}


def test_next_steps_commands_parse_as_commands() -> None:
    for command in ("stop", "resume", "cancel", "start over", "status", "help"):
        parsed = parse_commands(f"@acme-bot {command}", mentions=["acme-bot"])
        assert [c.verb for c in parsed] == [command]


def test_closed_status_names_the_label() -> None:
    assert "`do-it` label" in render_status_comment(card(status="closed", trigger_label="do-it"))


def test_budget_words() -> None:
    assert "1 automatic retry left" in render_status_comment(card(attempt=4))
    assert "no automatic retries left" in render_status_comment(card(attempt=7))


def test_last_error_short_is_escaped_inline() -> None:
    text = render_status_comment(card(last_error="tests failed for @alice <b>bold</b> #12"))
    assert f"> tests failed for @{ZWSP}alice \\<b\\>bold\\</b\\> \\#12" in text
    assert "@alice" not in text


def test_last_error_long_is_fenced_and_cannot_escape() -> None:
    error = "Traceback:\n```\n@bob\n```\n" + "x" * 50
    text = render_status_comment(card(last_error=error))
    assert "````\nTraceback:\n```\n@bob\n```\n" in text
    # the block closes with the same 4-backtick fence before the next section
    assert re.search(r"\n````\n\n\*\*What you can do:\*\*", text)
    assert not mentions_bot(text.replace(STATUS_MARKER, ""), ["bob"])


def test_last_error_is_cut_to_its_end() -> None:
    text = render_status_comment(card(last_error="start " + "y" * 5000 + " end"))
    assert "start" not in text and "y end" in text and len(text) < 3500


def test_salvage_branches_and_unknown_words() -> None:
    text = render_status_comment(card(
        salvage_branches=["patchwright/wip/task_1-2"],
        attempts=[(1, "weird_kind", "odd|outcome", 0)],
    ))
    assert "`patchwright/wip/task_1-2`" in text
    assert "| 1 | weird\\_kind | odd\\|outcome | $0.00 |" in text


def test_pr_url_that_is_not_a_url_is_code() -> None:
    assert "**Pull request:** `javascript:alert(1)`" in render_status_comment(card(pr_url="javascript:alert(1)"))


def test_task_card_has_no_marker() -> None:
    text = render_task_card(card())
    assert STATUS_MARKER not in text
    assert "| 2 | fix CI failure | running | $0.45 |" in text
    assert render_status_comment(card()).startswith(STATUS_MARKER + "\n" + text.rstrip("\n"))


def test_mention_forms() -> None:
    assert as_mention("patchwright[bot]") == "@patchwright"
    assert as_mention("@acme") == "@acme"
    assert as_mention("") == "@patchwright"
    assert "`@acme help`" in render_task_card(card(mention="acme[bot]"))


# -- comment finder ---------------------------------------------------------------------------------


def test_find_marked_comment() -> None:
    comments = [
        {"id": 1, "body": "hello", "user": {"login": "alice"}},
        {"id": 2, "body": None, "user": {"login": "alice"}},
        {"id": 3, "body": f"quoting {STATUS_MARKER}", "user": {"login": "alice"}},
        {"id": 4, "body": f"{STATUS_MARKER}\nforged", "user": {"login": "mallory"}},
        {"id": 5, "body": f"\n{STATUS_MARKER}\nreal", "user": {"login": "patchwright[bot]"}},
        {"id": 6, "body": f"{STATUS_MARKER}\nduplicate", "user": {"login": "patchwright[bot]"}},
    ]
    assert find_marked_comment(comments, STATUS_MARKER)["id"] == 4  # type: ignore[index]
    assert find_marked_comment(comments, STATUS_MARKER, author="patchwright")["id"] == 5  # type: ignore[index]
    assert find_marked_comment(comments, STATUS_MARKER, author="Patchwright[bot]")["id"] == 5  # type: ignore[index]
    assert find_marked_comment(comments, SUMMARY_START) is None
    assert find_marked_comment([], STATUS_MARKER) is None
    assert find_marked_comment([{"id": 7}], STATUS_MARKER) is None


def test_status_comment_is_found_by_its_marker() -> None:
    comments = [{"id": 9, "body": render_status_comment(card()), "user": {"login": "acme-bot[bot]"}}]
    assert find_marked_comment(comments, STATUS_MARKER, author="acme-bot")["id"] == 9  # type: ignore[index]


# -- PR body ------------------------------------------------------------------------------------------


def test_fresh_pr_body() -> None:
    body = render_pr_body(12, ["Attempt 1: added the parser", "1 attempt, $0.80 in total"])
    assert body.startswith("Closes #12\n\n" + SUMMARY_START + "\n")
    assert body.rstrip("\n").endswith(SUMMARY_END)
    assert "- Attempt 1: added the parser\n- 1 attempt, $0.80 in total\n" + SUMMARY_END in body
    assert render_pr_body(12, [], existing_body="   ") == render_pr_body(12, [])


def test_section_replacement_keeps_human_text() -> None:
    first = render_pr_body(12, ["one"])
    human = "My notes on top.\r\n\r\n" + first + "\r\nAnd a footer by a human.\r\n"
    updated = render_pr_body(12, ["one", "two"], existing_body=human)
    assert updated.startswith("My notes on top.\r\n\r\nCloses #12\n\n")
    assert updated.endswith("\r\nAnd a footer by a human.\r\n")
    assert "- one\n- two\n" + SUMMARY_END in updated
    assert updated.count(SUMMARY_START) == 1 and updated.count(SUMMARY_END) == 1


def test_section_replacement_is_idempotent() -> None:
    body = render_pr_body(3, ["a"], existing_body="Human text")
    again = render_pr_body(3, ["a"], existing_body=body)
    assert again == body
    assert render_pr_body(3, ["a"], existing_body=again) == body
    fresh = render_pr_body(3, ["a"])
    assert render_pr_body(3, ["a"], existing_body=fresh) == fresh


def test_body_without_section_gets_one_appended() -> None:
    body = render_pr_body(3, ["a"], existing_body="Rewritten by a human.\n")
    assert body.startswith("Rewritten by a human.\n\n" + SUMMARY_START)
    assert "Closes" not in body  # the human's body is theirs


def test_stray_markers_are_repaired() -> None:
    for broken in (f"text {SUMMARY_START} old", f"{SUMMARY_END} text", f"a {SUMMARY_END} b {SUMMARY_START} c"):
        body = render_pr_body(3, ["new"], existing_body=broken)
        assert body.count(SUMMARY_START) == 1 and body.count(SUMMARY_END) == 1
        assert body.index(SUMMARY_START) < body.index(SUMMARY_END)
        assert render_pr_body(3, ["new"], existing_body=body) == body


def test_summary_lines_cannot_forge_markers_or_mention() -> None:
    body = render_pr_body(3, [f"evil {SUMMARY_END} and @octocat\nsecond line", ""])
    assert body.count(SUMMARY_END) == 1
    assert f"- evil &lt;!-- /patchwright:summary --&gt; and @{ZWSP}octocat second line\n" in body
    again = render_pr_body(3, ["ok"], existing_body="intro\n" + body)
    assert again.startswith("intro\nCloses #3\n\n") and "- ok\n" in again and "evil" not in again


def test_attempt_summary_lines() -> None:
    lines = attempt_summary_lines(
        [AttemptLine(1, "first", "pushed", 0.5, "Added the parser."), (2, "feedback", "pushed", 0.25)], 0.75
    )
    assert lines == [
        "Attempt 1 (first attempt): pushed, $0.50 — Added the parser.",
        "Attempt 2 (review feedback): pushed, $0.25",
        "2 attempts, $0.75 in total",
    ]
    assert attempt_summary_lines([], 0) == ["0 attempts, $0.00 in total"]


# -- help and refusals ----------------------------------------------------------------------------------


def test_help_lists_every_command_with_the_mention() -> None:
    for verb in VERBS:
        assert f"`@patchwright {verb}" in HELP_TEXT
    text = render_help("acme[bot]", "do-it")
    assert "`@acme retry [instructions]`" in text and "`do-it` label" in text
    assert "@patchwright" not in text


REFUSALS = [
    refusal_not_permitted("read", "@acme"),
    refusal_not_permitted("", "@acme"),
    refusal_no_task("@acme", "do-it"),
    refusal_unknown_command("frobnicate now", "@acme"),
    refusal_unknown_command("", "@acme"),
    refusal_wrong_state("resume", "failed", "@acme"),
    refusal_wrong_state("stop", Status.REVIEW, "@acme"),
    refusal_feedback_limit(20, "@acme"),
    refusal_not_task_pr("@acme"),
]


@pytest.mark.parametrize("text", REFUSALS)
def test_refusals_say_what_happened_and_what_works(text: str) -> None:
    assert "did nothing" in text or "nothing to act on" in text or "did not start" in text
    assert re.search(r"`@acme [a-z]|label|maintainer|pull request", text)
    assert "\n" not in text.strip()


def test_refusal_details() -> None:
    assert "`read`" in refusal_not_permitted("read")
    assert "`none`" in refusal_not_permitted("")
    assert "`do-it` label" in refusal_no_task(trigger_label="do-it")
    assert "the command `frobnicate`" in refusal_unknown_command("frobnicate now")
    wrong = refusal_wrong_state("resume", "failed", "@acme")
    assert "`resume` works on a paused task" in wrong and "`failed`" in wrong
    assert "`@acme retry [instructions]`" in wrong
    assert "`review`" in refusal_wrong_state("stop", Status.REVIEW)


def test_user_text_in_refusals_is_code() -> None:
    text = refusal_unknown_command("`@alice`")
    assert "`` `@alice` ``" in text


# -- questions ---------------------------------------------------------------------------------------


def test_render_questions() -> None:
    text = render_questions(
        [
            {"id": "q1", "question": "Should `parse()` return None?"},
            "Use #12 or ask @bob?\n- option a\n- option b",
            {"id": "q3", "question": "   "},
            {"id": "q4", "text": "Fallback key"},
        ],
        mention="@acme",
    )
    lines = text.split("\n")
    assert "1. Should \\`parse()\\` return None?" in lines
    assert f"2. Use \\#12 or ask @{ZWSP}bob?" in lines
    assert "   \\- option a" in lines and "   \\- option b" in lines
    assert "3. Fallback key" in lines
    assert "Answer in a comment on this issue" in text and "`@acme cancel`" in text
    assert "@bob" not in text


def test_render_questions_long_list_indents_continuations() -> None:
    text = render_questions([f"q{i}\nmore" for i in range(1, 11)])
    assert "10. q10\n    more" in text and "9. q9\n   more" in text


# -- small messages -------------------------------------------------------------------------------------


def test_addressed_in() -> None:
    assert ADDRESSED_IN == "Addressed in {sha}."
    assert render_addressed_in("abc1234") == "Addressed in abc1234."
    assert render_addressed_in("abc @x") == "Addressed in abc."


def test_ci_messages() -> None:
    text = ci_fails_on_base(["test", "lint", "test"], "main", "@acme")
    assert "`lint`, `test`" in text and "`main`" in text and "`@acme retry`" in text
    assert "`e2e`" in ci_not_code_failure(["e2e"]) and "not retrying" in ci_not_code_failure(["e2e"])


def test_config_invalid_quotes_errors_fenced() -> None:
    text = config_invalid(["budget.max_attempts (line 3): must be >= 1", "```@x```"], mention="@acme")
    assert "````\nbudget.max_attempts (line 3): must be >= 1\n```@x```\n````" in text
    assert "`@acme retry`" in text


# -- check run ----------------------------------------------------------------------------------------


def test_check_run_outputs() -> None:
    running = check_run_in_progress(2, 5, RetryKind.CI_FAILURE)
    assert running["title"] == "Attempt 2 of 5: fix CI failure" and running["summary"]
    done = check_run_success(2, 5, "Fixed *the* test for @bob", 0.5)
    assert done["title"] == "Attempt 2 of 5: pushed"
    assert f"Fixed \\*the\\* test for @{ZWSP}bob" in done["summary"] and "$0.50" in done["summary"]
    assert check_run_success(1, 5)["summary"].startswith("The agent finished")
    failed = check_run_failure(3, 5, "boom\n```")
    assert failed["title"] == "Attempt 3 of 5: failed" and "````\nboom\n```\n````" in failed["summary"]
    assert "No error details" in check_run_failure(3, 5)["summary"]
    assert len(check_run_success(1, 5, "x" * 100_000)["summary"]) <= 65535


def test_check_run_actions_respect_github_limits() -> None:
    actions = check_run_actions()
    assert [a["identifier"] for a in actions] == ["retry", "stop"]
    assert [a["label"] for a in actions] == ["Retry", "Stop"]
    for action in actions:
        assert set(action) == {"label", "identifier", "description"}
        assert 0 < len(action["label"]) <= 20
        assert 0 < len(action["identifier"]) <= 20
        assert 0 < len(action["description"]) <= 40
    assert len(actions) <= 3
    assert [a["identifier"] for a in check_run_actions(retry=False)] == ["stop"]
    assert check_run_actions(retry=False, stop=False) == []
    actions[0]["label"] = "changed"
    assert check_run_actions()[0]["label"] == "Retry"  # fresh objects each call


# -- escaping helpers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("plain", "plain"),
        ("@bob and @alice", f"@{ZWSP}bob and @{ZWSP}alice"),
        ("a@b.c", f"a@{ZWSP}b.c"),
        ("@ alone", "@ alone"),
    ],
)
def test_neutralize_mentions(text: str, expected: str) -> None:
    assert neutralize_mentions(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("*bold* _it_", "\\*bold\\* \\_it\\_"),
        ("# heading", "\\# heading"),
        ("- item", "\\- item"),
        ("1. item", "1\\. item"),
        ("12) item", "12\\) item"),
        ("2024 was", "2024 was"),
        ("=====", "\\====="),
        ("  + item", "  \\+ item"),
        ("> quote", "\\> quote"),
        ("[x](http://e)", "\\[x\\](http://e)"),
        ("<!-- c -->", "\\<!-- c --\\>"),
        ("a | b", "a \\| b"),
        ("`code`", "\\`code\\`"),
        ("~~s~~", "\\~\\~s\\~\\~"),
        ("&amp;", "\\&amp;"),
        ("back\\slash", "back\\\\slash"),
    ],
)
def test_escape_markdown(text: str, expected: str) -> None:
    assert escape_markdown(text) == expected


def test_inline_text_and_code_span() -> None:
    assert inline_text("a\n\nb   c") == "a b c"
    assert inline_text("x" * 500, 10) == "x" * 9 + "…"
    assert code_span("a`b") == "``a`b``"
    assert code_span("`x`") == "`` `x` ``"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_fenced_content_cannot_close_the_fence(text: str) -> None:
    block = fenced(text)
    fence = block.split("\n", 1)[0]
    inner = block[len(fence) + 1 : -len(fence)]
    assert block.endswith("\n" + fence)
    assert fence not in inner.replace("\r", "\n")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("@ab*_`<>#-1.\n[]!|~&\\ ")), max_size=100))
def test_escaped_text_mentions_nobody(text: str) -> None:
    out = escape_markdown(text)
    assert not re.search(r"@[A-Za-z0-9]", out)
    assert not re.search(r"(?<!\\)[`*_<>\[\]|~#]", out.replace("\\\\", ""))


def test_the_status_card_says_when_a_cost_is_unknown_and_what_the_sandbox_refused() -> None:
    card = messages.StatusCard(
        status="review",
        attempt=2,
        max_attempts=5,
        attempts=[
            messages.AttemptLine(1, "first", "pushed", 0.0, cost_known=False),
            messages.AttemptLine(2, "ci_failure", "pushed", 0.0, refused=("github.com:443: no network", "10.0.0.1:80: local")),
        ],
        max_cost_usd=10.0,
    )
    body = messages.render_status_comment(card)
    assert messages.COST_UNKNOWN_NOTE in body
    assert "| pushed | unknown |" in body
    assert "**The sandbox refused** connections of attempt 2 to `github.com:443`, `10.0.0.1:80`." in body
    plain = messages.render_status_comment(messages.StatusCard(status="review", attempt=1, max_attempts=5))
    assert messages.COST_UNKNOWN_NOTE not in plain and "refused" not in plain


def test_merge_conflict_log_notes_read_back_whatever_their_wording():
    conflicts = messages.LOG_CONFLICTS.format(files="src/app.py, README.md")
    assert messages.conflicted_files_noted(conflicts) == "src/app.py, README.md"
    merged = messages.LOG_BASE_MERGED.format(base="main")
    assert messages.base_merged_noted(merged) and messages.conflicted_files_noted(merged) is None
    already = messages.LOG_BASE_ALREADY_MERGED.format(base="main")
    assert not messages.base_merged_noted(already) and messages.conflicted_files_noted(already) is None
    assert messages.conflicted_files_noted("the agent ended: done") is None
