"""batchpod benchmarks: print the figures the README quotes.

Each scenario runs batchpod in a fresh interpreter so its time and peak memory are its own.
Run from the repository root with the project installed:

    python scripts/bench.py validate --jobs 100000 --repeat 3
    python scripts/bench.py validate --jobs 100000 --json bench.json

Figures are medians of ``--repeat`` runs. Machines are noisy: compare figures measured in the
same run, not across machines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


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


def _timed(argv: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MiB, exit code of one batchpod command in a new process."""
    code = (
        "import resource, sys, time\n"
        "from batchpod.cli import main\n"
        "start = time.perf_counter()\n"
        f"rc = main({argv!r})\n"
        "wall = time.perf_counter() - start\n"
        "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(f'{wall} {rss} {rc}', file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    wall, rss, rc = proc.stderr.strip().splitlines()[-1].split()
    return float(wall), float(rss), int(rc)


def bench_validate(jobs: int, repeat: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="batchpod-bench-") as tmp:
        path = write_manifest(Path(tmp), jobs)
        runs = [_timed(["validate", str(path)]) for _ in range(repeat)]
    if any(rc != 0 for _, _, rc in runs):
        raise SystemExit(f"validate failed: exit codes {[rc for _, _, rc in runs]}")
    wall = statistics.median(r[0] for r in runs)
    return {
        "scenario": "validate",
        "jobs": jobs,
        "repeat": repeat,
        "wall_s": round(wall, 3),
        "jobs_per_s": round(jobs / wall),
        "peak_rss_mib": round(statistics.median(r[1] for r in runs), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=["validate"])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs in the manifest")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the median is reported")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    started = time.time()
    result = bench_validate(args.jobs, args.repeat)
    result["python"] = sys.version.split()[0]
    result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    for key, value in result.items():
        print(f"{key:>14}  {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
