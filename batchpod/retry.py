"""Retry and polling schedules: pure functions of attempt numbers and random draws, no I/O.

Two schedules live here:

- ``RetryPolicy``: how often and how long to retry one idempotent request after a transient
  failure. The n-th retry (n = 1, 2, ...) waits ``uniform(0, min(max_backoff_s, base_s *
  2 ** (n - 1)))`` ("full jitter"), or the server's ``Retry-After`` when it gave one, capped
  at ``max_retry_after_s``. Retrying stops after ``max_attempts`` attempts in all or once
  ``max_total_s`` seconds have passed since the first, whichever comes first.
- ``PollPolicy``: when to ask for a job's status again. The n-th poll of a job comes
  ``min(max_s, first_s * factor ** (n - 1))`` seconds after the previous one (the first after
  the submit), multiplied by a random factor in ``[1 - jitter, 1 + jitter]`` so that jobs
  submitted together do not poll together.

The caller passes the random source, so tests fix it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Bounds and backoff for retrying one idempotent request (see the module docstring)."""

    max_attempts: int = 6
    max_total_s: float = 120.0
    base_s: float = 0.5
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.max_total_s, self.base_s, self.max_backoff_s, self.max_retry_after_s) < 0:
            raise ValueError("retry times must not be negative")

    def delay_s(
        self, retry: int, *, retry_after_s: float | None = None, rng: random.Random
    ) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        if retry_after_s is not None and retry_after_s >= 0:
            return min(retry_after_s, self.max_retry_after_s)
        ceiling = min(self.max_backoff_s, self.base_s * 2 ** (retry - 1))
        return rng.uniform(0.0, ceiling)

    def may_retry(self, attempts: int, *, elapsed_s: float, next_delay_s: float) -> bool:
        """Whether another attempt fits after ``attempts`` attempts and ``elapsed_s`` seconds."""
        return attempts < self.max_attempts and elapsed_s + next_delay_s <= self.max_total_s


#: A policy that never waits, for tests that inject failures.
NO_WAIT = RetryPolicy(base_s=0.0, max_backoff_s=0.0, max_retry_after_s=0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class PollPolicy:
    """When to poll a job's status (see the module docstring)."""

    first_s: float = 0.25
    factor: float = 1.5
    max_s: float = 15.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.first_s <= 0 or self.max_s < self.first_s:
            raise ValueError("need 0 < first_s <= max_s")
        if self.factor < 1:
            raise ValueError("factor must be at least 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    def interval_s(self, poll: int, *, rng: random.Random) -> float:
        """Seconds before poll number ``poll`` (1-based) of one job."""
        base = min(self.max_s, self.first_s * self.factor ** (poll - 1))
        return base * rng.uniform(1 - self.jitter, 1 + self.jitter)
