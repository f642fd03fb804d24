"""Event handlers: one module per concern, each with its own gidgethub Router, composed here
into the one router that checks each payload before its handlers run (``common.Router``)."""

from handlers import checks, comments, installation, issues, pulls, reviews
from handlers.common import Router

router = Router(
    issues.router,
    comments.router,
    checks.router,
    reviews.router,
    pulls.router,
    installation.router,
)

__all__ = ["router"]
