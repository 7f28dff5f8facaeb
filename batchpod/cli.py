"""The ``batchpod`` command line: the composition root.

This is the only module that reads ``argv``, the environment and the terminal, and the only one
that turns ``BatchpodError``\\ s into messages and exit codes. Everything it runs lives in the
library modules, so the CLI stays a thin layer over them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import logging
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from decimal import Decimal, InvalidOperation
from enum import IntEnum
from pathlib import Path
from typing import TextIO, TypeVar

import anyio

from batchpod import __version__
from batchpod import sandbox as sandbox_api
from batchpod.batch import BatchOptions, RunSummary, job_keys, run_batch
from batchpod.budget import (
    DEFAULT_ASSUMED_DURATION_S,
    DEFAULT_CENTS_PER_MINUTE,
    dollars_to_cents,
    usd,
)
from batchpod.client import DEFAULT_BASE_URL, ApiClient
from batchpod.errors import (
    ApiError,
    AuthenticationError,
    BadApiKey,
    BatchpodError,
    ConfigError,
    ManifestError,
    MissingApiKey,
    OutputError,
    ResultsWriteError,
    StateLocked,
)
from batchpod.estimate import Progress, estimate_jobs
from batchpod.journal import JobState, Journal, default_state_path
from batchpod.manifest import check_manifest, load_manifest
from batchpod.models import JobStatus, Manifest
from batchpod.progress import BarReporter, LogReporter
from batchpod.runner import Reporter, StopReason

N = TypeVar("N", int, float)


class ExitCode(IntEnum):
    """Exit codes of every batchpod command (documented in the README)."""

    OK = 0  # every job succeeded (or, for other commands, success)
    JOBS_FAILED = 1  # the run finished, but some jobs failed
    USAGE = 2  # a usage or manifest error: nothing was submitted
    BUDGET = 3  # stopped early: the budget or the wallet could not cover the next job
    AUTH = 4  # no key, or AudioPod refused it
    UNAVAILABLE = 69  # AudioPod could not be reached or answered wrongly before any work
    IO_ERROR = 74  # the results or stems could not be written (disk full, read-only, ...)
    LOCKED = 75  # another run holds this manifest's state: try again later
    INTERRUPTED = 130  # SIGINT (Ctrl-C)
    TERMINATED = 143  # SIGTERM


PROG = "batchpod"
API_KEY_ENV = "AUDIOPOD_API_KEY"
BASE_URL_ENV = "AUDIOPOD_BASE_URL"
# The sandbox that `--sandbox` starts: jobs take a few seconds, the wallet holds $100.
SANDBOX_SETTINGS = sandbox_api.SandboxSettings(processing_s=(1.0, 4.0), balance_cents=10_000)


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
    run.add_argument("--quiet", action="store_true", help="print only errors and the final summary")
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
        default=30.0,
        help="after Ctrl-C or SIGTERM, how long jobs in flight may still finish (default: 30)",
    )
    run.add_argument(
        "--job-timeout",
        metavar="TIME",
        type=_duration,
        default=2 * 3600.0,
        help="how long one job may take, submit to last stem, before it is recorded as "
        "'expired' (a re-run picks it up without paying again); seconds, or with a unit: "
        "90m, 2h (default: 2h)",
    )
    run.add_argument(
        "--max-rps",
        metavar="N",
        type=_positive_float,
        help="send at most N API requests per second, evenly spaced (stem downloads apart; "
        "default: no cap beyond backing off on AudioPod's 429s)",
    )
    run.add_argument(
        "--download-concurrency",
        metavar="N",
        type=_positive_int,
        default=16,
        help="stem downloads at once, across all jobs (default: 16)",
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
        default=API_KEY_ENV,
        help=f"environment variable holding the API key (default: {API_KEY_ENV})",
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
        default=DEFAULT_ASSUMED_DURATION_S / 60,
        help="the length assumed for songs of unknown length, in minutes (default: 10)",
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
    try:
        with _logging_to(err):
            code: int = args.handler(args, out, err)
    except BaseExceptionGroup as group:
        # Task groups wrap what their tasks raise; one condition inside is still one line.
        inner = _sole_error(group)
        if inner is None:
            raise
        return _report(inner, err)
    except (BatchpodError, KeyboardInterrupt) as exc:
        return _report(exc, err)
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


def _report(exc: BaseException, err: TextIO) -> int:
    """Print one condition the way users see it; return its exit code."""
    if isinstance(exc, KeyboardInterrupt):
        print(f"{PROG}: interrupted", file=err)
        return ExitCode.INTERRUPTED
    if isinstance(exc, ManifestError):
        for problem in exc.problems:
            print(problem, file=err)
        return ExitCode.USAGE
    code: int
    message = str(exc)
    if isinstance(exc, MissingApiKey | BadApiKey | AuthenticationError):
        code = ExitCode.AUTH
    elif isinstance(exc, ResultsWriteError | OutputError):
        code = ExitCode.IO_ERROR
    elif isinstance(exc, StateLocked):
        code = ExitCode.LOCKED
    elif isinstance(exc, ApiError):
        code, message = ExitCode.UNAVAILABLE, f"AudioPod could not be used: {exc}"
    else:
        code = ExitCode.USAGE
    print(f"{PROG}: error: {message}", file=err)
    return code


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
def _logging_to(stream: TextIO) -> Iterator[None]:
    """Send the batchpod logger's records to ``stream`` for the length of one command."""
    logger = logging.getLogger(PROG)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _api_key(args: argparse.Namespace) -> str:
    key = os.environ.get(args.api_key_env, "").strip()
    if not key:
        raise MissingApiKey(variable=args.api_key_env)
    if not key.startswith("ap_"):
        raise BadApiKey(variable=args.api_key_env)
    return key


