"""`patchwright setup`: the manifest from app.yml, .env merging, and the whole flow on the emulator."""

from __future__ import annotations

import asyncio
import io
import json
import stat
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from dotenv import dotenv_values
from gidgethub import apps

from bot.__main__ import _parser
from bot.config import load_settings
from bot.github.client import GitHubClientFactory
from bot.sandbox.emulator import Emulator
from bot.setup import (
    SetupError,
    SetupServer,
    build_manifest,
    describe_env,
    env_overrides,
    format_env_value,
    key_file_name,
    merge_env,
    parse_app_yml,
    registration_page,
    registration_url,
    web_url_for,
)
from tests.cli.registration_form import FormReader

REPO_ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_URL = "https://bot.example.com/webhook"


def _values(text: str) -> dict[str, str | None]:
    return dict(dotenv_values(stream=io.StringIO(text)))


# -- pure parts ------------------------------------------------------------------------------------


def test_manifest_from_the_repository_app_yml():
    app_yml = parse_app_yml((REPO_ROOT / "app.yml").read_text())
    manifest = build_manifest(app_yml, webhook_url=WEBHOOK_URL, redirect_url="http://127.0.0.1:3000/callback")
    assert manifest["name"] == "patchwright" and manifest["url"].startswith("https://")
    assert manifest["hook_attributes"] == {"url": WEBHOOK_URL, "active": True}
    assert manifest["redirect_url"] == "http://127.0.0.1:3000/callback"
    assert {"issues", "issue_comment", "check_run", "pull_request_review"} <= set(manifest["default_events"])
    assert manifest["default_permissions"]["contents"] == "write"
    assert manifest["public"] is False
    assert app_yml["hook_attributes"]["url"] == "https://example.com/webhook"  # input left alone


def test_app_yml_mistakes_are_reported():
    with pytest.raises(SetupError, match="default_permission"):
        parse_app_yml("name: x\nurl: https://x.example\ndefault_permission: {}\n")
    with pytest.raises(SetupError, match="needs `url`"):
        parse_app_yml("name: x\n")
    with pytest.raises(SetupError, match="mapping"):
        parse_app_yml("- a\n")
    with pytest.raises(SetupError, match="not valid YAML"):
        parse_app_yml("name: [\n")
    with pytest.raises(SetupError, match="--webhook-url"):
        build_manifest({"url": "https://x.example"}, webhook_url="bot.example.com/webhook", redirect_url="x")


def test_github_web_url_follows_the_api_url():
    assert web_url_for("https://api.github.com") == "https://github.com"
    assert web_url_for("https://api.github.com/") == "https://github.com"
    assert web_url_for("https://ghe.corp.example/api/v3") == "https://ghe.corp.example"
    assert web_url_for("https://ghe.corp.example:8443/api/v3/") == "https://ghe.corp.example:8443"
    assert web_url_for("https://api.acme.ghe.com") == "https://acme.ghe.com"
    assert web_url_for("http://127.0.0.1:3100") == "http://127.0.0.1:3100"  # the emulator
    assert registration_url("https://api.github.com", state="s t") == "https://github.com/settings/apps/new?state=s+t"
    assert (
        registration_url("https://ghe.corp.example/api/v3", state="abc", org="my org")
        == "https://ghe.corp.example/organizations/my%20org/settings/apps/new?state=abc"
    )


def test_registration_page_posts_the_manifest_escaped():
    manifest = {"name": 'a"<b>', "url": "https://x.example", "description": "it's & <ok>"}
    page = registration_page(manifest, "https://github.com/settings/apps/new?state=a&b", env_file=Path("/srv/.env"))
    reader = FormReader()
    reader.feed(page)
    assert reader.action == "https://github.com/settings/apps/new?state=a&b"
    assert json.loads(reader.fields["manifest"]) == manifest
    assert "<b>" not in page and ".submit()" in page and "/srv/.env" in page


def test_env_values_are_quoted_so_dotenv_reads_them_back():
    assert format_env_value("123") == "123"
    assert format_env_value("https://api.github.com") == "https://api.github.com"
    for value in ("/home/me/my keys/app.pem", "it's", "back\\slash", "a #b", 'q"uote', "", "$HOME"):
        assert _values(f"K={format_env_value(value)}\n")["K"] == value
    with pytest.raises(SetupError):
        format_env_value("${HOME}")
    with pytest.raises(SetupError):
        format_env_value("two\nlines")


