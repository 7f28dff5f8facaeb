"""What every step of a job shares: the API, the config, the state sink, retries and counts.

One ``Crew`` is made per run and handed to each part of the pool (the submit path, the
stems path, the wallet), so that none of them reaches into another: they share only this.
It holds the run's stop as the pool set it (only the pool sets it), the submit window, the
status board, the AudioPod ids the state already holds, and what the run counted.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from batchpod.budget import BudgetGuard, Refused
from batchpod.config import RunConfig
from batchpod.errors import (
    ApiError,
    AuthenticationError,
    DownloadLinkExpired,
    JobNotFound,
    RateLimited,
)
from batchpod.estimate import estimate_cents
from batchpod.flow import SubmitWindow, pause_before_retry, with_retries
from batchpod.journal import JobState
from batchpod.logs import event
from batchpod.models import ErrorRecord, Job, JobResult, JobStatus, OutputSpec
from batchpod.poller import StatusBoard
from batchpod.retry import retry_cause
from batchpod.spool import Spool
from batchpod.storage import Shelf, open_shelf
from batchpod.templates import DEFAULT_OUTPUT_PATH, PathTemplate

from ._live import LiveJob
from ._outcomes import JobFailed, Stop, error_record
from ._outputs import DoneRecords
from ._ports import Fleet, JournalSink, Reporter, StemApi

T = TypeVar("T")

log = logging.getLogger("batchpod")


class Crew:
    """The run's shared parts and counters (see the module docstring)."""

    def __init__(
        self,
        api: StemApi,
        jobs: Sequence[Job],
        config: RunConfig,
        *,
        budget: BudgetGuard,
        reporter: Reporter,
        journal: JournalSink,
        claimed: set[str],
        content_addressed: bool,
        rng: random.Random,
        clock: Callable[[], float] = time.time,
        fleet: Fleet | None = None,
        spool: Spool | None = None,
    ) -> None:
        if config.concurrency is None or config.output_dir is None:
            raise ValueError("the pool needs concurrency and output_dir (RunConfig.for_manifest)")
        self.api = api
        self.jobs = tuple(jobs)
        self.config = config
        self.concurrency: int = config.concurrency
        # Where stems are kept: a folder, or a bucket (OutputError if its settings are
        # refused, even for a run that downloads nothing: its done records are there).
        self.shelf: Shelf = open_shelf(
            config.output_dir,
            endpoint=config.output_endpoint,
            retry=config.retry,
            part_bytes=config.upload_part_bytes,
        )
        self.output: OutputSpec = config.output or OutputSpec()
        self.layout = PathTemplate.parse(config.output_path or DEFAULT_OUTPUT_PATH)
        self.budget = budget
        self.reporter = reporter
        self.journal = journal
        self.rng = rng
        self.clock = clock
        self.claimed = claimed  # AudioPod ids some job already holds: never adopted again
        self.fleet = fleet  # the state shared with other workers, if the run has one
        self.stop: Stop | None = None  # set by the pool alone
        self.changes = 0  # counts job state changes, so watchers can tell when to look again
        self.marks: set[int] = set()  # the jobs changed since the results were rendered
        # Where finished jobs' links and scores are kept (LiveJob.shelve).
        self.spool = spool if spool is not None else Spool()
        self.worked = 0  # jobs this run submitted or followed at AudioPod
        self.retry_counts: Counter[str] = Counter()  # every retry of the run, by cause
        self.stems_written = 0  # stems this run stored, and their bytes (as stored)
        self.bytes_written = 0
        # Finished jobs as the output folder records them (by content key, so only when
        # the jobs' keys are content keys).
        self.done = DoneRecords(self.shelf, enabled=content_addressed)
        self.window = SubmitWindow(maximum=self.concurrency)
        # Usage-log and balance reads for the run's jobs: they share the poll budget.
        self.bookkeeping_reads = 0
        self.board = StatusBoard(
            api,
            poll=config.poll,
            retry=config.retry,
            rng=rng,
            on_retry=self._board_retry,
            other_reads=lambda: self.bookkeeping_reads,
        )

    def estimate_cents(self, job: Job) -> int:
        return estimate_cents(
            job,
            cents_per_minute=self.config.cents_per_minute,
            assumed_duration_s=self.config.assumed_duration_s,
        )

    @property
    def capped(self) -> bool:
        """Whether a cap is in force, this run's or its fleet's."""
        return self.budget.capped or (self.fleet is not None and self.fleet.capped)

    @property
    def _shared_budget(self) -> Fleet | None:
        """The fleet, if its reservations are kept: only under a cap, which every worker
        of a fleet is given alike (three transactions a job saved otherwise)."""
        return self.fleet if self.fleet is not None and self.fleet.capped else None

    # The budget: this run's guard, and with a fleet under a cap, the fleet's reservations.
    async def reserve(self, live: LiveJob) -> Refused | None:
        """Reserve the job's estimate; why not, if a cap refuses it."""
        refused = self.budget.reserve(live.index, live.estimate_cents)
        if refused is None and (fleet := self._shared_budget) is not None:
            refused = await fleet.reserve(
                live.key,
                live.estimate_cents,
                max_spend_cents=self.config.max_spend_cents,
                keep_balance_cents=self.config.keep_balance_cents,
            )
            if refused is not None:
                self.budget.release(live.index)
        return refused

    async def submitted(self, live: LiveJob) -> None:
        self.budget.submitted(live.index)
        if (fleet := self._shared_budget) is not None:
            await fleet.submitted(live.key)

    async def charged(self, live: LiveJob, cents: int) -> None:
        self.budget.settle(live.index, cents)
        if (fleet := self._shared_budget) is not None:
            await fleet.charged(live.key, cents)

    async def release(self, live: LiveJob) -> None:
        self.budget.release(live.index)
        if (fleet := self._shared_budget) is not None:
            await fleet.release(live.key)

    async def claimed_ids(self) -> set[str]:
        """AudioPod ids that some job holds, this run's and (with a fleet) every worker's."""
        if self.fleet is None:
            return self.claimed
        return self.claimed | await self.fleet.claimed_ids()

    async def save(self, live: LiveJob, state: JobState) -> None:
        """Move the job to ``state`` and make that durable before going on."""
        live.state = state
        await self.journal.put(live.record())

    async def delete_remote(self, live: LiveJob) -> None:
        """Delete the job at AudioPod, its stems all stored and that committed
        (``downloaded``); then record it ``cleaned``. A job AudioPod no longer has counts as
        deleted (a killed run's delete may have reached it). A delete that fails is logged
        and the job stays ``downloaded``: the next run with --delete-remote tries again."""
        assert live.remote_id is not None and live.state is JobState.DOWNLOADED
        job = self.jobs[live.index]
        try:
            await with_retries(
                functools.partial(self.api.delete_job, live.remote_id),
                policy=self.config.retry,
                rng=self.rng,
                on_retry=functools.partial(self.retried, live),
                on_error=self.failed_once,
            )
        except JobNotFound:
            pass  # gone already: what this step is for
        except AuthenticationError:
            raise
        except ApiError as exc:
            self.reporter.job_event(job, "could not delete at AudioPod", str(exc))
            log.warning(
                "could not delete AudioPod job %s: %s",
                live.remote_id,
                exc,
                extra=event("delete_failed", job=live.name, remote_id=live.remote_id),
            )
            return
        await self.save(live, JobState.CLEANED)
        self.reporter.job_event(job, "deleted at AudioPod", f"id {live.remote_id}")

    def finish(self, live: LiveJob, status: JobStatus, *, error: ErrorRecord | None = None) -> None:
        live.finish(status, error=error)
        live.finished_at = self.clock()
        live.shelve(self.spool, links=not self.config.download)
        self.changes += 1

    def result_of(self, live: LiveJob) -> JobResult:
        """The job's result as it stands (see ``LiveJob.result``)."""
        stop = self.stop.reason.value if self.stop is not None else None
        job = self.jobs[live.index]
        return live.result(job, stop_reason=stop, download=self.config.download)

    async def enter_window(self, live: LiveJob) -> None:
        """Wait for a place among the jobs in flight at AudioPod (see ``flow.SubmitWindow``)."""
        await self.window.acquire()
        live.in_window = True

    def leave_window(self, live: LiveJob) -> None:
        if live.in_window:
            live.in_window = False
            self.window.release()

    async def retrying(self, operation: Callable[[], Awaitable[T]], live: LiveJob | None) -> T:
        """Run an idempotent request, retrying transient failures under the retry policy; a
        failure that outlasts it fails the job."""
        try:
            return await with_retries(
                operation,
                policy=self.config.retry,
                rng=self.rng,
                on_retry=functools.partial(self.retried, live),
                on_error=self.failed_once,
            )
        except (AuthenticationError, DownloadLinkExpired):
            raise
        except ApiError as exc:
            raise JobFailed(error_record(exc)) from exc

    async def backoff(
        self, live: LiveJob | None, attempts: int, started: float, exc: ApiError
    ) -> bool:
        """Sleep before the next attempt if the policy allows one; say whether it does."""
        self.failed_once(exc)
        return await pause_before_retry(
            exc,
            attempts=attempts,
            started=started,
            policy=self.config.retry,
            rng=self.rng,
            on_retry=functools.partial(self.retried, live),
        )

    def retried(self, live: LiveJob | None, exc: BaseException) -> None:
        """Count a retry, for the job and the run."""
        cause = retry_cause(exc)
        self.retry_counts[cause] += 1
        name = None
        if live is not None:
            live.count_retry(cause)
            name = live.name
        log.info("retry (%s)", cause, extra=event("retry", job=name, cause=cause))

    def failed_once(self, exc: BaseException) -> None:
        """Any request failed, retried or not: a 429 shrinks the submit window."""
        if isinstance(exc, RateLimited):
            self.window.throttled()

    def _board_retry(self, exc: ApiError) -> None:
        self.failed_once(exc)
        self.retried(None, exc)
