"""Issue #11: 1,100 connections that never finish their request headers, against the real
``patchwright serve`` in a process limited to 1,024 open files: a real signed delivery is
still answered well within GitHub's 10 s webhook timeout.

The server runs in a child process whose open-file limit (soft and hard, so ``serve`` cannot
raise it) is 1,024; this process opens the connections, from 127.0.0.1 to 127.0.0.1 only, a
bounded number of them, and closes every one at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

SECRET = "flood-test-secret"
SERVER_NOFILE = 1024
FLOOD = 1100
#: GitHub gives up on a delivery after 10 s; the answer must come well before.
ANSWER_WITHIN_S = 5.0
#: Runs ``patchwright serve`` with the open-file limit set first (no preexec_fn: threads).
LAUNCH = (
    "import resource, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({SERVER_NOFILE}, {SERVER_NOFILE})); "
    "from bot.__main__ import main; sys.exit(main(['serve']))"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def private_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def ensure_own_file_limit(needed: int) -> None:
    """This process must hold the flood's sockets itself: raise its soft limit if need be."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == resource.RLIM_INFINITY or soft >= needed, f"the test needs {needed} open files, has {soft}"


async def wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(400):
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise AssertionError("server did not start:\n" + log.read_text())


async def open_unfinished(port: int, count: int) -> list[asyncio.StreamWriter]:
    """``count`` connections, each with the start of a request and never the rest."""

    async def one() -> asyncio.StreamWriter | None:
        try:
            _reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 3)
        except (OSError, TimeoutError):
            return None
        writer.write(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nX-GitHub-Event: issues\r\n")
        return writer

    writers: list[asyncio.StreamWriter] = []
    for start in range(0, count, 100):
        batch = await asyncio.gather(*(one() for _ in range(start, min(count, start + 100))))
        writers.extend(writer for writer in batch if writer is not None)
    return writers


async def test_a_real_delivery_is_answered_while_1100_connections_never_finish_their_headers(tmp_path: Path):
    ensure_own_file_limit(FLOOD + 200)
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PATCHWRIGHT_APP_ID": "1",
        "PATCHWRIGHT_APP_SLUG": "patchwright",
        "PATCHWRIGHT_PRIVATE_KEY": private_key_pem(),
        "PATCHWRIGHT_WEBHOOK_SECRET": SECRET,
        "PATCHWRIGHT_GITHUB_URL": f"http://127.0.0.1:{free_port()}",  # never called here
        "PATCHWRIGHT_DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
        "PATCHWRIGHT_DATA_DIR": str(tmp_path / "data"),
        "PATCHWRIGHT_HOST": "127.0.0.1",
        "PATCHWRIGHT_PORT": str(port),
        "PATCHWRIGHT_WORKERS": "0",
        "PATCHWRIGHT_RECONCILE_INTERVAL": "3600",
    }
    log = tmp_path / "server.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    writers: list[asyncio.StreamWriter] = []
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(url, proc, log)

        writers = await open_unfinished(port, FLOOD)
        assert len(writers) >= FLOOD * 0.9, f"only {len(writers)} connections opened"

        body = b'{"action": "labeled", "repository": {"full_name": "o/r"}, "installation": {"id": 7}}'
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": "through-the-flood",
            "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
        }
        started = time.monotonic()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.post(url + "/webhook", data=body, headers=headers) as resp:
                status = resp.status
        elapsed = time.monotonic() - started
        assert status == 202, log.read_text()
        assert elapsed < ANSWER_WITHIN_S, f"answered after {elapsed:.1f} s"
        assert proc.poll() is None, log.read_text()
        # the unfinished connections were capped: the server never ran out of descriptors
        assert "out of system resource" not in log.read_text()
    finally:
        for writer in writers:
            writer.close()
        await asyncio.gather(*(writer.wait_closed() for writer in writers), return_exceptions=True)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
