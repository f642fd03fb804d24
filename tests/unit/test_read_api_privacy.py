"""PATCHWRIGHT_PRIVATE_READ_API's effective value (SPEC §9: the read API is private unless made
public, and always when the server listens beyond loopback) — issue #11."""

from __future__ import annotations

import pytest

import bot.__main__ as cli
from bot.config import ConfigError, is_loopback_host, load_settings


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "localhost", "LocalHost", "::1", "[::1]",
                                  "::ffff:127.0.0.1", "localhost."])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.20", "10.0.0.1", "example.com",
                                  "localhost.example.com", "fe80::1", "[::]"])
def test_hosts_beyond_loopback(host: str) -> None:
    assert not is_loopback_host(host)


@pytest.mark.parametrize(
    ("environ", "private", "warned"),
    [
        ({}, False, False),  # local development stays public by default
        ({"PATCHWRIGHT_PRIVATE_READ_API": ""}, False, False),  # empty: automatic
        ({"PATCHWRIGHT_PRIVATE_READ_API": "true"}, True, False),
        ({"PATCHWRIGHT_PRIVATE_READ_API": "false"}, False, False),
        ({"PATCHWRIGHT_HOST": "0.0.0.0"}, True, False),
        ({"PATCHWRIGHT_HOST": "0.0.0.0", "PATCHWRIGHT_PRIVATE_READ_API": "true"}, True, False),
        ({"PATCHWRIGHT_HOST": "0.0.0.0", "PATCHWRIGHT_PRIVATE_READ_API": "false"}, True, True),  # overridden
        ({"PATCHWRIGHT_HOST": "::", "PATCHWRIGHT_PRIVATE_READ_API": ""}, True, False),
    ],
)
def test_effective_privacy(environ: dict[str, str], private: bool, warned: bool) -> None:
    settings = load_settings({"PATCHWRIGHT_ADMIN_TOKEN": "t", **environ}, env_file=None)
    assert settings.read_api_private is private
    warnings = settings.startup_warnings()
    assert any("PATCHWRIGHT_PRIVATE_READ_API=false is ignored" in w for w in warnings) is warned
    if warned:
        assert "0.0.0.0" in warnings[0]


def test_a_private_read_api_without_a_token_is_warned_about() -> None:
    settings = load_settings({"PATCHWRIGHT_HOST": "0.0.0.0"}, env_file=None)
    assert any("PATCHWRIGHT_ADMIN_TOKEN" in w for w in settings.startup_warnings())
    assert load_settings({}, env_file=None).startup_warnings() == []


def test_the_host_given_to_serve_counts(monkeypatch) -> None:
    settings = load_settings({}, env_file=None)
    assert not settings.model_copy(update={"host": "127.0.0.1"}).read_api_private
    assert settings.model_copy(update={"host": "0.0.0.0"}).read_api_private


def test_an_unknown_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"PATCHWRIGHT_PRIVATE_READ_API": "maybe"}, env_file=None)
    assert "PATCHWRIGHT_PRIVATE_READ_API" in str(caught.value)


def test_serve_warns_at_start_up(monkeypatch, caplog, tmp_path) -> None:
    seen = []

    async def serve(settings, environ):
        seen.append(settings)
        return 0

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "serve", serve)
    monkeypatch.setattr(cli, "configure_logging", lambda *args, **kwargs: None)  # keep pytest's handlers
    for name, value in {"PATCHWRIGHT_WEBHOOK_SECRET": "s", "PATCHWRIGHT_PRIVATE_READ_API": "false",
                        "PATCHWRIGHT_ADMIN_TOKEN": "t"}.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 0
    assert seen[0].read_api_private
    assert "PATCHWRIGHT_PRIVATE_READ_API=false is ignored" in caplog.text and "0.0.0.0" in caplog.text
    caplog.clear()
    assert cli.main(["serve", "--port", "0"]) == 0
    assert not seen[1].read_api_private and "ignored" not in caplog.text
