"""The job store: which stem jobs a plan admits, and each job from submit to settled or deleted.

Job states are computed lazily from the clock: a job stores when it was submitted, when it
leaves PENDING and when it finishes (and whether it fails, decided at submit by a seeded RNG).
No task runs per job. Each request first calls `settle(now)`, which pops every job that has
come due from a heap and has the `Ledger` charge or refund it, so wallets and the usage log are
exact at every request and the cost per request is O(log n) whatever the number of jobs.
Imports nothing from batchpod.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Iterator
from itertools import islice

from ._contract import MAX_INPUT_S, MODE_PLAN, PLAN_RANK, PLAN_TITLES, cost_cents, duration_ms
from ._counters import Counters
from ._ledger import Ledger
from ._records import (
    FAILURE_MESSAGES,
    FIRST_JOB_ID,
    NOT_FOUND_DETAIL,
    PENDING_SHARE,
    Account,
    Job,
    detail,
)
from ._settings import SandboxSettings


def check_plan(account: Account, mode: str) -> None:
    """403 when the key's plan is below what `mode` needs (§5; the code is our guess)."""
    needed = MODE_PLAN[mode]
    if PLAN_RANK[account.plan] < PLAN_RANK[needed]:
        raise detail(
            403,
            f"Mode '{mode}' requires the {PLAN_TITLES[needed]} plan or higher; "
            f"this API key's plan is {PLAN_TITLES[account.plan]}.",
        )


def _check_length(account: Account, duration_s: float) -> None:
    """400 when the input is longer than the key's plan accepts (§3.1)."""
    limit = MAX_INPUT_S[account.plan]
    if duration_s > limit:
        # The code for an over-long input is undocumented; a 400 with a detail is the most
        # likely FastAPI shape for a business-rule rejection.
        raise detail(
            400,
            f"Audio is {duration_s / 60:.1f} minutes long; the "
            f"{PLAN_TITLES[account.plan]} plan accepts up to {limit // 60} minutes.",
        )


class JobStore:
    """Every stem job by id, when each comes due, and how many are unfinished (per key too).

    `active`/`peak_active` on an `Account` count the unfinished jobs that key submitted; the
    store keeps the same two figures across all keys.
    """

    def __init__(
        self,
        settings: Callable[[], SandboxSettings],
        *,
        rng: random.Random,
        ledger: Ledger,
        counters: Counters,
    ) -> None:
        self._settings = settings  # read at each use, never copied: tests swap the knobs
        self._rng = rng
        self._ledger = ledger
        self._counters = counters
        self.jobs: dict[int, Job] = {}
        self._due: list[tuple[float, int]] = []  # a heap of (due, job id)
        self._next_id = FIRST_JOB_ID
        self._active_total = 0
        self._peak_total = 0
        self._deleted = 0

    def submit(
        self,
        account: Account,
        *,
        source_type: str,
        source: str,
        mode: str,
        stem: str | None,
        duration_s: float,
        now: float,
    ) -> Job:
        """Create a job: check the input length, reserve its cost, schedule its end.

        `source` is the URL of a URL job or the (sanitised) file name of an upload.
        """
        _check_length(account, duration_s)
        cost = cost_cents(duration_s)
        job_id = self._next_id
        self._ledger.reserve(account, job_id, cost, now=now)
        self._next_id += 1
        # Always the same draws per job, so changing one knob does not reshuffle the others.
        settings = self._settings()
        rng = self._rng
        lo, hi = settings.processing_range_s
        processing = rng.uniform(lo, hi)
        fails = rng.random() < settings.failure_rate
        message = rng.choice(FAILURE_MESSAGES)
        seed = rng.getrandbits(128)
        job = Job(
            job_id=job_id,
            account=account,
            source_type=source_type,
            source=source,
            mode=mode,
            stem=stem,
            duration_s=duration_ms(duration_s) / 1000,
            cost=cost,
            created=now,
            started=now + processing * PENDING_SHARE,
            due=now + processing,
            error_message=message if fails else None,
            detail_seed=seed,
        )
        self.jobs[job_id] = job
        account.jobs[job_id] = job
        heapq.heappush(self._due, (job.due, job_id))
        self._admit(account)
        key = f"{source_type}/{mode}" + (f"/{stem}" if mode == "single" else "")
        self._counters.submissions[key] += 1
        return job

    def settle(self, now: float) -> None:
        """Charge or refund every job that has finished by `now`."""
        due = self._due
        while due and due[0][0] <= now:
            _, job_id = heapq.heappop(due)
            job = self.jobs.get(job_id)
            if job is not None and not job.settled:
                self._release(job)
                if job.error_message is not None:
                    self._ledger.refund(job, at=job.due)
                else:
                    self._ledger.charge(job)

    def job_for(self, account: Account, job_id: int) -> Job:
        """The user's job, or the documented 404 (also for another user's job)."""
        job = account.jobs.get(job_id)
        if job is None:
            raise detail(404, NOT_FOUND_DETAIL)
        return job

    def list_jobs(
        self, account: Account, *, skip: int, limit: int, status: str | None, now: float
    ) -> list[Job]:
        """The user's jobs (from any of its keys), newest first; `status` filters (SDK 2.1
        sent it)."""
        newest_first: Iterator[Job] = reversed(account.jobs.values())
        if status is not None:
            newest_first = (j for j in newest_first if j.status(now) == status)
        return list(islice(newest_first, skip, skip + limit))

    def delete_job(self, account: Account, job_id: int, *, now: float) -> None:
        """Forget a job. An unfinished one is refunded: its result will never be delivered.

        The real service's choice here is undocumented (§14); refunding is the one a user
        would expect, and the charge of a finished job stays either way.
        """
        job = self.job_for(account, job_id)
        if not job.settled:
            self._release(job)
            self._ledger.refund(job, at=now)
        del account.jobs[job_id]
        del self.jobs[job_id]
        self._deleted += 1

    def stored_stem(self, job_id: int, stem: str) -> Job | None:
        """The completed job that holds `stem`, if it still exists."""
        job = self.jobs.get(job_id)
        if job is None or not job.settled or job.error_message is not None:
            return None
        if stem not in job.outputs(sparse=self._settings().sparse_stems):
            return None
        return job

    def totals(self) -> dict[str, int]:
        """Jobs created, still stored, deleted, unfinished now, and the most unfinished at
        once."""
        return {
            "created": self._next_id - FIRST_JOB_ID,
            "stored": len(self.jobs),
            "deleted": self._deleted,
            "active": self._active_total,
            "peak_active": self._peak_total,
        }

    def reset_peaks(self, accounts: Iterable[Account]) -> None:
        """Start every peak again from the number of jobs unfinished now."""
        for account in accounts:
            account.peak_active = account.active
        self._peak_total = self._active_total

    def _admit(self, account: Account) -> None:
        account.active += 1
        account.peak_active = max(account.peak_active, account.active)
        self._active_total += 1
        self._peak_total = max(self._peak_total, self._active_total)

    def _release(self, job: Job) -> None:
        """Mark `job` settled (terminal from now on) and no longer unfinished."""
        job.settled = True
        job.account.active -= 1  # the key that submitted it, maybe not the caller
        self._active_total -= 1
