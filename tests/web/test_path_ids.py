"""Ids in API and dashboard paths: a NUL byte, a control character, bytes that are not UTF-8 or
an absurd length answer 404 before the store is asked — never a 5xx (issue #11)."""

from __future__ import annotations

import pytest

from bot.web.api import ApiError, MAX_ID_CHARS, check_id, is_valid_id

BAD_IDS = (
    "%00abc",  # NUL: PostgreSQL refuses it in text (was a 503)
    "abc%00",
    "%01",
    "a%0Ab",  # newline
    "a%7Fb",  # DEL
    "%C2%85",  # NEL, a C1 control
    "%FF%FE",  # not UTF-8
    "%C0%80",  # overlong NUL
    "%ED%A0%80",  # a UTF-16 surrogate
    "x" * (MAX_ID_CHARS + 1),
)


@pytest.mark.parametrize(
    "value",
    ["task_01hzy3q8m2w7", "d-1", "72d7b4f0-3e1c-11ef-9b1a-8c7a3b2d1e0f", "a.b:c~d", "é-ünïcode", "x" * MAX_ID_CHARS],
)
def test_valid_ids(value: str) -> None:
    assert is_valid_id(value)
    assert check_id("task", value) == value


@pytest.mark.parametrize(
    "value",
    ["", "\x00", "abc\x00", "\x1b[31m", "a\nb", "a\tb", "\x7f", "\x85", "\udcff", "\ud800", "x" * (MAX_ID_CHARS + 1)],
)
def test_invalid_ids_are_404_without_asking_anyone(value: str) -> None:
    assert not is_valid_id(value)
    with pytest.raises(ApiError) as caught:
        check_id("task", value)
    assert caught.value.status == 404
    assert "\x00" not in caught.value.message and "\udcff" not in caught.value.message
    assert len(caught.value.message) < 300


async def test_api_and_page_paths_with_invalid_ids_answer_404(store, clock, seeder, make_client, admin_token) -> None:
    await seeder(store, clock())
    client = await make_client(store, clock=clock, admin_token=admin_token)
    auth = {"Authorization": f"Bearer {admin_token}"}
    for bad in BAD_IDS:
        await expect_404(client, bad, auth)
    # the store still answers afterwards (no broken connection or transaction)
    assert (await client.get("/api/tasks")).status == 200


async def expect_404(client, bad: str, auth: dict[str, str]) -> None:
    for method, path in (
        ("GET", f"/api/tasks/{bad}"),
        ("GET", f"/api/tasks/{bad}/logs"),
        ("GET", f"/api/tasks/{bad}/logs?attempt=1"),
        ("POST", f"/api/tasks/{bad}/retry"),
        ("POST", f"/api/tasks/{bad}/stop"),
        ("GET", f"/api/deliveries/{bad}"),
        ("POST", f"/api/deliveries/{bad}/replay"),
    ):
        resp = await client.request(method, path, headers=auth)
        body = await resp.json()
        assert resp.status == 404, (method, path, resp.status, body)
        assert "error" in body
    resp = await client.get(f"/tasks/{bad}")
    assert resp.status == 404, (bad, resp.status)
    assert resp.content_type == "text/html"
    assert "\x00" not in await resp.text()
