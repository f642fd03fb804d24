"""Bare repositories driven with git plumbing: contents, refs, merges and diffs."""

from __future__ import annotations

import asyncio
from datetime import timezone
from pathlib import Path

import pytest

from bot.sandbox.gitrepos import (
    FileChange,
    GitRepos,
    RefUpdate,
    count_patch_lines,
    diff_ref_updates,
    parse_commit,
    split_patch,
)

AUTHOR = ("Ada Lovelace", "ada@example.com")
FILES = {
    "README.md": "# demo\n",
    "src/app.py": "def greet():\n    return 'hello'\n",
    "src/util/strings.py": "A = 1\nB = 2\nC = 3\n",
}


@pytest.fixture
def repos(tmp_path: Path) -> GitRepos:
    return GitRepos(tmp_path / "repos")


@pytest.fixture
async def demo(repos: GitRepos) -> str:
    return await repos.create("octo", "demo", files=FILES)


async def test_create_with_files(repos: GitRepos, demo: str) -> None:
    assert repos.path("octo", "demo") == repos.root / "octo" / "demo.git"
    assert (repos.path("octo", "demo") / "HEAD").is_file()
    assert repos.exists("octo", "demo") and not repos.exists("octo", "other")
    assert await repos.branches("octo", "demo") == {"main": demo}
    assert await repos.default_branch("octo", "demo") == "main"
    for path, content in FILES.items():
        assert await repos.read_file("octo", "demo", "main", path) == content.encode()
    info = await repos.commit_info("octo", "demo", demo)
    assert info.parents == () and info.message == "Initial commit"
    assert (info.author_name, info.author_email) == ("Octocat", "octocat@example.com")
    assert info.author_date.tzinfo is not None
    with pytest.raises(FileExistsError):
        await repos.create("octo", "demo")


async def test_create_from_source_dir_and_other_default_branch(
    repos: GitRepos, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "mod.py").write_text("X = 1\n")
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o755)
    (src / ".gitignore").write_text("*.pyc\n")
    (src / "pkg" / "mod.pyc").write_bytes(b"\0junk")
    sha = await repos.create(
        "octo",
        "fromdir",
        source_dir=src,
        default_branch="trunk",
        files={"EXTRA.md": "extra\n"},
        author=AUTHOR,
    )
    assert await repos.branches("octo", "fromdir") == {"trunk": sha}
    assert await repos.read_file("octo", "fromdir", "trunk", "pkg/mod.py") == b"X = 1\n"
    assert await repos.read_file("octo", "fromdir", "trunk", "EXTRA.md") == b"extra\n"
    assert await repos.read_file("octo", "fromdir", "trunk", "pkg/mod.pyc") is None
    entries = {e["name"]: e for e in await repos.list_tree("octo", "fromdir", "trunk")}
    assert set(entries) == {".gitignore", "EXTRA.md", "pkg", "run.sh"}
    assert entries["run.sh"]["mode"] == "100755"
    assert (await repos.commit_info("octo", "fromdir", sha)).author_name == AUTHOR[0]


async def test_create_empty_repository_has_one_empty_commit(repos: GitRepos) -> None:
    sha = await repos.create("octo", "empty")
    assert await repos.list_tree("octo", "empty", "main") == []
    assert (await repos.commit_info("octo", "empty", sha)).parents == ()


def test_rejects_path_tricks(repos: GitRepos) -> None:
    for owner, name in [
        ("..", "x"),
        ("octo", "../x"),
        ("octo", "a/b"),
        ("", "x"),
        ("octo", "x.git"),
    ]:
        with pytest.raises(ValueError):
            repos.path(owner, name)
        assert not repos.exists(owner, name)


