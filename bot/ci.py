"""CI classification (SPEC §4.3). Pure, no I/O.

Check runs, commit statuses and workflow jobs for one head SHA are turned into
:class:`CheckResult` values, then :func:`settle` decides whether the set has settled and how:
pending, success, a code failure (names the failing checks), or a failure that is not the
code's fault (cancelled, waiting for approval, stale). The log helpers cut the retry context
out of GitHub Actions job logs and check run output.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

BOT_CHECK_NAME = "patchwright"
"""The name of the check run the bot creates on its own heads; never counts as CI."""

ACTIONS_APP_SLUG = "github-actions"

DEFAULT_FAILURE_CONCLUSIONS = frozenset({"failure", "timed_out", "startup_failure"})
"""Conclusions that are the code's fault and start a CI retry."""

PASSING_CONCLUSIONS = frozenset({"success", "neutral", "skipped"})
"""Conclusions that GitHub treats as passing for required checks."""

STATUS_FAILURE_STATES = frozenset({"failure", "error"})
"""Commit status states that are failures (``pending`` is unsettled, ``success`` passes)."""

DEFAULT_SETTLE_TIMEOUT = timedelta(minutes=10)

LOG_MAX_LINES = 150
LOG_MAX_BYTES = 8192


class CheckKind(str, enum.Enum):
    CHECK_RUN = "check_run"
    STATUS = "status"
    WORKFLOW_JOB = "workflow_job"

    def __str__(self) -> str:
        return self.value


class CheckState(str, enum.Enum):
    """What one check means for the PR."""

    PENDING = "pending"  # queued, in progress, waiting…
    PASSED = "passed"
    FAILED = "failed"  # a code failure: counts for a CI retry
    NOT_CODE = "not_code"  # cancelled, action_required, stale…: recorded, no retry

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One CI result for a commit, whatever GitHub object it came from.

    ``status`` is the check run / workflow job ``status`` (``queued``, ``in_progress``,
    ``completed``…) or, for a commit status, its ``state`` (``pending``, ``success``,
    ``failure``, ``error``); ``conclusion`` is set for completed check runs and jobs.
    """

    name: str
    kind: CheckKind
    status: str
    conclusion: str | None = None
    head_sha: str = ""
    app_slug: str = ""
    id: int | None = None  # check run id, workflow job id or commit status id
    details_url: str = ""
    updated_at: datetime | None = None
    output_title: str = ""
    output_summary: str = ""
    output_text: str = ""
    annotations_count: int = 0

    @property
    def is_actions(self) -> bool:
        """Whether this is a GitHub Actions job (its log can be downloaded by ``id``)."""
        return self.kind is CheckKind.WORKFLOW_JOB or self.app_slug == ACTIONS_APP_SLUG

    @property
    def is_completed(self) -> bool:
        if self.kind is CheckKind.STATUS:
            return self.status != "pending"
        return self.status == "completed"

    def state(
        self, failure_conclusions: Iterable[str] = DEFAULT_FAILURE_CONCLUSIONS
    ) -> CheckState:
        """Classify this result (``failure_conclusions`` from the repo config)."""
        failing = frozenset(failure_conclusions)
        if self.kind is CheckKind.STATUS:
            if self.status == "pending":
                return CheckState.PENDING
            if self.status in STATUS_FAILURE_STATES:
                return CheckState.FAILED
            return (
                CheckState.PASSED if self.status == "success" else CheckState.NOT_CODE
            )
        if self.status != "completed":
            return CheckState.PENDING
        conclusion = (self.conclusion or "").lower()
        if conclusion in failing:
            return CheckState.FAILED
        if conclusion in PASSING_CONCLUSIONS:
            return CheckState.PASSED
        return CheckState.NOT_CODE

    # -- parsers for GitHub's REST / webhook shapes --------------------------------------

    @classmethod
    def from_check_run(cls, run: Mapping[str, Any]) -> CheckResult:
        """From a check run object (``check_run`` webhook field or REST)."""
        output = run.get("output") or {}
        app = run.get("app") or {}
        return cls(
            name=str(run.get("name") or ""),
            kind=CheckKind.CHECK_RUN,
            status=str(run.get("status") or ""),
            conclusion=run.get("conclusion"),
            head_sha=str(run.get("head_sha") or ""),
            app_slug=_app_slug(app),
            id=run.get("id"),
            details_url=str(run.get("details_url") or run.get("html_url") or ""),
            updated_at=_parse_time(run.get("completed_at") or run.get("started_at")),
            output_title=str(output.get("title") or ""),
            output_summary=str(output.get("summary") or ""),
            output_text=str(output.get("text") or ""),
            annotations_count=int(output.get("annotations_count") or 0),
        )

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> CheckResult:
        """From a commit status (``status`` webhook payload or REST list item)."""
        return cls(
            name=str(status.get("context") or ""),
            kind=CheckKind.STATUS,
            status=str(status.get("state") or ""),
            head_sha=str(status.get("sha") or ""),
            id=status.get("id"),
            details_url=str(status.get("target_url") or ""),
            updated_at=_parse_time(
                status.get("updated_at") or status.get("created_at")
            ),
            output_summary=str(status.get("description") or ""),
        )

    @classmethod
    def from_workflow_job(cls, job: Mapping[str, Any]) -> CheckResult:
        """From a workflow job (``workflow_job`` webhook field or REST)."""
        return cls(
            name=str(job.get("name") or ""),
            kind=CheckKind.WORKFLOW_JOB,
            status=str(job.get("status") or ""),
            conclusion=job.get("conclusion"),
            head_sha=str(job.get("head_sha") or ""),
            app_slug=ACTIONS_APP_SLUG,
            id=job.get("id"),
            details_url=str(job.get("html_url") or ""),
            updated_at=_parse_time(
                job.get("completed_at")
                or job.get("started_at")
                or job.get("created_at")
            ),
        )


def _app_slug(app: Mapping[str, Any]) -> str:
    """The app's slug; older payloads lack ``slug`` but link ``/apps/<slug>``."""
    slug = app.get("slug")
    if slug:
        return str(slug)
    url = str(app.get("html_url") or "")
    return url.rstrip("/").rsplit("/apps/", 1)[1] if "/apps/" in url else ""


