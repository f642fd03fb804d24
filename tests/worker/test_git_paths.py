"""Paths git refuses to add are the agent's doing: a clear, non-transient error naming them."""

from __future__ import annotations

import pytest

from bot.worker.git import GitCommandError, UnstageablePathError, parse_add_failure


@pytest.mark.parametrize(
    ("files", "named"),
    [
        ({".GIT/config": "[core]\n"}, ".GIT/config"),
        ({"sub/.Git/HEAD": "ref: x\n"}, "sub/.Git/HEAD"),
        ({"git~1/config": "x\n"}, "git~1/config"),
    ],
)
async def test_commit_all_names_a_path_git_refuses_to_add(harness, files, named) -> None:
    co = await harness.checkout()
    harness.write(co.path, {"src/app.py": "def greet():\n    return 'hello'\n", **files})
    with pytest.raises(UnstageablePathError) as refused:
        await co.commit_all("x")
    assert isinstance(refused.value, GitCommandError)
    assert refused.value.paths == (named,)
    assert named in str(refused.value) and "invalid path" in str(refused.value)
    assert "\n" not in str(refused.value)
    # The same error while salvaging or concluding a merge: staging uses one code path.
    assert await co.head() == co.start_sha


async def test_an_embedded_repository_without_commits_is_named(harness) -> None:
    co = await harness.checkout()
    (co.path / "vendor" / "lib" / ".git").mkdir(parents=True)
    (co.path / "vendor" / "lib" / "x.txt").write_text("x\n")
    await harness.git_out(co.path / "vendor" / "lib", "init", "-q")
    with pytest.raises(UnstageablePathError) as refused:
        await co.commit_all("x")
    assert refused.value.paths == ("vendor/lib/",)


def test_parse_add_failure() -> None:
    stderr = (
        "error: invalid path '.GIT/config'\n"
        "error: unable to add '.GIT/config' to index\n"
        "error: open(\"locked.txt\"): Permission denied\n"
        "error: unable to index file 'locked.txt'\n"
        "fatal: adding files failed\n"
    )
    paths, reasons = parse_add_failure(stderr)
    assert paths == (".GIT/config", "locked.txt")
    assert reasons == ("invalid path", "Permission denied")
    assert parse_add_failure("fatal: Unable to create 'index.lock': File exists.\n") == ((), ())
