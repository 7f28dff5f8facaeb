"""Progress for people: a bar on a terminal, log lines elsewhere, or nearly nothing.

Each reporter meets ``runner.Reporter``. Messages name jobs by their manifest name; they never
contain the API key (nothing here ever sees it).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, TextIO

from tqdm import tqdm

from batchpod import logs
from batchpod.budget import usd
from batchpod.models import Job, JobResult, JobStatus

if TYPE_CHECKING:
    from batchpod.runner import Reporter

log = logging.getLogger("batchpod")

#: Endings worth a line even under --quiet: the job did not do what the run asked.
_TROUBLE = (JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.UNKNOWN)


def describe(result: JobResult) -> str:
    """One line about a finished job, for people."""
    name = result.job.name
    if result.status in _TROUBLE and result.error is not None:
        code = f" (HTTP {result.error.http_status})" if result.error.http_status else ""
        status = result.status.value
        return f"{name}: {status}: {result.error.type}{code}: {result.error.message}"
    if result.status is JobStatus.SUCCEEDED:
        return f"{name}: succeeded, {len(result.files)} stems"
    return f"{name}: {result.status.value}"


def finished_fields(result: JobResult) -> dict[str, Any]:
    """A finished job's facts for the JSON log."""
    error = result.error
    return {
        "status": result.status.value,
        "remote_id": result.remote_id,
        "attempts": result.attempts,
        "cost_cents": result.cost_cents,
        "files": len(result.files),
        "reason": result.reason,
        "error": None
        if error is None
        else {"type": error.type, "http_status": error.http_status, "message": error.message},
        **({"meta": dict(result.job.meta)} if result.job.meta else {}),
    }


class LogReporter:
    """One log line per job transition (for pipes, files and cron)."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet

    def job_event(self, job: Job, event: str, detail: str = "") -> None:
        if not self.quiet:
            log.info(
                "%s: %s%s",
                job.name,
                event,
                f" ({detail})" if detail else "",
                extra=logs.event(
                    "job",
                    job=job.name,
                    transition=event,
                    detail=detail or None,
                    **({"meta": dict(job.meta)} if job.meta else {}),
                ),
            )

    def job_finished(self, result: JobResult) -> None:
        extra = logs.event("job_finished", job=result.job.name, **finished_fields(result))
        if result.status in _TROUBLE:
            log.error("%s", describe(result), extra=extra)
        elif not self.quiet:
            log.info("%s", describe(result), extra=extra)

    def spent(self, cents: int) -> None:
        pass


class BarReporter:
    """A tqdm bar: jobs done of all, failed, in flight, spend so far, ETA."""

    def __init__(self, total: int | None, *, stream: TextIO) -> None:
        self.bar = tqdm(total=total, file=stream, unit="job", dynamic_ncols=True, leave=True)
        self.failed = 0
        self.started = 0
        self.finished = 0
        self.spent_cents = 0
        self._refresh()

    def job_event(self, job: Job, event: str, detail: str = "") -> None:
        if event == "submitting":
            self.started += 1
            self._refresh()

    def job_finished(self, result: JobResult) -> None:
        self.finished += 1
        if result.status in _TROUBLE:
            self.failed += 1
            self.bar.write(describe(result))
        self.bar.update(1)
        self._refresh()

    def spent(self, cents: int) -> None:
        self.spent_cents = cents
        self._refresh()

    def close(self) -> None:
        self.bar.close()

    def _refresh(self) -> None:
        self.bar.set_postfix_str(
            f"failed={self.failed} in-flight={self.started - self.finished} "
            f"spent={usd(self.spent_cents)}",
            refresh=False,
        )


class TeeReporter:
    """Hands every report to each of several reporters (a bar and a log file, say)."""

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = reporters

    def job_event(self, job: Job, event: str, detail: str = "") -> None:
        for reporter in self.reporters:
            reporter.job_event(job, event, detail)

    def job_finished(self, result: JobResult) -> None:
        for reporter in self.reporters:
            reporter.job_finished(result)

    def spent(self, cents: int) -> None:
        for reporter in self.reporters:
            reporter.spent(cents)
