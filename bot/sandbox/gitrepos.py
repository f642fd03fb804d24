"""Real bare git repositories on disk for the emulator, driven with git plumbing.

Every git call is an asyncio subprocess with a minimal, explicit environment (no system or
global git config, no inherited ``GIT_*`` variables), so the host's git setup never leaks in.
Repositories live at ``root/<owner>/<name>.git``.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType

ZERO_SHA = "0" * 40
EMPTY_TREE_SHA = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"

# A PATH for git and for CI commands: the running interpreter's directory first, then the
# usual system directories. Built from constants, never from the process environment.
DEFAULT_PATH = os.pathsep.join(
    dict.fromkeys(
        [
            os.path.dirname(sys.executable),
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]
    )
)

GIT_BASE_ENV: Mapping[str, str] = MappingProxyType(
    {
        "PATH": DEFAULT_PATH,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "HOME": os.devnull,
    }
)

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]{4,40}$")
_IDENT_RE = re.compile(r"^(?P<name>.*?) <(?P<email>[^>]*)> (?P<ts>-?\d+) (?P<tz>[+-]\d{4})$")

_STATUS_NAMES = {
    "A": "added",
    "D": "removed",
    "M": "modified",
    "R": "renamed",
    "C": "copied",
    "T": "changed",
}


class GitError(RuntimeError):
    """A git command failed."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        super().__init__(f"git {' '.join(args)} exited {returncode}: {stderr.strip()[:2000]}")
        self.git_args = tuple(args)
        self.returncode = returncode
        self.stderr = stderr


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


@dataclass(frozen=True)
class MergeCheck:
    """The outcome of a trial merge: ``tree`` is the merged tree when clean, else ``None``."""

    clean: bool
    conflicts: tuple[str, ...]
    tree: str | None


@dataclass(frozen=True)
class FileChange:
    """One file of a diff, shaped like an entry of GitHub's PR files / compare ``files``."""

    filename: str
    status: str  # added|removed|modified|renamed (also copied|changed)
    additions: int
    deletions: int
    patch: str
    previous_filename: str | None = None
    sha: str = ""

    @property
    def changes(self) -> int:
        return self.additions + self.deletions


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    tree: str
    parents: tuple[str, ...]
    message: str
    author_name: str
    author_email: str
    author_date: datetime
    committer_name: str
    committer_email: str
    committer_date: datetime


