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
from decimal import Decimal
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


@dataclass(slots=True)
class _Held:
    cents: int  # the reservation, which AudioPod now holds (at its real price)
    generation: int  # submits counted so far, this one included
    reflected: bool = False  # a balance read since then already shows AudioPod's hold


class BudgetGuard:
    """Reservations against a run's spend cap and the wallet's floor.

    The wallet is modelled as ``balance_cents``: the last balance read, less what this run's
    submits have taken since (AudioPod holds a job's charge from its submit, and refunds it
    if the job fails). A reservation is *pending* until its submit is answered, then *held*
    until the job is settled or released. ``refresh`` replaces the model with a fresh read,
    which also shows what other clients of the same wallet have spent.
    """

    def __init__(
        self,
        *,
        max_spend_cents: int | None,
        keep_balance_cents: int | None,
        balance_cents: int | None,
    ) -> None:
        self.max_spend_cents = max_spend_cents
        self.keep_balance_cents = keep_balance_cents
        self.balance_cents = balance_cents
        self.spent_cents = 0
        self.generation = 0
        self._pending: dict[int, int] = {}
        self._held: dict[int, _Held] = {}

    @property
    def capped(self) -> bool:
        """Whether a cap is in force (max spend or a balance to keep)."""
        return self.max_spend_cents is not None or self.keep_balance_cents is not None

    @property
    def reserved_cents(self) -> int:
        """The total held for jobs in flight (pending and held)."""
        return sum(self._pending.values()) + sum(h.cents for h in self._held.values())

    def reserve(self, token: int, cents: int) -> Refused | None:
        """Hold ``cents`` for job ``token``; return why not if it would break a limit."""
        if self.max_spend_cents is not None:
            available = self.max_spend_cents - self.spent_cents - self.reserved_cents
            if cents > available:
                return Refused(
                    reason=Refusal.MAX_SPEND, needed_cents=cents, available_cents=max(available, 0)
                )
        if self.keep_balance_cents is not None and self.balance_cents is not None:
            # Held reservations are already out of the modelled balance.
            pending = sum(self._pending.values())
            available = self.balance_cents - pending - self.keep_balance_cents
            if cents > available:
                return Refused(
                    reason=Refusal.KEEP_BALANCE,
                    needed_cents=cents,
                    available_cents=max(available, 0),
                )
        self._pending[token] = cents
        return None

    def submitted(self, token: int) -> None:
        """AudioPod accepted job ``token``: it now holds the charge, out of the balance."""
        cents = self._pending.pop(token, None)
        if cents is None:
            return
        self.generation += 1
        self._held[token] = _Held(cents=cents, generation=self.generation)
        if self.balance_cents is not None:
            self.balance_cents -= cents

    def settle(self, token: int, charged_cents: int) -> None:
        """The job completed and was charged ``charged_cents``: spend it, drop its hold."""
        self.spent_cents += charged_cents
        if token in self._pending:  # settled without a recorded submit
            del self._pending[token]
            if self.balance_cents is not None:
                self.balance_cents -= charged_cents
            return
        held = self._held.pop(token, None)
        if held is not None and not held.reflected and self.balance_cents is not None:
            self.balance_cents += held.cents - charged_cents  # the estimate was taken out

    def release(self, token: int) -> None:
        """The job failed or was never sent: drop its hold (AudioPod refunds failures)."""
        if self._pending.pop(token, None) is not None:
            return
        held = self._held.pop(token, None)
        if held is not None and not held.reflected and self.balance_cents is not None:
            self.balance_cents += held.cents
        # A hold a balance read already showed comes back with the next read (the refund).

    def refresh(self, balance_cents: int, *, generation: int) -> None:
        """A balance read, sent when ``generation`` submits had been counted, arrived.

        Holds counted by then are in the read; holds counted since are not yet, so they stay
        taken out of the model.
        """
        newer = 0
        for held in self._held.values():
            if held.generation <= generation:
                held.reflected = True
            elif not held.reflected:
                newer += held.cents
        self.balance_cents = balance_cents - newer


def dollars_to_cents(amount: Decimal) -> int:
    """A dollar amount as integer cents; ValueError unless finite, >= 0 and in whole cents."""
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"not a dollar amount of 0 or more: {amount}")
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"not in whole cents: {amount}")
    return int(cents)


def usd(cents: int) -> str:
    """Cents as dollars for people: 1234 -> '$12.34'."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}${whole:,}.{part:02d}"
