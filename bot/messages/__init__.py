"""Every user-visible string (SPEC §8): markers, the status comment, the task card, the PR
body section, help, refusals, questions and the ``patchwright`` check run. Pure renderers.

Text that comes from users, agents or logs (errors, questions, summaries) is escaped or
fenced so it cannot break the layout, forge a marker or mention anyone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

STATUS_MARKER = "<!-- patchwright:status -->"
SUMMARY_START = "<!-- patchwright:summary -->"
SUMMARY_END = "<!-- /patchwright:summary -->"
ADDRESSED_IN = "Addressed in {sha}."
DEFAULT_MENTION = "@patchwright"
DEFAULT_TRIGGER_LABEL = "patchwright"
CHECK_RUN_NAME = "patchwright"
#: The completed companion run that carries the Stop button while an agent runs: GitHub shows
#: a check run's buttons only once it is completed, so the in-progress run cannot carry it.
CONTROL_CHECK_RUN_NAME = "patchwright controls"
ACTION_RETRY = "retry"  # check-run button identifiers: the verb table's names (bot.tasks.verbs)
ACTION_STOP = "stop"

#: The audit reason of a task created by the trigger label.
LABELLED_BY = "Labelled by {login}"
#: The audit reason of someone else's push to a task's branch.
HUMAN_PUSH = "{who} pushed {sha} to the task branch; the bot's next push builds on it"

#: Attempt log notes of a merge-conflict attempt (the demo's narrator reads them back
#: with :func:`conflicted_files_noted`, so the wording lives only here).
LOG_BASE_MERGED = "merged origin/{base} cleanly"
LOG_BASE_ALREADY_MERGED = "{base} was already merged"
LOG_CONFLICTS = "conflicts in: {files}"

ERROR_MAX_CHARS = 2000
CHECK_OUTPUT_MAX_CHARS = 65535  # GitHub's limit for a check run's output.summary / text


# -- escaping ----------------------------------------------------------------------------

_MENTION = re.compile(r"@(?=[A-Za-z0-9])")
_MARKDOWN_CHARS = re.compile(r"([\\`*_\[\]<>|~#&])")
_LINE_START_MARKER = re.compile(r"^(\s*(?:\d+)?)([-+=.)])")


def neutralize_mentions(text: str) -> str:
    """``@someone`` → ``@\u200bsomeone``: reads the same, notifies nobody."""
    return _MENTION.sub("@\u200b", text)


def escape_markdown(text: str) -> str:
    """``text`` so that it renders literally: markdown characters backslash-escaped, line
    starts that would open a list or heading escaped, mentions neutralised."""
    out = []
    for line in neutralize_mentions(text).split("\n"):
        line = _MARKDOWN_CHARS.sub(r"\\\1", line.rstrip("\r"))
        out.append(_LINE_START_MARKER.sub(r"\1\\\2", line, count=1))
    return "\n".join(out)


def inline_text(text: str, max_chars: int = 300) -> str:
    """``text`` as one escaped line (whitespace collapsed), at most ``max_chars`` characters."""
    line = " ".join(text.split())
    if len(line) > max_chars:
        line = line[: max_chars - 1].rstrip() + "…"
    return escape_markdown(line)


def code_span(text: str) -> str:
    """``text`` as an inline code span that its own backticks cannot close."""
    line = " ".join(text.split())
    longest = max((len(run) for run in re.findall(r"`+", line)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if line.startswith("`") or line.endswith("`") else ""
    return f"{ticks}{pad}{line}{pad}{ticks}"


def fenced(text: str, info: str = "") -> str:
    """``text`` in a fenced code block longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{info}\n{text.rstrip()}\n{ticks}"


def _tail_chars(text: str, max_chars: int) -> str:
    text = text.strip()
    if len(text) <= max_chars:
        return text
    return "…" + text[-(max_chars - 1) :]


