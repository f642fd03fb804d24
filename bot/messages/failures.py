"""Why an attempt ended without a push (SPEC §6, §8): the texts that reach an attempt's
error, its log, the ``patchwright`` check run and the status comment. Pure renderers.

``mention`` is the bot's mention as the worker knows it (``@<app-slug>``), put in as it is.
Errors from git, GitHub or the agent are put in as given: the worker redacts secrets before
the text is stored or shown, and the status comment and check run escape or fence it.

Sentences that say where unfinished work went (the ``salvage_*`` notes) start with a space:
they are appended to the sentence that says why the attempt ended.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from bot.messages import DEFAULT_MENTION

# -- the attempt's log ------------------------------------------------------------------------

#: The log line of an attempt that failed.
FAILED_LOG_NOTE = "attempt failed: {error}"
#: The log line of an attempt that ended for a passing reason (retried after a backoff).
TRANSIENT_LOG_NOTE = "temporary failure: {reason}"


# -- before the agent ---------------------------------------------------------------------------


def config_invalid(branch: str, problem: str, mention: str = DEFAULT_MENTION) -> str:
    """``.github/patchwright.yml`` on the default ``branch`` does not validate."""
    return (
        f"`.github/patchwright.yml` on `{branch}` is not valid:\n{problem}\n"
        f"Fix the file on `{branch}`, then use `{mention} retry`."
    )


def daily_cap_reached(cap_usd: float, mention: str = DEFAULT_MENTION) -> str:
    """The repository's daily cost cap is spent (before the agent, or the agent was killed for it)."""
    return (
        f"The repository's daily cost cap (${cap_usd:.2f}, `budget.daily_cost_usd`) is reached. "
        f"Use `{mention} retry` after 00:00 UTC, or raise the cap in `.github/patchwright.yml`."
    )


def no_installation_token(error: object) -> str:
    """GitHub gave no installation token for a network step (a passing failure)."""
    return f"Could not get an installation token: {error}"


def github_refused(what: str, error: object, repo: str, mention: str = DEFAULT_MENTION) -> str:
    """GitHub answered 4xx to ``what`` (e.g. "reading the repository")."""
    return (
        f"GitHub refused {what}: {error}. Check that the App is still installed on "
        f"{repo} with its permissions, then use `{mention} retry`."
    )


def github_error(what: str, error: object) -> str:
    """GitHub failed (5xx, network, timeout) while ``what`` (a passing failure)."""
    return f"GitHub error while {what}: {error}"


def branch_missing(error: object, mention: str = DEFAULT_MENTION) -> str:
    """The task branch the bot pushed before is gone from the remote."""
    return (
        f"Cannot check out the work: {error}. If the branch was deleted on purpose, use "
        f"`{mention} start over`."
    )


def agent_not_configured(error: object, mention: str = DEFAULT_MENTION) -> str:
    """No agent preset could be made from the repository's and the worker's settings."""
    return (
        f"The agent is not configured: {error}. Set the agent in `.github/patchwright.yml` "
        f"(`agent.preset`, `agent.command`) or on the worker (`PATCHWRIGHT_AGENT`, "
        f"`PATCHWRIGHT_AGENT_COMMAND`), then use `{mention} retry`."
    )


def agent_env_refused(error: object) -> str:
    """The preset asks for an environment variable the agent never gets."""
    return f"The agent is not configured: {error}."


# -- git ----------------------------------------------------------------------------------------


def git_refused(what: str, error: str, repo: str, mention: str = DEFAULT_MENTION) -> str:
    """git's authentication was refused while ``what`` (e.g. "pushing")."""
    return (
        f"git was refused while {what}: {error}. Check that the App still has access to "
        f"{repo}, then use `{mention} retry`."
    )


def git_failed(what: str, error: str) -> str:
    """git failed while ``what`` for another reason (a passing failure)."""
    return f"git failed while {what}: {error}"


def uncommittable(error: str, mention: str = DEFAULT_MENTION) -> str:
    """The agent wrote a path git cannot stage (not retried for free: it would loop)."""
    return (
        f"The agent's changes cannot be committed: {error}. Nothing was pushed. Ask for "
        f"the path to be removed or renamed with `{mention} retry [instructions]`."
    )


# -- how the agent ended --------------------------------------------------------------------


def agent_timed_out(minutes: float) -> str:
    return f"The agent ran out of time ({minutes:g} min) and was killed."


