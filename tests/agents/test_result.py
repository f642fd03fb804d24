"""Outcome classification: kills, then the signal file, then the CLI's structured report."""

from __future__ import annotations

from bot.agents.result import AgentOutcome, AgentResult, CliReport, KillReason, Question, classify
from bot.agents.signal import SignalRead, parse_signal

NO_SIGNAL = SignalRead()
DONE = parse_signal('{"status": "done", "summary": "did it"}')
QUESTIONS = parse_signal('{"status": "questions", "questions": [{"id": "q1", "question": "Which?"}]}')
ERROR = parse_signal('{"status": "error", "error": "cannot"}')
BROKEN = parse_signal("{oops")
CLI_OK = CliReport(summary="cli summary", cost_usd=0.5, session_id="s1")
CLI_AUTH = CliReport(
    failure=AgentOutcome.CONFIG_ERROR, message="Not logged in", cost_usd=0.0, session_id="s1"
)
CLI_RATE = CliReport(failure=AgentOutcome.TRANSIENT, message="rate limited", session_id="s1")


def test_kills_win_over_everything() -> None:
    for reason, outcome in [
        (KillReason.STOPPED, AgentOutcome.STOPPED),
        (KillReason.COST, AgentOutcome.KILLED_COST),
        (KillReason.TIMEOUT, AgentOutcome.TIMEOUT),
    ]:
        result = classify(exit_code=-15, signal=DONE, cli=CLI_OK, killed=reason)
        assert result.outcome is outcome
        assert result.error and result.cost_usd == 0.5 and result.session_id == "s1"
        assert result.exit_code == -15


def test_signal_file_decides_a_normal_end() -> None:
    done = classify(exit_code=0, signal=DONE, cli=CLI_OK)
    assert done == AgentResult(
        AgentOutcome.DONE, summary="did it", cost_usd=0.5, session_id="s1", exit_code=0
    )
    questions = classify(exit_code=0, signal=QUESTIONS, cli=CLI_OK)
    assert questions.outcome is AgentOutcome.QUESTIONS
    assert questions.questions == (Question("q1", "Which?"),)
    assert questions.summary == "cli summary"
    error = classify(exit_code=0, signal=ERROR, cli=CLI_OK)
    assert (error.outcome, error.error) == (AgentOutcome.AGENT_ERROR, "cannot")
    # The agent's explicit word stands even when the CLI exits non-zero afterwards.
    assert classify(exit_code=1, signal=DONE, cli=CLI_RATE).outcome is AgentOutcome.DONE


def test_cli_failures_without_a_signal() -> None:
    auth = classify(exit_code=1, signal=NO_SIGNAL, cli=CLI_AUTH)
    assert (auth.outcome, auth.error, auth.exit_code) == (AgentOutcome.CONFIG_ERROR, "Not logged in", 1)
    assert classify(exit_code=1, signal=NO_SIGNAL, cli=CLI_RATE).outcome is AgentOutcome.TRANSIENT
    # A structured CLI failure is more telling than a broken signal file.
    assert classify(exit_code=1, signal=BROKEN, cli=CLI_AUTH).outcome is AgentOutcome.CONFIG_ERROR


def test_malformed_signal_is_an_agent_error() -> None:
    result = classify(exit_code=0, signal=BROKEN, cli=CLI_OK)
    assert result.outcome is AgentOutcome.AGENT_ERROR
    assert "signal.json is not valid JSON" in result.error


def test_exit_code_decides_when_nothing_else_does() -> None:
    assert classify(exit_code=0, signal=NO_SIGNAL, cli=CLI_OK).outcome is AgentOutcome.DONE
    failed = classify(exit_code=3, signal=NO_SIGNAL, cli=CliReport(), output_tail="Traceback: boom")
    assert failed.outcome is AgentOutcome.AGENT_ERROR
    assert failed.error == "the agent exited with code 3; last output:\nTraceback: boom"
    assert "signal 9" in classify(exit_code=-9, signal=NO_SIGNAL, cli=CliReport()).error
    assert classify(exit_code=None, signal=NO_SIGNAL, cli=CliReport()).outcome is AgentOutcome.AGENT_ERROR


def test_outcome_values() -> None:
    assert {o.value for o in AgentOutcome} == {
        "done", "questions", "agent_error", "config_error", "transient", "timeout", "killed_cost", "stopped",
    }  # fmt: skip
    assert AgentOutcome.TRANSIENT.retried_automatically
    assert not AgentOutcome.CONFIG_ERROR.retried_automatically
    assert str(AgentOutcome.DONE) == "done"
    assert AgentResult(AgentOutcome.DONE).ok and not AgentResult(AgentOutcome.TIMEOUT).ok