def _safe_markdown_line(text: str) -> str:
    """Agent-written markdown kept readable on one line, with no HTML (so no forged
    markers), no mentions."""
    line = " ".join(text.split())
    return neutralize_mentions(line.replace("<", "&lt;").replace(">", "&gt;"))


def as_mention(slug_or_mention: str) -> str:
    """``patchwright``, ``@patchwright`` or ``patchwright[bot]`` → ``@patchwright``."""
    name = slug_or_mention.strip().lstrip("@")
    if name.lower().endswith("[bot]"):
        name = name[: -len("[bot]")]
    return "@" + (name or DEFAULT_MENTION.lstrip("@"))


def _cmd(mention: str, command: str) -> str:
    return f"`{as_mention(mention)} {command}`"


def _money(value: float) -> str:
    return f"${value:,.2f}"


# -- status comment and task card ---------------------------------------------------------

STATUS_TITLES: Mapping[str, str] = MappingProxyType(
    {
        "pending": "⏳ Queued",
        "running": "🏃 Working",
        "review": "👀 In review",
        "waiting": "❓ Waiting for answers",
        "paused": "⏸️ Paused",
        "merged": "✅ Merged",
        "closed": "🚫 Closed",
        "failed": "❌ Failed",
    }
)

STATUS_MEANINGS: Mapping[str, str] = MappingProxyType(
    {
        "pending": "waiting for a worker to pick it up",
        "running": "the agent is working on it",
        "review": "a pull request is open and waiting for CI, review and merge",
        "waiting": "the agent asked questions and waits for an answer on this issue",
        "paused": "stopped by a human; nothing happens until someone resumes it",
        "merged": "the pull request was merged",
        "closed": "the task was closed",
        "failed": "automatic work has stopped",
    }
)

KIND_WORDS: Mapping[str, str] = MappingProxyType(
    {
        "first": "first attempt",
        "ci_failure": "fix CI failure",
        "feedback": "review feedback",
        "merge_conflict": "merge conflict",
        "transient": "retry after interruption",
        "manual": "manual retry",
        "answers": "continue with answers",
    }
)

OUTCOME_WORDS: Mapping[str, str] = MappingProxyType(
    {
        "": "running",
        "pushed": "pushed",
        "failed": "failed",
        "questions": "asked questions",
        "salvaged": "stopped, work saved",
        "no_changes": "no changes",
        "cancelled": "cancelled",
    }
)


class AttemptLine(NamedTuple):
    """One attempt as users see it. Plain ``(number, kind, outcome, cost)`` tuples work too."""

    number: int
    kind: str
    outcome: str
    cost_usd: float
    summary: str = ""
    cost_known: bool = True  # False: the agent reported no cost
    refused: tuple[str, ...] = ()  # "host:port: reason" of the connections its sandbox refused


@dataclass(frozen=True, slots=True)
class StatusCard:
    """What the status comment and the ``status`` reply show. ``status``/``kind`` accept the
    enums of :mod:`bot.tasks.model` or their string values."""

    status: str
    attempt: int
    max_attempts: int
    attempts: Sequence[AttemptLine | tuple[Any, ...]] = ()
    cost_usd: float = 0.0
    max_cost_usd: float = 0.0
    pr_url: str = ""
    last_error: str = ""
    mention: str = DEFAULT_MENTION
    reason: str = ""  # what is happening now, in plain words (e.g. the retry reason)
    salvage_branches: Sequence[str] = ()
    trigger_label: str = DEFAULT_TRIGGER_LABEL
    unsandboxed: bool = False  # the server runs agents with `PATCHWRIGHT_SANDBOX=none`

    @property
    def budget_left(self) -> int:
        return max(0, self.max_attempts - self.attempt)

    @property
    def status_value(self) -> str:
        return str(getattr(self.status, "value", self.status))

    def attempt_lines(self) -> list[AttemptLine]:
        return [
            a if isinstance(a, AttemptLine) else AttemptLine(*a) for a in self.attempts
        ]


