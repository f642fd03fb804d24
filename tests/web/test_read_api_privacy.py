"""The read API and the dashboard are private when the server listens beyond loopback, even
with PATCHWRIGHT_PRIVATE_READ_API=false; local development stays public (issue #11)."""

from __future__ import annotations

ADMIN = "adm-privacy-token-0123456789"


class IdleStore:
    async def list_tasks(self, **kwargs):
        return []

    async def list_deliveries(self, **kwargs):
        return []


async def statuses(client, headers=None) -> list[int]:
    return [(await client.get(p, headers=headers or {})).status for p in ("/api/tasks", "/api/deliveries", "/")]


async def test_loopback_is_public_by_default(make_client) -> None:
    client = await make_client(IdleStore(), admin_token=ADMIN)
    assert await statuses(client) == [200, 200, 200]


async def test_beyond_loopback_is_private_even_when_set_public(make_client) -> None:
    for private in (None, False, True):
        client = await make_client(IdleStore(), admin_token=ADMIN, host="0.0.0.0", private_read_api=private)
        assert await statuses(client) == [401, 401, 401], private
        assert await statuses(client, {"Authorization": f"Bearer {ADMIN}"}) == [200, 200, 200]


async def test_beyond_loopback_without_a_token_nobody_reads(make_client) -> None:
    client = await make_client(IdleStore(), host="0.0.0.0")
    assert await statuses(client) == [403, 403, 403]