def _parse_time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


# -- settlement ---------------------------------------------------------------------------


class Verdict(str, enum.Enum):
    PENDING = "pending"  # something still runs (or nothing reported yet)
    SUCCESS = "success"
    FAILURE = "failure"  # a code failure: a CI retry (subject to the budget rules)
    NOT_CODE_FAILURE = (
        "not_code_failure"  # cancelled / action_required / stale: record only
    )

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Settlement:
    """The decision for one head SHA's check set. Name tuples are sorted."""

    verdict: Verdict
    failing: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    not_code: tuple[str, ...] = ()
    passed: tuple[str, ...] = ()
    first_failure_at: datetime | None = None  # persist it to decide the timeout later
    recheck_at: datetime | None = (
        None  # when a pending set with failures settles by timeout
    )
    checks: tuple[CheckResult, ...] = field(
        default=()
    )  # the counted checks, deduplicated

    @property
    def settled(self) -> bool:
        return self.verdict is not Verdict.PENDING

    @property
    def failure_category(self) -> str:
        return failure_category(self.failing)

    def failing_checks(self) -> tuple[CheckResult, ...]:
        """The counted checks whose names are in ``failing`` (to fetch logs for)."""
        names = set(self.failing)
        return tuple(c for c in self.checks if c.name in names)


def is_ignored(name: str, ignore: Iterable[str]) -> bool:
    """Whether ``name`` equals an ``ignore`` entry or matches it as a glob (``lint*``)."""
    return any(
        name == pattern or fnmatch.fnmatchcase(name, pattern) for pattern in ignore
    )


def counted_checks(
    checks: Iterable[CheckResult],
    *,
    ignore: Iterable[str] = (),
    bot_check_name: str = BOT_CHECK_NAME,
    bot_app_slug: str = "",
    head_sha: str | None = None,
) -> list[CheckResult]:
    """The checks that count: not ignored, not the bot's own, for ``head_sha`` when given,
    one per name (the newest wins; a completed result wins a tie)."""
    ignore = tuple(ignore)
    newest: dict[str, CheckResult] = {}
    for check in checks:
        if (
            not check.name
            or check.name == bot_check_name
            or is_ignored(check.name, ignore)
        ):
            continue
        if bot_app_slug and check.app_slug and check.app_slug == bot_app_slug:
            continue
        if (
            head_sha is not None
            and check.head_sha
            and check.head_sha.lower() != head_sha.lower()
        ):
            continue
        current = newest.get(check.name)
        if current is None or _newer(check, current):
            newest[check.name] = check
    return [newest[name] for name in sorted(newest)]


