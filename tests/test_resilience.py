"""Riding out a misbehaving AudioPod: retries, 429 flow control, expiring links, deadlines.

Every test here talks to the sandbox over loopback with its fault knobs switched on; the
sandbox's own counters are the witness for what was sent.
"""

from __future__ import annotations

import dataclasses
import random
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from conftest import FakeClock, Quiet, SandboxFactory, results_of, run_cli, write_manifest

from batchpod.budget import BudgetGuard
from batchpod.client import ApiClient
from batchpod.config import RunConfig
from batchpod.flow import Pacer, SubmitWindow
from batchpod.models import Job, JobStatus, Mode, Source
from batchpod.retry import PollPolicy, RetryPolicy
from batchpod.runner import Pool
from batchpod.sandbox import SandboxSettings, SandboxThread

#: The bound the README states for the fault storm below: API requests per job.
STORM_REQUESTS_PER_JOB = 8


pytestmark = pytest.mark.usefixtures("clean_env")


def api_requests(stats: dict[str, Any]) -> int:
    """API requests the sandbox received (stem downloads and its admin endpoints apart)."""
    return sum(n for route, n in stats["requests"].items() if " /api/" in route)


def test_a_fault_storm_loses_no_job_and_pays_for_none_twice(tmp_path: Path) -> None:
    """20% of API responses 5xx, 10% 429 with Retry-After, 5% of jobs FAILED, links that
    expire in 2 s (a slow storage host makes each job's fourth stem outlive its link), a
    per-key rate limit, and one file too large for the plan: every job AudioPod did not fail
    succeeds, none is created twice, the 413 is not retried, and the requests stay within the
    stated bound."""
    settings = SandboxSettings(
        processing_s=(0.2, 1.0),
        rate_5xx=0.2,
        rate_429=0.1,
        retry_after_s=1,
        failure_rate=0.05,
        download_ttl_s=2.0,
        download_latency_s=0.7,
        rps_limit=100.0,
        upload_cap_bytes=1000,
        seed=7,
    )
    urls = 40
    body = "".join(
        f"  - {{url: 'https://cdn.example.com/s{i}.mp3', mode: four}}\n" for i in range(urls)
    )
    path = write_manifest(tmp_path, body + "  - {file: song.wav, mode: four, name: too-big}\n")
    with SandboxThread(settings) as sb:
        code, _, err = run_cli(sb, path, "--concurrency", "16")
        stats = sb.stats()
    assert "Traceback" not in err
    data = results_of(path)
    jobs = {job["name"]: job for job in data["jobs"]}
    too_big = jobs.pop("too-big")
    remote_failures = [
        j for j in jobs.values() if j.get("error", {}).get("type") == "RemoteJobFailed"
    ]
    assert code == 1  # the failed ones
    # Every job that AudioPod did not fail succeeded, each with both stems on disk.
    for job in jobs.values():
        if job in remote_failures:
            assert job["status"] == "failed"
            continue
        assert job["status"] == "succeeded", job
        assert [f["stem"] for f in job["files"]] == ["bass", "drums", "other", "vocals"]
        for file in job["files"]:
            assert (tmp_path / file["path"]).stat().st_size == file["size"]
    # The sandbox failed about 5% of jobs; it made as many FAILED as the results say.
    assert len(remote_failures) < urls // 4
    # No job was created twice: one AudioPod job per URL, and the rejected file made none.
    assert stats["jobs"]["created"] == urls
    assert stats["submissions"] == {"URL/four": urls}
    assert len({j["remote_id"] for j in jobs.values()}) == urls
    # The permanent error was sent once and not retried.
    assert too_big["status"] == "failed" and too_big["error"]["http_status"] == 413
    assert stats["responses"]["413"] == 1
    # Its earlier attempts, if any, met injected faults (as may the job-list reads that
    # settled a 5xx'd submit); the 413 ended it at once.
    faults = too_big.get("retries", {})
    assert set(faults) <= {"429", "500", "502", "503"}
    assert too_big["attempts"] <= sum(faults.values()) + 1
    # The faults really happened, and the results count what batchpod met.
    injected = stats["injected"]
    assert injected["429"] > 0 and injected["500"] + injected["502"] + injected["503"] > 0
    # Each job that got to download met an expired link at least once, and refreshed it.
    assert stats["downloads"]["denied"] >= urls - len(remote_failures)
    requests = data["run"]["requests"]
    assert requests["api"] == api_requests(stats)  # every request was counted
    assert requests["throttled"] == stats["responses"]["429"]
    assert requests["retries"]["429"] > 0
    assert requests["retries"]["link_expired"] == stats["downloads"]["denied"]
    per_job = sum(j.get("retries", {}).get("link_expired", 0) for j in jobs.values())
    assert per_job == stats["downloads"]["denied"]
    # The stated bound: at most STORM_REQUESTS_PER_JOB API requests per job, storm included.
    assert requests["api"] <= STORM_REQUESTS_PER_JOB * (urls + 1), requests
    assert requests["per_job"] <= STORM_REQUESTS_PER_JOB


