"""CI classification and log extraction (SPEC §4.3)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.ci import (
    BOT_CHECK_NAME,
    CheckKind,
    CheckResult,
    CheckState,
    Verdict,
    also_fails_on_base,
    check_output_excerpt,
    combine_excerpts,
    counted_checks,
    decision_key,
    extract_failed_step,
    failed_step_lines,
    failure_category,
    settle,
    strip_timestamp,
    tail_bytes,
)

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
SHA = "a" * 40


def run(name: str, status: str = "completed", conclusion: str | None = "success", *, at: int = 0,
        kind: CheckKind = CheckKind.CHECK_RUN, app: str = "github-actions", sha: str = SHA,
        id: int | None = None) -> CheckResult:
    """A check result ``at`` minutes after T0."""
    return CheckResult(name=name, kind=kind, status=status, conclusion=conclusion, head_sha=sha,
                       app_slug=app, id=id, updated_at=T0 + timedelta(minutes=at))


def status(name: str, state: str, *, at: int = 0) -> CheckResult:
    return CheckResult(name=name, kind=CheckKind.STATUS, status=state, head_sha=SHA,
                       updated_at=T0 + timedelta(minutes=at))


# -- classification of single results ------------------------------------------------------

# (status, conclusion, kind, expected)
STATE_CASES = [
    ("queued", None, CheckKind.CHECK_RUN, CheckState.PENDING),
    ("in_progress", None, CheckKind.CHECK_RUN, CheckState.PENDING),
    ("waiting", None, CheckKind.WORKFLOW_JOB, CheckState.PENDING),
    ("requested", None, CheckKind.CHECK_RUN, CheckState.PENDING),
    ("pending", None, CheckKind.CHECK_RUN, CheckState.PENDING),
    ("completed", "success", CheckKind.CHECK_RUN, CheckState.PASSED),
    ("completed", "neutral", CheckKind.CHECK_RUN, CheckState.PASSED),
    ("completed", "skipped", CheckKind.WORKFLOW_JOB, CheckState.PASSED),
    ("completed", "failure", CheckKind.CHECK_RUN, CheckState.FAILED),
    ("completed", "timed_out", CheckKind.CHECK_RUN, CheckState.FAILED),
    ("completed", "startup_failure", CheckKind.CHECK_RUN, CheckState.FAILED),
    ("completed", "FAILURE", CheckKind.CHECK_RUN, CheckState.FAILED),
    ("completed", "cancelled", CheckKind.CHECK_RUN, CheckState.NOT_CODE),
    ("completed", "action_required", CheckKind.CHECK_RUN, CheckState.NOT_CODE),
    ("completed", "stale", CheckKind.CHECK_RUN, CheckState.NOT_CODE),
    ("completed", None, CheckKind.CHECK_RUN, CheckState.NOT_CODE),
    ("pending", None, CheckKind.STATUS, CheckState.PENDING),
    ("success", None, CheckKind.STATUS, CheckState.PASSED),
    ("failure", None, CheckKind.STATUS, CheckState.FAILED),
    ("error", None, CheckKind.STATUS, CheckState.FAILED),
]


@pytest.mark.parametrize("st,conclusion,kind,expected", STATE_CASES)
def test_check_state(st: str, conclusion: str | None, kind: CheckKind, expected: CheckState) -> None:
    check = CheckResult(name="x", kind=kind, status=st, conclusion=conclusion)
    assert check.state() is expected


def test_configured_failure_conclusions() -> None:
    cancelled = run("x", conclusion="cancelled")
    assert cancelled.state() is CheckState.NOT_CODE
    assert cancelled.state({"failure", "cancelled"}) is CheckState.FAILED
    assert run("x", conclusion="timed_out").state({"failure"}) is CheckState.NOT_CODE


# -- parsers over the real webhook payloads -------------------------------------------------


@pytest.fixture
def payload(shared_dir: Path) -> Callable[[str], dict[str, Any]]:
    """Load a GitHub webhook example by its path under shared/github/webhooks."""

    def load(path: str) -> dict[str, Any]:
        return json.loads((shared_dir / "github" / "webhooks" / path).read_text())

    return load


def test_from_check_runpayload(payload: Callable[[str], dict[str, Any]]) -> None:
    check = CheckResult.from_check_run(payload("check_run/completed.payload.json")["check_run"])
    assert check.name == "Octocoders-linter"
    assert check.kind is CheckKind.CHECK_RUN
    assert (check.status, check.conclusion) == ("completed", "success")
    assert check.head_sha == "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
    assert check.app_slug == "octocoders-linter"
    assert check.id == 128620228
    assert check.updated_at == datetime(2019, 5, 15, 15, 21, 12, tzinfo=UTC)
    assert check.is_actions is False
    assert check.state() is CheckState.PASSED


def test_from_statuspayload(payload: Callable[[str], dict[str, Any]]) -> None:
    check = CheckResult.from_status(payload("status/payload.json"))
    assert (check.name, check.kind, check.status) == ("default", CheckKind.STATUS, "success")
    assert check.head_sha == "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
    assert check.updated_at is not None and check.updated_at.tzinfo is not None
    assert check.is_completed


def test_from_workflow_jobpayload(payload: Callable[[str], dict[str, Any]]) -> None:
    job = payload("workflow_job/completed.failure.with-organization.payload.json")["workflow_job"]
    check = CheckResult.from_workflow_job(job)
    assert (check.name, check.kind, check.conclusion) == ("linters", CheckKind.WORKFLOW_JOB, "failure")
    assert check.is_actions and check.id == job["id"]
    assert check.state() is CheckState.FAILED
    queued = CheckResult.from_workflow_job(payload("workflow_job/queued.payload.json")["workflow_job"])
    assert queued.state() is CheckState.PENDING


def test_parsers_tolerate_missing_fields() -> None:
    assert CheckResult.from_check_run({}).name == ""
    assert CheckResult.from_check_run({"app": {"slug": "github-actions"}}).is_actions
    assert CheckResult.from_check_run({"completed_at": "not a date"}).updated_at is None
    assert CheckResult.from_status({}).status == ""
    assert CheckResult.from_workflow_job({}).kind is CheckKind.WORKFLOW_JOB


# -- settlement ------------------------------------------------------------------------------

NOW = T0 + timedelta(minutes=5)

# (id, checks, now offset in minutes, first_failure_at offset or None, verdict, failing, pending)
SETTLE_CASES = [
    ("all green", [run("test"), run("lint")], 5, None, Verdict.SUCCESS, (), ()),
    ("nothing reported", [], 5, None, Verdict.PENDING, (), ()),
    ("still running", [run("test"), run("lint", "in_progress", None)], 5, None, Verdict.PENDING, (), ("lint",)),
    ("queued", [run("test", "queued", None)], 5, None, Verdict.PENDING, (), ("test",)),
    ("failure", [run("test", conclusion="failure"), run("lint")], 5, None, Verdict.FAILURE, ("test",), ()),
    ("two failures sorted", [run("z", conclusion="failure"), run("a", conclusion="timed_out")], 5, None,
     Verdict.FAILURE, ("a", "z"), ()),
    ("startup failure", [run("build", conclusion="startup_failure")], 5, None, Verdict.FAILURE, ("build",), ()),
    ("failure waits for the rest", [run("test", conclusion="failure", at=0), run("e2e", "in_progress", None)],
     5, None, Verdict.PENDING, ("test",), ("e2e",)),
    ("failure settles 10 minutes after it happened",
     [run("test", conclusion="failure", at=0), run("e2e", "in_progress", None)], 10, None,
     Verdict.FAILURE, ("test",), ("e2e",)),
    ("recorded first failure counts", [run("test", conclusion="failure", at=8), run("e2e", "queued", None)],
     11, 0, Verdict.FAILURE, ("test",), ("e2e",)),
    ("9 minutes is not enough", [run("test", conclusion="failure", at=1), run("e2e", "queued", None)],
     10, None, Verdict.PENDING, ("test",), ("e2e",)),
    ("pending without failure never times out", [run("e2e", "in_progress", None)], 600, None,
     Verdict.PENDING, (), ("e2e",)),
    ("cancelled only", [run("test", conclusion="cancelled"), run("lint")], 5, None,
     Verdict.NOT_CODE_FAILURE, (), ()),
    ("action required", [run("deploy", conclusion="action_required")], 5, None, Verdict.NOT_CODE_FAILURE, (), ()),
    ("stale", [run("old", conclusion="stale")], 5, None, Verdict.NOT_CODE_FAILURE, (), ()),
    ("neutral and skipped pass", [run("a", conclusion="neutral"), run("b", conclusion="skipped")], 5, None,
     Verdict.SUCCESS, (), ()),
    ("failure beats cancelled", [run("a", conclusion="cancelled"), run("b", conclusion="failure")], 5, None,
     Verdict.FAILURE, ("b",), ()),
    ("status failure", [status("ci/jenkins", "failure")], 5, None, Verdict.FAILURE, ("ci/jenkins",), ()),
    ("status error", [status("ci/jenkins", "error")], 5, None, Verdict.FAILURE, ("ci/jenkins",), ()),
    ("status pending", [status("ci/jenkins", "pending"), run("test")], 5, None, Verdict.PENDING, (),
     ("ci/jenkins",)),
    ("bot check ignored", [run(BOT_CHECK_NAME, "in_progress", None), run("test")], 5, None, Verdict.SUCCESS,
     (), ()),
    ("bot check failure ignored", [run(BOT_CHECK_NAME, conclusion="failure")], 5, None, Verdict.PENDING, (), ()),
    ("ignored by config", [run("flaky", conclusion="failure"), run("test")], 5, None, Verdict.SUCCESS, (), ()),
    ("ignored by glob", [run("codecov/patch", conclusion="failure"), run("test")], 5, None, Verdict.SUCCESS,
     (), ()),
    ("check run and job for the same name count once",
     [run("test", conclusion="failure", at=1, kind=CheckKind.WORKFLOW_JOB),
      run("test", conclusion="failure", at=1)], 5, None, Verdict.FAILURE, ("test",), ()),
    ("newest wins: rerun passed",
     [run("test", conclusion="failure", at=1, id=1), run("test", conclusion="success", at=3, id=2)], 5, None,
     Verdict.SUCCESS, (), ()),
    ("newest wins: rerun running",
     [run("test", conclusion="failure", at=1, id=1), run("test", "in_progress", None, at=3, id=2)], 30, None,
     Verdict.PENDING, (), ("test",)),
    ("a tie goes to the completed result",
     [run("test", "in_progress", None, at=1, kind=CheckKind.WORKFLOW_JOB), run("test", conclusion="failure", at=1)],
     5, None, Verdict.FAILURE, ("test",), ()),
    ("status newest wins",
     [status("ci/x", "failure", at=1), status("ci/x", "success", at=2)], 5, None, Verdict.SUCCESS, (), ()),
    ("other sha ignored", [run("test", conclusion="failure", sha="b" * 40), run("lint")], 5, None,
     Verdict.SUCCESS, (), ()),
]


@pytest.mark.parametrize(
    "checks,now,first,verdict,failing,pending",
    [c[1:] for c in SETTLE_CASES],
    ids=[c[0] for c in SETTLE_CASES],
)
def test_settle(checks: list[CheckResult], now: int, first: int | None, verdict: Verdict,
                failing: tuple[str, ...], pending: tuple[str, ...]) -> None:
    result = settle(
        checks,
        now=T0 + timedelta(minutes=now),
        first_failure_at=None if first is None else T0 + timedelta(minutes=first),
        ignore=["flaky", "codecov/*"],
        head_sha=SHA,
    )
    assert result.verdict is verdict
    assert result.failing == failing
    assert result.pending == pending
    assert result.settled is (verdict is not Verdict.PENDING)


def test_settlement_reports_when_to_look_again() -> None:
    checks = [run("test", conclusion="failure", at=2), run("e2e", "in_progress", None)]
    result = settle(checks, now=T0 + timedelta(minutes=3), first_failure_at=None)
    assert result.verdict is Verdict.PENDING
    assert result.first_failure_at == T0 + timedelta(minutes=2)
    assert result.recheck_at == T0 + timedelta(minutes=12)
    later = settle(checks, now=result.recheck_at, first_failure_at=result.first_failure_at)
    assert later.verdict is Verdict.FAILURE


def test_first_failure_defaults_to_now_without_times() -> None:
    check = CheckResult(name="x", kind=CheckKind.STATUS, status="failure")
    pending = CheckResult(name="y", kind=CheckKind.STATUS, status="pending")
    result = settle([check, pending], now=NOW, first_failure_at=None)
    assert result.first_failure_at == NOW and result.recheck_at == NOW + timedelta(minutes=10)


def test_no_failure_clears_first_failure() -> None:
    result = settle([run("test", "in_progress", None)], now=NOW, first_failure_at=T0)
    assert result.first_failure_at is None and result.recheck_at is None


def test_custom_settle_timeout_and_conclusions() -> None:
    checks = [run("test", conclusion="cancelled", at=0), run("e2e", "queued", None)]
    result = settle(checks, now=T0 + timedelta(minutes=2), first_failure_at=None,
                    settle_timeout=timedelta(minutes=1), failure_conclusions=["failure", "cancelled"])
    assert result.verdict is Verdict.FAILURE and result.failing == ("test",)


def test_settlement_lists_and_failing_checks() -> None:
    checks = [run("b", conclusion="failure", id=7), run("a"), run("c", conclusion="cancelled")]
    result = settle(checks, now=NOW, first_failure_at=None)
    assert result.passed == ("a",) and result.not_code == ("c",) and result.failing == ("b",)
    assert [c.id for c in result.failing_checks()] == [7]
    assert result.failure_category == "ci_failure:b"


def test_bot_app_checks_are_dropped_by_slug() -> None:
    checks = [run("summary", conclusion="failure", app="patchwright-dev"), run("test")]
    assert [c.name for c in counted_checks(checks, bot_app_slug="patchwright-dev")] == ["test"]
    assert settle(checks, now=NOW, first_failure_at=None, bot_app_slug="patchwright-dev").verdict is Verdict.SUCCESS


def test_ignore_exact_name_with_glob_characters() -> None:
    checks = [run("test (3.11) [linux]", conclusion="failure")]
    assert counted_checks(checks, ignore=["test (3.11) [linux]"]) == []


def test_the_three_event_kinds_yield_one_decision_key() -> None:
    keys = {decision_key("Octo/Repo", SHA.upper()), decision_key("octo/repo", SHA)}
    assert keys == {f"ci:octo/repo@{SHA}"}
    assert decision_key("octo/repo", "b" * 40) not in keys


def test_failure_category() -> None:
    assert failure_category(["test", "lint", "build"]) == "ci_failure:build,lint,test"
    assert failure_category(("lint", "lint")) == "ci_failure:lint"
    assert failure_category([]) == "ci_failure:"


# (pr failing, base failing, expected)
BASE_CASES = [
    (["test"], ["test"], True),
    (["test"], ["test", "lint"], True),
    (["test", "lint"], ["test"], False),
    (["test"], [], False),
    ([], ["test"], False),
    ([], [], False),
]


@pytest.mark.parametrize("pr,base,expected", BASE_CASES)
def test_also_fails_on_base(pr: list[str], base: list[str], expected: bool) -> None:
    assert also_fails_on_base(pr, base) is expected


# -- log extraction ---------------------------------------------------------------------------


def ts(second: int) -> str:
    return f"2024-05-01T10:00:{second:02d}.{second * 1234567 % 10_000_000:07d}Z "


ACTIONS_LOG_LINES = [
    "\ufeff" + ts(0) + "Current runner version: '2.316.1'",
    ts(0) + "##[group]Operating System",
    ts(0) + "Ubuntu",
    ts(0) + "22.04.4",
    ts(0) + "##[endgroup]",
    ts(1) + "##[group]Runner Image",
    ts(1) + "Image: ubuntu-22.04",
    ts(1) + "##[endgroup]",
    ts(2) + "Prepare workflow directory",
    ts(2) + "Download action repository 'actions/checkout@v4' (SHA:0ad4b8fa)",
    ts(3) + "##[group]Run actions/checkout@v4",
    ts(3) + "with:",
    ts(3) + "  repository: octo/repo",
    ts(3) + "##[endgroup]",
    ts(4) + "Syncing repository: octo/repo",
    ts(4) + "##[group]Getting Git version info",
    ts(4) + "git version 2.45.1",
    ts(4) + "##[endgroup]",
    ts(5) + "##[group]Run actions/setup-python@v5",
    ts(5) + "with:",
    ts(5) + "  python-version: 3.11",
    ts(5) + "##[endgroup]",
    ts(6) + "Successfully set up CPython (3.11.9)",
    ts(7) + "##[group]Run pip install -e .[test]",
    ts(7) + "pip install -e .[test]",
    ts(7) + "shell: /usr/bin/bash -e {0}",
    ts(7) + "##[endgroup]",
    ts(8) + "Successfully installed patchwright-0.1.0",
    ts(9) + "##[group]Run pytest",
    ts(9) + "pytest -q",
    ts(9) + "shell: /usr/bin/bash -e {0}",
    ts(9) + "##[endgroup]",
    ts(10) + "============================= test session starts ==============================",
    ts(10) + "collected 42 items",
    ts(11) + "tests/test_parser.py ....F.....                                            [100%]",
    ts(11) + "=================================== FAILURES ===================================",
    ts(11) + "_______________________________ test_parse_empty _______________________________",
    ts(11) + "    def test_parse_empty():",
    ts(11) + ">       assert parse('') == []",
    ts(11) + "E       AssertionError: assert None == []",
    ts(11) + "tests/test_parser.py:12: AssertionError",
    ts(12) + "=========================== short test summary info ============================",
    ts(12) + "FAILED tests/test_parser.py::test_parse_empty - AssertionError: assert None == []",
    ts(12) + "========================= 1 failed, 41 passed in 0.42s =========================",
    ts(12) + "##[error]Process completed with exit code 1.",
    ts(13) + "Post job cleanup.",
    ts(13) + "[command]/usr/bin/git version",
    ts(13) + "git version 2.45.1",
    ts(14) + "Cleaning up orphan processes",
]
ACTIONS_LOG = "\r\n".join(ACTIONS_LOG_LINES) + "\r\n"


def test_extract_failed_step_from_a_realistic_log() -> None:
    excerpt = extract_failed_step(ACTIONS_LOG)
    lines = excerpt.split("\n")
    assert lines[0] == "##[group]Run pytest"
    assert lines[-1] == "##[error]Process completed with exit code 1."
    assert "E       AssertionError: assert None == []" in lines
    assert "Successfully installed patchwright-0.1.0" not in excerpt  # the previous step
    assert "Post job cleanup." not in excerpt and "Cleaning up" not in excerpt
    assert "2024-05-01T" not in excerpt and "\r" not in excerpt


def test_extract_failed_step_from_bytes() -> None:
    assert extract_failed_step(ACTIONS_LOG.encode()) == extract_failed_step(ACTIONS_LOG)


def test_failed_step_keeps_groups_printed_inside_the_step() -> None:
    log = "\n".join([
        ts(1) + "##[group]Run make test",
        ts(1) + "make test",
        ts(1) + "##[endgroup]",
        ts(2) + "##[group]Compiling",
        ts(2) + "cc -o x x.c",
        ts(2) + "##[endgroup]",
        ts(3) + "x.c:3: error: expected ';'",
        ts(3) + "##[error]Process completed with exit code 2.",
    ])
    assert failed_step_lines(log)[0] == "##[group]Run make test"
    assert "cc -o x x.c" in failed_step_lines(log)


def test_without_error_the_last_group_is_taken() -> None:
    log = "\n".join([
        ts(1) + "##[group]Run one",
        ts(1) + "first",
        ts(2) + "##[group]Run two",
        ts(2) + "second",
    ])
    assert extract_failed_step(log) == "##[group]Run two\nsecond"


def test_groups_without_run_steps_split_sections() -> None:
    log = "##[group]Setup\nsetup\n##[group]Tests\nboom\n##[error]failed\n"
    assert extract_failed_step(log) == "##[group]Tests\nboom\n##[error]failed"


def test_log_without_markers_is_one_section() -> None:
    assert extract_failed_step("a\nb\nc\n") == "a\nb\nc"
    assert extract_failed_step("") == ""
    assert extract_failed_step(b"") == ""


def test_error_before_the_first_step() -> None:
    log = "Download action repository\n##[error]Unable to resolve action\n##[group]Run later\nx\n"
    assert extract_failed_step(log) == "Download action repository\n##[error]Unable to resolve action"


def test_last_error_wins() -> None:
    log = "##[group]Run a\n##[error]warning-ish\nok\n##[group]Run b\nbad\n##[error]Process completed with exit code 1.\n"
    assert extract_failed_step(log) == "##[group]Run b\nbad\n##[error]Process completed with exit code 1."


@pytest.mark.parametrize(
    "line,expected",
    [
        ("2024-05-01T10:00:00.1234567Z hello", "hello"),
        ("2024-05-01T10:00:00Z hello", "hello"),
        ("2024-05-01T10:00:00.1Z ", ""),
        ("\ufeff2024-05-01T10:00:00.1234567Z hello", "hello"),
        ("2024-05-01T10:00:00+00:00 hello", "hello"),
        ("not a timestamp 2024-05-01T10:00:00Z", "not a timestamp 2024-05-01T10:00:00Z"),
        ("  indented", "  indented"),
    ],
)
def test_strip_timestamp(line: str, expected: str) -> None:
    assert strip_timestamp(line) == expected


def _step(body_lines: list[str]) -> str:
    lines = [ts(1) + "##[group]Run pytest", ts(1) + "##[endgroup]"]
    lines += [ts(2) + line for line in body_lines]
    lines.append(ts(3) + "##[error]Process completed with exit code 1.")
    return "\n".join(lines) + "\n"


def test_at_most_150_lines_from_the_end() -> None:
    log = _step([f"line {i}" for i in range(1000)])
    lines = extract_failed_step(log).split("\n")
    assert len(lines) == 150
    assert lines[-1] == "##[error]Process completed with exit code 1."
    assert lines[0] == "line 851"


def test_custom_line_limit() -> None:
    log = _step([f"line {i}" for i in range(10)])
    assert extract_failed_step(log, max_lines=2) == "line 9\n##[error]Process completed with exit code 1."


def test_at_most_8_kib_from_the_end() -> None:
    log = _step(["x" * 100 + f" {i}" for i in range(140)])
    excerpt = extract_failed_step(log)
    assert len(excerpt.encode()) <= 8192
    assert len(excerpt.encode()) > 8192 - 110  # filled up to the limit
    assert excerpt.endswith("x 139\n##[error]Process completed with exit code 1.")


def test_byte_limit_never_cuts_a_character() -> None:
    # 3-byte and 4-byte characters so that the 8 KiB boundary falls inside one.
    for body in (["€" * 5000], ["😀" * 3000], ["a€😀" * 2000]):
        excerpt = extract_failed_step(_step(body))
        data = excerpt.encode("utf-8")
        assert len(data) <= 8192
        assert len(data) >= 8192 - 3
        assert "\ufffd" not in excerpt
        assert excerpt.endswith("##[error]Process completed with exit code 1.")


def test_a_single_huge_line_keeps_its_end() -> None:
    huge = "".join(f"{i:06d}," for i in range(10_000))  # 70 KB on one line
    excerpt = extract_failed_step(huge, max_bytes=1000)
    assert len(excerpt.encode()) == 1000
    assert huge.endswith(excerpt)
    assert excerpt.endswith("009999,")


def test_byte_limit_from_bytes_input_with_invalid_utf8() -> None:
    data = b"##[group]Run x\n" + b"\xff\xfe bad bytes\n" + "é".encode() * 10 + b"\n##[error]boom\n"
    excerpt = extract_failed_step(data, max_bytes=19)  # the cut falls inside an é
    assert excerpt == "éé\n##[error]boom"
    assert "\ufffd" in extract_failed_step(data)


@pytest.mark.parametrize("limit", [0, 1, 2, 3, 4, 5, 8192])
def test_tail_bytes(limit: int) -> None:
    text = "a€😀b"  # 1 + 3 + 4 + 1 bytes
    out = tail_bytes(text, limit)
    assert len(out.encode()) <= limit
    assert text.endswith(out)


def test_tail_bytes_values() -> None:
    assert tail_bytes("a€😀b", 5) == "😀b"
    assert tail_bytes("a€😀b", 4) == "b"
    assert tail_bytes("a€😀b", 9) == "a€😀b"


# -- non-Actions check output ------------------------------------------------------------------


def test_check_output_excerpt() -> None:
    annotations = [
        {"path": "src/app.py", "start_line": 12, "end_line": 12, "annotation_level": "failure",
         "message": "undefined name 'foo'", "title": "F821"},
        {"path": "src/util.py", "start_line": 3, "end_line": 5, "annotation_level": "warning",
         "message": "too complex", "raw_details": "complexity 12 > 10"},
    ]
    excerpt = check_output_excerpt("Lint failed", "2 problems", "full report here", annotations)
    assert excerpt.split("\n\n") == [
        "Lint failed",
        "2 problems",
        (
            "Annotations:\n- src/app.py:12 [failure] F821: undefined name 'foo'\n"
            "- src/util.py:3-5 [warning] too complex\n  complexity 12 > 10"
        ),
        "full report here",
    ]


def test_check_output_excerpt_empty_parts_and_bytes() -> None:
    assert check_output_excerpt(None, "", None, []) == ""
    assert check_output_excerpt(b"Title", None, b"text", []) == "Title\n\ntext"


def test_check_output_excerpt_is_limited() -> None:
    excerpt = check_output_excerpt("T", "S", "é" * 10_000, [], max_bytes=1001)
    assert excerpt.startswith("T\n\nS\n\n")
    assert len(excerpt.encode()) <= 1001 and "\ufffd" not in excerpt


# -- combining several excerpts ------------------------------------------------------------------


def test_combine_small_parts_fits_unchanged() -> None:
    out = combine_excerpts([("test", "boom"), ("lint", b"E501")])
    assert out == "### test\nboom\n\n### lint\nE501"


def test_combine_keeps_total_under_limit_and_shares_fairly() -> None:
    big = "\n".join(f"line {i}" for i in range(5000))
    parts = [("test (3.11)", big), ("lint", "short failure"), ("e2e", big)]
    out = combine_excerpts(parts)
    assert len(out.encode()) <= 8192
    assert len(out.encode()) > 8000
    blocks = out.split("\n\n### ")
    assert [b.split("\n", 1)[0].lstrip("# ") for b in blocks] == ["test (3.11)", "lint", "e2e"]
    assert "short failure" in out
    sizes = [len(b.encode()) for b in blocks]
    assert abs(sizes[0] - sizes[2]) < 20  # the two big ones share equally
    assert out.endswith("line 4999")  # each keeps its end


def test_combine_multibyte_and_limits() -> None:
    parts = [(f"job {i}", "😀" * 3000) for i in range(5)]
    for limit in (8192, 1000, 100, 10, 1):
        out = combine_excerpts(parts, max_bytes=limit)
        assert len(out.encode()) <= limit
        assert "\ufffd" not in out


def test_combine_nothing() -> None:
    assert combine_excerpts([]) == ""
    assert combine_excerpts([("x", "y")], max_bytes=0) == ""


def test_combine_heading_name_is_one_line() -> None:
    assert combine_excerpts([("a\nb", "c")]) == "### a b\nc"


def test_a_heads_ci_state_from_the_recorded_facts():
    from bot.ci import (
        FAILS_ON_BASE_FACT,
        PASSED_FACT,
        HeadState,
        ci_fact,
        head_fact_keys,
        head_state_from,
    )

    assert head_fact_keys("o/r", "abc") == ("ci-passed:o/r:abc", "ci-not-code:o/r:abc", "ci-base:o/r:abc")
    assert head_state_from(set(), "o/r", "abc") is HeadState.PENDING
    assert head_state_from({ci_fact(PASSED_FACT, "o/r", "abc")}, "o/r", "abc") is HeadState.PASSING
    assert head_state_from({ci_fact(FAILS_ON_BASE_FACT, "o/r", "abc")}, "o/r", "abc") is HeadState.FAILING
    assert head_state_from({ci_fact(PASSED_FACT, "o/r", "other")}, "o/r", "abc") is HeadState.PENDING
