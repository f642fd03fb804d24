"""Moved to :mod:`bot.tasks.branches`; kept while the runner is being split."""

from bot.tasks.branches import *  # noqa: F403
from bot.tasks.branches import task_branch, wip_branch  # noqa: F401
