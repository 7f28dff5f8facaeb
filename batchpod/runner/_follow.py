"""After the submit: wait for the job's end at AudioPod, settle its charge, fetch its stems.

The status board tells when the job ends (``batchpod.poller``). A completed job is settled at
its real charge (before the worker goes on under a cap; in the background without one), saved
as ``completed``, and its stems handed to a task of their own, so that the worker submits its
next job at once: downloads overlap AudioPod's processing. At most one completed job per
worker waits for its stems, so a download backlog slows submitting rather than letting jobs
run out of time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager

import anyio
from anyio.abc import TaskGroup

from batchpod.client import RemoteJob, RemoteStatus
from batchpod.errors import ApiError, AuthenticationError
from batchpod.journal import JobState
from batchpod.models import ErrorRecord, Job, JobStatus

from ._crew import Crew
from ._live import LiveJob
from ._outcomes import JobFailed, error_record
from ._stems import Stems
from ._wallet import Wallet

#: Seconds between two reads of the usage log for completed jobs' charges in a run without
#: caps: jobs completing meanwhile share the next read.
USAGE_READ_GAP_S = 1.0


class Follower:
    """Carries submitted jobs to their end (see the module docstring)."""

    def __init__(
        self,
        crew: Crew,
        wallet: Wallet,
        stems: Stems,
        *,
        outcome: Callable[[LiveJob], AbstractContextManager[None]],
    ) -> None:
        self.crew = crew
        self.wallet = wallet
        self.stems = stems
        self.outcome = outcome  # how the pool turns a step's end into the job's result
        self.background: TaskGroup | None = None  # for settlements (set while the pool runs)
        self.stem_tasks: TaskGroup | None = None  # for stem downloads (likewise)
        # Completed jobs waiting for their stems, at most one per worker: when downloading
        # falls behind, workers wait here instead of piling up jobs whose time runs out.
        self.handoffs = anyio.CapacityLimiter(crew.concurrency)

    async def follow(self, job: Job, live: LiveJob, remote: RemoteJob) -> None:
        """Wait until the job ends, settle its charge, then hand its stems on."""
        crew = self.crew
        if not remote.status.terminal:
            try:
                remote = await crew.board.wait(remote.id)
            except AuthenticationError:
                raise
            except ApiError as exc:
                raise JobFailed(error_record(exc)) from exc
        crew.leave_window(live)  # it no longer costs AudioPod requests but for its links
        # List rows may leave the download links out: then the status endpoint has them.
        download = crew.config.download
        if remote.status is RemoteStatus.COMPLETED and download and not remote.download_urls:
            remote = await crew.retrying(functools.partial(crew.api.status, remote.id), live)
        if live.completed_at is None:
            live.completed_at = crew.clock()
        if remote.status is RemoteStatus.FAILED:
            await crew.release(live)  # AudioPod refunds failed jobs
            message = remote.error_message or "AudioPod reported the job as failed"
            live.error = ErrorRecord(type="RemoteJobFailed", message=message)
            await crew.save(live, JobState.FAILED)
            raise JobFailed(live.error)
        if live.estimate_cents:
            # Settled with AudioPod's real charge once its usage log shows it, so that the
            # caps hold against what was charged, not what was guessed. Under a cap, before
            # this worker takes another job (a song longer than its manifest duration must
            # not let the next one past the cap); without one, in the background, in reads
            # shared by the jobs completing within a second.
            if crew.capped:
                await self.wallet.settle(live, remote.id, gap_s=0.0)
            else:
                assert self.background is not None
                settle = functools.partial(
                    self.wallet.settle, live, remote.id, gap_s=USAGE_READ_GAP_S
                )
                self.background.start_soon(settle)
        if remote.quality_scores:
            live.quality_scores = dict(remote.quality_scores)
        live.download_urls = dict(remote.download_urls)
        if not live.state.done:
            await crew.save(live, JobState.COMPLETED)
        crew.reporter.job_event(job, "separated", f"{len(remote.download_urls)} stems")
        if not download:
            crew.finish(live, JobStatus.COMPLETED)
            return
        if not remote.download_urls:
            raise JobFailed(
                ErrorRecord(type="InvalidResponse", message="completed without download URLs")
            )
        if self.stem_tasks is None:
            await self.stems.fetch(job, live, remote)
            return
        # The stems are fetched by a task of their own, so that this worker can submit its
        # next job at once: downloads overlap AudioPod's processing instead of adding to it.
        await self.handoffs.acquire_on_behalf_of(live.index)
        self.stem_tasks.start_soon(self._stems_of, job, live, remote)

    async def _stems_of(self, job: Job, live: LiveJob, remote: RemoteJob) -> None:
        """Fetch a completed job's stems and end the job (the worker has moved on)."""
        try:
            with self.outcome(live):
                left = live.deadline - anyio.current_time()
                with anyio.fail_after(max(left, 0.0)):
                    await self.stems.fetch(job, live, remote)
        finally:
            self.handoffs.release_on_behalf_of(live.index)
            if live.done:
                self.crew.reporter.job_finished(self.crew.result_of(live))
