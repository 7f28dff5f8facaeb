"""``batchpod run``: every job of a manifest, submitted, polled, downloaded, results written.

The flags become one ``RunConfig`` and ``batchpod.api.run_manifest`` does the run; this module
picks the reporter for the terminal (a progress bar on a TTY) and prints the summary line.
``--dry-run`` prints ``batchpod estimate``'s table instead and submits nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
from pathlib import Path
from typing import TextIO

import anyio

from batchpod._version import __version__
from batchpod.api import run_manifest
from batchpod.budget import usd
from batchpod.config import RunConfig, as_duration
from batchpod.errors import ExitCode, exit_code_of
from batchpod.fleet import DEFAULT_LEASE_S
from batchpod.manifest import load_manifest
from batchpod.models import JobStatus, OutputFormat
from batchpod.pings import Pinger
from batchpod.reporters import BarReporter, LogReporter, TeeReporter
from batchpod.runner import Reporter, StopReason
from batchpod.session import RunSummary

from ._options import (
    DEFAULTS,
    PROG,
    Commands,
    add_api_arguments,
    add_money_arguments,
    add_storage_arguments,
    api_key,
    byte_size,
    duration,
    env_source,
    http_url,
    key_source,
    positive_float,
    positive_int,
    report_globs,
    seconds,
    shard,
    state,
)
from .estimate import show_estimate


def add_parsers(commands: Commands) -> None:
    """Add ``run``."""
    run = commands.add_parser(
        "run",
        help="run every job of a manifest: submit, poll, download, write results",
        description=(
            "Validate the manifest, then submit its jobs to AudioPod (concurrency at a time), "
            "poll them, download every stem into output_dir (to output_path, by default "
            "NAME/STEM.EXT, encoded to output_format), "
            "and write a results manifest next to the manifest. Nothing is submitted while "
            "the manifest has problems."
        ),
    )
    run.add_argument("manifest", metavar="MANIFEST", help="the jobs manifest (YAML)")
    add_api_arguments(run)
    run.add_argument(
        "--results",
        metavar="PATH",
        type=Path,
        help="where to write the results manifest (default: MANIFEST's name + .results.yaml, "
        "or .results.json with --format json)",
    )
    run.add_argument(
        "--format",
        choices=("yaml", "json"),
        default="yaml",
        help="format of the results manifest (default: yaml)",
    )
    run.add_argument(
        "--concurrency",
        metavar="N",
        type=positive_int,
        help="jobs in flight at once, overriding the manifest's 'concurrency'",
    )
    add_storage_arguments(run, verb="written")
    run.add_argument(
        "--strict",
        action="store_true",
        help="a 'files' glob that matches nothing is an error (exit 2), not a warning",
    )
    run.add_argument(
        "--upload-part-size",
        metavar="SIZE",
        type=byte_size,
        default=DEFAULTS.upload_part_bytes,
        help="the part size of a bucket's multipart uploads, in bytes or with K, M or G "
        f"(KiB, MiB, GiB; default: {DEFAULTS.upload_part_bytes // 2**20}M; S3 takes no parts "
        "under 5M)",
    )
    run.add_argument(
        "--output-format",
        choices=[f.value for f in OutputFormat],
        help="the format stems are written in, overriding the manifest's 'output_format' "
        "(wav: as AudioPod serves them; the others are encoded here)",
    )
    run.add_argument(
        "--output-path",
        metavar="TEMPLATE",
        help="where each stem goes inside the output folder, overriding the manifest's "
        "'output_path' (default {name}/{stem}.{ext}; fields {name} {stem} {ext} {mode} "
        "{source})",
    )
    run.add_argument(
        "--no-download",
        action="store_true",
        help="stop at completed jobs and record their download URLs instead of downloading",
    )
    run.add_argument(
        "--quiet",
        action="store_true",
        help="print nothing when every job succeeded (for cron); otherwise only the problems "
        "and the summary",
    )
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="the log on stderr (or --log-file): lines for people, or one JSON event per line "
        "(default: text)",
    )
    run.add_argument(
        "--log-file",
        metavar="PATH",
        type=Path,
        help="append the log to PATH instead of stderr (created owner-only); warnings and "
        "errors still reach stderr",
    )
    run.add_argument(
        "--shard",
        metavar="I/N",
        type=shard,
        help="run only shard I of N (I from 0): the jobs whose content key falls in it, with "
        "a state and results file of its own (MANIFEST.shard-I-of-N.results.yaml)",
    )
    run.add_argument(
        "--budget-scope",
        choices=("shard", "wallet"),
        default="shard",
        help="shard: the caps apply to this run alone; wallet: also read the wallet before "
        "every job, so shards spending from one wallet all keep its keep_balance "
        "(default: shard)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the cost estimate (as 'batchpod estimate') and submit nothing",
    )
    add_money_arguments(run)
    run.add_argument(
        "--state",
        metavar="PATH|URL",
        type=state,
        help="the state file that makes re-runs resume (default: MANIFEST's name + "
        ".batchpod.db); or a postgresql:// URL: a database shared by any number of workers "
        "running this manifest together (the password from the URL, PGPASSWORD or ~/.pgpass)",
    )
    run.add_argument(
        "--lease",
        metavar="TIME",
        type=duration,
        default=DEFAULT_LEASE_S,
        help="with a postgresql:// state: how long after its last sign of life a worker's "
        f"jobs stay its own before others take them over (default: {DEFAULT_LEASE_S:g}s)",
    )
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="submit jobs that failed in an earlier run again (each is a new charge)",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="submit jobs that are already done (in the state, or recorded in output_dir by "
        "any earlier run) again; each is a new charge",
    )
    run.add_argument(
        "--delete-remote",
        action="store_true",
        help="delete each job at AudioPod once all its stems are stored and that is "
        "recorded (and jobs earlier runs stored); a crash in between is finished by the next run",
    )
    run.add_argument(
        "--grace",
        metavar="SECONDS",
        type=seconds,
        default=DEFAULTS.grace_s,
        help="after Ctrl-C or SIGTERM, how long jobs in flight may still finish "
        f"(default: {DEFAULTS.grace_s:g})",
    )
    run.add_argument(
        "--job-timeout",
        metavar="TIME",
        type=duration,
        default=DEFAULTS.job_timeout_s,
        help="how long one job may take, submit to last stem, before it is recorded as "
        "'expired' (a re-run picks it up without paying again); seconds, or with a unit: "
        f"90m, 2h (default: {as_duration(DEFAULTS.job_timeout_s, flag=True)})",
    )
    run.add_argument(
        "--max-rps",
        metavar="N",
        type=positive_float,
        help="send at most N API requests per second, evenly spaced (stem downloads apart; "
        "default: no cap beyond backing off on AudioPod's 429s)",
    )
    run.add_argument(
        "--poll-budget",
        metavar="N",
        type=positive_float,
        default=DEFAULTS.poll.budget,
        help="API requests per job, its submit apart, that learning of its end and charge "
        "may cost on average: with many jobs in flight one job-list page serves up to 100, "
        "so it is read as often as that buys; with few, each job is asked about every "
        f"quarter of its age (default: {DEFAULTS.poll.budget:g})",
    )
    run.add_argument(
        "--fallback-key-env",
        metavar="NAME",
        help="environment variable holding a second key: if AudioPod refuses the first "
        "(invalid, revoked or expired), the run switches to it once and records that "
        "(for key rotation)",
    )
    run.add_argument(
        "--download-concurrency",
        metavar="N",
        type=positive_int,
        default=DEFAULTS.download_concurrency,
        help=f"stem downloads at once, across all jobs (default: {DEFAULTS.download_concurrency})",
    )
    run.add_argument(
        "--metrics-file",
        metavar="PATH",
        type=Path,
        help="write Prometheus metrics to PATH (node_exporter's textfile format: name it "
        "*.prom in its collector's folder), replaced whole every --metrics-interval and at "
        "the end",
    )
    run.add_argument(
        "--metrics-interval",
        metavar="TIME",
        type=duration,
        default=DEFAULTS.metrics_interval_s,
        help="how often --metrics-file is rewritten while the run goes on "
        f"(default: {as_duration(DEFAULTS.metrics_interval_s, flag=True)})",
    )
    run.add_argument(
        "--pushgateway",
        metavar="URL",
        type=http_url,
        help="push the metrics to the Prometheus Pushgateway at URL at the start and the end "
        "of the run, grouped by job=batchpod, the manifest's name and the shard or worker",
    )
    run.add_argument(
        "--healthcheck-url",
        metavar="URL",
        type=http_url,
        help="ping a dead man's switch (Healthchecks-style): URL/start when the run starts, "
        "URL when it ends with exit code 0, URL/fail (the exit code in the body) otherwise; "
        "a failed ping is logged and changes nothing",
    )
    run.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.healthcheck_url is None or args.dry_run:
        return _run(args, out, err)[0]
    pings = Pinger(args.healthcheck_url)
    pings.start(f"{PROG} {__version__} run {args.manifest}\n")
    try:
        code, summary = _run(args, out, err)
    except BaseException as exc:
        pings.finish(exit_code_of(exc) or 1, f"{PROG}: {_first_line(exc)}\n")
        raise
    pings.finish(code, _summary_line(summary) + "\n" if summary is not None else "")
    return code


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> tuple[int, RunSummary | None]:
    """The run the flags ask for: its exit code, and its summary (None for --dry-run)."""
    manifest = load_manifest(args.manifest)  # validates: nothing is sent while it has problems
    report_globs(manifest, args.manifest, None, err, strict=args.strict)
    if args.dry_run:
        return show_estimate(manifest, args, out), None
    # Read first thing, so that a missing key is reported before anything else happens.
    key = None if args.sandbox else api_key(args)
    fallback = None if args.fallback_key_env is None else env_source(args.fallback_key_env)
    config = RunConfig(
        sandbox=args.sandbox,
        base_url=args.base_url,
        api_key=key,
        key_source=None if args.sandbox else key_source(args),
        fallback_key_source=fallback,
        shard=args.shard,
        concurrency=args.concurrency,
        output_dir=args.output_dir,
        output_endpoint=args.output_endpoint,
        upload_part_bytes=args.upload_part_size,
        output_format=args.output_format,
        output_path=args.output_path,
        download=not args.no_download,
        retry_failed=args.retry_failed,
        force=args.force,
        delete_remote=args.delete_remote,
        max_spend_cents=args.max_spend,
        keep_balance_cents=args.keep_balance,
        budget_scope=args.budget_scope,
        assumed_duration_s=args.assume_duration * 60,
        results_path=args.results,
        results_format=args.format,
        state_path=args.state if isinstance(args.state, Path) else None,
        state_url=args.state if isinstance(args.state, str) else None,
        lease_s=args.lease,
        job_timeout_s=args.job_timeout,
        grace_s=args.grace,
        handle_signals=True,
        max_rps=args.max_rps,
        poll=dataclasses.replace(DEFAULTS.poll, budget=args.poll_budget),
        download_concurrency=args.download_concurrency,
        metrics_file=args.metrics_file,
        metrics_interval_s=args.metrics_interval,
        pushgateway_url=args.pushgateway,
    )
    bar = None
    reporter: Reporter = LogReporter()
    if err.isatty() and not args.quiet and (args.log_format == "text" or args.log_file):
        # A shard's share, or a fleet worker's, is not known beforehand: no total then.
        alone = args.shard is None and not isinstance(args.state, str)
        bar = BarReporter(len(manifest.jobs) if alone else None, stream=err)
        reporter = TeeReporter(bar, reporter)
        args.people_log.setLevel(logging.WARNING)  # the bar shows the progress
        if not args.log_file:
            logging.getLogger(PROG).setLevel(logging.WARNING)
    try:
        summary = anyio.run(functools.partial(run_manifest, manifest, config, reporter=reporter))
    finally:
        if bar is not None:
            bar.close()
    code = summary.exit_code
    if args.quiet and code == ExitCode.OK:
        return code, summary  # all is well: cron mails nothing
    print(_summary_line(summary), file=out)
    if summary.stop is not None and summary.stop.reason is not StopReason.INTERRUPTED:
        print(f"{PROG}: stopped early: {summary.stop.message}", file=err)
    return code, summary


def _summary_line(summary: RunSummary) -> str:
    """``done: 3 succeeded, 1 failed in 12.0 s; spent $0.40; results: PATH``."""
    counts = summary.counts
    parts = [f"{counts[s.value]} {s.value}" for s in JobStatus if counts.get(s.value)]
    elapsed = summary.finished_at - summary.started_at
    return (
        f"done: {', '.join(parts) or 'no jobs'} in {elapsed:.1f} s; "
        f"spent {usd(summary.spent_cents)}; results: {summary.results_path}"
    )
