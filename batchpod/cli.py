"""The ``batchpod`` command line: the composition root.

This is the only module that reads ``argv``, the environment and the terminal, and the only one
that turns ``BatchpodError``\\ s into messages and exit codes. Everything it runs lives in the
library modules, so the CLI stays a thin layer over them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TextIO, TypeVar

import anyio

from batchpod import logs, merge
from batchpod import report as report_module
from batchpod import sandbox as sandbox_api
from batchpod._version import __version__
from batchpod.api import api_endpoint, run_manifest
from batchpod.budget import DEFAULT_CENTS_PER_MINUTE, dollars_to_cents, usd
from batchpod.client import (
    DEFAULT_BASE_URL,
    ApiClient,
    ApiKeyInfo,
    CreatedApiKey,
    RevokedApiKey,
)
from batchpod.config import BASE_URL_ENV, RunConfig
from batchpod.errors import (
    ApiError,
    BadApiKey,
    BatchpodError,
    ConfigError,
    ExitCode,
    KeyFileError,
    ManifestError,
    MissingApiKey,
    ResultsWriteError,
)
from batchpod.estimate import PriorWork, estimate_jobs, prior_work_of, totals
from batchpod.journal import JobState
from batchpod.keys import DEFAULT_KEY_VARIABLE, KeyCheck, KeySource, check_key, read_key
from batchpod.logs import LogFormat
from batchpod.manifest import check_manifest, load_manifest
from batchpod.models import JobStatus, Manifest
from batchpod.paths import default_results_path
from batchpod.reporters import BarReporter, LogReporter, TeeReporter
from batchpod.results import results_yaml, write_atomic
from batchpod.runner import Reporter, StopReason
from batchpod.session import RunSummary
from batchpod.shards import Shard
from batchpod.standing import read_standing

N = TypeVar("N", int, float)


PROG = "batchpod"
#: The run's defaults, shown in --help and given to argparse: written once, in RunConfig.
DEFAULTS = RunConfig()


def _as_time(seconds: float) -> str:
    """``7200`` -> ``2h``: a time as --job-timeout takes it."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command (also used by the docs test)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Batch runner for the AudioPod stem-separation API: a YAML manifest of songs in, "
            "stems and a results manifest out."
        ),
        epilog="Run 'batchpod COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    validate = commands.add_parser(
        "validate",
        help="check a manifest and report every problem in it",
        description=(
            "Parse and check the whole manifest. Every problem is printed as "
            "FILE:LINE:COL: message. Exit 0 when clean, 2 otherwise."
        ),
    )
    validate.add_argument("manifest", metavar="MANIFEST", help="the jobs manifest (YAML)")
    validate.set_defaults(handler=_cmd_validate)

    run = commands.add_parser(
        "run",
        help="run every job of a manifest: submit, poll, download, write results",
        description=(
            "Validate the manifest, then submit its jobs to AudioPod (concurrency at a time), "
            "poll them, download every stem to output_dir/NAME/, and write a results manifest "
            "next to the manifest. Nothing is submitted while the manifest has problems."
        ),
    )
    run.add_argument("manifest", metavar="MANIFEST", help="the jobs manifest (YAML)")
    _add_api_arguments(run)
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
        type=_positive_int,
        help="jobs in flight at once, overriding the manifest's 'concurrency'",
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
        type=_shard,
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
    _add_money_arguments(run)
    run.add_argument(
        "--state",
        metavar="PATH",
        type=Path,
        help="the state file that makes re-runs resume (default: MANIFEST's name + .batchpod.db)",
    )
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="submit jobs that failed in an earlier run again (each is a new charge)",
    )
    run.add_argument(
        "--grace",
        metavar="SECONDS",
        type=_seconds,
        default=DEFAULTS.grace_s,
        help="after Ctrl-C or SIGTERM, how long jobs in flight may still finish "
        f"(default: {DEFAULTS.grace_s:g})",
    )
    run.add_argument(
        "--job-timeout",
        metavar="TIME",
        type=_duration,
        default=DEFAULTS.job_timeout_s,
        help="how long one job may take, submit to last stem, before it is recorded as "
        "'expired' (a re-run picks it up without paying again); seconds, or with a unit: "
        f"90m, 2h (default: {_as_time(DEFAULTS.job_timeout_s)})",
    )
    run.add_argument(
        "--max-rps",
        metavar="N",
        type=_positive_float,
        help="send at most N API requests per second, evenly spaced (stem downloads apart; "
        "default: no cap beyond backing off on AudioPod's 429s)",
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
        type=_positive_int,
        default=DEFAULTS.download_concurrency,
        help=f"stem downloads at once, across all jobs (default: {DEFAULTS.download_concurrency})",
    )
    run.set_defaults(handler=_cmd_run)

    status = commands.add_parser(
        "status",
        help="show what the state file knows about a manifest's jobs",
        description=(
            "Read the manifest's state file (even while a run holds it) and print the number "
            "of jobs in each state; with -v, one line per job."
        ),
    )
    status.add_argument("manifest", metavar="MANIFEST", help="the jobs manifest (YAML)")
    status.add_argument("--state", metavar="PATH", type=Path, help="the state file to read")
    status.add_argument("-v", "--verbose", action="store_true", help="one line per job")
    status.add_argument(
        "--shard",
        metavar="I/N",
        type=_shard,
        help="show shard I of N: its state file and its jobs only",
    )
    status.set_defaults(handler=_cmd_status)

    estimate = commands.add_parser(
        "estimate",
        help="what a manifest will cost, and whether it fits the budget and the balance",
        description=(
            "Estimate each job's minutes and cost and the total (jobs of unknown length at "
            "--assume-duration, so the total is a worst case), read the balance if a key is "
            "set, and say whether the run fits the budget and the wallet. Nothing is "
            "submitted. Exit 0 if it fits, 3 if it does not."
        ),
    )
    estimate.add_argument("manifest", metavar="MANIFEST", help="the jobs manifest (YAML)")
    _add_api_arguments(estimate)
    estimate.add_argument(
        "--state", metavar="PATH", type=Path, help="the state file, for jobs already done"
    )
    _add_money_arguments(estimate)
    estimate.set_defaults(handler=_cmd_estimate)

    balance = commands.add_parser(
        "balance",
        help="print the API wallet's balance",
        description="Check the key against AudioPod and print the wallet's balance.",
    )
    _add_api_arguments(balance)
    balance.set_defaults(handler=_cmd_balance)

    key = commands.add_parser(
        "key",
        help="test the API key, and list, create or revoke the account's keys",
        description=(
            "Manage AudioPod API keys. 'check' tests the key (exit 0, or 4 with the fix); "
            "'list' shows the account's keys (never a key's value); 'create' makes a key "
            "and prints it once; 'revoke' disables one."
        ),
    )
    key_commands = key.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    key_check = key_commands.add_parser(
        "check",
        help="test the key against the balance endpoint and show the balance",
        description="Test the key with GET /api-wallet/balance and print the balance and "
        "the low-balance warning. Exit 0 when AudioPod accepts the key, 4 otherwise.",
    )
    _add_api_arguments(key_check)
    key_check.set_defaults(handler=_cmd_key_check)
    key_list = key_commands.add_parser(
        "list",
        help="list the account's API keys: name, created, last used, expiry, status",
        description="List the account's API keys. Key values are never shown.",
    )
    _add_api_arguments(key_list)
    key_list.set_defaults(handler=_cmd_key_list)
    key_create = key_commands.add_parser(
        "create",
        help="create an API key and print it (the only time it is shown)",
        description="Create an API key. The key alone goes to stdout (so that "
        "'batchpod key create ci > ci.key' stores it), its details to stderr. AudioPod "
        "shows a key only once.",
    )
    key_create.add_argument("name", metavar="NAME", help="a name for the key, e.g. prod-nightly")
    key_create.add_argument(
        "--scopes",
        metavar="SCOPES",
        default="*",
        help="comma-separated scopes (default: *, everything)",
    )
    key_create.add_argument(
        "--expires-in-days",
        metavar="N",
        type=_positive_int,
        help="the key stops working after N days (default: never), for temporary access",
    )
    _add_api_arguments(key_create)
    key_create.set_defaults(handler=_cmd_key_create)
    key_revoke = key_commands.add_parser(
        "revoke",
        help="revoke an API key by id (asks first unless --yes)",
        description="Revoke the API key with this id (see 'batchpod key list'). Every "
        "request with it is refused from then on (403).",
    )
    key_revoke.add_argument("id", metavar="ID", help="the key's id")
    key_revoke.add_argument("--yes", action="store_true", help="revoke without asking")
    _add_api_arguments(key_revoke)
    key_revoke.set_defaults(handler=_cmd_key_revoke)

    merge = commands.add_parser(
        "merge",
        help="combine the results files of a manifest's shards into one",
        description=(
            "Read the results files of a sharded run (--shard I/N) and write one results "
            "manifest in the manifest's job order, as a single run would have. Jobs that no "
            "file lists, and shards with no file, are reported: exit 1 then, else 0."
        ),
    )
    merge.add_argument("results", metavar="RESULTS", nargs="+", type=Path, help="shard results")
    merge.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        type=Path,
        help="where to write the merged results (default: MANIFEST's name + .results.yaml, "
        "or .json with --format json)",
    )
    merge.add_argument(
        "--format",
        choices=("yaml", "json"),
        default="yaml",
        help="format of the merged results (default: yaml)",
    )
    merge.add_argument(
        "--manifest",
        metavar="PATH",
        type=Path,
        help="the manifest the shards ran (default: the one their results name)",
    )
    merge.set_defaults(handler=_cmd_merge)

    report = commands.add_parser(
        "report",
        help="summarise a results file: counts, spend, slowest and failed jobs; or CSV",
        description=(
            "Read a results manifest and print a summary for people (counts, spend, the "
            "slowest jobs, every failed, expired or unknown job with its error), or one CSV "
            "row per job for spreadsheets."
        ),
    )
    report.add_argument("results", metavar="RESULTS", type=Path, help="a results file")
    report.add_argument(
        "--format",
        choices=("text", "csv"),
        default="text",
        help="a summary for people, or CSV (default: text)",
    )
    report.add_argument(
        "--slowest",
        metavar="N",
        type=_count,
        default=5,
        help="how many of the slowest jobs to list (default: 5)",
    )
    report.set_defaults(handler=_cmd_report)

    sandbox = commands.add_parser(
        "sandbox",
        help="serve a local AudioPod API for trying batchpod without an account",
        description=(
            "Serve the sandbox, a local AudioPod API with a ready key and wallet, on "
            "loopback. It prints the base URL and the key to use; Ctrl-C stops it."
        ),
    )
    sandbox_api.add_arguments(sandbox)
    sandbox.set_defaults(handler=_cmd_sandbox)
    return parser


