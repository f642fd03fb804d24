"""The agent result contract (SPEC §6.3): what one agent run ended with, and how we decide it.

Classification is made only from structured facts: why the process ended (our own timeout,
stop or cost kill), the signal file the agent wrote, and what the preset read from its CLI's
structured output (:class:`CliReport`). Free text is carried in messages, never searched.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from bot.agents.signal import SignalRead


class AgentOutcome(str, enum.Enum):
    DONE = "done"  # the agent finished (signal "done", or a clean exit without a signal)
    QUESTIONS = "questions"  # the agent needs answers from a human: task → waiting
    AGENT_ERROR = "agent_error"  # the agent failed or gave up: counts as a failed attempt
    CONFIG_ERROR = "config_error"  # auth / billing / model / setup: fail with a clear message, no retry
    TRANSIENT = "transient"  # rate limit, overload, provider 5xx: retried with backoff
    TIMEOUT = "timeout"  # our wall-clock limit ended it
    KILLED_COST = "killed_cost"  # killed because the attempt would pass the cost cap
    STOPPED = "stopped"  # a human stopped it (or the task left `running`)

    def __str__(self) -> str:
        return self.value

    @property
    def retried_automatically(self) -> bool:
        """Whether the worker may schedule another try without a human (transient only)."""
        return self is AgentOutcome.TRANSIENT


class KillReason(str, enum.Enum):
    """Why the process runner ended the agent itself."""

    TIMEOUT = "timeout"
    STOPPED = "stopped"
    COST = "cost"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    question: str


@dataclass(frozen=True, slots=True)
class AgentResult:
    outcome: AgentOutcome
    summary: str = ""
    questions: tuple[Question, ...] = ()
    error: str = ""
    cost_usd: float = 0.0
    session_id: str = ""
    exit_code: int | None = None
    cost_known: bool = True  # False: the agent reported no cost (the cap could not be enforced)

    @property
    def ok(self) -> bool:
        return self.outcome is AgentOutcome.DONE


@dataclass(frozen=True, slots=True)
class CliReport:
    """What a preset concluded from its CLI's structured output.

    ``failure`` is ``None`` when the CLI reported success (or reports nothing structured);
    otherwise CONFIG_ERROR, TRANSIENT or AGENT_ERROR with the CLI's own ``message``.
    """

    failure: AgentOutcome | None = None
    message: str = ""
    summary: str = ""
    cost_usd: float = 0.0
    session_id: str = ""
    details: dict[str, str] = field(default_factory=dict)


_KILL_OUTCOMES = {
    KillReason.STOPPED: (AgentOutcome.STOPPED, "the agent was stopped"),
    KillReason.COST: (AgentOutcome.KILLED_COST, "the agent was killed: the attempt would pass the cost cap"),
    KillReason.TIMEOUT: (AgentOutcome.TIMEOUT, "the agent ran out of time and was killed"),
}


def classify(
    *,
    exit_code: int | None,
    signal: SignalRead,
    cli: CliReport,
    killed: KillReason | None = None,
    output_tail: str = "",
) -> AgentResult:
    """Decide the outcome of one run.

    Order: our own kills (stop, cost, timeout) → a valid signal file (the agent's explicit
    word: done / questions / error) → the CLI's structured failure → a malformed signal file →
    the exit code (0 is done, anything else an agent error, with ``output_tail`` as context).
    """
    common = {"cost_usd": cli.cost_usd, "session_id": cli.session_id, "exit_code": exit_code}
    summary = cli.summary
    if killed is not None:
        outcome, message = _KILL_OUTCOMES[killed]
        return AgentResult(outcome, summary=summary, error=message, **common)

    parsed = signal.signal
    if parsed is not None:
        if parsed.status == "done":
            return AgentResult(AgentOutcome.DONE, summary=parsed.summary or summary, **common)
        if parsed.status == "questions":
            questions = tuple(Question(q.id, q.question) for q in parsed.questions)
            return AgentResult(
                AgentOutcome.QUESTIONS, summary=parsed.summary or summary, questions=questions, **common
            )
        return AgentResult(AgentOutcome.AGENT_ERROR, summary=summary, error=parsed.error, **common)

    if cli.failure is not None:
        message = cli.message or f"the agent CLI reported an error (exit code {exit_code})"
        return AgentResult(cli.failure, summary=summary, error=message, **common)

    if signal.problem:
        return AgentResult(AgentOutcome.AGENT_ERROR, summary=summary, error=signal.problem, **common)

    if exit_code == 0:
        return AgentResult(AgentOutcome.DONE, summary=summary, **common)

    if exit_code is None:
        message = "the agent did not report an exit status"
    elif exit_code < 0:
        message = f"the agent was killed by signal {-exit_code}"
    else:
        message = f"the agent exited with code {exit_code}"
    if output_tail.strip():
        message += f"; last output:\n{output_tail.strip()}"
    return AgentResult(AgentOutcome.AGENT_ERROR, summary=summary, error=message, **common)
