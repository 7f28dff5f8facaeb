"""Retry and polling schedules: pure functions of attempt numbers and random draws, no I/O.

Two schedules live here:

- ``RetryPolicy``: how often and how long to retry one idempotent request after a transient
  failure. The n-th retry (n = 1, 2, ...) waits ``uniform(0, min(max_backoff_s, base_s *
  2 ** (n - 1)))`` ("full jitter"), or the server's ``Retry-After`` when it gave one, capped
  at ``max_retry_after_s``. Retrying stops after ``max_attempts`` attempts in all or once
  ``max_total_s`` seconds have passed since the first, whichever comes first.
- ``PollPolicy``: when to ask for a job's status again. A job of age ``a`` seconds (since its
  submit) is next asked about ``min(max_s, max(first_s, growth * a))`` seconds later,
  multiplied by a random factor in ``[1 - jitter, 1 + jitter]`` so that jobs submitted
  together do not poll together. With the defaults: at ages 0.25, 0.5, 0.75, 1, 1.25, 1.56,
  1.95, ... s, then every 15 s once a job is a minute old. A job's status is learnt within a
  quarter of its age, at a cost that grows only with the logarithm of its length. Its
  ``budget`` (requests per job) is what the status board may spend instead when many jobs
  share the job list's pages (``batchpod.poller``).

The caller passes the random source, so tests fix it. ``retry_cause`` names why a request is
retried, for the per-job and per-run counts in the results.

Why not a retry library (tenacity, backoff): the loops that use these schedules are not plain
"call again" loops. A submit is reconciled against the job list between attempts and must not
be resent while a stop is pending; every 429 also shrinks the pool's submit window; each
retry is counted by cause for the results. What a library would add, the two small functions
below already are.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from batchpod.errors import (
    DownloadError,
    DownloadLinkExpired,
    InvalidResponse,
    RateLimited,
    ServerError,
    TransportError,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Bounds and backoff for retrying one idempotent request (see the module docstring)."""

    max_attempts: int = 10
    max_total_s: float = 300.0
    base_s: float = 0.5
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.max_total_s, self.base_s, self.max_backoff_s, self.max_retry_after_s) < 0:
            raise ValueError("retry times must not be negative")
        if self.max_retry_after_s > self.max_total_s or self.max_backoff_s > self.max_total_s:
            # Else the longest pause the policy allows could never be taken.
            raise ValueError("max_retry_after_s and max_backoff_s must not exceed max_total_s")

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
    growth: float = 0.25
    max_s: float = 15.0
    jitter: float = 0.2
    # API requests per job, its submit apart, that learning of its end (and its charge) may
    # cost on average when jobs share the job list's pages (batchpod.poller).
    budget: float = 2.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.budget) and self.budget > 0):
            raise ValueError("the poll budget must be a positive number of requests per job")
        if self.first_s <= 0 or self.max_s < self.first_s:
            raise ValueError("need 0 < first_s <= max_s")
        if self.growth < 0:
            raise ValueError("growth must not be negative")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    def interval_s(self, age_s: float, *, rng: random.Random | None) -> float:
        """Seconds until the next poll of a job submitted ``age_s`` seconds ago (without
        jitter when ``rng`` is None)."""
        base = min(self.max_s, max(self.first_s, self.growth * age_s))
        if rng is None:
            return base
        return base * rng.uniform(1 - self.jitter, 1 + self.jitter)


def retry_cause(exc: BaseException) -> str:
    """A short name for why a request is retried: ``429``, ``503``, ``timeout``, ..."""
    if isinstance(exc, RateLimited):
        return "429"
    if isinstance(exc, ServerError):
        return str(exc.http_status) if exc.http_status else "5xx"
    if isinstance(exc, TransportError):
        return "timeout" if exc.timed_out else "connection"
    if isinstance(exc, DownloadLinkExpired):
        return "link_expired"
    if isinstance(exc, DownloadError):
        return "download"
    if isinstance(exc, InvalidResponse):
        return "invalid_response"
    return type(exc).__name__
