"""The egress proxy's policy (pure) and the proxy itself on a unix socket."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.agents.egress import (
    REFUSED_NO_NETWORK,
    EgressPolicy,
    EgressProxy,
    egress_decision,
    is_public,
    parse_request_head,
    reserved_endpoints,
)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.8.9.10", "::1", "10.0.0.5", "172.16.3.4", "192.168.1.1", "169.254.169.254",
        "100.64.0.1", "0.0.0.0", "::", "fe80::1", "fd00::1", "fd00:ec2::254", "224.0.0.1",
        "::ffff:127.0.0.1", "::ffff:10.1.2.3", "240.0.0.1", "not-an-ip",
    ],
)  # fmt: skip
def test_local_private_link_local_and_metadata_addresses_are_not_public(address: str) -> None:
    assert not is_public(address)
    assert not egress_decision("h", 443, [address], EgressPolicy()).allowed


@pytest.mark.parametrize("address", ["140.82.112.3", "2606:50c0:8000::153", "1.1.1.1"])
def test_public_addresses_pass(address: str) -> None:
    assert is_public(address)
    decision = egress_decision("api.example.com", 443, [address], EgressPolicy())
    assert decision.allowed and decision.addresses == (address,)


def test_every_resolved_address_must_pass() -> None:
    # A name that resolves to a public and a local address is refused (no rebinding trick).
    decision = egress_decision("evil.example", 443, ["1.1.1.1", "127.0.0.1"], EgressPolicy())
    assert not decision.allowed and "127.0.0.1" in decision.reason


def test_no_network_refuses_everything_and_unresolved_names() -> None:
    assert egress_decision("x", 443, ["1.1.1.1"], EgressPolicy(network=False)).reason == REFUSED_NO_NETWORK
    assert not egress_decision("x", 443, [], EgressPolicy()).allowed


@pytest.mark.parametrize(
    ("entry", "host", "port", "allowed"),
    [
        ("models.internal", "models.internal", 8080, True),
        ("models.internal:8080", "models.internal", 8080, True),
        ("models.internal:8080", "models.internal", 9090, False),
        ("MODELS.internal", "models.internal.", 1, True),
        ("127.0.0.1:5000", "127.0.0.1", 5000, True),
        ("[::1]:5000", "::1", 5000, True),
        ("::1", "::1", 5000, True),
        ("other", "models.internal", 8080, False),
    ],
)
def test_operator_allow_hosts_let_a_local_host_through(entry: str, host: str, port: int, allowed: bool) -> None:
    decision = egress_decision(host, port, ["127.0.0.1"], EgressPolicy(operator_allow_hosts=(entry,)))
    assert decision.allowed is allowed


@pytest.mark.parametrize(
    ("address", "allowed"),
    [("10.1.1.1", True), ("192.168.7.7", True), ("fd12::1", True), ("127.0.0.1", False), ("::1", False),
     ("169.254.169.254", False), ("fe80::1", False), ("0.0.0.0", False), ("fd00:ec2::254", False)],
)  # fmt: skip
def test_a_repository_may_allow_private_hosts_but_not_the_servers_own(address: str, allowed: bool) -> None:
    decision = egress_decision("registry.internal", 443, [address], EgressPolicy(allow_hosts=("registry.internal",)))
    assert decision.allowed is allowed


def test_the_bots_own_endpoints_stay_closed_even_when_allowed() -> None:
    reserved = reserved_endpoints("0.0.0.0", 3000, "postgresql://bot:pw@127.0.0.1:5432/bot")
    policy = EgressPolicy(operator_allow_hosts=("127.0.0.1", "localhost"), reserved=reserved)
    assert not egress_decision("127.0.0.1", 3000, ["127.0.0.1"], policy).allowed
    assert not egress_decision("localhost", 5432, ["127.0.0.1"], policy).allowed
    assert not egress_decision("localhost", 3000, ["::1"], policy).allowed
    assert egress_decision("127.0.0.1", 8000, ["127.0.0.1"], policy).allowed
    assert reserved_endpoints("127.0.0.1", 3000) == (("127.0.0.1", 3000),)


def test_parse_request_head() -> None:
    assert parse_request_head(b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n") == (
        "CONNECT", "api.example.com", 443, b"",
    )  # fmt: skip
    method, host, port, upstream = parse_request_head(
        b"GET http://example.com:8080/a?b=1 HTTP/1.1\r\nHost: example.com\r\nProxy-Authorization: x\r\n"
        b"Connection: keep-alive\r\n\r\n"
    ) or ("", "", 0, b"")
    assert (method, host, port) == ("GET", "example.com", 8080)
    assert upstream == b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
    assert parse_request_head(b"CONNECT [::1]:8443 HTTP/1.1\r\n\r\n") == ("CONNECT", "::1", 8443, b"")
    for bad in (b"GET /local HTTP/1.1\r\n\r\n", b"CONNECT host:99999 HTTP/1.1\r\n\r\n", b"junk\r\n\r\n",
                b"GET http://user@host/ HTTP/1.1\r\n\r\n", b"CONNECT host:x HTTP/1.1\r\n\r\n"):  # fmt: skip
        assert parse_request_head(bad) is None


async def test_the_proxy_forwards_plain_http_and_records_refusals(tmp_path: Path) -> None:
    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(head)).encode() + b"\r\n\r\n" + head)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(origin, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    refused: list[tuple[str, int, str]] = []
    policy = EgressPolicy(operator_allow_hosts=(f"127.0.0.1:{port}",))
    try:
        async with EgressProxy(tmp_path / "p.sock", policy, on_refused=lambda *a: refused.append(a)) as proxy:
            reader, writer = await asyncio.open_unix_connection(str(proxy.path))
            writer.write(f"GET http://127.0.0.1:{port}/hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            answer = await reader.read()
            writer.close()
            assert answer.startswith(b"HTTP/1.1 200 OK") and b"GET /hello HTTP/1.1\r\n" in answer
            reader, writer = await asyncio.open_unix_connection(str(proxy.path))
            writer.write(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n")
            assert (await reader.read()).startswith(b"HTTP/1.1 403 Forbidden")
            writer.close()
            reader, writer = await asyncio.open_unix_connection(str(proxy.path))
            writer.write(b"BREW coffee HTTP/1.1\r\n\r\n")
            assert (await reader.read()).startswith(b"HTTP/1.1 400")
            writer.close()
        assert [(h, p) for h, p, _ in refused] == [("127.0.0.1", 1), ("", 0)]
        assert not (tmp_path / "p.sock").exists()
    finally:
        server.close()
        await server.wait_closed()
