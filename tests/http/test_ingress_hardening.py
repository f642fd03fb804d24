"""Issue #11: what an unsigned or malformed request can cost the webhook server.

The server runs as ``patchwright serve`` builds it (``bot.app.IngressRunner`` on a real
socket, short timeouts configured here), and requests go over raw sockets so that headers
and bodies can be as broken, as slow or as compressed as an attacker likes. Every malformed
request gets its 4xx (never a 500); compressed bodies are refused without being read; a
connection that does not finish its request headers or body in time is closed; connections
that have not sent a complete request are capped (the oldest go first).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
import uuid
import zlib

import pytest

from bot.app import ConnectionLimits, IngressRunner, create_app
from bot.config import load_settings

SECRET = "It's a Secret to Everybody"
#: Short limits so that the timeouts show in well under a second.
LIMITS = ConnectionLimits(header_timeout_s=0.3, body_timeout_s=0.3, body_seconds_per_mib=0.0, max_incomplete=64)
#: How long a test waits for what should happen at once (a generous margin on a busy machine).
PROMPT_S = 5.0


@pytest.fixture
async def serve(store):
    """``await serve(limits)``: the port of a server as ``patchwright serve`` runs it."""
    from aiohttp import web

    runners = []

    async def start(limits: ConnectionLimits) -> int:
        settings = load_settings({"PATCHWRIGHT_WEBHOOK_SECRET": SECRET}, env_file=None)
        runner = IngressRunner(create_app(settings, store=store), limits=limits, access_log=None)
        runners.append(runner)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner.addresses[0][1]

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest.fixture
async def port(serve):
    return await serve(LIMITS)


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def error(self) -> str:
        return json.loads(self.body)["error"]


async def read_response(reader: asyncio.StreamReader) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Response(status, headers, body)


@contextlib.asynccontextmanager
async def connection(port: int):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def request_bytes(body: bytes, headers: dict[str, bytes | str], *, path: str = "/webhook") -> bytes:
    lines = [f"POST {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    for name, value in headers.items():
        lines.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()))
    if not any(name.lower() in ("content-length", "transfer-encoding") for name in headers):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def signed(body: bytes, **extra: bytes | str) -> dict[str, bytes | str]:
    headers: dict[str, bytes | str] = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": _sign(body),
    }
    headers.update(extra)
    return headers


def _sign(body: bytes) -> str:
    import hashlib
    import hmac

    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


async def post(port: int, body: bytes, headers: dict[str, bytes | str], **kwargs) -> Response:
    async with connection(port) as (reader, writer):
        writer.write(request_bytes(body, headers, **kwargs))
        return await asyncio.wait_for(read_response(reader), PROMPT_S)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within ``seconds`` (anything it sends first
    is read and ignored)."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


# -- malformed headers and bodies: their 4xx, never a 500 ---------------------------------------

GOOD = b'{"action": "labeled", "repository": {"full_name": "o/r"}, "installation": {"id": 7}}'


async def test_a_well_formed_delivery_is_accepted(port, store):
    resp = await post(port, GOOD, signed(GOOD, **{"X-GitHub-Delivery": "fine-1"}))
    assert resp.status == 202, resp.body
    row = await store.get_delivery("fine-1")
    assert row is not None and row.installation_id == 7


@pytest.mark.parametrize(
    "name, value, status, fragment",
    [
        ("X-Hub-Signature-256", "sha256=".encode() + "é".encode() * 32, 401, "Malformed"),
        ("X-Hub-Signature-256", b"sha256=\xff\xfe" + b"0" * 62, 401, "Malformed"),
        ("X-GitHub-Delivery", "dé-1".encode(), 400, "X-GitHub-Delivery"),
        ("X-GitHub-Delivery", b"\xff\xfe-not-utf-8", 400, "X-GitHub-Delivery"),
        ("X-GitHub-Delivery", b"a\x01b", 400, ""),
        ("X-GitHub-Delivery", b"a\x7fb", 400, ""),
        ("X-GitHub-Delivery", b"x" * 300, 400, "X-GitHub-Delivery"),
        ("X-GitHub-Event", "issués".encode(), 400, "X-GitHub-Event"),
        ("X-GitHub-Event", b"issues\x01", 400, ""),
    ],
    ids=[
        "signature not ascii",
        "signature not utf-8",
        "delivery not ascii",
        "delivery not utf-8",
        "delivery control char",
        "delivery DEL",
        "delivery too long",
        "event not ascii",
        "event control char",
    ],
)
async def test_malformed_headers_get_their_4xx(port, store, name, value, status, fragment):
    headers = signed(GOOD)
    headers[name] = value
    resp = await post(port, GOOD, headers)
    assert resp.status == status, resp.body
    if fragment:
        assert fragment in resp.error()
    assert await store.list_deliveries() == []


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b'{"installation": {"id": 9223372036854775808}}', "installation.id"),
        (b'{"installation": {"id": 18446744073709551616}}', "installation.id"),
        (b'{"installation": {"id": -9223372036854775809}}', "installation.id"),
        (b'{"installation": {"id": 1' + b"0" * 5000 + b'}}', "installation.id"),
        (b'{"installation": {"id": 1e999}}', "installation.id"),
        (b'{"installation": {"id": 7.5}}', "installation.id"),
        (b'{"action": 5, "installation": {"id": 1e999}}', "installation.id"),
        (b'{"action": "x", "n": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON object"),
        (b'{"action": 5, "n": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested"),
        (b'{"action": 5, "n": [1, 2,]}', "not valid JSON"),
        (b'{"action": 5, "n": "caf\xe9"}', "not valid JSON"),
    ],
    ids=[
        "id 2**63",
        "id 2**64",
        "id below int64",
        "id 5000 digits",
        "id 1e999",
        "id 7.5",
        "id 1e999 slow path",
        "deep nesting",
        "deep nesting top level",
        "deep nesting slow path",
        "invalid json slow path",
        "not utf-8 slow path",
    ],
)
async def test_signed_bodies_the_store_cannot_hold_are_400_with_one_line(port, store, body, fragment):
    resp = await post(port, body, signed(body))
    assert resp.status == 400, resp.body
    error = resp.error()
    assert fragment in error and "\n" not in error and len(error) < 300
    assert await store.list_deliveries() == []


async def test_largest_installation_id_the_store_holds_is_accepted(port, store):
    body = b'{"action": "created", "installation": {"id": 9223372036854775807}}'
    resp = await post(port, body, signed(body, **{"X-GitHub-Delivery": "max-id"}))
    assert resp.status == 202, resp.body
    row = await store.get_delivery("max-id")
    assert row is not None and row.installation_id == 2**63 - 1


async def test_malformed_chunked_body_is_400(port, store):
    headers = signed(GOOD)
    headers["Transfer-Encoding"] = "chunked"
    resp = await post(port, b"zz\r\nnot a chunk\r\n0\r\n\r\n", headers)
    assert 400 <= resp.status < 500


async def test_one_bad_delivery_among_many_concurrent_ones_fails_alone(port, store):
    bodies = {f"ok-{n:02d}": GOOD for n in range(20)}
    bad = b'{"action": "labeled", "installation": {"id": 9223372036854775808}}'
    tasks = [post(port, body, signed(body, **{"X-GitHub-Delivery": delivery})) for delivery, body in bodies.items()]
    tasks.insert(7, post(port, bad, signed(bad, **{"X-GitHub-Delivery": "bad"})))
    responses = await asyncio.gather(*tasks)
    statuses = [r.status for r in responses]
    assert statuses.pop(7) == 400
    assert statuses == [202] * len(bodies)
    assert sorted(d.id for d in await store.list_deliveries(limit=100)) == sorted(bodies)


# -- compressed bodies: 415, never read or decompressed -----------------------------------------


@pytest.mark.parametrize(
    "encoding, body",
    [
        ("gzip", gzip.compress(GOOD)),
        ("gzip", b"\x1f\x8b\x08\x00 this is not gzip at all"),
        ("deflate", zlib.compress(GOOD)),
        ("deflate", b"not deflate either"),
        ("br", b"\x00\x01\x02"),
        ("zstd", b"\x00\x01\x02"),
        ("x-custom, gzip", gzip.compress(GOOD)),
        ("GZIP", gzip.compress(GOOD)),
    ],
    ids=["gzip", "invalid gzip", "deflate", "invalid deflate", "br", "zstd", "list", "upper case"],
)
async def test_compressed_bodies_are_415(port, store, encoding, body):
    resp = await post(port, body, signed(body, **{"Content-Encoding": encoding}))
    assert resp.status == 415, resp.body
    assert "Content-Encoding" in resp.error()
    assert await store.list_deliveries() == []


async def test_identity_content_encoding_is_accepted(port, store):
    resp = await post(port, GOOD, signed(GOOD, **{"Content-Encoding": "identity"}))
    assert resp.status == 202, resp.body


async def test_a_compressed_body_is_refused_before_it_is_even_sent(port):
    """The answer comes while the body has not been sent: so it was not read, let alone
    decompressed (1 MiB of gzip would be over a GiB of zeros)."""
    headers = signed(GOOD, **{"Content-Encoding": "gzip", "Content-Length": str(1024 * 1024)})
    async with connection(port) as (reader, writer):
        writer.write(request_bytes(b"", headers))
        resp = await asyncio.wait_for(read_response(reader), PROMPT_S)
    assert resp.status == 415


async def test_a_gzip_bomb_sent_whole_is_refused_at_once(port):
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=1)  # 64 MiB in about 300 KiB
    started = time.monotonic()
    resp = await post(port, bomb, signed(bomb, **{"Content-Encoding": "gzip"}))
    assert resp.status == 415
    assert time.monotonic() - started < 2.0


# -- slow requests: header and body timeouts ------------------------------------------------------


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(port):
    async with connection(port) as (reader, _writer):
        started = time.monotonic()
        assert await closed_within(reader, PROMPT_S)
        assert time.monotonic() - started >= LIMITS.header_timeout_s * 0.9


async def test_headers_that_never_end_are_closed_after_the_header_timeout(port):
    async with connection(port) as (reader, writer):
        writer.write(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nX-GitHub-Event: issues\r\n")
        for _ in range(3):  # still trickling, but too slowly
            await asyncio.sleep(LIMITS.header_timeout_s / 3)
            with contextlib.suppress(ConnectionError):
                writer.write(b"X-Slow: 1\r\n")
        assert await closed_within(reader, PROMPT_S)


async def test_a_body_that_never_ends_is_closed_after_the_body_timeout(port, store):
    headers = signed(GOOD, **{"Content-Length": str(len(GOOD))})
    async with connection(port) as (reader, writer):
        writer.write(request_bytes(GOOD[:10], headers))  # headers, then part of the body
        started = time.monotonic()
        assert await closed_within(reader, PROMPT_S)
        assert time.monotonic() - started >= LIMITS.body_timeout_s * 0.9
    assert await store.list_deliveries() == []


async def test_a_chunked_body_that_never_ends_is_closed_after_the_body_timeout(port):
    headers = signed(GOOD, **{"Transfer-Encoding": "chunked"})
    async with connection(port) as (reader, writer):
        writer.write(request_bytes(b"5\r\n{\"act\r\n", headers))
        assert await closed_within(reader, PROMPT_S)


async def test_an_idle_keep_alive_connection_is_not_cut_by_the_header_timeout(port, store):
    async with connection(port) as (reader, writer):
        writer.write(request_bytes(GOOD, signed(GOOD)))
        assert (await asyncio.wait_for(read_response(reader), PROMPT_S)).status == 202
        assert not await closed_within(reader, LIMITS.header_timeout_s * 2)
        writer.write(request_bytes(GOOD, signed(GOOD)))
        assert (await asyncio.wait_for(read_response(reader), PROMPT_S)).status == 202
        # the next request on the connection must finish its headers in time too
        writer.write(b"POST /webhook HTTP/1.1\r\n")
        assert await closed_within(reader, PROMPT_S)


def test_the_body_timeout_grows_with_the_size_and_is_bounded():
    limits = ConnectionLimits()
    small, large = limits.body_timeout(1000), limits.body_timeout(20 * 1024 * 1024)
    assert limits.body_timeout_s <= small < large
    assert limits.body_timeout(None) == limits.body_timeout(10**12) == limits.body_timeout(25 * 1024 * 1024 + 1024)
    assert limits.body_timeout(None) <= 60


# -- a cap on connections that have not sent a complete request -----------------------------------


async def test_past_the_cap_the_oldest_incomplete_connections_are_closed_first(serve, store):
    limits = ConnectionLimits(header_timeout_s=60, max_incomplete=8)  # no timeout gets in the way
    port = await serve(limits)
    async with contextlib.AsyncExitStack() as stack:
        waiting = []
        for n in range(limits.max_incomplete + 3):
            reader, writer = await stack.enter_async_context(connection(port))
            if n % 2:
                writer.write(b"POST /webhook HTTP/1.1\r\n")  # half of them started a request
            waiting.append(reader)
            await asyncio.sleep(0.02)  # accepted in this order
        # the three oldest made room for the newest, the others wait on
        for reader in waiting[:3]:
            assert await closed_within(reader, PROMPT_S)
        for reader in waiting[3:]:
            assert not await closed_within(reader, 0.05)
        # a real delivery on a new connection is answered (it evicts one more old one)
        resp = await post(port, GOOD, signed(GOOD, **{"X-GitHub-Delivery": "through"}))
        assert resp.status == 202
        assert await store.get_delivery("through") is not None
        assert await closed_within(waiting[3], PROMPT_S)
        assert not await closed_within(waiting[4], 0.05)


def test_serve_raises_its_open_file_limit_to_the_hard_limit():
    import subprocess
    import sys

    script = (
        "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024)); "
        "from bot.app import raise_open_file_limit; print(raise_open_file_limit(), "
        "resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["1024", "(1024,", "1024)"]
