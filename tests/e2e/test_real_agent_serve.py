"""`patchwright serve` as an operator starts it, with the agent's provider credentials only in
`.env` (issue 12, criterion 4): the real Claude Code, Codex and aider CLIs each receive them
under their own names (`ANTHROPIC_API_KEY`/`ANTHROPIC_BASE_URL`; `OPENAI_API_KEY`/
`OPENAI_BASE_URL`; `OPENAI_API_KEY`/`OPENAI_API_BASE`) and open the PR; the key shows nowhere
else — not in the attempt log, the database, the data dir, the server's log or any command line.

The server runs from a deploy directory whose `.env` holds every setting (aider's model price
too: `PATCHWRIGHT_MODEL_PRICES`); its environment has nothing but PATH and HOME. The repository
says `network: false`, and the sandbox is the default (`auto`): bubblewrap, where it works.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.agents.presets import DEFAULT_PRICES, PriceTable
from bot.sandbox.emulator import Emulator
from bot.tasks.model import Status
from tests.e2e.real_agents import Deployment, free_port
from tests.model_server import ModelServer, RecordedRequest, anthropic, chat, responses

pytestmark = pytest.mark.slow

SECRET = "serve-env-secret"
REPO = "octo-org/envy"
KEY = "sk-ant-api03-" + "Kq7" * 24  # (the model-server-down test's key)
CONTENT = "Hello from the real agent.\n"
AIDER_PRICES = "patchwright-scripted=2/0.5/8"


def bearer(request: RecordedRequest) -> str | None:
    value = request.headers.get("Authorization") or ""
    return value.removeprefix("Bearer ") if value.startswith("Bearer ") else None


@dataclass(frozen=True)
class Cli:
    """One agent CLI as an operator deploys it: the repository's ``agent`` config, the ``.env``
    lines for its provider (given the model server's URL), the model server's script, how the
    key reaches the server, and what the scripted usage costs."""

    name: str
    install: str
    key: str
    agent: dict[str, Any]
    dotenv: Callable[[str], dict[str, str]]
    turns: list[Any]
    sent_key: Callable[[RecordedRequest], str | None]
    cost: float
    calls_out: tuple[str, ...] = ()  # what else the CLI connects to (refused: `network: false`)


def claude() -> Cli:
    model = "claude-sonnet-4-5"
    turns = [
        anthropic.write("NOTES.md", CONTENT, anthropic.Usage(3000, 100)),
        anthropic.Final("Wrote the notes.", anthropic.Usage(3200, 20)),
    ]
    return Cli(
        name="claude",
        install="npm install -g @anthropic-ai/claude-code",
        key=KEY,
        agent={"preset": "claude", "model": model},
        dotenv=lambda url: {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": url},
        turns=turns,
        sent_key=lambda r: r.headers.get("x-api-key"),
        cost=anthropic.claude_cost(model, anthropic.turn_usage(turns)),
    )


def codex() -> Cli:
    model = "gpt-5"  # priced in the default table
    key = "sk-proj-" + "Zr8" * 24
    turns = [
        responses.write_file("NOTES.md", CONTENT, responses.Usage(3000, 0, 100)),
        responses.Final("Wrote the notes.", responses.Usage(3200, 2800, 20)),
    ]
    prices = DEFAULT_PRICES.for_model(model)
    assert prices is not None
    usage = responses.turn_usage(turns)
    return Cli(
        name="codex",
        install="npm install -g @openai/codex",
        key=key,
        agent={"preset": "codex", "model": model},
        dotenv=lambda url: {"OPENAI_API_KEY": key, "OPENAI_BASE_URL": url + "/v1"},
        turns=turns,
        sent_key=bearer,
        cost=prices.cost(usage.input_tokens, usage.cached_tokens, usage.output_tokens),
    )


def aider() -> Cli:
    model = "openai/patchwright-scripted"  # unknown to aider: priced by PATCHWRIGHT_MODEL_PRICES
    key = "sk-proj-" + "Aw5" * 24
    prices = PriceTable().with_overrides(AIDER_PRICES).for_model(model)
    assert prices is not None
    return Cli(
        name="aider",
        install="pip install aider-chat",
        key=key,
        agent={"preset": "aider", "model": model},
        dotenv=lambda url: {
            "OPENAI_API_KEY": key,
            "OPENAI_API_BASE": url + "/v1",
            "PATCHWRIGHT_MODEL_PRICES": AIDER_PRICES,
        },
        turns=[chat.Reply("I will write the notes.\n\n" + chat.whole_file("NOTES.md", CONTENT), chat.Usage(3000, 100))],
        sent_key=bearer,
        cost=prices.cost(3000, 0, 100),
        # aider 0.86.2 fetches litellm's price list at every start (its ModelInfoManager, with a
        # cache in the agent's HOME, which is new per task; LITELLM_LOCAL_MODEL_COST_MAP does not
        # stop it), and carries on without it.
        calls_out=("raw.githubusercontent.com:443",),
    )


CLIS = {"claude": claude, "codex": codex, "aider": aider}


@pytest.mark.parametrize("name", list(CLIS))
async def test_provider_credentials_in_dotenv_reach_the_real_cli_and_nothing_else(
    tmp_path: Path, model_server: ModelServer, leaks: Any, require: Any, name: str
) -> None:
    cli = CLIS[name]()
    require.cli(cli.name, cli.install)
    require.bwrap()
    emulator = Emulator(tmp_path / "github")
    await emulator.start()
    try:
        app = await emulator.create_app("patchwright", slug="patchwright", webhook_secret=SECRET)
        config = {"agent": {**cli.agent, "network": False, "timeout_minutes": 2}}
        await emulator.create_repo(
            "octo-org", "envy", files={"README.md": "hi\n", ".github/patchwright.yml": yaml.safe_dump(config)}
        )
        await emulator.create_installation(app["id"], "octo-org", [REPO])
        emulator.create_user("maintainer", repo=REPO, permission="write")
        # The agent's credentials and endpoint, under the CLI's own names, nowhere but in .env.
        deploy = Deployment.create(
            tmp_path / "srv",
            app=app,
            github_url=emulator.base_url,
            webhook_secret=SECRET,
            extra=cli.dotenv(model_server.base_url),
        )
        model_server.script.extend(cli.turns)
        async with deploy.serving(home=tmp_path):
            emulator.update_app(app["id"], webhook_url=deploy.webhook_url)
            async with leaks.sampling_cmdlines() as sampler:
                await emulator.open_issue(
                    REPO, title="Write notes", body="Add NOTES.md", user="maintainer", labels=["patchwright"]
                )
                task, logs = await deploy.settled_task()
        assert task.status is Status.REVIEW, (task, logs[-3000:], deploy.log.read_text()[-3000:])
        assert await emulator.git.read_file("octo-org", "envy", task.branch, "NOTES.md") == CONTENT.encode()
        assert f"running the {cli.name} agent in bubblewrap" in logs
        assert re.findall(r"refused a connection to (\S+?):? ", logs) == list(cli.calls_out)
        assert task.cost_usd == pytest.approx(cli.cost, rel=0.01)
        conversation = model_server.conversation_requests()
        assert len(conversation) == len(cli.turns) and {cli.sent_key(r) for r in conversation} == {cli.key}
        # The key went to the model server and nowhere else.
        needles = [cli.key.encode()]
        assert cli.key not in logs and sampler.containing(needles) == []
        assert leaks.files_containing(deploy.data_dir, needles) == []
        assert deploy.database_files() and not any(cli.key.encode() in p.read_bytes() for p in deploy.database_files())
        assert cli.key.encode() not in deploy.log.read_bytes()
        print(f"\n[{name}] PR #{task.pr_number}, ${task.cost_usd:.6f}, {sampler.samples} command-line samples")
    finally:
        await emulator.stop()


async def test_a_model_server_that_is_down_fails_the_task_once_with_a_configuration_message(e2e, require) -> None:
    """Issue 12, criterion 5: no transient retry loop against a provider nobody answers."""
    require.cli("claude", "npm install -g @anthropic-ai/claude-code")
    require.bwrap()
    closed = free_port()  # nothing listens there
    config = {"agent": {"preset": "claude", "model": "claude-sonnet-4-5", "network": False, "timeout_minutes": 2}}
    repo = await e2e.add_repo("down", config=config)
    issue = await e2e.open_issue(repo, "Anything")
    task = await e2e.create_task(repo, issue)
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ANTHROPIC_API_KEY": KEY,
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{closed}",
    }
    await e2e.start_pool(sandbox="bwrap", environ=environ)
    failed = await e2e.wait_for(task.id, lambda t: t.status is Status.FAILED, timeout=90)
    assert f"127.0.0.1:{closed}" in failed.close_reason and "ANTHROPIC_BASE_URL" in failed.close_reason
    assert failed.attempt == 1 and len(await e2e.store.list_attempts(task.id)) == 1  # once, not retried
