"""Spend limits: reserve a job's worst-case cost before it is submitted. Pure and synchronous.

A run may not spend more than ``max_spend_cents``, nor take the wallet below
``keep_balance_cents``. Both are checked when a job is about to be submitted, against what is
already spent plus what in-flight jobs have reserved, so jobs in flight can never overshoot a
cap together. A reservation is settled with the real charge when the job completes and
released when it fails (AudioPod refunds failed jobs).

Money is integer cents throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

#: AudioPod's documented price for stem extraction: $0.10 per minute of input audio.
DEFAULT_CENTS_PER_MINUTE = 10
#: The length assumed for a song whose length is not known, for a worst-case reservation.
DEFAULT_ASSUMED_DURATION_S = 600.0


def cost_cents(duration_s: float, *, cents_per_minute: int = DEFAULT_CENTS_PER_MINUTE) -> int:
    """AudioPod's charge for ``duration_s`` seconds of audio: the total rounded up to a cent."""
    # Integer arithmetic on milliseconds, so that 180 s is exactly 30 cents (no float ceil
    # pushing 30.000000001 to 31).
    millis = math.ceil(duration_s * 1000)
    return -(-millis * cents_per_minute // 60_000)


class Refusal(StrEnum):
    """Why a reservation was refused."""

    MAX_SPEND = "max_spend"
    KEEP_BALANCE = "keep_balance"


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused:
    """A refused reservation, with the figures that refused it (cents)."""

    reason: Refusal
    needed_cents: int
    available_cents: int

    def __str__(self) -> str:
        limit = "max_spend_usd" if self.reason is Refusal.MAX_SPEND else "keep_balance_usd"
        return (
            f"budget: this job may cost up to {usd(self.needed_cents)} but only "
            f"{usd(self.available_cents)} is left under {limit}"
        )


class BudgetGuard:
    """Reservations against a run's spend cap and the wallet's floor."""

    def __init__(
        self,
        *,
        max_spend_cents: int | None,
        keep_balance_cents: int | None,
        balance_cents: int | None,
    ) -> None:
        self.max_spend_cents = max_spend_cents
        self.keep_balance_cents = keep_balance_cents
        self.balance_cents = balance_cents  # the wallet as last read, before in-flight jobs
        self.spent_cents = 0
        self._reserved: dict[int, int] = {}

    @property
    def reserved_cents(self) -> int:
        """The total held for jobs in flight."""
        return sum(self._reserved.values())

    def reserve(self, token: int, cents: int) -> Refused | None:
        """Hold ``cents`` for job ``token``; return why not if it would break a limit."""
        reserved = self.reserved_cents
        if self.max_spend_cents is not None:
            available = self.max_spend_cents - self.spent_cents - reserved
            if cents > available:
                return Refused(
                    reason=Refusal.MAX_SPEND, needed_cents=cents, available_cents=max(available, 0)
                )
        if self.keep_balance_cents is not None and self.balance_cents is not None:
            available = self.balance_cents - reserved - self.keep_balance_cents
            if cents > available:
                return Refused(
                    reason=Refusal.KEEP_BALANCE,
                    needed_cents=cents,
                    available_cents=max(available, 0),
                )
        self._reserved[token] = cents
        return None

    def settle(self, token: int, charged_cents: int) -> None:
        """The job completed and was charged ``charged_cents``: spend it, drop its hold."""
        self._reserved.pop(token, None)
        self.spent_cents += charged_cents
        if self.balance_cents is not None:
            self.balance_cents -= charged_cents

    def release(self, token: int) -> None:
        """The job failed or was never sent: drop its hold (AudioPod refunds failures)."""
        self._reserved.pop(token, None)


def usd(cents: int) -> str:
    """Cents as dollars for people: 1234 -> '$12.34'."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}${whole:,}.{part:02d}"
