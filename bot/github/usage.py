"""What a process asked of GitHub: requests by installation, method and status class, and the
latest rate-limit budget GitHub reported per installation.

One :class:`GitHubUsage` per process (the GitHub client factory owns it; nothing global); every
request any of its clients sends is counted by :meth:`GitHubUsage.record`. A worker process
reports :meth:`GitHubUsage.snapshot` with its heartbeat (``Store.report_worker``); ``/metrics``
folds its own process's usage and the reported ones with :func:`merge_usage`.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: The installation label of requests authenticated as the App itself (its JWT).
APP_LABEL = "app"
#: The status class of a request that got no answer (a network error).
NO_ANSWER = "error"
#: The rate-limit resource whose budget is kept (search and GraphQL have budgets of their own).
CORE_RESOURCE = "core"

RequestKey = tuple[str, str, str]  # (installation, method, status class)
ProcessRequestKey = tuple[str, str, str, str]  # (process, installation, method, status class)


def status_class(status: int) -> str:
    """``2xx``, ``3xx``, ``4xx`` or ``5xx`` (anything else: its number)."""
    return f"{status // 100}xx" if 100 <= status < 600 else str(status)


@dataclass(frozen=True, slots=True)
class RateLimitReading:
    """GitHub's ``x-ratelimit-*`` headers on one answer, and when it was seen (epoch seconds)."""

    remaining: int
    limit: int
    reset: float  # when the window ends (epoch seconds)
    seen: float

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], now: float) -> RateLimitReading | None:
        """The reading of an answer's headers; None when they carry none (or another resource's)."""
        if headers.get("x-ratelimit-resource", CORE_RESOURCE) != CORE_RESOURCE:
            return None
        try:
            return cls(
                remaining=int(headers["x-ratelimit-remaining"]),
                limit=int(headers["x-ratelimit-limit"]),
                reset=float(headers.get("x-ratelimit-reset", 0) or 0),
                seen=now,
            )
        except (KeyError, ValueError):
            return None

    def as_json(self) -> dict[str, Any]:
        return {"remaining": self.remaining, "limit": self.limit, "reset": self.reset, "seen": self.seen}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RateLimitReading:
        return cls(int(data["remaining"]), int(data["limit"]), float(data["reset"]), float(data["seen"]))


class GitHubUsage:
    """The counters of one process. ``process`` names it in reports (random unless given)."""

    def __init__(self, process: str | None = None) -> None:
        self.process = process or secrets.token_hex(8)
        self.requests: Counter[RequestKey] = Counter()
        self.rate_limits: dict[str, RateLimitReading] = {}

    def record(self, installation: str, method: str, status: int | None, headers: Mapping[str, str], now: float) -> None:
        """Count one request (``status`` None: no answer) and keep its rate-limit reading."""
        outcome = NO_ANSWER if status is None else status_class(status)
        self.requests[(installation, method.upper(), outcome)] += 1
        reading = RateLimitReading.from_headers(headers, now)
        if reading is not None:
            self.rate_limits[installation] = reading

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON-able values (what a worker reports)."""
        return {
            "process": self.process,
            "requests": [[*key, count] for key, count in sorted(self.requests.items())],
            "rate_limits": {label: reading.as_json() for label, reading in sorted(self.rate_limits.items())},
        }


@dataclass(frozen=True, slots=True)
class MergedUsage:
    """Each process's requests (a series of its own, which only grows while the process
    reports: a process forgotten takes its series along instead of lowering a sum), and each
    installation's budget as it stands."""

    requests: Mapping[ProcessRequestKey, int]
    rate_limits: Mapping[str, RateLimitReading]


def current_budget(readings: Iterable[RateLimitReading], now: float) -> RateLimitReading | None:
    """An installation's budget from the readings of several processes: the lowest remaining
    among those of the window still open; when every window has reset, the newest reading
    with its full limit (GitHub refills the budget at the reset). Pure."""
    readings = list(readings)
    if not readings:
        return None
    open_window = [r for r in readings if r.reset > now]
    if open_window:
        return min(open_window, key=lambda r: (r.remaining, -r.seen))
    newest = max(readings, key=lambda r: r.seen)
    return RateLimitReading(remaining=newest.limit, limit=newest.limit, reset=newest.reset, seen=newest.seen)


def merge_usage(snapshots: Iterable[Mapping[str, Any]], now: float) -> MergedUsage:
    """Fold the snapshots of several processes (one per process: a later snapshot of the same
    ``process`` replaces an earlier one): requests per process, budgets merged. Malformed
    entries are skipped. Pure."""
    by_process: dict[str, Mapping[str, Any]] = {}
    for snap in snapshots:
        if isinstance(snap, Mapping):
            by_process[str(snap.get("process", ""))] = snap
    requests: Counter[ProcessRequestKey] = Counter()
    readings: dict[str, list[RateLimitReading]] = {}
    for process, snap in by_process.items():
        for row in snap.get("requests") or ():
            try:
                installation, method, outcome, count = row
                requests[(process, str(installation), str(method), str(outcome))] += int(count)
            except (TypeError, ValueError):
                continue
        limits = snap.get("rate_limits") or {}
        if not isinstance(limits, Mapping):
            continue
        for label, data in limits.items():
            try:
                readings.setdefault(str(label), []).append(RateLimitReading.from_json(data))
            except (KeyError, TypeError, ValueError):
                continue
    budgets = {label: budget for label, found in readings.items() if (budget := current_budget(found, now))}
    return MergedUsage(requests=dict(requests), rate_limits=budgets)


__all__ = [
    "APP_LABEL",
    "GitHubUsage",
    "MergedUsage",
    "RateLimitReading",
    "current_budget",
    "merge_usage",
    "status_class",
]