def _newer(candidate: CheckResult, current: CheckResult) -> bool:
    def rank(c: CheckResult) -> tuple[float, bool, int]:
        when = c.updated_at.timestamp() if c.updated_at is not None else float("-inf")
        return (when, c.is_completed, c.id or 0)

    return rank(candidate) > rank(current)


def settle(
    checks: Iterable[CheckResult],
    *,
    now: datetime,
    first_failure_at: datetime | None,
    settle_timeout: timedelta = DEFAULT_SETTLE_TIMEOUT,
    ignore: Iterable[str] = (),
    failure_conclusions: Iterable[str] = DEFAULT_FAILURE_CONCLUSIONS,
    bot_check_name: str = BOT_CHECK_NAME,
    bot_app_slug: str = "",
    head_sha: str | None = None,
) -> Settlement:
    """Decide what a head SHA's check set means.

    PENDING while any counted check is queued or in progress, unless a check failed and
    ``settle_timeout`` has passed since the first failure (``first_failure_at`` as recorded
    by the caller, or the earliest failing check's completion time if that is earlier);
    then FAILURE naming the failing checks, SUCCESS when every check passed, and
    NOT_CODE_FAILURE when nothing failed but something was cancelled, needs approval or
    went stale. No counted checks at all is PENDING.
    """
    failing_set = frozenset(c.lower() for c in failure_conclusions)
    counted = counted_checks(
        checks,
        ignore=ignore,
        bot_check_name=bot_check_name,
        bot_app_slug=bot_app_slug,
        head_sha=head_sha,
    )
    groups: dict[CheckState, list[str]] = {state: [] for state in CheckState}
    for check in counted:
        groups[check.state(failing_set)].append(check.name)
    failing = tuple(groups[CheckState.FAILED])
    pending = tuple(groups[CheckState.PENDING])
    first = first_failure_at
    if failing:
        times = [
            c.updated_at
            for c in counted
            if c.name in failing and c.updated_at is not None and c.updated_at <= now
        ]
        candidates = [
            t for t in (first, min(times) if times else None) if t is not None
        ]
        first = min(candidates) if candidates else now
    not_code = tuple(groups[CheckState.NOT_CODE])

    def decide(verdict: Verdict, recheck_at: datetime | None = None) -> Settlement:
        return Settlement(
            verdict,
            failing=failing,
            pending=pending,
            not_code=not_code,
            passed=tuple(groups[CheckState.PASSED]),
            first_failure_at=first if failing else None,
            recheck_at=recheck_at,
            checks=tuple(counted),
        )

    if not counted:
        return decide(Verdict.PENDING)
    if pending:
        if failing and first is not None:
            if now - first >= settle_timeout:
                return decide(Verdict.FAILURE)
            return decide(Verdict.PENDING, recheck_at=first + settle_timeout)
        return decide(Verdict.PENDING)
    if failing:
        return decide(Verdict.FAILURE)
    if not_code:
        return decide(Verdict.NOT_CODE_FAILURE)
    return decide(Verdict.SUCCESS)


def decision_key(repo: str, head_sha: str) -> str:
    """The key under which the CI decision for one PR head is taken exactly once."""
    return f"ci:{repo.lower()}@{head_sha.lower()}"


#: The one-time facts the CI evaluation records for a head the bot pushed
#: (:meth:`bot.store.base.Store.record_fact`); :func:`ci_fact` fills one in.
PASSED_FACT = "ci-passed"  # CI passed
NOT_CODE_FACT = "ci-not-code"  # failed for a reason that is not the code's (no retry)
FAILS_ON_BASE_FACT = "ci-base"  # failed, and fails on the base branch too (no retry)


