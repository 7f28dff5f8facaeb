"""The submit path of one job: reserve, record the intent, send, and settle what came of it.

Never send again unless AudioPod surely has no job from an earlier send. The intent is
committed before each send; a send that surely never arrived (refused connection, 408, 429)
is sent again under the retry policy; one whose outcome is unknown (a timeout or reset after
sending, a 5xx) is reconciled against the job list (``batchpod.reconcile``) and sent again only
if no job came of it, or else its job is adopted. Like-named songs are submitted one at a time
(``SourceLocks``), so that a job this run creates is never taken for an unknown submit's.

``Submitter.submit_new`` returns the remote job, or None when the run stopped before it was
sent; it raises ``Halt`` for a stop it met (the budget, a 402, a refused key) and
``JobFailed`` when the job fails. It never halts the run itself.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

import anyio

from batchpod import reconcile
from batchpod.client import RemoteJob
from batchpod.errors import (
    ApiError,
    AuthenticationError,
    InsufficientBalance,
    LeaseLost,
    TransportError,
    outcome_unknown,
)
from batchpod.journal import JobState
from batchpod.models import ErrorRecord, Job

from ._crew import Crew
from ._live import LiveJob
from ._outcomes import Halt, JobFailed, Stop, StopReason, Unresolved, error_record
from ._ports import Fleet
from ._wallet import Wallet

#: How many times the job list is searched for an unknown submit's job before sending again.
RECONCILE_LOOKS: Final = 2


@dataclass(slots=True)
class _SourceLock:
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    users: int = 0  # tasks holding or awaiting it


class SourceLocks:
    """One lock per song name that reconciliation cannot tell apart (``reconcile.identity``);
    a lock lives only while it is held or awaited: one per job would grow with the manifest.
    With a fleet, the fleet-wide lock on the name is taken too, once the local one is held."""

    def __init__(self, fleet: Fleet | None = None) -> None:
        self._locks: dict[str, _SourceLock] = {}
        self._fleet = fleet

    @contextlib.asynccontextmanager
    async def hold(self, job: Job) -> AsyncIterator[None]:
        identity = reconcile.identity(job)
        entry = self._locks.get(identity)
        if entry is None:
            entry = self._locks[identity] = _SourceLock()
        entry.users += 1
        try:
            async with entry.lock:
                if self._fleet is None:
                    yield
                else:
                    async with self._fleet.hold(identity):
                        yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._locks[identity]


class Submitter:
    """Submits jobs and settles unknown submits (see the module docstring)."""

    def __init__(self, crew: Crew, wallet: Wallet) -> None:
        self.crew = crew
        self.wallet = wallet
        self.locks = SourceLocks(crew.fleet)

    async def submit_new(self, job: Job, live: LiveJob) -> RemoteJob | None:
        """Reserve the job's cost, then submit it (see the module docstring)."""
        crew = self.crew
        live.estimate_cents = crew.estimate_cents(job)
        if crew.config.wallet_before_reserve and crew.budget.balance_cents is not None:
            await self.wallet.read_balance()  # other shards spend from this wallet too
        refused = await crew.reserve(live)
        if refused is not None:
            live.reason = StopReason.BUDGET.value  # the run's 'stopped' line says which cap
            stop = Stop(reason=StopReason.BUDGET, message=str(refused))
            raise Halt(stop, cancel_in_flight=False)
        try:
            return await self._submit(job, live)
        except _Stopped:
            await crew.release(live)
            if live.state is JobState.SUBMITTING:  # saved, then stopped before sending
                await crew.save(live, JobState.PENDING)
            return None
        except InsufficientBalance as exc:
            await crew.release(live)
            live.reason = StopReason.BALANCE.value
            live.error = error_record(exc)  # with the required and available amounts
            await crew.save(live, JobState.PENDING)  # 402: nothing was created
            stop = Stop(reason=StopReason.BALANCE, message=str(exc))
            raise Halt(stop, cancel_in_flight=False) from exc
        except AuthenticationError as exc:
            await crew.release(live)
            live.reason = StopReason.AUTH.value
            await crew.save(live, JobState.PENDING)
            raise Halt(
                Stop(reason=StopReason.AUTH, message=str(exc)), cancel_in_flight=True
            ) from exc
        except JobFailed as exc:
            if not exc.maybe_charged and not live.state.unsettled:
                await crew.release(live)
            raise  # a job may exist and be charged: its hold stays, so no cap is passed

    async def _submit(self, job: Job, live: LiveJob) -> RemoteJob:
        crew = self.crew
        started = anyio.current_time()
        while True:
            # One submit (and its reconciliation) per song name at a time, intent included: a
            # job this run creates for a like-named song must not look like an unknown
            # submit's job.
            async with self.locks.hold(job):
                if crew.stop is not None and crew.stop.reason is not StopReason.BUDGET:
                    # A stop came while this job waited or backed off. The budget's stop
                    # only refuses jobs not yet reserved: this one fits under the cap, and a
                    # fleet's jobs wait for their name locks after reserving.
                    raise _Stopped
                if not live.sent_this_run:
                    live.sent_this_run = True
                    crew.worked += 1
                live.attempts += 1
                live.intent_at = crew.clock()
                await crew.save(live, JobState.SUBMITTING)
                if live.attempts == 1:
                    crew.reporter.job_event(job, "submitting")
                else:
                    crew.reporter.job_event(job, "submitting again", f"attempt {live.attempts}")
                if crew.fleet is not None and not crew.fleet.fresh():
                    # Its jobs may be another worker's by now: sending could pay twice.
                    raise LeaseLost(where="the fleet's state", jobs=1)
                try:
                    remote = await self._send(job)
                except (AuthenticationError, InsufficientBalance):
                    raise
                except ApiError as exc:
                    failure = exc
                    if outcome_unknown(exc):
                        await crew.save(live, JobState.UNKNOWN)
                        crew.reporter.job_event(job, "submit outcome unknown", str(exc))
                        adopted = await self.reconcile(job, live, live.intent_at)
                        if adopted is not None:
                            return adopted
                else:
                    crew.window.accepted()
                    await self._submitted(job, live, remote.id)
                    return remote
            if outcome_unknown(failure):
                # No job came of it: sending again cannot pay twice (after a pause, as for
                # any 5xx: the service is struggling).
                if await crew.backoff(live, live.attempts, started, failure):
                    continue
                raise JobFailed(error_record(failure, ambiguous=True), maybe_charged=True)
            # Refused before any work: no connection, 429, or 408 (the server gave up
            # receiving the request).
            unsent = isinstance(failure, TransportError) or failure.http_status in (408, 429)
            if unsent and await crew.backoff(live, live.attempts, started, failure):
                continue
            live.error = error_record(failure)
            # A refusal stays refused on a re-run; a send that never arrived may try again.
            await crew.save(live, JobState.PENDING if unsent else JobState.FAILED)
            raise JobFailed(live.error) from failure

    async def _send(self, job: Job) -> RemoteJob:
        mode, stem = job.mode.value, job.stem.value if job.stem else None
        if job.source.url is not None:
            return await self.crew.api.submit_url(job.source.url, mode=mode, stem=stem)
        assert job.source.file is not None
        return await self.crew.api.submit_file(job.source.file, mode=mode, stem=stem)

    async def _submitted(self, job: Job, live: LiveJob, remote_id: str) -> None:
        crew = self.crew
        await crew.submitted(live)
        live.remote_id = remote_id
        live.submitted_at = crew.clock()
        crew.claimed.add(remote_id)
        await crew.save(live, JobState.SUBMITTED)
        crew.changes += 1
        crew.reporter.job_event(job, "submitted", f"id {remote_id}")

    async def reconcile(self, job: Job, live: LiveJob, intent_at: float) -> RemoteJob | None:
        """The remote job an unknown submit created, None if it surely created none.

        The caller holds the job's source lock. Candidates still running are waited for, so
        that their stems can be checked against the mode (see reconcile).
        """
        crew = self.crew
        result = None
        for attempt in range(RECONCILE_LOOKS):
            if attempt:
                await anyio.sleep(crew.config.poll.first_s * 2)  # a new job may list late
            search = functools.partial(
                reconcile.search,
                crew.api,
                job,
                intent_at=intent_at,
                claimed=await crew.claimed_ids(),
            )
            result = await crew.retrying(search, live)
            if result.candidates or result.doubtful:
                break
        assert result is not None
        finished = [await self._until_ended(c, live) for c in result.candidates]
        fitting = [c for c in finished if reconcile.matches(job, c)]
        if len(fitting) > 1 or result.doubtful:
            ids = ", ".join(c.id for c in fitting) or "some jobs that cannot be told apart"
            await crew.save(live, JobState.UNKNOWN)
            raise Unresolved(
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
            crew.reporter.job_event(job, "no job came of the earlier submit")
            return None
        adopted = fitting[0]
        crew.reporter.job_event(job, "found its job", f"id {adopted.id}")
        await self._submitted(job, live, adopted.id)
        return adopted

    async def _until_ended(self, row: RemoteJob, live: LiveJob) -> RemoteJob:
        """The candidate once it has completed or failed (polled on the usual schedule)."""
        crew = self.crew
        since = anyio.current_time()
        with anyio.fail_after(crew.config.job_timeout_s):
            while not row.status.terminal:
                age = anyio.current_time() - since
                await anyio.sleep(crew.config.poll.interval_s(age, rng=crew.rng))
                row = await crew.retrying(functools.partial(crew.api.status, row.id), live)
        return row


class _Stopped(Exception):
    """The run stopped before this job's (next) submit was sent."""