def _kind_words(kind: Any) -> str:
    value = str(getattr(kind, "value", kind))
    return KIND_WORDS.get(value, inline_text(value, 40))


def _outcome_words(outcome: Any) -> str:
    value = str(getattr(outcome, "value", outcome) or "")
    return OUTCOME_WORDS.get(value, inline_text(value, 40))


def next_steps(card: StatusCard) -> list[str]:
    """What the reader can do now, one markdown bullet text per option."""
    m = card.mention
    status = card.status_value
    label = code_span(card.trigger_label)
    steps: list[str]
    if status == "pending":
        steps = [f"{_cmd(m, 'stop')} pauses it before it starts."]
    elif status == "running":
        steps = [
            f"{_cmd(m, 'stop')} stops the agent; the work so far is saved on a branch."
        ]
    elif status == "review":
        steps = [
            (
                "Review the pull request: request changes or leave review comments, and the "
                "agent pushes a fix to the same pull request."
            ),
            f"Or comment {_cmd(m, '<what to change>')} on the pull request.",
            f"{_cmd(m, 'cancel')} closes the task and the pull request.",
        ]
    elif status == "waiting":
        steps = [
            "Answer the questions in a comment on this issue; the agent continues with your answers.",
            f"{_cmd(m, 'cancel')} closes the task.",
        ]
    elif status == "paused":
        steps = [
            f"{_cmd(m, 'resume')} continues where it stopped.",
            f"{_cmd(m, 'retry [instructions]')} tries again, with your instructions if given.",
            f"{_cmd(m, 'cancel')} closes the task.",
        ]
    elif status == "failed":
        steps = [
            (
                f"{_cmd(m, 'retry [instructions]')} tries again with two more automatic "
                "retries, with your instructions if given."
            ),
            f"{_cmd(m, 'start over')} closes the pull request and starts again from attempt 1.",
            f"{_cmd(m, 'cancel')} closes the task.",
        ]
    elif status == "closed":
        steps = [f"Add the {label} label to this issue again to start a new task."]
    else:  # merged
        steps = ["Nothing left to do."]
    steps.append(f"{_cmd(m, 'help')} lists every command.")
    return steps


def _card_lines(card: StatusCard) -> list[str]:
    status = card.status_value
    title = STATUS_TITLES.get(status, inline_text(status, 40))
    meaning = STATUS_MEANINGS.get(status, "")
    lines = [f"### patchwright: {title}", ""]
    lines.append(
        f"**Status:** {code_span(status)}" + (f" — {meaning}" if meaning else "")
    )
    if card.reason.strip():
        lines.append(f"**Now:** {inline_text(card.reason)}")
    retries = _retries_left(card.budget_left)
    attempts = card.attempt_lines()
    cost_unknown = any(not a.cost_known for a in attempts)
    lines.append(
        f"**Attempt:** {card.attempt} of {card.max_attempts} · **budget:** {retries} · "
        f"**cost:** {_money(card.cost_usd)} of {_money(card.max_cost_usd)}"
        + (COST_UNKNOWN_NOTE if cost_unknown else "")
    )
    if card.pr_url:
        lines.append(f"**Pull request:** {_safe_url(card.pr_url)}")
    if card.unsandboxed:
        lines.append(UNSANDBOXED_NOTE)
    if attempts:
        lines += ["", "| attempt | kind | outcome | cost |", "|---:|---|---|---:|"]
        for a in attempts:
            cost = _money(float(a.cost_usd)) if a.cost_known else "unknown"
            lines.append(
                f"| {int(a.number)} | {_kind_words(a.kind)} | {_outcome_words(a.outcome)} | {cost} |"
            )
        refused = next((a for a in reversed(attempts) if a.refused), None)
        if refused is not None:
            shown = ", ".join(code_span(r.split(": ", 1)[0]) for r in refused.refused[:MAX_REFUSED_SHOWN])
            more = len(refused.refused) - MAX_REFUSED_SHOWN
            lines += [
                "",
                REFUSED_LINE.format(number=int(refused.number), targets=shown)
                + (f" and {more} more" if more > 0 else "")
                + ".",
            ]
    if card.salvage_branches:
        branches = ", ".join(code_span(b) for b in card.salvage_branches)
        lines += ["", f"**Unfinished work saved on:** {branches}"]
    if card.last_error.strip():
        error = _tail_chars(card.last_error, ERROR_MAX_CHARS)
        lines += ["", "**Last error:**"]
        if "\n" in error or len(error) > 200:
            lines.append(fenced(error))
        else:
            lines.append(f"> {inline_text(error, 200)}")
    lines += ["", "**What you can do:**"]
    lines += [f"- {step}" for step in next_steps(card)]
    return lines


