"""Fixtures for the HTTP tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store.base import Store
from bot.store.factory import open_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated SQLite store for the ingress to record into (the HTTP layer's tests need
    one backend; the store's contract runs on every backend in tests/store)."""
    s = await open_store(f"sqlite:///{tmp_path / 'ledger.db'}")
    await s.migrate()
    yield s
    await s.close()