async def test_commit_files_update_delete_and_new_branch(repos: GitRepos, demo: str) -> None:
    sha = await repos.commit_files(
        "octo",
        "demo",
        branch="main",
        files={
            "src/app.py": "def greet():\n    return 'hi'\n",
            "README.md": None,
            "docs/new.md": "new\n",
        },
        message="Edit, delete and add\n\nWith a body.",
        author=AUTHOR,
    )
    info = await repos.commit_info("octo", "demo", sha)
    assert info.parents == (demo,)
    assert info.message == "Edit, delete and add\n\nWith a body."
    assert (info.author_name, info.committer_name) == (AUTHOR[0], AUTHOR[0])
    assert await repos.read_file("octo", "demo", "main", "README.md") is None
    assert await repos.read_file("octo", "demo", demo, "README.md") == b"# demo\n"
    assert await repos.read_file("octo", "demo", "main", "docs/new.md") == b"new\n"

    feature = await repos.commit_files(
        "octo",
        "demo",
        branch="feature",
        files={"feature.txt": "f\n", "src/util": None},
        message="feature",
        author=AUTHOR,
        create_from=demo,
    )
    assert (await repos.commit_info("octo", "demo", feature)).parents == (demo,)
    assert await repos.branches("octo", "demo") == {"main": sha, "feature": feature}
    assert await repos.read_file("octo", "demo", "feature", "src/util/strings.py") is None
    assert await repos.read_file("octo", "demo", "feature", "README.md") == b"# demo\n"

    # A missing branch without create_from starts from the default branch.
    other = await repos.commit_files(
        "octo", "demo", branch="refs/heads/other", files={"o.txt": "o"}, message="o", author=AUTHOR
    )
    assert (await repos.commit_info("octo", "demo", other)).parents == (sha,)
    with pytest.raises(ValueError):
        await repos.commit_files(
            "octo",
            "demo",
            branch="x",
            files={"a": "a"},
            message="m",
            author=AUTHOR,
            create_from="nope",
        )


async def test_commit_files_keeps_executable_mode_and_accepts_bytes(
    repos: GitRepos, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "tool.sh").write_text("echo 1\n")
    (src / "tool.sh").chmod(0o755)
    await repos.create("octo", "modes", source_dir=src)
    await repos.commit_files(
        "octo",
        "modes",
        branch="main",
        files={"tool.sh": "echo 2\n", "data.bin": b"\x00\xff"},
        message="m",
        author=AUTHOR,
    )
    entries = {e["name"]: e for e in await repos.list_tree("octo", "modes", "main")}
    assert entries["tool.sh"]["mode"] == "100755"
    assert await repos.read_file("octo", "modes", "main", "data.bin") == b"\x00\xff"


async def test_concurrent_commits_to_one_branch_all_land(repos: GitRepos, demo: str) -> None:
    shas = await asyncio.gather(
        *(
            repos.commit_files(
                "octo",
                "demo",
                branch="main",
                files={f"f{i}.txt": str(i)},
                message=f"c{i}",
                author=AUTHOR,
            )
            for i in range(4)
        )
    )
    tip = await repos.ref_sha("octo", "demo", "main")
    for i, sha in enumerate(shas):
        assert await repos.is_ancestor("octo", "demo", sha, tip)
        assert await repos.read_file("octo", "demo", "main", f"f{i}.txt") == str(i).encode()


async def test_ref_sha_forms(repos: GitRepos, demo: str) -> None:
    assert await repos.ref_sha("octo", "demo", "main") == demo
    assert await repos.ref_sha("octo", "demo", "refs/heads/main") == demo
    assert await repos.ref_sha("octo", "demo", "HEAD") == demo
    assert await repos.ref_sha("octo", "demo", demo) == demo
    assert await repos.ref_sha("octo", "demo", demo[:10]) == demo
    assert await repos.ref_sha("octo", "demo", "missing") is None
    assert await repos.ref_sha("octo", "demo", "0" * 40) is None
    assert await repos.ref_sha("octo", "demo", "--all") is None
    assert await repos.ref_sha("octo", "demo", "") is None


async def test_read_file_and_list_tree(repos: GitRepos, demo: str) -> None:
    assert (
        await repos.read_file("octo", "demo", "main", "/src/app.py") == FILES["src/app.py"].encode()
    )
    assert await repos.read_file("octo", "demo", "main", "src") is None  # a directory
    assert await repos.read_file("octo", "demo", "main", "nope.txt") is None
    assert await repos.read_file("octo", "demo", "nobranch", "README.md") is None

    root = await repos.list_tree("octo", "demo", "main")
    assert [(e["name"], e["path"], e["type"]) for e in root] == [
        ("README.md", "README.md", "file"),
        ("src", "src", "dir"),
    ]
    readme = root[0]
    assert readme["size"] == len(FILES["README.md"]) and len(readme["sha"]) == 40
    src = await repos.list_tree("octo", "demo", "main", "src")
    assert [(e["name"], e["path"], e["type"]) for e in src] == [
        ("app.py", "src/app.py", "file"),
        ("util", "src/util", "dir"),
    ]
    nested = await repos.list_tree("octo", "demo", demo, "src/util/")
    assert [e["path"] for e in nested] == ["src/util/strings.py"]
    single = await repos.list_tree("octo", "demo", "main", "src/app.py")
    assert [(e["path"], e["type"]) for e in single] == [("src/app.py", "file")]
    assert await repos.list_tree("octo", "demo", "main", "missing") == []
    assert await repos.list_tree("octo", "demo", "nobranch") == []
    with pytest.raises(ValueError):
        await repos.read_file("octo", "demo", "main", "../outside")