def _add_api_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="run against a local sandbox AudioPod started for this command (no account, "
        "no network, nothing charged)",
    )
    parser.add_argument(
        "--api-key-env",
        metavar="NAME",
        help=f"environment variable holding the API key (default: {DEFAULT_KEY_VARIABLE}), such as "
        "one per environment: AUDIOPOD_API_KEY_PROD",
    )
    parser.add_argument(
        "--api-key-file",
        metavar="PATH",
        type=Path,
        help="read the API key from this file (as secret managers mount them); it must be "
        "readable by its owner only (chmod 600)",
    )
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help=f"the AudioPod API's address (default: ${BASE_URL_ENV} or {DEFAULT_BASE_URL})",
    )


def _add_money_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-spend",
        metavar="USD",
        type=_dollars,
        help="the most this run may spend, in dollars (overrides budget.max_spend_usd)",
    )
    parser.add_argument(
        "--keep-balance",
        metavar="USD",
        type=_dollars,
        help="the balance to leave in the wallet, in dollars (overrides budget.keep_balance_usd)",
    )
    parser.add_argument(
        "--assume-duration",
        metavar="MINUTES",
        type=_positive_float,
        default=DEFAULTS.assumed_duration_s / 60,
        help="the length assumed for songs of unknown length, in minutes "
        f"(default: {DEFAULTS.assumed_duration_s / 60:g})",
    )