def _retries_left(left: int) -> str:
    if left <= 0:
        return "no automatic retries left"
    return "1 automatic retry left" if left == 1 else f"{left} automatic retries left"


def _safe_url(url: str) -> str:
    url = url.strip()
    if re.fullmatch(r"https?://[^\s<>()\[\]`]+", url):
        return url
    return code_span(url)


def render_task_card(card: StatusCard) -> str:
    """The task card replied to ``status``."""
    return "\n".join(_card_lines(card)) + "\n"


#: Why no agent runs: bubblewrap does not work and the operator did not choose `none`.
SANDBOX_UNAVAILABLE = (
    "bubblewrap does not work on this server ({problem}), and agents never run unsandboxed unless "
    "the operator says so: install bubblewrap (and allow user namespaces), or set "
    "`PATCHWRIGHT_SANDBOX=none` knowing that the agent then sees everything the server sees"
)
#: Logged when a worker pool starts with `PATCHWRIGHT_SANDBOX=none`.
UNSANDBOXED_STARTUP_WARNING = (
    "PATCHWRIGHT_SANDBOX=none: agents run WITHOUT a sandbox and can read and reach whatever this "
    "server can (its settings, key, database and local services); every task's status comment says so"
)
#: The attempt ended before the agent started, for ``reason``.
AGENT_NOT_RUN = "The agent did not run: {reason}. Then use `{mention} retry`."

#: After the cost on the status card when an attempt's agent reported no cost.
COST_UNKNOWN_NOTE = (
    " — **not known for every attempt:** the agent reports no cost, so the cap cannot be enforced"
    " (see README, \"Agents and credentials\")"
)
#: On the status card: what the sandbox refused in the latest attempt that was refused something.
REFUSED_LINE = "**The sandbox refused** connections of attempt {number} to {targets}"
MAX_REFUSED_SHOWN = 5

#: On the status card when the server runs agents without a sandbox.
UNSANDBOXED_NOTE = (
    "**Warning:** the agent runs **without a sandbox** on this server (`PATCHWRIGHT_SANDBOX=none`): "
    "it can read and reach whatever the server can."
)


def render_status_comment(card: StatusCard) -> str:
    """The status comment on the issue, edited in place (found again by :data:`STATUS_MARKER`)."""
    footer = "<sub>This comment is updated as the task progresses.</sub>"
    lines = [STATUS_MARKER, *_card_lines(card), "", footer]
    return "\n".join(lines) + "\n"


def find_marked_comment(
    comments: Iterable[Mapping[str, Any]], marker: str, *, author: str | None = None
) -> Mapping[str, Any] | None:
    """The first comment whose body starts with ``marker`` (and, when ``author`` is given,
    written by that login; ``name`` and ``name[bot]`` are the same author)."""
    wanted = _login_key(author) if author else None
    for comment in comments:
        body = comment.get("body") or ""
        if not isinstance(body, str) or not body.lstrip().startswith(marker):
            continue
        if wanted is not None:
            login = (comment.get("user") or {}).get("login") or ""
            if _login_key(str(login)) != wanted:
                continue
        return comment
    return None


