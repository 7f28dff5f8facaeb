"""The status board: the statuses of every job in flight, read with few requests.

Polling each job's status endpoint costs one request per job per poll, so the request rate
grows with concurrency. The board instead reads AudioPod's job list (newest first, 100 jobs a
page) and hands each waiting job its row: one request answers for up to 100 jobs. A job that
the pages read do not reach (it is older than the newest few hundred) is asked for through its
status endpoint. If the list endpoint cannot be used at all, the board falls back to status
requests for every job.

When to look: a page read costs one request and serves every job on it, so its cost per job
falls as the jobs in flight grow. The board spends a budget, ``PollPolicy.budget`` requests
per job (the usage-log and balance reads the run makes for its jobs count against it too),
on whichever of two schedules buys more:

- **Shared.** With many jobs in flight the list is read every ``g`` seconds for all of them,
  ``g = max(SWEEP_FLOOR_S, NOTICE_SHARE * T, T * pages / (HEADROOM * budget_left * n))``:
  ``n`` jobs in flight, ``pages`` read per sweep, ``T`` the expected life of a job (the
  median of those that ended, or twice the age of the oldest in flight before any has). A
  job then costs ``T / g * pages / n`` requests, within the budget; its end is noticed
  ``g / 2`` after it, on average, and never sooner than a page is worth reading. While
  ``T`` is still a guess the schedule can spend more than it meant to, so the reads so far
  are held against what the jobs have earned (each earns its budget over its expected life):
  past ``HEADROOM`` of it, ``g`` grows in proportion.
- **Per job.** With few jobs in flight (about 3 or fewer at a budget of 2) that budget buys
  sweeps further apart than a job's own ``PollPolicy`` interval near its end (a quarter of
  its expected life), so each job keeps that schedule instead: a sweep runs when the
  earliest job is due, no sooner than ``SWEEP_FLOOR_S`` after the previous one, and costs
  more than the budget, as a lone job's polls must.

A sweep reads pages until it has seen every job it is for (all of them when shared, the due
ones per job), and no deeper than the jobs registered since the oldest of them could have
pushed it; every job it sees counts as looked at.

It knows the ``StemApi`` protocol and nothing of files, budgets or terminals.
"""

from __future__ import annotations

import logging
import math
import random
import statistics
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from batchpod.client import RemoteJob
from batchpod.errors import ApiError, AuthenticationError, is_transient
from batchpod.retry import PollPolicy, RetryPolicy

log = logging.getLogger("batchpod")

PAGE_SIZE = 100  # the most AudioPod's job list returns at once
SINGLE_READS_AT_ONCE = 16  # status requests in flight for jobs the list did not reach
LIST_FAILURES_BEFORE_SINGLES = 3  # transient list failures in a row before asking each job
#: No sweep sooner than this after the previous one: a page read more often buys less than
#: the round trip it costs, and the API's rate limits are per second.
SWEEP_FLOOR_S = 0.1
#: A shared sweep at least every 1.5% of a job's expected life: its end is then noticed
#: within about 0.75% of it on average, beyond which reading more often buys little.
NOTICE_SHARE = 0.015
#: The share of the budget the shared schedule aims at: job lives are estimated, and an
#: estimate that turns out short must not take the run past its budget.
HEADROOM = 0.85
#: Lives of the latest jobs that ended, for the expected life of a job in flight.
LIVES_KEPT = 64


class StatusApi(Protocol):
    """The two reads the board needs."""

    async def status(self, job_id: str) -> RemoteJob: ...

    async def list_jobs(self, *, skip: int = 0, limit: int = 50) -> list[RemoteJob]: ...


#: Rows each page of a ``read_job_list`` walk shares with the page before it.
PAGE_OVERLAP = 10
#: How often a walk that found a gap starts again from the newest job before giving up.
WALK_RESTARTS = 2


@dataclass(frozen=True, slots=True)
class JobList:
    """The rows of a walk down AudioPod's job list, newest first, each job once."""

    rows: tuple[RemoteJob, ...]
    # False when the walk may have missed a row: it ran out of pages before reaching its
    # end, or jobs kept being deleted faster than the overlap between pages can absorb.
    complete: bool


