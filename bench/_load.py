"""Load generation for ``bench/ingress.py``: signed webhook deliveries over keep-alive connections.

Two generators, both in processes of their own (never in the benchmark's or the server's):

- ``wrk`` (preferred; Debian package ``wrk``): a generated Lua script keeps the body and its
  signature constant (the signature covers the body only) and gives every request a fresh
  uuid4-shaped ``X-GitHub-Delivery``; its ``done()`` prints one JSON line with the latency
  percentiles, the request count and the answers by status code.
- a multi-process aiohttp client (``python -m bench._load client``), for machines without wrk.
  Each process runs its share of the connections, stops sending at the deadline and waits for
  the answers still in flight, so it never abandons a request.

A run is a warm-up (its answers are counted, its latencies are not) followed by the measured
phase. Latencies are from sending a request to reading the whole answer.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import math
import re
import resource
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULT_MARKER = "BENCH_RESULT "
WRK_TIMEOUT_S = 5


@dataclass(frozen=True)
class LoadSpec:
    """What to send, where, and for how long."""

    url: str
    body: bytes
    secret: str
    event: str = "issues"
    connections: int = 32
    seconds: float = 5.0
    warmup: float = 1.0
    workers: int = 1  # wrk threads, or client processes for the Python generator


@dataclass
class LoadResult:
    """What one generator saw. Counts by status are for the measured phase unless named warm-up."""

    generator: str
    seconds: float
    latencies_known: bool
    p50_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[int, int] = field(default_factory=dict)
    warmup_statuses: dict[int, int] = field(default_factory=dict)
    socket_errors: int = 0
    #: requests the generator sent but never saw answered (wrk abandons them at its deadline)
    abandoned: int = 0
    #: CPU time (user + system) of the generator's processes, warm-up included
    cpu_s: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)

    def answered(self, status: int) -> int:
        """Answers with ``status`` over the warm-up and the measured phase."""
        return self.statuses.get(status, 0) + self.warmup_statuses.get(status, 0)


# -- pure helpers ---------------------------------------------------------------------------


def hub_signature(body: bytes, secret: str) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends: HMAC-SHA256 of the exact body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery_headers(body: bytes, secret: str, event: str) -> dict[str, str]:
    """The constant headers of a delivery (everything but ``X-GitHub-Delivery``)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/bench",
        "X-GitHub-Event": event,
        "X-GitHub-Hook-ID": "1",
        "X-Hub-Signature-256": hub_signature(body, secret),
    }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of already sorted values; 0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def merge_counts(*counts: Mapping[int, int]) -> dict[int, int]:
    total: Counter[int] = Counter()
    for count in counts:
        total.update(count)
    return dict(sorted(total.items()))


def children_cpu_seconds() -> float:
    """User + system CPU time of this process's finished (waited-for) child processes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of ASCII text is a valid Lua string literal


def wrk_script(body_path: Path, headers: Mapping[str, str], id_prefix: str) -> str:
    """The Lua script for one wrk run.

    ``id_prefix`` is the first 18 characters of a uuid4 (``xxxxxxxx-xxxx-4xxx``); each thread
    appends ``-<variant+thread>-<counter>``, so every id is distinct and shaped like a uuid4.
    """
    if not re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}", id_prefix):
        raise ValueError(f"not the start of a uuid4: {id_prefix!r}")
    header_lines = "\n".join(
        f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}" for name, value in headers.items()
    )
    return f"""-- generated by bench/_load.py
local body_file = assert(io.open({_lua_string(str(body_path))}, "rb"))
wrk.method = "POST"
wrk.body = body_file:read("*a")
body_file:close()
{header_lines}

local threads = {{}}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  sent = 0
  statuses = {{}}
  id_prefix = string.format("%s-%04x-", {_lua_string(id_prefix)}, 0x8000 + tid)
end

