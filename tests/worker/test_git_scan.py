"""The pre-push checks over real git (Checkout.check_since): sizes from git's objects before
any content is read, the added text streamed into the scans in bounded memory."""

from __future__ import annotations

import os

from bot.worker.guard import GuardPolicy, KnownSecret

MIB = 1024 * 1024
GHP = "ghp_" + ("FakeTokenForTests0123456789" * 2)[:36]  # assembled at runtime, obviously fake


async def test_a_16_mib_file_of_short_lines_streams_through_the_checks(harness, peak_rss) -> None:
    co = await harness.checkout()
    with (co.path / "big.txt").open("w") as f:
        for _ in range(16):
            f.write("x = 'ab'\n" * (MIB // 9))
        f.write(f"token = '{GHP}'\n")  # at the very end: the whole file was read
    await co.commit_all("big")
    policy = GuardPolicy(max_file_size=100 * MIB, known_secrets=[KnownSecret("the webhook secret", "whsec-0123456789")])
    with peak_rss() as grown:
        violations = await co.check_since(co.start_sha, policy)
    print(f"16 MiB file through git diff and the scans: peak RSS +{grown['MiB']:.1f} MiB")
    assert [(v.path, v.rule) for v in violations] == [("big.txt", "github_token")]
    assert grown["MiB"] < 24, grown


async def test_files_over_the_limit_are_refused_by_size_and_the_others_still_scanned(harness) -> None:
    co = await harness.checkout()
    harness.write(
        co.path,
        {
            "src/app.py": "def greet():\n    return 'hello'\n",
            "a-secret.txt": f"{GHP}\n",
            "z-secret.txt": f"{GHP}\n",
            "weird name [x]*.txt": f"{GHP}\n",
        },
    )
    with (co.path / "big.bin").open("wb") as f:
        f.truncate(3 * MIB)
    # A big file holding a secret: refused by its size, its content never read.
    (co.path / "data").mkdir()
    (co.path / "data" / "big.txt").write_text(GHP + "\n" + "y\n" * (2 * MIB))
    await co.commit_all("mixed")
    policy = GuardPolicy(max_file_size=MIB)
    violations = await co.check_since(co.start_sha, policy)
    assert sorted((v.path, v.rule) for v in violations) == [
        ("a-secret.txt", "github_token"),
        ("big.bin", "file_too_large"),
        ("data/big.txt", "file_too_large"),
        ("weird name [x]*.txt", "github_token"),
        ("z-secret.txt", "github_token"),
    ]
    big = next(v for v in violations if v.path == "big.bin")
    assert str(big) == (
        "big.bin: is 3 MiB, over the 1 MiB limit for one file (`max_file_size_mb` in "
        ".github/patchwright.yml); its content was not read [file_too_large]"
    )
    sizes = {c.path: c.size for c in await co.changes_since(co.start_sha)}
    assert sizes["big.bin"] == 3 * MIB and sizes["src/app.py"] == len("def greet():\n    return 'hello'\n")


async def test_a_type_change_and_a_rename_still_attribute_text_to_the_right_file(harness) -> None:
    """A file that becomes a symlink shows as two patches in ``git diff -p``: the scan falls
    back to one diff per file rather than attribute text to the wrong one."""
    co = await harness.checkout()
    (co.path / "docs" / "guide.md").unlink()
    os.symlink("../README.md", co.path / "docs" / "guide.md")
    harness.write(co.path, {"src/app.py": None, "src/main.py": "def greet():\n    return 'hi'\n"})
    harness.write(co.path, {"x-secret.txt": f"{GHP}\n"})
    await co.commit_all("types")
    changes = {c.path: c.status for c in await co.changes_since(co.start_sha)}
    assert changes["docs/guide.md"] == "T" and changes["src/main.py"] == "R"
    violations = await co.check_since(co.start_sha, GuardPolicy())
    assert [(v.path, v.rule) for v in violations] == [("x-secret.txt", "github_token")]


async def test_conflict_markers_are_found_by_streaming(harness) -> None:
    co = await harness.checkout()
    harness.write(co.path, {"a.txt": "x\n<<<<<<< HEAD\nours\n=======\ntheirs\n>>>>>>> main"})
    await co.commit_all("markers")
    assert await co._marked_paths(co.start_sha, "HEAD") == ["a.txt"]
