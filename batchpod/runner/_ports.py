"""What the pool talks to: the AudioPod operations, the state sink and the progress reporter.

Protocols only, so that the pool's tests drive it with an in-memory API and no server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

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


class JournalSink(Protocol):
    """Where job records go: ``put`` returns once the record is durable."""

    async def put(self, record: JobRecord) -> None: ...


class NoJournal:
    """A sink that keeps nothing (tests and embedding without a state file)."""

    async def put(self, record: JobRecord) -> None:
        pass


class Reporter(Protocol):
    """Receives the pool's progress; every call comes from the event loop's thread."""

    def job_event(self, job: Job, event: str, detail: str = "") -> None: ...

    def job_finished(self, result: JobResult) -> None: ...

    def spent(self, cents: int) -> None:
        """The run's spend so far (settled charges, in cents) changed."""
