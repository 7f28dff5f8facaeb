"""The sandbox's tallies for `/_sandbox/stats`, kept since it started or was last reset.

Only observation: the parts that do the work (the app, the job store, the ledger, the key ring,
the fault injector) add to one shared `Counters`, and nothing reads it to decide anything.
Imports nothing from batchpod.
"""

from __future__ import annotations

from collections import Counter

# kind ("reserve" / "charge" / "refund"), API key, job id, cents, Unix seconds
WalletEvent = tuple[str, str, int, int, float]


class Counters:
    """What the sandbox has counted; `reset()` starts every tally again from nothing."""

    __slots__ = (
        "downloads",
        "events",
        "injected",
        "key_changes",
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
