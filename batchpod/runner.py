"""The worker pool: submit, poll and download every job, ``concurrency`` jobs at a time.

A feeder hands job indexes to a fixed set of workers through an unbuffered stream, so at most
``concurrency`` jobs are in flight and no task exists for a job before a worker takes it. Each
worker carries one job from submit to its last stem; a job that fails becomes a ``JobResult``,
never an exception that tears the pool down. Only run-level conditions stop the pool: a key
AudioPod refuses, a budget or wallet that cannot cover the next job, or a signal.

It talks to AudioPod only through the small ``StemApi`` protocol (the ``ApiClient`` meets it),
reports progress through ``Reporter``, and knows nothing of argv, terminals or file formats
beyond the stems it writes.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import random
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream, TaskGroup

from batchpod import reconcile
from batchpod.budget import BudgetGuard
from batchpod.client import Balance, RemoteJob, RemoteStatus, UsageRow
from batchpod.config import RunConfig
from batchpod.errors import (
    ApiError,
    AuthenticationError,
    BatchpodError,
    DownloadError,
    DownloadLinkExpired,
    ExitCode,
    InsufficientBalance,
    RateLimited,
    StateError,
    TransportError,
    outcome_unknown,
)
from batchpod.estimate import estimate_cents
from batchpod.flow import SubmitWindow, pause_before_retry, with_retries
from batchpod.journal import JobRecord, JobState
from batchpod.logs import event
from batchpod.models import ErrorRecord, Job, JobResult, JobStatus, OutputFile
from batchpod.poller import StatusBoard
from batchpod.retry import retry_cause

T = TypeVar("T")

#: How many times the job list is searched for an unknown submit's job before sending again.
RECONCILE_LOOKS = 2
#: Seconds between two reads of the usage log for completed jobs' charges in a run without
#: caps: jobs completing meanwhile share the next read.
USAGE_READ_GAP_S = 1.0


class StemApi(Protocol):
    """The AudioPod operations the pool needs."""

    async def submit_url(self, url: str, *, mode: str, stem: str | None) -> RemoteJob: ...

    async def submit_file(self, path: Path, *, mode: str, stem: str | None) -> RemoteJob: ...

    async def status(self, job_id: str) -> RemoteJob: ...

    async def list_jobs(self, *, skip: int = 0, limit: int = 50) -> list[RemoteJob]: ...

    async def download(self, url: str, dest: Path, *, max_bytes: int | None = None) -> int: ...

    async def usage(self, *, page: int = 1, limit: int = 50) -> list[UsageRow]: ...

    async def balance(self) -> Balance: ...


class JournalSink(Protocol):
    """Where job records go: ``put`` returns once the record is durable."""

    async def put(self, record: JobRecord) -> None: ...


log = logging.getLogger("batchpod")


class _NoJournal:
    async def put(self, record: JobRecord) -> None:
        pass


class Reporter(Protocol):
    """Receives the pool's progress; every call comes from the event loop's thread."""

    def job_event(self, job: Job, event: str, detail: str = "") -> None: ...

    def job_finished(self, result: JobResult) -> None: ...

    def spent(self, cents: int) -> None:
        """The run's spend so far (settled charges, in cents) changed."""


class StopReason(StrEnum):
    """Why the pool stopped taking new jobs before the manifest was done."""

    AUTH = "auth"  # AudioPod refused the key
    BUDGET = "budget"  # the next job would break max_spend_usd or keep_balance_usd
    BALANCE = "insufficient_balance"  # AudioPod answered 402
    INTERRUPTED = "interrupted"  # SIGINT or SIGTERM


@dataclass(frozen=True, slots=True, kw_only=True)
class Stop:
    """A run-level stop: why, and a message for people."""

    reason: StopReason
    message: str
    signal: int | None = None

    @property
    def exit_code(self) -> ExitCode:
        """The exit code of a run that stopped for this reason."""
        if self.reason is StopReason.AUTH:
            return ExitCode.AUTH
        if self.reason in (StopReason.BUDGET, StopReason.BALANCE):
            return ExitCode.BUDGET
        if self.signal == signal.SIGTERM:
            return ExitCode.TERMINATED
        return ExitCode.INTERRUPTED


