"""Mending a state by hand's reach: rebuilt from AudioPod's job list, or one unknown settled.

``recover`` is for a state lost while jobs were in flight (a pod replaced without its
volume): each manifest job that the state has no row for is matched against AudioPod's job
list by the rules reconciliation uses (``reconcile.matches``: its source, and stems that fit
its mode). A job that exactly one remote job matches, and that remote job no other, is
adopted (followed by its id by the next run, never submitted again); one that several match
is recorded ``unknown`` and listed, for ``resolve``; failed remote jobs are not adopted
(AudioPod refunded them). Finished jobs need no recovery: the output folder records them.

``resolve`` settles a job left ``unknown`` (or ``submitting``): ``adopt`` names its AudioPod
job, ``resubmit`` lets the next run submit it again (a new charge). Both run with the state's
lock held, as a run would (exit 75 while a run holds it). Neither knows argv or terminals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from batchpod import reconcile
from batchpod.client import RemoteStatus
from batchpod.errors import ConfigError
from batchpod.journal import JobRecord, JobState, Journal
from batchpod.models import Job
from batchpod.poller import StatusApi, read_job_list

#: How deep into AudioPod's job list (newest first) recover looks: 100 jobs a page.
MAX_PAGES = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class Adopted:
    job: str  # the manifest job's name
    remote_id: str
    state: JobState  # submitted (still running there) or completed


@dataclass(frozen=True, slots=True, kw_only=True)
class Recovered:
    """What ``recover`` did."""

    adopted: tuple[Adopted, ...]
    ambiguous: tuple[tuple[str, tuple[str, ...]], ...]  # (job name, candidate AudioPod ids)
    had_rows: int  # jobs the state already knew (left as they were)
    unmatched: int  # jobs no remote job matches (a run submits them)
    list_cut_short: bool  # the job list was not read to its end (see read_job_list)


async def recover(
    api: StatusApi, jobs: Sequence[Job], keys: Sequence[str], journal: Journal
) -> Recovered:
    """Rebuild the rows of ``jobs`` (content ``keys``) that ``journal`` lacks from AudioPod's
    job list (see the module docstring)."""
    records = journal.records()
    claimed = {r.remote_id for r in records.values() if r.remote_id is not None}
    listed = await read_job_list(api, max_pages=MAX_PAGES)
    rows, cut_short = list(listed.rows), not listed.complete
    rows = [r for r in rows if r.id not in claimed and r.status is not RemoteStatus.FAILED]
    wanted: dict[str, Job] = {}  # content key -> its first listing, for jobs with no row
    known: set[str] = set()
    for job, key in zip(jobs, keys, strict=True):
        record = records.get(key)
        if record is not None and record.state is not JobState.PENDING:
            known.add(key)
        else:
            wanted.setdefault(key, job)
    had_rows = len(known)
    fits = {key: [r for r in rows if reconcile.matches(job, r)] for key, job in wanted.items()}
    claims: dict[str, int] = {}  # remote id -> how many wanted jobs it matches
    for found in fits.values():
        for row in found:
            claims[row.id] = claims.get(row.id, 0) + 1
    new_rows: list[JobRecord] = []
    adopted: list[Adopted] = []
    ambiguous: list[tuple[str, tuple[str, ...]]] = []
    unmatched = 0
    for key, job in wanted.items():
        found = fits[key]
        if not found:
            unmatched += 1
        elif len(found) == 1 and claims[found[0].id] == 1:
            row = found[0]
            state = (
                JobState.COMPLETED if row.status is RemoteStatus.COMPLETED else (JobState.SUBMITTED)
            )
            new_rows.append(
                JobRecord(
                    key=key,
                    state=state,
                    name=job.name,
                    remote_id=row.id,
                    submitted_at=row.created_at.timestamp() if row.created_at else None,
                    attempts=1,
                )
            )
            adopted.append(Adopted(job=job.name, remote_id=row.id, state=state))
        else:
            # Recorded unknown from before the oldest candidate, so that a run reconciles it
            # against the same candidates and guesses nothing; ``resolve`` settles it.
            times = [r.created_at.timestamp() for r in found if r.created_at is not None]
            new_rows.append(
                JobRecord(
                    key=key,
                    state=JobState.UNKNOWN,
                    name=job.name,
                    intent_at=min(times) - reconcile.CLOCK_ALLOWANCE_S if times else 0.0,
                    attempts=1,
                )
            )
            ambiguous.append((job.name, tuple(r.id for r in found)))
    if new_rows:
        journal.put_many(new_rows)
    return Recovered(
        adopted=tuple(adopted),
        ambiguous=tuple(ambiguous),
        had_rows=had_rows,
        unmatched=unmatched,
        list_cut_short=cut_short,
    )


def unsettled_record(journal: Journal, key: str, name: str) -> JobRecord:
    """The job's row, which must be unknown or submitting (ConfigError otherwise)."""
    record = journal.records().get(key)
    state = record.state if record is not None else JobState.PENDING
    if record is None or not state.unsettled:
        raise ConfigError(
            f"job {name!r} is {state.value} in the state, not unknown: there is nothing to "
            "resolve (batchpod status -v shows every job)"
        )
    return record


async def adopt(api: StatusApi, journal: Journal, record: JobRecord, remote_id: str) -> JobState:
    """Settle an unknown job as AudioPod job ``remote_id`` (which must exist and belong to no
    other job); the state it is left in."""
    holder = next((r.name for r in journal.records().values() if r.remote_id == remote_id), None)
    if holder is not None:
        raise ConfigError(f"AudioPod job {remote_id} already belongs to job {holder!r}")
    row = await api.status(remote_id)  # JobNotFound if there is no such job
    state = JobState.COMPLETED if row.status is RemoteStatus.COMPLETED else JobState.SUBMITTED
    if row.status is RemoteStatus.FAILED:
        state = JobState.FAILED
    journal.put(replace(record, state=state, remote_id=row.id, error=None))
    return state


def resubmit(journal: Journal, record: JobRecord) -> None:
    """Let the next run submit the unknown job again (a new charge, if the first landed)."""
    journal.put(replace(record, state=JobState.PENDING, intent_at=None, error=None))
