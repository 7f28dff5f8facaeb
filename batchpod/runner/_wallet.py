"""The run's money while it runs: the wallet read again, and completed jobs settled.

Reservations are the budget guard's (``batchpod.budget``); this part feeds it what AudioPod
says: the balance, every ``balance_refresh_s`` (other spenders on the wallet are seen, a
refund lands), and each completed job's real charge from the usage log, read in reads shared
by the jobs completing together (``batchpod.charges``).
"""

from __future__ import annotations

import math

import anyio

from batchpod.charges import PAGE_ROWS, read_charges
from batchpod.client import UsageRow
from batchpod.errors import ApiError, AuthenticationError

from ._crew import Crew
from ._live import LiveJob


class Wallet:
    """Reads of the wallet and the usage log for one run."""

    def __init__(self, crew: Crew) -> None:
        self.crew = crew
        self._charges: dict[str, int] = {}  # remote id -> cents, from the usage log
        self._usage_lock = anyio.Lock()
        self._usage_reads = 0
        self._usage_read_at = -math.inf
        self._charges_wanted: set[str] = set()

    async def keep_reading(self) -> None:
        """Read the wallet again from time to time (raises AuthenticationError if refused)."""
        while True:
            await anyio.sleep(self.crew.config.balance_refresh_s)
            await self.read_balance()

    async def read_balance(self) -> None:
        """Read the wallet into the budget's model; a refused key raises
        AuthenticationError, any other failure leaves the model as it stands."""
        budget, fleet = self.crew.budget, self.crew.fleet
        generation = budget.generation
        sent_at = await fleet.clock() if fleet is not None else 0.0
        self.crew.bookkeeping_reads += 1
        try:
            balance = await self.crew.api.balance()
        except AuthenticationError:
            raise
        except ApiError:
            return  # the model stands until the next read
        budget.refresh(balance.balance_cents, generation=generation)
        if fleet is not None:
            await fleet.balance(balance.balance_cents, sent_at=sent_at)

    async def settle(self, live: LiveJob, remote_id: str, *, gap_s: float) -> None:
        """Count the completed job at AudioPod's charge (its estimate if the log has none)."""
        charged = await self.charge_of(remote_id, gap_s=gap_s)
        if charged is not None:
            live.cost_cents = charged
        await self.crew.charged(live, charged if charged is not None else live.estimate_cents)
        self.crew.reporter.spent(self.crew.budget.spent_cents)

    async def charge_of(self, remote_id: str, *, gap_s: float) -> int | None:
        """AudioPod's charge for a completed job, from the newest pages of its usage log.

        Jobs completing together share one read: reads are at least ``gap_s`` apart, a
        caller waits for the next one, and one that began after it arrived answers for it
        (one page per 100 jobs waiting). None if the log does not show the job yet (the
        estimate stands; the run's end reads the log again for the results).
        """
        if remote_id in self._charges:
            return self._charges[remote_id]
        arrived = self._usage_reads
        self._charges_wanted.add(remote_id)
        try:
            async with self._usage_lock:
                if remote_id not in self._charges and self._usage_reads == arrived:
                    gap = self._usage_read_at + gap_s - anyio.current_time()
                    await anyio.sleep(max(gap, 0.0))
                    self._usage_reads += 1
                    self._usage_read_at = anyio.current_time()
                    pages = len(self._charges_wanted) // PAGE_ROWS + 1
                    try:
                        await read_charges(self._usage_page, into=self._charges, max_pages=pages)
                    except ApiError:
                        return None  # bookkeeping only: the estimate stands
        finally:
            self._charges_wanted.discard(remote_id)
        return self._charges.get(remote_id)

    async def _usage_page(self, page: int) -> list[UsageRow]:
        self.crew.bookkeeping_reads += 1
        return await self.crew.api.usage(page=page, limit=PAGE_ROWS)