def agent_over_cost_cap(cap_usd: float) -> str:
    """The agent was killed before this attempt passed the task's cost cap."""
    return (
        f"The agent was killed: this attempt would pass the task's cost cap "
        f"(${cap_usd:.2f}, `budget.max_cost_usd`)."
    )


def agent_could_not_run(error: str, mention: str = DEFAULT_MENTION) -> str:
    """The agent's CLI said its setup is wrong (credentials, model, billing): not retried."""
    return (
        f"The agent could not run: {error}\nFix the agent's setup on the worker "
        f"(credentials, model, billing), then use `{mention} retry`."
    )


def agent_provider_error(error: str) -> str:
    """The agent's provider failed for a passing reason (rate limit, overload)."""
    return f"The agent hit a temporary provider error: {error}"


def agent_failed(error: str) -> str:
    return f"The agent failed: {error}"


def conflict_unresolved(error: object) -> str:
    """A merge-conflict attempt ended with conflicted files left."""
    return f"The agent did not resolve the merge conflict: {error}"


#: A merge-conflict attempt ended with the merge neither concluded nor committable.
MERGE_UNFINISHED = "The agent left the merge unfinished."


# -- checks and the push ----------------------------------------------------------------------


def checks_refused(violations: str, mention: str = DEFAULT_MENTION) -> str:
    """The pre-push checks refused the agent's changes; ``violations`` describes them
    (:func:`bot.worker.guard.describe`)."""
    return (
        violations
        + "\nNothing was pushed. Remove these changes from the request, or change them yourself, "
        f"then use `{mention} retry [instructions]`."
    )


def push_failed(branch: str, error: object) -> str:
    """The compare-and-swap push did not land (after its own retries)."""
    return f"Could not push to `{branch}`: {error}"


def pull_request_failed(sha: str, error: object) -> str:
    """The push landed but the pull request could not be opened or updated."""
    return f"Pushed {sha[:7]}, but GitHub failed to open or update the pull request: {error}"


# -- unfinished work (salvage, SPEC §6.6) ----------------------------------------------------


def salvage_saved(branch: str) -> str:
    return f" Unfinished work saved on `{branch}`."


def salvage_refused(paths: str) -> str:
    """The unfinished work breaks the pre-push checks (``paths``: the files, comma-separated)."""
    return f" The unfinished work was not saved: it breaks the pre-push checks ({paths})."


def salvage_failed(error: str) -> str:
    return f" The unfinished work could not be saved: {error}"


# -- stopped or crashed -------------------------------------------------------------------------

#: Why the worker ended an attempt early, by :class:`bot.worker.runner.StopReason` value.
STOP_REASONS: Mapping[str, str] = MappingProxyType(
    {
        "left_running": "the task was stopped",
        "lost": "another worker took the task over",
        "shutdown": "the worker shut down",
    }
)
#: When no (known) stop reason was recorded.
STOPPED_FOR_NO_KNOWN_REASON = "it was stopped"


def ended_early(attempt: int, reason: str | None, note: str = "") -> str:
    """Attempt ``attempt`` was stopped by the worker for ``reason`` (a
    :class:`~bot.worker.runner.StopReason`); ``note`` says where its work went."""
    words = STOP_REASONS.get(reason or "", STOPPED_FOR_NO_KNOWN_REASON)
    return f"Attempt {attempt} ended early: {words}.{note}"


def worker_failed(error: str) -> str:
    """The worker itself failed (a bug or an unexpected error) while running the attempt."""
    return f"The worker failed while running this attempt ({error})."


__all__ = [
    "FAILED_LOG_NOTE",
    "MERGE_UNFINISHED",
    "STOPPED_FOR_NO_KNOWN_REASON",
    "STOP_REASONS",
    "TRANSIENT_LOG_NOTE",
    "agent_could_not_run",
    "agent_env_refused",
    "agent_failed",
    "agent_not_configured",
    "agent_over_cost_cap",
    "agent_provider_error",
    "agent_timed_out",
    "branch_missing",
    "checks_refused",
    "config_invalid",
    "conflict_unresolved",
    "daily_cap_reached",
    "ended_early",
    "git_failed",
    "git_refused",
    "github_error",
    "github_refused",
    "no_installation_token",
    "pull_request_failed",
    "push_failed",
    "salvage_failed",
    "salvage_refused",
    "salvage_saved",
    "uncommittable",
    "worker_failed",
]
