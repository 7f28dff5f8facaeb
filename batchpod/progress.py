"""Progress for people: a bar on a terminal, log lines elsewhere, or nearly nothing.

Each reporter meets ``runner.Reporter``. Messages name jobs by their manifest name; they never
contain the API key (nothing here ever sees it).
"""

from __future__ import annotations

import logging
from typing import TextIO

from tqdm import tqdm

from batchpod.budget import usd
from batchpod.models import Job, JobResult, JobStatus

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


class LogReporter:
    """One log line per job transition (for pipes, files and cron)."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet

    def job_event(self, job: Job, event: str, detail: str = "") -> None:
        if not self.quiet:
            log.info("%s: %s%s", job.name, event, f" ({detail})" if detail else "")

    def job_finished(self, result: JobResult) -> None:
        if result.status in _TROUBLE:
            log.error("%s", describe(result))
        elif not self.quiet:
            log.info("%s", describe(result))

    def spent(self, cents: int) -> None:
        pass


class BarReporter:
    """A tqdm bar: jobs done of all, failed, in flight, spend so far, ETA."""

    def __init__(self, total: int, *, stream: TextIO) -> None:
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
