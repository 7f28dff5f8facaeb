"""How a job or a run ends early: the run's stops, a job's failures, and their error records.

A step of one job never stops the run itself: it raises ``Halt`` with the stop, and the pool,
the only one that halts, takes it (see ``Pool.halt``). A job that fails raises ``JobFailed``
(``Unresolved`` when its submit's outcome cannot be settled without guessing), which the pool
records as the job's result; neither ever leaves the pool.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from enum import StrEnum

from batchpod.errors import BatchpodError, ExitCode
from batchpod.models import ErrorRecord


class StopReason(StrEnum):
    """Why the pool stopped taking new jobs before the manifest was done."""

    AUTH = "auth"  # AudioPod refused the key
    BUDGET = "budget"  # the next job would break max_spend_usd or keep_balance_usd
    BALANCE = "insufficient_balance"  # AudioPod answered 402
    INTERRUPTED = "interrupted"  # SIGINT or SIGTERM


@dataclass(frozen=True, slots=True, kw_only=True)
class Stop:
    """A run-level stop: why, and a message for people."""

    reason: StopReason
    message: str
    signal: int | None = None

    @property
    def exit_code(self) -> ExitCode:
        """The exit code of a run that stopped for this reason."""
        if self.reason is StopReason.AUTH:
            return ExitCode.AUTH
        if self.reason in (StopReason.BUDGET, StopReason.BALANCE):
            return ExitCode.BUDGET
        if self.signal == signal.SIGTERM:
            return ExitCode.TERMINATED
        return ExitCode.INTERRUPTED


class Halt(Exception):
    """Internal: a step met a run-level stop; the pool halts with it."""

    def __init__(self, stop: Stop, *, cancel_in_flight: bool) -> None:
        super().__init__(stop.message)
        self.stop = stop
        self.cancel_in_flight = cancel_in_flight


class JobFailed(Exception):
    """Internal: ends one job as failed with this record."""

    def __init__(self, record: ErrorRecord, *, maybe_charged: bool = False) -> None:
        super().__init__(record.message)
        self.record = record
        self.maybe_charged = maybe_charged


class Unresolved(JobFailed):
    """Internal: the job's submit outcome is unknown and cannot be settled without guessing."""

    def __init__(self, record: ErrorRecord) -> None:
        super().__init__(record, maybe_charged=True)


def error_record(exc: BatchpodError, *, ambiguous: bool = False) -> ErrorRecord:
    """A job's error record for ``exc``; ``ambiguous`` says a submit was perhaps received."""
    message = str(exc)
    if ambiguous:
        message += (
            " (the submit may have reached AudioPod; it was not repeated, so as not to pay "
            "twice: check the job list before re-running)"
        )
    return ErrorRecord(
        type=type(exc).__name__, message=message, http_status=getattr(exc, "http_status", None)
    )
