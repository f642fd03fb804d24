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


@dataclass(frozen=True)
class FaultConfig:
    """Rates are probabilities per request (or per delivery for ``webhook_drop_rate``)."""

    error_rate: float = 0.0  # 5xx answers
    secondary_rate_limit_rate: float = 0.0  # 403 + retry-after
    primary_rate_limit_rate: float = 0.0  # 403 + x-ratelimit-remaining: 0
    latency: float = 0.0  # seconds added to every REST answer
    latency_jitter: float = 0.0  # up to this many seconds more, drawn from the seeded RNG
    webhook_drop_rate: float = 0.0
    retry_after: int = 60
    error_statuses: tuple[int, ...] = (500, 502, 503)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["error_statuses"] = list(self.error_statuses)
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
                statuses = tuple(int(s) for s in value)
                if not statuses or any(s < 500 or s > 599 for s in statuses):
                    raise ValueError("error_statuses must be a non-empty list of 5xx codes")
                clean[key] = statuses
            elif key == "retry_after":
                clean[key] = int(value)
            else:
                number = float(value)
                if key.endswith("rate") and not 0 <= number <= 1:
                    raise ValueError(f"{key} must be between 0 and 1")
                if number < 0:
                    raise ValueError(f"{key} must be >= 0")
                clean[key] = number
        return replace(self, **clean)


@dataclass(frozen=True)
class Fault:
    kind: str  # one of FAULT_KINDS
    status: int
    retry_after: int | None = None


class FaultInjector:
    """Decides, reproducibly, which requests fail and which deliveries are lost."""

    def __init__(self, seed: int = 0, config: FaultConfig | None = None) -> None:
        self.seed = seed
        self.config = config or FaultConfig()
        self._random = random.Random(seed)
        self.injected: dict[str, int] = {kind: 0 for kind in (*FAULT_KINDS, "webhook_drop")}

    def configure(self, changes: dict[str, Any], *, seed: int | None = None) -> FaultConfig:
        """Apply new settings; a given ``seed`` also restarts the random sequence."""
        self.config = self.config.updated(changes)
        if seed is not None:
            self.seed = seed
            self._random = random.Random(seed)
        return self.config

    def reset(self, seed: int | None = None) -> None:
        self.config = FaultConfig()
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
            return Fault("secondary_rate_limit", 403, config.retry_after)
        draw -= config.secondary_rate_limit_rate
        if draw < config.primary_rate_limit_rate:
            self.injected["primary_rate_limit"] += 1
            return Fault("primary_rate_limit", 403)
        return None

    def drop_delivery(self) -> bool:
        if self.config.webhook_drop_rate <= 0:
            return False
        dropped = self._random.random() < self.config.webhook_drop_rate
        if dropped:
            self.injected["webhook_drop"] += 1
        return dropped

    def describe(self) -> dict[str, Any]:
        return {"seed": self.seed, **self.config.as_dict(), "injected": dict(self.injected)}
