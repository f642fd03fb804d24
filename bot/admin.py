"""Operator commands (SPEC §9): `tasks …`, `deliveries …` and `replay FILE`.

Formatting is pure (``format_*``, ``*_document``); the ``run_*`` functions do the store or
HTTP work, and :func:`run` dispatches the parsed command line. ``--json`` prints the web
API's shapes (:mod:`bot.web.views`: the same keys, times in ISO 8601) as one document. A task
is named by its id, a unique prefix of it, or ``owner/repo#N`` (:func:`find_task`); the task
verbs are the rows of :mod:`bot.tasks.verbs`, applied by
:func:`bot.operations.commands.run_task_command` like a comment.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import re
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.errors import ExitCode, UserError
from bot.operations.commands import run_task_command, task_verb
from bot.operations.decisions import LostRaces
from bot.operations.edit import edit_problem, edit_task_input
from bot.operations.replay import Replay, replay_delivery
from bot.operations.services import Services, offline_services
from bot.store.base import (
    Attempt,
    Delivery,
    DeliveryState,
    DeliveryVerdict,
    Store,
    TaskEvent,
)
from bot.tasks import verbs
from bot.tasks.model import Status, Task, utcnow
from bot.tasks.rules import Decision, render_reason
from bot.tasks.transitions import MENTION_PLACEHOLDER, Effect
from bot.web import views

#: The audit trail's actor (and the reasons' author) for commands given on the command line.
ACTOR = "cli"


class AdminError(Exception):
    """A command could not do what was asked; the message says why and what would work."""


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain text table with columns as wide as their widest cell."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_tasks(tasks: Sequence[Task]) -> str:
    if not tasks:
        return "no tasks"
    rows = [
        (t.id, t.repo, f"#{t.issue_number}", t.status.value, f"{t.attempt}/{t.max_attempts}",
         f"${t.cost_usd:.2f}", f"#{t.pr_number}" if t.pr_number else "-", _when(t.updated_at))
        for t in tasks
    ]
    return table(rows, ("task", "repo", "issue", "status", "attempt", "cost", "pr", "updated"))


def format_task(task: Task, attempts: Sequence[Attempt], events: Sequence[TaskEvent]) -> str:
    lines = [
        f"task        {task.id}",
        f"issue       {task.repo}#{task.issue_number}  {task.title}",
        f"status      {task.status.value}" + (f" ({task.close_reason})" if task.close_reason else ""),
        f"attempt     {task.attempt} of {task.max_attempts} (budget left {task.budget_left})",
        f"retry       {task.retry_kind.value}: {task.retry_reason or '-'}",
        f"cost        ${task.cost_usd:.2f} of ${task.max_cost_usd:.2f}",
        f"branch      {task.branch or '-'}  head {task.head_sha[:12] or '-'}",
        f"pr          {task.pr_url or '-'}",
        f"agent       {task.agent or '-'} {task.model}".rstrip(),
        "",
        "attempts:",
    ]
    for a in attempts:
        lines.append(
            f"  {a.number:>3}  {a.kind.value:<15} {a.outcome or 'running':<12} ${a.cost_usd:.2f}  "
            f"{_when(a.started_at)}  {a.summary[:80]}"
        )
    if not attempts:
        lines.append("  (none yet)")
    lines += ["", "events:"]
    for e in events:
        move = f"{e.from_status.value if e.from_status else '-'} -> {e.to_status.value if e.to_status else '-'}"
        lines.append(f"  {_when(e.at)}  {e.kind:<10} {move:<20} {e.actor or '-':<14} {e.reason}")
    return "\n".join(lines)


def format_deliveries(rows: Sequence[Delivery]) -> str:
    if not rows:
        return "no deliveries"
    return table(
        [
            (d.id, _when(d.received_at), f"{d.event}.{d.action}" if d.action else d.event, d.repo or "-",
             d.state.value, (d.ignore_reason or d.outcome)[:70])
            for d in rows
        ],
        ("delivery", "received", "event", "repo", "state", "outcome / ignore reason"),
    )


def format_delivery(d: Delivery) -> str:
    return "\n".join(
        [
            f"delivery      {d.id}",
            f"event         {d.event}.{d.action}" if d.action else f"event         {d.event}",
            f"repo          {d.repo or '-'}  installation {d.installation_id or '-'}",
            f"received      {_when(d.received_at)}",
            f"state         {d.state.value} (attempts {d.attempts}, processed {_when(d.processed_at)})",
            f"outcome       {d.outcome or '-'}",
            f"ignored       {d.ignore_reason or '-'}",
            f"payload       {'pruned ' + _when(d.payload_pruned_at) if d.payload_pruned else f'{len(d.payload)} bytes'}",
        ]
    )


# -- JSON (``--json``): one document on stdout, in the web API's shapes ------------------------

#: Where issue links of ``--json`` point when the settings name no GitHub (github.com).
DEFAULT_HTML_BASE = "https://github.com"


def dump_json(document: Any) -> str:
    """One JSON document (keys in the order of :mod:`bot.web.views`' allowlists)."""
    return json.dumps(document, indent=2, ensure_ascii=False)


def tasks_document(tasks: Sequence[Task], *, html_base: str = DEFAULT_HTML_BASE) -> list[dict[str, Any]]:
    """``tasks list --json``: a list of task summaries, as ``GET /api/tasks`` shows them."""
    return [views.task_summary_json(t, html_base=html_base) for t in tasks]


def task_document(
    task: Task, attempts: Sequence[Attempt], events: Sequence[TaskEvent], *, html_base: str = DEFAULT_HTML_BASE
) -> dict[str, Any]:
    """``tasks show --json``: the task with its attempts and events, as ``GET /api/tasks/{id}``."""
    body = views.task_json(task, html_base=html_base)
    body["attempts"] = [views.attempt_json(a) for a in attempts]
    body["events"] = [views.event_json(e) for e in events]
    return body


def deliveries_document(rows: Sequence[Delivery]) -> list[dict[str, Any]]:
    """``deliveries list --json``: a list of ledger rows without payloads."""
    return [views.delivery_json(d) for d in rows]


def delivery_document(row: Delivery, *, payload: bool = False) -> dict[str, Any]:
    """``deliveries show --json``: the ledger row; with ``payload`` also ``"payload"``, the
    payload as JSON (null when the ledger's retention pruned it)."""
    body = views.delivery_json(row)
    if payload:
        body["payload"] = None if row.payload_pruned else _payload_value(row.payload)
    return body


def _payload_value(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:  # recorded as received; a body that is no JSON is shown as text
        return raw.decode("utf-8", "replace")


# -- naming a task: an id, a unique prefix of one, or owner/repo#N ------------------------------

#: ``owner/repo#N``: the task of issue N of ``owner/repo`` (or of its pull request N).
ISSUE_REF = re.compile(r"(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+)#(?P<number>[0-9]+)")
#: Task ids start with this; a prefix may leave it out.
TASK_ID_PREFIX = "task_"
#: How many of the matching tasks an ambiguous prefix's error names.
AMBIGUOUS_SHOWN = 10
#: ``list_tasks`` limit when looking a prefix up: every task (the store has no prefix query).
EVERY_TASK = 1_000_000_000


async def find_task(store: Store, ref: str) -> Task:
    """The task ``ref`` names: its id, a prefix of exactly one task's id (``task_`` may be left
    out; any case), or ``owner/repo#N`` (the task of issue N, else the task whose pull
    request is N). An unknown or ambiguous name is an :class:`AdminError` of one line."""
    ref = ref.strip()
    if (m := ISSUE_REF.fullmatch(ref)) is not None:
        repo, number = m["repo"], int(m["number"])
        task = await store.get_task_by_issue(repo, number) or await store.get_task_by_pr(repo, number)
        if task is None:
            raise AdminError(
                f"no task for {ref}: neither issue nor pull request #{number} of {repo} has one "
                f"(`patchwright tasks list --repo {repo}` shows its tasks)"
            )
        return task
    if not ref:
        raise AdminError("no task id given: `patchwright tasks list` shows the ids")
    if (task := await store.get_task(ref)) is not None:
        return task
    wanted = ref.lower()
    prefixes = (wanted,) if wanted.startswith(TASK_ID_PREFIX) else (wanted, TASK_ID_PREFIX + wanted)
    found = [t for t in await store.list_tasks(limit=EVERY_TASK) if t.id.lower().startswith(prefixes)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise AdminError(f"no task {ref!r}: `patchwright tasks list` shows the ids")
    found.sort(key=lambda t: t.id)
    named = ", ".join(f"{t.id} ({t.repo}#{t.issue_number})" for t in found[:AMBIGUOUS_SHOWN])
    more = f" and {len(found) - AMBIGUOUS_SHOWN} more" if len(found) > AMBIGUOUS_SHOWN else ""
    raise AdminError(f"{ref!r} names {len(found)} tasks: {named}{more}; give more of the id")


# -- the verbs on the command line ---------------------------------------------------------------


def task_subcommand(name: str) -> str:
    """The ``patchwright tasks`` action of a verb of the table: its name, dashed
    (``start over`` → ``start-over``). :mod:`bot.__main__` names its subparsers the same."""
    return verbs.slug(name)


def cli_command(name: str, task_id: str, *, with_text: bool = False) -> str:
    """The ``patchwright`` command that gives ``task_id`` the comment command ``name`` (a
    verb of :mod:`bot.tasks.verbs`)."""
    if name == verbs.STATUS:
        return f"patchwright tasks show {task_id}"
    if name == verbs.HELP:
        return "patchwright tasks --help"
    verb = task_verb(name)
    text = " [instructions]" if with_text and verb.takes_text else ""
    return f"patchwright tasks {task_subcommand(verb.name)} {task_id}{text}"


_SUGGESTED_VERB = re.compile(
    re.escape(MENTION_PLACEHOLDER)
    + r" (?P<verb>"
    + "|".join(re.escape(n) for n in sorted(verbs.NAMES, key=len, reverse=True))
    + r")\b(?P<text> \[instructions\])?"
)


def cli_reason(reason: str, task_id: str, mention: str) -> str:
    """A rule's reason (its commands written ``{bot} <verb>``) for the command line: each
    suggested command becomes the ``patchwright tasks …`` command that does it for this task;
    any other ``{bot}`` becomes the mention."""
    text = _SUGGESTED_VERB.sub(lambda m: cli_command(m["verb"], task_id, with_text=bool(m["text"])), reason)
    return render_reason(text, mention)


# -- tasks ------------------------------------------------------------------------------------------

#: Seconds between two reads of the store while ``tasks logs --follow`` waits for lines.
FOLLOW_POLL_SECONDS = 1.0
#: While a task is in one of these its log may grow: ``--follow`` keeps reading.
LIVE_STATUSES = frozenset({Status.PENDING, Status.RUNNING})


async def run_tasks_list(
    store: Store, *, status: str | None, repo: str | None, limit: int, as_json: bool = False,
    html_base: str = DEFAULT_HTML_BASE, search: str | None = None,
) -> str:
    statuses = [Status(status)] if status else None
    tasks = await store.list_tasks(statuses=statuses, repo=repo, limit=limit, search=search or None)
    return dump_json(tasks_document(tasks, html_base=html_base)) if as_json else format_tasks(tasks)


async def run_tasks_show(
    store: Store, task_id: str, *, as_json: bool = False, html_base: str = DEFAULT_HTML_BASE
) -> str:
    task = await find_task(store, task_id)
    attempts, events = await store.list_attempts(task.id), await store.list_events(task.id)
    if as_json:
        return dump_json(task_document(task, attempts, events, html_base=html_base))
    return format_task(task, attempts, events)


def _log_line(attempt: int, line: str) -> str:
    return f"[{attempt}] {line}"


async def run_tasks_logs(store: Store, task_id: str, attempt: int | None) -> str:
    task = await find_task(store, task_id)
    lines = await store.read_logs(task.id, attempt)
    return "\n".join(_log_line(n, line) for n, line in lines) if lines else "no log lines"


async def follow_tasks_logs(
    store: Store,
    task_id: str,
    attempt: int | None,
    *,
    write: Callable[[str], None],
    poll: float = FOLLOW_POLL_SECONDS,
) -> Task | None:
    """``tasks logs ID --follow``: write the log, then every ``poll`` seconds the lines added
    since, until the task is no longer pending or running (its last lines are written
    first). Returns the task as it was last read (None when it was deleted meanwhile).
    Cancelling (Ctrl-C) just stops it."""
    task = await find_task(store, task_id)
    seen: dict[int, int] = {}  # lines written, per attempt (a late line of an earlier attempt counts too)
    while True:
        current = await store.get_task(task.id)  # read before the log: no line written before it moved is lost
        for number, lines in views.group_logs(await store.read_logs(task.id, attempt)).items():
            for line in lines[seen.get(number, 0):]:
                write(_log_line(number, line))
            seen[number] = len(lines)
        if current is None or current.status not in LIVE_STATUSES:
            return current
        await asyncio.sleep(poll)


async def run_tasks_command(services: Services, task_id: str, verb: str, instructions: str = "") -> str:
    """A task verb from the command line (actor ``cli``), through the same operation as a
    comment; ``task_id`` is anything :func:`find_task` takes. A refusal is the rule's reason
    with its suggestions as ``patchwright tasks …`` commands (:func:`cli_reason`). Without a
    GitHub client the status comment on GitHub is refreshed by the next event or reconciler
    pass."""
    try:
        task_verb(verb)
    except ValueError as exc:
        raise AdminError(str(exc)) from None
    task = await find_task(services.store, task_id)
    try:
        result = await run_task_command(services, task.id, verb, actor=ACTOR, instructions=instructions)
    except LostRaces:
        raise AdminError(f"{task.id} kept changing; try again") from None
    if result is None:
        raise AdminError(f"no task {task.id!r}: `patchwright tasks list` shows the ids")
    if not result.accepted or result.task is None:
        raise AdminError(cli_reason(result.decision.reason, task.id, services.mention))
    done = f"{task.id}: {result.previous_status.value} -> {result.task.status.value}"
    return done + (f"\n{left}" if (left := left_to_github(result.decision, services)) else "")


SPEC_FILE_UNREADABLE = "--spec-file {path}: {reason}: give a readable text file ('-' reads standard input)"


def read_spec_file(path: Path, *, stdin: Callable[[], str] | None = None) -> str:
    """The text of ``tasks edit --spec-file`` (``-``: standard input); an unreadable file is
    a usage error (exit code 2)."""
    if str(path) == "-":
        return (stdin or sys.stdin.read)()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError(SPEC_FILE_UNREADABLE.format(path=path, reason=reason), code=ExitCode.CONFIG) from None


async def run_tasks_edit(
    services: Services, task_id: str, *, spec: str | None, instructions: str | None
) -> str:
    """``tasks edit``: a paused task's input through the same operation as the API (actor
    ``cli``). A task in another status is refused with the rule's reason (exit code 1); an
    edit without a field or with too long a text is a usage error (exit code 2)."""
    if (problem := edit_problem(spec, instructions)) is not None:
        raise UserError(problem, code=ExitCode.CONFIG)
    task = await find_task(services.store, task_id)
    try:
        result = await edit_task_input(services, task.id, spec=spec, instructions=instructions, actor=ACTOR)
    except LostRaces:
        raise AdminError(f"{task.id} kept changing; try again") from None
    if result is None:
        raise AdminError(f"no task {task.id!r}: `patchwright tasks list` shows the ids")
    if not result.accepted and result.previous.status is not Status.PAUSED:
        raise AdminError(cli_reason(result.decision.reason, task.id, services.mention))
    done = "input edited" if result.accepted else "input unchanged"
    return f"{task.id}: {done}: {cli_reason(result.decision.reason, task.id, services.mention)}"


def left_to_github(decision: Decision, services: Services) -> str:
    """What an accepted decision's effects would have done on GitHub and this process could
    not (it has no GitHub client): one line saying what to do there, or ""."""
    previous = decision.previous
    if services.github_for is not None or previous is None:
        return ""
    todo = []
    if Effect.CLOSE_PR in decision.effects and previous.pr_number:
        todo.append(f"close pull request #{previous.pr_number}")
    if Effect.DELETE_BRANCH in decision.effects and previous.branch:
        todo.append(f"delete the branch {previous.branch}")
    if not todo:
        return ""
    return f"not done (no GitHub client here): {' and '.join(todo)} of {previous.repo}; do it on GitHub"


# -- deliveries -------------------------------------------------------------------------------------


#: ``deliveries list --bots yes|no``: only the deliveries bot accounts sent, or none of them.
BOTS_ANSWERS = {"yes": True, "no": False}


async def run_deliveries_list(
    store: Store, *, state: str | None, repo: str | None, limit: int, as_json: bool = False,
    event: str | None = None, verdict: str | None = None, from_bots: bool | None = None,
) -> str:
    rows = await store.list_deliveries(
        limit=limit,
        state=DeliveryState(state) if state else None,
        repo=repo,
        event=event or None,
        verdict=DeliveryVerdict(verdict) if verdict else None,
        from_bots=from_bots,
    )
    return dump_json(deliveries_document(rows)) if as_json else format_deliveries(rows)


async def run_deliveries_show(store: Store, delivery_id: str, *, payload: bool = False, as_json: bool = False) -> str:
    row = await store.get_delivery(delivery_id)
    if row is None:
        raise AdminError(f"no delivery {delivery_id!r}: `patchwright deliveries list` shows the ids")
    if as_json:
        return dump_json(delivery_document(row, payload=payload))
    text = format_delivery(row)
    if payload and not row.payload_pruned:  # a pruned row has none (format_delivery says so)
        text += "\n\n" + json.dumps(json.loads(row.payload), indent=2)
    return text


async def run_deliveries_replay(store: Store, delivery_id: str) -> str:
    result = await replay_delivery(store, delivery_id)
    if result.outcome is Replay.NOT_FOUND:
        raise AdminError(f"no delivery {delivery_id!r}")
    if not result.queued:
        raise AdminError(result.message)
    return f"delivery {delivery_id} queued again; a running dispatcher processes it"


# -- the parsed command line -------------------------------------------------------------------


async def run(
    args: argparse.Namespace,
    store: Store,
    *,
    settings: Settings,
    services: Services | None = None,
    write: Callable[[str], None] = print,
    poll: float = FOLLOW_POLL_SECONDS,
) -> None:
    """Carry out ``patchwright tasks …`` or ``deliveries …`` as parsed by
    :func:`bot.__main__._parser`, writing what it prints with ``write``. A task verb (the
    subparsers carry its name of the verb table as ``task_verb``) runs with ``services``, by
    default those of a process without a GitHub client (:func:`offline_services`)."""
    html_base = views.github_html_base(settings.github_url)
    as_json = bool(getattr(args, "json", False))
    if args.command == "deliveries":
        action = args.deliveries_command
        if action == "list":
            write(await run_deliveries_list(
                store, state=args.state, repo=args.repo, limit=args.limit, as_json=as_json,
                event=args.event, verdict=args.verdict, from_bots=BOTS_ANSWERS.get(args.bots),
            ))
        elif action == "show":
            write(await run_deliveries_show(store, args.delivery_id, payload=args.payload, as_json=as_json))
        else:
            write(await run_deliveries_replay(store, args.delivery_id))
        return
    action = args.tasks_command
    verb_name = getattr(args, "task_verb", None)
    if verb_name is not None:
        if services is None:
            services = offline_services(settings, store, clock=utcnow)
        write(await run_tasks_command(services, args.task_id, verb_name, " ".join(getattr(args, "instructions", None) or [])))
    elif action == "edit":
        spec = read_spec_file(args.spec_file) if args.spec_file is not None else None
        if services is None:
            services = offline_services(settings, store, clock=utcnow)
        write(await run_tasks_edit(services, args.task_id, spec=spec, instructions=args.instructions))
    elif action == "list":
        write(await run_tasks_list(
            store, status=args.status, repo=args.repo, limit=args.limit, as_json=as_json, html_base=html_base,
            search=args.search,
        ))
    elif action == "show":
        write(await run_tasks_show(store, args.task_id, as_json=as_json, html_base=html_base))
    elif action == "logs" and args.follow:
        await follow_tasks_logs(store, args.task_id, args.attempt, write=write, poll=poll)
    elif action == "logs":
        write(await run_tasks_logs(store, args.task_id, args.attempt))
    else:
        raise AdminError(f"unknown tasks action {action!r}: `patchwright tasks --help` lists them")


def signed_request(body: bytes, *, event: str, secret: str, delivery_id: str | None = None) -> dict[str, str]:
    """The headers GitHub sends with a delivery, signed with ``secret``."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/patchwright-replay",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }


#: How a webhook payload tells its event (GitHub sends it in the ``X-GitHub-Event`` header,
#: not in the body): the first row whose keys are all top-level keys of the payload names it.
#: Most specific first (a review comment has ``comment`` and ``pull_request``; a comment on an
#: issue or a pull request's conversation has ``comment`` and ``issue``).
EVENT_SHAPES: tuple[tuple[str, frozenset[str]], ...] = tuple(
    (event, frozenset(keys))
    for event, keys in (
        ("ping", ("zen", "hook_id")),
        ("check_run", ("check_run",)),
        ("check_suite", ("check_suite",)),
        ("workflow_job", ("workflow_job",)),
        ("workflow_run", ("workflow_run",)),
        ("pull_request_review_comment", ("comment", "pull_request")),
        ("pull_request_review_thread", ("thread", "pull_request")),
        ("pull_request_review", ("review", "pull_request")),
        ("pull_request", ("pull_request", "number")),
        ("issue_comment", ("comment", "issue")),
        ("issues", ("issue",)),
        ("push", ("ref", "before", "after", "commits")),
        ("status", ("sha", "state", "context")),
        ("installation_repositories", ("installation", "repositories_added", "repositories_removed")),
    )
)
#: The actions of the ``installation`` event (its payload has an installation and no repository).
INSTALLATION_ACTIONS = frozenset({"created", "deleted", "suspend", "unsuspend", "new_permissions_accepted"})


def infer_event(payload: Any) -> str | None:
    """The event of a webhook payload by its shape (:data:`EVENT_SHAPES`), or None when it
    matches none (then the event must be given)."""
    if not isinstance(payload, Mapping):
        return None
    for event, keys in EVENT_SHAPES:
        if keys <= payload.keys():
            return event
    if "installation" in payload and "repository" not in payload and payload.get("action") in INSTALLATION_ACTIONS:
        return "installation"
    return None


async def run_replay(path: Path, *, url: str, secret: str, event: str | None) -> str:
    """POST the payload file to ``url``, signed, as GitHub would; the event is ``event`` or
    the one the payload's shape tells (:func:`infer_event`)."""
    import aiohttp

    body = path.read_bytes()
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise AdminError(f"{path} is not JSON: {exc}") from None
    event = event or infer_event(payload)
    if not event:
        keys = ", ".join(sorted(payload)[:12]) if isinstance(payload, Mapping) else type(payload).__name__
        raise AdminError(
            f"cannot tell the event of {path} from its payload (top-level: {keys or 'nothing'}): "
            "pass --event NAME, e.g. --event issues"
        )
    headers = signed_request(body, event=event, secret=secret)
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as resp:
        text = await resp.text()
    return f"{resp.status} {text.strip()} (event {event}, delivery {headers['X-GitHub-Delivery']})"