async def test_merge_check_clean_and_conflicting(repos: GitRepos, demo: str) -> None:
    await repos.commit_files(
        "octo",
        "demo",
        branch="clean",
        files={"new.txt": "n\n"},
        message="clean",
        author=AUTHOR,
        create_from="main",
    )
    await repos.commit_files(
        "octo",
        "demo",
        branch="edit-a",
        files={"src/util/strings.py": "A = 1\nB = 20\nC = 3\n"},
        message="a",
        author=AUTHOR,
        create_from="main",
    )
    await repos.commit_files(
        "octo",
        "demo",
        branch="main",
        files={"src/util/strings.py": "A = 1\nB = 200\nC = 3\n", "other.txt": "o\n"},
        message="main edits the same line",
        author=AUTHOR,
    )
    before = await repos.snapshot_refs("octo", "demo")

    clean = await repos.merge_check("octo", "demo", "main", "clean")
    assert clean.clean and clean.conflicts == () and clean.tree is not None
    # The clean tree holds both sides; a merge commit can be made from it.
    merge = await repos.commit_tree(
        "octo",
        "demo",
        clean.tree,
        [before["refs/heads/main"], before["refs/heads/clean"]],
        "Merge",
        AUTHOR,
    )
    assert await repos.read_file("octo", "demo", merge, "new.txt") == b"n\n"
    assert await repos.read_file("octo", "demo", merge, "other.txt") == b"o\n"

    conflict = await repos.merge_check("octo", "demo", "main", "edit-a")
    assert not conflict.clean
    assert conflict.conflicts == ("src/util/strings.py",)
    assert conflict.tree is None
    assert await repos.snapshot_refs("octo", "demo") == before  # nothing moved


async def test_merge_check_unrelated_histories(repos: GitRepos, demo: str) -> None:
    other = await repos.create("octo", "other", files={"x": "x"})
    await repos.git(
        "octo",
        "demo",
        "fetch",
        "--quiet",
        str(repos.path("octo", "other")),
        "main:refs/heads/alien",
    )
    assert await repos.ref_sha("octo", "demo", "alien") == other
    result = await repos.merge_check("octo", "demo", "main", "alien")
    assert not result.clean and result.tree is None


async def test_compare_and_changed_files(repos: GitRepos, demo: str) -> None:
    await repos.commit_files(
        "octo",
        "demo",
        branch="feature",
        files={
            "src/app.py": "def greet():\n    return 'hi'\n\n\ndef bye():\n    return 'bye'\n",
            "NEW.md": "one\ntwo\n",
        },
        message="first",
        author=AUTHOR,
        create_from="main",
    )
    await repos.commit_files(
        "octo", "demo", branch="feature", files={"README.md": None}, message="second", author=AUTHOR
    )
    # main moves on too: compare is three-dot, so this does not show up in files.
    await repos.commit_files(
        "octo", "demo", branch="main", files={"main.txt": "m\n"}, message="main", author=AUTHOR
    )

    result = await repos.compare("octo", "demo", "main", "feature")
    assert (result["status"], result["ahead_by"], result["behind_by"], result["total_commits"]) == (
        "diverged",
        2,
        1,
        2,
    )
    assert result["merge_base"] == demo
    assert [c.message for c in result["commits"]] == ["first", "second"]
    files = {f.filename: f for f in result["files"]}
    assert set(files) == {"NEW.md", "README.md", "src/app.py"}
    assert (files["NEW.md"].status, files["NEW.md"].additions, files["NEW.md"].deletions) == (
        "added",
        2,
        0,
    )
    assert files["NEW.md"].patch == "@@ -0,0 +1,2 @@\n+one\n+two"
    assert (
        files["README.md"].status,
        files["README.md"].additions,
        files["README.md"].deletions,
    ) == ("removed", 0, 1)
    app = files["src/app.py"]
    assert (app.status, app.additions, app.deletions, app.changes) == ("modified", 5, 1, 6)
    assert app.patch.startswith(
        "@@ -1,2 +1,6 @@\n def greet():\n-    return 'hello'\n+    return 'hi'"
    )
    assert len(app.sha) == 40

    assert await repos.changed_files("octo", "demo", "main", "feature") == result["files"]
    identical = await repos.compare("octo", "demo", "feature", "feature")
    assert (identical["status"], identical["ahead_by"], identical["files"]) == ("identical", 0, [])
    behind = await repos.compare("octo", "demo", "main", demo)
    assert (behind["status"], behind["behind_by"], behind["commits"]) == ("behind", 1, [])


