"""What the worker's git operations write to the file system themselves, without running git.

The agent may use git in its checkout (SPEC §6.3): the checkout's ``.git`` is not the
worktree's link to the cache but a small repository of the agent's own
(:func:`make_agent_repository`), inside the checkout and so writable in the sandbox, reading
the cache's objects through ``objects/info/alternates`` (the sandbox shows the cache's
``objects`` read-only, nothing else of it) and writing its own. Also here: the atomic writes
of the cache's files, the removal of a worktree's files and the fingerprints of conflicted
files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .git_values import EXCLUDE_TEXT

__all__ = ["make_agent_repository"]

#: What the agent's repository gets of the bot's state: the index (so ``git status`` starts
#: clean, or shows the conflicts of a merge left for the agent) and a merge in progress.
_AGENT_STATE_FILES = ("index", "MERGE_HEAD", "MERGE_MSG", "MERGE_MODE", "AUTO_MERGE", "ORIG_HEAD")


def make_agent_repository(
    git_dir: Path,
    *,
    objects: Path,
    state_from: Path,
    head_ref: str,
    refs: Mapping[str, str],
    config: str,
) -> None:
    """Replace whatever is at ``git_dir`` (a worktree's ``.git`` file, an earlier agent's
    repository) with a new repository for the agent: ``HEAD`` on ``head_ref``, the loose
    ``refs``, ``config``, the shared ``objects`` as its only alternate, and a copy of the
    index and merge state found in ``state_from`` (the bot's git directory). Written directly,
    without running git: a few small files and a copy of the index."""
    _remove_tree(git_dir)
    for sub in ("objects/info", "objects/pack", "refs/heads", "refs/tags", "info"):
        (git_dir / sub).mkdir(parents=True, exist_ok=True)
    (git_dir / "objects" / "info" / "alternates").write_text(f"{objects}\n", encoding="utf-8")
    for ref, sha in refs.items():
        target = git_dir / ref
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(sha + "\n", encoding="ascii")
    (git_dir / "config").write_text(config, encoding="utf-8")
    (git_dir / "info" / "exclude").write_text(EXCLUDE_TEXT, encoding="utf-8")
    for name in _AGENT_STATE_FILES:
        with contextlib.suppress(FileNotFoundError):
            shutil.copyfile(state_from / name, git_dir / name)
    (git_dir / "HEAD").write_text(f"ref: {head_ref}\n", encoding="utf-8")  # last: now it is a repository


def _fingerprint(path: Path) -> str | None:
    """sha256 of a working-tree file (a symlink's target text), ``None`` when missing."""
    try:
        if path.is_symlink():
            return "link:" + os.readlink(path)
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _write_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
