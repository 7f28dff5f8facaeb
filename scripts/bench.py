"""batchpod benchmarks: print the figures the README quotes.

Each scenario runs batchpod in a fresh interpreter so its time and peak memory are its own.
Run from the repository root with the project installed (``pip install -e '.[bench]'`` adds
the official ``audiopod`` SDK, which the default scenario compares against, and ``pgserver``,
whose PostgreSQL the fleet section runs on):

    python scripts/bench.py                  # all: the table below, a few minutes
    python scripts/bench.py --quick          # all, shrunk to about a minute (CI smoke)
    python scripts/bench.py validate --jobs 100000 --repeat 3
    python scripts/bench.py run --jobs 500 --concurrency 100 --job-time 1 --repeat 3
    python scripts/bench.py validate --jobs 100000 --json bench.json
    python scripts/bench.py requests --concurrencies 10,100,1000 --job-time 2-10
    python scripts/bench.py fleet            # SQLite, shards and a PostgreSQL fleet, ~3 min
    python scripts/bench.py scale            # all's scale rows and their targets alone
    python scripts/bench.py run --client-src /tmp/old-checkout   # the same, older code

`requests` counts the API requests per job (stem downloads apart) that a run sends at each
concurrency, with job times drawn from a range, by endpoint: it shows how the list-page
polling keeps that figure flat as concurrency grows. Each concurrency runs ``2 x C`` jobs
(at least 50) with ``--no-download``.

`run` starts the sandbox in its own process (so the figures are the client's alone) and runs
`batchpod run` on a generated manifest of four-stem URL jobs, downloads included.

`fleet` runs the same manifest of N URL jobs (default 400; ``--quick`` 120) with
``--no-download`` against one sandbox whose jobs take T seconds (default 0.1: the quickest
spacing of status reads, so that the figures are the coordination's, not the jobs'), with C
jobs in flight in all (default 20), as real ``batchpod run`` processes started at the same
moment; a case's wall time runs from the first start to the last exit:

1. SQLite: one process, concurrency C, its state beside the manifest.
2. PostgreSQL: a fleet of 1, 2 and 4 workers on one database (``--state postgresql://...``,
   ``--lease 10s``), each with concurrency ``C // workers``, so that as many jobs are in
   flight as in the SQLite run.
3. A straggler: four parts, one of them slowed (``--max-rps``, default 12; ``--quick`` 6):
   fixed SQLite shards (``--shard 0/4`` slowed ... ``3/4``) against a fleet of four workers
   (worker 0 slowed), each with concurrency ``C // 4``; ``shards/fleet`` is the ratio of
   their walls, ``slowed_part_jobs`` how many jobs the slowed process worked.

Every case has a fresh manifest folder and database, and must end with every job completed
(the results files, or ``batchpod results --state URL``, exit 0), else the benchmark stops;
``nonzero_exits`` counts, over the repeats, processes that exited other than 0 even so (their
log's tail goes to stderr). PostgreSQL is a real server from the ``pgserver`` wheel
(``pip install -e '.[bench]'``) on loopback with a password, ``fsync`` off. CPU is the
parts' own, PostgreSQL's apart; ``cores_busy`` adds both and the sandbox's over the wall
time. ``all`` runs it after its table (``--no-fleet`` skips it). The cases run in turn,
``--repeat`` times (default 3; ``--quick`` 1).

`all` (the default) prints one table, a row per measurement, then the performance targets
(issue 21), each with its figure and whether it is met:

1. Three workloads of four-stem URL jobs (``?duration=60``), stems downloaded, each against
   a sandbox of its own whose jobs take T seconds and whose API answers after L seconds
   (L=0.02): 200 jobs of 20 s at concurrency 100; 300 jobs of 2 s at 50; 50 jobs of 5 s at
   10. The ideal is ``ceil(N/C) x (T + 2L)``: rounds of one job time plus a submit and a
   status round trip. Each row gives the API requests per job and the noticing delay: from
   a job's end to the first answer that showed it (the sandbox knows both), median and 90th
   percentile.
2. The same workloads through the official SDK as its docs show it: ``client.stems.separate``
   in a thread pool of C workers, one ``Client`` per thread, each stem then fetched with
   ``requests``, in its own process against the same sandbox.
3. Durability: the 2 s workload again with ``--state`` in ``/dev/shm`` (RAM) against the
   state file beside the manifest on disk, as shipped, to show what the SQLite commits cost.
4. Scale: a generated manifest (default 100,000 jobs, one in ten a small WAV upload):
   ``validate``, ``estimate`` (offline, no key), and ``run --no-download`` against a sandbox
   with T=0 and L=0, also on a tenth of the manifest, for memory against the number of jobs.
5. Fleet: the ``fleet`` section above, in a table of its own (``--no-fleet`` leaves it out).

API requests exclude stem downloads. ``--quick`` shrinks it all (smaller workloads, a
3,000-job scale manifest; the fleet's 120 jobs, once) to finish in a couple of minutes.
``--client-src DIR`` runs the measured batchpod from another checkout (the sandbox stays
this one's), for before/after figures.

Figures are medians of ``--repeat`` runs. Machines are noisy: compare figures measured in the
same run, not across machines.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import importlib.util
import io
import itertools
import json
import math
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from _fleet_bench import PgServer, cpu_s  # beside this script: a PostgreSQL server


def _tiny_wav(index: int) -> bytes:
    """A valid 8 kHz mono 16-bit WAV of 8 frames whose samples spell `index` (so unique)."""
    data = index.to_bytes(16, "little")
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(data))
        + b"WAVEfmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


def write_manifest(folder: Path, jobs: int, *, audio: bool = False) -> Path:
    """A valid manifest of `jobs` jobs: nine in ten URL jobs, one in ten a local file.

    The files are 4-byte stubs, enough for `validate`; with `audio` they are distinct tiny
    WAVs, so that `run` can upload them and the sandbox accepts each as a song of its own.
    """
    (folder / "songs").mkdir()
    modes = ("two", "four", "six", "producer")
    lines = ["version: 1", "concurrency: 100", "jobs:"]
    for i in range(jobs):
        if i % 10 == 0:
            content = _tiny_wav(i) if audio else b"RIFF"
            (folder / "songs" / f"{i:07d}.wav").write_bytes(content)
            lines.append(f"  - file: songs/{i:07d}.wav\n    mode: {modes[i // 10 % 4]}")
        else:
            lines.append(
                f"  - url: https://media.example.com/catalogue/{i:07d}.mp3\n"
                f"    mode: {modes[i % 4]}\n"
                f"    duration: {120 + i % 240}"
            )
    path = folder / "jobs.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


#: --client-src: the checkout whose batchpod the measured commands import (the sandbox's
#: stays this one's), for before/after figures against one sandbox.
_CLIENT_SRC: Path | None = None


def _timed_call(
    setup: str, call: str, env: dict[str, str] | None = None, *, client: bool = True
) -> tuple[float, float, float, int]:
    """Wall s, CPU s, peak RSS MiB and exit code of `call` in a new interpreter.

    `setup` (imports and definitions) runs first and is not timed; CPU and peak RSS are the
    whole process's. With `client` and --client-src, batchpod is imported from there.
    """
    if client and _CLIENT_SRC is not None:  # first on sys.path, before the working folder
        setup = f"import sys; sys.path.insert(0, {str(_CLIENT_SRC)!r})\n{setup}"
    code = (
        "import resource, sys, time\n"
        f"{setup}\n"
        "start = time.perf_counter()\n"
        f"rc = {call}\n"
        "wall = time.perf_counter() - start\n"
        "use = resource.getrusage(resource.RUSAGE_SELF)\n"
        "cpu = use.ru_utime + use.ru_stime\n"
        "print(f'{wall} {cpu} {use.ru_maxrss / 1024} {rc}', file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env
    )
    try:
        wall, cpu, rss, rc = proc.stderr.strip().splitlines()[-1].split()
        return float(wall), float(cpu), float(rss), int(rc)
    except (IndexError, ValueError):
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"the measured process failed (exit {proc.returncode}):\n{tail}") from None


def _timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float, int]:
    """Wall s, CPU s, peak RSS MiB and exit code of one batchpod command in a new process."""
    return _timed_call("from batchpod.cli import main", f"main({argv!r})", env)


def bench_validate(jobs: int, repeat: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="batchpod-bench-") as tmp:
        path = write_manifest(Path(tmp), jobs)
        runs = [_timed(["validate", str(path)]) for _ in range(repeat)]
    if any(r[3] != 0 for r in runs):
        raise SystemExit(f"validate failed: exit codes {[r[3] for r in runs]}")
    wall = statistics.median(r[0] for r in runs)
    return {
        "scenario": "validate",
        "jobs": jobs,
        "repeat": repeat,
        "wall_s": round(wall, 3),
        "jobs_per_s": round(jobs / wall),
        "peak_rss_mib": round(statistics.median(r[2] for r in runs), 1),
    }


class _Sandbox:
    """`batchpod sandbox` in a child process, on a free loopback port."""

    def __init__(self, *knobs: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "batchpod", "sandbox", "--port", "0", *knobs],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        found: dict[str, str] = {}
        for line in self.proc.stdout:
            match = re.match(r"export (AUDIOPOD_\w+)=(\S+)", line)
            if match:
                found[match.group(1)] = match.group(2)
            if len(found) == 2:
                break
        self.base_url = found["AUDIOPOD_BASE_URL"]
        self.api_key = found["AUDIOPOD_API_KEY"]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base_url}/_sandbox/stats") as response:
            data: dict[str, Any] = json.load(response)
        return data

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.base_url}/_sandbox/reset", method="POST")
        urllib.request.urlopen(request).close()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def bench_run(
    jobs: int, concurrency: int, job_time_s: float, repeat: int, *, download: bool
) -> dict[str, object]:
    sandbox = _Sandbox("--processing-time", str(job_time_s), "--balance", "1000000")
    try:
        env = dict(os.environ, AUDIOPOD_API_KEY=sandbox.api_key)
        runs: list[_Measured] = []
        for _ in range(repeat):
            with tempfile.TemporaryDirectory(prefix="batchpod-bench-") as tmp:
                urls = [f"https://cdn.example.com/{i}.mp3?duration=60" for i in range(jobs)]
                path = _url_manifest(Path(tmp), concurrency, urls)
                sandbox.reset()
                argv = ["run", str(path), "--quiet", "--base-url", sandbox.base_url]
                if not download:
                    argv.append("--no-download")
                wall, cpu, rss, rc = _timed(argv, env)
                if rc != 0:
                    raise SystemExit(f"batchpod run exited {rc}")
                runs.append(_measured(wall, cpu, rss, sandbox.stats()))
    finally:
        sandbox.close()
    ideal = math.ceil(jobs / concurrency) * job_time_s
    m = _median(runs)
    wall = m.wall
    return {
        "scenario": "run",
        "jobs": jobs,
        "concurrency": concurrency,
        "job_time_s": job_time_s,
        "downloads": download,
        "repeat": repeat,
        "wall_s": round(wall, 2),
        "ideal_s": ideal,
        "wall_over_ideal": round(wall / ideal, 2),
        "api_requests_per_job": round((m.requests or 0) / jobs, 2),
        "notice_median_s": m.notice_median,
        "notice_p90_s": m.notice_p90,
        "cpu_s_per_job": round(m.cpu / jobs, 4),
        "peak_rss_mib": round(m.rss, 1),
    }


_ROUTES = {
    "POST /api/v1/stem-extraction/api/extract": "submit",
    "GET /api/v1/stem-extraction/jobs": "list",
    "GET /api/v1/stem-extraction/status/{job_id}": "status",
    "GET /api/v1/api-wallet/usage": "usage",
    "GET /api/v1/api-wallet/balance": "balance",
}


def bench_requests(concurrencies: list[int], job_time: str) -> dict[str, object]:
    """API requests per job at each concurrency, by endpoint (one run each)."""
    sandbox = _Sandbox("--processing-time", job_time, "--balance", "10000000")
    rows = []
    try:
        env = dict(os.environ, AUDIOPOD_API_KEY=sandbox.api_key)
        for concurrency in concurrencies:
            jobs = max(50, 2 * concurrency)
            with tempfile.TemporaryDirectory(prefix="batchpod-bench-") as tmp:
                urls = [f"https://cdn.example.com/c{concurrency}-{i}.mp3" for i in range(jobs)]
                path = _url_manifest(Path(tmp), concurrency, urls)
                sandbox.reset()
                argv = ["run", str(path), "--quiet", "--no-download"]
                wall, cpu, _, rc = _timed([*argv, "--base-url", sandbox.base_url], env)
                if rc != 0:
                    raise SystemExit(f"batchpod run exited {rc}")
                stats = sandbox.stats()
            by_route = dict.fromkeys(_ROUTES.values(), 0)
            for route, n in stats["requests"].items():
                if "/media/" not in route:
                    name = _ROUTES.get(route, "other")
                    by_route[name] = by_route.get(name, 0) + n
            total = sum(by_route.values())
            rows.append(
                {
                    "concurrency": concurrency,
                    "jobs": jobs,
                    "wall_s": round(wall, 1),
                    "peak_at_audiopod": stats["jobs"]["peak_active"],
                    "api_requests_per_job": round(total / jobs, 2),
                    **{f"{name}_per_job": round(n / jobs, 2) for name, n in by_route.items()},
                    "cpu_s_per_job": round(cpu / jobs, 4),
                }
            )
    finally:
        sandbox.close()
    return {"scenario": "requests", "job_time_s": job_time, "rows": rows}


# -- all: batchpod against the ideal, against the SDK, at scale, and durability --------------

# The SDK workload, run in a child process as a user would write it from the SDK's docs:
# `client.stems.separate(url=..., mode=...)` (submit, then poll until done), then each stem
# fetched from its presigned URL, in a pool of C threads with one client per thread.
_SDK_SETUP = """
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from audiopod import Client


