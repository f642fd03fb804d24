"""Seeded fault injection for the emulator's REST API and webhook deliveries.

One ``random.Random(seed)`` drives every decision, so the same sequence of requests meets the
same faults. Faults never apply to ``/_emulator/*`` or git routes (the caller only asks here
for REST requests and webhook deliveries).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

FAULT_KINDS = ("server_error", "secondary_rate_limit", "primary_rate_limit")
RATE_LIMIT_STATUSES = frozenset({403, 429})  # GitHub answers rate limits with either


@dataclass(frozen=True)
class FaultConfig:
    """Rates are probabilities per request (or per delivery for ``webhook_drop_rate``).

    Besides faults proper, two GitHub behaviours that clients must cope with live here, so
    that the same actor route switches them: ``mergeable_null_reads`` (how many reads of a pull
    request answer ``mergeable: null`` after each change to it or its base) and
    ``stateless_tokens`` (installation tokens in GitHub's new ~520-character format).
    """

    error_rate: float = 0.0  # 5xx answers
    secondary_rate_limit_rate: float = 0.0  # 403/429, GitHub's secondary-limit message
    primary_rate_limit_rate: float = 0.0  # 403/429 + x-ratelimit-remaining: 0
    latency: float = 0.0  # seconds added to every REST answer
    latency_jitter: float = 0.0  # up to this many seconds more, drawn from the seeded RNG
    webhook_drop_rate: float = 0.0
    retry_after: int | None = 60  # secondary limits' retry-after (None: sent without one)
    secondary_rate_limit_statuses: tuple[int, ...] = (403,)  # one is drawn per fault
    primary_rate_limit_statuses: tuple[int, ...] = (403,)
    error_statuses: tuple[int, ...] = (500, 502, 503)
    mergeable_null_reads: int = 1
    stateless_tokens: bool = False

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("error_statuses", "secondary_rate_limit_statuses", "primary_rate_limit_statuses"):
            data[key] = list(data[key])
        return data

    def updated(self, changes: dict[str, Any]) -> FaultConfig:
        """A copy with ``changes`` applied; unknown keys or bad values raise ``ValueError``."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        clean: dict[str, Any] = {}
        for key, value in changes.items():
            if key == "error_statuses":
                statuses = _statuses(value)
                if not statuses or any(s < 500 or s > 599 for s in statuses):
                    raise ValueError("error_statuses must be a non-empty list of 5xx codes")
                clean[key] = statuses
            elif key in ("secondary_rate_limit_statuses", "primary_rate_limit_statuses"):
                statuses = _statuses(value)
                if not statuses or not set(statuses) <= RATE_LIMIT_STATUSES:
                    raise ValueError(f"{key} must be a non-empty list of 403 and/or 429")
                clean[key] = statuses
            elif key == "retry_after":
                if value is None:
                    clean[key] = None
                else:
                    seconds = int(value)
                    if seconds < 0:
                        raise ValueError("retry_after must be >= 0 (or null: no retry-after header)")
                    clean[key] = seconds
            elif key == "mergeable_null_reads":
                reads = int(value)
                if reads < 0:
                    raise ValueError("mergeable_null_reads must be >= 0")
                clean[key] = reads
            elif key == "stateless_tokens":
                if not isinstance(value, bool):
                    raise ValueError("stateless_tokens must be true or false")
                clean[key] = value
            else:
                number = float(value)
                if key.endswith("rate") and not 0 <= number <= 1:
                    raise ValueError(f"{key} must be between 0 and 1")
                if number < 0:
                    raise ValueError(f"{key} must be >= 0")
                clean[key] = number
        return replace(self, **clean)


def _statuses(value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError("expected a list of status codes")
    return tuple(int(s) for s in value)


@dataclass(frozen=True)
class Fault:
    kind: str  # one of FAULT_KINDS
    status: int
    retry_after: int | None = None


class FaultInjector:
    """Decides, reproducibly, which requests fail and which deliveries are lost.

    ``reset()`` returns to the configuration the injector was made with (its baseline).
    """

    def __init__(self, seed: int = 0, config: FaultConfig | None = None) -> None:
        self.seed = seed
        self.baseline = config or FaultConfig()
        self.config = self.baseline
        self._random = random.Random(seed)
        self.injected: dict[str, int] = {kind: 0 for kind in (*FAULT_KINDS, "webhook_drop")}

    def set_baseline(self, config: FaultConfig) -> None:
        """Make ``config`` the current settings and what ``reset()`` returns to."""
        self.baseline = self.config = config

    def configure(self, changes: dict[str, Any], *, seed: int | None = None) -> FaultConfig:
        """Apply new settings; a given ``seed`` also restarts the random sequence."""
        self.config = self.config.updated(changes)
        if seed is not None:
            self.seed = seed
            self._random = random.Random(seed)
        return self.config

    def reset(self, seed: int | None = None) -> None:
        self.config = self.baseline
        self._random = random.Random(self.seed if seed is None else seed)
        if seed is not None:
            self.seed = seed
        self.injected = {kind: 0 for kind in self.injected}

    def latency(self) -> float:
        config = self.config
        if config.latency_jitter > 0:
            return config.latency + self._random.random() * config.latency_jitter
        return config.latency

    def request_fault(self) -> Fault | None:
        """The fault for the next REST request, or None. Draws once per request when enabled."""
        config = self.config
        total = config.error_rate + config.secondary_rate_limit_rate + config.primary_rate_limit_rate
        if total <= 0:
            return None
        draw = self._random.random()
        if draw < config.error_rate:
            status = config.error_statuses[self._random.randrange(len(config.error_statuses))]
            self.injected["server_error"] += 1
            return Fault("server_error", status)
        draw -= config.error_rate
        if draw < config.secondary_rate_limit_rate:
            self.injected["secondary_rate_limit"] += 1
            status = self._pick(config.secondary_rate_limit_statuses)
            return Fault("secondary_rate_limit", status, config.retry_after)
        draw -= config.secondary_rate_limit_rate
        if draw < config.primary_rate_limit_rate:
            self.injected["primary_rate_limit"] += 1
            return Fault("primary_rate_limit", self._pick(config.primary_rate_limit_statuses))
        return None

    def _pick(self, statuses: tuple[int, ...]) -> int:
        """One of ``statuses``; draws from the RNG only when there is a choice (so that a
        single-status configuration keeps the sequence it always had)."""
        if len(statuses) == 1:
            return statuses[0]
        return statuses[self._random.randrange(len(statuses))]

    def drop_delivery(self) -> bool:
        if self.config.webhook_drop_rate <= 0:
            return False
        dropped = self._random.random() < self.config.webhook_drop_rate
        if dropped:
            self.injected["webhook_drop"] += 1
        return dropped

    def describe(self) -> dict[str, Any]:
        return {"seed": self.seed, **self.config.as_dict(), "injected": dict(self.injected)}
