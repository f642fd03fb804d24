"""`patchwright serve --dev` does what README's Quick start says: it starts on embedded defaults
with nothing configured — no GitHub App, no webhook secret — and serves the webhook endpoint
(deliveries verified and recorded), health and the dashboard (issue 15)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import uuid
from pathlib import Path

import aiohttp

from tests.conftest import hub_signature

REPO_ROOT = Path(__file__).resolve().parents[2]


async def test_serve_dev_starts_without_an_app_and_records_webhooks(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", "--dev", "--port", "0", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out = b""
        while b"patchwright listening on" not in out:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, (out + await proc.stderr.read()).decode()
            out += line
        text = out.decode()
        secret = re.search(r"generated webhook secret (\S+) ", text)
        port = re.search(r"listening on http://127\.0\.0\.1:(\d+)", text)
        assert secret and port and "without a GitHub App" in text, text
        base = f"http://127.0.0.1:{port.group(1)}"
        body = json.dumps({"action": "labeled", "issue": {"number": 1}}).encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": hub_signature(body, secret.group(1)),
        }
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            async with session.post(f"{base}/webhook", data=body, headers=headers) as resp:
                assert resp.status == 202, await resp.text()
            async with session.post(f"{base}/webhook", data=body, headers={**headers, "X-Hub-Signature-256": "sha256=00"}) as resp:
                assert resp.status == 401
            async with session.get(f"{base}/") as resp:
                assert resp.status == 200  # the dashboard, on loopback
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        err = (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert (tmp_path / "patchwright.db").exists()  # the embedded default: ./patchwright.db
