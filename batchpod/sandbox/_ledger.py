"""Every cent a job moves: its hold at submit, its charge or refund at the end, and the 402.

The `Ledger` is the one place the sandbox touches a wallet for a job: it writes the usage row
of each charge that is kept and one wallet event per move (for `/_sandbox/stats`). The
arithmetic and its invariant are `Wallet`'s (`_billing`). Imports nothing from batchpod.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ._billing import InsufficientFunds
from ._contract import usd
from ._counters import Counters
from ._records import Account, ApiError, Job, UsageRow
from ._settings import SandboxSettings


class Ledger:
    """Reserve, charge, refund and top up users' wallets, and say so in the usage log."""

    def __init__(
        self,
        settings: Callable[[], SandboxSettings],
        *,
        id_rng: random.Random,
        counters: Counters,
    ) -> None:
        self._settings = settings  # read at each 402, never copied: tests swap the knobs
        self._ids = id_rng  # usage-row ids
        self._counters = counters

    def reserve(self, account: Account, job_id: int, cents: int, *, now: float) -> None:
        """Hold `cents` of `account`'s wallet for `job_id`, or raise the documented 402."""
        try:
            account.wallet.reserve(job_id, cents)
        except InsufficientFunds as exc:
            raise self.insufficient(
                required_cents=exc.required_cents, available_cents=exc.available_cents
            ) from None
        self._counters.events.append(("reserve", account.key, job_id, cents, now))

    def charge(self, job: Job) -> None:
        """Keep the hold of a job that completed, and write its usage row."""
        account = job.account
        cents = account.wallet.charge(job.id)
        self._counters.events.append(("charge", account.key, job.id, cents, job.due))
        # The usage row is written when the charge is kept: the docs' one example has it a few
        # milliseconds after the job's completed_at (§6.4 vs §3.2).
        account.usage.append(
            UsageRow(
                row_seed=self._ids.getrandbits(128),
                job_id=job.id,
                key_id=account.key_id,
                duration_s=job.duration_s,
                cents=cents,
                at=job.due,
            )
        )

    def refund(self, job: Job, *, at: float) -> None:
        """Give back the hold of a job that failed or was deleted unfinished."""
        # The submitting key's wallet is the user's, so it is the caller's too on a delete.
        account = job.account
        cents = account.wallet.refund(job.id)
        self._counters.events.append(("refund", account.key, job.id, cents, at))

    def top_up(self, account: Account, cents: int) -> None:
        """Add `cents` to the wallet `account` spends from (tests: a top-up between runs)."""
        account.wallet.top_up(cents)

    def insufficient(self, *, required_cents: int, available_cents: int) -> ApiError:
        """The documented 402, in the shape the settings ask for (§9, §14 #2)."""
        body: dict[str, object] = {
            "error": "insufficient_api_balance",
            "message": (
                f"Insufficient balance. Required: {usd(required_cents)}, "
                f"Available: {usd(available_cents)}"
            ),
            "required_cents": required_cents,
            "available_cents": available_cents,
        }
        if self._settings().balance_error_shape == "detail":
            return ApiError(402, {"detail": body})
        return ApiError(402, body)
