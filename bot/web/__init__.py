"""The operator web surface (SPEC §9): dashboard, JSON API, server-sent events, metrics.

Entry point: :func:`bot.web.routes.add_web_routes`.
"""