def ci_fact(kind: str, repo: str, head_sha: str) -> str:
    """The fact key of ``kind`` (:data:`PASSED_FACT`…) for ``repo``'s head ``head_sha``."""
    return f"{kind}:{repo}:{head_sha}"


class HeadState(str, enum.Enum):
    """The CI state of a task's head in review, as the dashboard shows it."""

    PASSING = "passing"
    FAILING = "failing"  # failed, not the code's fault (a code failure leaves review for a retry)
    PENDING = "pending"  # not settled (or not evaluated yet)

    def __str__(self) -> str:
        return self.value


#: The facts that say a head's CI failed for a reason that is not its code's.
_FAILED_FACTS = (NOT_CODE_FACT, FAILS_ON_BASE_FACT)


def head_fact_keys(repo: str, head_sha: str) -> tuple[str, ...]:
    """Every fact key :func:`head_state_from` reads for one head."""
    return tuple(ci_fact(kind, repo, head_sha) for kind in (PASSED_FACT, *_FAILED_FACTS))


def head_state_from(recorded: Container[str], repo: str, head_sha: str) -> HeadState:
    """A head's state from the set of fact keys that were recorded (:func:`head_fact_keys`)."""
    if ci_fact(PASSED_FACT, repo, head_sha) in recorded:
        return HeadState.PASSING
    if any(ci_fact(kind, repo, head_sha) in recorded for kind in _FAILED_FACTS):
        return HeadState.FAILING
    return HeadState.PENDING


def failure_category(names: Iterable[str]) -> str:
    """``ci_failure:`` + the sorted, distinct failing check names joined by ``,``."""
    return "ci_failure:" + ",".join(sorted(set(names)))


def also_fails_on_base(pr_failing: Iterable[str], base_failing: Iterable[str]) -> bool:
    """True when every check failing on the PR also fails on the base branch's latest commit
    (so the failure is not the PR's fault). False when nothing fails on the PR."""
    pr = set(pr_failing)
    return bool(pr) and pr <= set(base_failing)


# -- log excerpts -------------------------------------------------------------------------

_TIMESTAMP = re.compile(
    r"^\ufeff?\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}) ?"
)
_GROUP = "##[group]"
_ERROR = "##[error]"


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def strip_timestamp(line: str) -> str:
    """``line`` without the ISO 8601 timestamp GitHub Actions puts before every log line."""
    return _TIMESTAMP.sub("", line, count=1)