@dataclass(slots=True)
class _Progress:
    """A job's mutable record while a worker holds it."""

    key: str
    name: str
    index: int
    state: JobState = JobState.PENDING
    intent_at: float | None = None
    cost_cents: int | None = None
    status: JobStatus = JobStatus.SKIPPED
    remote_id: str | None = None
    submitted_at: float | None = None
    completed_at: float | None = None
    attempts: int = 0
    estimate_cents: int = 0
    files: list[OutputFile] = field(default_factory=list)
    quality_scores: dict[str, float] = field(default_factory=dict)
    download_urls: dict[str, str] = field(default_factory=dict)
    error: ErrorRecord | None = None
    reason: str | None = None
    duplicate_of: str | None = None
    done: bool = False
    retries: Counter[str] = field(default_factory=Counter)  # by cause, this run
    in_window: bool = False  # holds a place in the pool's SubmitWindow
    sent_this_run: bool = False  # this run sent (or tried to send) its submit
    deadline: float = math.inf  # anyio clock: its submit plus --job-timeout

    def restore(self, record: JobRecord) -> None:
        """Take up where an earlier run left this job."""
        self.state = record.state
        self.remote_id = record.remote_id
        self.intent_at = record.intent_at
        self.submitted_at = record.submitted_at
        self.completed_at = record.completed_at
        self.attempts = record.attempts
        self.cost_cents = record.cost_cents
        self.files = list(record.files)
        self.quality_scores = dict(record.quality_scores)
        self.error = record.error

    def record(self) -> JobRecord:
        """The job's state-file record as it stands."""
        return JobRecord(
            key=self.key,
            state=self.state,
            name=self.name,
            remote_id=self.remote_id,
            intent_at=self.intent_at,
            submitted_at=self.submitted_at,
            completed_at=self.completed_at,
            attempts=self.attempts,
            cost_cents=self.cost_cents,
            files=tuple(self.files),
            quality_scores=dict(self.quality_scores),
            error=self.error,
        )


class JobFailed(Exception):
    """Internal: ends one job as failed with this record."""

    def __init__(self, record: ErrorRecord, *, maybe_charged: bool = False) -> None:
        super().__init__(record.message)
        self.record = record
        self.maybe_charged = maybe_charged


@dataclass(slots=True)
class _SourceLock:
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    users: int = 0  # tasks holding or awaiting it


class _Stopped(Exception):
    """Internal: the run stopped before this job's (next) submit was sent."""


class _Unresolved(JobFailed):
    """Internal: the job's submit outcome is unknown and cannot be settled without guessing."""

    def __init__(self, record: ErrorRecord) -> None:
        super().__init__(record, maybe_charged=True)


