"""``batchpod cleanup``: delete at AudioPod the jobs of a manifest that earlier runs finished."""

from __future__ import annotations

import argparse
import time
from typing import TextIO

import anyio

from batchpod import cleanup
from batchpod.config import as_duration
from batchpod.errors import ConfigError, ExitCode
from batchpod.identity import content_keys
from batchpod.journal import Journal, RunLock
from batchpod.manifest import load_manifest
from batchpod.paths import state_path_for
from batchpod.shards import shard_share
from batchpod.storage import open_shelf

from ._options import (
    PROG,
    Commands,
    add_api_arguments,
    add_storage_arguments,
    client,
    duration,
    shard,
    sqlite_state,
)
from ._options import state as state_type


def add_parsers(commands: Commands) -> None:
    """Add ``cleanup``."""
    parser = commands.add_parser(
        "cleanup",
        help="delete at AudioPod the jobs of a manifest whose stems are all stored",
        description=(
            "List the AudioPod jobs of MANIFEST's finished songs: jobs its own state records "
            "as downloaded, whose stems are all still in the output folder as written. With "
            "--yes, delete them at AudioPod (their audio and results there) and record that; "
            "without, only list them. Never a job of another manifest, one still in flight, "
            "or one whose stems are not all stored. Exit 0; 1 when a delete failed (run it "
            "again); 75 while a run holds the state."
        ),
    )
    parser.add_argument("manifest", metavar="MANIFEST", help="the jobs manifest (YAML)")
    parser.add_argument(
        "--older-than",
        metavar="AGE",
        type=duration,
        default=0.0,
        help="only jobs separated at least this long ago (e.g. 7d, 12h, 90m; default: any)",
    )
    parser.add_argument(
        "--yes", action="store_true", help="delete them (without it, only list them)"
    )
    parser.add_argument("--state", metavar="PATH", type=state_type, help="the state file")
    parser.add_argument(
        "--shard", metavar="I/N", type=shard, help="shard I of N: its state and its jobs"
    )
    add_storage_arguments(parser, verb="kept (where the runs wrote them)")
    add_api_arguments(parser)
    parser.set_defaults(handler=_cmd_cleanup)


def _cmd_cleanup(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    manifest = load_manifest(args.manifest)
    path = state_path_for(manifest.path, sqlite_state(args, args.command), args.shard)
    if not path.exists():
        raise ConfigError(f"there is no state at {path}: no run of this manifest finished a job")

    where = args.output_dir or manifest.output_dir
    shelf = open_shelf(where, endpoint=args.output_endpoint)

    async def go() -> cleanup.Cleanup:
        with RunLock(path), Journal.open(path, create=False) as journal:
            keys = await content_keys(manifest.jobs, journal)
            mine, keys = shard_share(manifest, keys, args.shard)
            async with client(args) as api:
                return await cleanup.clean_up(
                    shelf=shelf,
                    api=api,
                    jobs=mine.jobs,
                    keys=keys,
                    journal=journal,
                    older_than_s=args.older_than,
                    now=time.time(),
                    delete=args.yes,
                )

    found = anyio.run(go)
    verb = "deleted" if args.yes else "would delete"
    for candidate in found.candidates:
        print(f"{verb}: {candidate.job}: AudioPod job {candidate.remote_id}", file=out)
    for candidate, why in found.failed:
        print(
            f"{PROG}: could not delete {candidate.job}: AudioPod job {candidate.remote_id}: {why}",
            file=err,
        )
    for name in found.not_stored:
        print(
            f"{PROG}: kept {name}: its stems are not all in the output folder as written "
            "(a run fetches them again from its AudioPod job)",
            file=err,
        )
    parts = [f"{verb} {len(found.candidates)} AudioPod jobs"]
    if found.failed:
        parts.append(f"{len(found.failed)} could not be deleted")
    if found.too_recent:
        parts.append(f"{found.too_recent} separated less than {as_duration(args.older_than)} ago")
    if found.not_stored:
        parts.append(f"{len(found.not_stored)} kept (stems not all stored)")
    if found.cleaned_before:
        parts.append(f"{found.cleaned_before} deleted before")
    tail = "" if args.yes or not found.candidates else " (--yes deletes them)"
    print("; ".join(parts) + tail, file=out)
    return ExitCode.JOBS_FAILED if found.failed else ExitCode.OK