def test_merge_env_keeps_unrelated_lines_and_replaces_in_place():
    existing = (
        "# my settings\n"
        "PATCHWRIGHT_DATABASE_URL=postgresql://db/pw\n"
        "export PATCHWRIGHT_APP_ID=1\n"
        'PATCHWRIGHT_PRIVATE_KEY="-----BEGIN RSA PRIVATE KEY-----\nold\n-----END RSA PRIVATE KEY-----"\n'
        "broken line without equals\n"
        "PATCHWRIGHT_APP_ID=2\n"
        "PATCHWRIGHT_WORKERS=4"
    )
    merged = merge_env(
        existing,
        {"PATCHWRIGHT_APP_ID": "77", "PATCHWRIGHT_WEBHOOK_SECRET": "s3cret"},
        clear=("PATCHWRIGHT_PRIVATE_KEY", "PRIVATE_KEY"),
        header="# added",
    )
    assert merged == (
        "# my settings\n"
        "PATCHWRIGHT_DATABASE_URL=postgresql://db/pw\n"
        "PATCHWRIGHT_APP_ID=77\n"
        "PATCHWRIGHT_PRIVATE_KEY=\n"
        "broken line without equals\n"
        "PATCHWRIGHT_WORKERS=4\n"
        "\n"
        "# added\n"
        "PATCHWRIGHT_WEBHOOK_SECRET=s3cret\n"
    )
    assert "PRIVATE_KEY=" not in merged.replace("PATCHWRIGHT_PRIVATE_KEY=", "")  # absent keys stay absent
    assert merge_env("", {"A": "1"}, header="# h") == "# h\nA=1\n"
    assert merge_env(merged, {"PATCHWRIGHT_APP_ID": "77", "PATCHWRIGHT_WEBHOOK_SECRET": "s3cret"}) == merged


def test_what_is_printed_hides_secrets():
    lines = describe_env({"PATCHWRIGHT_APP_ID": "7", "PATCHWRIGHT_WEBHOOK_SECRET": "hunter2"})
    assert lines == ["PATCHWRIGHT_APP_ID=7", "PATCHWRIGHT_WEBHOOK_SECRET=(secret, not shown)"]
    environ = {"PATH": "/bin", "PATCHWRIGHT_APP_ID": "8", "PATCHWRIGHT_GITHUB_URL": "https://api.github.com"}
    written = {"PATCHWRIGHT_APP_ID": "7", "PATCHWRIGHT_GITHUB_URL": "https://api.github.com", "X": "1"}
    assert env_overrides(environ, written) == ["PATCHWRIGHT_APP_ID"]
    assert key_file_name("my-app") == "my-app.private-key.pem"
    with pytest.raises(SetupError):
        key_file_name("../etc")


def test_setup_command_line():
    args = _parser().parse_args(
        ["setup", "--webhook-url", WEBHOOK_URL, "--org", "acme", "--port", "0", "--env-file", "x.env", "--no-browser"]
    )
    assert (args.command, args.webhook_url, args.org, args.port) == ("setup", WEBHOOK_URL, "acme", 0)
    assert args.setup_env_file == Path("x.env") and args.no_browser and args.app_yml == Path("app.yml")
    defaults = _parser().parse_args(["--env-file", "g.env", "setup", "--webhook-url", WEBHOOK_URL])
    assert defaults.setup_env_file is None and defaults.env_file == Path("g.env") and defaults.port == 3000
    with pytest.raises(SystemExit):
        _parser().parse_args(["setup"])


# -- the whole flow, against the emulator -------------------------------------------------------------