def _base_url(args: argparse.Namespace) -> str:
    url: str = args.base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return url.rstrip("/")


@contextlib.asynccontextmanager
async def _api(args: argparse.Namespace) -> AsyncIterator[tuple[str, str]]:
    """The (base URL, key) to use: a sandbox started for this command, or the configured API."""
    if args.sandbox:
        async with sandbox_api.serve(SANDBOX_SETTINGS) as sb:
            yield sb.base_url, sb.api_key
    else:
        yield _base_url(args), _api_key(args)


def _with_budget(manifest: Manifest, args: argparse.Namespace) -> Manifest:
    """The manifest with --max-spend / --keep-balance in place of its own budget."""
    budget = manifest.budget
    if args.max_spend is not None:
        budget = dataclasses.replace(budget, max_spend_cents=args.max_spend)
    if args.keep_balance is not None:
        budget = dataclasses.replace(budget, keep_balance_cents=args.keep_balance)
    return dataclasses.replace(manifest, budget=budget)


def _cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    manifest = _with_budget(load_manifest(args.manifest), args)  # validates: nothing is sent
    if args.dry_run:
        return _show_estimate(manifest, args, out)
    if not args.sandbox:
        _api_key(args)  # a missing key is reported before anything else happens
    bar = None
    reporter: Reporter
    if err.isatty() and not args.quiet:
        bar = BarReporter(len(manifest.jobs), stream=err)
        reporter = bar
        logging.getLogger(PROG).setLevel(logging.WARNING)
    else:
        reporter = LogReporter(quiet=args.quiet)

    async def go() -> RunSummary:
        async with _api(args) as (base_url, key):
            options = BatchOptions(
                api_key=key,
                base_url=base_url,
                sandbox=args.sandbox,
                download=not args.no_download,
                results_path=args.results,
                results_format=args.format,
                concurrency=args.concurrency,
                state_path=args.state,
                retry_failed=args.retry_failed,
                grace_s=args.grace,
                assumed_duration_s=args.assume_duration * 60,
                job_timeout_s=args.job_timeout,
                max_rps=args.max_rps,
                download_concurrency=args.download_concurrency,
            )
            return await run_batch(manifest, options, reporter=reporter, exit_code_of=_exit_code)

    try:
        summary = anyio.run(go)
    finally:
        if bar is not None:
            bar.close()
    print(_summary_line(summary), file=out)
    if summary.stop is not None and summary.stop.reason is not StopReason.INTERRUPTED:
        print(f"{PROG}: stopped early: {summary.stop.message}", file=err)
    return _exit_code(summary)


