"""When each job of a results document waited, was at AudioPod and was downloaded.

Times are seconds since the run started, clipped to the run (``Window``). A job's phases,
from the timestamps its entry records (``submitted_at``, ``completed_at``, ``finished_at``):

- **waiting**: from the run's start to its submit, when this run submitted it;
- **at AudioPod**: from its submit (or the run's start, for a job an earlier run submitted)
  to the moment the run saw it done; for a job that never completed (failed, expired,
  interrupted), to its end, or to the run's end;
- **downloading**: from then to the moment the run was done with it (its stems stored).

A job that never reached AudioPod (skipped, refused at submit) has no phases. The results
record whole seconds, so a phase shorter than a second may read as none.

``occupancy`` turns many jobs' phases into the average number of jobs in each phase in each
of a few equal slices of the run, in time linear in the jobs (not jobs x slices): what a
10,000-job timeline is drawn from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from batchpod.results import parse_iso

#: The phases, in the order they happen (and are stacked).
PHASES = ("waiting", "at_audiopod", "downloading")


def epoch(value: object) -> float | None:
    """A results file's time as Unix seconds (``results.parse_iso``), or a datetime a YAML
    loader made of an unquoted one (taken as UTC when it has no zone); None otherwise."""
    if not isinstance(value, datetime):
        return parse_iso(value)
    moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class Window:
    """The run's span: ``start`` in Unix seconds, ``length`` in seconds (at least 1)."""

    start: float
    length: float


@dataclass(frozen=True, slots=True)
class JobPhases:
    """One job's phases as (from, to) seconds since the run's start; None: not this phase."""

    index: int  # in the document's jobs
    name: str
    status: str
    waiting: tuple[float, float] | None
    at_audiopod: tuple[float, float] | None
    downloading: tuple[float, float] | None
    finished: float | None  # when the run was done with it

    def span(self, phase: str) -> tuple[float, float] | None:
        span: tuple[float, float] | None = getattr(self, phase)
        return span


def window(run: Mapping[str, Any], jobs: Sequence[Mapping[str, Any]]) -> Window | None:
    """The run's window: its ``started_at`` to its ``finished_at`` (or to the last time a job
    records, for a run that did not finish); None when the run has no start time."""
    start = epoch(run.get("started_at"))
    if start is None:
        return None
    end = epoch(run.get("finished_at"))
    if end is None:
        times = (
            epoch(job.get(key))
            for job in jobs
            for key in ("submitted_at", "completed_at", "finished_at")
        )
        end = max((t for t in times if t is not None), default=start)
    return Window(start=start, length=max(1.0, end - start))


def job_phases(index: int, job: Mapping[str, Any], span: Window) -> JobPhases | None:
    """Job ``job``'s phases in ``span`` (see the module docstring); None when it has none."""
    submitted = epoch(job.get("submitted_at"))
    if submitted is None:
        return None
    completed = epoch(job.get("completed_at"))
    finished = epoch(job.get("finished_at"))
    end = span.length
    s = _clip(submitted - span.start, end)
    c = None if completed is None else _clip(completed - span.start, end)
    f = None if finished is None else _clip(finished - span.start, end)
    at_end = c if c is not None else f if f is not None else end
    return JobPhases(
        index=index,
        name=str(job.get("name")),
        status=str(job.get("status")),
        waiting=_interval(0.0, s),
        at_audiopod=_interval(s, at_end),
        downloading=None if c is None or f is None else _interval(c, f),
        finished=f,
    )


def all_phases(jobs: Sequence[Mapping[str, Any]], span: Window) -> list[JobPhases]:
    """The phases of every job that has them, in manifest order."""
    found = (job_phases(index, job, span) for index, job in enumerate(jobs))
    return [phases for phases in found if phases is not None]


def occupancy(jobs: Sequence[JobPhases], span: Window, slices: int) -> dict[str, list[float]]:
    """For each phase, the average number of jobs in it during each of ``slices`` equal
    slices of ``span``: a job in a phase for half a slice counts 0.5 there.

    Each interval adds its whole slices to a difference array and its two partial ends
    directly, so the work is one pass over the jobs and one over the slices.
    """
    if slices < 1:
        raise ValueError(f"slices must be 1 or more, got {slices}")
    width = span.length / slices
    result: dict[str, list[float]] = {}
    for phase in PHASES:
        partial = [0.0] * slices
        whole = [0.0] * (slices + 1)  # +1 from the first whole slice, -1 after the last
        for job in jobs:
            interval = job.span(phase)
            if interval is None:
                continue
            a, b = interval[0] / width, interval[1] / width  # in slices
            first, last = min(int(a), slices - 1), min(int(b), slices - 1)
            if first == last:
                partial[first] += b - a
                continue
            partial[first] += (first + 1) - a
            partial[last] += b - last
            if last > first + 1:
                whole[first + 1] += 1.0
                whole[last] -= 1.0
        running, counts = 0.0, []
        for k in range(slices):
            running += whole[k]
            counts.append(running + partial[k])
        result[phase] = counts
    return result


def finished_by(jobs: Sequence[JobPhases], span: Window, slices: int) -> list[int]:
    """How many of ``jobs`` the run was done with by the end of each of ``slices`` equal
    slices of ``span``."""
    width = span.length / slices
    ends = [0] * slices
    for job in jobs:
        if job.finished is not None:
            ends[max(0, min(math.ceil(job.finished / width) - 1, slices - 1))] += 1
    total, counts = 0, []
    for n in ends:
        total += n
        counts.append(total)
    return counts


def _clip(value: float, end: float) -> float:
    return min(max(value, 0.0), end)


def _interval(a: float, b: float) -> tuple[float, float] | None:
    return (a, b) if b > a else None