async def read_job_list(
    api: StatusApi,
    *,
    max_pages: int,
    until: Callable[[RemoteJob], bool] | None = None,
) -> JobList:
    """Walk the job list newest first, up to ``max_pages`` pages, stopping at its end or at
    the first row for which ``until`` is true (that row and the older ones are left out).

    The list is paged by offset while other workers and clients create and delete jobs, so a
    page read later is shifted against the one before it: each job created in between pushes
    rows down (a row is read twice: it is kept once), each job deleted among the rows
    already read pulls rows up past the next offset (a row would be missed). Pages therefore
    overlap by ``PAGE_OVERLAP`` rows, and a page that shares no row with the one before it
    (more deletions than that in between) means a row may have slipped by: the walk starts
    again from the top, keeping what it found, and says it is incomplete if that goes on.
    """
    step = PAGE_SIZE - PAGE_OVERLAP
    found: dict[str, RemoteJob] = {}
    pages = 0
    for _ in range(WALK_RESTARTS + 1):
        previous: Collection[str] = ()
        page = 0
        while pages < max_pages:
            rows = await api.list_jobs(skip=page * step, limit=PAGE_SIZE)
            pages += 1
            if page and len(previous) == PAGE_SIZE and not any(r.id in previous for r in rows):
                break  # a gap: rows between the two pages may have moved past both reads
            for row in rows:
                if until is not None and until(row):
                    return JobList(rows=tuple(found.values()), complete=True)
                found.setdefault(row.id, row)
            if len(rows) < PAGE_SIZE:
                return JobList(rows=tuple(found.values()), complete=True)
            previous = {r.id for r in rows}
            page += 1
        else:
            break  # out of pages
    return JobList(rows=tuple(found.values()), complete=False)


@dataclass(slots=True)
class _Waiter:
    job_id: str
    since: float  # when the job was submitted (anyio clock)
    due: float  # when this job next wants a fresh status (anyio clock)
    seq: int  # how many jobs the board had been asked about before this one
    failures: int = 0
    count: int = 0  # callers waiting on this job
    result: RemoteJob | None = None
    error: ApiError | None = None
    done: anyio.Event = field(default_factory=anyio.Event)


