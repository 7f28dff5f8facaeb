"""The status board: the statuses of every job in flight, read with few requests.

Polling each job's status endpoint costs one request per job per poll, so the request rate
grows with concurrency. The board instead reads AudioPod's job list (newest first, 100 jobs a
page) and hands each waiting job its row: one request answers for up to 100 jobs. A job that
the pages read do not reach (it is older than the newest few hundred) is asked for through its
status endpoint. If the list endpoint cannot be used at all, the board falls back to status
requests for every job.

When to look: each job keeps its own schedule from ``PollPolicy`` (soon after the submit,
then further apart as it ages); a sweep runs when the earliest job is due, and no sooner than
half of ``PollPolicy.first_s`` after the previous sweep. A sweep reads pages until it has seen
every job that is due, and no deeper than the jobs registered since the oldest of them could
have pushed it; every job it sees counts as looked at, so the list is read about as often as
the youngest job wants, whatever the number of jobs.

It knows the ``StemApi`` protocol and nothing of files, budgets or terminals.
"""

from __future__ import annotations

import logging
import math
import random
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
    ) -> None:
        self.api = api
        self.on_retry = on_retry or (lambda exc: None)  # told of each read it backs off from
        self.poll = poll
        self.retry = retry
        self.rng = rng
        self.use_list = True
        self.sweeps = 0
        # One sweep answers for up to 100 jobs, so it may come twice as often as one job's
        # quickest poll: that keeps the delay in noticing a short job's end near 0.1 s.
        self.min_gap_s = poll.first_s / 2
        self._waiters: dict[str, _Waiter] = {}
        self._wake = anyio.Event()
        self._singles = anyio.CapacityLimiter(SINGLE_READS_AT_ONCE)
        self._list_failures = 0
        self._registered = 0  # jobs ever asked about: the newest-first list grows by as many

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

    async def run(self) -> None:
        """Sweep whenever a job is due; runs until cancelled."""
        last = -math.inf
        while True:
            if not self._waiters:
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            due = min(w.due for w in self._waiters.values())
            at = max(due, last + self.min_gap_s)
            self._wake = anyio.Event()
            with anyio.move_on_after(at - anyio.current_time()):
                await self._wake.wait()  # a new job may be due sooner: look again
                continue
            last = anyio.current_time()
            self.sweeps += 1
            await self._sweep(last)

    async def _sweep(self, now: float) -> None:
        waiters = dict(self._waiters)
        seen: dict[str, RemoteJob] = {}
        if self.use_list:
            try:
                seen = await self._read_list(waiters, now)
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

    async def _read_list(self, waiters: dict[str, _Waiter], now: float) -> dict[str, RemoteJob]:
        """Rows for the due jobs (and any others on the same pages), newest first.

        Jobs submitted after a job sit above it in the list, so the oldest due job is at most
        as deep as the jobs registered since it (plus a page for other clients' jobs); a job
        deeper than that is asked for through its status endpoint.
        """
        due = {w.job_id for w in waiters.values() if w.due <= now}
        if not due:
            return {}
        oldest = min(waiters[job_id].seq for job_id in due)
        pages = (self._registered - oldest) // PAGE_SIZE + 2
        seen: dict[str, RemoteJob] = {}
        for page in range(pages):
            rows = await self.api.list_jobs(skip=page * PAGE_SIZE, limit=PAGE_SIZE)
            for row in rows:
                if row.id in waiters:
                    seen[row.id] = row
            if len(rows) < PAGE_SIZE or due <= seen.keys():
                break
        return seen

    async def _read_status(self, waiter: _Waiter, now: float) -> None:
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
            waiter.result = row
            waiter.done.set()
        else:  # a fresh status, due or not: its next look is a full interval away
            waiter.due = now + self.poll.interval_s(now - waiter.since, rng=self.rng)

    def _fail_all(self, exc: ApiError) -> None:
        for waiter in list(self._waiters.values()):
            waiter.error = exc
            waiter.done.set()