def _login_key(login: str) -> str:
    key = login.strip().lstrip("@").lower()
    return key.removesuffix("[bot]")


# -- pull request body -------------------------------------------------------------------


def attempt_summary_lines(
    attempts: Sequence[AttemptLine | tuple[Any, ...]], cost_usd: float
) -> list[str]:
    """The PR body section's lines: one per attempt (kind, outcome, cost, summary), then totals."""
    lines = []
    rows = [a if isinstance(a, AttemptLine) else AttemptLine(*a) for a in attempts]
    for a in rows:
        line = (
            f"Attempt {int(a.number)} ({_kind_words(a.kind)}): {_outcome_words(a.outcome)}, "
            f"{_money(float(a.cost_usd))}"
        )
        if a.summary.strip():
            line += f" — {a.summary}"
        lines.append(line)
    count = len(rows)
    lines.append(
        f"{count} attempt{'s' if count != 1 else ''}, {_money(cost_usd)} in total"
    )
    return lines


def render_summary_section(summary_lines: Sequence[str]) -> str:
    """The bot-owned section of the PR body, between :data:`SUMMARY_START` and :data:`SUMMARY_END`."""
    body = [
        SUMMARY_START,
        "---",
        "**patchwright** · this section is updated automatically",
        "",
    ]
    body += [f"- {_safe_markdown_line(line)}" for line in summary_lines if line.strip()]
    body.append(SUMMARY_END)
    return "\n".join(body)


def render_pr_body(
    issue_number: int, summary_lines: Sequence[str], existing_body: str | None = None
) -> str:
    """The PR body: ``Closes #n`` and the bot-owned section.

    With ``existing_body`` only the section between the markers is replaced and everything
    else (the human's text) is kept as it is; a body without a complete section gets one
    appended (stray markers are removed first).
    """
    section = render_summary_section(summary_lines)
    if not existing_body or not existing_body.strip():
        return f"Closes #{int(issue_number)}\n\n{section}\n"
    start = existing_body.find(SUMMARY_START)
    end = (
        existing_body.find(SUMMARY_END, start + len(SUMMARY_START))
        if start != -1
        else -1
    )
    if start != -1 and end != -1:
        return existing_body[:start] + section + existing_body[end + len(SUMMARY_END) :]
    human = existing_body.replace(SUMMARY_START, "").replace(SUMMARY_END, "").rstrip()
    return f"{human}\n\n{section}\n"


# -- help and refusals --------------------------------------------------------------------

COMMAND_HELP: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "retry": (
            "retry [instructions]",
            "failed or paused task: try again (two more automatic retries); on the pull "
            "request: a new attempt with your instructions",
        ),
        "stop": ("stop", "pause a queued or running task (the agent stops within seconds; its work is saved)"),
        "resume": ("resume", "continue a paused task"),
        "start over": ("start over", "close the pull request, delete the branch and start again from attempt 1"),
        "cancel": ("cancel", "close the task and its pull request, delete the branch"),
        "status": ("status", "show the task: status, attempts, budget, cost, pull request, last error"),
        "help": ("help", "this list"),
    }
)
"""Per command (by the verb table's names, in its order): its usage and one help line."""

HELP_HEADER = """\
**patchwright commands** (a line starting with the mention; needs write access):

| command | what it does |
|---|---|
"""
HELP_FEEDBACK_LINE = (
    "| `{m} <anything else>` | on the task's pull request: feedback for the agent; on the issue "
    "while it waits: your answers |\n"
)
HELP_FOOTER = """
Add the `{label}` label to an issue to start a task. Review comments and "request changes" \
on the pull request also reach the agent.
"""


