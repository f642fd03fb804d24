"""The App's private key file is read once, when the settings are loaded into the running
process, and kept in memory: deleting or replacing the file later changes nothing, and nothing
reads it again (issue #11)."""

from __future__ import annotations

import builtins
import io
import pathlib
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import bot.__main__ as cli
from bot.config import ConfigError, load_settings
from bot.github.client import GitHubClientFactory


def other_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
def key_file(tmp_path: Path, rsa_keys) -> Path:
    path = tmp_path / "app.pem"
    path.write_text(rsa_keys[0])
    return path


@pytest.fixture
def no_reads_of(monkeypatch: pytest.MonkeyPatch):
    """``no_reads_of(path)``: from now on, reading ``path`` fails the test."""

    def forbid(path: Path) -> None:
        target = path.resolve()
        real_open, real_read_text, real_read_bytes = builtins.open, pathlib.Path.read_text, pathlib.Path.read_bytes

        def is_target(file) -> bool:
            try:
                return Path(file).resolve() == target
            except TypeError:
                return False  # a file descriptor

        def guarded_open(file, *args, **kwargs):
            assert not is_target(file), "the private key file was read again"
            return real_open(file, *args, **kwargs)

        def guarded_read_text(self, *args, **kwargs):
            assert not is_target(self), "the private key file was read again"
            return real_read_text(self, *args, **kwargs)

        def guarded_read_bytes(self, *args, **kwargs):
            assert not is_target(self), "the private key file was read again"
            return real_read_bytes(self, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", guarded_open)
        monkeypatch.setattr(io, "open", guarded_open)
        monkeypatch.setattr(pathlib.Path, "read_text", guarded_read_text)
        monkeypatch.setattr(pathlib.Path, "read_bytes", guarded_read_bytes)

    return forbid


def signed_by(token: str, public_key) -> bool:
    try:
        jwt.decode(token, public_key, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
    except jwt.InvalidSignatureError:
        return False
    return True


def test_loading_reads_the_file_once_and_keeps_the_key(key_file, rsa_keys, no_reads_of) -> None:
    settings = load_settings({"PATCHWRIGHT_APP_ID": "7", "PATCHWRIGHT_PRIVATE_KEY_PATH": str(key_file)}, env_file=None)
    loaded = settings.with_private_key_loaded()
    assert loaded.private_key_path == key_file  # still known, so the agent's sandbox hides it
    assert "PRIVATE KEY" not in repr(loaded)

    key_file.write_text(other_pem())  # replaced ...
    no_reads_of(key_file)
    assert loaded.private_key_pem().strip() == rsa_keys[0].strip()
    factory = GitHubClientFactory.from_settings(None, loaded, transport=lambda *a: None)
    assert signed_by(factory.tokens.get_jwt(), rsa_keys[1])
    key_file.unlink()  # ... then deleted
    for _ in range(3):  # fresh JWTs are signed with the key read at start-up
        factory.tokens.forget_jwt()
        assert signed_by(factory.tokens.get_jwt(), rsa_keys[1])


def test_loading_fails_at_once_when_the_file_cannot_be_read(tmp_path: Path) -> None:
    settings = load_settings({"PATCHWRIGHT_PRIVATE_KEY_PATH": str(tmp_path / "absent.pem")}, env_file=None)
    with pytest.raises(ConfigError) as caught:
        settings.with_private_key_loaded()
    assert "PATCHWRIGHT_PRIVATE_KEY_PATH" in str(caught.value)


def test_loading_without_a_key_changes_nothing(rsa_keys) -> None:
    settings = load_settings({}, env_file=None)
    assert settings.with_private_key_loaded() is settings
    inline = load_settings({"PATCHWRIGHT_PRIVATE_KEY": rsa_keys[0]}, env_file=None)
    assert inline.with_private_key_loaded().private_key_pem() == inline.private_key_pem()


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_run_with_the_key_in_memory(command, key_file, rsa_keys, monkeypatch, tmp_path,
                                                     no_reads_of) -> None:
    seen = []

    async def run(settings, environ):
        key_file.write_text(other_pem())
        no_reads_of(key_file)
        seen.append(settings.private_key_pem())
        return 0

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, command, run)
    monkeypatch.setattr(cli, "configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setenv("PATCHWRIGHT_WEBHOOK_SECRET", "s")
    monkeypatch.setenv("PATCHWRIGHT_PRIVATE_KEY_PATH", str(key_file))
    assert cli.main([command]) == 0
    assert seen[0].strip() == rsa_keys[0].strip()


def test_an_unreadable_key_stops_the_worker_at_once_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setenv("PATCHWRIGHT_WEBHOOK_SECRET", "s")
    monkeypatch.setenv("PATCHWRIGHT_PRIVATE_KEY_PATH", str(tmp_path / "absent.pem"))
    assert cli.main(["worker"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PATCHWRIGHT_PRIVATE_KEY_PATH" in err
