"""A 200,000-line log flood through the whole runner: the stored log is capped and says how
much was dropped (issue: "Attempt logs have no size cap")."""

from __future__ import annotations

import dataclasses
import re

import pytest

from bot.sandbox import fake_agent
from bot.tasks.model import Status
from bot.worker.attempt_log import DEFAULT_HEAD_LINES, DEFAULT_TAIL_LINES, LOG_PREFIX

pytestmark = pytest.mark.slow

FLOOD = 200_000
DROPPED = re.compile(r"… ([\d,]+) lines \(([\d,]+) bytes\) of agent output dropped")


@pytest.mark.parametrize("full_logs", [False, True], ids=["database-only", "full-log-file"])
async def test_a_200000_line_flood_is_capped_in_the_stored_log(e2e, full_logs: bool) -> None:
    if full_logs:
        e2e.services = dataclasses.replace(
            e2e.services, settings=e2e.settings.model_copy(update={"full_agent_logs": True})
        )
    command = f"seq 1 {FLOOD}; " + fake_agent.command_template(out=str(e2e.agent_out))
    repo = await e2e.add_repo("flood", config={"agent": {"preset": "command", "command": command,
                                                        "timeout_minutes": 2}})
    task = await e2e.create_task(repo, await e2e.open_issue(repo, "Chatty agent"))
    await e2e.start_pool()
    await e2e.wait_for(task.id, lambda t: t.status is Status.REVIEW, timeout=120)
    await e2e.logs_once_written(task.id, "pull request #", timeout=30)

    lines = [line for _, line in await e2e.store.read_logs(task.id, 1)]
    # The fake agent's last line is its cost ("Cost: $0.0000 total"): the tail's last line.
    agent = [line for line in lines if not line.startswith(LOG_PREFIX)]
    assert len(agent) == DEFAULT_HEAD_LINES + DEFAULT_TAIL_LINES and agent[-1].startswith("Cost: $")
    first_kept = FLOOD - DEFAULT_TAIL_LINES + 2  # the first seq number in the tail
    assert agent[:DEFAULT_HEAD_LINES] == [str(i) for i in range(1, DEFAULT_HEAD_LINES + 1)]
    assert agent[DEFAULT_HEAD_LINES:-1] == [str(i) for i in range(first_kept, FLOOD + 1)]
    [marker] = [line for line in lines if DROPPED.search(line)]
    match = DROPPED.search(marker)
    assert match is not None
    dropped = first_kept - 1 - DEFAULT_HEAD_LINES
    assert int(match.group(1).replace(",", "")) == dropped
    assert int(match.group(2).replace(",", "")) == sum(len(str(i)) + 1 for i in range(DEFAULT_HEAD_LINES + 1, first_kept))
    # in order: the head, the dropped-count line, the tail, then the worker's note of the end
    at = lines.index(marker)
    assert lines[at - 1] == str(DEFAULT_HEAD_LINES) and lines[at + 1] == str(first_kept)
    assert any(line.startswith(LOG_PREFIX + "the agent ended") for line in lines[at + DEFAULT_TAIL_LINES:])
    assert len(lines) < DEFAULT_HEAD_LINES + DEFAULT_TAIL_LINES + 50

    full = e2e.data_dir / "logs" / f"{task.id}-1.log"
    if full_logs:
        text = full.read_text().splitlines()
        agent_lines = [line for line in text if not line.startswith(LOG_PREFIX)]
        assert agent_lines[:-1] == [str(i) for i in range(1, FLOOD + 1)] and agent_lines[-1].startswith("Cost: $")
    else:
        assert not full.exists()
