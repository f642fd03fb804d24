"""Reading .github/patchwright.yml from the default branch."""

from __future__ import annotations

import base64

import gidgethub
import pytest
import yaml

from bot.github.client import RetryPolicy
from bot.github.repo_config import (
    RepoConfigResult,
    RepoFileError,
    decode_file_content,
    fetch_repo_config,
)

YAML = "trigger_label: bot-please\nbudget:\n  max_attempts: 3\n"


def file_answer(text: str | bytes) -> dict:
    raw = text.encode() if isinstance(text, str) else text
    encoded = base64.encodebytes(raw).decode()  # GitHub wraps base64 at 60 columns with newlines
    return {
        "type": "file",
        "encoding": "base64",
        "content": encoded,
        "path": ".github/patchwright.yml",
    }


def parse(text: str) -> dict:
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError("expected a mapping")
    return data


async def test_reads_and_parses_from_the_default_branch(make_client, transport, fakes):
    transport.script = [fakes.reply(200, file_answer(YAML))]
    result = await fetch_repo_config(make_client(), "octo/demo", "trunk", parse)
    assert result == RepoConfigResult(
        text=YAML, value={"trigger_label": "bot-please", "budget": {"max_attempts": 3}}
    )
    assert result.found and result.ok
    [sent] = transport.sent
    assert sent.method == "GET"
    assert (
        sent.url
        == "https://api.github.test/repos/octo/demo/contents/.github/patchwright.yml?ref=trunk"
    )


async def test_branch_names_are_encoded_in_the_query(make_client, transport, fakes):
    transport.script = [fakes.reply(200, file_answer(YAML))]
    await fetch_repo_config(make_client(), "octo/demo", "release/2.x", parse)
    assert transport.sent[0].url.endswith("/contents/.github/patchwright.yml?ref=release%2F2.x")


async def test_missing_file(make_client, transport, fakes):
    transport.script = [fakes.reply(404, {"message": "Not Found"})]
    calls = []
    result = await fetch_repo_config(make_client(), "octo/demo", "main", lambda t: calls.append(t))
    assert result.text is None and result.value is None and result.error is None
    assert not result.found and result.ok
    assert calls == []


async def test_parse_errors_are_returned_with_the_text(make_client, transport, fakes):
    transport.script = [fakes.reply(200, file_answer("- just\n- a list\n"))]
    result = await fetch_repo_config(make_client(), "octo/demo", "main", parse)
    assert result.found and not result.ok
    assert isinstance(result.error, ValueError) and str(result.error) == "expected a mapping"
    assert result.text == "- just\n- a list\n"


async def test_not_a_file_or_not_text_is_an_error(make_client, transport, fakes):
    transport.script = [
        fakes.reply(200, [{"type": "file", "name": "x"}]),
        fakes.reply(200, file_answer(b"\xff\xfe")),
    ]
    gh = make_client()
    directory = await fetch_repo_config(gh, "octo/demo", "main", parse)
    assert isinstance(directory.error, RepoFileError) and directory.found
    binary = await fetch_repo_config(gh, "octo/demo", "main", parse)
    assert isinstance(binary.error, RepoFileError) and "UTF-8" in str(binary.error)


async def test_server_errors_propagate(make_client, transport, fakes):
    transport.script = [fakes.reply(500)]
    with pytest.raises(gidgethub.GitHubBroken):
        await fetch_repo_config(
            make_client(policy=RetryPolicy(max_attempts=1)), "octo/demo", "main", parse
        )


def test_decode_file_content():
    assert decode_file_content(file_answer("a: 1\n"), "p") == "a: 1\n"
    with pytest.raises(RepoFileError, match="too large"):
        decode_file_content({"type": "file", "encoding": "none", "content": ""}, "p")
    with pytest.raises(RepoFileError, match="not a file"):
        decode_file_content({"type": "symlink"}, "p")


async def test_with_the_real_repo_config_parser(make_client, transport, fakes):
    from bot.config import RepoConfigError, parse_repo_config

    transport.script = [
        fakes.reply(200, file_answer("")),
        fakes.reply(200, file_answer("no_such_setting: 1\n")),
    ]
    gh = make_client()
    empty = await fetch_repo_config(gh, "octo/demo", "main", parse_repo_config)
    assert empty.ok and empty.value is not None
    invalid = await fetch_repo_config(gh, "octo/demo", "main", parse_repo_config)
    assert isinstance(invalid.error, RepoConfigError)
    assert "no_such_setting" in str(invalid.error)


async def test_the_result_names_the_revision_of_the_file(make_client, transport, fakes):
    """The blob SHA GitHub answers names the file's revision (one report per invalid revision)."""
    blob = "3d21ec53a331a6f037a91c368710b99387d012c1"
    transport.script = [
        fakes.reply(200, {**file_answer("- a list\n"), "sha": blob}),
        fakes.reply(200, file_answer("- a list\n")),  # no sha: the text's hash stands in
        fakes.reply(200, file_answer("- another list\n")),
        fakes.reply(404, {"message": "Not Found"}),
    ]
    gh = make_client()
    with_sha = await fetch_repo_config(gh, "octo/demo", "main", parse)
    assert with_sha.sha == blob and with_sha.revision == blob and not with_sha.ok
    hashed = await fetch_repo_config(gh, "octo/demo", "main", parse)
    other = await fetch_repo_config(gh, "octo/demo", "main", parse)
    assert hashed.sha is None and len(hashed.revision) == 40
    assert hashed.revision != other.revision
    missing = await fetch_repo_config(gh, "octo/demo", "main", parse)
    assert missing.revision == ""
