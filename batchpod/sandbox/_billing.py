"""The sandbox's wallet: reserve at submit, charge on success, refund on failure.

Pure and synchronous; integer cents only. The invariant the tests check:
``balance_cents + reserved_cents + spent_cents == initial_cents`` after every operation, and a
refund puts back exactly what its reservation took. Imports nothing from batchpod.
"""

from __future__ import annotations


class InsufficientFunds(Exception):
    """A reservation the wallet cannot cover."""

    def __init__(self, *, required_cents: int, available_cents: int) -> None:
        super().__init__(f"required {required_cents} cents, available {available_cents}")
        self.required_cents = required_cents
        self.available_cents = available_cents


class Wallet:
    """One API key's prepaid balance, with a hold per unfinished job."""

    __slots__ = ("_holds", "balance_cents", "initial_cents", "reserved_cents", "spent_cents")

    def __init__(self, *, initial_cents: int) -> None:
        if initial_cents < 0:
            raise ValueError("initial_cents must be >= 0")
        self.initial_cents = initial_cents
        self.balance_cents = initial_cents  # what the API reports as balance_cents
        self.reserved_cents = 0  # held for jobs that have not finished
        self.spent_cents = 0  # kept for jobs that completed
        self._holds: dict[int, int] = {}

    def reserve(self, job_id: int, cents: int) -> None:
        """Hold `cents` for `job_id`; raise InsufficientFunds when the balance cannot cover it."""
        if cents < 0:
            raise ValueError("cents must be >= 0")
        if job_id in self._holds:
            raise ValueError(f"job {job_id} already holds a reservation")
        if cents > self.balance_cents:
            raise InsufficientFunds(required_cents=cents, available_cents=self.balance_cents)
        self._holds[job_id] = cents
        self.balance_cents -= cents
        self.reserved_cents += cents

    def charge(self, job_id: int) -> int:
        """Keep the hold of a job that completed; return the cents kept."""
        cents = self._holds.pop(job_id)
        self.reserved_cents -= cents
        self.spent_cents += cents
        return cents

    def refund(self, job_id: int) -> int:
        """Return the hold of a job that failed (or was deleted unfinished); return the cents."""
        cents = self._holds.pop(job_id)
        self.reserved_cents -= cents
        self.balance_cents += cents
        return cents

    def top_up(self, cents: int) -> None:
        """Add ``cents`` to the wallet, as a top-up through the dashboard would."""
        if cents < 0:
            raise ValueError("cents must be >= 0")
        self.initial_cents += cents  # keeps balance + reserved + spent == initial
        self.balance_cents += cents

    def holds(self) -> dict[int, int]:
        """A copy of the open holds, job id -> cents."""
        return dict(self._holds)
