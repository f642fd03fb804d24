"""Reading ``.github/patchwright.yml`` from a repository's default branch (SPEC §5).

Only the default branch counts, so a pull request cannot change its own rules. Parsing and
validation belong to the caller (``bot.config.parse_repo_config``), passed in as ``parse``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
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
    sha: str | None = None  # the file's git blob SHA, as GitHub answered it

    @property
    def revision(self) -> str:
        """Names this version of the file: its blob SHA, else a SHA-1 of its text; "" when
        there is no file. Two reads of an unchanged file give the same revision."""
        if self.sha:
            return self.sha
        if self.text is None:
            return ""
        return hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest()

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
    data = await _get_file(gh, repo, path, ref)
    return None if data is None else decode_file_content(data, path)


async def _get_file(gh: gidgethub.abc.GitHubAPI, repo: str, path: str, ref: str) -> object | None:
    """GitHub's answer for ``path`` at ``ref``; None when it does not exist (404)."""
    try:
        return await api.get_content(gh, repo, path, ref=ref)
    except gidgethub.BadRequest as exc:
        if int(exc.status_code) == 404:
            return None
        raise


def _blob_sha(data: object) -> str | None:
    sha = data.get("sha") if isinstance(data, dict) else None
    return sha if isinstance(sha, str) and sha else None


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
    The result names the file's blob SHA (:attr:`RepoConfigResult.revision`).
    """
    data = await _get_file(gh, repo, path, default_branch)
    if data is None:
        return RepoConfigResult(text=None)
    sha = _blob_sha(data)
    try:
        text = decode_file_content(data, path)
    except RepoFileError as exc:
        return RepoConfigResult(text="", error=exc, sha=sha)
    try:
        return RepoConfigResult(text=text, value=parse(text), sha=sha)
    except Exception as exc:
        return RepoConfigResult(text=text, error=exc, sha=sha)
