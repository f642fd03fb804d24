"""``CodexPreset.poll_cost`` (issue 12, criterion 3): ``codex exec --json`` prints usage only at
``turn.completed``, so while a run goes on the worker polls Codex's session file, where every
answer's usage is recorded as it arrives, and enforces the task's cost cap on that figure.
(The real Codex killed mid-run by it: tests/e2e/test_cost_cap_mid_run.py.)"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bot.agents.presets import (
    ClaudePreset,
    CodexPreset,
    CodexState,
    Invocation,
    PriceTable,
    TokenPrices,
)

THREAD = "0199a213-81c0-7800-8aa1-bbab2a035a53"
PRICES = TokenPrices(input=1.25, cached_input=0.125, output=10.0)
INV = Invocation(prompt="Fix it.\n", prompt_file="/tmp/p/prompt.md", workdir="/tmp/w")


def record(home: Path, *totals: tuple[int, int, int], running: bool = True) -> Path:
    """Codex's session file, one answer per entry of ``totals`` (the thread's totals after it),
    as Codex 0.171 writes it: a ``token_usage_record`` as the answer arrives, a ``token_count``
    once the tools it asked for ran — not yet for the last answer while the run goes on."""
    path = home / ".codex" / "sessions" / "2026" / "12" / "07" / f"rollout-2026-12-07T05-15-52-{THREAD}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines: list[dict[str, object]] = [{"type": "session_meta", "payload": {"id": THREAD}}]
    for number, (inp, cached, out) in enumerate(totals, 1):
        usage = {"input_tokens": inp, "cached_input_tokens": cached, "output_tokens": out}
        lines.append({"type": "token_usage_record", "payload": {"usage": {}, "thread_token_usage": usage}})
        if number < len(totals) or not running:
            count = {"type": "token_count", "info": {"total_token_usage": usage}}
            lines.append({"type": "event_msg", "payload": count})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def started(preset: CodexPreset, home: Path, *, session: str = "") -> CodexState:
    preset.build(dataclasses.replace(INV, session_id=session, env={"HOME": str(home)}))
    state = preset.new_state()
    preset.parse_line(json.dumps({"type": "thread.started", "thread_id": THREAD}), state)
    return state


async def test_the_cost_so_far_is_read_from_codexs_session_record(tmp_path: Path) -> None:
    preset = CodexPreset(prices=PRICES)
    assert preset.cost_poll_seconds == 1.0 and ClaudePreset.cost_poll_seconds is None
    state = started(preset, tmp_path)
    await preset.poll_cost(state)  # nothing recorded yet
    assert state.cost_usd == 0.0
    record(tmp_path, (10_000, 0, 100))
    await preset.poll_cost(state)
    assert state.cost_usd == pytest.approx(PRICES.cost(10_000, 0, 100))
    record(tmp_path, (10_000, 0, 100), (50_000, 8_000, 300))
    await preset.poll_cost(state)
    assert state.cost_usd == pytest.approx(PRICES.cost(50_000, 8_000, 300))
    assert (state.input_tokens, state.cached_input_tokens, state.output_tokens) == (50_000, 8_000, 300)


async def test_polling_never_lowers_the_cost_nor_overrides_codexs_own_report(tmp_path: Path) -> None:
    preset = CodexPreset(prices=PRICES)
    state = started(preset, tmp_path)
    record(tmp_path, (50_000, 0, 300))
    await preset.poll_cost(state)
    high = state.cost_usd
    record(tmp_path, (1_000, 0, 10))  # a rewritten (or planted) record with less
    await preset.poll_cost(state)
    assert state.cost_usd == high
    completed = {"input_tokens": 60_000, "cached_input_tokens": 0, "output_tokens": 400}
    preset.parse_line(json.dumps({"type": "turn.completed", "usage": completed}), state)
    record(tmp_path, (90_000, 0, 900))
    await preset.poll_cost(state)  # the turn's own report is final
    assert state.cost_usd == pytest.approx(PRICES.cost(60_000, 0, 400))


async def test_a_resumed_thread_is_polled_for_its_increase_only(tmp_path: Path) -> None:
    record(tmp_path, (20_000, 0, 200), running=False)  # what the earlier runs of the thread used
    preset = CodexPreset(prices=PRICES)
    state = started(preset, tmp_path, session=THREAD)
    record(tmp_path, (20_000, 0, 200), (30_000, 0, 250))
    await preset.poll_cost(state)
    assert state.cost_usd == pytest.approx(PRICES.cost(10_000, 0, 50))


async def test_nothing_is_polled_without_a_thread_or_a_price(tmp_path: Path) -> None:
    record(tmp_path, (10_000, 0, 100))
    preset = CodexPreset(prices=PRICES)
    preset.build(dataclasses.replace(INV, env={"HOME": str(tmp_path)}))
    state = preset.new_state()  # no thread.started yet
    await preset.poll_cost(state)
    assert state.cost_usd == 0.0
    unpriced = CodexPreset(prices=PriceTable())
    state = started(unpriced, tmp_path)
    await unpriced.poll_cost(state)
    assert state.cost_usd == 0.0
    await ClaudePreset().poll_cost(ClaudePreset().new_state())  # the default does nothing
