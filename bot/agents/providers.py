"""Where each agent CLI finds its model provider (SPEC §6.3), as the CLI's own users set it.

The endpoint is an environment variable the CLI (or its preset) reads — ``ANTHROPIC_BASE_URL``
for Claude Code, ``OPENAI_BASE_URL`` for Codex, ``OPENAI_API_BASE`` for aider — with the
provider's public address when it is not set. The sandbox lets the agent reach these hosts
even with ``agent.network: false`` ("nothing but the model provider"), and a provider on the
server's own loopback is tunnelled into the sandbox at the same address. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

#: Per preset: (variable naming the endpoint, the endpoint when it is not set).
PRESET_ENDPOINTS: dict[str, tuple[tuple[str, str], ...]] = {
    "claude": (("ANTHROPIC_BASE_URL", "https://api.anthropic.com"),),
    "codex": (("OPENAI_BASE_URL", "https://api.openai.com/v1"),),
    "aider": (
        ("OPENAI_API_BASE", "https://api.openai.com/v1"),
        ("ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
    ),
}
#: Variable names that name an endpoint, for the ``command`` preset's ``agent.env``.
_ENDPOINT_SUFFIXES = ("_BASE_URL", "_API_BASE", "_ENDPOINT")
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Endpoint:
    """A provider endpoint: where the agent connects (``host``, ``port``), from ``variable``."""

    variable: str
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        return self.host in _LOOPBACK_NAMES or self.host.startswith("127.")

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(variable: str, url: str) -> Endpoint | None:
    """The host and port of ``url`` (an ``http(s)://`` URL), or None when it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return Endpoint(variable, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80))


def provider_endpoints(
    preset: str, environ: Mapping[str, str], *, command_env: Sequence[str] = ()
) -> list[Endpoint]:
    """The endpoints an agent of ``preset`` talks to, given the environment it gets."""
    pairs = list(PRESET_ENDPOINTS.get(preset, ()))
    if preset == "command":
        pairs = [(name, "") for name in command_env if name.upper().endswith(_ENDPOINT_SUFFIXES)]
    out: list[Endpoint] = []
    for variable, default in pairs:
        url = environ.get(variable) or default
        endpoint = parse_endpoint(variable, url) if url else None
        if endpoint is not None and endpoint not in out:
            out.append(endpoint)
    return out