async def test_changed_files_rename(repos: GitRepos, demo: str) -> None:
    body = "".join(f"line {i}\n" for i in range(20))
    await repos.commit_files(
        "octo", "demo", branch="main", files={"old/name.txt": body}, message="add", author=AUTHOR
    )
    await repos.commit_files(
        "octo",
        "demo",
        branch="mv",
        files={"old/name.txt": None, "new/name.txt": body + "line 20\n"},
        message="move",
        author=AUTHOR,
        create_from="main",
    )
    [change] = await repos.changed_files("octo", "demo", "main", "mv")
    assert change == FileChange(
        filename="new/name.txt",
        status="renamed",
        additions=1,
        deletions=0,
        patch=change.patch,
        previous_filename="old/name.txt",
        sha=change.sha,
    )
    assert change.patch.endswith("+line 20")


async def test_delete_branch_set_ref_and_is_ancestor(repos: GitRepos, demo: str) -> None:
    second = await repos.commit_files(
        "octo", "demo", branch="main", files={"a": "a"}, message="2", author=AUTHOR
    )
    await repos.set_ref("octo", "demo", "old", demo)
    await repos.set_ref("octo", "demo", "refs/pull/1/head", second)
    refs = await repos.snapshot_refs("octo", "demo")
    assert refs == {"refs/heads/main": second, "refs/heads/old": demo, "refs/pull/1/head": second}
    assert await repos.branches("octo", "demo") == {"main": second, "old": demo}

    assert await repos.is_ancestor("octo", "demo", demo, second)
    assert await repos.is_ancestor("octo", "demo", "old", "main")
    assert not await repos.is_ancestor("octo", "demo", "main", "old")
    assert await repos.is_ancestor("octo", "demo", "main", "main")
    assert not await repos.is_ancestor("octo", "demo", "missing", "main")

    assert await repos.delete_branch("octo", "demo", "old") is True
    assert await repos.delete_branch("octo", "demo", "old") is False
    assert "old" not in await repos.branches("octo", "demo")
    assert diff_ref_updates(refs, await repos.snapshot_refs("octo", "demo")) == [
        RefUpdate("refs/heads/old", demo, None)
    ]


def test_diff_ref_updates() -> None:
    before = {"refs/heads/a": "1" * 40, "refs/heads/b": "2" * 40, "refs/heads/c": "3" * 40}
    after = {"refs/heads/a": "1" * 40, "refs/heads/b": "4" * 40, "refs/heads/d": "5" * 40}
    assert diff_ref_updates(before, after) == [
        RefUpdate("refs/heads/b", "2" * 40, "4" * 40),
        RefUpdate("refs/heads/c", "3" * 40, None),
        RefUpdate("refs/heads/d", None, "5" * 40),
    ]
    assert diff_ref_updates(before, before) == []


def test_split_patch_and_counts() -> None:
    text = (
        "diff --git a/x b/x\nindex 1..2 100644\n--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n"
        "diff --git a/bin b/bin\nindex 3..4 100644\nBinary files a/bin and b/bin differ\n"
        "diff --git a/y b/y\nold mode 100644\nnew mode 100755\n"
    )
    patches = split_patch(text)
    assert patches == ["@@ -1,2 +1,2 @@\n a\n-b\n+c", "", ""]
    assert count_patch_lines(patches[0]) == (1, 1)
    assert count_patch_lines("@@ -1 +1 @@\n--x\n++y\n\\ No newline at end of file") == (1, 1)


def test_parse_commit_with_signature_and_offset() -> None:
    raw = (
        b"tree " + b"a" * 40 + b"\nparent " + b"b" * 40 + b"\nparent " + b"c" * 40 + b"\n"
        b"author Jo Doe <jo@example.com> 1700000000 +0200\n"
        b"committer GitHub <noreply@github.com> 1700000060 -0500\n"
        b"gpgsig -----BEGIN PGP SIGNATURE-----\n \n abc\n -----END PGP SIGNATURE-----\n"
        b"\nMerge things\n\nbody\n"
    )
    info = parse_commit("d" * 40, raw)
    assert info.tree == "a" * 40 and info.parents == ("b" * 40, "c" * 40)
    assert (info.author_name, info.author_email) == ("Jo Doe", "jo@example.com")
    assert info.author_date.timestamp() == 1700000000 and info.author_date.tzinfo == timezone.utc
    assert info.committer_date.timestamp() == 1700000060
    assert info.message == "Merge things\n\nbody"
