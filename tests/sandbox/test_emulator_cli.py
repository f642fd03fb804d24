"""``patchwright emulator``: standalone run with repositories from directories."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import aiohttp
import pytest
from gidgethub import apps
from gidgethub.aiohttp import GitHubAPI

from bot.sandbox.cli import add_arguments, parse_repo_arg, run_emulator


def test_repo_argument_parsing():
    assert parse_repo_arg("octo/demo=./src") == ("octo/demo", Path("./src"))
    for bad in ("octo=./src", "octo/demo", "/demo=x", "octo/demo="):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_repo_arg(bad)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--port", "0", "--repo", "a/b=/tmp/x", "--repo", "a/c=/tmp/y", "--ci-command", "pytest"]
    )
    assert (
        args.port == 0 and [name for name, _ in args.repos] == ["a/b", "a/c"] and args.ci_command == "pytest"
    )


async def test_run_emulator_prints_credentials_and_serves(tmp_path: Path):
    source = tmp_path / "project"
    source.mkdir()
    (source / "main.py").write_text("print('hi')\n")
    lines: list[str] = []
    stop = asyncio.Event()
    ready: asyncio.Future = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_emulator(
            0,
            [("octo/demo", source)],
            data_dir=tmp_path / "data",
            webhook_secret="s3cret",
            print_line=lines.append,
            ready=lambda emulator, app: ready.set_result((emulator.base_url, app)),
            stop=stop,
        )
    )
    try:
        base_url, app = await asyncio.wait_for(ready, 30)
        values = dict(line.split("=", 1) for line in lines if line.startswith("PATCHWRIGHT_"))
        assert values["PATCHWRIGHT_GITHUB_URL"] == base_url
        assert values["PATCHWRIGHT_APP_ID"] == str(app["id"])
        assert values["PATCHWRIGHT_WEBHOOK_SECRET"] == "s3cret"
        key = Path(values["PATCHWRIGHT_PRIVATE_KEY_PATH"]).read_text()
        assert (Path(values["PATCHWRIGHT_PRIVATE_KEY_PATH"]).stat().st_mode & 0o777) == 0o600
        assert any(line.endswith("/octo/demo.git") for line in lines)
        async with aiohttp.ClientSession() as session:
            gh = GitHubAPI(session, "tests", base_url=base_url)
            jwt = apps.get_jwt(app_id=values["PATCHWRIGHT_APP_ID"], private_key=key)
            installation = await gh.getitem("/repos/octo/demo/installation", jwt=jwt)
            token = await apps.get_installation_access_token(
                gh,
                installation_id=str(installation["id"]),
                app_id=values["PATCHWRIGHT_APP_ID"],
                private_key=key,
            )
            content = await gh.getitem("/repos/octo/demo/contents/main.py", oauth_token=token["token"])
            assert content["name"] == "main.py"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_repo_directories_may_be_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "project" / "pkg").mkdir(parents=True)
    (tmp_path / "project" / "pkg" / "mod.py").write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--port", "0", "--repo", "octo/rel=project", "--data-dir", "data", "--stateless-tokens"]
    )
    assert args.stateless_tokens is True and args.mergeable_null_reads == 1 and args.ci_provider == "actions"
    ready: asyncio.Future = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_emulator(
            args.port,
            args.repos,
            data_dir=args.data_dir,
            stateless_tokens=args.stateless_tokens,
            print_line=lambda line: None,
            ready=lambda emulator, app: ready.set_result(emulator),
            stop=stop,
        )
    )
    try:
        emulator = await asyncio.wait_for(ready, 30)
        assert await emulator.git.read_file("octo", "rel", "main", "pkg/mod.py") == b"x = 1\n"
        assert (tmp_path / "data" / "patchwright.private-key.pem").exists()
        installation = next(iter(emulator.installations))
        assert len((await emulator.create_token(installation)).token) == 520
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_missing_repo_directory_is_a_clear_error(tmp_path: Path):
    with pytest.raises(SystemExit, match="not a directory"):
        await run_emulator(0, [("octo/x", tmp_path / "missing")], print_line=lambda line: None)
