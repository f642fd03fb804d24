"""The agent's only way out of its sandbox: a forwarding proxy on a unix socket (SPEC §6.3).

The agent runs in a network namespace of its own, which has nothing but a loopback interface.
Its supervisor relays connections from that loopback to this proxy's unix socket, which is
bound into the sandbox; the agent's HTTP clients find it through ``HTTPS_PROXY``. The proxy
speaks HTTP ``CONNECT`` (for TLS) and plain ``http://`` requests, resolves each host itself
and refuses, before it connects, every address that is not public internet — loopback,
private ranges, link-local (cloud metadata services), carrier-grade NAT, multicast, reserved —
unless the repository's configuration allows that host. So the bot's own ports, its database,
Redis, Docker and every other local service stay out of reach, with ``network: true`` too.

:func:`egress_decision` is the pure policy; :class:`EgressProxy` is the thin adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_HEADER_LIMIT = 64 * 1024
_HEADER_TIMEOUT_S = 30.0
_CONNECT_TIMEOUT_S = 15.0
_RELAY_CHUNK = 64 * 1024

# Not in ipaddress's is_private/is_reserved for every Python: carrier-grade NAT and the
# AWS IPv6 metadata address.
_EXTRA_BLOCKED = (
    ipaddress.ip_network("100.64.0.0/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
)

REFUSED_NO_NETWORK = "the agent has no network access (`agent.network: false`)"
REFUSED_LOCAL = "{address} is not a public internet address (allow the host with `agent.allow_hosts`)"
REFUSED_SERVER_LOCAL = (
    "{address} is the server's own address: only the operator can allow it (`PATCHWRIGHT_AGENT_ALLOW_HOSTS`)"
)
REFUSED_BOT = "{address} is the bot's own service"
REFUSED_UNRESOLVED = "{host} could not be resolved"
REFUSED_BAD_REQUEST = "not an HTTP proxy request"


@dataclass(frozen=True)
class EgressPolicy:
    """What the proxy lets through. ``network`` false refuses everything. Hosts (``host`` or
    ``host:port``) in ``allow_hosts`` — the repository's configuration — may also reach
    private-range addresses (an internal registry), never loopback, link-local or metadata
    addresses, which are the server's own; hosts in ``operator_allow_hosts`` — the server's
    settings — may reach any address (a model server on the same machine). The ``reserved``
    ``(address, port)`` pairs (the bot's own listening port, its database) nothing may reach."""

    network: bool = True
    allow_hosts: tuple[str, ...] = ()
    operator_allow_hosts: tuple[str, ...] = ()
    reserved: tuple[tuple[str, int], ...] = ()
    #: The agent's model provider (``host:port``): reachable whatever ``network`` says.
    provider_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    addresses: tuple[str, ...] = ()


_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_PRIVATE_V4 = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
_PRIVATE_V6 = (ipaddress.ip_network("fc00::/7"),)


def parse_address(address: str) -> _Address | None:
    """``address`` as an IP address (a zone id dropped, an IPv4-mapped IPv6 address as the
    IPv4 address it is), or None when it is not one."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_public(address: str) -> bool:
    """Whether ``address`` is an internet address an agent may reach by default."""
    ip = parse_address(address)
    if ip is None:
        return False
    if any(ip in net for net in _EXTRA_BLOCKED if net.version == ip.version):
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def _split_allow_entry(entry: str) -> tuple[str, str]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address → (host, port or "")."""
    entry = entry.strip().lower()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, ""


def _host_allowed(host: str, port: int, allow_hosts: Sequence[str]) -> bool:
    host = host.lower().rstrip(".").strip("[]")
    for entry in allow_hosts:
        name, entry_port = _split_allow_entry(entry)
        if name.rstrip(".") == host and (not entry_port or entry_port == str(port)):
            return True
    return False


def egress_decision(host: str, port: int, addresses: Sequence[str], policy: EgressPolicy) -> Decision:
    """Whether the agent may connect to ``host:port``, which resolved to ``addresses``. Pure.

    Every address must pass (the proxy then connects to those, never resolving again, so a
    name cannot switch to a local address between the check and the connection)."""
    provider = _host_allowed(host, port, policy.provider_hosts)
    if not policy.network and not provider:
        return Decision(False, REFUSED_NO_NETWORK)
    if not addresses:
        return Decision(False, REFUSED_UNRESOLVED.format(host=host))
    ips = [parse_address(a) for a in addresses]
    if any(ip is None for ip in ips):
        return Decision(False, REFUSED_UNRESOLVED.format(host=host))
    reserved = {(parse_address(a), p) for a, p in policy.reserved if parse_address(a) is not None}
    for address, ip in zip(addresses, ips, strict=True):
        assert ip is not None
        if (ip, port) in reserved or (ip.is_unspecified and any(p == port for _, p in reserved)):
            return Decision(False, REFUSED_BOT.format(address=f"{address}:{port}"))
    if provider or _host_allowed(host, port, policy.operator_allow_hosts):
        return Decision(True, addresses=tuple(addresses))
    repo_allowed = _host_allowed(host, port, policy.allow_hosts)
    for address in addresses:
        if is_public(address) or (repo_allowed and is_private_network(address)):
            continue
        reason = REFUSED_LOCAL if not repo_allowed else REFUSED_SERVER_LOCAL
        return Decision(False, reason.format(address=address))
    return Decision(True, addresses=tuple(addresses))


def is_private_network(address: str) -> bool:
    """A private-range address of some other host (10/8, 172.16/12, 192.168/16, fc00::/7):
    a repository may allow such hosts, unlike the server's own loopback and link-local
    addresses, carrier-grade NAT and metadata addresses."""
    ip = parse_address(address)
    if ip is None:
        return False
    private = _PRIVATE_V4 if ip.version == 4 else _PRIVATE_V6
    return any(ip in net for net in private) and not any(ip in net for net in _EXTRA_BLOCKED if net.version == ip.version)


def reserved_endpoints(host: str, port: int, database_url: str = "") -> tuple[tuple[str, int], ...]:
    """The bot's own endpoints no agent may reach: its web port (on every local address when
    it listens on all of them) and a PostgreSQL server given by host and port."""
    out: list[tuple[str, int]] = []
    for address in _local_addresses(host):
        out.append((address, port))
    if database_url.startswith(("postgres://", "postgresql://")):
        from urllib.parse import urlsplit

        with contextlib.suppress(ValueError):
            parts = urlsplit(database_url)
            db_port = parts.port or 5432
            for address in _local_addresses(parts.hostname or "127.0.0.1"):
                out.append((address, db_port))
    return tuple(dict.fromkeys(out))


def _local_addresses(host: str) -> list[str]:
    if host in ("", "0.0.0.0", "::"):
        return ["127.0.0.1", "::1", "0.0.0.0", "::"]
    if parse_address(host) is not None:
        return [host]
    if host == "localhost":
        return ["127.0.0.1", "::1"]
    return []


def parse_request_head(head: bytes) -> tuple[str, str, int, bytes] | None:
    """``(method, host, port, head to send upstream)`` for a proxy request, or None.

    ``CONNECT host:port`` sends nothing upstream; an absolute-form ``GET http://host/path``
    is rewritten to origin form with ``Connection: close``. Pure."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    method, target, version = parts
    if method == "CONNECT":
        host, port = _split_host_port(target, 443)
        if not host or port is None:
            return None
        return method, host, port, b""
    if not target.lower().startswith("http://"):
        return None
    rest = target[len("http://") :]
    authority, slash, path = rest.partition("/")
    host, port = _split_host_port(authority, 80)
    if not host or port is None:
        return None
    headers = [
        line
        for line in lines[1:]
        if line and not line.lower().startswith(("proxy-", "connection:", "keep-alive:"))
    ]
    upstream = "\r\n".join([f"{method} /{path if slash else ''} {version}", *headers, "Connection: close", "", ""])
    return method, host, port, upstream.encode("latin-1")


def _split_host_port(authority: str, default: int) -> tuple[str, int | None]:
    if "@" in authority:
        return "", None
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = authority.partition(":")
    try:
        port = int(port_text) if port_text else default
    except ValueError:
        return host, None
    if not 0 < port < 65536:
        return host, None
    return host, port


@dataclass
class EgressProxy:
    """The proxy for one agent run, listening on the unix socket ``path``.

    ``on_refused(host, port, reason)`` is told of every refused connection (the runner writes
    it to the attempt log); ``resolve`` is injectable for tests."""

    path: Path
    policy: EgressPolicy
    on_refused: Callable[[str, int, str], None] | None = None
    resolve: Callable[[str, int], Awaitable[list[str]]] | None = None
    refused: list[tuple[str, int, str]] = field(default_factory=list)
    #: Allowed targets that could not be connected to (e.g. a model server that is down).
    unreachable: list[tuple[str, int]] = field(default_factory=list)
    on_unreachable: Callable[[str, int], None] | None = None
    _server: asyncio.AbstractServer | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.path))
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def __aenter__(self) -> EgressProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _HEADER_TIMEOUT_S)
        if len(head) > _HEADER_LIMIT:
            return
        parsed = parse_request_head(head)
        if parsed is None:
            await self._refuse(writer, "", 0, REFUSED_BAD_REQUEST, status=400)
            return
        method, host, port, upstream_head = parsed
        provider = _host_allowed(host, port, self.policy.provider_hosts)
        addresses = await self._resolve(host, port) if self.policy.network or provider else []
        decision = egress_decision(host, port, addresses, self.policy)
        if not decision.allowed:
            await self._refuse(writer, host, port, decision.reason)
            return
        upstream = await self._connect(decision.addresses, port)
        if upstream is None:
            self.unreachable.append((host, port))
            if self.on_unreachable is not None:
                with contextlib.suppress(Exception):
                    self.on_unreachable(host, port)
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        up_reader, up_writer = upstream
        try:
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                up_writer.write(upstream_head)
                await up_writer.drain()
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()

    async def _resolve(self, host: str, port: int) -> list[str]:
        if self.resolve is not None:
            return list(await self.resolve(host, port))
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return []
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    async def _connect(
        self, addresses: Sequence[str], port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for address in addresses:
            with contextlib.suppress(OSError, TimeoutError):
                return await asyncio.wait_for(asyncio.open_connection(address, port), _CONNECT_TIMEOUT_S)
        return None

    async def _refuse(self, writer: asyncio.StreamWriter, host: str, port: int, reason: str, *, status: int = 403) -> None:
        self.refused.append((host, port, reason))
        if self.on_refused is not None:
            with contextlib.suppress(Exception):
                self.on_refused(host, port, reason)
        body = f"patchwright refused the connection: {reason}\n".encode()
        title = "Forbidden" if status == 403 else "Bad Request"
        writer.write(
            f"HTTP/1.1 {status} {title}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(_RELAY_CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
