"""The worker pool and the status board on their own, over an in-memory StemApi.

These tests need no server: the pool talks to AudioPod only through the StemApi protocol, and
``MemoryApi`` here is a small implementation of that protocol (jobs end a fixed time after
their submit). Behaviour over real sockets is covered by test_run.py.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchpod.budget import BudgetGuard
from batchpod.client import Balance, RemoteJob, RemoteStatus, UsageRow
from batchpod.config import RunConfig
from batchpod.errors import RateLimited, ServerError
from batchpod.models import Job, JobResult, JobStatus, Mode, Source
from batchpod.poller import PAGE_SIZE
from batchpod.retry import NO_WAIT, PollPolicy, RetryPolicy
from batchpod.runner import Pool

FAST_POLL = PollPolicy(first_s=0.01, growth=0.25, max_s=0.05, jitter=0.2)


class MemoryApi:
    """Jobs that end `job_time_s` after their submit; counts calls, jobs in flight and
    downloads in progress, and notes when each job's last stem was stored."""

    def __init__(
        self,
        *,
        job_time_s: float = 0.03,
        list_fails: bool = False,
        submit_errors: list[Exception] | None = None,
        download_s: float = 0.0,
    ) -> None:
        self.download_s = download_s
        self.job_time_s = job_time_s
        self.list_fails = list_fails
        self.submit_errors = list(submit_errors or [])  # raised by the first submits, in turn
        self.created: dict[str, float] = {}
        self.calls = {"submit": 0, "status": 0, "list": 0, "download": 0}
        self.active_peak = 0
        self.downloading = 0  # downloads in progress
        self.download_peak = 0
        self.submits_while_downloading = 0
        self.stems_stored: Counter[str] = Counter()  # by job id
        self.stored_at: dict[str, float] = {}  # job id: when its last stem was stored
        self.unstored_peak = 0  # most jobs submitted whose stems were not all stored yet

    def _row(self, job_id: str) -> RemoteJob:
        done = anyio.current_time() >= self.created[job_id] + self.job_time_s
        if not done:
            return RemoteJob(id=job_id, status=RemoteStatus.PROCESSING)
        urls = {"vocals": f"mem://{job_id}/vocals", "no_vocals": f"mem://{job_id}/no_vocals"}
        return RemoteJob(id=job_id, status=RemoteStatus.COMPLETED, download_urls=urls)

    def _active(self) -> int:
        now = anyio.current_time()
        return sum(1 for t in self.created.values() if now < t + self.job_time_s)

    async def submit_url(self, url: str, *, mode: str, stem: str | None) -> RemoteJob:
        self.calls["submit"] += 1
        await anyio.lowlevel.checkpoint()
        if self.submit_errors:
            raise self.submit_errors.pop(0)
        job_id = str(1000 + len(self.created))
        self.created[job_id] = anyio.current_time()
        self.active_peak = max(self.active_peak, self._active())
        self.submits_while_downloading += self.downloading > 0
        self.unstored_peak = max(self.unstored_peak, len(self.created) - len(self.stored_at))
        return RemoteJob(id=job_id, status=RemoteStatus.PENDING)

    async def submit_file(self, path: Path, *, mode: str, stem: str | None) -> RemoteJob:
        raise AssertionError("these tests submit URLs only")

    async def status(self, job_id: str) -> RemoteJob:
        self.calls["status"] += 1
        await anyio.lowlevel.checkpoint()
        return self._row(job_id)

    async def list_jobs(self, *, skip: int = 0, limit: int = 50) -> list[RemoteJob]:
        self.calls["list"] += 1
        await anyio.lowlevel.checkpoint()
        if self.list_fails:
            raise ServerError("the list is down", http_status=503)
        newest_first = sorted(self.created, key=lambda i: self.created[i], reverse=True)
        return [self._row(i) for i in newest_first[skip : skip + limit]]

    async def balance(self) -> Balance:
        return Balance(balance_cents=10_000, total_spent_cents=None)

    async def usage(self, *, page: int = 1, limit: int = 50) -> list[UsageRow]:
        return []  # charges are not modelled here (the sandbox tests cover them)

    async def download(self, url: str, dest: Path, *, max_bytes: int | None = None) -> int:
        self.calls["download"] += 1
        self.downloading += 1
        self.download_peak = max(self.download_peak, self.downloading)
        try:
            await anyio.sleep(self.download_s)
            await anyio.Path(dest).write_bytes(url.encode())
        finally:
            self.downloading -= 1
        job_id = url.removeprefix("mem://").split("/")[0]
        self.stems_stored[job_id] += 1
        if self.stems_stored[job_id] == 2:  # both stems of a two-stem job
            self.stored_at[job_id] = anyio.current_time()
        return len(url)