def render_help(
    mention: str = DEFAULT_MENTION, trigger_label: str = DEFAULT_TRIGGER_LABEL
) -> str:
    """The ``help`` reply with the real mention and trigger label: a line per command."""
    label = trigger_label.replace("`", "'")
    m = as_mention(mention)
    rows = "".join(f"| `{m} {usage}` | {text} |\n" for usage, text in COMMAND_HELP.values())
    return HELP_HEADER + rows + HELP_FEEDBACK_LINE.format(m=m) + HELP_FOOTER.format(label=label)


HELP_TEXT = render_help()


def refusal_not_permitted(permission: str, mention: str = DEFAULT_MENTION) -> str:
    """Reply to a command from someone without write access."""
    level = code_span(permission or "none")
    return (
        f"I only take commands from people with write access to this repository; your "
        f"permission here is {level}, so I did nothing. Ask a maintainer to run the command, "
        f"or to give you write access. ({_cmd(mention, 'help')} lists the commands.)"
    )


def refusal_no_task(
    mention: str = DEFAULT_MENTION, trigger_label: str = DEFAULT_TRIGGER_LABEL
) -> str:
    """Reply to a command on an issue or pull request that has no task."""
    return (
        f"There is no patchwright task here, so there is nothing to act on. Add the "
        f"{code_span(trigger_label)} label to the issue to start one; commands then work on "
        f"the issue and on the pull request I open."
    )


def refusal_unknown_command(text: str, mention: str = DEFAULT_MENTION) -> str:
    """Reply to a mention that is not a command where free text means nothing."""
    word = text.split()[0] if text.split() else ""
    what = f"the command {code_span(word)}" if word else "a command without a verb"
    return (
        f"I don't know {what}, so I did nothing. Free text only counts as feedback on the "
        f"task's pull request, or as answers while the task waits for them. Known commands: "
        f"{_cmd(mention, 'retry [instructions]')}, {_cmd(mention, 'stop')}, "
        f"{_cmd(mention, 'resume')}, {_cmd(mention, 'start over')}, {_cmd(mention, 'cancel')}, "
        f"{_cmd(mention, 'status')}, {_cmd(mention, 'help')}."
    )


_VERB_NEEDS: Mapping[str, str] = MappingProxyType(
    {
        "retry": "a failed or paused task, or a task whose pull request is in review",
        "stop": "a queued or running task",
        "resume": "a paused task",
        "start over": "a task that is not merged",
        "cancel": "a task that is not merged or closed",
        "feedback": "a task whose pull request is open (in review or being worked on)",
    }
)


def refusal_wrong_state(verb: str, status: str, mention: str = DEFAULT_MENTION) -> str:
    """Reply to a command the task's status does not allow, with what would work instead."""
    status = str(getattr(status, "value", status))
    needs = _VERB_NEEDS.get(verb, "another status")
    suggestion = {
        "failed": f"{_cmd(mention, 'retry [instructions]')} tries again",
        "paused": f"{_cmd(mention, 'resume')} continues it",
        "pending": f"{_cmd(mention, 'stop')} pauses it",
        "running": f"{_cmd(mention, 'stop')} pauses it",
        "review": "review the pull request or comment feedback there",
        "waiting": "answer the questions on the issue",
        "closed": "add the label to the issue again to start a new task",
        "merged": "the work is merged; open a new issue for more",
    }.get(status, f"{_cmd(mention, 'status')} shows what the task is doing")
    return (
        f"{code_span(verb)} works on {needs}, but this task is {code_span(status)}, so I did "
        f"nothing. Instead: {suggestion}."
    )


def refusal_feedback_limit(limit: int, mention: str = DEFAULT_MENTION) -> str:
    """Reply when a task has used all its feedback retries."""
    return (
        f"This task has used all {int(limit)} feedback retries, so I did not start another "
        f"attempt. Push the remaining changes yourself, raise `budget.max_feedback_retries` in "
        f"`.github/patchwright.yml`, or use {_cmd(mention, 'start over')}."
    )


