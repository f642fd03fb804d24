"""What the end-to-end tests of the real agent CLIs share (issue 12): the model server's
conversation requests cut per attempt, waiting for a task with its log on failure, and
``patchwright serve`` run from a deploy directory as an operator starts it (:class:`Deployment`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.store.factory import open_store
from bot.tasks.model import Status, Task
from tests.model_server import ModelServer, RecordedRequest

REPO_ROOT = Path(__file__).resolve().parents[2]


class Conversations:
    """The model server's conversation requests, cut per attempt."""

    def __init__(self, server: ModelServer) -> None:
        self.server = server
        self.mark = 0

    def since_last(self) -> list[RecordedRequest]:
        found = [r for r in self.server.requests[self.mark :] if r.conversation]
        self.mark = len(self.server.requests)
        return found


async def reach(e2e: Any, task_id: str, predicate: Any, *, timeout: float = 90.0) -> Any:
    """``e2e.wait_for`` that shows the task's log when the state is not reached."""

    def settled(task: Any) -> bool:
        return predicate(task) or task.status in (Status.FAILED, Status.CLOSED)

    try:
        task = await e2e.wait_for(task_id, settled, timeout=timeout)
        assert predicate(task), f"the task settled elsewhere: {task}"
        return task
    except AssertionError as exc:
        logs = "\n".join(line for _, line in await e2e.store.read_logs(task_id))
        raise AssertionError(f"{exc}\n--- the task's log:\n{logs[-6000:]}") from None


async def task_of(e2e: Any, repo: str, issue: int) -> Any:
    for _ in range(400):
        task = await e2e.store.get_task_by_issue(repo, issue)
        if task is not None:
            return task
        await asyncio.sleep(0.05)
    raise AssertionError("labelling the issue made no task")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Deployment:
    """A deploy directory for ``patchwright serve`` as an operator sets one up: the App's key
    file and a ``.env`` holding every setting — the server's own, on a free port, SQLite and
    the data dir inside the directory, one worker, plus ``extra`` (e.g. the agent's provider
    credentials under the CLI's own names)."""

    root: Path
    port: int

    @classmethod
    def create(
        cls, root: Path, *, app: Mapping[str, Any], github_url: str, webhook_secret: str, extra: Mapping[str, str]
    ) -> Deployment:
        root.mkdir(parents=True)
        (root / "patchwright.private-key.pem").write_text(app["private_key"])
        deployment = cls(root, free_port())
        settings = {
            "PATCHWRIGHT_APP_ID": str(app["id"]),
            "PATCHWRIGHT_PRIVATE_KEY_PATH": "patchwright.private-key.pem",
            "PATCHWRIGHT_WEBHOOK_SECRET": webhook_secret,
            "PATCHWRIGHT_GITHUB_URL": github_url,
            "PATCHWRIGHT_DATABASE_URL": deployment.database_url,
            "PATCHWRIGHT_DATA_DIR": str(deployment.data_dir),
            "PATCHWRIGHT_PORT": str(deployment.port),
            "PATCHWRIGHT_WORKERS": "1",
            **extra,
        }
        (root / ".env").write_text("".join(f"{name}={value}\n" for name, value in settings.items()))
        return deployment

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.root / 'patchwright.db'}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        """What the server printed (stdout and stderr)."""
        return self.root / "server.log"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhook"

    def database_files(self) -> list[Path]:
        return [p for p in self.root.glob("patchwright.db*") if p.is_file()]

    @contextlib.asynccontextmanager
    async def serving(self, *, home: Path) -> AsyncIterator[asyncio.subprocess.Process]:
        """``python -m bot serve`` started in the directory with nothing in its environment but
        PATH and HOME, until it listens; SIGTERM (then SIGKILL) when the block ends."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
        with self.log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "serve", cwd=self.root, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            for _ in range(300):
                assert proc.returncode is None, self.log.read_text()
                if b"patchwright listening" in self.log.read_bytes():
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"serve did not start listening:\n{self.log.read_text()[-3000:]}")
            yield proc
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), timeout=20)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()

    async def settled_task(self, *, timeout: float = 60.0) -> tuple[Task, str]:
        """The server's (first) task once it is in review or failed, and its log up to the
        attempt's last line (the log is stored in batches: it may lag behind the task); fails
        the test with the server's log when no task gets there in time."""
        store = await open_store(self.database_url)
        try:
            task: Task | None = None
            for _ in range(int(timeout / 0.05)):
                tasks = await store.list_tasks(limit=10)
                task = tasks[0] if tasks else None
                if task is not None and task.status in (Status.REVIEW, Status.FAILED):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"no task settled in {timeout} s: {task}\n{self.log.read_text()[-3000:]}")
            last = "pull request #" if task.status is Status.REVIEW else "attempt failed:"
            for _ in range(100):
                logs = "\n".join(line for _, line in await store.read_logs(task.id))
                if last in logs:
                    break
                await asyncio.sleep(0.05)
            return task, logs
        finally:
            await store.close()
