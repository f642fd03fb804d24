"""Event handlers: one module per concern, each with its own gidgethub Router, composed here."""

from gidgethub import routing

from handlers import checks, comments, installation, issues, pulls, reviews

router = routing.Router(
    issues.router,
    comments.router,
    checks.router,
    reviews.router,
    pulls.router,
    installation.router,
)

__all__ = ["router"]
