"""``batchpod results`` and the fleet's ``status``: what a PostgreSQL state says of a fleet.

Both read the shared state at any moment, while workers run or after they have gone
(``batchpod.census``); neither writes to it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import anyio

from batchpod.errors import ConfigError, ExitCode, ResultsWriteError
from batchpod.fleet import DatabaseUrl
from batchpod.journal import JobState
from batchpod.manifest import load_manifest
from batchpod.models import Manifest
from batchpod.paths import default_results_path
from batchpod.results import Renderer, write_atomic

from ._options import Commands, state

if TYPE_CHECKING:
    from batchpod.census import Census


def add_parsers(commands: Commands) -> None:
    """Add ``results``."""
    results = commands.add_parser(
        "results",
        help="write the results manifest of a whole fleet from its PostgreSQL state",
        description=(
            "Read the manifest's jobs from the shared PostgreSQL state of a fleet (at any "
            "time: while workers run, or after) and write the results manifest of the whole "
            "manifest, in its job order: each job as the worker that settled it recorded it, "
            "or as it stands. Exit 0 if every job succeeded, else 1."
        ),
    )
    results.add_argument("manifest", metavar="MANIFEST", help="the jobs manifest (YAML)")
    results.add_argument(
        "--state", metavar="URL", type=state, required=True, help="the fleet's postgresql:// URL"
    )
    results.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        type=Path,
        help="where to write them (default: MANIFEST's name + .results.yaml, or .json)",
    )
    results.add_argument(
        "--format", choices=("yaml", "json"), default="yaml", help="(default: yaml)"
    )
    results.set_defaults(handler=_cmd_results)


def database_url(args: argparse.Namespace, command: str) -> DatabaseUrl:
    if not isinstance(args.state, str):
        raise ConfigError(f"{command} needs --state postgresql://... (a fleet's state)")
    return DatabaseUrl(args.state)


def _cmd_results(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from batchpod.census import fleet_results, read_census  # loads the database driver

    manifest = load_manifest(args.manifest)
    census = anyio.run(read_census, manifest, database_url(args, "results"))
    header, results = fleet_results(census, manifest.path)
    path: Path = args.output or default_results_path(manifest.path, args.format)
    text = Renderer(args.format, base=manifest.path.parent)(header, results)
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise ResultsWriteError(path=path, reason=exc.strerror or str(exc)) from exc
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status.value] = counts.get(result.status.value, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    print(f"{len(results)} jobs: {summary}; results: {path}", file=out)
    return ExitCode.OK if all(r.ok for r in results) else ExitCode.JOBS_FAILED


def show_fleet_status(manifest: Manifest, url: DatabaseUrl, *, verbose: bool, out: TextIO) -> int:
    """``batchpod status --state postgresql://...``: the fleet's jobs by state, and each
    worker of its current run."""
    from batchpod.census import read_census  # loads the database driver

    census = anyio.run(read_census, manifest, url)
    title = manifest.path.name
    if census.fleet is None:
        print(f"{title}: {len(manifest.jobs)} jobs, none run yet ({census.where})", file=out)
        return ExitCode.OK
    print(_summary(title, census), file=out)
    now = time.time()
    epoch = census.fleet.epoch
    for worker in census.workers:
        if worker.epoch != epoch:
            continue
        if worker.finished_at is not None:
            how = f"finished (exit {worker.exit_code})"
        elif worker.evicted_at is not None:
            how = "lost its lease; its jobs were taken over"
        elif worker.alive:
            how = f"working, holds {worker.jobs_held}"
        else:
            how = f"gone quiet {now - worker.seen_at:.0f} s ago, holds {worker.jobs_held}"
        print(f"  worker {worker.worker}: {how}; worked {worker.jobs_worked}", file=out)
    if verbose:
        for job, row in zip(census.jobs, census.rows, strict=True):
            if row is None:
                print(f"  {job.name}: pending", file=out)
                continue
            record = row.record
            remote = f" id {record.remote_id}" if record.remote_id else ""
            owner = f" (worker {row.owner})" if row.owner else ""
            error = f": {record.error.message}" if record.error else ""
            print(f"  {job.name}: {record.state.value}{remote}{owner}{error}", file=out)
    return ExitCode.OK


def _summary(title: str, census: Census) -> str:
    counts: dict[str, int] = {}
    for index, row in enumerate(census.rows):
        if census.first_of[index] != index:
            continue
        value = row.record.state.value if row else "pending"
        counts[value] = counts.get(value, 0) + 1
    summary = ", ".join(f"{counts[s.value]} {s.value}" for s in JobState if counts.get(s.value))
    assert census.fleet is not None
    stopped = f"; stopped: {census.fleet.stop_message}" if census.fleet.stop_message else ""
    return f"{title}: {len(census.jobs)} jobs: {summary} ({census.where}){stopped}"
