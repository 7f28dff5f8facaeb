"""batchpod benchmarks: print the figures the README quotes.

Each scenario runs batchpod in a fresh interpreter so its time and peak memory are its own.
Run from the repository root with the project installed:

    python scripts/bench.py validate --jobs 100000 --repeat 3
    python scripts/bench.py run --jobs 500 --concurrency 100 --job-time 1 --repeat 3
    python scripts/bench.py validate --jobs 100000 --json bench.json
    python scripts/bench.py requests --concurrencies 10,100,1000 --job-time 2-10

`requests` counts the API requests per job (stem downloads apart) that a run sends at each
concurrency, with job times drawn from a range, by endpoint: it shows how the list-page
polling keeps that figure flat as concurrency grows. Each concurrency runs ``2 x C`` jobs
(at least 50) with ``--no-download``.

`run` starts the sandbox in its own process (so the figures are the client's alone) and runs
`batchpod run` on a generated manifest of four-stem URL jobs, downloads included.

Figures are medians of ``--repeat`` runs. Machines are noisy: compare figures measured in the
same run, not across machines.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any


def write_manifest(folder: Path, jobs: int) -> Path:
    """A valid manifest of `jobs` jobs: nine in ten URL jobs, one in ten a local file."""
    (folder / "songs").mkdir()
    modes = ("two", "four", "six", "producer")
    lines = ["version: 1", "concurrency: 100", "jobs:"]
    for i in range(jobs):
        if i % 10 == 0:
            (folder / "songs" / f"{i:07d}.wav").write_bytes(b"RIFF")
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


def _timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float, int]:
    """Wall s, CPU s, peak RSS MiB and exit code of one batchpod command in a new process."""
    code = (
        "import resource, sys, time\n"
        "from batchpod.cli import main\n"
        "start = time.perf_counter()\n"
        f"rc = main({argv!r})\n"
        "wall = time.perf_counter() - start\n"
        "use = resource.getrusage(resource.RUSAGE_SELF)\n"
        "cpu = use.ru_utime + use.ru_stime\n"
        "print(f'{wall} {cpu} {use.ru_maxrss / 1024} {rc}', file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env
    )
    wall, cpu, rss, rc = proc.stderr.strip().splitlines()[-1].split()
    return float(wall), float(cpu), float(rss), int(rc)


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
        walls, cpus, rsses, requests = [], [], [], []
        for _ in range(repeat):
            with tempfile.TemporaryDirectory(prefix="batchpod-bench-") as tmp:
                path = Path(tmp) / "jobs.yaml"
                lines = [f"version: 1\nconcurrency: {concurrency}\njobs:"]
                lines += [
                    f"  - {{url: 'https://cdn.example.com/{i}.mp3?duration=60', mode: four}}"
                    for i in range(jobs)
                ]
                path.write_text("\n".join(lines) + "\n", encoding="utf-8")
                sandbox.reset()
                argv = ["run", str(path), "--quiet", "--base-url", sandbox.base_url]
                if not download:
                    argv.append("--no-download")
                wall, cpu, rss, rc = _timed(argv, env)
                if rc != 0:
                    raise SystemExit(f"batchpod run exited {rc}")
                api = {
                    route: n
                    for route, n in sandbox.stats()["requests"].items()
                    if "/media/" not in route
                }
                walls.append(wall)
                cpus.append(cpu)
                rsses.append(rss)
                requests.append(sum(api.values()))
    finally:
        sandbox.close()
    ideal = math.ceil(jobs / concurrency) * job_time_s
    wall = statistics.median(walls)
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
        "api_requests_per_job": round(statistics.median(requests) / jobs, 2),
        "cpu_s_per_job": round(statistics.median(cpus) / jobs, 4),
        "peak_rss_mib": round(statistics.median(rsses), 1),
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
                path = Path(tmp) / "jobs.yaml"
                lines = [f"version: 1\nconcurrency: {concurrency}\njobs:"]
                lines += [
                    f"  - {{url: 'https://cdn.example.com/c{concurrency}-{i}.mp3', mode: four}}"
                    for i in range(jobs)
                ]
                path.write_text("\n".join(lines) + "\n", encoding="utf-8")
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


def _print_table(rows: list[dict[str, object]]) -> None:
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.rjust(w) for k, w in zip(keys, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[k]).rjust(w) for k, w in zip(keys, widths, strict=True)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=["validate", "run", "requests"])
    parser.add_argument("--jobs", type=int, help="jobs (default: 100000 validate, 500 run)")
    parser.add_argument("--concurrency", type=int, default=100, help="run: jobs in flight")
    parser.add_argument(
        "--job-time",
        default="1",
        help="sandbox job seconds, or MIN-MAX (default: 1; requests: 2-10)",
    )
    parser.add_argument(
        "--concurrencies",
        default="10,100,1000",
        help="requests: the concurrencies to measure, comma-separated (default: 10,100,1000)",
    )
    parser.add_argument("--no-download", action="store_true", help="run: skip the stems")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the median is reported")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    started = time.time()
    if args.scenario == "validate":
        result = bench_validate(args.jobs or 100_000, args.repeat)
    elif args.scenario == "requests":
        job_time = "2-10" if args.job_time == "1" else args.job_time
        concurrencies = [int(c) for c in args.concurrencies.split(",")]
        result = bench_requests(concurrencies, job_time)
    else:
        result = bench_run(
            args.jobs or 500,
            args.concurrency,
            float(args.job_time),
            args.repeat,
            download=not args.no_download,
        )
    result["python"] = sys.version.split()[0]
    result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    for key, value in result.items():
        if key == "rows":
            continue
        print(f"{key:>14}  {value}")
    if "rows" in result:
        _print_table(result["rows"])  # type: ignore[arg-type]
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
