"""The worker's pre-push checks against what an untrusted agent leaves (issue 11): paths git
refuses fail the attempt (no free transient reruns); a file over `max_file_size_mb` fails it by
its size, unread, with the server's memory bounded; the bot's own secrets are refused in
encoded forms."""

from __future__ import annotations

import base64
import time

import pytest

from bot.tasks.model import Status

pytestmark = pytest.mark.slow


async def test_a_path_git_refuses_to_add_fails_the_attempt_naming_it(e2e) -> None:
    script = {
        "first": [
            {"write": {"src/app.py": "# a normal change\n", ".GIT/config": "[core]\n\tbare = false\n"}},
            {"done": "Done."},
        ]
    }
    repo = await e2e.add_repo("gitpath", script=script)
    issue = await e2e.open_issue(repo, "Refused path")
    task = await e2e.create_task(repo, issue)
    await e2e.start_pool()
    failed = await e2e.wait_for(task.id, lambda t: t.status is Status.FAILED)
    assert ".GIT/config" in failed.close_reason and "git refuses" in failed.close_reason
    assert failed.attempt == 1 and failed.not_before is None  # no transient rerun
    [attempt] = await e2e.store.list_attempts(task.id)
    assert attempt.outcome == "failed" and ".GIT/config" in attempt.error
    refs = await e2e.git(repo, "for-each-ref", "--format=%(refname)")
    assert refs.split() == ["refs/heads/main"], refs


# -- a 200 MB file: refused by its size, without reading it, in bounded memory ---------------


async def test_a_200_mb_file_fails_the_attempt_by_its_size_in_bounded_memory(e2e, peak_rss) -> None:
    size = 200 * 1024 * 1024
    script = {
        "first": [
            {"write": {"src/app.py": "# a normal change\n"}},
            {"touch": "{out}/running"},
            {"wait_for": "{out}/go", "timeout": 60},
            {"done": "Wrote a large data file."},
        ]
    }
    repo = await e2e.add_repo("bigfile", script=script)
    issue = await e2e.open_issue(repo, "Big file")
    task = await e2e.create_task(repo, issue)
    await e2e.start_pool()
    await e2e.wait_until(lambda: (e2e.agent_out / "running").exists(), what="the agent runs")
    # The agent writes 200 MB (sparse: cheap on disk, but git hashes all of it when staging).
    big = e2e.data_dir / "work" / task.id / "data" / "big.bin"
    big.parent.mkdir(parents=True, exist_ok=True)
    with big.open("wb") as f:
        f.truncate(size)
    started = time.monotonic()
    with peak_rss() as grown:
        (e2e.agent_out / "go").touch()
        failed = await e2e.wait_for(task.id, lambda t: t.status is Status.FAILED, timeout=120)
    elapsed = time.monotonic() - started
    print(f"200 MB file: server peak RSS +{grown['MiB']:.1f} MiB ({grown['samples']} samples), {elapsed:.1f} s")
    assert grown["MiB"] < 100, grown

    line = next(line for line in failed.close_reason.splitlines() if "data/big.bin" in line)
    assert "200 MiB" in line and "10 MiB" in line and "max_file_size_mb" in line, failed.close_reason
    assert "Refusing to push" in failed.close_reason and "Nothing was pushed" in failed.close_reason
    assert failed.attempt == 1 and failed.not_before is None  # failed, not a transient rerun
    [attempt] = await e2e.store.list_attempts(task.id)
    assert attempt.outcome == "failed" and "data/big.bin" in attempt.error
    refs = await e2e.git(repo, "for-each-ref", "--format=%(refname)")
    assert refs.split() == ["refs/heads/main"], refs


# -- the secrets the bot holds, in any form, are refused ------------------------------------


async def test_the_bots_own_secrets_are_refused_in_encoded_forms(e2e) -> None:
    script = {
        "first": [
            {"write": {"src/app.py": "# a normal change\n"}},
            {"touch": "{out}/running"},
            {"wait_for": "{out}/go", "timeout": 60},
            {"done": "Done."},
        ]
    }
    repo = await e2e.add_repo("ownsecrets", script=script)
    issue = await e2e.open_issue(repo, "Own secrets")
    task = await e2e.create_task(repo, issue)
    webhook = e2e.settings.webhook_secret.get_secret_value()
    token = await e2e.github.tokens.installation_token(e2e.installation_id)  # what the worker uses
    key_lines = [line for line in e2e.private_key.splitlines() if not line.startswith("-----")]
    files = {
        "config/hook.txt": base64.b64encode(webhook.encode()).decode() + "\n",
        "config/token.hex": token.encode().hex() + "\n",
        "config/key.py": "KEY = (\n" + "".join(f'    "{line}"\n' for line in key_lines[2:6]) + ")\n",
    }
    await e2e.start_pool()
    await e2e.wait_until(lambda: (e2e.agent_out / "running").exists(), what="the agent runs")
    for path, text in files.items():  # written while the agent runs, as if by the agent
        target = e2e.data_dir / "work" / task.id / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (e2e.agent_out / "go").touch()
    failed = await e2e.wait_for(task.id, lambda t: t.status is Status.FAILED)
    reason = failed.close_reason
    assert "Refusing to push" in reason, reason
    for path, label in (
        ("config/hook.txt", "webhook secret"),
        ("config/token.hex", "token the bot used"),
        ("config/key.py", "private key"),
    ):
        lines = [line for line in reason.splitlines() if line.startswith(f"- {path}:") and "[known_secret]" in line]
        assert len(lines) == 1 and label in lines[0], reason
    for value in (webhook, token, token.encode().hex(), *key_lines[2:6]):
        assert value not in reason
    refs = await e2e.git(repo, "for-each-ref", "--format=%(refname)")
    assert refs.split() == ["refs/heads/main"], refs