function request()
  sent = sent + 1
  wrk.headers["X-GitHub-Delivery"] = id_prefix .. string.format("%012x", sent)
  return wrk.format()
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local sent_total = 0
  local codes = {{}}
  for _, thread in ipairs(threads) do
    sent_total = sent_total + thread:get("sent")
    for code, n in pairs(thread:get("statuses")) do
      codes[code] = (codes[code] or 0) + n
    end
  end
  local parts = {{}}
  for code, n in pairs(codes) do
    table.insert(parts, string.format('"%s": %d', code, n))
  end
  local e = summary.errors
  io.write(string.format(
    '{RESULT_MARKER}{{"duration_us": %d, "requests": %d, "sent": %d, "p50_us": %d, "p99_us": %d, '
    .. '"max_us": %d, "errors": {{"connect": %d, "read": %d, "write": %d, "timeout": %d}}, '
    .. '"statuses": {{%s}}}}\\n',
    summary.duration, summary.requests, sent_total, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.timeout, table.concat(parts, ", ")))
end
"""


def parse_result_line(output: str) -> dict:
    """The JSON object on the line that starts with :data:`RESULT_MARKER`."""
    for line in output.splitlines():
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    raise ValueError(f"no {RESULT_MARKER.strip()} line in the generator's output:\n{output[-2000:]}")


def wrk_counts(result: Mapping) -> tuple[dict[int, int], int, int]:
    """(answers by status, socket errors, abandoned requests) from a parsed wrk result."""
    statuses = {int(code): int(n) for code, n in result["statuses"].items()}
    errors = result["errors"]
    # A read/write error or a timeout is a request that got no answer; connect errors sent none.
    socket_errors = int(errors["connect"]) + int(errors["read"]) + int(errors["write"]) + int(errors["timeout"])
    unanswered = int(result["sent"]) - sum(statuses.values())
    failed = int(errors["read"]) + int(errors["write"]) + int(errors["timeout"])
    return statuses, socket_errors, max(0, unanswered - failed)


# -- wrk ------------------------------------------------------------------------------------


def wrk_path() -> str | None:
    return shutil.which("wrk")


async def wrk_version(path: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        path, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    first = out.decode(errors="replace").strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "wrk"


async def _wrk_once(wrk: str, spec: LoadSpec, workdir: Path, seconds: float, name: str) -> dict:
    body_path = workdir / "body.json"
    if not body_path.exists():
        body_path.write_bytes(spec.body)
    script = workdir / f"{name}.lua"
    prefix = str(uuid.uuid4())[:18]
    script.write_text(wrk_script(body_path, delivery_headers(spec.body, spec.secret, spec.event), prefix))
    threads = max(1, min(spec.workers, spec.connections))
    duration = f"{max(1, math.ceil(seconds))}s"  # wrk counts whole seconds
    proc = await asyncio.create_subprocess_exec(
        wrk,
        f"-t{threads}",
        f"-c{spec.connections}",
        f"-d{duration}",
        f"--timeout={WRK_TIMEOUT_S}s",
        "-s",
        str(script),
        spec.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    return parse_result_line(out.decode(errors="replace"))


async def run_wrk(spec: LoadSpec, workdir: Path, wrk: str) -> LoadResult:
    """A warm-up run then the measured run of wrk, each a process of its own."""
    warm_statuses: dict[int, int] = {}
    abandoned = warm_errors = 0
    cpu = children_cpu_seconds()
    if spec.warmup > 0:
        warm = await _wrk_once(wrk, spec, workdir, spec.warmup, "warmup")
        warm_statuses, warm_errors, abandoned = wrk_counts(warm)
    measured = await _wrk_once(wrk, spec, workdir, spec.seconds, "measured")
    statuses, errors, measured_abandoned = wrk_counts(measured)
    return LoadResult(
        generator="wrk",
        seconds=measured["duration_us"] / 1e6,
        latencies_known=measured["requests"] > 0,
        p50_ms=measured["p50_us"] / 1000,
        p99_ms=measured["p99_us"] / 1000,
        max_ms=measured["max_us"] / 1000,
        statuses=statuses,
        warmup_statuses=warm_statuses,
        socket_errors=errors + warm_errors,
        abandoned=abandoned + measured_abandoned,
        cpu_s=children_cpu_seconds() - cpu,
    )


# -- the Python generator -------------------------------------------------------------------


def split_connections(connections: int, processes: int) -> list[int]:
    """Connections per client process, as even as possible, none empty."""
    processes = max(1, min(processes, connections))
    base, extra = divmod(connections, processes)
    return [base + (1 if n < extra else 0) for n in range(processes)]


async def run_python(spec: LoadSpec, workdir: Path) -> LoadResult:
    """Client processes (``python -m bench._load client``) started together, results merged."""
    body_path = workdir / "body.json"
    body_path.write_bytes(spec.body)
    procs: list[asyncio.subprocess.Process] = []
    cpu = children_cpu_seconds()
    try:
        for share in split_connections(spec.connections, spec.workers):
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench._load",
                    "client",
                    "--url",
                    spec.url,
                    "--body",
                    str(body_path),
                    "--event",
                    spec.event,
                    "--connections",
                    str(share),
                    "--seconds",
                    str(spec.seconds),
                    "--warmup",
                    str(spec.warmup),
                    cwd=REPO_ROOT,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
        for proc in procs:  # each says READY once imported and connected
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            if line.strip() != b"READY":
                raise RuntimeError(f"load client did not start: {line!r}")
        for proc in procs:  # the secret travels on stdin, then GO
            assert proc.stdin is not None
            proc.stdin.write(spec.secret.encode() + b"\nGO\n")
            await proc.stdin.drain()
            proc.stdin.close()
        outputs = [await proc.communicate() for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    results = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        if proc.returncode != 0:
            raise RuntimeError(f"load client exited with {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
        results.append(parse_result_line(out.decode(errors="replace")))
    latencies = sorted(value for result in results for value in result["latencies_ms"])
    return LoadResult(
        generator="python",
        seconds=spec.seconds,
        latencies_known=bool(latencies),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else 0.0,
        statuses=merge_counts(*({int(k): v for k, v in r["statuses"].items()} for r in results)),
        warmup_statuses=merge_counts(*({int(k): v for k, v in r["warmup_statuses"].items()} for r in results)),
        socket_errors=sum(r["socket_errors"] for r in results),
        cpu_s=children_cpu_seconds() - cpu,
    )


async def client_process(url: str, body: bytes, event: str, connections: int, seconds: float, warmup: float) -> dict:
    """One client process: ``connections`` keep-alive connections, each sending in a loop."""
    import aiohttp  # only the client process needs it

    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=WRK_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        print("READY", flush=True)
        secret = (await reader.readline()).decode().rstrip("\n")
        if (await reader.readline()).strip() != b"GO":
            raise SystemExit("expected GO on stdin")
        base = delivery_headers(body, secret, event)
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        warm_statuses: Counter[int] = Counter()
        errors = 0
        started = time.perf_counter()
        measure_from = started + warmup
        stop_at = measure_from + seconds

        async def connection() -> None:
            nonlocal errors
            while (sent_at := time.perf_counter()) < stop_at:
                headers = {**base, "X-GitHub-Delivery": str(uuid.uuid4())}
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, OSError, TimeoutError):
                    errors += 1
                    continue
                if sent_at >= measure_from:
                    latencies.append((time.perf_counter() - sent_at) * 1000)
                    statuses[status] += 1
                else:
                    warm_statuses[status] += 1

        await asyncio.gather(*(connection() for _ in range(connections)))
    return {
        "latencies_ms": latencies,
        "statuses": dict(statuses),
        "warmup_statuses": dict(warm_statuses),
        "socket_errors": errors,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="A load-generator process of bench/ingress.py.")
    sub = parser.add_subparsers(dest="command", required=True)
    client = sub.add_parser("client", help="send signed deliveries; the secret comes on stdin")
    client.add_argument("--url", required=True)
    client.add_argument("--body", required=True, type=Path)
    client.add_argument("--event", default="issues")
    client.add_argument("--connections", type=int, default=16)
    client.add_argument("--seconds", type=float, default=5.0)
    client.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)
    result = asyncio.run(
        client_process(
            args.url, args.body.read_bytes(), args.event, args.connections, args.seconds, args.warmup
        )
    )
    sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
