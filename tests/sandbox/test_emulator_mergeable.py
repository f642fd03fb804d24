"""``mergeable`` is computed lazily (``null`` for a while after each change) and
``mergeable_state`` takes every value GitHub gives it."""

from __future__ import annotations

import pytest


async def _open(world, branch: str = "feature", files: dict | None = None, draft: bool = False) -> dict:
    em = world.emulator
    await em.push_commit(world.repo, branch=branch, files=files or {"f.txt": "f\n"}, user="alice")
    return await em.open_pull(world.repo, head=branch, title=branch, user="alice", draft=draft)


async def _reads(world, number: int, count: int) -> list[tuple[bool | None, str]]:
    gh = world.gh()
    result = []
    for _ in range(count):
        pull = await gh.getitem(f"/repos/{world.repo}/pulls/{number}")
        result.append((pull["mergeable"], pull["mergeable_state"]))
    return result


async def test_mergeable_is_null_for_the_configured_reads_after_each_change(world):
    em = world.emulator
    status, described = await world.actor("POST", "/faults", {"mergeable_null_reads": 2})
    assert status == 200 and described["mergeable_null_reads"] == 2
    pr = await _open(world)
    unknown, clean = (None, "unknown"), (True, "clean")
    assert await _reads(world, pr["number"], 4) == [unknown, unknown, clean, clean]
    await em.push_commit(world.repo, branch="feature", files={"g.txt": "g\n"}, user="alice")  # the PR
    assert await _reads(world, pr["number"], 3) == [unknown, unknown, clean]
    await em.push_commit(world.repo, branch="main", files={"h.txt": "h\n"}, user="alice")  # its base
    assert await _reads(world, pr["number"], 3) == [unknown, unknown, clean]
    await em.edit_pull(world.repo, pr["number"], title="renamed", user="alice")  # no code change
    assert await _reads(world, pr["number"], 1) == [clean]
    await world.actor("POST", "/faults", {"mergeable_null_reads": 0})
    await em.push_commit(world.repo, branch="feature", files={"i.txt": "i\n"}, user="alice")
    assert await _reads(world, pr["number"], 1) == [clean]


@pytest.mark.emulator_options(mergeable_null_reads=0)
async def test_mergeable_state_follows_checks_protection_drafts_and_conflicts(world):
    em = world.emulator
    gh = world.gh()
    pr = await _open(world)
    number, head = pr["number"], pr["head"]["sha"]

    async def state() -> str:
        return (await gh.getitem(f"/repos/{world.repo}/pulls/{number}"))["mergeable_state"]

    assert await state() == "clean"
    lint = await gh.post(
        f"/repos/{world.repo}/check-runs", data={"name": "lint", "head_sha": head, "status": "in_progress"}
    )
    assert await state() == "unstable"  # a check that is not required is pending
    await gh.patch(f"/repos/{world.repo}/check-runs/{lint['id']}", data={"conclusion": "failure"})
    assert await state() == "unstable"  # ... or failing

    status, protection = await world.actor(
        "PUT", f"/repos/{world.repo}/branches/main/protection", {"required_checks": ["ci"]}
    )
    assert status == 200 and protection == {"branch": "main", "required_checks": ["ci"], "strict": False}
    assert await state() == "blocked"  # the required check has not reported
    repo = em.repo(world.repo)
    await em.create_status(repo, head, state="pending", context="ci", creator=em.account("alice"))
    assert await state() == "blocked"
    status, refused = await world.actor("POST", f"/repos/{world.repo}/pulls/{number}/merge", {"user": "alice"})
    assert (status, refused["message"]) == (405, 'Required status check "ci" is expected.')
    await em.create_status(repo, head, state="failure", context="ci", creator=em.account("alice"))
    assert await state() == "blocked"
    await em.create_status(repo, head, state="success", context="ci", creator=em.account("alice"))
    assert await state() == "unstable"  # required passes, lint still fails
    await gh.patch(f"/repos/{world.repo}/check-runs/{lint['id']}", data={"conclusion": "success"})
    assert await state() == "clean"

    await world.actor(
        "PUT", f"/repos/{world.repo}/branches/main/protection", {"required_checks": ["ci"], "strict": True}
    )
    await em.push_commit(world.repo, branch="main", files={"other.txt": "o\n"}, user="alice")
    assert await state() == "behind"  # strict: the head lacks main's tip
    await em.push_commit(world.repo, branch="main", files={"f.txt": "conflict\n"}, user="alice")
    pull = await gh.getitem(f"/repos/{world.repo}/pulls/{number}")
    assert (pull["mergeable"], pull["mergeable_state"]) == (False, "dirty")

    status, _ = await world.actor("DELETE", f"/repos/{world.repo}/branches/main/protection")
    assert status == 204
    draft = await _open(world, branch="drafty", files={"d.txt": "d\n"}, draft=True)
    pull = await gh.getitem(f"/repos/{world.repo}/pulls/{draft['number']}")
    assert (pull["mergeable"], pull["mergeable_state"]) == (True, "draft")
    status, refused = await world.actor(
        "POST", f"/repos/{world.repo}/pulls/{draft['number']}/merge", {"user": "alice"}
    )
    assert status == 405 and "draft" in refused["message"]


@pytest.mark.emulator_options(mergeable_null_reads=0)
async def test_required_check_runs_count_by_name_of_any_app(world):
    em = world.emulator
    em.protect_branch(world.repo, required_checks=["tests"])
    em.configure_ci(world.repo, "true", checks=("tests",))
    pr = await _open(world)
    await em.ci_idle()
    pull = await world.gh().getitem(f"/repos/{world.repo}/pulls/{pr['number']}")
    assert pull["mergeable_state"] == "clean"
    status, merged = await world.actor("POST", f"/repos/{world.repo}/pulls/{pr['number']}/merge", {"user": "alice"})
    assert status == 200 and merged["merged"] is True