class StatusBoard:
    """Waits for jobs to end, reading their statuses in shared pages (see the module doc)."""

    def __init__(
        self,
        api: StatusApi,
        *,
        poll: PollPolicy,
        retry: RetryPolicy,
        rng: random.Random,
        on_retry: Callable[[ApiError], None] | None = None,
        other_reads: Callable[[], int] | None = None,
    ) -> None:
        self.api = api
        self.on_retry = on_retry or (lambda exc: None)  # told of each read it backs off from
        # Reads the run makes for its jobs elsewhere (usage log, balance): they share the
        # budget, so the board spends what they leave.
        self.other_reads = other_reads or (lambda: 0)
        self.poll = poll
        self.retry = retry
        self.rng = rng
        self.use_list = True
        self.sweeps = 0
        self.reads = 0  # list pages and status requests, for the budget
        self._waiters: dict[str, _Waiter] = {}
        self._wake = anyio.Event()
        self._singles = anyio.CapacityLimiter(SINGLE_READS_AT_ONCE)
        self._list_failures = 0
        self._registered = 0  # jobs ever asked about: the newest-first list grows by as many
        self._lives: deque[float] = deque(maxlen=LIVES_KEPT)  # of the latest jobs that ended
        self._pages = 1.0  # pages a shared sweep reads, smoothed
        self._hold_until = -math.inf  # no sweep before this: the list is backing off

    async def wait(self, job_id: str) -> RemoteJob:
        """The job's status once it is COMPLETED or FAILED; raises what made that unknowable."""
        now = anyio.current_time()
        waiter = self._waiters.get(job_id)
        if waiter is None:
            due = now + self.poll.interval_s(0, rng=self.rng)
            waiter = _Waiter(job_id=job_id, since=now, due=due, seq=self._registered)
            self._registered += 1
            self._waiters[job_id] = waiter
            self._wake.set()
        waiter.count += 1  # two callers on one job (it should not happen) share the answer
        try:
            await waiter.done.wait()
        finally:
            waiter.count -= 1
            if waiter.count == 0:
                self._waiters.pop(job_id, None)
        if waiter.error is not None:
            raise waiter.error
        assert waiter.result is not None
        return waiter.result

    def expected_life_s(self, now: float) -> float:
        """How long a job in flight is expected to take, submit to end (see the module doc)."""
        oldest = max((now - w.since for w in self._waiters.values()), default=0.0)
        if self._lives:
            return max(statistics.median(self._lives), oldest, self.poll.first_s)
        return max(2 * oldest, self.poll.first_s)  # as long again as it has run, at least

    def shared_gap_s(self, now: float) -> float | None:
        """Seconds between shared sweeps, or None while each job keeps its own schedule."""
        waiting = self._waiters.values()
        n = len(waiting)
        if not n or not self.use_list:
            return None
        life = self.expected_life_s(now)
        left = self.poll.budget - self.other_reads() / max(self._registered, 1)
        left = max(left, self.poll.budget / 4)  # the board never spends nothing
        budget_gap = life * self._pages / (HEADROOM * left * n)
        if budget_gap > self.poll.interval_s(life, rng=None):
            return None  # few jobs: the budget buys less than a job's own schedule near its end
        # The gap assumes a job's life is known; while it is not (it grows with the oldest
        # age), the schedule can spend more than it meant to. So the reads so far are held
        # against what the jobs have earned: a job earns its budget over its expected life,
        # and one no longer waited on has earned it all. Over the mark, sweeps slow to match.
        spent = self.reads + self.other_reads()
        earned = self._registered - n + sum(min(1.0, (now - w.since) / life) for w in waiting)
        pace = spent / (HEADROOM * self.poll.budget * max(earned, 1.0))
        return max(SWEEP_FLOOR_S, NOTICE_SHARE * life, budget_gap) * max(1.0, pace)

    async def run(self) -> None:
        """Sweep whenever the schedule says so; runs until cancelled."""
        last = -math.inf
        while True:
            if not self._waiters:
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            now = anyio.current_time()
            gap = self.shared_gap_s(now)
            if gap is None:
                due = min(w.due for w in self._waiters.values())
                at = max(due, last + SWEEP_FLOOR_S)
            else:
                at = last + gap
            at = max(at, self._hold_until)
            self._wake = anyio.Event()
            with anyio.move_on_after(at - now):
                await self._wake.wait()  # a new job may change the schedule: look again
                continue
            last = anyio.current_time()
            self.sweeps += 1
            await self._sweep(last, shared=gap is not None)

    async def _sweep(self, now: float, *, shared: bool = False) -> None:
        waiters = dict(self._waiters)
        seen: dict[str, RemoteJob] = {}
        if self.use_list:
            try:
                seen = await self._read_list(waiters, now, shared=shared)
                self._list_failures = 0
            except AuthenticationError as exc:
                self._fail_all(exc)
                return
            except ApiError as exc:
                self._list_failures += 1
                if is_transient(exc):
                    self.on_retry(exc)
                if is_transient(exc) and self._list_failures < LIST_FAILURES_BEFORE_SINGLES:
                    # Back every due job off rather than polling each one: under a 429 or an
                    # outage, a burst of status requests is the worst answer.
                    delay = self.retry.delay_s(
                        2, retry_after_s=getattr(exc, "retry_after_s", None), rng=self.rng
                    )
                    for waiter in waiters.values():
                        waiter.due = max(waiter.due, now + max(delay, self.poll.first_s))
                    self._hold_until = now + max(delay, self.poll.first_s)
                    if self._list_failures == 1:  # once per spell, not once per sweep
                        log.info("job list unavailable (%s); will try again", exc)
                    return
                if not is_transient(exc):
                    log.warning("job list unusable (%s); polling each job instead", exc)
                    self.use_list = False
                # Still failing: this sweep asks each due job directly (bounded, backed off).
        for job_id, row in seen.items():
            self._observe(waiters[job_id], row, now)
        unseen = [w for w in waiters.values() if w.job_id not in seen and w.due <= now]
        if unseen:
            async with anyio.create_task_group() as tg:
                for waiter in unseen:
                    tg.start_soon(self._read_one, waiter, now)

    async def _read_one(self, waiter: _Waiter, now: float) -> None:
        async with self._singles:
            await self._read_status(waiter, now)

    async def _read_list(
        self, waiters: dict[str, _Waiter], now: float, *, shared: bool = False
    ) -> dict[str, RemoteJob]:
        """Rows for the jobs the sweep is for (and any others on the same pages), newest
        first: every job in flight when ``shared``, else the due ones.

        Jobs submitted after a job sit above it in the list, so the oldest wanted job is at
        most as deep as the jobs registered since it (plus a page for other clients' jobs); a
        job deeper than that is asked for through its status endpoint.
        """
        wanted = {w.job_id for w in waiters.values() if shared or w.due <= now}
        if not wanted:
            return {}
        oldest = min(waiters[job_id].seq for job_id in wanted)
        pages = (self._registered - oldest) // PAGE_SIZE + 2
        seen: dict[str, RemoteJob] = {}
        read = 0
        for page in range(pages):
            rows = await self.api.list_jobs(skip=page * PAGE_SIZE, limit=PAGE_SIZE)
            read += 1
            for row in rows:
                if row.id in waiters:
                    seen[row.id] = row
            if len(rows) < PAGE_SIZE or wanted <= seen.keys():
                break
        self.reads += read
        if shared:
            self._pages = 0.8 * self._pages + 0.2 * read
        return seen

    async def _read_status(self, waiter: _Waiter, now: float) -> None:
        self.reads += 1
        try:
            row = await self.api.status(waiter.job_id)
        except ApiError as exc:
            if isinstance(exc, AuthenticationError) or not is_transient(exc):
                waiter.error = exc
                waiter.done.set()
                return
            waiter.failures += 1
            self.on_retry(exc)
            wait = self.retry.delay_s(
                waiter.failures, retry_after_s=getattr(exc, "retry_after_s", None), rng=self.rng
            )
            waiter.due = now + max(wait, self.poll.first_s)
            return
        waiter.failures = 0
        self._observe(waiter, row, now)

    def _observe(self, waiter: _Waiter, row: RemoteJob, now: float) -> None:
        if row.status.terminal:
            if waiter.result is None:
                self._lives.append(now - waiter.since)
            waiter.result = row
            waiter.done.set()
        else:  # a fresh status, due or not: its next look is a full interval away
            waiter.due = now + self.poll.interval_s(now - waiter.since, rng=self.rng)

    def _fail_all(self, exc: ApiError) -> None:
        for waiter in list(self._waiters.values()):
            waiter.error = exc
            waiter.done.set()