@dataclass(frozen=True)
class RefUpdate:
    """A ref change; ``old_sha`` is None for a created ref, ``new_sha`` None for a deleted one."""

    ref: str
    old_sha: str | None
    new_sha: str | None


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The minimal environment for a git subprocess, plus ``extra``."""
    env = dict(GIT_BASE_ENV)
    if extra:
        env.update(extra)
    return env


async def run_git(
    args: Sequence[str],
    *,
    git_dir: Path | None = None,
    cwd: Path | None = None,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    git: str = "git",
) -> GitResult:
    """Run ``git [--git-dir=…] args`` and collect its output; raise :class:`GitError` when
    ``check`` and the exit code is not 0."""
    argv = [git]
    if git_dir is not None:
        argv.append(f"--git-dir={git_dir}")
    argv.extend(args)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=git_env(env),
    )
    try:
        out, err = await proc.communicate(input)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    result = GitResult(proc.returncode or 0, out, err)
    if check and result.returncode != 0:
        raise GitError(list(args), result.returncode, err.decode("utf-8", "replace"))
    return result


def parse_ident(line: str) -> tuple[str, str, datetime]:
    """``Name <email> 1700000000 +0100`` → (name, email, aware UTC datetime)."""
    m = _IDENT_RE.match(line)
    if m is None:
        return line, "", datetime.fromtimestamp(0, timezone.utc)
    return m["name"], m["email"], datetime.fromtimestamp(int(m["ts"]), timezone.utc)


def parse_commit(sha: str, raw: bytes) -> CommitInfo:
    """Parse the output of ``git cat-file commit``."""
    text = raw.decode("utf-8", "replace")
    header, _, message = text.partition("\n\n")
    tree = ""
    parents: list[str] = []
    author = committer = ""
    for line in header.split("\n"):
        if line.startswith(" "):  # continuation of a multi-line header (gpgsig, mergetag)
            continue
        key, _, value = line.partition(" ")
        if key == "tree":
            tree = value
        elif key == "parent":
            parents.append(value)
        elif key == "author":
            author = value
        elif key == "committer":
            committer = value
    a_name, a_email, a_date = parse_ident(author)
    c_name, c_email, c_date = parse_ident(committer)
    return CommitInfo(
        sha=sha,
        tree=tree,
        parents=tuple(parents),
        message=message.rstrip("\n"),
        author_name=a_name,
        author_email=a_email,
        author_date=a_date,
        committer_name=c_name,
        committer_email=c_email,
        committer_date=c_date,
    )


def count_patch_lines(patch: str) -> tuple[int, int]:
    """(additions, deletions) of a unified-diff hunk text."""
    additions = deletions = 0
    for line in patch.split("\n"):
        if line.startswith("+"):
            additions += 1
        elif line.startswith("-"):
            deletions += 1
    return additions, deletions


def split_patch(text: str) -> list[str]:
    """Split ``git diff -p`` output into per-file hunk texts (GitHub's ``patch``: from the
    first ``@@`` on, without the file header; "" for binary or mode-only changes)."""
    sections: list[list[str]] = []
    for line in text.split("\n"):
        if line.startswith("diff --git "):
            sections.append([])
        elif sections:
            sections[-1].append(line)
    patches = []
    for lines in sections:
        start = next((i for i, line in enumerate(lines) if line.startswith("@@")), None)
        if start is None:
            patches.append("")
            continue
        body = lines[start:]
        while body and body[-1] == "":
            body.pop()
        patches.append("\n".join(body))
    return patches


def parse_raw_diff(raw: bytes) -> list[tuple[str, str | None, str, str, str]]:
    """Parse ``git diff --raw -z --no-abbrev`` into (status letter, old path, new path,
    old sha, new sha) tuples."""
    fields = raw.decode("utf-8", "surrogateescape").split("\0")
    out: list[tuple[str, str | None, str, str, str]] = []
    i = 0
    while i < len(fields):
        meta = fields[i]
        if not meta.startswith(":"):
            i += 1
            continue
        parts = meta[1:].split(" ")
        old_sha, new_sha, status = parts[2], parts[3], parts[4]
        letter = status[:1]
        if letter in ("R", "C"):
            old_path, new_path = fields[i + 1], fields[i + 2]
            out.append((letter, old_path, new_path, old_sha, new_sha))
            i += 3
        else:
            path = fields[i + 1]
            out.append((letter, None, path, old_sha, new_sha))
            i += 2
    return out


def diff_ref_updates(before: Mapping[str, str], after: Mapping[str, str]) -> list[RefUpdate]:
    """The ref changes between two snapshots (full ref name → sha), sorted by ref."""
    updates = []
    for ref in sorted(set(before) | set(after)):
        old, new = before.get(ref), after.get(ref)
        if old != new:
            updates.append(RefUpdate(ref=ref, old_sha=old, new_sha=new))
    return updates


def check_repo_name(value: str) -> str:
    """Validate an owner or repository name (no path tricks); return it."""
    if not _NAME_RE.match(value) or value in (".", "..") or value.endswith(".git"):
        raise ValueError(f"invalid owner or repository name: {value!r}")
    return value


def branch_ref(ref: str) -> str:
    """``main`` → ``refs/heads/main``; full ref names pass through."""
    return ref if ref.startswith("refs/") else f"refs/heads/{ref}"


class GitRepos:
    """Bare repositories under ``root``, one per ``owner/name``."""

    def __init__(self, root: Path, *, git: str = "git") -> None:
        self.root = Path(root)
        self._git = git
        self._write_locks: dict[tuple[str, str], asyncio.Lock] = {}

    # -- plumbing helpers -------------------------------------------------------------------

    def path(self, owner: str, name: str) -> Path:
        return self.root / check_repo_name(owner) / f"{check_repo_name(name)}.git"

    def exists(self, owner: str, name: str) -> bool:
        try:
            return (self.path(owner, name) / "HEAD").is_file()
        except ValueError:
            return False

    async def git(
        self,
        owner: str,
        name: str,
        *args: str,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> GitResult:
        """Run a git command against the bare repository ``owner/name``."""
        return await run_git(
            args, git_dir=self.path(owner, name), input=input, env=env, check=check, git=self._git
        )

    # -- creation and commits ----------------------------------------------------------------

    async def create(
        self,
        owner: str,
        name: str,
        *,
        default_branch: str = "main",
        files: Mapping[str, str | bytes] | None = None,
        source_dir: Path | None = None,
        author: tuple[str, str] = ("Octocat", "octocat@example.com"),
    ) -> str:
        """Create the bare repository with one initial commit on ``default_branch`` holding
        ``source_dir``'s files (respecting its .gitignore) overlaid with ``files``; return the
        commit's sha."""
        path = self.path(owner, name)
        if path.exists():
            raise FileExistsError(f"repository {owner}/{name} already exists")
        if source_dir is not None:
            source_dir = Path(source_dir).expanduser().resolve()  # git runs with cwd elsewhere
            if not source_dir.is_dir():
                raise ValueError(f"source directory {source_dir} is not a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        await run_git(
            ["init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(path)],
            git=self._git,
        )
        for key, value in (
            ("http.receivepack", "true"),
            ("gc.auto", "0"),
            ("receive.autogc", "false"),
            ("core.logAllRefUpdates", "false"),
        ):
            await self.git(owner, name, "config", key, value)
        with tempfile.TemporaryDirectory(prefix="pw-index-") as tmp:
            index_env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            if source_dir is not None:
                await run_git(
                    ["--work-tree", str(source_dir), "add", "--all", "--", "."],
                    git_dir=path,
                    cwd=Path(source_dir),
                    env=index_env,
                    git=self._git,
                )
            if files:
                await self._stage_files(owner, name, files, index_env, Path(tmp))
            tree = (await self.git(owner, name, "write-tree", env=index_env)).text.strip()
        sha = await self._commit_tree(owner, name, tree, (), "Initial commit", author)
        await self.git(owner, name, "update-ref", f"refs/heads/{default_branch}", sha, ZERO_SHA)
        return sha

    async def commit_files(
        self,
        owner: str,
        name: str,
        *,
        branch: str,
        files: Mapping[str, str | bytes | None],
        message: str,
        author: tuple[str, str],
        create_from: str | None = None,
        committer: tuple[str, str] | None = None,
    ) -> str:
        """Make one commit on ``branch`` writing ``files`` (``None`` deletes a path) and return
        its sha. A missing branch is created from ``create_from`` (a ref or sha; default: the
        default branch). The ref moves with compare-and-swap; a concurrent move is retried on
        the new tip."""
        ref = branch_ref(branch)
        async with self._write_locks.setdefault((owner, name), asyncio.Lock()):
            return await self._commit_files(
                owner, name, ref, files, message, author, create_from, committer
            )

    async def _commit_files(
        self,
        owner: str,
        name: str,
        ref: str,
        files: Mapping[str, str | bytes | None],
        message: str,
        author: tuple[str, str],
        create_from: str | None,
        committer: tuple[str, str] | None,
    ) -> str:
        for _ in range(5):
            parent = await self.ref_sha(owner, name, ref)
            expected = parent or ZERO_SHA
            if parent is None:
                start = create_from if create_from is not None else "HEAD"
                parent = await self.ref_sha(owner, name, start)
                if parent is None and create_from is not None:
                    raise ValueError(f"create_from {create_from!r} not found in {owner}/{name}")
            with tempfile.TemporaryDirectory(prefix="pw-index-") as tmp:
                index_env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
                if parent is not None:
                    await self.git(owner, name, "read-tree", parent, env=index_env)
                await self._stage_files(owner, name, files, index_env, Path(tmp))
                tree = (await self.git(owner, name, "write-tree", env=index_env)).text.strip()
            parents = (parent,) if parent else ()
            sha = await self._commit_tree(owner, name, tree, parents, message, author, committer)
            done = await self.git(owner, name, "update-ref", ref, sha, expected, check=False)
            if done.returncode == 0:
                return sha
        raise GitError(["update-ref", ref], 1, "branch kept moving; gave up after 5 tries")

    async def _stage_files(
        self,
        owner: str,
        name: str,
        files: Mapping[str, str | bytes | None],
        index_env: Mapping[str, str],
        tmp: Path,
    ) -> None:
        """Write blobs for ``files`` and put them (or their removal) into the temp index."""
        writes = {_clean_path(p): v for p, v in files.items() if v is not None}
        removals = [_clean_path(p) for p, v in files.items() if v is None]
        shas: list[str] = []
        if writes:
            blob_dir = tmp / "blobs"
            blob_dir.mkdir()
            paths = []
            for i, content in enumerate(writes.values()):
                blob = blob_dir / str(i)
                blob.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
                paths.append(str(blob))
            out = await self.git(
                owner,
                name,
                "hash-object",
                "-w",
                "--no-filters",
                "--stdin-paths",
                input=("\n".join(paths) + "\n").encode(),
            )
            shas = out.text.split()
        if not writes and not removals:
            return
        # Current index entries for the paths touched: modes to keep, and everything under a
        # removed directory.
        listed = await self.git(
            owner,
            name,
            "ls-files",
            "-s",
            "-z",
            "--",
            *writes.keys(),
            *removals,
            env={**index_env, "GIT_LITERAL_PATHSPECS": "1"},
        )
        modes: dict[str, str] = {}
        for entry in listed.stdout.decode("utf-8", "surrogateescape").split("\0"):
            if entry:
                meta, _, path = entry.partition("\t")
                modes[path] = meta.split(" ")[0]
        removed = [
            path
            for path in modes
            if any(path == r or path.startswith(r + "/") for r in removals) and path not in writes
        ]
        lines = [f"0 {ZERO_SHA}\t{path}" for path in removed]
        for (path, _), sha in zip(writes.items(), shas):
            mode = modes.get(path, "100644")
            if mode not in ("100644", "100755"):
                mode = "100644"
            lines.append(f"{mode} {sha}\t{path}")
        if lines:
            await self.git(
                owner,
                name,
                "update-index",
                "-z",
                "--index-info",
                input=("\0".join(lines) + "\0").encode("utf-8", "surrogateescape"),
                env=index_env,
            )

    async def _commit_tree(
        self,
        owner: str,
        name: str,
        tree: str,
        parents: Sequence[str],
        message: str,
        author: tuple[str, str],
        committer: tuple[str, str] | None = None,
    ) -> str:
        committer = committer or author
        env = {
            "GIT_AUTHOR_NAME": author[0],
            "GIT_AUTHOR_EMAIL": author[1],
            "GIT_COMMITTER_NAME": committer[0],
            "GIT_COMMITTER_EMAIL": committer[1],
        }
        args = ["commit-tree", tree]
        for parent in parents:
            args += ["-p", parent]
        out = await self.git(owner, name, *args, input=message.encode(), env=env)
        return out.text.strip()

    async def commit_tree(
        self,
        owner: str,
        name: str,
        tree: str,
        parents: Sequence[str],
        message: str,
        author: tuple[str, str],
        committer: tuple[str, str] | None = None,
    ) -> str:
        """Write a commit object for ``tree`` (e.g. a clean :meth:`merge_check` tree); return
        its sha. No ref moves."""
        return await self._commit_tree(owner, name, tree, parents, message, author, committer)

    # -- refs --------------------------------------------------------------------------------

    async def ref_sha(self, owner: str, name: str, ref: str) -> str | None:
        """The commit sha ``ref`` points at: a branch name, a full ref, ``HEAD`` or a
        (possibly abbreviated) sha. ``None`` when it does not resolve to a commit."""
        if not ref or ref.startswith("-") or "\0" in ref:
            return None
        if ref.startswith("refs/") or ref == "HEAD":
            candidates = [ref]
        else:
            candidates = [f"refs/heads/{ref}", f"refs/tags/{ref}"]
            if _HEX_RE.match(ref):
                candidates.append(ref)
        for candidate in candidates:
            out = await self.git(
                owner,
                name,
                "rev-parse",
                "--verify",
                "--quiet",
                f"{candidate}^{{commit}}",
                check=False,
            )
            if out.returncode == 0:
                return out.text.strip()
        return None

    async def branches(self, owner: str, name: str) -> dict[str, str]:
        """Branch name → sha."""
        refs = await self._for_each_ref(owner, name, "refs/heads/")
        return {ref.removeprefix("refs/heads/"): sha for ref, sha in refs.items()}

    async def snapshot_refs(self, owner: str, name: str) -> dict[str, str]:
        """Full ref name → sha for every ref."""
        return await self._for_each_ref(owner, name)

    async def _for_each_ref(self, owner: str, name: str, *patterns: str) -> dict[str, str]:
        out = await self.git(
            owner, name, "for-each-ref", "--format=%(objectname) %(refname)", *patterns
        )
        refs: dict[str, str] = {}
        for line in out.text.splitlines():
            sha, _, ref = line.partition(" ")
            if ref:
                refs[ref] = sha
        return refs

    async def default_branch(self, owner: str, name: str) -> str:
        """The branch HEAD points at."""
        out = await self.git(owner, name, "symbolic-ref", "--short", "HEAD")
        return out.text.strip()

    async def delete_branch(self, owner: str, name: str, branch: str) -> bool:
        """Delete ``branch``; False when it did not exist."""
        ref = branch_ref(branch)
        sha = await self.ref_sha(owner, name, ref)
        if sha is None:
            return False
        out = await self.git(owner, name, "update-ref", "-d", ref, sha, check=False)
        return out.returncode == 0

    async def set_ref(self, owner: str, name: str, ref: str, sha: str) -> None:
        """Point ``ref`` (a branch name or full ref) at ``sha`` (created when missing)."""
        await self.git(owner, name, "update-ref", branch_ref(ref), sha)

    # -- contents ----------------------------------------------------------------------------

    async def read_file(self, owner: str, name: str, ref: str, path: str) -> bytes | None:
        """The bytes of ``path`` at ``ref``; ``None`` when the ref or file does not exist."""
        sha = await self.ref_sha(owner, name, ref)
        if sha is None:
            return None
        out = await self.git(
            owner, name, "cat-file", "blob", f"{sha}:{_clean_path(path)}", check=False
        )
        return out.stdout if out.returncode == 0 else None

    async def list_tree(self, owner: str, name: str, ref: str, path: str = "") -> list[dict]:
        """Entries of directory ``path`` at ``ref`` (``name``, ``path``, ``type`` file|dir|
        symlink|submodule, ``sha``, ``size``, ``mode``), sorted by name. A file path gives
        its own entry; a missing path gives ``[]``."""
        sha = await self.ref_sha(owner, name, ref)
        if sha is None:
            return []
        path = _clean_path(path)
        if path:
            own = _parse_ls_tree(
                (await self.git(owner, name, "ls-tree", "-l", "-z", sha, "--", path)).stdout, ""
            )
            own = [e for e in own if e["path"] == path]
            if not own:
                return []
            if own[0]["type"] != "dir":
                return own
            tree = own[0]["sha"]
        else:
            tree = sha
        out = await self.git(owner, name, "ls-tree", "-l", "-z", tree)
        return sorted(_parse_ls_tree(out.stdout, path), key=lambda e: e["name"])

    # -- history and merges ------------------------------------------------------------------

    async def commit_info(self, owner: str, name: str, sha: str) -> CommitInfo:
        full = await self.ref_sha(owner, name, sha)
        if full is None:
            raise KeyError(f"no commit {sha!r} in {owner}/{name}")
        out = await self.git(owner, name, "cat-file", "commit", full)
        return parse_commit(full, out.stdout)

    async def merge_base(self, owner: str, name: str, a: str, b: str) -> str | None:
        out = await self.git(owner, name, "merge-base", a, b, check=False)
        return out.text.strip() if out.returncode == 0 else None

    async def merge_check(self, owner: str, name: str, base: str, head: str) -> MergeCheck:
        """Trial-merge ``head`` into ``base`` without touching any ref (``git merge-tree``).
        Unrelated histories are not mergeable (no conflicts listed)."""
        base_sha = await self._require(owner, name, base)
        head_sha = await self._require(owner, name, head)
        if await self.merge_base(owner, name, base_sha, head_sha) is None:
            return MergeCheck(clean=False, conflicts=(), tree=None)
        out = await self.git(
            owner,
            name,
            "merge-tree",
            "--write-tree",
            "-z",
            "--name-only",
            "--no-messages",
            base_sha,
            head_sha,
            check=False,
        )
        if out.returncode not in (0, 1):
            raise GitError(["merge-tree", base_sha, head_sha], out.returncode, out.stderr.decode())
        fields = [f for f in out.stdout.decode("utf-8", "surrogateescape").split("\0") if f]
        tree = fields[0] if fields else None
        if out.returncode == 0:
            return MergeCheck(clean=True, conflicts=(), tree=tree)
        return MergeCheck(clean=False, conflicts=tuple(dict.fromkeys(fields[1:])), tree=None)

    async def is_ancestor(self, owner: str, name: str, ancestor: str, descendant: str) -> bool:
        a = await self.ref_sha(owner, name, ancestor)
        d = await self.ref_sha(owner, name, descendant)
        if a is None or d is None:
            return False
        out = await self.git(owner, name, "merge-base", "--is-ancestor", a, d, check=False)
        return out.returncode == 0

    async def log(
        self, owner: str, name: str, revision_range: Sequence[str], *, limit: int = 250
    ) -> list[CommitInfo]:
        """Commits of ``rev-list`` over ``revision_range``, oldest first (at most ``limit``,
        the newest kept)."""
        out = await self.git(
            owner, name, "rev-list", f"--max-count={limit}", "--topo-order", *revision_range, "--"
        )
        shas = list(reversed(out.text.split()))
        return [await self._commit_info_exact(owner, name, sha) for sha in shas]

    async def _commit_info_exact(self, owner: str, name: str, sha: str) -> CommitInfo:
        out = await self.git(owner, name, "cat-file", "commit", sha)
        return parse_commit(sha, out.stdout)

    async def compare(self, owner: str, name: str, base: str, head: str) -> dict:
        """GitHub's ``compare/base...head``: ``status`` (ahead|behind|diverged|identical),
        ``ahead_by``, ``behind_by``, ``total_commits``, ``merge_base`` (sha or None),
        ``commits`` (base..head, oldest first) and ``files`` (three-dot diff)."""
        base_sha = await self._require(owner, name, base)
        head_sha = await self._require(owner, name, head)
        counts = await self.git(
            owner, name, "rev-list", "--left-right", "--count", f"{base_sha}...{head_sha}", "--"
        )
        behind_by, ahead_by = (int(x) for x in counts.text.split())
        merge_base = await self.merge_base(owner, name, base_sha, head_sha)
        if ahead_by and behind_by:
            status = "diverged"
        elif ahead_by:
            status = "ahead"
        elif behind_by:
            status = "behind"
        else:
            status = "identical"
        commits = await self.log(owner, name, [head_sha, f"^{base_sha}"])
        files = await self._diff(owner, name, merge_base or EMPTY_TREE_SHA, head_sha)
        return {
            "status": status,
            "ahead_by": ahead_by,
            "behind_by": behind_by,
            "total_commits": ahead_by,
            "merge_base": merge_base,
            "base": base_sha,
            "head": head_sha,
            "commits": commits,
            "files": files,
        }

    async def changed_files(self, owner: str, name: str, base: str, head: str) -> list[FileChange]:
        """Files changed on ``head`` since its merge base with ``base`` (GitHub's PR files)."""
        base_sha = await self._require(owner, name, base)
        head_sha = await self._require(owner, name, head)
        merge_base = await self.merge_base(owner, name, base_sha, head_sha)
        return await self._diff(owner, name, merge_base or EMPTY_TREE_SHA, head_sha)

    async def _diff(self, owner: str, name: str, old: str, new: str) -> list[FileChange]:
        common = ["--no-color", "--no-ext-diff", "--no-textconv", "-M", "--no-abbrev"]
        raw = await self.git(owner, name, "diff", "--raw", "-z", *common, old, new, "--")
        patch = await self.git(owner, name, "diff", "-p", *common, old, new, "--")
        entries = parse_raw_diff(raw.stdout)
        patches = split_patch(patch.stdout.decode("utf-8", "replace"))
        if len(patches) != len(entries):  # should not happen; never mis-attribute a patch
            patches = [""] * len(entries)
        changes = []
        for (letter, old_path, new_path, old_sha, new_sha), text in zip(entries, patches):
            additions, deletions = count_patch_lines(text)
            changes.append(
                FileChange(
                    filename=_decode_path(new_path),
                    status=_STATUS_NAMES.get(letter, "modified"),
                    additions=additions,
                    deletions=deletions,
                    patch=text,
                    previous_filename=_decode_path(old_path) if old_path is not None else None,
                    sha=new_sha if new_sha != ZERO_SHA else old_sha,
                )
            )
        return changes

    async def _require(self, owner: str, name: str, ref: str) -> str:
        sha = await self.ref_sha(owner, name, ref)
        if sha is None:
            raise KeyError(f"no commit {ref!r} in {owner}/{name}")
        return sha


def _clean_path(path: str) -> str:
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts or any(p == ".git" for p in parts):
        raise ValueError(f"invalid path in repository: {path!r}")
    return "/".join(parts)


def _decode_path(path: str) -> str:
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _parse_ls_tree(raw: bytes, prefix: str) -> list[dict]:
    entries = []
    for record in raw.decode("utf-8", "surrogateescape").split("\0"):
        if not record:
            continue
        meta, _, entry_path = record.partition("\t")
        mode, kind, sha, size = meta.split()
        if kind == "tree":
            type_ = "dir"
        elif kind == "commit":
            type_ = "submodule"
        elif mode == "120000":
            type_ = "symlink"
        else:
            type_ = "file"
        entry_path = _decode_path(entry_path)
        full = f"{prefix}/{entry_path}" if prefix else entry_path
        entries.append(
            {
                "name": full.rsplit("/", 1)[-1],
                "path": full,
                "type": type_,
                "sha": sha,
                "size": int(size) if size.isdigit() else 0,
                "mode": mode,
            }
        )
    return entries