def url_jobs(n: int, *, mode: Mode = Mode.TWO) -> list[Job]:
    return [
        Job(name=f"song-{i}", source=Source(url=f"https://e.com/{i}.mp3"), mode=mode)
        for i in range(n)
    ]


def make_pool(client: ApiClient, jobs: list[Job], tmp: Path, **options: Any) -> Pool:
    run_options = RunConfig(
        output_dir=tmp,
        poll=PollPolicy(first_s=0.05, growth=0.25, max_s=0.2),
        retry=RetryPolicy(max_attempts=50, base_s=0.01, max_backoff_s=0.1),
        **options,
    )
    guard = BudgetGuard(max_spend_cents=None, keep_balance_cents=None, balance_cents=None)
    return Pool(client, jobs, run_options, budget=guard, reporter=Quiet(), rng=random.Random(3))


@pytest.mark.anyio
async def test_429s_shrink_the_jobs_in_flight_and_they_recover(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Half of all requests answered 429 for 2.5 s: the submit window halves (16 -> 8 ->
    4 ...) and AudioPod sees fewer jobs in flight; once the 429s stop, the window grows back
    to the concurrency and AudioPod sees that many jobs in flight again."""
    concurrency, storm_s = 16, 2.5
    async with (
        sandbox_factory(
            processing_s=(0.2, 0.4), rate_429=0.5, retry_after_s=0, balance_cents=10**7
        ) as sb,
        ApiClient(base_url=sb.base_url, api_key=sb.api_key) as client,
    ):
        pool = make_pool(client, url_jobs(400), tmp_path, concurrency=concurrency, download=False)
        samples: list[tuple[float, int, int]] = []  # (seconds, window, active at AudioPod)
        calm_at: float | None = None

        async def watch() -> None:
            nonlocal calm_at
            start = anyio.current_time()
            while True:
                now = anyio.current_time() - start
                samples.append((now, pool.window.limit, sb.stats()["jobs"]["active"]))
                if calm_at is None and now >= storm_s:
                    sb.state.settings = dataclasses.replace(sb.state.settings, rate_429=0.0)
                    calm_at = now
                await anyio.sleep(0.02)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            results = await pool.run()
            tg.cancel_scope.cancel()
        stats = sb.stats()
    assert pool.stop is None, pool.stop
    assert calm_at is not None, "the run ended before the 429s were switched off"
    assert [r.status for r in results] == [JobStatus.COMPLETED] * 400
    assert stats["jobs"]["created"] == 400  # 429s never made a second job
    storm = [s for s in samples if s[0] < calm_at]
    calm = [s for s in samples if s[0] >= calm_at + 0.5]
    # During the storm the window shrank to a quarter or less, and AudioPod saw it.
    assert min(window for _, window, _ in storm) <= concurrency // 4
    assert pool.window.decreases >= 2
    late_storm = [active for t, _, active in storm if t >= 1.5]
    assert late_storm and max(late_storm) <= concurrency // 2
    # After it, the window came back to the full concurrency, and so did the jobs in flight.
    assert pool.window.limit == concurrency
    assert max(active for _, _, active in calm) >= concurrency - 2
    assert max(window for _, window, _ in calm) == concurrency


def test_the_window_is_aimd() -> None:
    """Halving on 429 (once per cooldown), additive growth per accepted submit, bounds kept."""

    async def go() -> None:
        window = SubmitWindow(maximum=32)
        window.throttled()
        assert window.limit == 16
        window.throttled()  # within the cooldown: one burst counts once
        assert window.limit == 16 and window.throttles == 2
        # A whole window of accepted submits adds max(1, 32 / 16) = 2 places.
        for _ in range(16):
            window.accepted()
        assert window.limit == 17  # 16 + 16 * 2/size, size growing as it goes: 17.9...
        for _ in range(1000):
            window.accepted()
        assert window.limit == 32  # never past the concurrency
        small = SubmitWindow(maximum=3, cooldown_s=0)
        for _ in range(5):
            small.throttled()
        assert small.limit == 1  # never below one job

    anyio.run(go)


@pytest.mark.anyio
async def test_the_window_holds_new_submits_until_jobs_end() -> None:
    """A shrunken window admits no new job until enough in-flight ones have left."""
    window = SubmitWindow(maximum=4)
    for _ in range(4):
        await window.acquire()
    window.throttled()  # now 2, with 4 in flight
    admitted: list[float] = []

    async def newcomer() -> None:
        await window.acquire()
        admitted.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        tg.start_soon(newcomer)
        await anyio.sleep(0.05)
        window.release()
        window.release()  # 2 in flight, window 2: still full
        await anyio.sleep(0.05)
        assert admitted == []
        window.release()
        await anyio.sleep(0.05)
        assert len(admitted) == 1


def test_pacer_spaces_requests_evenly() -> None:
    """21 callers at 20 per second, all asking at once: the first goes at once, each of the
    others is given a slot 1/20 s after the one before, the last a second after the first.
    On a clock of the test's own, which the pacer's sleeps move, the slots are exact."""
    clock = FakeClock(start=0.0)
    slots: list[float] = []

    async def sleep(seconds: float) -> None:
        slots.append(clock.now + seconds)
        clock.now = max(clock.now, clock.now + seconds)
        await anyio.lowlevel.checkpoint()

    async def go() -> None:
        pacer = Pacer(20, clock=clock, sleep=sleep)
        async with anyio.create_task_group() as tg:
            for _ in range(21):
                tg.start_soon(pacer.wait)

    anyio.run(go)
    assert sorted(slots) == pytest.approx([n / 20 for n in range(1, 21)])


def test_max_rps_keeps_a_run_under_the_services_rate_limit(tmp_path: Path) -> None:
    """AudioPod allows 10 requests per second on this key; with --max-rps 8 a run that would
    otherwise burst far past it meets no 429 at all, and its requests are spread in time."""
    body = "".join(
        f"  - {{url: 'https://cdn.example.com/r{i}.mp3', mode: two}}\n" for i in range(12)
    )
    path = write_manifest(tmp_path, body, concurrency=12)
    settings = SandboxSettings(processing_s=0.1, rps_limit=10.0)
    with SandboxThread(settings) as sb:
        code, _, err = run_cli(sb, path, "--no-download", "--max-rps", "8")
        stats = sb.stats()
    assert code == 0, err
    assert stats["responses"].get("429", 0) == 0
    assert api_requests(stats) >= 13  # a submit per job, and more
    # As the sandbox saw them arrive: never more than its limit of 10 in a second, where the
    # control below bursts past it. (The pacer's exact slots are shown on a FakeClock in
    # test_pacer_spaces_requests_evenly; here a stall of either thread could bunch a few.)
    assert stats["api_peak_per_s"] <= 10


def test_without_max_rps_the_same_run_meets_429s_and_still_finishes(tmp_path: Path) -> None:
    """The control for the test above: the burst is real, and 429s are ridden out."""
    body = "".join(
        f"  - {{url: 'https://cdn.example.com/r{i}.mp3', mode: two}}\n" for i in range(12)
    )
    path = write_manifest(tmp_path, body, concurrency=12)
    settings = SandboxSettings(processing_s=0.1, rps_limit=10.0, retry_after_s=0)
    with SandboxThread(settings) as sb:
        code, _, err = run_cli(sb, path, "--no-download")
        stats = sb.stats()
    assert code == 0, err
    assert stats["responses"]["429"] > 0
    assert stats["api_peak_per_s"] > 10
    assert stats["jobs"]["created"] == 12
    assert results_of(path)["run"]["requests"]["throttled"] == stats["responses"]["429"]


def test_a_job_past_its_timeout_is_expired_and_a_rerun_finishes_it(tmp_path: Path) -> None:
    """A job still processing at --job-timeout is recorded as expired with its AudioPod id;
    the re-run follows that same job to the end without submitting it again."""
    path = write_manifest(tmp_path, "  - {url: 'https://cdn.example.com/slow.mp3', mode: two}\n")
    with SandboxThread(SandboxSettings(processing_s=2.5)) as sb:
        code, _, err = run_cli(sb, path, "--job-timeout", "1")
        (job,) = results_of(path)["jobs"]
        assert code == 1
        assert job["status"] == "expired"
        assert job["error"]["type"] == "JobTimeout"
        assert "not finished after 1 s" in job["error"]["message"]
        assert job["remote_id"] in job["error"]["message"]
        assert (
            f"slow: expired: JobTimeout: not finished after 1 s; AudioPod job {job['remote_id']}"
            in err
        )
        db = sqlite3.connect(path.with_name("jobs.batchpod.db"))
        try:
            assert [r[0] for r in db.execute("SELECT state FROM jobs")] == ["submitted"]
        finally:
            db.close()
        code, _, err = run_cli(sb, path)
        stats = sb.stats()
    assert code == 0, err
    (again,) = results_of(path)["jobs"]
    assert again["status"] == "succeeded"
    assert again["remote_id"] == job["remote_id"]
    assert stats["jobs"]["created"] == 1 and stats["submissions"] == {"URL/two": 1}


@pytest.mark.anyio
async def test_a_download_backlog_does_not_delay_noticing_completions(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Downloads go one at a time to a slow storage host, yet every job's completion is seen
    before the second job's stems are stored: polls do not wait behind downloads."""
    async with (
        sandbox_factory(processing_s=0.3, download_latency_s=0.25) as sb,
        ApiClient(base_url=sb.base_url, api_key=sb.api_key) as client,
    ):
        pool = make_pool(client, url_jobs(8), tmp_path, concurrency=8, download_concurrency=1)
        results = await pool.run()
        downloads = sb.stats()["downloads"]
    assert [r.status for r in results] == [JobStatus.SUCCEEDED] * 8
    assert downloads["served"] == 16 and downloads["peak_in_flight"] == 1  # one at a time
    noticed = [r.completed_at for r in results]
    stored = sorted(r.finished_at for r in results if r.finished_at is not None)
    assert None not in noticed and len(stored) == 8
    assert max(n for n in noticed if n is not None) < stored[1]
