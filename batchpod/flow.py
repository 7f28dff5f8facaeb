"""Flow control: how fast the run may ask AudioPod for anything, and how much it may keep there.

Two gates, both shared by every task of one run:

- ``Pacer`` (``--max-rps``): API requests leave at most ``rps`` per second, evenly spaced. A
  request takes the next free slot and sleeps until it; there is no burst allowance, so the
  rate holds over any window of a second or more. Stem downloads go to the storage host and
  do not pass it.
- ``SubmitWindow``: how many jobs may be in flight at AudioPod at once (submitted and not yet
  ended). AudioPod's 429s are per key: the rate of requests a run sends grows with the jobs it
  keeps in flight (a submit each, then their share of the polls), so that number is what a
  429 must shrink. The window starts at the run's concurrency and follows AIMD, as TCP's
  congestion window does: a 429 halves it (once per ``cooldown_s``, so that one burst of
  429s counts once), and each submit AudioPod accepts adds ``step / window``, so that a
  whole window of accepted submits grows it by ``step`` (``concurrency / 16``, at least 1):
  from half the concurrency back to all of it in about 8 rounds of jobs. Jobs already in
  flight are not cancelled when it shrinks; new submits wait until the count falls under it.

Neither knows HTTP: the client paces itself, and the pool tells the window what AudioPod said.

``with_retries`` runs one idempotent request under a ``RetryPolicy``: the loop that the pool's
polls, status reads and downloads and the run's pre-flight and closing reads share. Its pause,
``pause_before_retry``, also serves the submit loop, which reconciles between attempts.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from batchpod.errors import ApiError, AuthenticationError, DownloadLinkExpired, is_transient
from batchpod.retry import RetryPolicy

T = TypeVar("T")


async def with_retries(
    operation: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    rng: random.Random,
    on_retry: Callable[[ApiError], None] | None = None,
    on_error: Callable[[ApiError], None] | None = None,
) -> T:
    """``await operation()``, again after each transient failure while ``policy`` allows.

    Raises the last error when it is not transient (a refused key, an expired download link,
    a 4xx) or when the policy's attempts or time are spent. ``on_error`` hears of every
    failure, retried or not; ``on_retry`` of each retry, before its pause.
    """
    started = anyio.current_time()
    attempts = 0
    while True:
        attempts += 1
        try:
            return await operation()
        except ApiError as exc:
            if on_error is not None:
                on_error(exc)
            if isinstance(exc, AuthenticationError | DownloadLinkExpired) or not is_transient(exc):
                raise
            if not await pause_before_retry(
                exc, attempts=attempts, started=started, policy=policy, rng=rng, on_retry=on_retry
            ):
                raise


async def pause_before_retry(
    exc: ApiError,
    *,
    attempts: int,
    started: float,
    policy: RetryPolicy,
    rng: random.Random,
    on_retry: Callable[[ApiError], None] | None = None,
) -> bool:
    """After ``attempts`` attempts since ``started`` (anyio clock), the last failing with
    ``exc``: sleep before the next one if ``policy`` allows it, and say whether it does."""
    delay = policy.delay_s(attempts, retry_after_s=getattr(exc, "retry_after_s", None), rng=rng)
    elapsed = anyio.current_time() - started
    if not policy.may_retry(attempts, elapsed_s=elapsed, next_delay_s=delay):
        return False
    if on_retry is not None:
        on_retry(exc)
    await anyio.sleep(delay)
    return True


class Pacer:
    """At most ``rps`` requests per second, evenly spaced (see the module docstring).

    ``clock`` and ``sleep`` are anyio's; a test passes a clock of its own and a sleep that
    moves it, to see the slots without waiting for them.
    """

    def __init__(
        self,
        rps: float,
        *,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if not (math.isfinite(rps) and rps > 0):
            raise ValueError(f"rps must be a positive number, got {rps!r}")
        self.rps = rps
        self._interval = 1.0 / rps
        self._next = -math.inf
        self._clock = clock
        self._sleep = sleep

    async def wait(self) -> None:
        """Return when this caller's slot has come."""
        now = self._clock()
        at = max(now, self._next)
        self._next = at + self._interval
        if at > now:
            await self._sleep(at - now)


@dataclass(slots=True)
class WindowChange:
    """One change of the window: when (anyio clock), to what, and the jobs in flight then."""

    at: float
    limit: int
    in_use: int


@dataclass(slots=True)
class SubmitWindow:
    """How many jobs may be in flight at AudioPod; AIMD on 429s (see the module docstring)."""

    maximum: int
    cooldown_s: float = 1.0
    minimum: int = 1
    limit: int = 0  # the current window (whole jobs); starts at ``maximum``
    in_use: int = 0
    size: float = 0.0  # the window with the fractions that additive increase adds
    throttles: int = 0  # 429s reported
    decreases: int = 0  # times the window was halved
    history: list[WindowChange] = field(default_factory=list)
    _step: float = 1.0  # additive increase per window of accepted submits
    _last_decrease: float = -math.inf
    _changed: anyio.Event = field(default_factory=anyio.Event)

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError("need 1 <= minimum <= maximum")
        self.limit = self.maximum
        self.size = float(self.maximum)
        self._step = max(1.0, self.maximum / 16)

    async def acquire(self) -> None:
        """Wait for room in the window, then take a place in it."""
        while self.in_use >= self.limit:
            await self._changed.wait()
        self.in_use += 1

    def release(self) -> None:
        """Give a place back (the job ended at AudioPod, or was never submitted)."""
        if self.in_use <= 0:
            raise RuntimeError("release() without acquire()")
        self.in_use -= 1
        self._wake()

    def throttled(self) -> None:
        """AudioPod answered 429: halve the window, unless it was halved a moment ago."""
        self.throttles += 1
        now = anyio.current_time()
        if now - self._last_decrease < self.cooldown_s:
            return
        self._last_decrease = now
        smaller = max(self.minimum, self.limit // 2)
        self.size = float(smaller)
        if smaller != self.limit:
            self.decreases += 1
            self._set(smaller, now)

    def accepted(self) -> None:
        """AudioPod accepted a submit: grow the window by ``step / window``."""
        if self.size < self.maximum:
            self.size = min(float(self.maximum), self.size + self._step / self.size)
            if int(self.size) != self.limit:
                self._set(int(self.size), anyio.current_time())

    def _set(self, limit: int, now: float) -> None:
        self.limit = limit
        self.history.append(WindowChange(at=now, limit=limit, in_use=self.in_use))
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
