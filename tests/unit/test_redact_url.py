"""Database URLs in messages: passwords are masked wherever they sit (issue #11)."""

from __future__ import annotations

import pytest

from bot.logs import REDACTED_PASSWORD, redact_url, scrub_url_secrets
from bot.store.base import StoreError
from bot.store.factory import open_store, parse_sqlite_url

M = REDACTED_PASSWORD


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:secret@h:5/db", f"postgresql://u:{M}@h:5/db"),
        ("postgres://u:secret@h/db?schema=x", f"postgres://u:{M}@h/db?schema=x"),
        ("postgresql://u@h/db?password=secret", f"postgresql://u@h/db?password={M}"),
        ("postgresql://h/db?user=u&PassWord=secret&sslmode=require",
         f"postgresql://h/db?user=u&PassWord={M}&sslmode=require"),
        ("postgresql://h/db?sslpassword=secret&passwd=secret2", f"postgresql://h/db?sslpassword={M}&passwd={M}"),
        ("postgresql://u:s%40cret@h/db?pass%77ord=secret", f"postgresql://u:{M}@h/db?pass%77ord={M}"),
        ("postgresql://u:p@ss@h1:5432,h2:5433/db", f"postgresql://u:{M}@h1:5432,h2:5433/db"),
        ("postgresql://u:pa/ss@h/db", f"postgresql://u:{M}@h/db"),  # unescaped '/' in the password
        ("postgresql://u:pa?ss@h/db", f"postgresql://u:{M}@h/db"),  # unescaped '?'
        ("postgresql://:secret@h/db", f"postgresql://:{M}@h/db"),
        ("postgresql://[::1:5432/db?password=secret", f"postgresql://[::1:5432/db?password={M}"),  # unparseable
        ("postgresql://u@h/db?application_name=a@b", "postgresql://u@h/db?application_name=a@b"),
        ("postgresql://h/db#password=frag", "postgresql://h/db#password=frag"),
        ("sqlite:///./patchwright.db?synchronous=full", "sqlite:///./patchwright.db?synchronous=full"),
        ("host=h user=u password=secret dbname=d", f"host=h user=u password={M} dbname=d"),
        ("host=h password='sec ret' dbname=d", f"host=h password={M} dbname=d"),
        ("", ""),
    ],
)
def test_redact_url_masks_every_password(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_url_is_idempotent_and_keeps_safe_urls_unchanged() -> None:
    once = redact_url("postgresql://u:secret@h/db?password=x")
    assert redact_url(once) == once
    assert redact_url("postgresql://u@h:5432/db") == "postgresql://u@h:5432/db"


def test_scrub_url_secrets_removes_the_password_from_any_text() -> None:
    url = "postgresql://u:s%40cret@h/db?sslpassword=other"
    text = "cannot connect to postgresql://u:***@h/db?sslpassword=other: bad s@cret, s%40cret"
    scrubbed = scrub_url_secrets(text, url)
    assert "other" not in scrubbed and "s@cret" not in scrubbed and "s%40cret" not in scrubbed
    assert scrub_url_secrets("nothing to hide", "postgresql://u@h/db") == "nothing to hide"


def test_sqlite_url_errors_hide_password_parameters() -> None:
    with pytest.raises(StoreError) as caught:
        parse_sqlite_url("sqlite:///./x.db?password=hunter2")
    assert "hunter2" not in str(caught.value) and "password" in str(caught.value)


async def test_unsupported_url_errors_hide_passwords() -> None:
    for url in ("mysql://u:hunter2@h/db", "mysql://h/db?password=hunter2", "host=h password=hunter2"):
        with pytest.raises(StoreError) as caught:
            await open_store(url)
        assert "hunter2" not in str(caught.value)


async def test_postgres_connection_errors_hide_query_passwords() -> None:
    # Nothing listens on port 1: the connection is refused; the message names the URL without
    # the password, wherever the URL carried it.
    url = "postgresql://u:hunter1@127.0.0.1:1/db?password=hunter2&sslpassword=hunter3"
    with pytest.raises(StoreError) as caught:
        await open_store(url)
    message = str(caught.value)
    assert "127.0.0.1" in message
    for secret in ("hunter1", "hunter2", "hunter3"):
        assert secret not in message
