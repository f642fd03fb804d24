"""Reading ``.github/patchwright.yml`` from a repository's default branch (SPEC §5).

Only the default branch counts, so a pull request cannot change its own rules. Parsing and
validation belong to the caller (``bot.config.parse_repo_config``), passed in as ``parse``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import gidgethub
import gidgethub.abc

from bot.github import api

CONFIG_PATH = ".github/patchwright.yml"

T = TypeVar("T")


class RepoFileError(Exception):
    """The path exists but is not a readable text file."""


@dataclass(frozen=True, slots=True)
class RepoConfigResult(Generic[T]):
    """What the default branch holds: no file, a parsed value, or the reason it is invalid."""

    text: str | None  # the file's text; None when there is no file
    value: T | None = None  # ``parse(text)`` when it succeeded
    error: Exception | None = None  # what ``parse`` (or reading the file) raised

    @property
    def found(self) -> bool:
        return self.text is not None

    @property
    def ok(self) -> bool:
        return self.error is None


def decode_file_content(data: object, path: str) -> str:
    """The text of a ``GET …/contents/{path}`` file answer (base64 ``content``)."""
    if not isinstance(data, dict) or data.get("type") != "file":
        raise RepoFileError(f"{path} is not a file")
    if data.get("encoding") != "base64" or not isinstance(data.get("content"), str):
        raise RepoFileError(
            f"{path} could not be read (encoding {data.get('encoding')!r}; too large?)"
        )
    try:
        raw = base64.b64decode(data["content"], validate=False)
        return raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise RepoFileError(f"{path} is not UTF-8 text: {exc}") from None


async def read_repo_file(gh: gidgethub.abc.GitHubAPI, repo: str, path: str, ref: str) -> str | None:
    """The text of ``path`` at ``ref``; None when it does not exist (404)."""
    try:
        data = await api.get_content(gh, repo, path, ref=ref)
    except gidgethub.BadRequest as exc:
        if int(exc.status_code) == 404:
            return None
        raise
    return decode_file_content(data, path)


async def fetch_repo_config(
    gh: gidgethub.abc.GitHubAPI,
    repo: str,
    default_branch: str,
    parse: Callable[[str], T],
    *,
    path: str = CONFIG_PATH,
) -> RepoConfigResult[T]:
    """Read the config file from ``default_branch`` and ``parse`` it.

    No file → ``RepoConfigResult(text=None)`` (the caller applies defaults). An unreadable file
    or a ``parse`` error → the result carries ``error``; HTTP errors other than 404 propagate.
    """
    try:
        text = await read_repo_file(gh, repo, path, default_branch)
    except RepoFileError as exc:
        return RepoConfigResult(text="", error=exc)
    if text is None:
        return RepoConfigResult(text=None)
    try:
        return RepoConfigResult(text=text, value=parse(text))
    except Exception as exc:
        return RepoConfigResult(text=text, error=exc)
