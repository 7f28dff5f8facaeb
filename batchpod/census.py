"""What a fleet's shared state says of a manifest's jobs: ``status`` and ``results`` read it.

Read at any moment, while workers run or after they have all gone: each of the manifest's
jobs is matched to its row by content key (a song listed twice is one row; its later
listings are duplicates), and each row's result is what the worker that settled it this
epoch recorded, or, for a job not settled yet, what its state says (in flight with a live
worker, left by a stop, or not run yet).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from batchpod._version import __version__
from batchpod.fleet import DatabaseUrl, FleetRow, FleetStore, JobRow, WorkerRow
from batchpod.identity import content_keys
from batchpod.journal import JobState
from batchpod.models import Job, JobResult, JobStatus, Manifest
from batchpod.results import RunHeader

#: What a job's state says of it, when no worker settled it in this epoch.
_UNSETTLED: dict[JobState, JobStatus] = {
    JobState.PENDING: JobStatus.SKIPPED,
    JobState.SUBMITTING: JobStatus.UNKNOWN,
    JobState.UNKNOWN: JobStatus.UNKNOWN,
    JobState.SUBMITTED: JobStatus.INTERRUPTED,
    JobState.COMPLETED: JobStatus.INTERRUPTED,
    JobState.DOWNLOADED: JobStatus.SUCCEEDED,
    JobState.CLEANED: JobStatus.SUCCEEDED,
    JobState.FAILED: JobStatus.FAILED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Census:
    """The manifest's jobs, each with its row (None: no worker has listed it yet)."""

    where: str  # the database, without its password
    fleet: FleetRow | None
    jobs: tuple[Job, ...]
    rows: tuple[JobRow | None, ...]
    first_of: tuple[int, ...]  # for each job, the index of the first job with its key
    workers: tuple[WorkerRow, ...]

    @property
    def alive(self) -> frozenset[str]:
        return frozenset(w.worker for w in self.workers if w.alive)


async def read_census(manifest: Manifest, url: DatabaseUrl) -> Census:
    """Read the fleet of ``manifest`` (known by its file name) from the database."""
    async with await FleetStore.open(url, create=False) as store:
        keys = await content_keys(manifest.jobs)
        fleet = await store.fleet(manifest.path.name)
        rows = await store.jobs(fleet.id) if fleet else {}
        workers = await store.workers(fleet.id) if fleet else []
    first: dict[str, int] = {}
    first_of = tuple(first.setdefault(key, index) for index, key in enumerate(keys))
    return Census(
        where=url.where,
        fleet=fleet,
        jobs=manifest.jobs,
        rows=tuple(rows.get(key) for key in keys),
        first_of=first_of,
        workers=tuple(workers),
    )


def fleet_results(census: Census, manifest: Path) -> tuple[RunHeader, list[JobResult]]:
    """The results manifest of the whole fleet, as it stands: its header and every job's
    result in manifest order."""
    fleet = census.fleet
    alive = census.alive
    results = []
    for index, (job, row) in enumerate(zip(census.jobs, census.rows, strict=True)):
        first = census.first_of[index]
        if first != index:
            twin = census.jobs[first].name
            results.append(
                JobResult(
                    job=job,
                    status=JobStatus.SKIPPED,
                    reason=f"same song, mode and stem as {twin!r}",
                    duplicate_of=twin,
                )
            )
            continue
        if row is None or fleet is None:
            results.append(JobResult(job=job, status=JobStatus.SKIPPED, reason="not run yet"))
            continue
        results.append(_result(job, row, fleet, alive))
    finished = [w.finished_at for w in census.workers if w.epoch == (fleet.epoch if fleet else 0)]
    done = bool(finished) and not alive and all(f is not None for f in finished)
    header = RunHeader(
        batchpod_version=__version__,
        manifest=manifest,
        manifest_sha256=hashlib.sha256(manifest.read_bytes()).hexdigest(),
        base_url=None,
        sandbox=None,
        started_at=fleet.epoch_started_at if fleet else None,
        finished_at=max(f for f in finished if f is not None) if done else None,
        stopped=fleet.stop_message if fleet else None,
        state=census.where,
    )
    return header, results


def _result(job: Job, row: JobRow, fleet: FleetRow, alive: frozenset[str]) -> JobResult:
    record = row.record
    if row.settled_epoch == fleet.epoch and row.status is not None:
        status = JobStatus(row.status)
        reason = row.reason
    else:
        status = _UNSETTLED[record.state]
        if row.owner is not None and row.owner in alive:
            reason = f"in flight (worker {row.owner})"
        elif record.state is JobState.FAILED:
            reason = "failed in an earlier run (--retry-failed submits it again)"
        elif record.state.done:
            reason = None
        elif fleet.stop_reason is not None:
            reason = fleet.stop_reason
        else:
            reason = "not run yet"
    return JobResult(
        job=job,
        status=status,
        remote_id=record.remote_id,
        submitted_at=record.submitted_at,
        completed_at=record.completed_at,
        attempts=record.attempts,
        cost_cents=record.cost_cents,
        estimated_cents=row.estimated_cents,
        files=record.files,
        deleted_remote=record.state is JobState.CLEANED,
        quality_scores=record.quality_scores,
        error=record.error,
        reason=reason,
    )
