"""Reading AudioPod's usage log for what each job was charged: the one page reader.

The usage log lists charges newest first, ``PAGE_ROWS`` to a page, each naming its job. A
run reads it twice over: as jobs complete, to settle their reservations at the real charge
(``runner``), and at its end, for the results (``session``). Both read through
``read_charges``, which pages from the newest row and stops at the end of the log, after
``max_pages``, or once every job it was asked about is found.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, MutableMapping, Sequence
from typing import Final

from batchpod.client import UsageRow

#: Rows asked for per page (AudioPod's maximum).
PAGE_ROWS: Final = 100


async def read_charges(
    read_page: Callable[[int], Awaitable[Sequence[UsageRow]]],
    *,
    into: MutableMapping[str, int],
    max_pages: int,
    wanted: Collection[str] | None = None,
) -> None:
    """Add each job's charge (cents, by AudioPod job id) from the newest pages into ``into``.

    ``read_page(n)`` reads page ``n`` (from 1) of ``PAGE_ROWS`` rows. A charge already in
    ``into`` is kept, and within a read the first (newest) row of a job wins. With
    ``wanted``, only those jobs are taken, and reading stops once all are found. What a read
    that fails had found stays in ``into``; its exception goes to the caller.
    """
    for page in range(1, max_pages + 1):
        if wanted is not None and not set(wanted) - into.keys():
            return
        rows = await read_page(page)
        for row in rows:
            if row.job_id is not None and (wanted is None or row.job_id in wanted):
                into.setdefault(row.job_id, row.amount_cents)
        if len(rows) < PAGE_ROWS:
            return
