"""``batchpod status``: what the state file knows about a manifest's jobs."""

from __future__ import annotations

import argparse
from typing import TextIO

from batchpod.errors import ConfigError, ExitCode
from batchpod.fleet import DatabaseUrl
from batchpod.journal import JobState
from batchpod.manifest import load_manifest
from batchpod.standing import read_standing

from ._options import Commands, shard, state
from .fleet import show_fleet_status


def add_parsers(commands: Commands) -> None:
    """Add ``status``."""
    status = commands.add_parser(
        "status",
        help="show what the state file knows about a manifest's jobs",
        description=(
            "Read the manifest's state file (even while a run holds it) and print the number "
            "of jobs in each state; with -v, one line per job."
        ),
    )
    status.add_argument("manifest", metavar="MANIFEST", help="the jobs manifest (YAML)")
    status.add_argument(
        "--state",
        metavar="PATH|URL",
        type=state,
        help="the state file to read, or a fleet's postgresql:// URL (then every worker too)",
    )
    status.add_argument("-v", "--verbose", action="store_true", help="one line per job")
    status.add_argument(
        "--shard",
        metavar="I/N",
        type=shard,
        help="show shard I of N: its state file and its jobs only",
    )
    status.set_defaults(handler=_cmd_status)


def _cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    manifest = load_manifest(args.manifest)
    if isinstance(args.state, str):
        if args.shard is not None:
            raise ConfigError("a fleet's state has no shards: leave --shard out")
        return show_fleet_status(manifest, DatabaseUrl(args.state), verbose=args.verbose, out=out)
    standing = read_standing(manifest, state_path=args.state, shard=args.shard)
    title = manifest.path.name + (f" shard {args.shard}" if args.shard else "")
    if not standing.exists:
        jobs = "" if args.shard else f" {len(manifest.jobs)} jobs,"  # a shard's: not known yet
        print(f"{title}:{jobs} none run yet ({standing.state_path})", file=out)
        return ExitCode.OK
    counts: dict[str, int] = {}
    lines = []
    for job, record in zip(standing.jobs, standing.records, strict=True):
        state = record.state.value if record else "pending"
        counts[state] = counts.get(state, 0) + 1
        if args.verbose:
            remote = f" id {record.remote_id}" if record and record.remote_id else ""
            error = f": {record.error.message}" if record and record.error else ""
            lines.append(f"{job.name}: {state}{remote}{error}")
    order = [s.value for s in JobState]
    summary = ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))
    print(f"{title}: {len(standing.jobs)} jobs: {summary}", file=out)
    for line in lines:
        print(f"  {line}", file=out)
    return ExitCode.OK