class Quiet:
    """A Reporter that keeps the finished results."""

    def __init__(self) -> None:
        self.finished: list[JobResult] = []

    def job_event(self, job: Job, event: str, detail: str = "") -> None:
        pass

    def job_finished(self, result: JobResult) -> None:
        self.finished.append(result)

    def spent(self, cents: int) -> None:
        pass


def jobs(n: int) -> list[Job]:
    return [
        Job(name=f"song-{i}", source=Source(url=f"https://e.com/{i}.mp3"), mode=Mode.TWO)
        for i in range(n)
    ]


def pool(api: MemoryApi, n: int, concurrency: int, tmp: Path, **options: object) -> Pool:
    options.setdefault("retry", NO_WAIT)
    run_options = RunConfig(
        concurrency=concurrency,
        output_dir=tmp,
        poll=FAST_POLL,
        **options,  # type: ignore[arg-type]
    )
    guard = BudgetGuard(max_spend_cents=None, keep_balance_cents=None, balance_cents=None)
    return Pool(api, jobs(n), run_options, budget=guard, reporter=Quiet(), rng=random.Random(1))


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(1, 60), st.integers(1, 12))
def test_peak_in_flight_never_exceeds_concurrency(tmp_path: Path, n: int, concurrency: int) -> None:
    """However many jobs and workers, no more than `concurrency` jobs are ever in flight."""
    api = MemoryApi()
    p = pool(api, n, concurrency, tmp_path)
    results = anyio.run(p.run)
    assert [r.status for r in results] == [JobStatus.SUCCEEDED] * n
    assert p.peak_in_flight <= concurrency
    assert api.active_peak <= concurrency
    if n >= 2 * concurrency:
        assert p.peak_in_flight == concurrency  # and the pool does run that many at once


