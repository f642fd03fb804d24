"""Agent presets (SPEC §6.3): how to launch each coding agent CLI and read its output.

Each preset turns an :class:`Invocation` into a :class:`Launch` (argv, stdin, non-secret
environment additions), reads the CLI's streamed lines into a :class:`StreamState` (cost,
session id, structured errors) and, once the process ended, decides the
:class:`~bot.agents.result.AgentResult` from structured facts only.

Verified against: Claude Code 2.1.197 (``@anthropic-ai/claude-code``), Codex CLI 0.171.0
(``@openai/codex``), aider 0.86.2 (``aider-chat``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import re
import shlex
import stat
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from bot.agents.result import AgentOutcome, AgentResult, CliReport, KillReason, classify
from bot.agents.signal import SignalRead

MAX_SUMMARY_CHARS = 4000
_TAIL_LINES = 20
_TAIL_LINE_CHARS = 500


@dataclass(frozen=True, slots=True)
class Invocation:
    """What the worker asks for: the prompt (also written to ``prompt_file``, outside the
    checkout), the checkout, the model, a session to resume, the spend left for this
    attempt, whether the process runs inside our bubblewrap sandbox, and the environment
    the agent will run with.

    ``env`` is that environment as :func:`bot.agents.sandbox.agent_env` built it (HOME, PATH,
    TMPDIR and the preset's ``provider_keys``): a preset reads its provider's endpoint from
    it (Codex turns ``OPENAI_BASE_URL`` into ``-c`` provider overrides) and finds the CLI's
    own files under its HOME. It holds credentials: never shown (``repr``), never compared,
    and a preset puts none of its secrets on a command line."""

    prompt: str
    prompt_file: str
    workdir: str
    model: str = ""
    session_id: str = ""
    max_cost_usd: float | None = None
    sandboxed: bool = False
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Launch:
    """How to start the agent. ``env`` holds only non-secret additions; the worker merges
    them over :func:`bot.agents.sandbox.agent_env`."""

    argv: list[str]
    stdin: bytes | None
    env: dict[str, str]
    resumable: bool
    resumed: bool = False


@dataclass(slots=True)
class StreamState:
    """What has been read from the agent's output so far (updated line by line)."""

    session_id: str = ""
    cost_usd: float = 0.0
    summary: str = ""
    result_seen: bool = False
    is_error: bool = False
    error_subtype: str = ""
    error_code: str = ""  # e.g. Claude Code's assistant `error` ("authentication_failed")
    api_status: int | None = None
    error_message: str = ""
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_seen: bool = False  # the output reported a cost (for presets where it may not)
    events: int = 0
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL_LINES))

    def keep_text(self, line: str) -> None:
        """Remember a non-structured output line (context for error messages only)."""
        if line.strip():
            self.tail.append(line[:_TAIL_LINE_CHARS])


