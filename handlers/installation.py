"""Installations (SPEC §4.6): record and forget installations and their repositories."""

from __future__ import annotations

from gidgethub import routing, sansio

from bot.store.base import Installation

from handlers.common import Context, Ignored

router = routing.Router()


def _repos(items: list[dict] | None) -> tuple[str, ...]:
    return tuple(str(r["full_name"]) for r in items or [] if r.get("full_name"))


@router.register("installation", action="created")
@router.register("installation", action="new_permissions_accepted")
@router.register("installation", action="unsuspend")
async def on_installation_created(event: sansio.Event, ctx: Context) -> str:
    inst = event.data["installation"]
    account = str((inst.get("account") or {}).get("login") or "")
    repos = _repos(event.data.get("repositories"))
    existing = await ctx.services.store.get_installation(int(inst["id"]))
    if event.data.get("action") != "created" and existing is not None:
        repos = existing.repos
    await ctx.services.store.upsert_installation(Installation(id=int(inst["id"]), account=account, repos=repos))
    return f"installation {inst['id']} ({account}) recorded with {len(repos)} repositories"


@router.register("installation", action="deleted")
@router.register("installation", action="suspend")
async def on_installation_deleted(event: sansio.Event, ctx: Context) -> str:
    inst_id = int(event.data["installation"]["id"])
    await ctx.services.store.remove_installation(inst_id)
    ctx.services.forget_installation(inst_id)
    return f"installation {inst_id} forgotten; its cached token dropped"


@router.register("installation_repositories", action="added")
@router.register("installation_repositories", action="removed")
async def on_installation_repositories(event: sansio.Event, ctx: Context) -> str:
    inst_id = int(event.data["installation"]["id"])
    added = _repos(event.data.get("repositories_added"))
    removed = _repos(event.data.get("repositories_removed"))
    if not added and not removed:
        raise Ignored("no repositories added or removed")
    await ctx.services.store.set_installation_repos(inst_id, add=added, remove=removed)
    return f"installation {inst_id}: +{len(added)} -{len(removed)} repositories"


@router.register("ping")
async def on_ping(event: sansio.Event, ctx: Context) -> str:
    return "pong"
