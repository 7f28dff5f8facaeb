"""Cost estimates: what a manifest's jobs will cost, before anything is submitted.

A job's length comes from the manifest's ``duration``, else from the header of its local
file (``audio.audio_duration_s``); a URL job without ``duration`` has an unknown length and is
costed at an assumed length, so that the total is a worst case. Prices are AudioPod's: cents
per minute of input, the total of each job rounded up to a cent (``budget.cost_cents``).

Pure apart from reading file headers; no HTTP, no terminal.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

from batchpod.audio import audio_duration_s
from batchpod.budget import DEFAULT_ASSUMED_DURATION_S, DEFAULT_CENTS_PER_MINUTE, cost_cents
from batchpod.models import Job


class LengthFrom(StrEnum):
    """Where a job's length came from."""

    MANIFEST = "manifest"
    FILE_HEADER = "file header"
    UNKNOWN = "unknown"


class Progress(StrEnum):
    """What the state file says of a job, as far as money goes."""

    TO_RUN = "to run"  # never submitted (or submitted and surely not created)
    PAID = "paid"  # submitted by an earlier run and charged, not finished yet
    DONE = "done"  # finished by an earlier run
    FAILED = "failed"  # failed in an earlier run (re-run only with --retry-failed)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobEstimate:
    """One job's length and cost."""

    job: Job
    duration_s: float | None
    length_from: LengthFrom
    cents: int  # at the assumed length when the length is unknown
    progress: Progress = Progress.TO_RUN


def job_length(job: Job) -> tuple[float | None, LengthFrom]:
    """The job's length in seconds and where it came from (None: unknown)."""
    if job.duration_s is not None:
        return job.duration_s, LengthFrom.MANIFEST
    if job.source.file is not None:
        length = audio_duration_s(job.source.file)
        if length is not None:
            return length, LengthFrom.FILE_HEADER
    return None, LengthFrom.UNKNOWN


def estimate_cents(
    job: Job,
    *,
    cents_per_minute: int = DEFAULT_CENTS_PER_MINUTE,
    assumed_duration_s: float = DEFAULT_ASSUMED_DURATION_S,
) -> int:
    """The job's cost, at ``assumed_duration_s`` when its length is unknown."""
    length, _ = job_length(job)
    return cost_cents(
        length if length is not None else assumed_duration_s, cents_per_minute=cents_per_minute
    )


def estimate_jobs(
    jobs: Sequence[Job],
    *,
    cents_per_minute: int = DEFAULT_CENTS_PER_MINUTE,
    assumed_duration_s: float = DEFAULT_ASSUMED_DURATION_S,
    progress: Sequence[Progress] | None = None,
    skip: Collection[int] = (),
) -> list[JobEstimate]:
    """Every job's estimate, in manifest order (``skip``: indexes of repeated songs)."""
    estimates = []
    for index, job in enumerate(jobs):
        length, source = job_length(job)
        seconds = length if length is not None else assumed_duration_s
        estimates.append(
            JobEstimate(
                job=job,
                duration_s=length,
                length_from=source,
                cents=0
                if index in skip
                else cost_cents(seconds, cents_per_minute=cents_per_minute),
                progress=progress[index] if progress is not None else Progress.TO_RUN,
            )
        )
    return estimates
