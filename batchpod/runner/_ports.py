"""What the pool talks to: the AudioPod operations, the state sink and the progress reporter.

Protocols only, so that the pool's tests drive it with an in-memory API and no server.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

from batchpod.budget import Refused
from batchpod.client import Balance, RemoteJob, UsageRow
from batchpod.journal import JobRecord
from batchpod.models import Job, JobResult


class StemApi(Protocol):
    """The AudioPod operations the pool needs."""

    async def submit_url(self, url: str, *, mode: str, stem: str | None) -> RemoteJob: ...

    async def submit_file(self, path: Path, *, mode: str, stem: str | None) -> RemoteJob: ...

    async def status(self, job_id: str) -> RemoteJob: ...

    async def list_jobs(self, *, skip: int = 0, limit: int = 50) -> list[RemoteJob]: ...

    async def download(self, url: str, dest: Path, *, max_bytes: int | None = None) -> int: ...

    async def usage(self, *, page: int = 1, limit: int = 50) -> list[UsageRow]: ...

    async def balance(self) -> Balance: ...

    async def delete_job(self, job_id: str) -> None: ...


class JournalSink(Protocol):
    """Where job records go: ``put`` returns once the record is durable."""

    async def put(self, record: JobRecord) -> None: ...


class NoJournal:
    """A sink that keeps nothing (tests and embedding without a state file)."""

    async def put(self, record: JobRecord) -> None:
        pass


class Fleet(Protocol):
    """The state the pool shares with other workers on one manifest (``batchpod.fleet``):
    the jobs it claims, the budget, and the locks on like-named songs. A pool without one
    works the whole manifest alone."""

    capped: bool  # a cap is in force (the fleet's reservations decide, not the run's)

    def fresh(self) -> bool:
        """Whether this worker surely still holds its jobs (a submit is sent only then)."""

    async def claim(self, limit: int = 1) -> tuple[list[JobRecord], tuple[str, str] | None]:
        """Up to ``limit`` free jobs, now this worker's, in manifest order; or none and the
        fleet-wide stop (reason, message) that another worker set."""

    async def waiting(self) -> bool:
        """Whether quiet workers hold jobs that will soon be free to take over."""

    async def halt(self, reason: str, message: str) -> None:
        """Stop the whole fleet: nobody takes another job."""

    async def settle(
        self, key: str, *, status: str, reason: str | None, estimated_cents: int | None
    ) -> None:
        """The job ended here: give it back, settled for this run."""

    async def claimed_ids(self) -> set[str]:
        """Every AudioPod job id that some job in the shared state holds."""

    def hold(self, identity: str) -> AbstractAsyncContextManager[None]:
        """Hold the fleet-wide lock on a song name (``reconcile.identity``)."""

    async def reserve(
        self, key: str, cents: int, *, max_spend_cents: int | None, keep_balance_cents: int | None
    ) -> Refused | None: ...

    async def submitted(self, key: str) -> None: ...

    async def charged(self, key: str, cents: int) -> None: ...

    async def release(self, key: str) -> None: ...

    async def clock(self) -> float:
        """The shared clock, to stamp a wallet read before it is sent."""

    async def balance(self, cents: int, *, sent_at: float) -> None: ...


class Reporter(Protocol):
    """Receives the pool's progress; every call comes from the event loop's thread."""

    def job_event(self, job: Job, event: str, detail: str = "") -> None: ...

    def job_finished(self, result: JobResult) -> None: ...

    def spent(self, cents: int) -> None:
        """The run's spend so far (settled charges, in cents) changed."""