def refusal_not_task_pr(mention: str = DEFAULT_MENTION) -> str:
    """Reply to a command on a pull request patchwright did not open."""
    return (
        "This pull request was not opened by patchwright, so I did nothing. Commands work on "
        "issues that have a patchwright task and on the pull requests I open for them."
    )


# -- questions, CI notes, config errors ----------------------------------------------------


def render_questions(
    questions: Sequence[str | Mapping[str, Any]], mention: str = DEFAULT_MENTION
) -> str:
    """The agent's questions as a numbered list, escaped, with how to answer."""
    texts = []
    for q in questions:
        text = (
            q if isinstance(q, str) else str(q.get("question") or q.get("text") or "")
        )
        if text.strip():
            texts.append(text.strip())
    lines = ["**The agent has questions before it can go on:**", ""]
    for number, text in enumerate(texts, start=1):
        prefix = f"{number}. "
        body = escape_markdown(text).split("\n")
        lines.append(prefix + body[0])
        lines += [
            (" " * len(prefix) + line) if line.strip() else "" for line in body[1:]
        ]
    lines += [
        "",
        (
            "Answer in a comment on this issue (numbering your answers helps); anyone with "
            "write access can answer and the agent continues as soon as the answer arrives. "
            f"{_cmd(mention, 'cancel')} closes the task instead."
        ),
    ]
    return "\n".join(lines) + "\n"


def render_addressed_in(sha: str) -> str:
    """The reply in a review thread after the retry pushed ``sha``."""
    return ADDRESSED_IN.format(sha=re.sub(r"[^0-9a-fA-F]", "", sha))


def ci_fails_on_base(
    names: Sequence[str], base_branch: str, mention: str = DEFAULT_MENTION
) -> str:
    """Comment when the PR's failing checks fail on the base branch too (not retried)."""
    checks = ", ".join(code_span(n) for n in sorted(set(names)))
    return (
        f"The failing checks {checks} also fail on the latest commit of {code_span(base_branch)}, "
        f"so the failure is not this pull request's fault and I am not retrying. Once "
        f"{code_span(base_branch)} is fixed, re-run the checks or comment {_cmd(mention, 'retry')}."
    )


def ci_not_code_failure(names: Sequence[str], mention: str = DEFAULT_MENTION) -> str:
    """Note when checks ended cancelled / waiting for approval / stale (not retried)."""
    checks = ", ".join(code_span(n) for n in sorted(set(names)))
    return (
        f"The checks {checks} did not finish (cancelled, waiting for approval or stale); that "
        f"is not a code failure, so I am not retrying. Re-run them on GitHub, or comment "
        f"{_cmd(mention, 'retry')} to start another attempt."
    )


def config_invalid(
    problems: Sequence[str],
    path: str = ".github/patchwright.yml",
    mention: str = DEFAULT_MENTION,
) -> str:
    """Comment when the repo config on the default branch does not validate."""
    listing = "\n".join(p.strip() for p in problems if p.strip()) or "(no details)"
    return (
        f"{code_span(path)} on the default branch is not valid, so the task is stopped until "
        f"it is fixed:\n\n{fenced(_tail_chars(listing, ERROR_MAX_CHARS))}\n\n"
        f"Fix the file on the default branch, then comment {_cmd(mention, 'retry')}."
    )


#: Starts the comment that reports an invalid config, naming the revision of the file (its
#: blob SHA) so that each invalid revision is reported once on an issue.
CONFIG_INVALID_MARKER = "<!-- patchwright:config-invalid {revision} -->"


def config_invalid_marker(revision: str) -> str:
    """The hidden marker of the report of the config file's ``revision`` (hex digits kept)."""
    return CONFIG_INVALID_MARKER.format(revision=re.sub(r"[^0-9A-Za-z]", "", revision)[:64])


def config_invalid_report(
    problems: Sequence[str], revision: str, mention: str = DEFAULT_MENTION
) -> str:
    """:func:`config_invalid` as a comment marked with the file's ``revision``."""
    return f"{config_invalid_marker(revision)}\n{config_invalid(problems, mention=mention)}"