def _dollars(text: str) -> int:
    """Dollars as typed ('5', '12.50', '$3') -> integer cents."""
    try:
        value = Decimal(text.strip().removeprefix("$"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount in dollars: {text!r}") from None
    try:
        return dollars_to_cents(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"dollars >= 0 in whole cents, please: {text!r}") from None


def _number(
    convert: Callable[[str], N], noun: str, accept: Callable[[N], bool], requirement: str
) -> Callable[[str], N]:
    """An argparse type: ``convert`` the text, then insist that ``accept`` holds."""

    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{requirement}: {text}")
        return value

    return parse


_positive_float = _number(float, "a number", lambda v: 0 < v < math.inf, "must be above 0")
_seconds = _number(float, "a number of seconds", lambda v: v >= 0, "must be 0 or more")
_positive_int = _number(int, "a whole number", lambda v: v >= 1, "must be at least 1")
_count = _number(int, "a whole number", lambda v: v >= 0, "must be 0 or more")


def _shard(text: str) -> Shard:
    """An argparse type: ``I/N``, shard I (from 0) of N."""
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def _duration(text: str) -> float:
    """An argparse type: seconds, or a number with a unit (``90s``, ``45m``, ``2h``)."""
    number, unit = text.strip(), "s"
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if number.lower().endswith(suffix):
            number, unit = number[: -len(suffix)].strip(), suffix
            break
    seconds = _positive_float(number) * _UNITS[unit]
    if not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(f"must be a finite time: {text}")
    return seconds


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run one batchpod command; return its exit code."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help, --version and usage errors
        return int(exc.code) if isinstance(exc.code, int) else ExitCode.USAGE
    fmt: LogFormat = getattr(args, "log_format", "text")
    log_path: Path | None = getattr(args, "log_file", None)
    quiet: bool = getattr(args, "quiet", False)
    log_file = None
    if log_path is not None:
        try:
            log_file = logs.open_log_file(log_path)
        except OSError as exc:
            print(f"{PROG}: error: cannot write the log file {log_path}: {exc.strerror}", file=err)
            return ExitCode.IO_ERROR
    # The terminal (or cron's mail) gets the log unless it goes to a file; then only problems.
    people = logs.handler_for(
        err,
        "text" if log_file else fmt,
        prefix=PROG,
        level=logging.WARNING if quiet or log_file else logging.INFO,
    )
    handlers = [people] + ([logs.handler_for(log_file, fmt, prefix=PROG)] if log_file else [])
    args.people_log = people  # a progress bar quiets it
    report = functools.partial(
        _report,
        err=err,
        json_to=err if fmt == "json" and not log_file else None,
        log_file=log_file if fmt == "json" else None,
    )
    try:
        with _logging_to(handlers):
            code: int = args.handler(args, out, err)
    except BaseExceptionGroup as group:
        # Task groups wrap what their tasks raise; one condition inside is still one line.
        inner = _sole_error(group)
        if inner is None:
            raise
        return report(inner)
    except (BatchpodError, KeyboardInterrupt) as exc:
        return report(exc)
    finally:
        if log_file is not None:
            log_file.close()
    return code


def _sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one BatchpodError or KeyboardInterrupt inside (nested) groups, if there is one."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    known = [e for e in leaves if isinstance(e, BatchpodError | KeyboardInterrupt)]
    # The same condition met by several workers (a full disk, say) is still one problem.
    distinct = {(type(e), str(e)) for e in known}
    return known[0] if known and len(known) == len(leaves) and len(distinct) == 1 else None


def _report(
    exc: BaseException, *, err: TextIO, json_to: TextIO | None, log_file: TextIO | None
) -> int:
    """Print one condition the way users see it; return its exit code.

    With a JSON log, each line is a JSON error event: on stderr (``json_to``) instead of the
    text when the log goes there, else in the log file as well as the text on stderr.
    """
    code, lines = _describe_failure(exc)
    for line in lines:
        if json_to is None:
            print(line, file=err)
        for stream in (json_to, log_file):
            if stream is not None:
                print(logs.error_line(line, exit_code=code), file=stream)
    return code


def _describe_failure(exc: BaseException) -> tuple[int, list[str]]:
    """The exit code of a condition, and its lines for people."""
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED, [f"{PROG}: interrupted"]
    assert isinstance(exc, BatchpodError)
    if isinstance(exc, ManifestError):
        return exc.exit_code, [str(problem) for problem in exc.problems]
    return exc.exit_code, [f"{PROG}: error: {exc.lead}{exc}"]


def console_main() -> None:
    """Entry point of the ``batchpod`` console script."""
    raise SystemExit(main())


def _cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    manifest, problems = check_manifest(args.manifest)
    if problems:
        raise ManifestError(problems)
    assert manifest is not None
    urls = sum(1 for job in manifest.jobs if job.source.kind == "url")
    files = len(manifest.jobs) - urls
    jobs = "job" if len(manifest.jobs) == 1 else "jobs"
    print(f"ok: {len(manifest.jobs)} {jobs}, {urls} URL, {files} files", file=out)
    return ExitCode.OK


def _cmd_sandbox(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        settings = sandbox_api.settings_from_args(args)
    except ValueError as exc:
        raise ConfigError(f"sandbox: {exc}") from exc
    try:
        sandbox_api.serve_forever(
            settings, args.host, args.port, out=out, allow_remote=args.allow_remote
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot serve the sandbox on {args.host}:{args.port}: {reason}") from exc
    except ValueError as exc:  # a non-loopback host without --allow-remote
        raise ConfigError(f"sandbox: {exc}") from exc
    return ExitCode.OK


@contextlib.contextmanager
def _logging_to(handlers: Sequence[logging.Handler]) -> Iterator[None]:
    """Send the batchpod logger's records to ``handlers`` for the length of one command."""
    logger = logging.getLogger(PROG)
    level, propagate = logger.level, logger.propagate
    for handler in handlers:
        logger.addHandler(handler)
    # No record is made that no handler wants (a --quiet run makes one per job otherwise).
    logger.setLevel(min(handler.level for handler in handlers))
    logger.propagate = False
    try:
        yield
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _key_source(args: argparse.Namespace) -> KeySource:
    """Where the key is: --api-key-file, else --api-key-env, else $AUDIOPOD_API_KEY."""
    if args.api_key_file is not None:
        if args.api_key_env is not None:
            raise ConfigError("give --api-key-env or --api-key-file, not both")
        return KeySource.file(args.api_key_file)
    return _env_source(DEFAULT_KEY_VARIABLE if args.api_key_env is None else args.api_key_env)


def _env_source(variable: str) -> KeySource:
    try:
        return KeySource.env(variable)
    except ValueError as exc:
        raise ConfigError(f"not an environment variable's name: {variable!r}") from exc


def _api_key(args: argparse.Namespace) -> str:
    return read_key(_key_source(args))


@contextlib.asynccontextmanager
async def _client(args: argparse.Namespace) -> AsyncIterator[ApiClient]:
    """A client for the configured API with the configured key, or for a sandbox started for
    this command."""
    key = None if args.sandbox else _api_key(args)
    source = "the sandbox's key" if args.sandbox else _key_source(args).describe()
    async with (
        api_endpoint(sandbox=args.sandbox, api_key=key, base_url=args.base_url) as (url, api_key),
        ApiClient(base_url=url, api_key=api_key, key_source=source) as api,
    ):
        yield api


def _cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    manifest = load_manifest(args.manifest)  # validates: nothing is sent while it has problems
    if args.dry_run:
        return _show_estimate(manifest, args, out)
    # Read first thing, so that a missing key is reported before anything else happens.
    key = None if args.sandbox else _api_key(args)
    fallback = None if args.fallback_key_env is None else _env_source(args.fallback_key_env)
    config = RunConfig(
        sandbox=args.sandbox,
        base_url=args.base_url,
        api_key=key,
        key_source=None if args.sandbox else _key_source(args),
        fallback_key_source=fallback,
        shard=args.shard,
        concurrency=args.concurrency,
        download=not args.no_download,
        retry_failed=args.retry_failed,
        max_spend_cents=args.max_spend,
        keep_balance_cents=args.keep_balance,
        budget_scope=args.budget_scope,
        assumed_duration_s=args.assume_duration * 60,
        results_path=args.results,
        results_format=args.format,
        state_path=args.state,
        job_timeout_s=args.job_timeout,
        grace_s=args.grace,
        handle_signals=True,
        max_rps=args.max_rps,
        download_concurrency=args.download_concurrency,
    )
    bar = None
    reporter: Reporter = LogReporter()
    if err.isatty() and not args.quiet and (args.log_format == "text" or args.log_file):
        # A shard's share of the jobs is known only once their keys are: no total then.
        bar = BarReporter(len(manifest.jobs) if args.shard is None else None, stream=err)
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
        return code  # all is well: cron mails nothing
    print(_summary_line(summary), file=out)
    if summary.stop is not None and summary.stop.reason is not StopReason.INTERRUPTED:
        print(f"{PROG}: stopped early: {summary.stop.message}", file=err)
    return code


def _summary_line(summary: RunSummary) -> str:
    counts: dict[str, int] = {}
    for result in summary.results:
        counts[result.status.value] = counts.get(result.status.value, 0) + 1
    parts = [f"{counts[s.value]} {s.value}" for s in JobStatus if counts.get(s.value)]
    elapsed = summary.finished_at - summary.started_at
    return (
        f"done: {', '.join(parts) or 'no jobs'} in {elapsed:.1f} s; "
        f"spent {usd(summary.spent_cents)}; results: {summary.results_path}"
    )


def _cmd_balance(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def go() -> tuple[int, int | None]:
        async with _client(args) as api:
            balance = await api.balance()
            return balance.balance_cents, balance.total_spent_cents

    cents, spent = anyio.run(go)
    extra = f" (spent so far {usd(spent)})" if spent is not None else ""
    print(f"balance: {usd(cents)}{extra}", file=out)
    return ExitCode.OK


def _cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    manifest = load_manifest(args.manifest)
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


def _cmd_estimate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return _show_estimate(load_manifest(args.manifest), args, out)


def _show_estimate(manifest: Manifest, args: argparse.Namespace, out: TextIO) -> int:
    """Print the estimate of ``batchpod estimate`` / ``run --dry-run``; 0 if it fits, else 3."""
    standing = read_standing(manifest, state_path=args.state)
    repeated = standing.repeated
    price, price_note, balance = DEFAULT_CENTS_PER_MINUTE, "AudioPod's documented price", None
    balance_note = ""
    try:
        key: str | None = None if args.sandbox else _api_key(args)
    except (MissingApiKey, BadApiKey, KeyFileError) as exc:
        key, balance_note = None, f" (no balance: {exc})"
    if args.sandbox or key is not None:

        async def fetch() -> tuple[int | None, int | None]:
            async with _client(args) as api:
                try:
                    cents = await api.price_per_minute_cents()
                except ApiError:
                    cents = None
                return cents, (await api.balance()).balance_cents

        try:
            fetched, balance = anyio.run(fetch)
        except ApiError as exc:
            balance_note = f" (AudioPod could not be reached: {exc})"
        else:
            if fetched is not None:
                price, price_note = fetched, "from AudioPod's pricing"
    assumed_s = args.assume_duration * 60
    estimates = estimate_jobs(
        manifest.jobs,
        cents_per_minute=price,
        assumed_duration_s=assumed_s,
        prior=[prior_work_of(record) for record in standing.records],
        skip=repeated,
    )
    width = max(len(e.job.name) for e in estimates)
    print(f"{'JOB':<{width}}  SOURCE  LENGTH   COST      NOTE", file=out)
    for index, e in enumerate(estimates):
        length = _minutes(e.duration_s) if e.duration_s is not None else "?"
        note = f"length from {e.length_from.value}"
        if e.duration_s is None:
            note = f"length unknown: assumed {_minutes(assumed_s)}"
        if e.prior is not PriorWork.TO_RUN:
            note += f"; {e.prior.value} (state)"
        if index in repeated:
            note += "; same song as an earlier job"
        row = f"{e.job.name:<{width}}  {e.job.source.kind:<6}  {length:>6}  {usd(e.cents):>8}"
        print(f"{row}  {note}", file=out)
    budget = RunConfig(
        max_spend_cents=args.max_spend, keep_balance_cents=args.keep_balance
    ).budget_for(manifest)
    sums = totals(estimates, budget=budget, balance_cents=balance)
    worst, known = sums.worst_cents, sums.known_cents
    print(
        f"to run: {sums.to_run} of {sums.jobs} jobs, {usd(worst)} at most "
        f"({usd(known)} for {sums.to_run - sums.unknown_length} of known length, "
        f"{usd(worst - known)} for {sums.unknown_length} of unknown length)",
        file=out,
    )
    if sums.done or sums.paid or sums.failed:
        print(
            f"in the state: {sums.done} done, {sums.paid} submitted earlier (paid), "
            f"{sums.failed} failed (run again only with --retry-failed)",
            file=out,
        )
    print(f"price: {usd(price)} per minute ({price_note})", file=out)
    fits = sums.fits
    if budget.max_spend_cents is not None:
        verdict = "fits" if sums.fits_max_spend else "does NOT fit"
        print(f"max spend: {usd(budget.max_spend_cents)}: {verdict}", file=out)
    if balance is None:
        print(f"balance: unknown{balance_note}", file=out)
    else:
        floor = budget.keep_balance_cents or 0
        left = f"{usd(balance - worst)} would remain"
        keep = f", keeping {usd(floor)}" if budget.keep_balance_cents is not None else ""
        verdict = "fits" if sums.fits_balance else "does NOT fit"
        print(f"balance: {usd(balance)}; {left}{keep}: {verdict}", file=out)
    print("fits: yes" if fits else "fits: no", file=out)
    return ExitCode.OK if fits else ExitCode.BUDGET


def _cmd_key_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def go() -> KeyCheck:
        async with _client(args) as api:
            return await check_key(api)

    check = anyio.run(go)
    print(f"key in {check.source}: accepted by AudioPod", file=out)
    print(f"balance: {usd(check.balance_cents)}", file=out)
    warning = {True: "on (the balance is under the threshold)", False: "off", None: None}
    state = warning[check.low_balance_warning]
    threshold = check.warning_threshold_cents
    if state is None and threshold is None:
        print("low-balance warning: not reported by AudioPod", file=out)
    else:
        at = f", threshold {usd(threshold)}" if threshold is not None else ""
        print(f"low-balance warning: {state or 'not reported'}{at}", file=out)
    return ExitCode.OK


def _cmd_key_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def go() -> list[ApiKeyInfo]:
        async with _client(args) as api:
            return await api.list_api_keys()

    keys = anyio.run(go)
    rows = [
        (
            k.id,
            k.name or "",
            k.status.value,
            _when(k.created_at),
            _when(k.last_used_at),
            _when(k.expires_at) if k.expires_at else "never",
        )
        for k in keys
    ]
    head = ("ID", "NAME", "STATUS", "CREATED", "LAST USED", "EXPIRES")
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out
        )
    return ExitCode.OK


def _cmd_key_create(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    scopes = tuple(s.strip() for s in args.scopes.split(",") if s.strip())
    if not scopes:
        raise ConfigError("--scopes needs at least one scope (or leave it out for '*')")

    async def go() -> CreatedApiKey:
        async with _client(args) as api:
            return await api.create_api_key(
                args.name, scopes=scopes, expires_in_days=args.expires_in_days
            )

    created = anyio.run(go)
    expires = _when(created.expires_at) if created.expires_at else "never"
    print(
        f"{PROG}: created key {created.name or args.name!r} (id {created.id}, scopes "
        f"{','.join(created.scopes) or '*'}, expires {expires})",
        file=err,
    )
    print(
        f"{PROG}: this is the only time AudioPod shows this key: store it now (a secret "
        "manager, or an owner-only file for --api-key-file)",
        file=err,
    )
    print(created.key, file=out)
    return ExitCode.OK


def _cmd_key_revoke(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"revoking key {args.id} needs confirmation: add --yes")
        print(
            f"Revoke API key {args.id}? Every request with it will be refused. [y/N] ",
            end="",
            file=err,
            flush=True,
        )
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            print(f"{PROG}: not revoked", file=err)
            return ExitCode.OK

    async def go() -> RevokedApiKey:
        async with _client(args) as api:
            return await api.revoke_api_key(args.id)

    revoked = anyio.run(go)
    at = f" at {_when(revoked.revoked_at)}" if revoked.revoked_at else ""
    print(f"revoked key {revoked.id}{at}", file=out)
    return ExitCode.OK


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _cmd_merge(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    merged = merge.merge(args.results, manifest=args.manifest)
    manifest = Path(str(merged.document["run"]["manifest"]))
    path = args.output or default_results_path(args.manifest or manifest, args.format)
    if args.format == "json":
        text = json.dumps(merged.document, indent=2, ensure_ascii=False) + "\n"
    else:
        text = results_yaml(merged.document)
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise ResultsWriteError(path=path, reason=exc.strerror or str(exc)) from exc
    jobs = len(merged.document["jobs"])
    print(f"merged {len(args.results)} files: {jobs} jobs; results: {path}", file=out)
    for index in merged.missing_shards:
        print(f"{PROG}: shard {index} has no results file here", file=err)
    for name in merged.missing:
        print(f"{PROG}: job {name!r} is in no shard's results", file=err)
    return ExitCode.JOBS_FAILED if merged.missing or merged.missing_shards else ExitCode.OK


def _cmd_report(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    document = report_module.load_results(args.results)
    if args.format == "csv":
        out.write(report_module.render_csv(document))
    else:
        out.write(report_module.render_text(document, slowest=args.slowest))
    return ExitCode.OK


def _minutes(seconds: float) -> str:
    whole = math.ceil(seconds)
    return f"{whole // 60}:{whole % 60:02d}"