@pytest.mark.anyio
async def test_board_reads_many_jobs_with_few_requests(tmp_path: Path) -> None:
    """With 250 jobs in flight, statuses come from list pages: far fewer requests than jobs."""
    api = MemoryApi(job_time_s=0.2)
    p = pool(api, 500, 250, tmp_path, download=False)
    results = await p.run()
    assert all(r.status is JobStatus.COMPLETED for r in results)
    assert api.calls["submit"] == 500
    assert api.calls["status"] == 0  # every job was found in the first pages
    # Each sweep reads at most 250 // PAGE_SIZE + 2 pages, and sweeps are shared.
    assert api.calls["list"] <= p.board.sweeps * (250 // PAGE_SIZE + 2)
    # Polling each job would cost at least one status request per job.
    assert api.calls["list"] < 500


@pytest.mark.anyio
async def test_board_asks_each_job_when_the_list_keeps_failing(tmp_path: Path) -> None:
    """A job list that keeps answering 503 does not strand jobs: after a few failed sweeps
    the board asks each due job's status endpoint, and every job still completes."""
    api = MemoryApi(list_fails=True)
    p = pool(api, 10, 5, tmp_path, download=False)
    results = await p.run()
    assert all(r.status is JobStatus.COMPLETED for r in results)
    assert api.calls["list"] >= 3
    assert api.calls["status"] >= 10


@pytest.mark.anyio
async def test_downloads_name_files_by_stem(tmp_path: Path) -> None:
    """Each stem lands in output_dir/<name>/<stem>.wav and is recorded with its size."""
    api = MemoryApi()
    p = pool(api, 3, 2, tmp_path)
    results = await p.run()
    for result in results:
        assert [f.stem for f in result.files] == ["no_vocals", "vocals"]
        for file in result.files:
            assert file.path == tmp_path / result.job.name / f"{file.stem}.wav"
            assert file.path.stat().st_size == file.size


@pytest.mark.anyio
async def test_job_timeout_runs_from_the_submit_not_from_the_wait_before_it(
    tmp_path: Path,
) -> None:
    """Two 429s hold a submit back for 1.2 s; the job then takes 0.2 s. With --job-timeout 1
    it succeeds: the time a job may take starts at its submit, so a job is never paid for
    and given up on in the same moment."""
    api = MemoryApi(job_time_s=0.2, submit_errors=[RateLimited("slow down", retry_after_s=0.6)] * 2)
    retry = RetryPolicy(max_retry_after_s=0.6, max_total_s=5.0, max_backoff_s=1.0)
    p = pool(api, 1, 1, tmp_path, job_timeout_s=1.0, retry=retry)
    (result,) = await p.run()
    assert result.status is JobStatus.SUCCEEDED, result.error
    assert api.calls["submit"] == 3
    assert result.retries == {"429": 2}


@pytest.mark.anyio
async def test_a_429_that_is_not_retried_still_shrinks_the_window(tmp_path: Path) -> None:
    """With no retries allowed, a 429 fails its job, and still tells the pool to slow down."""
    api = MemoryApi(submit_errors=[RateLimited("slow down", retry_after_s=0.0)])
    p = pool(api, 8, 8, tmp_path, retry=RetryPolicy(max_attempts=1))
    results = await p.run()
    assert [r.status for r in results].count(JobStatus.FAILED) == 1
    assert p.window.throttles == 1 and p.window.decreases == 1


@pytest.mark.anyio
async def test_workers_move_on_while_stems_download_but_never_outrun_them(
    tmp_path: Path,
) -> None:
    """A worker hands its completed job's stems to a download task and takes its next job,
    so downloads overlap processing; when downloads fall behind, the workers wait rather than
    pile up jobs whose time would run out in the queue."""
    api = MemoryApi(job_time_s=0.1, download_s=0.05)
    p = pool(api, 40, 4, tmp_path, download_concurrency=1, job_timeout_s=2.0)
    results = await p.run()
    assert [r.status for r in results] == [JobStatus.SUCCEEDED] * 40, results[0].error
    assert api.calls["download"] == 80 and api.download_peak == 1
    # Downloads, one at a time, are the slow part: the workers kept submitting while they
    # ran (the first 4 submits come before any job is done)...
    assert api.submits_while_downloading >= 30
    # ...but never more than 4 jobs at AudioPod plus 4 handed to the downloads were waiting.
    assert api.unstored_peak <= 2 * 4
    assert p.follower.handoffs.borrowed_tokens == 0  # every hand-off was given back


@pytest.mark.anyio
async def test_downloads_overlap_the_next_jobs_processing(tmp_path: Path) -> None:
    """One worker, jobs of 0.2 s and two stems of 0.05 s each: the worker submits its next
    job while the last one's stems download, rather than after."""
    api = MemoryApi(job_time_s=0.2, download_s=0.05)
    p = pool(api, 8, 1, tmp_path, download_concurrency=2)
    results = await p.run()
    assert [r.status for r in results] == [JobStatus.SUCCEEDED] * 8
    # Each next job was submitted before the stems of the one before it were stored.
    ids = sorted(api.created, key=api.created.__getitem__)
    assert len(ids) == len(api.stored_at) == 8
    for previous, following in itertools.pairwise(ids):
        assert api.created[following] < api.stored_at[previous]
