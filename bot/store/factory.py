"""Open the store a database URL names (``PATCHWRIGHT_DATABASE_URL``).

- ``sqlite:///./relative.db``, ``sqlite:///relative.db``, ``sqlite:////abs/path.db``;
  options as query parameters: ``synchronous`` (off|normal|full|extra, default full),
  ``busy_timeout`` (seconds, default 30), ``poll_interval`` (seconds between wake-up polls
  while waiting, default 0.05), ``ledger_writer`` (thread|process: who commits webhook
  deliveries; ``patchwright serve`` defaults to :data:`SERVE_LEDGER_WRITER`, everything
  else to a thread). In-memory databases are refused: the store uses several
  connections and they would each see a different database.
- ``postgresql://…`` or ``postgres://…`` (anything asyncpg accepts); ``schema`` keeps every
  table in that schema (created by ``migrate()``).

The store is opened, not migrated: call ``await store.migrate()`` (idempotent).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, unquote

from bot.logs import redact_url, scrub_url_secrets
from bot.store.base import Store, StoreError
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SQLiteStore
from bot.tasks.model import utcnow

_SQLITE_OPTIONS: Mapping[str, Callable[[str], Any]] = MappingProxyType(
    {"synchronous": str.lower, "busy_timeout": float, "poll_interval": float, "ledger_writer": str.lower}
)
#: Who commits webhook deliveries to a SQLite ledger in ``patchwright serve`` (and the demo):
#: a writer process of its own (:mod:`bot.store.ledger_writer`), so the web process's event
#: loop goes on parsing requests while a batch commits.
SERVE_LEDGER_WRITER = "process"


def parse_sqlite_url(url: str) -> tuple[str, dict[str, Any]]:
    """``sqlite:///<path>[?options]`` -> (path, options for :meth:`SQLiteStore.open`)."""
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != "sqlite" or not sep:
        raise StoreError(f"not a SQLite URL: {redact_url(url)!r}")
    location, _, query = rest.partition("?")
    shown = redact_url(url)
    if location.lstrip("/") in ("", ":memory:") or "mode=memory" in query:
        raise StoreError(
            f"{shown!r}: an in-memory SQLite database cannot be shared by the store's "
            "connections; use a file, e.g. sqlite:///./patchwright.db"
        )
    if not location.startswith("/"):
        raise StoreError(
            f"{shown!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db (three or four slashes)"
        )
    path = unquote(location[1:])
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _SQLITE_OPTIONS:
            raise StoreError(f"{shown!r}: unknown SQLite option {key!r} (known: {', '.join(_SQLITE_OPTIONS)})")
        try:
            options[key] = _SQLITE_OPTIONS[key](value)
        except ValueError:
            raise StoreError(f"{shown!r}: bad value {value!r} for {key}") from None
    return path, options


async def open_store(
    url: str,
    *,
    clock: Callable[[], datetime] = utcnow,
    schema: str | None = None,
    ledger_writer: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Store:
    """Open the SQLite or PostgreSQL store ``url`` names (not migrated).

    ``ledger_writer`` is the SQLite ledger's default writer (``"thread"`` or ``"process"``);
    the URL's own ``ledger_writer`` option wins. ``environ`` is the server's environment
    (normally ``os.environ``, passed by the caller: the store never reads it), of which a
    SQLite ledger writer process inherits only what an interpreter needs
    (:func:`bot.store.ledger_writer.writer_environment`). PostgreSQL ignores both."""
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        if schema is not None:
            raise StoreError("schema is a PostgreSQL option; SQLite keeps one store per file")
        path, options = parse_sqlite_url(url)
        if ledger_writer is not None:
            options.setdefault("ledger_writer", ledger_writer)
        return await SQLiteStore.open(path, clock=clock, environ=environ, **options)
    if scheme in ("postgresql", "postgres"):
        try:
            return await PostgresStore.open(url, clock=clock, schema=schema)
        except StoreError as exc:
            # Whatever the message quotes of the URL (or the driver repeats of it), without
            # its passwords: a ``?password=`` parameter included.
            scrubbed = scrub_url_secrets(str(exc), url)
            if scrubbed == str(exc):
                raise
            raise StoreError(scrubbed) from None
    raise StoreError(
        f"unsupported database URL {redact_url(url)!r}: expected sqlite:///path.db or postgresql://…"
    )