def tail_bytes(text: str, max_bytes: int) -> str:
    """The longest end of ``text`` that is at most ``max_bytes`` in UTF-8, cut on a character."""
    if max_bytes <= 0:
        return ""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    cut = len(data) - max_bytes
    while cut < len(data) and data[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte
        cut += 1
    return data[cut:].decode("utf-8")


def head_bytes(text: str, max_bytes: int) -> str:
    """The longest start of ``text`` that is at most ``max_bytes`` in UTF-8, cut on a character."""
    if max_bytes <= 0:
        return ""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", errors="ignore")


def _sections(lines: list[str]) -> list[tuple[int, int]]:
    """``(start, end)`` ranges of the step sections, each starting at a ``##[group]`` line.

    Steps start with ``##[group]Run …``; when the log has such lines, only they split
    sections (so groups a step prints itself stay inside it), else every group does.
    """
    stripped = [line.lstrip() for line in lines]
    starts = [i for i, s in enumerate(stripped) if s.startswith(_GROUP + "Run ")]
    if not starts:
        starts = [i for i, s in enumerate(stripped) if s.startswith(_GROUP)]
    bounds = starts + [len(lines)]
    return [(bounds[i], bounds[i + 1]) for i in range(len(starts))]


def failed_step_lines(log_text: str | bytes) -> list[str]:
    """The lines of the failed step of an Actions job log, timestamps removed.

    The failed step is the section holding the last ``##[error]`` line (cut after that
    line: what follows is the runner's post-job cleanup), else the last section; a log
    without ``##[group]`` markers is one section.
    """
    lines = [strip_timestamp(line) for line in _text(log_text).splitlines()]
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    errors = [i for i, line in enumerate(lines) if line.lstrip().startswith(_ERROR)]
    sections = _sections(lines) or [(0, len(lines))]
    if errors:
        last_error = errors[-1]
        start = max((s for s, _ in sections if s <= last_error), default=0)
        return lines[start : last_error + 1]
    start, end = sections[-1]
    return lines[start:end]


def extract_failed_step(
    log_text: str | bytes,
    *,
    max_lines: int = LOG_MAX_LINES,
    max_bytes: int = LOG_MAX_BYTES,
) -> str:
    """The failed step of an Actions job log: its last ``max_lines`` lines, at most
    ``max_bytes`` of UTF-8 counted from the end (a single huge line keeps its end)."""
    lines = failed_step_lines(log_text)
    while lines and not lines[-1].strip():
        lines.pop()
    kept = lines[-max_lines:] if max_lines > 0 else []
    return tail_bytes("\n".join(kept), max_bytes)


def check_output_excerpt(
    title: str | bytes | None,
    summary: str | bytes | None,
    text: str | bytes | None,
    annotations: Sequence[Mapping[str, Any]] = (),
    *,
    max_bytes: int = LOG_MAX_BYTES,
) -> str:
    """The retry context of a non-Actions check: title, summary, annotations (``path:line``,
    level, message) and the output text, at most ``max_bytes`` (the start is kept)."""
    parts: list[str] = []
    if _text(title).strip():
        parts.append(_text(title).strip())
    if _text(summary).strip():
        parts.append(_text(summary).strip())
    rendered = [_annotation_line(a) for a in annotations]
    if rendered:
        parts.append("Annotations:\n" + "\n".join(rendered))
    if _text(text).strip():
        parts.append(_text(text).strip())
    return head_bytes("\n\n".join(parts), max_bytes)


def _annotation_line(annotation: Mapping[str, Any]) -> str:
    path = str(annotation.get("path") or "")
    start = annotation.get("start_line")
    end = annotation.get("end_line")
    where = path
    if start:
        where += f":{start}" + (f"-{end}" if end and end != start else "")
    level = str(annotation.get("annotation_level") or "notice")
    title = str(annotation.get("title") or "").strip()
    message = str(annotation.get("message") or "").strip()
    details = str(annotation.get("raw_details") or "").strip()
    line = f"- {where} [{level}]"
    if title:
        line += f" {title}:"
    if message:
        line += f" {message}"
    if details:
        line += "\n  " + details.replace("\n", "\n  ")
    return line


def combine_excerpts(
    parts: Sequence[tuple[str, str | bytes]], *, max_bytes: int = LOG_MAX_BYTES
) -> str:
    """Several ``(check name, excerpt)`` pairs in one text of at most ``max_bytes``.

    Each part gets a ``### name`` heading; the budget is shared fairly (a short part leaves
    its unused share to the others) and each excerpt keeps its end when cut.
    """
    items = [
        (f"### {' '.join(name.split())}\n", _text(body).strip("\n"))
        for name, body in parts
    ]
    if not items or max_bytes <= 0:
        return ""
    separator = "\n\n"
    sep_len = len(separator)
    # Headings first: drop trailing parts whose heading alone no longer fits.
    heads_total = 0
    kept: list[tuple[str, str]] = []
    for heading, body in items:
        extra = len(heading.encode()) + (sep_len if kept else 0)
        if heads_total + extra > max_bytes:
            break
        heads_total += extra
        kept.append((heading, body))
    if not kept:
        return tail_bytes(items[0][0] + items[0][1], max_bytes)
    remaining = max_bytes - heads_total
    sizes = [len(body.encode()) for _, body in kept]
    allowed = _fair_shares(sizes, remaining)
    blocks = [
        (heading + tail_bytes(body, share)).rstrip("\n")
        for (heading, body), share in zip(kept, allowed)
    ]
    return separator.join(blocks)


def _fair_shares(sizes: list[int], budget: int) -> list[int]:
    """Split ``budget`` so that small items get all they need and big ones share the rest."""
    shares = [0] * len(sizes)
    open_items = sorted(range(len(sizes)), key=lambda i: sizes[i])
    left = budget
    while open_items:
        each = left // len(open_items)
        smallest = open_items[0]
        if sizes[smallest] <= each:
            shares[smallest] = sizes[smallest]
            left -= sizes[smallest]
            open_items.pop(0)
            continue
        for i in open_items:
            shares[i] = each
        break
    return shares
