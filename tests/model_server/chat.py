"""Placeholder: routes of this protocol (being written)."""

from __future__ import annotations

from aiohttp import web

from tests.model_server import ModelServer


def routes(server: ModelServer) -> list[web.RouteDef]:
    return []
