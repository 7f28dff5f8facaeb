"""Taking up what earlier runs left: what they spent on unfinished jobs, and their unknowns.

A run that resumes a crashed or stopped one is the same night's work: its caps count what the
earlier run spent on jobs it left in flight, so that crash after crash cannot spend past
``max_spend_usd`` (jobs an earlier run finished are not counted). Submits an earlier run left
unknown are settled before anything new is submitted, so that no job this run creates can be
mistaken for one of theirs. And each job starts from what earlier runs left of it
(``starting_point``): its row in the state, or, for a job the state has not seen, the record
of a finished job in the output folder, written by any run of any manifest
(``runner._outputs``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anyio

from batchpod.errors import ApiError
from batchpod.journal import JobRecord, JobState
from batchpod.models import ErrorRecord, Job, JobStatus

from ._crew import Crew
from ._live import LiveJob
from ._outcomes import JobFailed, Unresolved
from ._stems import in_format, intact
from ._submit import Submitter

#: Earlier unknown submits settled at once, before the run submits anything.
SETTLE_AT_ONCE = 8


def inherited_spend(crew: Crew, keys: Sequence[str], records: Mapping[str, JobRecord]) -> int:
    """What earlier, unfinished runs paid (or may have paid) for jobs not yet done."""
    total = 0
    counted: set[str] = set()  # a song listed twice was paid for once
    for index, key in enumerate(keys):
        record = records.get(key)
        if record is None or key in counted:
            continue
        counted.add(key)
        if record.state.paid_unfinished:
            total += record.cost_cents or crew.estimate_cents(crew.jobs[index])
    return total


async def settle_earlier_unknowns(
    crew: Crew,
    submitter: Submitter,
    live_jobs: Sequence[LiveJob],
    records: dict[str, JobRecord],
) -> None:
    """Reconcile every submit an earlier run left unsettled; ``records`` is updated with what
    came of each (a job found is adopted, one that surely made none is to be submitted
    afresh, one that cannot be told apart ends ``unknown``)."""
    limiter = anyio.CapacityLimiter(SETTLE_AT_ONCE)

    async def settle(index: int) -> None:
        async with limiter:
            job, live = crew.jobs[index], live_jobs[index]
            record = records[live.key]
            live.restore(record)
            assert record.intent_at is not None
            try:
                async with submitter.locks.hold(job):
                    remote = await submitter.reconcile(job, live, record.intent_at)
            except Unresolved as exc:
                crew.finish(live, JobStatus.UNKNOWN, error=exc.record)
                return
            except (JobFailed, ApiError, TimeoutError):
                return  # the worker will look again when it takes the job
            if remote is None:
                live.state = JobState.PENDING  # no job came of it: submit afresh
            records[live.key] = live.record()

    first: dict[str, int] = {}  # one settlement per key, even when a song is listed twice
    for index, live in enumerate(live_jobs):
        record = records.get(live.key)
        if record is not None and record.state.unsettled and record.intent_at is not None:
            first.setdefault(live.key, index)
    if first:
        async with anyio.create_task_group() as tg:
            for index in first.values():
                tg.start_soon(settle, index)


async def starting_point(
    crew: Crew, job: Job, live: LiveJob, prior: JobRecord | None
) -> JobState | None:
    """The state a job is carried on from in this run, or None when what earlier runs left
    ends it: done (stems intact), failed (unless ``retry_failed``), or already in the output
    folder. ``force`` submits a done job again. A record in the output folder whose files
    no longer match is not trusted, but its AudioPod job is followed for fresh stems."""
    config = crew.config
    state = prior.state if prior is not None else JobState.PENDING
    if prior is not None and state.done:
        if config.force:
            _forget(live)
            state = JobState.PENDING
        elif state is JobState.CLEANED and not (
            in_format(prior.files, crew.output)
            and await anyio.to_thread.run_sync(intact, prior, crew.shelf)
        ):
            crew.finish(live, JobStatus.FAILED, error=CANNOT_FETCH_AGAIN)
            return None
        elif not in_format(prior.files, crew.output) and prior.remote_id is not None:
            # Written in another format than this run's: fetched again from the same
            # AudioPod job (never paid again); the files already there are left alone.
            crew.reporter.job_event(job, "done in another format", f"id {prior.remote_id}")
            return JobState.COMPLETED
        elif await anyio.to_thread.run_sync(intact, prior, crew.shelf):
            crew.reporter.job_event(job, "already done")
            if state is JobState.DOWNLOADED and config.delete_remote and live.remote_id:
                await crew.delete_remote(live)  # stored by an earlier run, not deleted yet
            crew.finish(live, JobStatus.SUCCEEDED)
            return None
    elif state is JobState.FAILED and not config.retry_failed:
        live.reason = "failed in an earlier run (--retry-failed submits it again)"
        crew.finish(live, JobStatus.FAILED, error=live.error)
        return None
    resumable = state in (JobState.SUBMITTED, JobState.COMPLETED)  # e.g. after recover
    if not (state is JobState.PENDING or resumable) or config.force or not crew.done.has(live.key):
        return state
    record = await anyio.to_thread.run_sync(crew.done.find, live.key)
    if record is None or (resumable and record.remote_id != live.remote_id):
        return state
    if record.trusted and in_format(record.files, crew.output):
        live.files = list(record.files)
        live.remote_id = record.remote_id
        live.cost_cents = 0  # this run paid nothing for it
        live.reason = ALREADY_IN_OUTPUT
        await crew.save(live, JobState.DOWNLOADED)
        crew.reporter.job_event(job, ALREADY_IN_OUTPUT)
        crew.finish(live, JobStatus.SUCCEEDED)
        return None
    if resumable or record.remote_id is None:
        return state
    crew.reporter.job_event(
        job, "its record in output_dir no longer matches its files", f"id {record.remote_id}"
    )
    live.remote_id = record.remote_id  # followed for fresh links; never paid for again
    live.files = list(record.files)  # those still as written are not fetched again
    return JobState.COMPLETED


#: Why a job whose AudioPod job was deleted cannot be done again without paying.
CANNOT_FETCH_AGAIN = ErrorRecord(
    type="RemoteDeleted",
    message=(
        "its stems are not all in the output folder as written (or not in this run's "
        "format), and its AudioPod job was deleted (--delete-remote or cleanup): "
        "--force submits it again, a new charge"
    ),
)

#: The reason of a job found finished in the output folder.
ALREADY_IN_OUTPUT = "already in output_dir"


def _forget(live: LiveJob) -> None:
    """Drop what an earlier run did with the job, to do it again (``force``)."""
    live.remote_id = None
    live.files = []
    live.cost_cents = None
    live.submitted_at = None
    live.completed_at = None
    live.quality_scores = {}
    live.error = None
