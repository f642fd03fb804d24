"""PostgreSQL helpers the benchmarks share: is the server there, and dropping a run's schema."""

from __future__ import annotations

import asyncpg


async def postgres_problem(url: str) -> str | None:
    """None when PostgreSQL answers at ``url``, else why not."""
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return str(exc) or type(exc).__name__
    await conn.close()
    return None


async def drop_schema(url: str, schema: str) -> None:
    """Drop ``schema`` and everything in it (a benchmark's own tables)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
