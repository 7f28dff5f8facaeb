"""The pool's scheduling: a feeder, ``concurrency`` workers, the halt, and every job's result.

A feeder hands job indexes to a fixed set of workers through an unbuffered stream, so at most
``concurrency`` jobs are in flight and no task exists for a job before a worker takes it. Each
worker carries one job from its state to its end at AudioPod, then hands the stems to a task
of their own and takes its next job. How each step ends becomes the job's result here
(``_outcome``), and only here does the run halt: for a ``Halt`` a step raised, a key AudioPod
refuses, or a signal (``halt``, called by the session).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from batchpod.budget import BudgetGuard
from batchpod.client import RemoteJob, RemoteStatus
from batchpod.config import RunConfig, as_duration
from batchpod.errors import (
    AuthenticationError,
    BatchpodError,
    DatabaseUnavailable,
    LeaseLost,
    StateError,
)
from batchpod.flow import SubmitWindow
from batchpod.journal import JobRecord, JobState
from batchpod.logs import event
from batchpod.models import ErrorRecord, Job, JobResult, JobStatus
from batchpod.poller import StatusBoard
from batchpod.spool import Spool

from ._crew import Crew
from ._follow import Follower
from ._live import LiveJob
from ._outcomes import Halt, JobFailed, Stop, StopReason, Unresolved, error_record
from ._ports import Fleet, JournalSink, NoJournal, Reporter, StemApi
from ._resume import inherited_spend, settle_earlier_unknowns, starting_point
from ._stems import Stems
from ._submit import Submitter
from ._wallet import Wallet

log = logging.getLogger("batchpod")

#: How long a worker of a fleet waits before looking for free jobs again, when it has none.
FLEET_IDLE_S = 0.5


class Pool:
    """One run of the worker pool over a list of jobs."""

    def __init__(
        self,
        api: StemApi,
        jobs: Sequence[Job],
        config: RunConfig,
        *,
        budget: BudgetGuard,
        reporter: Reporter,
        content_keys: Sequence[str] | None = None,
        records: Mapping[str, JobRecord] | None = None,
        journal: JournalSink | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        fleet: Fleet | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.records = dict(records or {})
        self.fleet = fleet
        claimed = {r.remote_id for r in self.records.values() if r.remote_id is not None}
        self.crew = crew = Crew(
            api,
            jobs,
            config,
            budget=budget,
            reporter=reporter,
            journal=journal or NoJournal(),
            claimed=claimed,
            content_addressed=content_keys is not None,
            rng=rng or random.Random(),
            clock=clock,
            fleet=fleet,
            spool=spool,
        )
        self.jobs = crew.jobs
        # Without a state file (tests, embedding), each job is its own key.
        self.content_keys = (
            tuple(content_keys) if content_keys is not None else tuple(map(str, range(len(jobs))))
        )
        self.live = [
            LiveJob(marks=crew.marks, index=index, key=key, name=job.name)
            for index, (key, job) in enumerate(zip(self.content_keys, self.jobs, strict=True))
        ]
        self.wallet = Wallet(crew)
        self.submitter = Submitter(crew, self.wallet)
        self.follower = Follower(crew, self.wallet, Stems(crew), outcome=self._outcome)
        self.in_flight = 0
        self.peak_in_flight = 0
        self._first_of_key: dict[str, int] = {}
        self._cancel: anyio.CancelScope | None = None
        # With a fleet: each key's first listing (what a claim names), and what this worker
        # claimed (its results list only those).
        self._index_of: dict[str, int] = {}
        if fleet is not None:
            for index, key in enumerate(self.content_keys):
                self._index_of.setdefault(key, index)
        self._claimed: set[int] = set()
        self._room = anyio.Event()  # set when a worker of this pool comes free
        self._marked_stop: Stop | None = None  # the stop take_marks last saw

    # What the session and the tests read of the run.
    @property
    def stop(self) -> Stop | None:
        return self.crew.stop

    @property
    def changes(self) -> int:
        return self.crew.changes

    @property
    def worked(self) -> int:
        return self.crew.worked

    @property
    def retry_counts(self) -> Counter[str]:
        return self.crew.retry_counts

    @property
    def written(self) -> tuple[int, int]:
        """The stems this run stored, and their bytes."""
        return self.crew.stems_written, self.crew.bytes_written

    @property
    def window(self) -> SubmitWindow:
        return self.crew.window

    @property
    def board(self) -> StatusBoard:
        return self.crew.board

    async def run(self) -> list[JobResult]:
        """Run every job (or until a stop); return one result per job, in manifest order."""
        crew = self.crew
        send, receive = anyio.create_memory_object_stream[int](0)
        try:
            await self._run_all(send, receive)
        finally:
            send.close()  # also when the run failed before its workers took them
            receive.close()
            crew.shelf.close()  # a bucket's staging folder
        return self.results()

    async def _run_all(
        self,
        send: MemoryObjectSendStream[int],
        receive: MemoryObjectReceiveStream[int],
    ) -> None:
        crew = self.crew
        with anyio.CancelScope() as scope:
            self._cancel = scope
            if self.fleet is None:
                # With a fleet, its reservations carry what earlier runs left in flight, and
                # a claimed unknown is settled under the fleet-wide lock on its song name.
                crew.budget.spent_cents += inherited_spend(crew, self.content_keys, self.records)
                await settle_earlier_unknowns(crew, self.submitter, self.live, self.records)
            await anyio.to_thread.run_sync(crew.done.load)  # finished jobs in the output
            async with anyio.create_task_group() as background:
                self.follower.background = background
                background.start_soon(crew.board.run)
                if crew.config.balance_refresh_s and crew.budget.balance_cents is not None:
                    background.start_soon(self._watch_wallet)
                async with anyio.create_task_group() as stems:
                    self.follower.stem_tasks = stems
                    async with anyio.create_task_group() as tg:
                        for _ in range(min(crew.concurrency, len(self.jobs))):
                            tg.start_soon(self._worker, receive.clone())
                        receive.close()
                        if self.fleet is None:
                            await self._feed(send)
                        else:
                            await self._claim(send, self.fleet)
                background.cancel_scope.cancel()  # every job has ended: nothing left to watch

    def halt(self, stop: Stop, *, cancel_in_flight: bool, replace: bool = False) -> None:
        """Take no new jobs; with ``cancel_in_flight``, abandon the ones in flight too.

        The first stop's reason is kept, unless ``replace`` (a signal outranks a budget stop:
        the exit code must say the run was interrupted).
        """
        if self.crew.stop is None or replace:
            self.crew.stop = stop
            log.info(
                "stopping: %s",
                stop.message,
                extra=event("stop", reason=stop.reason.value, message=stop.message),
            )
        if cancel_in_flight and self._cancel is not None:
            self._cancel.cancel()

    def results(self) -> list[JobResult]:
        """Every job's result so far, in manifest order (unfinished ones as they stand);
        with a fleet, those of the jobs this worker claimed."""
        return [self.crew.result_of(self.live[index]) for index in self.worked_indexes()]

    def result(self, index: int) -> JobResult:
        """Job ``index``'s result as it stands."""
        return self.crew.result_of(self.live[index])

    def take_marks(self) -> set[int]:
        """The jobs whose result changed since the last call (at first: all of them). A
        stop changes the result of every job not finished (skipped, and why)."""
        crew = self.crew
        marks = set(crew.marks)
        crew.marks.clear()
        if crew.stop is not self._marked_stop:
            self._marked_stop = crew.stop
            marks.update(live.index for live in self.live if not live.done)
        return marks

    def set_cost(self, index: int, cents: int) -> None:
        """Job ``index``'s charge, as read from AudioPod's usage log at the end."""
        self.live[index].cost_cents = cents

    def worked_indexes(self) -> list[int]:
        """The indexes of the jobs ``results`` lists."""
        if self.fleet is None:
            return list(range(len(self.live)))
        return sorted(self._claimed)

    async def _watch_wallet(self) -> None:
        try:
            await self.wallet.keep_reading()
        except AuthenticationError as exc:
            self.halt(Stop(reason=StopReason.AUTH, message=str(exc)), cancel_in_flight=True)

    async def _feed(self, send: ObjectSendStream[int]) -> None:
        async with send:
            for index in range(len(self.jobs)):
                if self.crew.stop is not None:
                    return
                await send.send(index)

    async def _claim(self, send: ObjectSendStream[int], fleet: Fleet) -> None:
        """Claim jobs from the fleet as workers take them, as many at a time as there are
        workers free, until none is left that this worker could take: none free, none held
        by a worker gone quiet. Claimed jobs not yet started are the worker's until it
        leaves (then anyone's)."""
        crew = self.crew
        claimed: deque[JobRecord] = deque()
        async with send:
            while True:
                if crew.stop is not None:
                    if crew.stop.reason in (StopReason.BUDGET, StopReason.BALANCE):
                        with anyio.CancelScope(shield=True):
                            await fleet.halt(crew.stop.reason.value, crew.stop.message)
                    return
                if not claimed:
                    # Claim only what there is room for: a job claimed is nobody else's.
                    while self.in_flight >= crew.concurrency:
                        self._room = anyio.Event()
                        await self._room.wait()
                    records, stopped = await fleet.claim(crew.concurrency - self.in_flight)
                    if stopped is not None:
                        reason, message = stopped
                        stop = Stop(reason=StopReason(reason), message=message)
                        self.halt(stop, cancel_in_flight=False)
                        return
                    if not records:
                        if self.in_flight or await fleet.waiting():
                            await anyio.sleep(FLEET_IDLE_S)  # a worker may die and leave jobs
                            continue
                        return
                    claimed.extend(records)
                record = claimed.popleft()
                index = self._index_of.get(record.key)
                if index is None:
                    continue  # not in this worker's manifest (it changed): left to others
                self._claimed.add(index)
                self.records[record.key] = record
                await send.send(index)

    async def _worker(self, receive: ObjectReceiveStream[int]) -> None:
        async with receive:
            async for index in receive:
                if self.crew.stop is not None:
                    continue  # leave it skipped; drain so the feeder is never stuck
                if self.live[index].done:
                    self.crew.reporter.job_finished(self.crew.result_of(self.live[index]))
                    continue  # settled before the run began (an unresolvable unknown)
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                try:
                    await self._process(index)
                finally:
                    self.in_flight -= 1
                    self._room.set()
                    live = self.live[index]
                    if live.done:
                        result = self.crew.result_of(live)
                        if self.fleet is not None:
                            with anyio.CancelScope(shield=True):
                                await self.fleet.settle(
                                    live.key,
                                    status=result.status.value,
                                    reason=result.reason,
                                    estimated_cents=result.estimated_cents,
                                )
                        self.crew.reporter.job_finished(result)

    async def _process(self, index: int) -> None:
        job, live = self.jobs[index], self.live[index]
        first = self._first_of_key.setdefault(live.key, index)
        if first != index:
            # The same song, mode and stem again (e.g. one file under two names): one job.
            live.reason = f"same song, mode and stem as {self.jobs[first].name!r}"
            live.duplicate_of = self.jobs[first].name
            self.crew.finish(live, JobStatus.SKIPPED)
            return
        prior = self.records.get(live.key)
        if prior is not None:
            live.restore(prior)
        try:
            with self._outcome(live):
                await self._carry(job, live, prior)
        finally:
            self.crew.leave_window(live)

    async def _carry(self, job: Job, live: LiveJob, prior: JobRecord | None) -> None:
        """One job from its state to its submit; then its end and stems (``Follower``)."""
        crew = self.crew
        state = await starting_point(crew, job, live, prior)
        if state is None:
            return  # what earlier runs left ends it
        await crew.enter_window(live)
        remote: RemoteJob | None = None
        if state in (JobState.SUBMITTED, JobState.COMPLETED, JobState.DOWNLOADED):
            assert live.remote_id is not None
            crew.worked += 1
            crew.reporter.job_event(job, "resuming", f"id {live.remote_id}")
            status = RemoteStatus.PROCESSING
            if state is not JobState.SUBMITTED:
                status = RemoteStatus.COMPLETED  # fetch fresh links below
            remote = RemoteJob(id=live.remote_id, status=status)
        elif state.unsettled:
            assert prior is not None and prior.intent_at is not None
            crew.worked += 1
            live.sent_this_run = True  # its reconciliation counts as its work
            async with self.submitter.locks.hold(job):
                remote = await self.submitter.reconcile(job, live, prior.intent_at)
        if remote is None:
            remote = await self.submitter.submit_new(job, live)
            if remote is None:
                return  # the run stopped before it was sent
        # The job's time runs from its submit (or its resumption) to its last stem.
        timeout = crew.config.job_timeout_s
        live.deadline = anyio.current_time() + timeout
        with anyio.fail_after(timeout):
            await self.follower.follow(job, live, remote)

    @contextlib.contextmanager
    def _outcome(self, live: LiveJob) -> Iterator[None]:
        """How a job's end, failure or time-out becomes its result (never the run's end,
        but for a stop, a refused key or a state file that cannot be written)."""
        crew = self.crew
        try:
            yield
        except TimeoutError:
            # The job may still complete and be charged: keep its reservation held, and keep
            # its state as it is, so that a later run picks the AudioPod job up again.
            limit = as_duration(crew.config.job_timeout_s)
            if live.state is JobState.COMPLETED:
                message = (
                    f"its stems were not all downloaded within {limit} of its submit; AudioPod "
                    f"job {live.remote_id} is done: a re-run downloads them"
                )
                status = JobStatus.EXPIRED
            elif live.remote_id is not None:
                message = (
                    f"not finished after {limit}; AudioPod job {live.remote_id} may still "
                    "finish: a re-run picks it up without submitting again"
                )
                status = JobStatus.EXPIRED
            else:  # waiting for a job that may be its own (see reconcile): still unsettled
                message = (
                    f"AudioPod jobs that may be this submit's did not finish within {limit}; "
                    "a re-run looks again"
                )
                status = JobStatus.UNKNOWN
            crew.finish(live, status, error=ErrorRecord(type="JobTimeout", message=message))
        except Halt as exc:
            self.halt(exc.stop, cancel_in_flight=exc.cancel_in_flight)
        except AuthenticationError as exc:
            self.halt(Stop(reason=StopReason.AUTH, message=str(exc)), cancel_in_flight=True)
        except Unresolved as exc:
            crew.finish(live, JobStatus.UNKNOWN, error=exc.record)
        except JobFailed as exc:
            crew.finish(live, JobStatus.FAILED, error=exc.record)
        except (StateError, DatabaseUnavailable, LeaseLost):
            raise  # the state cannot be written: a run-level condition
        except BatchpodError as exc:
            # Any other condition we know of is this job's failure, never the run's.
            crew.finish(live, JobStatus.FAILED, error=error_record(exc))