def _exit_code(summary: RunSummary) -> int:
    stop = summary.stop
    if stop is not None:
        if stop.reason is StopReason.AUTH:
            return ExitCode.AUTH
        if stop.reason in (StopReason.BUDGET, StopReason.BALANCE):
            return ExitCode.BUDGET
        if stop.signal == signal.SIGTERM:
            return ExitCode.TERMINATED
        return ExitCode.INTERRUPTED
    if any(not result.ok for result in summary.results):
        return ExitCode.JOBS_FAILED
    return ExitCode.OK


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
        async with _api(args) as (base_url, key), ApiClient(base_url=base_url, api_key=key) as api:
            balance = await api.balance()
            return balance.balance_cents, balance.total_spent_cents

    cents, spent = anyio.run(go)
    extra = f" (spent so far {usd(spent)})" if spent is not None else ""
    print(f"balance: {usd(cents)}{extra}", file=out)
    return ExitCode.OK


def _cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    manifest = load_manifest(args.manifest)
    path = args.state or default_state_path(manifest.path)
    if not path.exists():
        print(f"{manifest.path.name}: {len(manifest.jobs)} jobs, none run yet ({path})", file=out)
        return ExitCode.OK
    with Journal.open(path, create=False, readonly=True) as journal:
        records = journal.records()
        keys = anyio.run(functools.partial(job_keys, manifest.jobs, journal, remember=False))
    counts: dict[str, int] = {}
    lines = []
    for job, key in zip(manifest.jobs, keys, strict=True):
        record = records.get(key)
        state = record.state.value if record else "pending"
        counts[state] = counts.get(state, 0) + 1
        if args.verbose:
            remote = f" id {record.remote_id}" if record and record.remote_id else ""
            error = f": {record.error.message}" if record and record.error else ""
            lines.append(f"{job.name}: {state}{remote}{error}")
    order = [s.value for s in JobState]
    summary = ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))
    print(f"{manifest.path.name}: {len(manifest.jobs)} jobs: {summary}", file=out)
    for line in lines:
        print(f"  {line}", file=out)
    return ExitCode.OK


def _cmd_estimate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return _show_estimate(_with_budget(load_manifest(args.manifest), args), args, out)


def _state_progress(manifest: Manifest, state: Path | None) -> tuple[list[Progress], set[int]]:
    """Each job's money progress from the state file, and the indexes of repeated songs."""
    path = state or default_state_path(manifest.path)
    if not path.exists():
        return [Progress.TO_RUN] * len(manifest.jobs), set()
    with Journal.open(path, create=False, readonly=True) as journal:
        records = journal.records()
        keys = anyio.run(functools.partial(job_keys, manifest.jobs, journal, remember=False))
    by_state = {
        JobState.DOWNLOADED: Progress.DONE,
        JobState.FAILED: Progress.FAILED,
        JobState.SUBMITTED: Progress.PAID,
        JobState.COMPLETED: Progress.PAID,
        JobState.SUBMITTING: Progress.PAID,  # perhaps paid: a run reconciles it first
        JobState.UNKNOWN: Progress.PAID,
        JobState.PENDING: Progress.TO_RUN,
    }
    progress = []
    seen: set[str] = set()
    repeated: set[int] = set()
    for index, key in enumerate(keys):
        record = records.get(key)
        progress.append(by_state[record.state] if record else Progress.TO_RUN)
        if key in seen:
            repeated.add(index)
        seen.add(key)
    return progress, repeated


