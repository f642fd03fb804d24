"""The worker's git operations (SPEC §6.2, §6.5, §6.6, §6.7): the module the rest of the bot
imports them from.

The code lives in these modules, each importing only the ones listed before it:

- :mod:`bot.worker.git_values` — constants, values and errors (:class:`GitAuth`,
  :class:`GitCommandError`, :class:`PushResult`…);
- :mod:`bot.worker.git_parse` — pure helpers and parsers of git's output, no I/O;
- :mod:`bot.worker.git_files` — what is written without running git (the agent's repository:
  :func:`make_agent_repository`);
- :mod:`bot.worker.git_runner` — :class:`GitRunner`, running git processes safely;
- :mod:`bot.worker.checkout` — :class:`Checkout`, one task's worktree as an attempt uses it
  (commit, checks, merge, push, salvage);
- :mod:`bot.worker.workspaces` — :class:`Workspaces`, the cache repositories and the per-task
  worktrees.

In short: one bare cache repository per GitHub repository and one ``git worktree`` per task,
whose ``.git`` is a repository of the agent's own that the bot never uses. Every git call is
an asyncio subprocess with an explicit environment; the installation token reaches git only
through the environment of network commands, which run against the cache with its config
rewritten first; everything git prints is redacted before it is raised.
"""

from __future__ import annotations

from bot.tasks.branches import check_branch_name as check_branch_name
from bot.tasks.branches import check_task_id as check_task_id
from bot.tasks.branches import split_repo as split_repo
from bot.tasks.branches import task_branch, wip_branch

from .checkout import Checkout
from .git_files import make_agent_repository
from .git_parse import (
    AddedLinesParser,
    DiffEntry,
    agent_config_text,
    cache_config_text,
    check_identity,
    check_remote_url,
    config_env,
    conflict_marker_lines,
    parse_add_failure,
    parse_batch_sizes,
    parse_push_porcelain,
    parse_raw_diff,
    parse_raw_entries,
    parse_unmerged,
    redact_git_output,
    show_path,
    summarize_stderr,
    tracking_ref,
    unstageable_message,
    worktrees_on_branch,
)
from .git_parse import _GitlinkLister as _GitlinkLister
from .git_runner import GitRunner
from .git_values import (
    COMMAND_TIMEOUT,
    DEFAULT_SEARCH_PATH,
    EXCLUDE_STATE_DIR,
    EXCLUDE_TEXT,
    FETCH_REFSPEC,
    IGNORED_SCRATCH,
    MARKER_SCAN_LIMIT,
    MAX_EXCLUDED_PATHS,
    MAX_LINE_PIECE,
    MAX_PUSH_ROUNDS,
    NETWORK_TIMEOUT,
    REMOTE_NAME,
    STATE_DIR,
    STDERR_KEPT,
    STREAM_CHUNK,
    TRACKING_PREFIX,
    BranchNotFoundError,
    GitAuth,
    GitAuthError,
    GitCommandError,
    GitResult,
    MergeOutcome,
    PushRefStatus,
    PushResult,
    UnresolvedMergeError,
    UnstageablePathError,
)
from .guard import ChangedFile as ChangedFile
from .guard import GuardPolicy as GuardPolicy
from .guard import Violation as Violation
from .guard import redact as redact
from .workspaces import Workspaces, bot_identity

__all__ = [
    # constants
    "COMMAND_TIMEOUT",
    "DEFAULT_SEARCH_PATH",
    "EXCLUDE_STATE_DIR",
    "EXCLUDE_TEXT",
    "FETCH_REFSPEC",
    "IGNORED_SCRATCH",
    "MARKER_SCAN_LIMIT",
    "MAX_EXCLUDED_PATHS",
    "MAX_LINE_PIECE",
    "MAX_PUSH_ROUNDS",
    "NETWORK_TIMEOUT",
    "REMOTE_NAME",
    "STATE_DIR",
    "STDERR_KEPT",
    "STREAM_CHUNK",
    "TRACKING_PREFIX",
    # values and errors
    "BranchNotFoundError",
    "GitAuth",
    "GitAuthError",
    "GitCommandError",
    "GitResult",
    "MergeOutcome",
    "PushRefStatus",
    "PushResult",
    "UnresolvedMergeError",
    "UnstageablePathError",
    # pure helpers and parsers
    "AddedLinesParser",
    "DiffEntry",
    "agent_config_text",
    "cache_config_text",
    "check_identity",
    "check_remote_url",
    "config_env",
    "conflict_marker_lines",
    "parse_add_failure",
    "parse_batch_sizes",
    "parse_push_porcelain",
    "parse_raw_diff",
    "parse_raw_entries",
    "parse_unmerged",
    "redact_git_output",
    "show_path",
    "summarize_stderr",
    "tracking_ref",
    "unstageable_message",
    "worktrees_on_branch",
    # the agent's repository, the runner, the worktrees
    "make_agent_repository",
    "GitRunner",
    "Checkout",
    "Workspaces",
    "bot_identity",
    # branch names, as before
    "task_branch",
    "wip_branch",
]
