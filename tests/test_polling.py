"""How often a run reads job statuses: a request budget per job, spent where it buys most.

Each case is a real `batchpod run` against the sandbox over loopback; the sandbox counts the
requests by route and, for every job, how long after its end the first answer showed it.
Request counts are asserted (they are the contract); times are only reported by the
benchmark.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, write_manifest

from batchpod.sandbox import SandboxSettings, SandboxThread

LIST = "GET /api/v1/stem-extraction/jobs"
STATUS = "GET /api/v1/stem-extraction/status/{job_id}"
BOOKKEEPING = ("GET /api/v1/api-wallet/usage", "GET /api/v1/api-wallet/balance")


def _url_jobs(n: int, tag: str) -> str:
    return "".join(
        f"  - {{url: 'https://cdn.example.com/{tag}/{i}.mp3', mode: two}}\n" for i in range(n)
    )


#: Reads a run makes once, whatever its jobs: the balance before it starts (the key's
#: check) and the usage log after its jobs end (the charges for the results).
PER_RUN = 2


def _watching(stats: dict[str, Any]) -> int:
    """Requests spent learning of jobs' ends and charges while they ran: list pages,
    status, usage and balance reads, the run's own two apart."""
    requests = stats["requests"]
    return sum(requests.get(route, 0) for route in (LIST, STATUS, *BOOKKEEPING)) - PER_RUN


def _run(tmp_path: Path, sb: SandboxThread, jobs: int, concurrency: int, *args: str) -> Any:
    tag = f"{tmp_path.name}-{jobs}-{concurrency}-{len(args)}"
    path = write_manifest(tmp_path, _url_jobs(jobs, tag), concurrency=concurrency)
    sb.reset_counters()
    code, _, err = run_cli(sb, path, "--no-download", "--quiet", *args)
    assert code == 0, err
    return sb.stats()


@pytest.mark.parametrize("budget", [None, "1"])
def test_many_jobs_in_flight_share_pages_within_the_budget(
    tmp_path: Path, budget: str | None
) -> None:
    """With 40 jobs in flight, the run's status, list and bookkeeping reads stay within
    --poll-budget per job (2 by default), and every job's end was seen."""
    with SandboxThread(SandboxSettings(processing_s=(1.0, 2.0))) as sb:
        args = () if budget is None else ("--poll-budget", budget)
        stats = _run(tmp_path, sb, 120, 40, *args)
    per_job = _watching(stats) / 120
    assert stats["requests"]["POST /api/v1/stem-extraction/api/extract"] == 120
    assert per_job <= float(budget or 2), stats["requests"]
    assert stats["notice_delay"]["jobs"] == 120


def test_a_smaller_budget_reads_the_list_less(tmp_path: Path) -> None:
    """The budget is what sets the pace: halving it cuts the list reads of the same work."""
    with SandboxThread(SandboxSettings(processing_s=2.0)) as sb:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        wide = _run(tmp_path / "a", sb, 60, 30, "--poll-budget", "2")
        narrow = _run(tmp_path / "b", sb, 60, 30, "--poll-budget", "0.5")
    assert narrow["requests"][LIST] < wide["requests"][LIST]
    assert _watching(narrow) / 60 <= 0.5, narrow["requests"]


def test_a_lone_job_keeps_its_own_schedule(tmp_path: Path) -> None:
    """One job at a time: a page read serves only it, so the budget would buy two looks a
    job; the job's own schedule (every quarter of its age) stands instead, and costs more."""
    with SandboxThread(SandboxSettings(processing_s=2.0)) as sb:
        stats = _run(tmp_path, sb, 3, 1)
    assert stats["requests"][LIST] / 3 > 2
    assert stats["notice_delay"]["jobs"] == 3
