"""``batchpod recover`` and ``batchpod resolve``: a lost state rebuilt, an unknown job settled."""

from __future__ import annotations

import argparse
from typing import TextIO

import anyio

from batchpod import recovery
from batchpod.errors import ConfigError, ExitCode
from batchpod.identity import content_keys
from batchpod.journal import Journal, RunLock
from batchpod.manifest import load_manifest
from batchpod.paths import state_path_for
from batchpod.shards import shard_share

from ._options import PROG, Commands, add_api_arguments, client, shard, sqlite_state, state


def add_parsers(commands: Commands) -> None:
    """Add ``recover`` and ``resolve``."""
    recover = commands.add_parser(
        "recover",
        help="rebuild a lost state from AudioPod's job list, so jobs in flight are not paid twice",
        description=(
            "For each job the state has no row for, look for its AudioPod job in the job list "
            "(same source, stems that fit its mode): adopt it where exactly one matches, and "
            "list the jobs that several match (settle those with 'batchpod resolve'). The "
            "next run follows adopted jobs instead of submitting them. Exit 0, or 1 when some "
            "jobs could not be told apart; 75 while a run holds the state."
        ),
    )
    recover.add_argument("manifest", metavar="MANIFEST", help="the jobs manifest (YAML)")
    _add_state_arguments(recover)
    add_api_arguments(recover)
    recover.set_defaults(handler=_cmd_recover)

    resolve = commands.add_parser(
        "resolve",
        help="settle a job left 'unknown': adopt an AudioPod job, or submit it again",
        description=(
            "A job whose submit's outcome could not be settled is left 'unknown' (see "
            "'batchpod status -v'). --adopt ID makes AudioPod job ID its job (the next run "
            "follows it); --resubmit lets the next run submit it again, a new charge. "
            "Exit 75 while a run holds the state."
        ),
    )
    resolve.add_argument("manifest", metavar="MANIFEST", help="the jobs manifest (YAML)")
    resolve.add_argument("job", metavar="JOB", help="the job's name in the manifest")
    choice = resolve.add_mutually_exclusive_group(required=True)
    choice.add_argument("--adopt", metavar="ID", help="the AudioPod job that is this job's")
    choice.add_argument(
        "--resubmit", action="store_true", help="submit it again on the next run (a new charge)"
    )
    _add_state_arguments(resolve)
    add_api_arguments(resolve)
    resolve.set_defaults(handler=_cmd_resolve)


def _add_state_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", metavar="PATH", type=state, help="the state file to mend")
    parser.add_argument(
        "--shard", metavar="I/N", type=shard, help="shard I of N: its state and its jobs"
    )


def _cmd_recover(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    manifest = load_manifest(args.manifest)
    path = state_path_for(manifest.path, sqlite_state(args, args.command), args.shard)

    async def go() -> recovery.Recovered:
        with RunLock(path), Journal.open(path) as journal:
            keys = await content_keys(manifest.jobs, journal)
            mine, keys = shard_share(manifest, keys, args.shard)
            async with client(args) as api:
                return await recovery.recover(api, mine.jobs, keys, journal)

    found = anyio.run(go)
    for adopted in found.adopted:
        how = "done there" if adopted.state.value == "completed" else "still running there"
        print(f"adopted: {adopted.job}: AudioPod job {adopted.remote_id} ({how})", file=out)
    for name, ids in found.ambiguous:
        print(
            f"{PROG}: cannot tell apart: {name}: AudioPod jobs {', '.join(ids)} (batchpod "
            f"resolve {args.manifest} {name} --adopt ID, or --resubmit)",
            file=err,
        )
    if found.list_cut_short:
        print(
            f"{PROG}: AudioPod's job list could not be read to its end (it is longer than "
            f"{recovery.MAX_PAGES} pages, or jobs were being deleted while it was read): "
            "older ones were not looked at",
            file=err,
        )
    print(
        f"recovered {len(found.adopted)} jobs; {len(found.ambiguous)} could not be told "
        f"apart, {found.unmatched} have no AudioPod job yet, {found.had_rows} were in the "
        f"state already; state: {path}",
        file=out,
    )
    return ExitCode.JOBS_FAILED if found.ambiguous else ExitCode.OK


def _cmd_resolve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    manifest = load_manifest(args.manifest)
    path = state_path_for(manifest.path, sqlite_state(args, args.command), args.shard)
    if not path.exists():
        raise ConfigError(f"there is no state at {path}: nothing to resolve")
    named = [i for i, job in enumerate(manifest.jobs) if job.name == args.job]
    if not named:
        raise ConfigError(f"the manifest has no job named {args.job!r}")

    async def go() -> str:
        with RunLock(path), Journal.open(path, create=False) as journal:
            keys = await content_keys(manifest.jobs, journal)
            key = keys[named[0]]
            record = recovery.unsettled_record(journal, key, args.job)
            if args.resubmit:
                recovery.resubmit(journal, record)
                return f"{args.job}: the next run submits it again (a new charge)"
            async with client(args) as api:
                state = await recovery.adopt(api, journal, record, args.adopt)
            return f"{args.job}: adopted AudioPod job {args.adopt} ({state.value})"

    print(anyio.run(go), file=out)
    return ExitCode.OK