def _json_object(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _clip(text: str, limit: int = MAX_SUMMARY_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class Preset(ABC):
    """One agent CLI."""

    name: ClassVar[str]
    provider_keys: tuple[str, ...] = ()  # environment variables the agent needs (API keys…)
    resumable: ClassVar[bool] = False
    #: How often (seconds) the worker calls :meth:`poll_cost` while the agent runs; None: never.
    cost_poll_seconds: ClassVar[float | None] = None

    @abstractmethod
    def build(self, invocation: Invocation) -> Launch: ...

    async def poll_cost(self, state: StreamState) -> None:
        """Bring ``state.cost_usd`` up to date from what the CLI has recorded outside its
        output, for a CLI that prints its spend only when it ends: the worker calls this every
        :attr:`cost_poll_seconds` while the agent runs and enforces the cost cap on the result,
        as it does for a streamed cost. Runs on the event loop (read files in a thread)."""

    def new_state(self) -> StreamState:
        return StreamState()

    def parse_line(self, line: str, state: StreamState) -> None:
        """Read one output line (stdout or stderr) into ``state``."""
        state.keep_text(line)

    def report(self, state: StreamState, exit_code: int | None) -> CliReport:
        """What the CLI's structured output says about the run."""
        return CliReport(summary=state.summary, cost_usd=state.cost_usd, session_id=state.session_id)

    def finish(
        self,
        state: StreamState,
        exit_code: int | None,
        signal: SignalRead,
        *,
        killed: KillReason | None = None,
    ) -> AgentResult:
        """The run's result from the process end, the signal file and the CLI's output."""
        result = classify(
            exit_code=exit_code,
            signal=signal,
            cli=self.report(state, exit_code),
            killed=killed,
            output_tail="\n".join(state.tail),
        )
        return result if self.cost_known(state) else dataclasses.replace(result, cost_known=False)

    def cost_known(self, state: StreamState) -> bool:
        """Whether the run's cost is known: False where the CLI reports none and no price
        applies, so the task's cost cap cannot be enforced (and the status comment says so)."""
        return True


# --------------------------------------------------------------------------------------
# Claude Code
# --------------------------------------------------------------------------------------

# Claude Code's assistant-message `error` codes (its SDK schema) and what they mean for us.
CLAUDE_CONFIG_ERRORS = frozenset(
    {"authentication_failed", "oauth_org_not_allowed", "billing_error", "model_not_found"}
)
CLAUDE_TRANSIENT_ERRORS = frozenset({"rate_limit", "overloaded", "server_error"})
CONFIG_HTTP_STATUSES = frozenset({401, 402, 403, 404})
TRANSIENT_HTTP_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class ClaudePreset(Preset):
    """``claude -p --output-format stream-json --verbose``, prompt on stdin.

    Runs with ``--permission-mode bypassPermissions``: nobody is there to approve tool use,
    and the agent is confined by our sandbox instead. Claude Code refuses that mode as root
    unless ``IS_SANDBOX=1`` says the process is sandboxed, so the preset sets it.

    Also set: ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`` (no title request, telemetry or
    update check: one model request per agent step) and ``CLAUDE_CODE_DISABLE_GIT_INSTRUCTIONS``,
    which drops Claude Code's commit/PR workflow instructions (patchwright commits, pushes and
    opens the PR itself) and its ``gitStatus`` snapshot (branch, status, recent commits) from the
    system prompt. That snapshot changes with every commit the bot pushes, so without it the
    prompt prefix (tools, system prompt) of fresh attempts of one task is byte-identical and
    the provider's prompt cache applies across attempts. ``--resume`` runs only append turns.
    (``--max-budget-usd`` makes Claude Code put a "USD budget: $spent/$limit" reminder into the
    first user message, before our prompt, and into every tool result: the first message of
    attempts with different budgets left is shared only up to that number.)

    Proven against Claude Code 2.1.197 talking to a scripted Anthropic Messages server
    (tests/agents/test_claude_cli.py, tests/e2e/test_real_claude.py): ``total_cost_usd`` is
    Claude Code's own price for the usage the server reported (per process: a resumed run
    reports only its own spend).
    """

    name = "claude"
    provider_keys = (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "CLAUDE_CODE_OAUTH_TOKEN",
    )
    resumable = True

    def __init__(self, executable: str = "claude", *, permission_mode: str = "bypassPermissions") -> None:
        self.executable = executable
        self.permission_mode = permission_mode

    def build(self, invocation: Invocation) -> Launch:
        argv = [
            self.executable,
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            self.permission_mode,
        ]
        if invocation.model:
            argv += ["--model", invocation.model]
        if invocation.session_id:
            argv += ["--resume", invocation.session_id]
        if invocation.max_cost_usd is not None and invocation.max_cost_usd > 0:
            argv += ["--max-budget-usd", f"{invocation.max_cost_usd:.4f}"]
        env = {
            "IS_SANDBOX": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_DISABLE_GIT_INSTRUCTIONS": "1",
        }
        return Launch(
            argv=argv,
            stdin=invocation.prompt.encode("utf-8"),
            env=env,
            resumable=True,
            resumed=bool(invocation.session_id),
        )

    def parse_line(self, line: str, state: StreamState) -> None:
        event = _json_object(line)
        if event is None or not isinstance(event.get("type"), str):
            state.keep_text(line)
            return
        state.events += 1
        kind = event["type"]
        session = event.get("session_id")
        if isinstance(session, str) and session:
            state.session_id = session
        if kind == "assistant":
            error = event.get("error")
            # Only the latest assistant message's error matters: earlier ones were recovered from.
            state.error_code = error if isinstance(error, str) else ""
            message = event.get("message") if isinstance(event.get("message"), dict) else {}
            status = _number(event.get("api_error_status"))
            if status is None:
                status = _number(message.get("api_error_status"))
            if status is not None:
                state.api_status = int(status)
        elif kind == "result":
            state.result_seen = True
            state.is_error = bool(event.get("is_error"))
            state.error_subtype = str(event.get("subtype") or "")
            cost = _number(event.get("total_cost_usd"))
            if cost is not None:
                state.cost_usd = cost
            status = _number(event.get("api_error_status"))
            if status is not None:
                state.api_status = int(status)
            result = event.get("result")
            errors = event.get("errors")
            if isinstance(result, str) and result.strip():
                if state.is_error:
                    state.error_message = _clip(result)
                else:
                    state.summary = _clip(result)
            if state.is_error and not state.error_message and isinstance(errors, list):
                state.error_message = _clip("; ".join(str(e) for e in errors if e))

    def report(self, state: StreamState, exit_code: int | None) -> CliReport:
        base = {"summary": state.summary, "cost_usd": state.cost_usd, "session_id": state.session_id}
        details = {
            "subtype": state.error_subtype,
            "error": state.error_code,
            "status": str(state.api_status or ""),
        }
        if not state.result_seen or not state.is_error:
            return CliReport(**base)
        message = state.error_message or state.error_subtype or "Claude Code reported an error"
        if state.error_subtype == "error_max_budget_usd":
            failure = AgentOutcome.KILLED_COST
        elif state.error_code in CLAUDE_CONFIG_ERRORS or state.api_status in CONFIG_HTTP_STATUSES:
            failure = AgentOutcome.CONFIG_ERROR
        elif state.error_code in CLAUDE_TRANSIENT_ERRORS or (
            state.api_status is not None
            and (state.api_status in TRANSIENT_HTTP_STATUSES or state.api_status >= 500)
        ):
            failure = AgentOutcome.TRANSIENT
        else:
            failure = AgentOutcome.AGENT_ERROR
        return CliReport(failure=failure, message=message, details=details, **base)


# --------------------------------------------------------------------------------------
# Codex CLI
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenPrices:
    """USD per million tokens, for CLIs that report tokens but not cost (Codex)."""

    input: float
    cached_input: float
    output: float

    def cost(self, input_tokens: int, cached_input_tokens: int, output_tokens: int) -> float:
        uncached = max(0, input_tokens - cached_input_tokens)
        return (
            uncached * self.input + cached_input_tokens * self.cached_input + output_tokens * self.output
        ) / 1_000_000


@dataclass(frozen=True)
class PriceTable:
    """Token prices per model (USD per million tokens), for CLIs that report tokens but not
    dollars. A model is found by its exact name, else by the longest listed name it starts
    with (``gpt-5-codex`` → ``gpt-5``), else ``default``."""

    models: Mapping[str, TokenPrices] = field(default_factory=dict)
    default: TokenPrices | None = None

    def for_model(self, model: str) -> TokenPrices | None:
        name = model.strip().lower().rsplit("/", 1)[-1]  # "openai/gpt-4o" → "gpt-4o"
        if name in self.models:
            return self.models[name]
        prefixes = [m for m in self.models if name.startswith(m)]
        if prefixes:
            return self.models[max(prefixes, key=len)]
        return self.default

    def with_overrides(self, text: str) -> PriceTable:
        """This table with ``PATCHWRIGHT_MODEL_PRICES`` applied: ``model=input/cached/output``
        entries separated by ``;`` or ``,`` (``*`` is the default for unlisted models).
        Raises ValueError naming the entry that is not of that form."""
        models = dict(self.models)
        default = self.default
        for entry in filter(None, (e.strip() for e in re.split(r"[;,]", text))):
            name, sep, values = entry.partition("=")
            parts = values.split("/")
            try:
                if not sep or len(parts) != 3:
                    raise ValueError
                prices = TokenPrices(*(float(p) for p in parts))
            except ValueError:
                raise ValueError(
                    f"model price {entry!r} is not of the form model=input/cached_input/output (USD per million tokens)"
                ) from None
            if name.strip() == "*":
                default = prices
            else:
                models[name.strip().lower()] = prices
        return PriceTable(models, default)


#: List prices (USD per million tokens: input, cached input, output) of common models, for
#: CLIs that report only tokens; override or extend with ``PATCHWRIGHT_MODEL_PRICES``.
DEFAULT_PRICES = PriceTable(
    {
        "gpt-5": TokenPrices(1.25, 0.125, 10.0),
        "gpt-5-mini": TokenPrices(0.25, 0.025, 2.0),
        "gpt-5-nano": TokenPrices(0.05, 0.005, 0.4),
        "gpt-4.1": TokenPrices(2.0, 0.5, 8.0),
        "gpt-4.1-mini": TokenPrices(0.4, 0.1, 1.6),
        "gpt-4o": TokenPrices(2.5, 1.25, 10.0),
        "gpt-4o-mini": TokenPrices(0.15, 0.075, 0.6),
        "o3": TokenPrices(2.0, 0.5, 8.0),
        "o4-mini": TokenPrices(1.1, 0.275, 4.4),
        "claude-opus-4": TokenPrices(15.0, 1.5, 75.0),
        "claude-sonnet-4": TokenPrices(3.0, 0.3, 15.0),
        "claude-3-5-haiku": TokenPrices(0.8, 0.08, 4.0),
    }
)


#: The model Codex CLI 0.171 uses when it is given none (as its requests name it); a run
#: without ``-m`` is priced as this model. A resumed thread without ``-m`` uses it too (not
#: the model the thread started with).
CODEX_DEFAULT_MODEL = "gpt-6.2-sol"
#: The id of the model provider the preset defines for ``OPENAI_BASE_URL``.
CODEX_PROVIDER_ID = "patchwright"
OPENAI_API_URL = "https://api.openai.com/v1"
#: How much of the end of a Codex session file is read for its token totals.
_ROLLOUT_TAIL_BYTES = 4 * 1024 * 1024
#: How many directory entries are looked at, at most, to find it.
_ROLLOUT_SCAN_ENTRIES = 10_000
_THREAD_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,127}")


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts as Codex reports them (``input`` includes ``cached_input``)."""

    input: int = 0
    cached_input: int = 0
    output: int = 0

    @classmethod
    def from_event(cls, usage: Any) -> TokenUsage:
        if not isinstance(usage, dict):
            return cls()
        return cls(
            int(_number(usage.get("input_tokens")) or 0),
            int(_number(usage.get("cached_input_tokens")) or 0),
            int(_number(usage.get("output_tokens")) or 0),
        )

    def since(self, earlier: TokenUsage) -> TokenUsage:
        """What was added after ``earlier`` (never negative)."""
        return TokenUsage(
            max(0, self.input - earlier.input),
            max(0, self.cached_input - earlier.cached_input),
            max(0, self.output - earlier.output),
        )


def codex_thread_usage(home: str, thread_id: str, *, latest: bool = False) -> TokenUsage | None:
    """The token totals Codex has recorded for ``thread_id`` under ``home`` (its session
    file ``~/.codex/sessions/YYYY/MM/DD/rollout-…-<thread>.jsonl``: the last ``token_count``
    event's ``total_token_usage``), or None when there is no such record.

    That record is where ``codex exec resume`` takes the thread's totals from, to which it
    adds the new run's usage before reporting ``turn.completed``: the difference is exactly
    the run's usage, whatever the file says. Codex writes ``token_count`` once the tools an
    answer asked for have run; ``latest`` also counts the ``token_usage_record`` it writes
    as soon as an answer arrived (``thread_token_usage``), for a run killed in between.

    The agent can write its HOME, so nothing there is trusted beyond numbers: no symlink is
    followed, only regular files are opened, and only the end of the file is read."""
    if not home or not _THREAD_ID.fullmatch(thread_id):
        return None
    suffix = f"-{thread_id}.jsonl"
    directory = os.path.join(home, ".codex", "sessions")
    found: list[str] = []
    budget = [_ROLLOUT_SCAN_ENTRIES]  # the agent could fill the directory to stall the worker

    def walk(path: str, depth: int) -> None:
        try:
            with os.scandir(path) as listing:
                entries = list(itertools.islice(listing, budget[0]))
        except OSError:
            return
        budget[0] -= len(entries)
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False) and depth < 3:
                    walk(entry.path, depth + 1)
                elif (
                    entry.name.startswith("rollout-")
                    and entry.name.endswith(suffix)
                    and entry.is_file(follow_symlinks=False)
                ):
                    found.append(entry.path)
            except OSError:
                continue

    codex_home = os.path.dirname(directory)
    if os.path.isdir(directory) and not os.path.islink(directory) and not os.path.islink(codex_home):
        walk(directory, 0)
    totals: TokenUsage | None = None
    for path in sorted(found):
        usage = _last_token_count(path, latest=latest)
        if usage is not None:
            totals = usage
    return totals


def _last_token_count(path: str, *, latest: bool) -> TokenUsage | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        start = max(0, info.st_size - _ROLLOUT_TAIL_BYTES)
        os.lseek(fd, start, os.SEEK_SET)
        chunks = []
        remaining = info.st_size - start
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    for raw in reversed(b"".join(chunks).splitlines()):
        if b'"token_count"' not in raw and not (latest and b'"token_usage_record"' in raw):
            continue
        event = _json_object(raw.decode("utf-8", "replace"))
        payload = event.get("payload") if event else None
        if not isinstance(payload, dict):
            continue
        total: Any = None
        if payload.get("type") == "token_count" and isinstance(payload.get("info"), dict):
            total = payload["info"].get("total_token_usage")
        elif latest and event is not None and event.get("type") == "token_usage_record":
            total = payload.get("thread_token_usage")
        if isinstance(total, dict):
            return TokenUsage.from_event(total)
    return None


def checkout_git_dir(workdir: str) -> str:
    """The git directory of the checkout at ``workdir``: its ``.git`` directory, or the one
    a ``.git`` file names (``gitdir: …``); "" when there is none (or a symlink)."""
    if not workdir:
        return ""
    dot_git = os.path.join(os.path.abspath(workdir), ".git")
    if os.path.islink(dot_git):
        return ""
    if os.path.isdir(dot_git):
        return dot_git
    try:
        with open(dot_git, "rb") as handle:
            text = handle.read(4096).decode("utf-8", "replace")
    except OSError:
        return ""
    first = text.splitlines()[0] if text else ""
    if not first.startswith("gitdir:"):
        return ""
    path = os.path.normpath(os.path.join(os.path.dirname(dot_git), first[len("gitdir:") :].strip()))
    return path if os.path.isdir(path) and not os.path.islink(path) else ""


@dataclass(slots=True)
class CodexState(StreamState):
    """A Codex run's :class:`StreamState`, plus what its cost is computed from."""

    prices: TokenPrices | None = None
    baseline: TokenUsage = TokenUsage()  # the thread's totals before this run (resumed threads)
    home: str = ""
    turn_completed: bool = False


class CodexPreset(Preset):
    """``codex exec --json``, prompt on stdin (``-``); resumes with ``codex exec resume``.

    Inside our bubblewrap sandbox Codex's own sandbox is bypassed (it cannot nest); outside
    it Codex runs with its ``workspace-write`` sandbox, which keeps a checkout's git directory
    read-only unless named a writable root: the preset names it, so the agent can run
    ``git add``/``git commit`` as under bubblewrap (nothing it writes there runs in the bot's
    own git commands).

    **Endpoint.** Codex (0.171) no longer reads ``OPENAI_BASE_URL``, and the agent's HOME is
    new for every task, so no ``config.toml`` can name a provider. When the agent's
    environment (``Invocation.env``) has ``OPENAI_BASE_URL``, the preset defines a provider
    with ``-c`` overrides: ``model_provider="patchwright"`` and
    ``model_providers.patchwright.{name, base_url, wire_api="responses", env_key}``, where
    ``env_key`` names the variable holding the key (``OPENAI_API_KEY``, else
    ``CODEX_API_KEY``; none for a keyless local server). With ``OPENAI_API_KEY`` and no
    ``OPENAI_BASE_URL``, the same provider points at ``https://api.openai.com/v1``: Codex's
    built-in provider ignores ``OPENAI_API_KEY`` (it wants a login or ``CODEX_API_KEY``, which
    is left to it). The URL's user information, if any, is dropped: only the endpoint is put
    on the command line, never a credential. Codex's
    plugin catalog sync and its analytics are turned off (``features.plugins=false``,
    ``analytics.enabled=false``): otherwise every run also calls github.com, api.github.com,
    chatgpt.com and ab.chatgpt.com, none of which a task needs.

    **Cost.** Codex reports tokens, not dollars: ``turn.completed`` carries the *thread's*
    totals (after ``codex exec resume`` they include every earlier run: 2400 → 4800 → 7200
    for three runs of 2400 tokens each). The run's usage is those totals minus what the
    thread had recorded before the run — read at :meth:`build` from Codex's own session file
    in the agent's HOME (:func:`codex_thread_usage`), the very record Codex adds the new
    run's usage to — priced per model with ``prices`` (the invocation's model, else
    :data:`CODEX_DEFAULT_MODEL`). A run that ends without ``turn.completed`` (timeout, kill,
    crash) is charged from that record as well. No price for the model: no cost.

    **Cost cap.** ``exec --json`` prints usage only at ``turn.completed``, but Codex records
    every answer's usage in that session file as soon as it arrives (``token_usage_record``):
    :meth:`poll_cost` reads it every :attr:`cost_poll_seconds` while the run goes on, so the
    worker stops a run whose cost crosses the task's cap mid-run.

    :meth:`build` prepares the state :meth:`new_state` then hands out: one preset instance
    serves one run at a time (the worker makes one per attempt).

    Proven against Codex CLI 0.171.0 talking to a scripted Responses API server
    (tests/agents/test_codex_cli.py, tests/e2e/test_real_codex.py).
    """

    name = "codex"
    provider_keys = ("OPENAI_API_KEY", "CODEX_API_KEY", "OPENAI_BASE_URL")
    resumable = True
    cost_poll_seconds = 1.0

    def __init__(self, executable: str = "codex", *, prices: PriceTable | TokenPrices | None = None) -> None:
        self.executable = executable
        if isinstance(prices, TokenPrices):  # the same prices whatever the model
            prices = PriceTable(default=prices)
        self.prices = DEFAULT_PRICES if prices is None else prices
        self._next = CodexState(prices=self.prices.for_model(CODEX_DEFAULT_MODEL))

    def provider_overrides(self, env: Mapping[str, str]) -> list[str]:
        """The ``-c`` arguments defining the provider ``OPENAI_BASE_URL`` names — or OpenAI's
        own endpoint when only ``OPENAI_API_KEY`` is set, a key Codex's built-in provider no
        longer reads (it reads ``CODEX_API_KEY``: then, as with no key, [] leaves Codex as is)."""
        url = (env.get("OPENAI_BASE_URL") or "").strip()
        if not url and env.get("OPENAI_API_KEY") and not env.get("CODEX_API_KEY"):
            url = OPENAI_API_URL
        if not url:
            return []
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            host = parts.hostname or ""
            netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
            url = urlunsplit(parts._replace(netloc=netloc))
        provider = f"model_providers.{CODEX_PROVIDER_ID}"
        values = [
            ("model_provider", CODEX_PROVIDER_ID),
            (f"{provider}.name", "OPENAI_BASE_URL"),
            (f"{provider}.base_url", url),
            (f"{provider}.wire_api", "responses"),
        ]
        key = next((k for k in ("OPENAI_API_KEY", "CODEX_API_KEY") if env.get(k)), "")
        if key:
            values.append((f"{provider}.env_key", key))
        argv: list[str] = []
        for name, value in values:
            argv += ["-c", f"{name}={json.dumps(value)}"]  # a JSON string is a TOML basic string
        return argv

    def build(self, invocation: Invocation) -> Launch:
        argv = [self.executable, "exec"]
        if invocation.session_id:
            argv.append("resume")
        argv += ["--json", "--skip-git-repo-check"]
        if invocation.sandboxed:
            argv.append("--dangerously-bypass-approvals-and-sandbox")
        else:
            argv += ["-c", 'sandbox_mode="workspace-write"']
            git_dir = checkout_git_dir(invocation.workdir)
            if git_dir:  # Codex's sandbox keeps it read-only: no `git add`, `git commit`, `git stash`
                argv += ["-c", f"sandbox_workspace_write.writable_roots={json.dumps([git_dir])}"]
        argv += self.provider_overrides(invocation.env)
        argv += ["-c", "features.plugins=false", "-c", "analytics.enabled=false"]  # nothing but the model
        if invocation.model:
            argv += ["-m", invocation.model]
        if invocation.session_id:
            argv.append(invocation.session_id)
        argv.append("-")  # the prompt comes on stdin
        home = invocation.env.get("HOME", "")
        baseline = codex_thread_usage(home, invocation.session_id) if invocation.session_id else None
        self._next = CodexState(
            prices=self.prices.for_model(invocation.model or CODEX_DEFAULT_MODEL),
            baseline=baseline or TokenUsage(),
            home=home,
        )
        return Launch(
            argv=argv,
            stdin=invocation.prompt.encode("utf-8"),
            env={},
            resumable=True,
            resumed=bool(invocation.session_id),
        )

    def new_state(self) -> CodexState:
        """The state of the run last built (see the class docstring)."""
        planned = self._next
        return CodexState(prices=planned.prices, baseline=planned.baseline, home=planned.home)

    def _charge(self, state: StreamState, totals: TokenUsage) -> None:
        """Set the run's usage and cost from the thread's ``totals``."""
        baseline = state.baseline if isinstance(state, CodexState) else TokenUsage()
        prices = state.prices if isinstance(state, CodexState) else self.prices.for_model(CODEX_DEFAULT_MODEL)
        run = totals.since(baseline)
        state.input_tokens, state.cached_input_tokens = run.input, run.cached_input
        state.output_tokens = run.output
        if prices is not None:
            state.cost_usd = prices.cost(run.input, run.cached_input, run.output)

    def cost_known(self, state: StreamState) -> bool:
        return not isinstance(state, CodexState) or state.prices is not None

    async def poll_cost(self, state: StreamState) -> None:
        """The run's cost so far from Codex's session record (see the class docstring); only
        ever raises the figure, and leaves it alone once ``turn.completed`` reported it."""
        if not isinstance(state, CodexState) or state.prices is None:
            return
        if state.turn_completed or not state.session_id:
            return
        totals = await asyncio.to_thread(codex_thread_usage, state.home, state.session_id, latest=True)
        if totals is None or state.turn_completed:
            return
        run = totals.since(state.baseline)
        if state.prices.cost(run.input, run.cached_input, run.output) > state.cost_usd:
            self._charge(state, totals)

    def parse_line(self, line: str, state: StreamState) -> None:
        event = _json_object(line)
        if event is None or not isinstance(event.get("type"), str):
            state.keep_text(line)
            return
        state.events += 1
        kind = event["type"]
        if kind == "thread.started" and isinstance(event.get("thread_id"), str):
            state.session_id = event["thread_id"]
        elif kind == "turn.completed":
            # The thread's totals so far (not this turn's): the latest one counts.
            if isinstance(state, CodexState):
                state.turn_completed = True
            self._charge(state, TokenUsage.from_event(event.get("usage")))
        elif kind == "turn.failed":
            state.is_error = True
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            state.error_message = _clip(str(message or "Codex reported a failed turn"))
        elif kind == "error":
            # Non-fatal notices (e.g. reconnecting); kept as context unless a turn already failed.
            message = event.get("message")
            if isinstance(message, str) and not state.is_error:
                state.error_message = _clip(message)
        elif kind == "item.completed":
            item = event.get("item")
            if (
                isinstance(item, dict)
                and item.get("type") == "agent_message"
                and isinstance(item.get("text"), str)
            ):
                state.summary = _clip(item["text"])

    def finish(
        self,
        state: StreamState,
        exit_code: int | None,
        signal: SignalRead,
        *,
        killed: KillReason | None = None,
    ) -> AgentResult:
        if isinstance(state, CodexState) and not state.turn_completed and state.session_id:
            # Ended before reporting its usage: what Codex recorded for the thread still counts.
            totals = codex_thread_usage(state.home, state.session_id, latest=True)
            if totals is not None:
                self._charge(state, totals)
        return super().finish(state, exit_code, signal, killed=killed)

    def report(self, state: StreamState, exit_code: int | None) -> CliReport:
        base = {"summary": state.summary, "cost_usd": state.cost_usd, "session_id": state.session_id}
        if state.is_error or (exit_code not in (0, None) and state.error_message):
            # Codex's events carry no error codes, so a failure cannot be told apart further.
            return CliReport(failure=AgentOutcome.AGENT_ERROR, message=state.error_message, **base)
        return CliReport(**base)

# --------------------------------------------------------------------------------------
# aider
# --------------------------------------------------------------------------------------

# aider's usage report (aider/coders/base_coder.py, 0.86.2), one line per model reply:
#   "Tokens: 2.3k sent, 120 received. Cost: $0.0081 message, $0.0081 session."
#   "Tokens: 12k sent, 1.2k cache write, 9.8k cache hit, 300 received." (no price: no Cost)
# with the cost on a line of its own when both cache counts are shown. Token counts are
# printed as "999", "1.2k" (one decimal below 10k) or "12k"/"1235k" (rounded to thousands).
AIDER_COST = re.compile(
    r"Cost: \$(?P<message>[0-9][0-9,]*(?:\.[0-9]+)?) message, \$(?P<session>[0-9][0-9,]*(?:\.[0-9]+)?) session"
)
_AIDER_COUNT = r"[0-9][0-9,]*(?:\.[0-9]+)?[kKmM]?"
AIDER_TOKENS = re.compile(
    rf"^Tokens: (?P<sent>{_AIDER_COUNT}) sent"
    rf"(?:, (?P<write>{_AIDER_COUNT}) cache write)?"
    rf"(?:, (?P<hit>{_AIDER_COUNT}) cache hit)?"
    rf", (?P<received>{_AIDER_COUNT}) received\."
)
# aider's announcement of the model it uses (also when it picked one itself):
#   "Model: openai/gpt-4o-mini with whole edit format" / "Main model: … with diff edit format, …"
AIDER_MODEL = re.compile(r"^(?:Main model|Model): (?P<model>\S+) with ")
_AIDER_SCALE = {"k": 1_000, "m": 1_000_000}


def aider_count(text: str) -> int:
    """A token count as aider prints it ("300", "1.2k", "12k", "1,234") as a number."""
    text = text.replace(",", "")
    scale = _AIDER_SCALE.get(text[-1:].lower(), 1)
    if scale != 1:
        text = text[:-1]
    return round(float(text) * scale)


@dataclass(slots=True)
class AiderState(StreamState):
    """:class:`StreamState` plus what aider's usage lines said: ``reported_cost`` (its own
    ``Cost: … session`` figure, the highest seen), ``table_cost`` (the replies it printed no
    cost for, their tokens at the price table's ``prices`` for ``model``), ``unpriced_replies``
    (replies for which neither aider nor the table knows a price) and ``pending`` (the token
    counts of a reply whose ``Cost:`` may still follow on the next line)."""

    model: str = ""
    prices: TokenPrices | None = None
    reported_cost: float = 0.0
    table_cost: float = 0.0
    unpriced_replies: int = 0
    pending: tuple[int, int, int] | None = None

    def settle(self) -> None:
        """Price the pending reply from the table (no ``Cost:`` line came for it)."""
        if self.pending is None:
            return
        sent, hit, received = self.pending
        self.pending = None
        if self.prices is None:
            self.unpriced_replies += 1
        else:
            self.table_cost += self.prices.cost(sent, min(hit, sent), received)
        self.cost_usd = max(self.cost_usd, self.table_cost)


class AiderPreset(Preset):
    """``aider --message-file <prompt> --yes-always --no-auto-commits …``: one message, then exit.

    aider has no machine-readable result (it even exits 0 when the provider rejects the
    key), so the outcome comes from the signal file and the exit code. Its cost comes from
    its usage report lines: the ``Cost: … session`` figure where aider knows the model's
    price, otherwise the ``Tokens: … sent, … received.`` counts times ``prices`` for the
    model (the one given, or the one aider announces it uses). aider prints those counts
    rounded (``1.2k``: to 100 tokens below 10k, to 1000 above), so that cost is accurate to
    a few per cent; cache hits, where aider shows them (Anthropic, DeepSeek; not OpenAI's
    cached tokens, which it ignores), are charged at the cached-input price. Both figures only
    ever add up (a reply's text cannot lower the cost by printing a usage line of its own).

    Also set: chat and input history go to ``/dev/null`` (aider would otherwise write
    ``.aider.chat.history.md`` and ``.aider.input.history`` into the checkout, and the bot
    would commit them), and ``LITELLM_LOCAL_MODEL_COST_MAP`` (litellm reads its bundled
    price list instead of downloading one at start-up; aider 0.86.2 itself still fetches its
    own copy of that list at every start, which the sandbox records as a refused connection
    under ``network: false``). aider keeps its repo-map cache in ``.aider.tags.cache.v4/`` at
    the checkout's root, which the bot's commits leave out.

    Proven against aider 0.86.2 talking to a scripted OpenAI chat completions server
    (tests/agents/test_aider_cli.py, tests/e2e/test_real_aider.py). Not resumable.
    """

    name = "aider"
    provider_keys = (
        "OPENAI_API_KEY",
        "OPENAI_API_BASE",
        "ANTHROPIC_API_KEY",
        "OPENROUTER_API_KEY",
        "GEMINI_API_KEY",
        "DEEPSEEK_API_KEY",
    )
    resumable = False

    def __init__(self, executable: str = "aider", *, prices: PriceTable | None = None) -> None:
        self.executable = executable
        self.prices = DEFAULT_PRICES if prices is None else prices
        self._model = ""

    def build(self, invocation: Invocation) -> Launch:
        argv = [
            self.executable,
            "--message-file",
            invocation.prompt_file,
            "--yes-always",
            "--no-auto-commits",
            "--no-dirty-commits",
            "--no-gitignore",
            "--no-pretty",
            "--no-stream",
            "--no-fancy-input",
            "--no-check-update",
            "--no-show-release-notes",
            "--no-show-model-warnings",
            "--no-detect-urls",
            "--no-suggest-shell-commands",
            "--analytics-disable",
            "--chat-history-file",
            "/dev/null",
            "--input-history-file",
            "/dev/null",
        ]
        if invocation.model:
            argv += ["--model", invocation.model]
        self._model = invocation.model
        return Launch(argv=argv, stdin=None, env={"LITELLM_LOCAL_MODEL_COST_MAP": "True"}, resumable=False)

    def new_state(self) -> AiderState:
        return AiderState(model=self._model, prices=self.prices.for_model(self._model) if self._model else None)

    def cost_known(self, state: StreamState) -> bool:
        return not (isinstance(state, AiderState) and state.unpriced_replies > 0 and not state.reported_cost)

    def parse_line(self, line: str, state: StreamState) -> None:
        text = line.strip()
        usage = text.startswith(("Tokens:", "Cost:"))
        cost = AIDER_COST.search(text) if usage else None
        if not isinstance(state, AiderState):  # a plain state: aider's own figures only
            if cost is not None:
                state.cost_usd = max(state.cost_usd, float(cost.group("session").replace(",", "")))
            else:
                state.keep_text(line)
            return
        if state.pending is not None and not (cost is not None and text.startswith("Cost:")):
            state.settle()  # the reply's cost did not follow: aider has no price for it
        state.pending = None
        model = AIDER_MODEL.match(text)
        if model:
            state.model = model.group("model")
            state.prices = self.prices.for_model(state.model)
        tokens = AIDER_TOKENS.match(text) if usage else None
        if tokens is None and cost is None:
            state.keep_text(line)
            return
        if tokens is not None:
            counts = (
                aider_count(tokens.group("sent")),
                aider_count(tokens.group("hit")) if tokens.group("hit") else 0,
                aider_count(tokens.group("received")),
            )
            state.input_tokens += counts[0]
            state.cached_input_tokens += counts[1]
            state.output_tokens += counts[2]
            if cost is None:
                # Priced by aider, the cost is on this line, or on the next one when both
                # cache counts are shown; otherwise the table prices the reply.
                state.pending = counts
                if not (tokens.group("write") and tokens.group("hit")):
                    state.settle()
        if cost is not None:
            state.reported_cost = max(state.reported_cost, float(cost.group("session").replace(",", "")))
            state.cost_usd = max(state.cost_usd, state.reported_cost)

    def report(self, state: StreamState, exit_code: int | None) -> CliReport:
        if isinstance(state, AiderState):
            state.settle()
        return super().report(state, exit_code)


# --------------------------------------------------------------------------------------
# any command
# --------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(prompt_file|workdir|model)\}")


def render_command(template: str, *, prompt_file: str, workdir: str, model: str) -> str:
    """Substitute ``{prompt_file}``, ``{workdir}`` and ``{model}`` (shell-quoted); any
    other braces are left for the shell."""
    values = {"prompt_file": prompt_file, "workdir": workdir, "model": model}
    return _PLACEHOLDER.sub(lambda m: shlex.quote(values[m.group(1)]), template)


# A command agent's cost so far: a line "Cost: $0.42" (optionally "… so far" / "… total").
COMMAND_COST = re.compile(r"^\s*Cost: \$(?P<usd>[0-9][0-9,]*(?:\.[0-9]+)?)(?:\s+(?:so far|total))?\s*$")


class CommandPreset(Preset):
    """Any command: ``bash -c <template>`` with the placeholders filled in, the prompt also
    on stdin. The outcome comes from the signal file and the exit code. Not resumable.

    Its cost, where it reports one: the ``cost_usd`` of its signal file (what the run cost in
    all), or lines ``Cost: $0.42`` it prints as it goes (the total so far: the task's cap is
    then enforced during the run), or aider's ``Cost: … session`` lines."""

    name = "command"
    resumable = False

    def __init__(self, template: str, *, provider_keys: tuple[str, ...] = (), shell: str = "bash") -> None:
        if not template.strip():
            raise ValueError("the command preset needs a command template")
        self.template = template
        self.provider_keys = tuple(provider_keys)
        self.shell = shell

    def build(self, invocation: Invocation) -> Launch:
        command = render_command(
            self.template,
            prompt_file=invocation.prompt_file,
            workdir=invocation.workdir,
            model=invocation.model,
        )
        return Launch(
            argv=[self.shell, "-c", command],
            stdin=invocation.prompt.encode("utf-8"),
            env={},
            resumable=False,
        )

    def parse_line(self, line: str, state: StreamState) -> None:
        match = AIDER_COST.search(line)
        if match:
            state.cost_usd = float(match.group("session").replace(",", ""))
            state.cost_seen = True
            return
        match = COMMAND_COST.match(line)
        if match:
            state.cost_usd = float(match.group("usd").replace(",", ""))
            state.cost_seen = True
            return
        state.keep_text(line)

    def cost_known(self, state: StreamState) -> bool:
        return state.cost_seen

    def finish(
        self,
        state: StreamState,
        exit_code: int | None,
        signal: SignalRead,
        *,
        killed: KillReason | None = None,
    ) -> AgentResult:
        result = super().finish(state, exit_code, signal, killed=killed)
        reported = getattr(signal.signal, "cost_usd", None)
        if reported is not None:
            return dataclasses.replace(result, cost_usd=max(float(reported), result.cost_usd), cost_known=True)
        return result


PRESET_NAMES = ("claude", "codex", "aider", "command")


def command_env(requested: Sequence[str], operator_allowed: str = "") -> tuple[str, ...]:
    """The variables a ``command`` agent receives: those its repository's ``agent.env``
    names, each either a provider variable one of the CLI presets passes (a key, a base URL)
    or one the server allows (``PATCHWRIGHT_AGENT_ENV``, comma-separated) — a repository must
    not be able to hand the server's other secrets to its agent. Raises ValueError naming a
    variable that is neither."""
    allowed = {name.strip() for name in operator_allowed.split(",") if name.strip()}
    for preset in (ClaudePreset, CodexPreset, AiderPreset):
        allowed.update(preset.provider_keys)
    refused = [name for name in requested if name not in allowed]
    if refused:
        raise ValueError(
            f"agent.env names {', '.join(refused)}, which the server does not pass to agents "
            "(the operator may allow it with PATCHWRIGHT_AGENT_ENV)"
        )
    return tuple(dict.fromkeys(requested))


def get_preset(
    name: str,
    *,
    command: str | None = None,
    executables: Mapping[str, str] | None = None,
    prices: PriceTable | None = None,
    command_keys: tuple[str, ...] = (),
) -> Preset:
    """The preset called ``name``; ``command`` is the template the ``command`` preset needs,
    ``executables`` optionally overrides a CLI's path per preset name, ``prices`` turns
    token counts into dollars for the CLIs that report only tokens."""
    exe = dict(executables or {})
    if name == "claude":
        return ClaudePreset(exe.get("claude", "claude"))
    if name == "codex":
        return CodexPreset(exe.get("codex", "codex"), prices=prices)
    if name == "aider":
        return AiderPreset(exe.get("aider", "aider"), prices=prices)
    if name == "command":
        if not command:
            raise ValueError("the command preset needs a command template (agent.command)")
        return CommandPreset(command, provider_keys=command_keys)
    raise ValueError(f"unknown agent preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
