"""One task's working copy, as an attempt uses it (SPEC §6.3, §6.5, §6.6, §6.7): :class:`Checkout`.

The agent may use git in its checkout (SPEC §6.3): the checkout's ``.git`` is not the
worktree's link to the cache but a small repository of the agent's own
(:func:`~bot.worker.git_files.make_agent_repository`). The bot never runs a command in that
repository, nor reads it: its commands name its own git directory and the work tree
explicitly, so the agent's config, hooks, index, refs, objects and alternates take no part in
what the bot commits, checks and pushes — the files in the checkout do. Repositories the
agent nests in the checkout are kept from running anything too (see
:meth:`Checkout._stage_all`). What the agent's changes add is read as git streams it, in
bounded memory, for the pre-push checks and the conflict markers.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from bot.tasks.branches import wip_branch

from .git_files import _fingerprint, make_agent_repository
from .git_parse import (
    AddedLinesParser,
    _GitlinkLister,
    agent_config_text,
    check_remote_url,
    conflict_marker_lines,
    parse_add_failure,
    parse_batch_sizes,
    parse_push_porcelain,
    parse_raw_entries,
    parse_unmerged,
    redact_git_output,
    summarize_stderr,
    tracking_ref,
    unstageable_message,
)
from .git_runner import GitRunner
from .git_values import (
    EXCLUDE_STATE_DIR,
    MARKER_SCAN_LIMIT,
    MAX_EXCLUDED_PATHS,
    MAX_PUSH_ROUNDS,
    STATE_DIR,
    BranchNotFoundError,
    GitAuth,
    GitCommandError,
    GitResult,
    MergeOutcome,
    PushRefStatus,
    PushResult,
    UnresolvedMergeError,
    UnstageablePathError,
)
from .guard import ChangedFile, GuardPolicy, Violation, redact

__all__ = ["Checkout", "CheckoutWorkspaces"]

_DIFF_OPTIONS = ("--no-color", "--no-ext-diff", "--no-textconv", "--find-renames", "--no-abbrev")
_IN_PROGRESS = ("MERGE_HEAD", "rebase-merge", "rebase-apply", "CHERRY_PICK_HEAD", "REVERT_HEAD")
_QUIT_COMMANDS: Mapping[str, str] = MappingProxyType(
    {"MERGE_HEAD": "merge", "CHERRY_PICK_HEAD": "cherry-pick", "REVERT_HEAD": "revert"}
)


class CheckoutWorkspaces(Protocol):
    """What a :class:`Checkout` uses of the :class:`~bot.worker.workspaces.Workspaces` that
    made it (named by this protocol because that module imports this one, not the reverse)."""

    runner: GitRunner
    identity: tuple[str, str]

    def repo_lock(self, repo: str) -> asyncio.Lock: ...

    async def run_network(
        self, cache: Path, args: Sequence[str], auth: GitAuth, *, check: bool = True
    ) -> GitResult: ...

    async def fetch(self, cache: Path, remote_url: str, auth: GitAuth) -> None: ...

    async def resolve(self, git_dir: Path, ref: str) -> str | None: ...

    async def _discard(self, cache: Path, path: Path) -> None: ...


class _Sink(Protocol):
    """What the text a file adds streams into (e.g. :class:`bot.worker.guard.FileScan`)."""

    @property
    def wants_text(self) -> bool: ...

    def feed(self, text: str) -> None: ...


class _MarkerCount:
    """Counts the conflict marker lines a file adds."""

    def __init__(self, change: ChangedFile) -> None:
        self.wants_text = not change.status.startswith("D") and (change.size or 0) <= MARKER_SCAN_LIMIT
        self._complete = 0
        self._partial = ""  # the start of the line not ended yet: only its start matters

    @property
    def markers(self) -> int:
        return self._complete + conflict_marker_lines(self._partial)

    def feed(self, text: str) -> None:
        text = self._partial + text
        cut = text.rfind("\n") + 1
        self._partial = text[cut : cut + 64]
        self._complete += conflict_marker_lines(text[:cut])


@dataclass(eq=False)
class Checkout:
    """A task's worktree. ``start_sha``: the head the attempt started from; ``remote_sha``:
    the task branch on the remote when checked out (updated by successful pushes).

    ``admin_dir`` is the bot's git directory of the worktree (in the cache); the checkout's
    own ``.git`` is the agent's repository, which the bot never uses."""

    workspaces: CheckoutWorkspaces = field(repr=False)
    repo: str
    remote_url: str = field(repr=False)
    cache: Path = field(repr=False)
    admin_dir: Path = field(repr=False)
    path: Path
    branch: str
    base_branch: str
    start_sha: str
    remote_sha: str | None
    _conflict_fingerprints: dict[str, str | None] = field(default_factory=dict, repr=False)

    # -- plumbing ----------------------------------------------------------------------------

    async def _git(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        input: bytes | None = None,
    ) -> GitResult:
        """Run git in the worktree. The git and work dirs are given explicitly, so a ``.git``
        file the agent rewrote is never followed."""
        return await self.workspaces.runner.run(
            args,
            git_dir=self.admin_dir,
            work_tree=self.path,
            cwd=self.path,
            env=env,
            check=check,
            input=input,
        )

    @property
    def shared_objects(self) -> Path:
        """The cache's object store: the agent's repository reads it (alternates), so the
        sandbox shows it read-only."""
        return self.cache / "objects"

    async def prepare_agent_repository(self, *, head: str, base_sha: str | None) -> None:
        """(Re)make the agent's repository at ``<checkout>/.git``: on the task branch at
        ``head``, with ``origin/<base>`` and ``origin/<branch>`` as last fetched, the bot's
        index and any merge in progress. Called before the agent runs; whatever the agent
        leaves in it afterwards is never read by the bot."""
        refs = {f"refs/heads/{self.branch}": head}
        if base_sha is not None:
            refs[tracking_ref(self.base_branch)] = base_sha
        if self.remote_sha is not None:
            refs[tracking_ref(self.branch)] = self.remote_sha
        await asyncio.to_thread(
            make_agent_repository,
            self.path / ".git",
            objects=self.shared_objects,
            state_from=self.admin_dir,
            head_ref=f"refs/heads/{self.branch}",
            refs=refs,
            config=agent_config_text(self.workspaces.identity),
        )

    def _in_progress(self) -> list[str]:
        return [name for name in _IN_PROGRESS if (self.admin_dir / name).exists()]

    def merge_in_progress(self) -> bool:
        return (self.admin_dir / "MERGE_HEAD").exists()

    async def _resolve(self, ref: str) -> str | None:
        return await self.workspaces.resolve(self.admin_dir, ref)

    async def _is_ancestor(self, ancestor: str, descendant: str) -> bool:
        out = await self._git("merge-base", "--is-ancestor", ancestor, descendant, check=False)
        return out.returncode == 0

    async def _tree(self, rev: str) -> str:
        return (await self._git("rev-parse", "--verify", f"{rev}^{{tree}}")).text.strip()

    async def _fetch(self, auth: GitAuth) -> None:
        async with self.workspaces.repo_lock(self.repo):
            await self.workspaces.fetch(self.cache, self.remote_url, auth)

    async def _unmerged_paths(self) -> list[str]:
        return parse_unmerged((await self._git("ls-files", "--unmerged", "-z")).stdout)

    @contextlib.asynccontextmanager
    async def _temp_index(self) -> AsyncIterator[dict[str, str]]:
        """An environment whose index is a throwaway copy of the worktree's index."""
        with tempfile.TemporaryDirectory(prefix="pw-index-") as tmp:
            index = Path(tmp) / "index"
            source = self.admin_dir / "index"
            if source.is_file():
                await asyncio.to_thread(shutil.copyfile, source, index)
            else:
                await self._git("read-tree", "HEAD", env={"GIT_INDEX_FILE": str(index)})
            yield {"GIT_INDEX_FILE": str(index)}

    async def _stream(
        self, args: Sequence[str], consume: Callable[[bytes], None], env: Mapping[str, str] | None = None
    ) -> None:
        """:meth:`GitRunner.stream` in the worktree (git and work dirs explicit, as in :meth:`_git`)."""
        await self.workspaces.runner.stream(
            args, consume, git_dir=self.admin_dir, work_tree=self.path, cwd=self.path, env=env
        )

    async def _stage_all(self, env: Mapping[str, str] | None = None) -> None:
        """Stage every change except under ``.patchwright/`` (ignored through info/exclude;
        unstaged again in case the repository tracks it). Raises
        :class:`UnstageablePathError` when git refuses a path the agent wrote.

        Gitlinks whose directory holds a repository (a submodule the agent checked out, a
        repository it made that an earlier commit added) are left as they are: ``git add``
        would run ``git status`` inside them, with their own config — the agent's filters."""
        nested = await self._nested_repositories(env)
        if len(nested) > MAX_EXCLUDED_PATHS:
            reasons = ["a git repository inside the checkout"] * len(nested)
            raise UnstageablePathError(
                redact(unstageable_message(nested, reasons, "")), paths=nested, returncode=None, output=""
            )
        pathspec = ["--", ":(top)", *(":(top,exclude,literal)" + path for path in nested)] if nested else []
        added = await self._git("add", "--all", *pathspec, env=env, check=False)
        if added.returncode != 0:
            stderr = added.stderr.decode("utf-8", "replace")
            paths, reasons = parse_add_failure(stderr)
            if paths or "adding files failed" in stderr:
                error = self.workspaces.runner.error("add", added, None)
                detail = summarize_stderr(redact_git_output(stderr))
                raise UnstageablePathError(
                    redact(unstageable_message(paths, reasons, detail)),
                    paths=paths,
                    returncode=added.returncode,
                    output=error.output,
                )
            raise self.workspaces.runner.error("add", added, None)
        await self._git("reset", "--quiet", "--", STATE_DIR, env=env)

    async def _nested_repositories(self, env: Mapping[str, str] | None = None) -> list[str]:
        """Gitlinks of the index (``env``'s) whose directory in the checkout has a ``.git``."""
        lister = _GitlinkLister()
        await self._stream(["ls-files", "--stage", "-z"], lister.feed, env=env)
        if not lister.paths:
            return []

        def with_git(paths: Iterable[str]) -> list[str]:
            return [path for path in paths if os.path.lexists(self.path / path / ".git")]

        return await asyncio.to_thread(with_git, dict.fromkeys(lister.paths))  # once per conflict stage

    async def _changed_files(
        self, old: str, new: str | None, env: Mapping[str, str] | None = None
    ) -> list[ChangedFile]:
        """Files changed from ``old`` to ``new`` (a commit; ``None``: the index in ``env``),
        with the size of their new content as git stored it; no content is read."""
        revs = [old, new] if new is not None else ["--cached", old]
        raw = await self._git("diff", "--raw", "-z", *_DIFF_OPTIONS, *revs, "--", env=env)
        entries = parse_raw_entries(raw.stdout)
        sizes = await self._blob_sizes(
            e.new_sha for e in entries if e.status != "D" and e.new_mode != "160000"
        )
        return [
            ChangedFile(
                path=e.path,
                status=e.status,
                old_path=e.old_path,
                size=None if e.status == "D" else sizes.get(e.new_sha),
            )
            for e in entries
        ]

    async def _blob_sizes(self, shas: Iterable[str]) -> dict[str, int]:
        """The size of each blob, from git's object database (``cat-file --batch-check``)."""
        wanted = sorted({sha for sha in shas if sha and sha.strip("0")})
        if not wanted:
            return {}
        out = await self._git(
            "cat-file",
            "--batch-check=%(objectname) %(objecttype) %(objectsize)",
            input=("\n".join(wanted) + "\n").encode("ascii"),
        )
        return parse_batch_sizes(out.stdout)

    async def _scan_added(
        self,
        old: str,
        new: str | None,
        changes: Sequence[ChangedFile],
        make_sink: Callable[[ChangedFile], _Sink],
        env: Mapping[str, str] | None = None,
    ) -> list[_Sink]:
        """Stream the text each of ``changes`` adds (every file diffed as text, so attributes
        cannot hide it) into its sink, in bounded memory. Files whose sink does not want the
        text (deleted, too large) are left out of the diff, so git does not even read them."""
        sinks = [make_sink(change) for change in changes]
        listed = [i for i, change in enumerate(changes) if not change.status.startswith("D")]
        wanted = [i for i in listed if sinks[i].wants_text]
        if not wanted:
            return sinks
        skipped = [changes[i].path for i in listed if not sinks[i].wants_text]
        if len(skipped) > MAX_EXCLUDED_PATHS:
            return await self._scan_each(old, new, changes, wanted, make_sink, env)
        revs = [old, new] if new is not None else ["--cached", old]
        pathspecs = [":(top,exclude,literal)" + path for path in skipped]
        position = -1
        decoder: codecs.IncrementalDecoder | None = None

        def on_file() -> None:
            nonlocal position, decoder
            if decoder is not None and 0 <= position < len(wanted):
                sinks[wanted[position]].feed(decoder.decode(b"", final=True))
            position += 1
            decoder = codecs.getincrementaldecoder("utf-8")("replace")

        def on_added(data: bytes) -> None:
            if decoder is not None and 0 <= position < len(wanted):
                sinks[wanted[position]].feed(decoder.decode(data))

        parser = AddedLinesParser(on_file, on_added)
        await self._stream(
            ["diff", "-p", "-U0", "--text", "--diff-filter=d", *_DIFF_OPTIONS, *revs, "--", *pathspecs],
            parser.feed,
            env=env,
        )
        parser.close()
        on_file()
        if position != len(wanted):  # never attribute added text to the wrong file
            return await self._scan_each(old, new, changes, wanted, make_sink, env)
        return sinks

    async def _scan_each(
        self,
        old: str,
        new: str | None,
        changes: Sequence[ChangedFile],
        wanted: Sequence[int],
        make_sink: Callable[[ChangedFile], _Sink],
        env: Mapping[str, str] | None,
    ) -> list[_Sink]:
        """:meth:`_scan_added` one file at a time (when git's output did not line up)."""
        sinks = [make_sink(change) for change in changes]
        revs = [old, new] if new is not None else ["--cached", old]
        for index in wanted:
            change, sink = changes[index], sinks[index]
            paths = [p for p in (change.old_path, change.path) if p is not None]
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            parser = AddedLinesParser(lambda: None, lambda data, d=decoder, s=sink: s.feed(d.decode(data)))
            await self._stream(
                [
                    "diff", "-p", "-U0", "--text", *_DIFF_OPTIONS, *revs, "--",
                    *(":(top,literal)" + p for p in paths),
                ],
                parser.feed,
                env=env,
            )
            parser.close()
            sink.feed(decoder.decode(b"", final=True))
        return sinks

    async def _marked_paths(self, old: str, new: str | None, env: Mapping[str, str] | None = None) -> list[str]:
        """Files whose added lines include merge conflict markers."""
        changes = await self._changed_files(old, new, env)
        sinks = await self._scan_added(old, new, changes, _MarkerCount, env)
        return [change.path for change, sink in zip(changes, sinks, strict=True) if sink.markers]

    # -- public API --------------------------------------------------------------------------

    async def head(self) -> str:
        return (await self._git("rev-parse", "--verify", "HEAD")).text.strip()

    async def commit_all(self, message: str) -> str | None:
        """Stage everything except ``.patchwright/`` and commit it as the bot; ``None`` when
        there is nothing to commit. Refuses while a merge is in progress (see
        :meth:`conclude_merge`)."""
        if self.merge_in_progress():
            raise GitCommandError(
                "a merge is in progress; conclude it with conclude_merge()", command="commit"
            )
        await self._stage_all()
        staged = await self._git("diff", "--cached", "--quiet", "--no-ext-diff", check=False)
        if staged.returncode == 0:
            return None
        await self._git("commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", message)
        return await self.head()

    async def changes_since(self, sha: str) -> list[ChangedFile]:
        """Files changed between ``sha`` and HEAD (committed work), with their sizes (no
        content: see :meth:`check_since` and :meth:`scan_since`)."""
        return await self._changed_files(sha, "HEAD")

    async def check_since(self, sha: str, policy: GuardPolicy) -> list[Violation]:
        """The pre-push checks (:class:`GuardPolicy`) of everything changed between ``sha``
        and HEAD. File sizes are checked from git's object sizes before any content is read;
        files over the limit are not read at all. The added text of the others streams
        through the scans: the memory used does not grow with the size of the files."""
        changes = await self._changed_files(sha, "HEAD")
        scans = await self._scan_added(sha, "HEAD", changes, policy.scanner)
        return [violation for scan in scans for violation in scan.finish()]

    async def scan_since(self, sha: str, make_sink: Callable[[ChangedFile], _Sink]) -> list[_Sink]:
        """Stream the text each file changed between ``sha`` and HEAD adds into
        ``make_sink(file)`` (an object with ``wants_text`` and ``feed(text)``)."""
        changes = await self._changed_files(sha, "HEAD")
        return await self._scan_added(sha, "HEAD", changes, make_sink)

    async def has_diff_since(self, sha: str) -> bool:
        """Whether HEAD's tree, or uncommitted work, differs from ``sha``'s tree."""
        if await self._tree("HEAD") != await self._tree(sha):
            return True
        # Not the work trees of submodules: git would run `git status` inside them, with their
        # own config (the agent may have made them), and they are not the bot's to commit.
        status = await self._git(
            "status", "--porcelain", "-z", "--untracked-files=all", "--ignore-submodules=dirty",
            "--", ".", EXCLUDE_STATE_DIR,
        )  # fmt: skip
        return bool(status.stdout.strip(b"\0"))

    async def push(self, *, expected_remote: str | None, auth: GitAuth) -> PushResult:
        """Push HEAD to the task branch with compare-and-swap against ``expected_remote``
        (``None``: the branch must not exist). When someone pushed meanwhile, fetch, rebase the
        bot's commits onto theirs (merge when the rebase conflicts) and try again. Never drops
        a remote commit. Rejections and conflicts come back as ``ok=False``; failures to talk
        to the remote raise :class:`GitCommandError`."""
        expected = expected_remote
        integrated = merged = False
        dst = f"refs/heads/{self.branch}"
        for _ in range(MAX_PUSH_ROUNDS):
            head = await self.head()
            status = await self._push(head, dst, expected, auth)
            if status is not None and status.ok:
                self.remote_sha = head
                await self._set_tracking(head)
                return PushResult(ok=True, sha=head, rebased=integrated, merged=merged)
            if status is None or not status.remote_moved:
                reason = status.summary if status is not None else "no status reported"
                return PushResult(
                    ok=False,
                    rebased=integrated,
                    merged=merged,
                    error=f"the push to {self.branch} was rejected: {reason}",
                )
            await self._fetch(auth)
            remote_now = await self._resolve(tracking_ref(self.branch))
            if remote_now is None or await self._is_ancestor(remote_now, head):
                expected = remote_now  # deleted, or nothing of theirs is missing from ours
                continue
            upstream = await self._own_commits_base(expected, head)
            outcome = await self._integrate(remote_now, upstream)
            if isinstance(outcome, PushResult):
                return outcome
            integrated = True
            merged = merged or outcome
            expected = remote_now
        return PushResult(
            ok=False,
            rebased=integrated,
            merged=merged,
            error=f"gave up after {MAX_PUSH_ROUNDS} tries: {self.branch} kept moving on the remote",
        )

    async def salvage(self, *, task_id: str, attempt: int, auth: GitAuth) -> str | None:
        """Commit whatever changed since ``start_sha`` (ending any merge or rebase in progress,
        keeping the files) to ``wip_branch(task_id, attempt)`` and force-push only that branch.
        The worktree, its index and the task branch stay as they are. ``None`` if nothing
        changed."""
        branch = wip_branch(task_id, attempt)
        for state in self._in_progress():
            await self._git(_QUIT_COMMANDS.get(state, "rebase"), "--quit", check=False)
        head = await self.head()
        async with self._temp_index() as env:
            await self._stage_all(env)
            tree = (await self._git("write-tree", env=env)).text.strip()
        if tree == await self._tree(self.start_sha):
            return None
        sha = head
        if tree != await self._tree(head):
            message = f"patchwright: unfinished work of {task_id}, attempt {attempt}"
            sha = (await self._git("commit-tree", tree, "-p", head, "-m", message)).text.strip()
        await self.workspaces.run_network(
            self.cache,
            [
                "push",
                "--porcelain",
                "--force",
                "--no-verify",
                check_remote_url(self.remote_url),
                f"{sha}:refs/heads/{branch}",
            ],
            auth,
        )
        return sha

    async def merge_base(self, *, auth: GitAuth) -> MergeOutcome:
        """Fetch and merge ``origin/<base_branch>`` into the task branch. Clean: the merge
        commit is made. Conflicts: the merge is left in progress for the agent."""
        await self._fetch(auth)
        base_sha = await self._resolve(tracking_ref(self.base_branch))
        if base_sha is None:
            raise BranchNotFoundError(
                f"the base branch {self.base_branch!r} does not exist on the remote",
                command="merge",
            )
        before = await self.head()
        result = await self._git(
            "merge",
            "--no-ff",
            "--no-edit",
            "--no-verify",
            "--no-gpg-sign",
            "-m",
            f"Merge branch '{self.base_branch}' into {self.branch}",
            base_sha,
            check=False,
        )
        if result.returncode == 0:
            after = await self.head()
            await self.prepare_agent_repository(head=after, base_sha=base_sha)
            return MergeOutcome(clean=True, sha=after, up_to_date=after == before)
        if not self.merge_in_progress():
            raise self.workspaces.runner.error("merge", result, None)
        conflicts = await self._unmerged_paths()
        self._conflict_fingerprints = {
            path: await asyncio.to_thread(_fingerprint, self.path / path) for path in conflicts
        }
        await self.prepare_agent_repository(head=before, base_sha=base_sha)  # the agent resolves it
        return MergeOutcome(clean=False, conflicts=tuple(conflicts))

    async def conclude_merge(self) -> str:
        """Commit the merge the agent resolved. Raises :class:`UnresolvedMergeError` while
        conflict markers are added or conflicted paths are untouched since the merge."""
        if not self.merge_in_progress():
            base_sha = await self._resolve(tracking_ref(self.base_branch))
            head = await self.head()
            if (
                base_sha is not None
                and await self._is_ancestor(base_sha, head)
                and not await self._is_ancestor(base_sha, self.start_sha)
            ):
                await self._refuse_markers(await self._marked_paths(self.start_sha, "HEAD"), [])
                return head  # the agent committed the merge itself
            raise GitCommandError("no merge is in progress", command="commit")
        async with self._temp_index() as env:
            await self._stage_all(env)
            marked = await self._marked_paths("HEAD", None, env=env)
        untouched = []
        for path in await self._unmerged_paths():
            if path in self._conflict_fingerprints:
                now = await asyncio.to_thread(_fingerprint, self.path / path)
                if now == self._conflict_fingerprints[path]:
                    untouched.append(path)
        await self._refuse_markers(marked, untouched)
        conflicts = list(self._conflict_fingerprints)
        message = f"Merge branch '{self.base_branch}' into {self.branch}"
        if conflicts:
            message += "\n\nConflicts resolved in:\n" + "\n".join(f"- {p}" for p in conflicts)
        await self._stage_all()
        await self._git("commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", message)
        self._conflict_fingerprints = {}
        return await self.head()

    async def remove(self) -> None:
        """Remove the worktree and its local branch."""
        async with self.workspaces.repo_lock(self.repo):
            await self.workspaces._discard(self.cache, self.path)
            await self.workspaces.runner.run(
                ["update-ref", "-d", f"refs/heads/{self.branch}"], git_dir=self.cache, check=False
            )

    # -- push internals ----------------------------------------------------------------------

    async def _push(
        self, sha: str, dst: str, expected: str | None, auth: GitAuth
    ) -> PushRefStatus | None:
        result = await self.workspaces.run_network(
            self.cache,
            [
                "push",
                "--porcelain",
                "--no-verify",
                f"--force-with-lease={dst}:{expected or ''}",
                check_remote_url(self.remote_url),
                f"{sha}:{dst}",
            ],
            auth,
            check=False,
        )
        status = parse_push_porcelain(result.stdout.decode("utf-8", "replace"), dst)
        if status is None and result.returncode != 0:
            raise self.workspaces.runner.error("push", result, auth)
        return status

    async def _set_tracking(self, sha: str) -> None:
        async with self.workspaces.repo_lock(self.repo):
            await self.workspaces.runner.run(
                ["update-ref", tracking_ref(self.branch), sha], git_dir=self.cache, check=False
            )

    async def _own_commits_base(self, expected: str | None, head: str) -> str | None:
        """Where the bot's unpushed commits start: the expected remote head, else the attempt's
        start; ``None`` when neither is an ancestor of HEAD."""
        for candidate in (expected, self.start_sha):
            if candidate and await self._is_ancestor(candidate, head):
                return candidate
        return None

    async def _integrate(self, remote_sha: str, upstream: str | None) -> bool | PushResult:
        """Put HEAD on top of ``remote_sha``: rebase the commits after ``upstream``, or merge
        when that is impossible or conflicts. Returns whether a merge was used, or a failed
        :class:`PushResult` (HEAD restored) when even the merge conflicts."""
        head = await self.head()
        if upstream is not None:
            merges = await self._git("rev-list", "--merges", "--count", f"{upstream}..{head}")
            if merges.text.strip() == "0":
                rebased = await self._git(
                    "rebase",
                    "--no-verify",
                    "--no-autostash",
                    "--onto",
                    remote_sha,
                    upstream,
                    check=False,
                )
                if rebased.returncode == 0 and await self._is_ancestor(
                    remote_sha, await self.head()
                ):
                    return False
                if self._in_progress():
                    await self._git("rebase", "--abort", check=False)
        merged = await self._git(
            "merge",
            "--no-ff",
            "--no-edit",
            "--no-verify",
            "--no-gpg-sign",
            "-m",
            f"Merge commits pushed to {self.branch} meanwhile",
            remote_sha,
            check=False,
        )
        if merged.returncode == 0:
            return True
        conflicts = await self._unmerged_paths()
        if self.merge_in_progress():
            await self._git("merge", "--abort", check=False)
        detail = (
            f"conflicting files: {', '.join(conflicts)}"
            if conflicts
            else summarize_stderr(redact_git_output(merged.stderr.decode("utf-8", "replace")))
        )
        return PushResult(
            ok=False,
            error=(
                f"commits pushed to {self.branch} meanwhile conflict with the bot's changes "
                f"({detail}); nothing was pushed"
            ),
            conflicts=tuple(conflicts),
        )

    async def _refuse_markers(self, marked: Sequence[str], untouched: Sequence[str]) -> None:
        if not marked and not untouched:
            return
        parts = []
        if marked:
            parts.append("conflict markers remain in " + ", ".join(marked))
        if untouched:
            parts.append("still unresolved: " + ", ".join(untouched))
        raise UnresolvedMergeError(
            "the merge is not resolved: " + "; ".join(parts), paths=[*marked, *untouched]
        )
