"""The sandbox's tallies for `/_sandbox/stats`, kept since it started or was last reset.

Only observation: the parts that do the work (the app, the job store, the ledger, the key ring,
the fault injector) add to one shared `Counters`, and nothing reads it to decide anything.
Imports nothing from batchpod.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, deque

# kind ("reserve" / "charge" / "refund"), API key, job id, cents, Unix seconds
WalletEvent = tuple[str, str, int, int, float]


class Counters:
    """What the sandbox has counted; `reset()` starts every tally again from nothing."""

    __slots__ = (
        "api_arrivals",
        "api_first_at",
        "api_last_at",
        "api_peak_per_s",
        "downloads",
        "events",
        "injected",
        "key_changes",
        "noticed",
        "recent_api",
        "requests",
        "responses",
        "submissions",
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zero every counter and empty the wallet history."""
        # New objects rather than clear(): a download in flight across a reset holds the old
        # `downloads` and finishes counting into it, so the new tally never sees half of it.
        self.requests: Counter[str] = Counter()  # "METHOD /route/template"
        self.responses: Counter[str] = Counter()  # by status code
        self.submissions: Counter[str] = Counter()  # "source_type/mode[/stem]"
        self.injected: Counter[str] = Counter()  # faults and rate-limit refusals, by kind
        self.downloads: Counter[str] = Counter()
        self.key_changes: Counter[str] = Counter()  # "created" / "revoked" through the API
        self.events: list[WalletEvent] = []
        # Job id -> seconds from the job's end to the first answer that showed it ended (a
        # status, list or submit body): how long a client could not have known.
        self.noticed: dict[int, float] = {}
        # How fast a client really sent /api/ requests, on a monotonic clock of the sandbox's
        # own (not `clock`, which a test may hold still or move back): the arrivals of the
        # last second and the most there ever were, and the first and last arrival.
        self.recent_api: deque[float] = deque()
        self.api_peak_per_s = 0
        self.api_arrivals = 0
        self.api_first_at: float | None = None
        self.api_last_at: float | None = None

    def api_arrival(self, now: float) -> None:
        """Count an /api/ request arriving at `now` (monotonic seconds).

        The peak's window is (now - 1, now]: requests evenly spaced at R per second never put
        more than R in it; a stall of either side can bunch a few and raise it. `api_rate`
        is the mean from the first arrival to the last, (N - 1) / span.
        """
        recent = self.recent_api
        recent.append(now)
        while recent[0] <= now - 1.0:
            recent.popleft()
        self.api_peak_per_s = max(self.api_peak_per_s, len(recent))
        self.api_arrivals += 1
        if self.api_first_at is None:
            self.api_first_at = now
        self.api_last_at = now

    def api_rate(self) -> float | None:
        """Requests per second from the first /api/ arrival to the last ((N - 1) / span)."""
        first, last = self.api_first_at, self.api_last_at
        if first is None or last is None or last <= first:
            return None
        return round((self.api_arrivals - 1) / (last - first), 4)

    def notice(self, job_id: int, delay_s: float) -> None:
        """Count the first answer showing job `job_id` ended, `delay_s` after it did."""
        if job_id not in self.noticed:
            self.noticed[job_id] = max(delay_s, 0.0)

    def notice_summary(self) -> dict[str, float | int | None]:
        """Count, median, 90th percentile, mean and maximum of the noticing delays (s)."""
        delays = sorted(self.noticed.values())
        if not delays:
            return {"jobs": 0, "median_s": None, "p90_s": None, "mean_s": None, "max_s": None}
        n = len(delays)
        return {
            "jobs": n,
            "median_s": round(statistics.median(delays), 4),
            "p90_s": round(delays[min(n - 1, math.ceil(0.9 * n) - 1)], 4),
            "mean_s": round(sum(delays) / n, 4),
            "max_s": round(delays[-1], 4),
        }