# -- the `patchwright` check run ------------------------------------------------------------


def _attempt_title(attempt: int, max_attempts: int) -> str:
    return f"Attempt {int(attempt)} of {int(max_attempts)}"


def check_run_in_progress(
    attempt: int, max_attempts: int, kind: Any = "first"
) -> dict[str, str]:
    """``output`` for the check run while the agent works."""
    return {
        "title": f"{_attempt_title(attempt, max_attempts)}: {_kind_words(kind)}",
        "summary": (
            f"The agent is working on this pull request. To pause it, use **Stop** on the "
            f"`{CONTROL_CHECK_RUN_NAME}` check run (or the `stop` command in a comment)."
        ),
    }


def check_run_control_running(attempt: int, max_attempts: int) -> dict[str, str]:
    """``output`` of the controls run while the agent of ``attempt`` works."""
    return {
        "title": f"{_attempt_title(attempt, max_attempts)} is running",
        "summary": "Use **Stop** above to pause the task; the agent stops within seconds and its work is saved.",
    }


def check_run_control_ended(attempt: int, max_attempts: int) -> dict[str, str]:
    """``output`` of the controls run once ``attempt`` ended (its button is gone)."""
    return {
        "title": f"{_attempt_title(attempt, max_attempts)} ended",
        "summary": f"No agent is running. The `{CHECK_RUN_NAME}` check run says how the attempt ended.",
    }


def check_run_success(
    attempt: int, max_attempts: int, summary: str = "", cost_usd: float = 0.0
) -> dict[str, str]:
    """``output`` for the check run after an attempt pushed this head."""
    text = (
        escape_markdown(summary.strip())
        if summary.strip()
        else "The agent finished this attempt."
    )
    body = f"{text}\n\nCost of this attempt: {_money(cost_usd)}."
    return {
        "title": f"{_attempt_title(attempt, max_attempts)}: pushed",
        "summary": _head_chars(body, CHECK_OUTPUT_MAX_CHARS),
    }


def check_run_failure(
    attempt: int, max_attempts: int, error: str = ""
) -> dict[str, str]:
    """``output`` for the check run when an attempt failed."""
    detail = (
        fenced(_tail_chars(error, ERROR_MAX_CHARS))
        if error.strip()
        else "No error details."
    )
    body = f"The attempt failed:\n\n{detail}\n\nUse **Retry** to try again or **Stop** to pause the task."
    return {
        "title": f"{_attempt_title(attempt, max_attempts)}: failed",
        "summary": _head_chars(body, CHECK_OUTPUT_MAX_CHARS),
    }


def check_run_actions(*, retry: bool = True, stop: bool = True) -> list[dict[str, str]]:
    """The check run's buttons (GitHub: label ≤ 20, identifier ≤ 20, description ≤ 40 chars)."""
    actions = []
    if retry:
        actions.append(
            {
                "label": "Retry",
                "identifier": ACTION_RETRY,
                "description": "Run the agent again on this task",
            }
        )
    if stop:
        actions.append(
            {
                "label": "Stop",
                "identifier": ACTION_STOP,
                "description": "Pause this task",
            }
        )
    return actions


def _head_chars(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def conflicted_files_noted(note: str) -> str | None:
    """The files of a :data:`LOG_CONFLICTS` note ("a.py, b.py"), or None for any other note."""
    prefix, _, suffix = LOG_CONFLICTS.partition("{files}")
    if not note.startswith(prefix) or not note.endswith(suffix):
        return None
    return note[len(prefix) : len(note) - len(suffix)].strip()


def base_merged_noted(note: str) -> bool:
    """Whether ``note`` is a :data:`LOG_BASE_MERGED` note (git merged the base alone)."""
    prefix, _, suffix = LOG_BASE_MERGED.partition("{base}")
    return note.startswith(prefix) and note.endswith(suffix)
