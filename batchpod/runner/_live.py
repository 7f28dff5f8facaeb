"""One job's live record while the pool works it: what its state-file row and result say.

A ``LiveJob`` is restored from the job's row when an earlier run left one, saved as a row at
every step (``record``), and read as the job's ``JobResult`` at any moment (``result``): a
job not yet finished then reads as interrupted (its submit may have landed) or skipped.

Every assignment to a ``LiveJob`` puts its index in the run's ``marks`` set, so that the
results file re-renders only the jobs that changed since it was last written. Its lists and
counters are therefore replaced or changed through its methods, never in place from outside.
A finished job's links and quality scores go to the run's spool (``shelve``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from batchpod.journal import JobRecord, JobState
from batchpod.models import ErrorRecord, Job, JobResult, JobStatus, OutputFile
from batchpod.spool import Spool, SpooledMapping

# A run keeps a LiveJob for every job of the manifest, most of them not started or long
# finished: until a job has files, scores, links or retries of its own, it shares this empty
# mapping (and the empty tuple), replaced whole and never changed in place, rather than
# holding ~250 B of empty containers. See `count_retry`.
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(slots=True)
class LiveJob:
    """A job's mutable record while a worker holds it."""

    # First, in this order: every later assignment, those of __init__ too, marks the index.
    marks: set[int]  # the run's jobs changed since the results were last rendered
    index: int
    key: str  # the job's content key (identity.content_key): its row in the state
    name: str
    state: JobState = JobState.PENDING
    intent_at: float | None = None
    cost_cents: int | None = None
    status: JobStatus = JobStatus.SKIPPED
    remote_id: str | None = None
    submitted_at: float | None = None
    completed_at: float | None = None
    finished_at: float | None = None  # this run's, set by Crew.finish (not in the state)
    attempts: int = 0
    estimate_cents: int = 0
    files: Sequence[OutputFile] = ()
    # Replaced whole, never changed in place: the job's records and results share them
    # rather than each holding a copy (a run keeps a result for every job).
    quality_scores: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    download_urls: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    error: ErrorRecord | None = None
    reason: str | None = None
    duplicate_of: str | None = None
    done: bool = False
    # By cause, this run: the shared empty mapping until the first retry (see count_retry).
    retries: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    in_window: bool = False  # holds a place in the pool's SubmitWindow
    sent_this_run: bool = False  # this run sent (or tried to send) its submit
    deadline: float = math.inf  # anyio clock: its submit plus --job-timeout

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if name != "marks":
            self.marks.add(self.index)

    def count_retry(self, cause: str) -> None:
        """Count one retry of this job's requests, for ``cause``."""
        retries = self.retries if isinstance(self.retries, dict) else {}
        retries[cause] = retries.get(cause, 0) + 1
        self.retries = retries  # marks the index

    def shelve(self, spool: Spool, *, links: bool) -> None:
        """Move what a finished job carries but no longer works with to ``spool``: its
        quality scores, and its stem links when ``links`` (they go to the results; a run that
        downloads drops them)."""
        if self.quality_scores and not isinstance(self.quality_scores, SpooledMapping):
            self.quality_scores = SpooledMapping(spool, self.quality_scores)
        if not links:
            self.download_urls = _EMPTY
        elif self.download_urls and not isinstance(self.download_urls, SpooledMapping):
            self.download_urls = SpooledMapping(spool, self.download_urls)

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
            quality_scores=self.quality_scores,
            error=self.error,
        )

    def finish(self, status: JobStatus, *, error: ErrorRecord | None = None) -> None:
        """End the job with ``status`` (its result from now on)."""
        self.status = status
        self.error = error
        self.done = True

    def result(self, job: Job, *, stop_reason: str | None, download: bool) -> JobResult:
        """The job's result as it stands; ``stop_reason`` is why the run stopped, if it did."""
        status = self.status
        reason = self.reason
        if not self.done:
            if self.remote_id is not None or self.state.unsettled:
                # Submitted, or perhaps submitted: the state file lets a re-run find it.
                status = JobStatus.INTERRUPTED
            else:
                status = JobStatus.SKIPPED
                if reason is None and stop_reason is not None:
                    reason = stop_reason
        return JobResult(
            job=job,
            status=status,
            remote_id=self.remote_id,
            submitted_at=self.submitted_at,
            completed_at=self.completed_at,
            finished_at=self.finished_at,
            attempts=self.attempts,
            cost_cents=self.cost_cents,
            estimated_cents=self.estimate_cents or None,
            files=tuple(self.files),
            quality_scores=self.quality_scores,
            download_urls=self.download_urls if not download else {},
            error=self.error,
            reason=reason,
            duplicate_of=self.duplicate_of,
            retries=dict(self.retries),
            deleted_remote=self.state is JobState.CLEANED,
        )