class Pool:
    """One run of the worker pool over a list of jobs."""

    def __init__(
        self,
        api: StemApi,
        jobs: Sequence[Job],
        options: RunConfig,
        *,
        budget: BudgetGuard,
        reporter: Reporter,
        keys: Sequence[str] | None = None,
        records: Mapping[str, JobRecord] | None = None,
        journal: JournalSink | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if options.concurrency is None or options.output_dir is None:
            raise ValueError("the pool needs concurrency and output_dir (RunConfig.for_manifest)")
        self.api = api
        self.jobs = tuple(jobs)
        self.options = options
        self.concurrency: int = options.concurrency
        self.output_dir: Path = options.output_dir
        self.budget = budget
        self.reporter = reporter
        self.rng = rng or random.Random()
        self.clock = clock
        self.stop: Stop | None = None
        self.in_flight = 0
        self.peak_in_flight = 0
        self.changes = 0  # counts job state changes, so watchers can tell when to look again
        # Without a state file (tests, embedding), each job is its own key.
        self.keys = tuple(keys) if keys is not None else tuple(str(i) for i in range(len(jobs)))
        self.records = dict(records or {})
        self.journal = journal or _NoJournal()
        self.claimed = {r.remote_id for r in self.records.values() if r.remote_id is not None}
        self._first_of_key: dict[str, int] = {}
        self._source_locks: dict[str, _SourceLock] = {}
        self._charges: dict[str, int] = {}  # remote id -> cents, from the usage log
        self._usage_lock = anyio.Lock()
        self._usage_reads = 0
        self._usage_read_at = -math.inf
        self._charges_wanted: set[str] = set()
        self._progress = [
            _Progress(key=key, name=job.name, index=index)
            for index, (key, job) in enumerate(zip(self.keys, self.jobs, strict=True))
        ]
        self._cancel: anyio.CancelScope | None = None
        self._background: TaskGroup | None = None  # the board, settlements
        self._stems: TaskGroup | None = None  # stem downloads of completed jobs
        # Completed jobs waiting for their stems, at most one per worker: when downloading
        # falls behind, workers wait here instead of piling up jobs whose time runs out.
        self._handoffs = anyio.CapacityLimiter(self.concurrency)
        self.window = SubmitWindow(maximum=self.concurrency)
        self._downloads = anyio.CapacityLimiter(options.download_concurrency)
        self.retry_counts: Counter[str] = Counter()  # every retry of the run, by cause
        self.worked = 0  # jobs this run submitted or followed at AudioPod
        self.board = StatusBoard(
            api,
            poll=options.poll,
            retry=options.retry,
            rng=self.rng,
            on_retry=self._board_retry,
        )

    # -- running ----------------------------------------------------------------------------

    async def run(self) -> list[JobResult]:
        """Run every job (or until a stop); return one result per job, in manifest order."""
        send, receive = anyio.create_memory_object_stream[int](0)
        with anyio.CancelScope() as scope:
            self._cancel = scope
            self.budget.spent_cents += self._inherited_spend()
            await self._reconcile_earlier_unknowns()
            async with anyio.create_task_group() as board:
                self._background = board
                board.start_soon(self.board.run)
                if self.options.balance_refresh_s and self.budget.balance_cents is not None:
                    board.start_soon(self._refresh_balance)
                async with anyio.create_task_group() as stems:
                    self._stems = stems
                    async with anyio.create_task_group() as tg:
                        for _ in range(min(self.concurrency, len(self.jobs))):
                            tg.start_soon(self._worker, receive.clone())
                        receive.close()
                        await self._feed(send)
                board.cancel_scope.cancel()  # every job has ended: nothing left to watch
        return self.results()

    async def _refresh_balance(self) -> None:
        """Read the wallet again from time to time: other spenders on it are seen, and a
        refund lands in the model."""
        while True:
            await anyio.sleep(self.options.balance_refresh_s)
            await self._read_balance()

    async def _read_balance(self) -> None:
        """Read the wallet into the budget's model; a refused key stops the run."""
        generation = self.budget.generation
        try:
            balance = await self.api.balance()
        except AuthenticationError as exc:
            self.halt(Stop(reason=StopReason.AUTH, message=str(exc)), cancel_in_flight=True)
            return
        except ApiError:
            return  # the model stands until the next read
        self.budget.refresh(balance.balance_cents, generation=generation)

    def _inherited_spend(self) -> int:
        """What earlier, unfinished runs paid (or may have paid) for jobs not yet done.

        A run that resumes a crashed or stopped one is the same night's work: its caps count
        what the crashed run spent on jobs it left in flight, so that crash after crash cannot
        spend past ``max_spend_usd``. Jobs an earlier run finished are not counted.
        """
        total = 0
        counted: set[str] = set()  # a song listed twice was paid for once
        for index, key in enumerate(self.keys):
            record = self.records.get(key)
            if record is None or key in counted:
                continue
            counted.add(key)
            in_flight = record.state in (
                JobState.SUBMITTING,
                JobState.UNKNOWN,
                JobState.SUBMITTED,
                JobState.COMPLETED,
            )
            if in_flight:
                total += record.cost_cents or self._estimate_cents(self.jobs[index])
        return total

    async def _reconcile_earlier_unknowns(self) -> None:
        """Settle submits an earlier run left unknown before anything new is submitted, so
        that no job created by this run can be mistaken for one of theirs."""
        limiter = anyio.CapacityLimiter(8)

        async def settle(index: int) -> None:
            async with limiter:
                job, progress, key = self.jobs[index], self._progress[index], self.keys[index]
                record = self.records[key]
                progress.restore(record)
                assert record.intent_at is not None
                try:
                    async with self._source_lock(job):
                        remote = await self._reconcile(job, progress, record.intent_at)
                except _Unresolved as exc:
                    self._finish(progress, JobStatus.UNKNOWN, error=exc.record)
                    return
                except (JobFailed, ApiError, TimeoutError):
                    return  # the worker will look again when it takes the job
                if remote is None:
                    progress.state = JobState.PENDING  # no job came of it: submit afresh
                self.records[key] = progress.record()

        first: dict[str, int] = {}  # one settlement per key, even when a song is listed twice
        for index, key in enumerate(self.keys):
            record = self.records.get(key)
            if (
                record is not None
                and record.state in (JobState.SUBMITTING, JobState.UNKNOWN)
                and record.intent_at is not None
            ):
                first.setdefault(key, index)
        if first:
            async with anyio.create_task_group() as tg:
                for index in first.values():
                    tg.start_soon(settle, index)

    def halt(self, stop: Stop, *, cancel_in_flight: bool, replace: bool = False) -> None:
        """Take no new jobs; with ``cancel_in_flight``, abandon the ones in flight too.

        The first stop's reason is kept, unless ``replace`` (a signal outranks a budget stop:
        the exit code must say the run was interrupted).
        """
        if self.stop is None or replace:
            self.stop = stop
            log.info(
                "stopping: %s",
                stop.message,
                extra=event("stop", reason=stop.reason.value, message=stop.message),
            )
        if cancel_in_flight and self._cancel is not None:
            self._cancel.cancel()

    def results(self) -> list[JobResult]:
        """Every job's result so far, in manifest order (unfinished ones as they stand)."""
        return [self._result(i) for i in range(len(self.jobs))]

    async def _feed(self, send: ObjectSendStream[int]) -> None:
        async with send:
            for index in range(len(self.jobs)):
                if self.stop is not None:
                    return
                await send.send(index)

    async def _worker(self, receive: ObjectReceiveStream[int]) -> None:
        async with receive:
            async for index in receive:
                if self.stop is not None:
                    continue  # leave it skipped; drain so the feeder is never stuck
                if self._progress[index].done:
                    self.reporter.job_finished(self._result(index))
                    continue  # settled before the run began (an unresolvable unknown)
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                try:
                    await self._process(index)
                finally:
                    self.in_flight -= 1
                    progress = self._progress[index]
                    if progress.done:
                        self.reporter.job_finished(self._result(index))

    # -- one job ----------------------------------------------------------------------------

    async def _process(self, index: int) -> None:
        job, progress = self.jobs[index], self._progress[index]
        key = self.keys[index]
        first = self._first_of_key.setdefault(key, index)
        if first != index:
            # The same song, mode and stem again (e.g. one file under two names): one job.
            progress.reason = f"same song, mode and stem as {self.jobs[first].name!r}"
            progress.duplicate_of = self.jobs[first].name
            self._finish(progress, JobStatus.SKIPPED)
            return
        prior = self.records.get(key)
        state = prior.state if prior is not None else JobState.PENDING
        if prior is not None:
            progress.restore(prior)
        try:
            with self._outcome(progress):
                await self._carry(job, progress, index, prior, state)
        finally:
            self._leave_window(progress)

    async def _carry(
        self,
        job: Job,
        progress: _Progress,
        index: int,
        prior: JobRecord | None,
        state: JobState,
    ) -> None:
        """One job from its state to its end at AudioPod; then its stems (see ``_follow``)."""
        if state is JobState.DOWNLOADED and self._intact(prior):
            self.reporter.job_event(job, "already done")
            self._finish(progress, JobStatus.SUCCEEDED)
            return
        if state is JobState.FAILED and not self.options.retry_failed:
            progress.reason = "failed in an earlier run (--retry-failed submits it again)"
            self._finish(progress, JobStatus.FAILED, error=progress.error)
            return
        await self._enter_window(progress)
        remote: RemoteJob | None = None
        if state in (JobState.SUBMITTED, JobState.COMPLETED, JobState.DOWNLOADED):
            assert progress.remote_id is not None
            self.worked += 1
            self.reporter.job_event(job, "resuming", f"id {progress.remote_id}")
            status = RemoteStatus.PROCESSING
            if state is not JobState.SUBMITTED:
                status = RemoteStatus.COMPLETED  # fetch fresh links below
            remote = RemoteJob(id=progress.remote_id, status=status)
        elif state in (JobState.SUBMITTING, JobState.UNKNOWN):
            assert prior is not None and prior.intent_at is not None
            self.worked += 1
            progress.sent_this_run = True  # its reconciliation counts as its work
            async with self._source_lock(job):
                remote = await self._reconcile(job, progress, prior.intent_at)
        if remote is None:
            remote = await self._reserve_and_submit(job, progress, index)
            if remote is None:
                return
        # The job's time runs from its submit (or its resumption) to its last stem.
        progress.deadline = anyio.current_time() + self.options.job_timeout_s
        with anyio.fail_after(self.options.job_timeout_s):
            await self._follow(job, progress, remote, index)

    @contextlib.contextmanager
    def _outcome(self, progress: _Progress) -> Iterator[None]:
        """How a job's end, failure or time-out becomes its result (never the run's end,
        but for a refused key or a state file that cannot be written)."""
        try:
            yield
        except TimeoutError:
            # The job may still complete and be charged: keep its reservation held, and keep
            # its state as it is, so that a later run picks the AudioPod job up again.
            limit = _duration(self.options.job_timeout_s)
            if progress.state is JobState.COMPLETED:
                message = (
                    f"its stems were not all downloaded within {limit} of its submit; AudioPod "
                    f"job {progress.remote_id} is done: a re-run downloads them"
                )
                record = ErrorRecord(type="JobTimeout", message=message)
                self._finish(progress, JobStatus.EXPIRED, error=record)
            elif progress.remote_id is not None:
                message = (
                    f"not finished after {limit}; AudioPod job {progress.remote_id} may still "
                    "finish: a re-run picks it up without submitting again"
                )
                record = ErrorRecord(type="JobTimeout", message=message)
                self._finish(progress, JobStatus.EXPIRED, error=record)
            else:  # waiting for a job that may be its own (see _reconcile): still unsettled
                message = (
                    f"AudioPod jobs that may be this submit's did not finish within {limit}; "
                    "a re-run looks again"
                )
                record = ErrorRecord(type="JobTimeout", message=message)
                self._finish(progress, JobStatus.UNKNOWN, error=record)
        except AuthenticationError as exc:
            self.halt(Stop(reason=StopReason.AUTH, message=str(exc)), cancel_in_flight=True)
        except _Unresolved as exc:
            self._finish(progress, JobStatus.UNKNOWN, error=exc.record)
        except JobFailed as exc:
            self._finish(progress, JobStatus.FAILED, error=exc.record)
        except StateError:
            raise  # the state file cannot be written: a run-level condition
        except BatchpodError as exc:
            # Any other condition we know of is this job's failure, never the run's.
            self._finish(progress, JobStatus.FAILED, error=_record(exc))

    async def _enter_window(self, progress: _Progress) -> None:
        """Wait for a place among the jobs in flight at AudioPod (see ``flow.SubmitWindow``)."""
        await self.window.acquire()
        progress.in_window = True

    def _leave_window(self, progress: _Progress) -> None:
        if progress.in_window:
            progress.in_window = False
            self.window.release()

    def _retried(self, progress: _Progress | None, exc: BaseException) -> None:
        """Count a retry, for the job and the run."""
        cause = retry_cause(exc)
        self.retry_counts[cause] += 1
        name = None
        if progress is not None:
            progress.retries[cause] += 1
            name = progress.name
        log.info("retry (%s)", cause, extra=event("retry", job=name, cause=cause))

    def _failed_once(self, exc: BaseException) -> None:
        """Any request failed, retried or not: a 429 shrinks the submit window."""
        if isinstance(exc, RateLimited):
            self.window.throttled()

    def _board_retry(self, exc: ApiError) -> None:
        self._failed_once(exc)
        self._retried(None, exc)

    async def _reserve_and_submit(
        self, job: Job, progress: _Progress, index: int
    ) -> RemoteJob | None:
        progress.estimate_cents = self._estimate_cents(job)
        if self.options.wallet_before_reserve and self.budget.balance_cents is not None:
            await self._read_balance()  # other shards spend from this wallet too
        refused = self.budget.reserve(index, progress.estimate_cents)
        if refused is not None:
            progress.reason = StopReason.BUDGET.value  # the run's 'stopped' line says which cap
            self.halt(Stop(reason=StopReason.BUDGET, message=str(refused)), cancel_in_flight=False)
            return None
        try:
            return await self._submit(job, progress)
        except _Stopped:
            self.budget.release(index)
            if progress.state is JobState.SUBMITTING:  # saved, then stopped before sending
                await self._save(progress, JobState.PENDING)
            return None
        except InsufficientBalance as exc:
            self.budget.release(index)
            progress.reason = StopReason.BALANCE.value
            progress.error = _record(exc)  # with the required and available amounts
            await self._save(progress, JobState.PENDING)  # 402: nothing was created
            self.halt(Stop(reason=StopReason.BALANCE, message=str(exc)), cancel_in_flight=False)
            return None
        except AuthenticationError as exc:
            self.budget.release(index)
            progress.reason = StopReason.AUTH.value
            await self._save(progress, JobState.PENDING)
            self.halt(Stop(reason=StopReason.AUTH, message=str(exc)), cancel_in_flight=True)
            return None
        except JobFailed as exc:
            unsettled = progress.state in (JobState.SUBMITTING, JobState.UNKNOWN)
            if not exc.maybe_charged and not unsettled:
                self.budget.release(index)
            raise  # a job may exist and be charged: its hold stays, so no cap is passed

    async def _submit(self, job: Job, progress: _Progress) -> RemoteJob:
        """Submit; never send again unless AudioPod surely has no job from an earlier send.

        The intent is committed before each send. A send that surely never arrived (refused
        connection, 429) is retried under the retry policy; one whose outcome is unknown is
        reconciled against the job list, and sent again only if no job came of it.
        """
        started = anyio.current_time()
        while True:
            # One submit (and its reconciliation) per song name at a time, intent included: a
            # job this run creates for a like-named song must not look like an unknown
            # submit's job.
            async with self._source_lock(job):
                if self.stop is not None:
                    raise _Stopped  # a stop came while this job waited or backed off
                if not progress.sent_this_run:
                    progress.sent_this_run = True
                    self.worked += 1
                progress.attempts += 1
                progress.intent_at = self.clock()
                await self._save(progress, JobState.SUBMITTING)
                if progress.attempts == 1:
                    self.reporter.job_event(job, "submitting")
                else:
                    attempt = f"attempt {progress.attempts}"
                    self.reporter.job_event(job, "submitting again", attempt)
                try:
                    remote = await self._send(job)
                except (AuthenticationError, InsufficientBalance):
                    raise
                except ApiError as exc:
                    failure = exc
                    if outcome_unknown(exc):
                        await self._save(progress, JobState.UNKNOWN)
                        self.reporter.job_event(job, "submit outcome unknown", str(exc))
                        adopted = await self._reconcile(job, progress, progress.intent_at)
                        if adopted is not None:
                            return adopted
                else:
                    self.window.accepted()
                    await self._submitted(job, progress, remote.id)
                    return remote
            if outcome_unknown(failure):
                # No job came of it: sending again cannot pay twice (after a pause, as for
                # any 5xx: the service is struggling).
                if await self._backoff(progress, progress.attempts, started, failure):
                    continue
                raise JobFailed(_record(failure, ambiguous=True), maybe_charged=True)
            # Refused before any work: no connection, 429, or 408 (the server gave up
            # receiving the request).
            unsent = isinstance(failure, TransportError) or failure.http_status in (408, 429)
            if unsent and await self._backoff(progress, progress.attempts, started, failure):
                continue
            progress.error = _record(failure)
            # A refusal stays refused on a re-run; a send that never arrived may try again.
            await self._save(progress, JobState.PENDING if unsent else JobState.FAILED)
            raise JobFailed(progress.error) from failure

    async def _send(self, job: Job) -> RemoteJob:
        mode, stem = job.mode.value, job.stem.value if job.stem else None
        if job.source.url is not None:
            return await self.api.submit_url(job.source.url, mode=mode, stem=stem)
        assert job.source.file is not None
        return await self.api.submit_file(job.source.file, mode=mode, stem=stem)

    @contextlib.asynccontextmanager
    async def _source_lock(self, job: Job) -> AsyncIterator[None]:
        """Hold the lock of the job's source, keyed by what reconciliation can tell apart: the
        song's name (see reconcile). A lock lives only while it is held or awaited: one per
        job would grow with the manifest."""
        identity = reconcile.identity(job)
        entry = self._source_locks.get(identity)
        if entry is None:
            entry = self._source_locks[identity] = _SourceLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._source_locks[identity]

    async def _submitted(self, job: Job, progress: _Progress, remote_id: str) -> None:
        self.budget.submitted(progress.index)
        progress.remote_id = remote_id
        progress.submitted_at = self.clock()
        self.claimed.add(remote_id)
        await self._save(progress, JobState.SUBMITTED)
        self.changes += 1
        self.reporter.job_event(job, "submitted", f"id {remote_id}")

    async def _reconcile(self, job: Job, progress: _Progress, intent_at: float) -> RemoteJob | None:
        """The remote job an unknown submit created, None if it surely created none.

        The caller holds the job's source lock. Candidates still running are waited for, so
        that their stems can be checked against the mode (see reconcile).
        """
        result = None
        for attempt in range(RECONCILE_LOOKS):
            if attempt:
                await anyio.sleep(self.options.poll.first_s * 2)  # a new job may list late
            result = await self._retrying(
                functools.partial(
                    reconcile.search, self.api, job, intent_at=intent_at, claimed=self.claimed
                ),
                progress,
            )
            if result.candidates or result.doubtful:
                break
        assert result is not None
        finished = [await self._until_ended(c, progress) for c in result.candidates]
        fitting = [c for c in finished if reconcile.matches(job, c)]
        if len(fitting) > 1 or result.doubtful:
            ids = ", ".join(c.id for c in fitting) or "some jobs that cannot be told apart"
            await self._save(progress, JobState.UNKNOWN)
            raise _Unresolved(
                ErrorRecord(
                    type="AmbiguousSubmit",
                    message=(
                        f"the submit's outcome is unknown and AudioPod jobs {ids} may be "
                        "its job; batchpod will not guess: check them (delete the extra "
                        "ones), then re-run"
                    ),
                )
            )
        if not fitting:
            self.reporter.job_event(job, "no job came of the earlier submit")
            return None
        adopted = fitting[0]
        self.reporter.job_event(job, "found its job", f"id {adopted.id}")
        await self._submitted(job, progress, adopted.id)
        return adopted

    async def _settle(
        self, index: int, progress: _Progress, remote_id: str, *, gap_s: float
    ) -> None:
        charged = await self._charge_of(remote_id, gap_s=gap_s)
        if charged is not None:
            progress.cost_cents = charged
        self.budget.settle(index, charged if charged is not None else progress.estimate_cents)
        self.reporter.spent(self.budget.spent_cents)

    async def _charge_of(self, remote_id: str, *, gap_s: float) -> int | None:
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
                    pages = len(self._charges_wanted) // 100 + 1
                    try:
                        for page in range(1, pages + 1):
                            rows = await self.api.usage(page=page, limit=100)
                            for row in rows:
                                if row.job_id is not None:
                                    self._charges.setdefault(row.job_id, row.amount_cents)
                            if len(rows) < 100:
                                break
                    except ApiError:
                        return None  # bookkeeping only: the estimate stands
        finally:
            self._charges_wanted.discard(remote_id)
        return self._charges.get(remote_id)

    async def _until_ended(self, row: RemoteJob, progress: _Progress) -> RemoteJob:
        """The candidate once it has completed or failed (polled on the usual schedule)."""
        since = anyio.current_time()
        with anyio.fail_after(self.options.job_timeout_s):
            while not row.status.terminal:
                age = anyio.current_time() - since
                await anyio.sleep(self.options.poll.interval_s(age, rng=self.rng))
                row = await self._retrying(functools.partial(self.api.status, row.id), progress)
        return row

    async def _follow(self, job: Job, progress: _Progress, remote: RemoteJob, index: int) -> None:
        """Wait until the job ends, then download its stems."""
        if not remote.status.terminal:
            try:
                remote = await self.board.wait(remote.id)
            except AuthenticationError:
                raise
            except ApiError as exc:
                raise JobFailed(_record(exc)) from exc
        self._leave_window(progress)  # it no longer costs AudioPod requests but for its links
        # List rows may leave the download links out: then the status endpoint has them.
        if (
            remote.status is RemoteStatus.COMPLETED
            and self.options.download
            and not remote.download_urls
        ):
            remote = await self._retrying(functools.partial(self.api.status, remote.id), progress)
        if progress.completed_at is None:
            progress.completed_at = self.clock()
        if remote.status is RemoteStatus.FAILED:
            self.budget.release(index)  # AudioPod refunds failed jobs
            message = remote.error_message or "AudioPod reported the job as failed"
            progress.error = ErrorRecord(type="RemoteJobFailed", message=message)
            await self._save(progress, JobState.FAILED)
            raise JobFailed(progress.error)
        if progress.estimate_cents:
            # Settled with AudioPod's real charge once its usage log shows it, so that the
            # caps hold against what was charged, not what was guessed. Under a cap, before
            # this worker takes another job (a song longer than its manifest duration must
            # not let the next one past the cap); without one, in the background, in reads
            # shared by the jobs completing within a second.
            if self.budget.capped:
                await self._settle(index, progress, remote.id, gap_s=0.0)
            else:
                assert self._background is not None
                self._background.start_soon(
                    functools.partial(
                        self._settle, index, progress, remote.id, gap_s=USAGE_READ_GAP_S
                    )
                )
        if remote.quality_scores:
            progress.quality_scores = dict(remote.quality_scores)
        progress.download_urls = dict(remote.download_urls)
        if progress.state is not JobState.DOWNLOADED:
            await self._save(progress, JobState.COMPLETED)
        self.reporter.job_event(job, "separated", f"{len(remote.download_urls)} stems")
        if not self.options.download:
            self._finish(progress, JobStatus.COMPLETED)
            return
        if not remote.download_urls:
            raise JobFailed(
                ErrorRecord(type="InvalidResponse", message="completed without download URLs")
            )
        if self._stems is None:
            await self._fetch_stems(job, progress, remote)
            return
        # The stems are fetched by a task of their own, so that this worker can submit its
        # next job at once: downloads overlap AudioPod's processing instead of adding to it.
        await self._handoffs.acquire_on_behalf_of(index)
        self._stems.start_soon(self._stems_of, index, remote)

    async def _stems_of(self, index: int, remote: RemoteJob) -> None:
        """Fetch a completed job's stems and end the job (the worker has moved on)."""
        job, progress = self.jobs[index], self._progress[index]
        try:
            with self._outcome(progress):
                left = progress.deadline - anyio.current_time()
                with anyio.fail_after(max(left, 0.0)):
                    await self._fetch_stems(job, progress, remote)
        finally:
            self._handoffs.release_on_behalf_of(index)
            if progress.done:
                self.reporter.job_finished(self._result(index))

    async def _fetch_stems(self, job: Job, progress: _Progress, remote: RemoteJob) -> None:
        """Download every stem not already on disk, then record the job as done."""
        folder = self.output_dir / job.name
        try:
            await anyio.to_thread.run_sync(_prepare_folder, folder)
        except OSError as exc:
            message = f"cannot create {folder}: {exc.strerror or exc}"
            raise JobFailed(ErrorRecord(type="OutputError", message=message)) from exc
        have = {f.stem: f for f in progress.files if _intact_file(f)}
        progress.files = list(have.values())
        names = _file_names(remote.download_urls)
        for stem in sorted(remote.download_urls):
            if stem not in have:
                dest = folder / names[stem]
                remote = await self._download(job, progress, remote, stem, dest)
        progress.files.sort(key=lambda f: f.stem)
        await self._save(progress, JobState.DOWNLOADED)
        self._finish(progress, JobStatus.SUCCEEDED)

    async def _download(
        self, job: Job, progress: _Progress, remote: RemoteJob, stem: str, dest: Path
    ) -> RemoteJob:
        """Download one stem; when its link has expired, fetch fresh links (a few times) and
        go on with them. Returns the job as last read, so later stems use the fresh links."""
        refreshes = 0
        # Fresh links are fetched while holding the download slot, so that they are used at
        # once instead of ageing in the queue of downloads again.
        async with self._downloads:
            while True:
                url = remote.download_urls.get(stem)
                if url is None:
                    message = f"AudioPod no longer lists a download link for stem {stem!r}"
                    raise JobFailed(ErrorRecord(type="DownloadLinkExpired", message=message))
                try:
                    fetch = functools.partial(
                        self.api.download, url, dest, max_bytes=self.options.max_stem_bytes
                    )
                    size = await self._retrying(fetch, progress)
                except DownloadLinkExpired as exc:
                    if refreshes >= self.options.link_refreshes:
                        raise JobFailed(_record(exc)) from exc
                    refreshes += 1
                    self._retried(progress, exc)
                    status = functools.partial(self.api.status, remote.id)
                    remote = await self._retrying(status, progress)
                    continue
                except DownloadError as exc:
                    raise JobFailed(_record(exc)) from exc
                progress.files.append(OutputFile(stem=stem, path=dest, size=size))
                return remote

    async def _retrying(
        self, operation: Callable[[], Awaitable[T]], progress: _Progress | None = None
    ) -> T:
        """Run an idempotent request, retrying transient failures under the retry policy; a
        failure that outlasts it fails the job."""
        try:
            return await with_retries(
                operation,
                policy=self.options.retry,
                rng=self.rng,
                on_retry=functools.partial(self._retried, progress),
                on_error=self._failed_once,
            )
        except (AuthenticationError, DownloadLinkExpired):
            raise
        except ApiError as exc:
            raise JobFailed(_record(exc)) from exc

    async def _backoff(
        self, progress: _Progress | None, attempts: int, started: float, exc: ApiError
    ) -> bool:
        """Sleep before the next attempt if the policy allows one; say whether it does."""
        self._failed_once(exc)
        return await pause_before_retry(
            exc,
            attempts=attempts,
            started=started,
            policy=self.options.retry,
            rng=self.rng,
            on_retry=functools.partial(self._retried, progress),
        )

    # -- bookkeeping ------------------------------------------------------------------------

    def _estimate_cents(self, job: Job) -> int:
        return estimate_cents(
            job,
            cents_per_minute=self.options.cents_per_minute,
            assumed_duration_s=self.options.assumed_duration_s,
        )

    async def _save(self, progress: _Progress, state: JobState) -> None:
        """Move the job to ``state`` and make that durable before going on."""
        progress.state = state
        await self.journal.put(progress.record())

    def _intact(self, record: JobRecord | None) -> bool:
        return record is not None and bool(record.files) and all(map(_intact_file, record.files))

    def _finish(
        self, progress: _Progress, status: JobStatus, *, error: ErrorRecord | None = None
    ) -> None:
        progress.status = status
        progress.error = error
        progress.done = True
        self.changes += 1

    def _result(self, index: int) -> JobResult:
        job, p = self.jobs[index], self._progress[index]
        status = p.status
        reason = p.reason
        if not p.done:
            if p.remote_id is not None or p.state in (JobState.SUBMITTING, JobState.UNKNOWN):
                # Submitted, or perhaps submitted: the state file lets a re-run find it.
                status = JobStatus.INTERRUPTED
            else:
                status = JobStatus.SKIPPED
                if reason is None and self.stop is not None:
                    reason = self.stop.reason.value
        return JobResult(
            job=job,
            status=status,
            remote_id=p.remote_id,
            submitted_at=p.submitted_at,
            completed_at=p.completed_at,
            attempts=p.attempts,
            cost_cents=p.cost_cents,
            estimated_cents=p.estimate_cents or None,
            files=tuple(p.files),
            quality_scores=dict(p.quality_scores),
            download_urls=dict(p.download_urls) if not self.options.download else {},
            error=p.error,
            reason=reason,
            duplicate_of=p.duplicate_of,
            retries=dict(p.retries),
        )


def _duration(seconds: float) -> str:
    """``7200`` -> ``2 h``, ``90`` -> ``90 s``: a time limit as people write it."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _record(exc: BatchpodError, *, ambiguous: bool = False) -> ErrorRecord:
    message = str(exc)
    if ambiguous:
        message += (
            " (the submit may have reached AudioPod; it was not repeated, so as not to pay "
            "twice: check the job list before re-running)"
        )
    return ErrorRecord(
        type=type(exc).__name__, message=message, http_status=getattr(exc, "http_status", None)
    )


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _safe_stem(stem: str) -> str:
    """A stem name from the server as a file name: no separators, no dots in front."""
    return _UNSAFE.sub("_", stem).lstrip(".")[:64] or "stem"


def _file_names(download_urls: Mapping[str, str]) -> dict[str, str]:
    """Each stem's file name in the job's folder: safe, and unique even where case is not
    told apart (``Vocals`` and ``vocals``, or ``a/b`` and ``a_b``, get ``-2`` and so on)."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for stem in sorted(download_urls):
        base, suffix = _safe_stem(stem), _suffix(download_urls[stem])
        name, n = f"{base}{suffix}", 1
        while name.lower() in taken:
            n += 1
            name = f"{base}-{n}{suffix}"
        taken.add(name.lower())
        names[stem] = name
    return names


def _suffix(url: str) -> str:
    suffix = Path(urlsplit(url).path).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".wav"


def _intact_file(file: OutputFile) -> bool:
    """Whether a downloaded stem is still there with the size it was written with."""
    try:
        return file.path.stat().st_size == file.size
    except OSError:
        return False


def _prepare_folder(folder: Path) -> None:
    """Create a job's folder, and clear temporary files a killed run left in it.

    A symbolic link in its place is refused: stems go inside ``output_dir``, never through a
    link someone planted there to somewhere else.
    """
    if folder.is_symlink():
        raise OSError(
            errno.ELOOP,
            "it is a symbolic link; batchpod does not write through links in the output folder",
        )
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.part-*"):
        stale.unlink(missing_ok=True)