def _show_estimate(manifest: Manifest, args: argparse.Namespace, out: TextIO) -> int:
    """Print the estimate of ``batchpod estimate`` / ``run --dry-run``; 0 if it fits, else 3."""
    progress, repeated = _state_progress(manifest, getattr(args, "state", None))
    price, price_note, balance = DEFAULT_CENTS_PER_MINUTE, "AudioPod's documented price", None
    balance_note = ""
    try:
        key: str | None = None if args.sandbox else _api_key(args)
    except (MissingApiKey, BadApiKey) as exc:
        key, balance_note = None, f" (no balance: {exc})"
    if args.sandbox or key is not None:

        async def fetch() -> tuple[int | None, int | None]:
            async with (
                _api(args) as (base_url, api_key),
                ApiClient(base_url=base_url, api_key=api_key) as api,
            ):
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
        progress=progress,
        skip=repeated,
    )
    width = max(len(e.job.name) for e in estimates)
    print(f"{'JOB':<{width}}  SOURCE  LENGTH   COST      NOTE", file=out)
    for index, e in enumerate(estimates):
        length = _minutes(e.duration_s) if e.duration_s is not None else "?"
        note = f"length from {e.length_from.value}"
        if e.duration_s is None:
            note = f"length unknown: assumed {_minutes(assumed_s)}"
        if e.progress is not Progress.TO_RUN:
            note += f"; {e.progress.value} (state)"
        if index in repeated:
            note += "; same song as an earlier job"
        row = f"{e.job.name:<{width}}  {e.job.source.kind:<6}  {length:>6}  {usd(e.cents):>8}"
        print(f"{row}  {note}", file=out)
    to_run = [e for e in estimates if e.progress is Progress.TO_RUN]
    unknown = [e for e in to_run if e.duration_s is None]
    worst = sum(e.cents for e in to_run)
    known = sum(e.cents for e in to_run if e.duration_s is not None)
    done = sum(1 for e in estimates if e.progress is Progress.DONE)
    paid = sum(1 for e in estimates if e.progress is Progress.PAID)
    failed = sum(1 for e in estimates if e.progress is Progress.FAILED)
    print(
        f"to run: {len(to_run)} of {len(estimates)} jobs, {usd(worst)} at most "
        f"({usd(known)} for {len(to_run) - len(unknown)} of known length, "
        f"{usd(worst - known)} for {len(unknown)} of unknown length)",
        file=out,
    )
    if done or paid or failed:
        print(
            f"in the state: {done} done, {paid} submitted earlier (paid), {failed} failed "
            "(run again only with --retry-failed)",
            file=out,
        )
    print(f"price: {usd(price)} per minute ({price_note})", file=out)
    fits = True
    budget = manifest.budget
    if budget.max_spend_cents is not None:
        ok = worst <= budget.max_spend_cents
        fits &= ok
        verdict = "fits" if ok else "does NOT fit"
        print(f"max spend: {usd(budget.max_spend_cents)}: {verdict}", file=out)
    if balance is None:
        print(f"balance: unknown{balance_note}", file=out)
    else:
        floor = budget.keep_balance_cents or 0
        ok = balance - worst >= floor
        fits &= ok
        left = f"{usd(balance - worst)} would remain"
        keep = f", keeping {usd(floor)}" if budget.keep_balance_cents is not None else ""
        print(
            f"balance: {usd(balance)}; {left}{keep}: {'fits' if ok else 'does NOT fit'}", file=out
        )
    print("fits: yes" if fits else "fits: no", file=out)
    return ExitCode.OK if fits else ExitCode.BUDGET


def _minutes(seconds: float) -> str:
    whole = math.ceil(seconds)
    return f"{whole // 60}:{whole % 60:02d}"