def sdk_batch(base_url, urls, concurrency, folder):
    local = threading.local()

    def one(index, url):
        if not hasattr(local, "client"):  # one SDK client and one download session per thread
            local.client = Client(api_key=os.environ["AUDIOPOD_API_KEY"], base_url=base_url)
            local.http = requests.Session()
        job = local.client.stems.separate(url=url, mode="four")
        out = Path(folder) / f"{index:07d}"
        out.mkdir()
        for stem, link in job["download_urls"].items():
            reply = local.http.get(link, timeout=60)
            reply.raise_for_status()
            (out / f"{stem}.wav").write_bytes(reply.content)
        return len(job["download_urls"])

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        stems = list(pool.map(one, range(len(urls)), urls))
    return 0 if stems == [4] * len(urls) else 1
"""


class _Scenario(NamedTuple):
    """A workload of `all`, run by batchpod and by the SDK against its own sandbox."""

    name: str
    jobs: int
    concurrency: int
    job_time: float
    max_requests_per_job: float  # the target, API requests per job (downloads apart)
    max_wall_over_ideal: float | None = None


_SCENARIOS = (
    _Scenario("20 s jobs", 200, 100, 20.0, 2.0, 1.03),
    _Scenario("2 s jobs", 300, 50, 2.0, 2.0, 1.10),
    _Scenario("concurrency 10", 50, 10, 5.0, 3.0),
)
_QUICK_SCENARIOS = (
    _Scenario("4 s jobs", 100, 50, 4.0, 2.0, 1.03),
    _Scenario("1 s jobs", 100, 50, 1.0, 2.0, 1.10),
    _Scenario("concurrency 10", 30, 10, 1.0, 3.0),
)
_FULL = {"latency": 0.02, "scale_jobs": 100_000}
_QUICK = {"latency": 0.02, "scale_jobs": 3000}
_batches = itertools.count()


class _Measured(NamedTuple):
    wall: float
    cpu: float
    rss: float
    requests: int | None = None
    peak_active: int | None = None
    notice_median: float | None = None  # s from a job's end to the first answer showing it
    notice_p90: float | None = None


def _median(runs: list[_Measured]) -> _Measured:
    """The field-by-field median of repeated measurements."""
    fields = [[getattr(r, f) for r in runs] for f in _Measured._fields]
    return _Measured(*(None if v[0] is None else statistics.median(v) for v in fields))


def _api_requests(stats: dict[str, Any]) -> int:
    """API requests the sandbox counted since its last reset, stem downloads apart."""
    return sum(n for route, n in stats["requests"].items() if "/media/" not in route)


def _repeated(measure: Callable[[], _Measured], times: int) -> _Measured:
    """The median of `times` runs of `measure`."""
    return _median([measure() for _ in range(times)])


def _measured(wall: float, cpu: float, rss: float, stats: dict[str, Any]) -> _Measured:
    """A run's figures with the sandbox's counts since its last reset."""
    notice = stats["notice_delay"]
    return _Measured(
        wall,
        cpu,
        rss,
        _api_requests(stats),
        stats["jobs"]["peak_active"],
        notice["median_s"],
        notice["p90_s"],
    )


def _url_manifest(folder: Path, concurrency: int, urls: list[str]) -> Path:
    """``folder/jobs.yaml``: one four-stem job per URL, run ``concurrency`` at a time."""
    path = folder / "jobs.yaml"
    lines = [f"version: 1\nconcurrency: {concurrency}\njobs:"]
    lines += [f"  - {{url: '{url}', mode: four}}" for url in urls]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _url_jobs(jobs: int) -> list[str]:
    """`jobs` one-minute song URLs, different on every call."""
    batch = next(_batches)
    return [f"https://cdn.example.com/b{batch}/{i:07d}.mp3?duration=60" for i in range(jobs)]


def _fs_type(path: Path) -> str:
    """The type of the file system holding `path` (from /proc/mounts), or '?'."""
    real = os.path.realpath(path)
    best, kind = "", "?"
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return kind
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def _batchpod_run(
    sandbox: _Sandbox, jobs: int, concurrency: int, disk_dir: Path | None, state_dir: Path | None
) -> _Measured:
    """`batchpod run` of four-stem URL jobs with downloads; manifest and stems in `disk_dir`.

    The state file is batchpod's default (beside the manifest) unless `state_dir` is given.
    """
    with tempfile.TemporaryDirectory(prefix="batchpod-bench-", dir=disk_dir) as tmp:
        path = _url_manifest(Path(tmp), concurrency, _url_jobs(jobs))
        argv = ["run", str(path), "--quiet", "--base-url", sandbox.base_url]
        if state_dir is not None:
            argv += ["--state", str(state_dir / "jobs.batchpod.db")]
        env = dict(os.environ, AUDIOPOD_API_KEY=sandbox.api_key)
        sandbox.reset()
        wall, cpu, rss, rc = _timed(argv, env)
        if rc != 0:
            raise SystemExit(f"batchpod run exited {rc}")
        return _measured(wall, cpu, rss, sandbox.stats())


def _sdk_run(sandbox: _Sandbox, jobs: int, concurrency: int, disk_dir: Path | None) -> _Measured:
    """The same workload through the official SDK, in a process of its own."""
    with tempfile.TemporaryDirectory(prefix="batchpod-bench-sdk-", dir=disk_dir) as tmp:
        call = f"sdk_batch({sandbox.base_url!r}, {_url_jobs(jobs)!r}, {concurrency}, {tmp!r})"
        env = dict(os.environ, AUDIOPOD_API_KEY=sandbox.api_key)
        sandbox.reset()
        wall, cpu, rss, rc = _timed_call(_SDK_SETUP, call, env, client=False)
        if rc != 0:
            raise SystemExit("the SDK workload did not get four stems for every job")
        return _measured(wall, cpu, rss, sandbox.stats())


def _row(
    measurement: str,
    m: _Measured,
    jobs: int,
    *,
    concurrency: int | None = None,
    job_time: float | None = None,
    latency: float | None = None,
    ideal: float | None = None,
) -> dict[str, object]:
    return {
        "measurement": measurement,
        "jobs": jobs,
        "concurrency": concurrency,
        "job_time_s": job_time,
        "wall_s": round(m.wall, 2),
        "ideal_s": None if ideal is None else round(ideal, 2),
        "wall_over_ideal": None if ideal is None else round(m.wall / ideal, 3),
        "jobs_per_s": round(jobs / m.wall),
        "api_requests_per_job": None if m.requests is None else round(m.requests / jobs, 2),
        "notice_median_s": m.notice_median,
        "notice_p90_s": m.notice_p90,
        "cpu_ms_per_job": round(1000 * m.cpu / jobs, 3),
        "peak_rss_mib": round(m.rss, 1),
    }


def _target(name: str, figure: str, met: bool) -> dict[str, object]:
    return {"target": name, "figure": figure, "met": "yes" if met else "NO"}


def _bench_scenario(
    sc: _Scenario,
    *,
    latency: float,
    balance: str,
    repeat: int,
    sdk: bool,
    disk_dir: Path | None,
    durability: bool,
    into: tuple[list[dict[str, object]], list[dict[str, object]], dict[str, Any]],
) -> None:
    """One workload of `all`: batchpod, the SDK, and with `durability` the state in RAM."""
    rows, targets, summary = into
    ideal = math.ceil(sc.jobs / sc.concurrency) * (sc.job_time + 2 * latency)
    shared: dict[str, Any] = {
        "concurrency": sc.concurrency,
        "job_time": sc.job_time,
        "latency": latency,
        "ideal": ideal,
    }

    sandbox = _Sandbox(
        "--processing-time", str(sc.job_time), "--latency", str(latency), "--balance", balance
    )
    try:
        ours = _repeated(
            functools.partial(_batchpod_run, sandbox, sc.jobs, sc.concurrency, disk_dir, None),
            repeat,
        )
        rows.append(_row(f"batchpod, {sc.name}", ours, sc.jobs, **shared))
        ratio = ours.wall / ideal
        per_job = (ours.requests or 0) / sc.jobs
        if sc.max_wall_over_ideal is not None:
            name = f"{sc.name}: wall/ideal <= {sc.max_wall_over_ideal}"
            targets.append(_target(name, f"{ratio:.3f}", ratio <= sc.max_wall_over_ideal))
        name = f"{sc.name}: API requests/job <= {sc.max_requests_per_job:g}"
        targets.append(_target(name, f"{per_job:.2f}", per_job <= sc.max_requests_per_job))
        if sdk:
            theirs = _repeated(
                functools.partial(_sdk_run, sandbox, sc.jobs, sc.concurrency, disk_dir), repeat
            )
            rows.append(_row(f"audiopod SDK, {sc.name}", theirs, sc.jobs, **shared))
            faster = theirs.wall / ours.wall
            summary["sdk_over_batchpod_wall"][sc.name] = round(faster, 2)
            targets.append(_target(f"{sc.name}: faster than the SDK", f"{faster:.2f}x", faster > 1))
        if durability and Path("/dev/shm").is_dir():

            def in_ram_once() -> _Measured:
                with tempfile.TemporaryDirectory(prefix="batchpod-bench-", dir="/dev/shm") as st:
                    return _batchpod_run(sandbox, sc.jobs, sc.concurrency, disk_dir, Path(st))

            in_ram = _repeated(in_ram_once, repeat)
            rows.append(_row("... state in /dev/shm", in_ram, sc.jobs, **shared))
            summary["state_on_disk_fs"] = _fs_type(disk_dir or Path(tempfile.gettempdir()))
            summary["durability_wall_ms_per_job"] = round(
                1000 * (ours.wall - in_ram.wall) / sc.jobs, 3
            )
            summary["durability_cpu_ms_per_job"] = round(
                1000 * (ours.cpu - in_ram.cpu) / sc.jobs, 3
            )
    finally:
        sandbox.close()


def bench_all(
    *,
    scenarios: tuple[_Scenario, ...],
    latency: float,
    scale_jobs: int,
    repeat: int,
    sdk: bool,
    disk_dir: Path | None,
) -> dict[str, object]:
    """The default scenario: a row per measurement, then the targets (see the docstring)."""
    rows: list[dict[str, object]] = []
    targets: list[dict[str, object]] = []
    summary: dict[str, Any] = {"sdk_over_batchpod_wall": {}}
    balance = str(10 * max(100_000, scale_jobs))

    for sc in scenarios:
        _bench_scenario(
            sc,
            latency=latency,
            balance=balance,
            repeat=repeat,
            sdk=sdk,
            disk_dir=disk_dir,
            durability=sc is scenarios[1],
            into=(rows, targets, summary),
        )

    offline = {
        k: v for k, v in os.environ.items() if k not in {"AUDIOPOD_API_KEY", "AUDIOPOD_BASE_URL"}
    }
    limits = {"validate": 4.0, "estimate": 6.0}
    with tempfile.TemporaryDirectory(prefix="batchpod-bench-", dir=disk_dir) as tmp:
        path = write_manifest(Path(tmp), scale_jobs, audio=True)
        for command in ("validate", "estimate"):

            def offline_once(command: str = command) -> _Measured:
                wall, cpu, rss, rc = _timed([command, str(path)], offline)
                if rc != 0:
                    raise SystemExit(f"batchpod {command} exited {rc}")
                return _Measured(wall, cpu, rss)

            m = _repeated(offline_once, repeat)
            rows.append(_row(command, m, scale_jobs))
            targets.append(
                _target(
                    f"{command} {scale_jobs:,} jobs: <= {limits[command]:g} s, < 200 MB",
                    f"{m.wall:.2f} s, {m.rss:.0f} MiB",
                    m.wall <= limits[command] and m.rss * 1.048576 < 200,
                )
            )
        (Path(tmp) / "small").mkdir()
        small = write_manifest(Path(tmp) / "small", scale_jobs // 10, audio=True)
        sandbox = _Sandbox("--processing-time", "0", "--balance", balance)
        runs = itertools.count()

        def scale_run_once(manifest: Path) -> _Measured:
            state = manifest.with_name(f"jobs.{next(runs)}.batchpod.db")  # beside the manifest
            argv = ["run", str(manifest), "--quiet", "--no-download", "--state", str(state)]
            env = dict(os.environ, AUDIOPOD_API_KEY=sandbox.api_key)
            sandbox.reset()
            wall, cpu, rss, rc = _timed([*argv, "--base-url", sandbox.base_url], env)
            if rc != 0:
                raise SystemExit(f"batchpod run --no-download exited {rc}")
            return _measured(wall, cpu, rss, sandbox.stats())

        try:
            tenth = _repeated(lambda: scale_run_once(small), repeat)
            scale = _repeated(lambda: scale_run_once(path), repeat)
        finally:
            sandbox.close()
        for jobs, m in ((scale_jobs // 10, tenth), (scale_jobs, scale)):
            rows.append(_row("run --no-download", m, jobs, concurrency=100, job_time=0, latency=0))
    mb = 1.048576  # MB per MiB
    targets += [
        _target(
            f"run --no-download {scale_jobs:,} jobs: peak RSS <= 200 MB",
            f"{scale.rss * mb:.0f} MB",
            scale.rss * mb <= 200,
        ),
        _target(
            f"... within 20 MB of {scale_jobs // 10:,} jobs'",
            f"{(scale.rss - tenth.rss) * mb:+.0f} MB",
            (scale.rss - tenth.rss) * mb <= 20,
        ),
        _target(
            "... at least 600 jobs/s",
            f"{scale_jobs / scale.wall:.0f} jobs/s",
            scale_jobs / scale.wall >= 600,
        ),
        _target(
            "... at most 1 ms of client CPU per job",
            f"{1000 * scale.cpu / scale_jobs:.2f} ms",
            1000 * scale.cpu / scale_jobs <= 1,
        ),
    ]
    return {
        "scenario": "all",
        "latency_s": latency,
        "scale_jobs": scale_jobs,
        "repeat": repeat,
        "ideal_s": "ceil(jobs / concurrency) x (job_time_s + 2 x latency_s)",
        "cpus": os.cpu_count(),
        "audiopod_sdk": importlib.metadata.version("audiopod") if sdk else None,
        "rows": rows,
        "targets": targets,
        "summary": summary,
    }


# -- fleet: workers sharing a PostgreSQL state, against one machine and fixed shards ---------

_FLEET_FULL = {"jobs": 400, "concurrency": 20, "job_time": 0.1, "slow_rps": 12.0, "repeat": 3}
_FLEET_QUICK = {"jobs": 120, "concurrency": 20, "job_time": 0.1, "slow_rps": 6.0, "repeat": 1}
_FLEET_WORKERS = (1, 2, 4)
_FLEET_PARTS = 4  # the straggler case: shards or workers, one of them slowed
_LEASE = "10s"


class _Part(NamedTuple):
    """One `batchpod run` process of a case: its extra arguments, and whether it is slowed."""

    args: list[str]
    slowed: bool = False


class _Case(NamedTuple):
    """One run of a fleet-section case."""

    wall: float  # the first start to the last exit
    first_exit: float  # the first start to the first exit
    cpu: float  # every process's CPU seconds, summed
    db_cpu: float | None  # PostgreSQL's CPU seconds (None: no database)
    busy: float  # CPU cores kept busy: the parts', PostgreSQL's and the sandbox's CPU over wall
    requests: int
    slowed_jobs: int | None  # jobs the slowed part worked
    nonzero_exits: int  # processes that exited other than 0 (every job completed even so)


def _run_parts(
    sandbox: _Sandbox, path: Path, parts: list[_Part], log: Path
) -> tuple[float, float, float, list[int], list[int]]:
    """Start one `batchpod run` per part at the same moment; wait for all to exit.

    Returns wall s (first start to last exit), s to the first exit, CPU s of all parts, their
    exit codes and pids.
    """
    env = dict(os.environ, AUDIOPOD_API_KEY=sandbox.api_key)
    base = [sys.executable, "-m", "batchpod", "run", str(path), "--quiet", "--no-download"]
    base += ["--base-url", sandbox.base_url]
    procs: list[subprocess.Popen[bytes]] = []
    codes: dict[int, int] = {}
    exits: list[float] = []
    cpu = 0.0
    with log.open("ab") as out:
        start = time.perf_counter()
        try:
            procs.extend(
                subprocess.Popen(
                    [*base, *part.args], env=env, stdout=out, stderr=out, cwd=path.parent
                )
                for part in parts
            )
            while len(codes) < len(procs):
                for proc in procs:
                    if proc.pid in codes:
                        continue
                    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                    if pid:
                        exits.append(time.perf_counter() - start)
                        proc.returncode = codes[pid] = os.waitstatus_to_exitcode(status)
                        cpu += usage.ru_utime + usage.ru_stime
                time.sleep(0.005)
        finally:
            for proc in procs:
                if proc.pid not in codes:
                    proc.kill()
                    proc.wait()
    return max(exits), min(exits), cpu, [codes[p.pid] for p in procs], [p.pid for p in procs]


def _statuses(results: Path) -> list[str]:
    """The status of every job a results file lists."""
    data = yaml.safe_load(results.read_text(encoding="utf-8"))
    return [job["status"] for job in data["jobs"]]


def _fleet_case(
    sandbox: _Sandbox,
    pg: PgServer,
    jobs: int,
    concurrency: int,
    parts: list[_Part],
    *,
    fleet: bool,
) -> _Case:
    """One run of a case in a fresh folder (and with `fleet`, a fresh database); every job
    must have completed, as the results say."""
    with tempfile.TemporaryDirectory(prefix="batchpod-bench-fleet-") as tmp:
        path = _url_manifest(Path(tmp), concurrency, _url_jobs(jobs))
        database = pg.database() if fleet else None
        url = pg.url(database) if database else None
        if url is not None:
            lease = ["--state", url, "--lease", _LEASE]
            parts = [_Part([*lease, *p.args], p.slowed) for p in parts]
        log = Path(tmp) / "workers.log"
        sandbox.reset()
        db_cpu, sandbox_cpu = pg.cpu_s(), cpu_s(sandbox.proc.pid)
        wall, first, cpu, codes, pids = _run_parts(sandbox, path, parts, log)
        sandbox_cpu = cpu_s(sandbox.proc.pid) - sandbox_cpu
        if fleet:
            time.sleep(0.2)  # PostgreSQL reaps the closed connections' backends
        db_cpu = pg.cpu_s() - db_cpu
        busy = (cpu + db_cpu + sandbox_cpu) / wall
        requests = _api_requests(sandbox.stats())
        if any(codes):
            # Counted and shown, not fatal: what must hold is that every job completed (below).
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            print(f"warning: batchpod run exited {codes}:\n{tail}", file=sys.stderr)
        slowed = [i for i, p in enumerate(parts) if p.slowed]
        if url is not None:
            from batchpod.cli import main as batchpod_main  # `batchpod results`, in-process

            out, err = io.StringIO(), io.StringIO()
            code = batchpod_main(["results", str(path), "--state", url], stdout=out, stderr=err)
            if code != 0:
                raise SystemExit(f"batchpod results exited {code}: {err.getvalue()}")
            statuses = _statuses(path.with_name("jobs.results.yaml"))
            own = [
                f
                for i in slowed
                for f in path.parent.glob(f"jobs.worker-*-{pids[i]}-*.results.yaml")
            ]
        else:
            files = sorted(path.parent.glob("jobs*.results.yaml"))
            statuses = [s for f in files for s in _statuses(f)]
            own = [path.with_name(f"jobs.shard-{i}-of-{len(parts)}.results.yaml") for i in slowed]
        if statuses != ["completed"] * jobs:
            counts = {s: statuses.count(s) for s in set(statuses)}
            raise SystemExit(f"not every job completed: {len(statuses)} listed, {counts}")
        slowed_jobs = sum(len(_statuses(f)) for f in own) if slowed else None
        if database is not None:
            pg.drop(database)
    nonzero = sum(code != 0 for code in codes)
    return _Case(wall, first, cpu, db_cpu if fleet else None, busy, requests, slowed_jobs, nonzero)


def _case_median(runs: list[_Case]) -> _Case:
    """The field-by-field median of repeated runs; non-zero exits are summed over them."""
    fields = [[getattr(r, f) for r in runs] for f in _Case._fields]
    median = _Case(*(None if v[0] is None else statistics.median(v) for v in fields))
    return median._replace(nonzero_exits=sum(r.nonzero_exits for r in runs))


def bench_fleet(
    *, jobs: int, concurrency: int, job_time: float, slow_rps: float, repeat: int
) -> dict[str, object]:
    """One SQLite run against fleets of 1, 2 and 4 workers, and a straggler: fixed shards
    against a fleet, one part slowed (see the module docstring)."""
    parts = _FLEET_PARTS
    if concurrency < max(*_FLEET_WORKERS, parts):
        raise SystemExit(f"fleet: --concurrency must be at least {max(*_FLEET_WORKERS, parts)}")
    slow = ["--max-rps", f"{slow_rps:g}"]
    cases: list[tuple[str, bool, list[_Part]]] = [
        ("sqlite, 1 process", False, [_Part(["--concurrency", str(concurrency)])])
    ]
    for workers in _FLEET_WORKERS:
        each = ["--concurrency", str(concurrency // workers)]
        name = f"postgresql, {workers} worker{'s' if workers > 1 else ''}"
        cases.append((name, True, [_Part(each)] * workers))
    each = ["--concurrency", str(concurrency // parts)]
    shards = [
        _Part([*each, "--shard", f"{i}/{parts}", *(slow if i == 0 else [])], i == 0)
        for i in range(parts)
    ]
    fleet_parts = [_Part([*each, *(slow if i == 0 else [])], i == 0) for i in range(parts)]
    cases.append((f"sqlite, {parts} shards, 1 slowed", False, shards))
    cases.append((f"postgresql, {parts} workers, 1 slowed", True, fleet_parts))

    runs: dict[str, list[_Case]] = {name: [] for name, _, _ in cases}
    sandbox = _Sandbox("--processing-time", f"{job_time:g}", "--balance", "1000000")
    pg = PgServer()
    try:
        pg.start()
        for _ in range(repeat):  # case after case, repeat after repeat: noise hits all alike
            for name, fleet, case_parts in cases:
                runs[name].append(
                    _fleet_case(sandbox, pg, jobs, concurrency, case_parts, fleet=fleet)
                )
    finally:
        sandbox.close()
        pg.stop()

    rows: list[dict[str, object]] = []
    medians: dict[str, _Case] = {}
    for name, _, case_parts in cases:
        m = medians[name] = _case_median(runs[name])
        per_part = concurrency // len(case_parts) if len(case_parts) > 1 else concurrency
        rows.append(
            {
                "measurement": name,
                "processes": len(case_parts),
                "concurrency_each": per_part,
                "in_flight": per_part * len(case_parts),
                "wall_s": round(m.wall, 2),
                "first_exit_s": round(m.first_exit, 2),
                "jobs_per_s": round(jobs / m.wall, 1),
                "api_requests_per_job": round(m.requests / jobs, 2),
                "slowed_part_jobs": m.slowed_jobs,
                "cpu_ms_per_job": round(1000 * m.cpu / jobs, 1),
                "db_cpu_ms_per_job": None if m.db_cpu is None else round(1000 * m.db_cpu / jobs, 1),
                "cores_busy": round(m.busy, 2),
                "nonzero_exits": m.nonzero_exits,
            }
        )
    sqlite, shards_slow, fleet_slow = (medians[cases[i][0]] for i in (0, -2, -1))
    summary = {
        "fleet_wall_over_sqlite": {
            str(w): round(medians[cases[1 + i][0]].wall / sqlite.wall, 2)
            for i, w in enumerate(_FLEET_WORKERS)
        },
        "straggler_shards_wall_s": round(shards_slow.wall, 2),
        "straggler_fleet_wall_s": round(fleet_slow.wall, 2),
        "straggler_shards_over_fleet": round(shards_slow.wall / fleet_slow.wall, 2),
    }
    return {
        "scenario": "fleet",
        "jobs": jobs,
        "concurrency": concurrency,
        "job_time_s": job_time,
        "downloads": False,
        "slowed_max_rps": slow_rps,
        "lease": _LEASE,
        "repeat": repeat,
        "cpus": os.cpu_count(),
        "in_flight": f"{concurrency} in every case: each of P processes runs {concurrency} // P",
        "rows": rows,
        "summary": summary,
    }


def _print_table(rows: list[dict[str, object]]) -> None:
    keys = list(rows[0])
    cells = [["-" if r[k] is None else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    text = [all(isinstance(r[k], str) for r in rows) for k in keys]  # left-aligned columns
    for line in [keys, *cells]:
        print(
            "  ".join(
                c.ljust(w) if left else c.rjust(w)
                for c, w, left in zip(line, widths, text, strict=True)
            ).rstrip()
        )


def _print_result(result: dict[str, Any]) -> None:
    """A scenario's figures: its settings, then its table and summary lines."""
    for key, value in result.items():
        if key in {"rows", "summary", "fleet", "targets"}:
            continue
        print(f"{key:>14}  {value}")
    if "rows" in result:
        _print_table(result["rows"])
    summary: dict[str, Any] = result.get("summary") or {}
    if summary.get("sdk_over_batchpod_wall"):
        ratios = ", ".join(f"{k} {v}x" for k, v in summary["sdk_over_batchpod_wall"].items())
        print(f"SDK wall over batchpod's, same workload: {ratios}")
    if "durability_wall_ms_per_job" in summary:
        print(
            f"State on {summary['state_on_disk_fs']} vs /dev/shm, per job: "
            f"{summary['durability_wall_ms_per_job']:+} ms wall, "
            f"{summary['durability_cpu_ms_per_job']:+} ms CPU"
        )
    if "straggler_shards_over_fleet" in summary:
        ratios = ", ".join(
            f"{w} worker{'s' if w != '1' else ''} {r}x"
            for w, r in summary["fleet_wall_over_sqlite"].items()
        )
        print(
            f"Fleet wall over one SQLite process, same {result['concurrency']} in flight: {ratios}"
        )
        print(
            f"Straggler (one of {_FLEET_PARTS} at --max-rps {result['slowed_max_rps']:g}): "
            f"shards {summary['straggler_shards_wall_s']} s vs fleet "
            f"{summary['straggler_fleet_wall_s']} s, "
            f"shards/fleet {summary['straggler_shards_over_fleet']}x"
        )
    if result.get("targets"):
        print()
        _print_table(result["targets"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "scenario",
        nargs="?",
        default="all",
        choices=["all", "scale", "validate", "run", "requests", "fleet"],
        help="what to measure (default: all: against the ideal and the SDK, scale, durability, "
        "fleet; scale: the scale rows alone)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        help="validate, run, fleet: jobs (default: validate 100000, run 500, fleet 400; quick: "
        "fleet 120)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help="run, fleet: jobs in flight (default: 100; fleet: 20, in all processes)",
    )
    parser.add_argument(
        "--job-time",
        help="run, requests, fleet: sandbox job seconds, or MIN-MAX (default: run 1; requests: "
        "2-10; fleet: 0.1)",
    )
    parser.add_argument(
        "--latency", type=float, help="all: sandbox API latency in seconds (default: 0.02)"
    )
    parser.add_argument(
        "--scale-jobs",
        type=int,
        help="all, scale: jobs of the generated manifest (default: 100000)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="all: smaller workloads (100 jobs of 4 s and of 1 s at 50, 30 of 1 s at 10) and "
        "a 3,000-job scale manifest; fleet: N=120, one run of each case",
    )
    parser.add_argument(
        "--no-sdk", action="store_true", help="all: leave out the audiopod SDK comparison"
    )
    parser.add_argument(
        "--no-fleet",
        action="store_true",
        help="all: leave out the fleet section (it needs PostgreSQL from the pgserver wheel)",
    )
    parser.add_argument(
        "--slow-rps",
        type=float,
        help="fleet: the --max-rps of the slowed process in the straggler case "
        "(default: 12; quick: 6)",
    )
    parser.add_argument(
        "--disk-dir",
        type=Path,
        help="all: folder for manifests, state and stems (default: the system temp folder)",
    )
    parser.add_argument(
        "--concurrencies",
        default="10,100,1000",
        help="requests: the concurrencies to measure, comma-separated (default: 10,100,1000)",
    )
    parser.add_argument("--no-download", action="store_true", help="run: skip the stems")
    parser.add_argument(
        "--repeat",
        type=int,
        help="runs; the median is reported (default: 3; all: 1, but fleet 3; quick: 1)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--client-src",
        type=Path,
        help="run the measured batchpod from this checkout's root (the sandbox stays this "
        "one's): before/after figures against the same sandbox",
    )
    args = parser.parse_args()
    global _CLIENT_SRC
    _CLIENT_SRC = None if args.client_src is None else args.client_src.resolve()
    fleet = args.scenario == "fleet" or (args.scenario == "all" and not args.no_fleet)
    if fleet and importlib.util.find_spec("pgserver") is None:
        parser.error(
            "the fleet section needs PostgreSQL from the pgserver wheel: pip install -e "
            "'.[bench]'" + (" (or pass --no-fleet)" if args.scenario == "all" else "")
        )
    started = time.time()
    if args.scenario == "all":
        preset = _QUICK if args.quick else _FULL
        sdk = not args.no_sdk
        if sdk and importlib.util.find_spec("audiopod") is None:
            parser.error(
                "the SDK comparison needs the official SDK: pip install -e '.[bench]' "
                "(or pass --no-sdk)"
            )
        result = bench_all(
            scenarios=_QUICK_SCENARIOS if args.quick else _SCENARIOS,
            latency=preset["latency"] if args.latency is None else args.latency,
            scale_jobs=args.scale_jobs or int(preset["scale_jobs"]),
            repeat=args.repeat or 1,
            sdk=sdk,
            disk_dir=args.disk_dir,
        )
        result["quick"] = args.quick
        if not args.no_fleet:
            preset = _FLEET_QUICK if args.quick else _FLEET_FULL
            result["fleet"] = bench_fleet(
                jobs=int(preset["jobs"]),
                concurrency=int(preset["concurrency"]),
                job_time=preset["job_time"],
                slow_rps=preset["slow_rps"] if args.slow_rps is None else args.slow_rps,
                repeat=args.repeat or int(preset["repeat"]),
            )
    elif args.scenario == "scale":
        preset = _QUICK if args.quick else _FULL
        result = bench_all(
            scenarios=(),
            latency=0.0,
            scale_jobs=args.scale_jobs or int(preset["scale_jobs"]),
            repeat=args.repeat or 1,
            sdk=False,
            disk_dir=args.disk_dir,
        )
        result["scenario"] = "scale"
    elif args.scenario == "fleet":
        preset = _FLEET_QUICK if args.quick else _FLEET_FULL
        try:
            job_time = float(args.job_time) if args.job_time else preset["job_time"]
        except ValueError:
            parser.error("fleet: --job-time takes one number of seconds")
        result = bench_fleet(
            jobs=args.jobs or int(preset["jobs"]),
            concurrency=args.concurrency or int(preset["concurrency"]),
            job_time=job_time,
            slow_rps=preset["slow_rps"] if args.slow_rps is None else args.slow_rps,
            repeat=args.repeat or int(preset["repeat"]),
        )
        result["quick"] = args.quick
    elif args.scenario == "validate":
        result = bench_validate(args.jobs or 100_000, args.repeat or 3)
    elif args.scenario == "requests":
        job_time = args.job_time or "2-10"
        concurrencies = [int(c) for c in args.concurrencies.split(",")]
        result = bench_requests(concurrencies, job_time)
    else:
        result = bench_run(
            args.jobs or 500,
            args.concurrency or 100,
            float(args.job_time or "1"),
            args.repeat or 3,
            download=not args.no_download,
        )
    result["python"] = sys.version.split()[0]
    result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    _print_result(result)
    if "fleet" in result:
        print()
        _print_result(result["fleet"])  # type: ignore[arg-type]
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
