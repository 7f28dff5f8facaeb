"""Refusals the sandbox makes on purpose: injected 429/5xx, lost submits, the per-key rate limit.

Both classes read the knobs through a getter rather than keeping a copy, so a test that swaps
`SandboxState.settings` mid-run (say, to end a storm of 429s) is obeyed at the next request.
Imports nothing from batchpod.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from ._counters import Counters
from ._records import RATE_LIMIT_DETAIL, Account, ApiError, detail
from ._settings import SandboxSettings


class FaultInjector:
    """The dice for `rate_429`, `rate_5xx` and `lost_submit_rate`, on one seeded stream."""

    def __init__(
        self,
        settings: Callable[[], SandboxSettings],
        *,
        rng: random.Random,
        counters: Counters,
    ) -> None:
        self._settings = settings
        self._rng = rng
        self._counters = counters

    def draw_fault(self) -> ApiError | None:
        """The injected 429 or 5xx for this request, if the dice say so."""
        s = self._settings()
        if s.rate_429 == 0 and s.rate_5xx == 0:
            return None
        roll = self._rng.random()
        if roll < s.rate_429:
            self._counters.injected["429"] += 1
            return detail(429, RATE_LIMIT_DETAIL, retry_after(s.retry_after_s))
        if roll < s.rate_429 + s.rate_5xx:
            status = self._rng.choice((500, 502, 503))
            self._counters.injected[str(status)] += 1
            headers = retry_after(s.retry_after_s) if status == 503 else {}
            return ApiError(status, None, headers)  # the app renders a proxy-style body
        return None

    def draw_lost_submit(self) -> bool:
        """Whether this accepted submit's response is to be lost (see `lost_submit_rate`)."""
        rate = self._settings().lost_submit_rate
        if rate and self._rng.random() < rate:
            self._counters.injected["lost_submit"] += 1
            return True
        return False


class RateLimiter:
    """`rps_limit` per key: a token bucket that holds one second's worth of requests."""

    def __init__(self, settings: Callable[[], SandboxSettings], *, counters: Counters) -> None:
        self._settings = settings
        self._counters = counters

    def take_token(self, account: Account, now: float) -> None:
        """Spend one of `account`'s tokens, or raise the 429 that says when the next one is due."""
        rps = self._settings().rps_limit
        if rps is None:
            return
        burst = max(1.0, rps)  # one second's worth of requests may arrive at once
        account.tokens = min(burst, account.tokens + (now - account.tokens_at) * rps)
        account.tokens_at = now
        if account.tokens >= 1.0:
            account.tokens -= 1.0
            return
        self._counters.injected["rate_limited"] += 1
        wait = (1.0 - account.tokens) / rps
        raise detail(429, RATE_LIMIT_DETAIL, {"Retry-After": str(max(1, math.ceil(wait)))})


def retry_after(seconds: float | None) -> dict[str, str]:
    """The Retry-After header for `retry_after_s` (whole seconds, rounded up), or none."""
    return {} if seconds is None else {"Retry-After": str(math.ceil(seconds))}