async def test_registers_the_app_on_the_emulator_and_writes_env(tmp_path: Path):
    emulator = Emulator(tmp_path / "emulator")
    await emulator.start()
    env_file = tmp_path / "conf" / ".env"
    env_file.parent.mkdir()
    env_file.write_text("# mine\nPATCHWRIGHT_DATABASE_URL=sqlite:///./keep.db\nPATCHWRIGHT_APP_ID=\n")
    printed: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:
            server = SetupServer(
                parse_app_yml((REPO_ROOT / "app.yml").read_text()),
                webhook_url=WEBHOOK_URL,
                github_url=emulator.base_url,
                env_file=env_file,
                session=session,
                port=0,
                print_line=printed.append,
                environ={"PATCHWRIGHT_WEBHOOK_SECRET": "old", "PATCHWRIGHT_GITHUB_URL": emulator.base_url},
            )
            page_url = await server.start()
            try:
                # The browser: load the page, submit its form to "GitHub", follow the redirect back.
                async with session.get(page_url) as response:
                    assert response.status == 200
                    form = FormReader()
                    form.feed(await response.text())
                assert form.action == f"{emulator.base_url}/settings/apps/new?state={server.state}"
                manifest = json.loads(form.fields["manifest"])
                assert manifest["hook_attributes"]["url"] == WEBHOOK_URL
                assert manifest["redirect_url"] == server.callback_url
                async with session.post(form.action, data=form.fields, allow_redirects=False) as response:
                    assert response.status == 302
                    callback = response.headers["Location"]
                query = parse_qs(urlsplit(callback).query)
                assert callback.startswith(server.callback_url + "?") and query["state"] == [server.state]

                # A wrong state is refused and writes nothing.
                forged = f"{server.callback_url}?code={query['code'][0]}&state=forged"
                async with session.get(forged) as response:
                    assert response.status == 400
                assert env_file.read_text().startswith("# mine\n") and "APP_SLUG" not in env_file.read_text()
                assert not list(env_file.parent.glob("*.pem"))

                async with session.get(callback) as response:
                    assert response.status == 200
                    assert "/installations/new" in await response.text()
                result = await asyncio.wait_for(server.wait(), 5)
                async with session.get(callback) as response:
                    assert response.status == 410
            finally:
                await server.stop()

        # .env: the App's settings, the unrelated lines kept, owner-only modes.
        values = dotenv_values(env_file)
        app = emulator.apps[result.app_id]
        key_file = env_file.parent / f"{app.slug}.private-key.pem"
        assert values["PATCHWRIGHT_DATABASE_URL"] == "sqlite:///./keep.db"
        assert values["PATCHWRIGHT_APP_ID"] == str(app.id) and values["PATCHWRIGHT_APP_SLUG"] == app.slug
        assert values["PATCHWRIGHT_WEBHOOK_SECRET"] == app.webhook_secret
        assert values["PATCHWRIGHT_PRIVATE_KEY_PATH"] == str(key_file.absolute())
        assert values["PATCHWRIGHT_GITHUB_URL"] == emulator.base_url
        assert env_file.read_text().count("PATCHWRIGHT_APP_ID=") == 1
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert app.webhook_url == WEBHOOK_URL and "issues" in app.events

        # Printed: what was written, never a secret.
        output = "\n".join(printed)
        assert str(app.id) in output and str(key_file.absolute()) in output
        assert app.webhook_secret not in output and "BEGIN" not in output
        assert "PATCHWRIGHT_WEBHOOK_SECRET is set in the environment" in output
        assert "PATCHWRIGHT_GITHUB_URL is set" not in output

        # The written settings work: the emulator accepts the App's key.
        settings = load_settings({}, env_file=env_file)
        async with aiohttp.ClientSession() as session:
            factory = GitHubClientFactory.from_settings(session, settings)
            assert (await factory.for_app().getitem("/app"))["slug"] == app.slug
        assert not emulator.violations()
        jwt = apps.get_jwt(app_id=str(settings.require_app_id()), private_key=settings.private_key_pem())
        assert jwt.count(".") == 2
    finally:
        await emulator.stop()


async def test_a_used_code_is_refused_without_writing(tmp_path: Path):
    emulator = Emulator(tmp_path / "emulator")
    await emulator.start()
    env_file = tmp_path / ".env"
    try:
        async with aiohttp.ClientSession() as session:
            server = SetupServer(
                {"name": "pw", "url": "https://x.example"},
                webhook_url=WEBHOOK_URL,
                github_url=emulator.base_url,
                env_file=env_file,
                session=session,
                port=0,
                state="fixed-state",
                print_line=lambda line: None,
            )
            await server.start()
            try:
                async with session.get(f"{server.callback_url}?code=nope&state=fixed-state") as response:
                    assert response.status == 502
                    assert "expire after an hour" in (text := await response.text()) and "Nothing was written" in text
                async with session.get(f"{server.callback_url}?state=fixed-state") as response:
                    assert response.status == 400
            finally:
                await server.stop()
        assert not env_file.exists() and not list(tmp_path.glob("*.pem"))
    finally:
        await emulator.stop()
