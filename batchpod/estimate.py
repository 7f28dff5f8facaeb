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
from batchpod.journal import JobRecord, JobState
from batchpod.models import Budget, Job


class LengthFrom(StrEnum):
    """Where a job's length came from."""

    MANIFEST = "manifest"
    FILE_HEADER = "file header"
    UNKNOWN = "unknown"


class PriorWork(StrEnum):
    """What earlier runs did with a job, as far as money goes (from the state file)."""

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
    prior: PriorWork = PriorWork.TO_RUN


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
    prior: Sequence[PriorWork] | None = None,
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
                prior=prior[index] if prior is not None else PriorWork.TO_RUN,
            )
        )
    return estimates


def prior_work_of(record: JobRecord | None) -> PriorWork:
    """A job's state-file row (None: none) as far as money goes."""
    if record is None or record.state is JobState.PENDING:
        return PriorWork.TO_RUN
    if record.state.done:
        return PriorWork.DONE
    if record.state is JobState.FAILED:
        return PriorWork.FAILED
    assert record.state.paid_unfinished  # perhaps paid, for unsettled submits: reconciled first
    return PriorWork.PAID


@dataclass(frozen=True, slots=True, kw_only=True)
class Totals:
    """What the jobs still to run cost together, and whether that fits the caps and wallet."""

    jobs: int  # every job estimated
    to_run: int  # of which still to run
    unknown_length: int  # of those, of unknown length (costed at the assumed length)
    worst_cents: int  # the most they may cost
    known_cents: int  # of which for the jobs of known length
    done: int
    paid: int
    failed: int
    fits_max_spend: bool | None  # None: no cap
    fits_balance: bool | None  # None: the balance is unknown

    @property
    def fits(self) -> bool:
        """Whether the run fits every limit that is known."""
        return self.fits_max_spend is not False and self.fits_balance is not False


def totals(
    estimates: Sequence[JobEstimate], *, budget: Budget, balance_cents: int | None
) -> Totals:
    """Add up the estimates of the jobs still to run and hold them against ``budget`` and the
    wallet's ``balance_cents`` (None: unknown), which must keep ``keep_balance_cents``."""
    to_run = [e for e in estimates if e.prior is PriorWork.TO_RUN]
    worst = sum(e.cents for e in to_run)
    fits_cap = None if budget.max_spend_cents is None else worst <= budget.max_spend_cents
    fits_wallet = None
    if balance_cents is not None:
        fits_wallet = balance_cents - worst >= (budget.keep_balance_cents or 0)
    return Totals(
        jobs=len(estimates),
        to_run=len(to_run),
        unknown_length=sum(1 for e in to_run if e.duration_s is None),
        worst_cents=worst,
        known_cents=sum(e.cents for e in to_run if e.duration_s is not None),
        done=sum(1 for e in estimates if e.prior is PriorWork.DONE),
        paid=sum(1 for e in estimates if e.prior is PriorWork.PAID),
        failed=sum(1 for e in estimates if e.prior is PriorWork.FAILED),
        fits_max_spend=fits_cap,
        fits_balance=fits_wallet,
    )
