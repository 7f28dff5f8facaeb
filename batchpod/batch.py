"""One batch run of a manifest: pre-flight, the pool, the charges, the results file.

``run_batch`` is the library entry point the CLI is a thin layer over. It checks the key and
reads the wallet before anything is submitted, runs the worker pool, keeps the results
manifest fresh while jobs finish, reads each job's charge from AudioPod's usage log, and
writes the final results. It does not decide exit codes or talk to a terminal: the caller
passes a ``Reporter`` and a function from the summary to the exit code recorded in the file.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio

from batchpod import __version__
from batchpod.budget import DEFAULT_ASSUMED_DURATION_S, BudgetGuard
from batchpod.client import ApiClient
from batchpod.errors import ApiError, OutputError, ResultsWriteError
from batchpod.flow import with_retries
from batchpod.identity import content_keys
from batchpod.journal import JobRecord, Journal, JournalWriter, RunLock
from batchpod.logs import event
from batchpod.models import JobResult, JobStatus, Manifest
from batchpod.paths import results_path_for, state_path_for
from batchpod.results import Format, Renderer, RunHeader, write_atomic
from batchpod.retry import PollPolicy, RetryPolicy
from batchpod.runner import Pool, Reporter, RunOptions, Stop, StopReason
from batchpod.shards import Shard

log = logging.getLogger("batchpod")


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchOptions:
    """Everything about a run that does not come from the manifest."""

    api_key: str
    base_url: str
    key_source: str = "AUDIOPOD_API_KEY"  # where the key came from, for messages (not the key)
    fallback_key: str | None = None  # used once the first key is refused (401/403)
    fallback_source: str | None = None
    sandbox: bool = False
    download: bool = True
    results_path: Path | None = None  # default: <manifest>.results.<format> beside it
    results_format: Format = "yaml"
    concurrency: int | None = None  # overrides the manifest's
    poll: PollPolicy = field(default_factory=PollPolicy)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    handle_signals: bool = True  # SIGINT/SIGTERM stop the run cleanly (main thread only)
    flush_interval_s: float = 1.0
    state_path: Path | None = None  # default: <manifest>.batchpod.db beside it
    retry_failed: bool = False
    grace_s: float = 30.0  # after a first signal, how long jobs in flight may still finish
    assumed_duration_s: float = DEFAULT_ASSUMED_DURATION_S  # for songs of unknown length
    balance_refresh_s: float = 30.0  # how often the wallet is read again during the run
    max_rps: float | None = None  # API requests per second at most (None: no cap)
    download_concurrency: int = 16  # stem downloads at once
    job_timeout_s: float = 2 * 3600.0  # a job not done by then is recorded as expired
    shard: Shard | None = None  # run only this shard's jobs, with a state and results of its own
    # Read the wallet before every reservation (``--budget-scope wallet``): shards spending
    # from one wallet then all respect its keep_balance, at one more request per job.
    balance_before_reserve: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSummary:
    """What a run did: every job's result, why it stopped early (if it did), the money."""

    results: tuple[JobResult, ...]
    stop: Stop | None
    results_path: Path
    started_at: float
    finished_at: float
    balance_before_cents: int | None
    balance_after_cents: int | None
    peak_in_flight: int
    jobs_worked: int = 0  # jobs this run submitted or followed at AudioPod
    api_requests: int = 0  # API requests sent (stem downloads apart)
    throttled: int = 0  # of which answered 429
    retries: Mapping[str, int] = field(default_factory=dict)  # requests sent again, by cause
    exit_code: int | None = None  # the exit code the CLI gives this run (set once it ends)
    key_switched_to: str | None = None  # the fallback key's source, if the run switched to it

    @property
    def spent_cents(self) -> int:
        """The sum of the charges read back from AudioPod's usage log."""
        return sum(r.cost_cents or 0 for r in self.results)


async def run_batch(
    manifest: Manifest,
    options: BatchOptions,
    *,
    reporter: Reporter,
    exit_code_of: Callable[[RunSummary], int],
) -> RunSummary:
    """Run every job of ``manifest``; write and return the results (see the module docstring)."""
    started = time.time()
    # Each shard has files of its own, also where the caller named them: shards given the
    # same --results or --state must not overwrite or lock out each other.
    results_path = results_path_for(
        manifest.path, options.results_path, options.shard, fmt=options.results_format
    )
    header = RunHeader(
        batchpod_version=__version__,
        manifest=manifest.path,
        manifest_sha256=hashlib.sha256(manifest.path.read_bytes()).hexdigest(),
        base_url=options.base_url,
        sandbox=options.sandbox,
        started_at=started,
        max_spend_cents=manifest.budget.max_spend_cents,
        keep_balance_cents=manifest.budget.keep_balance_cents,
        shard=(options.shard.index, options.shard.count) if options.shard else None,
    )
    concurrency = options.concurrency or manifest.concurrency
    run_options = RunOptions(
        concurrency=concurrency,
        output_dir=manifest.output_dir,
        download=options.download,
        poll=options.poll,
        retry=options.retry,
        retry_failed=options.retry_failed,
        assumed_duration_s=options.assumed_duration_s,
        balance_refresh_s=options.balance_refresh_s,
        download_concurrency=options.download_concurrency,
        job_timeout_s=options.job_timeout_s,
        balance_before_reserve=options.balance_before_reserve,
    )
    writer = _ResultsWriter(results_path, options.results_format, base=manifest.path.parent)
    state_path = state_path_for(manifest.path, options.state_path, options.shard)
    # Before anything is paid for: the stems and the results must have somewhere to go.
    output_dir = manifest.output_dir if options.download else None
    await anyio.to_thread.run_sync(_check_writable, output_dir, results_path)
    with RunLock(state_path), Journal.open(state_path) as journal:
        keys = await content_keys(manifest.jobs, journal)
        manifest, keys = shard_share(manifest, keys, options.shard)
        records = journal.records()
        log.info(
            "run started: %d jobs%s",
            len(manifest.jobs),
            f" (shard {options.shard})" if options.shard else "",
            extra=event(
                "run_started",
                manifest=str(manifest.path),
                jobs=len(manifest.jobs),
                shard=str(options.shard) if options.shard else None,
                concurrency=concurrency,
                base_url=options.base_url,
                sandbox=options.sandbox,
                download=options.download,
                max_spend_cents=manifest.budget.max_spend_cents,
                keep_balance_cents=manifest.budget.keep_balance_cents,
                results=str(results_path),
                state=str(state_path),
            ),
        )
        return await _run_locked(
            manifest,
            options,
            run_options,
            header=header,
            writer=writer,
            journal=journal,
            keys=keys,
            records=records,
            reporter=reporter,
            exit_code_of=exit_code_of,
        )


async def _run_locked(
    manifest: Manifest,
    options: BatchOptions,
    run_options: RunOptions,
    *,
    header: RunHeader,
    writer: _ResultsWriter,
    journal: Journal,
    keys: Sequence[str],
    records: Mapping[str, JobRecord],
    reporter: Reporter,
    exit_code_of: Callable[[RunSummary], int],
) -> RunSummary:
    journal_writer = JournalWriter(journal)
    async with (
        ApiClient(
            base_url=options.base_url,
            api_key=options.api_key,
            key_source=options.key_source,
            fallback_key=options.fallback_key,
            fallback_source=options.fallback_source,
            on_key_switch=_log_key_switch,
            max_connections=run_options.concurrency,
            max_rps=options.max_rps,
        ) as client,
        anyio.create_task_group() as signals,
    ):
        # Pre-flight: a refused key stops the run here, before anything is submitted. A read
        # that outlasts the retry policy stops it too (exit 69): nothing is lost.
        retrying = functools.partial(with_retries, policy=options.retry, rng=random.Random())
        before = await retrying(client.balance)
        header = replace(header, balance_before_cents=before.balance_cents)
        guard = BudgetGuard(
            max_spend_cents=manifest.budget.max_spend_cents,
            keep_balance_cents=manifest.budget.keep_balance_cents,
            balance_cents=before.balance_cents,
        )
        pool = Pool(
            client,
            manifest.jobs,
            run_options,
            budget=guard,
            reporter=reporter,
            keys=keys,
            records=records,
            journal=journal_writer,
        )
        if options.handle_signals and threading.current_thread() is threading.main_thread():
            # Watched until the results are written: a signal after the pool has ended must
            # not cut the final bookkeeping short.
            signals.start_soon(_stop_on_signals, pool, options.grace_s)
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.keep_fresh, header, pool, options.flush_interval_s)
            tg.start_soon(journal_writer.run)
            try:
                await pool.run()
            finally:
                tg.cancel_scope.cancel()
        results = pool.results()
        after: int | None = None
        with anyio.move_on_after(30, shield=True):
            results = await _with_costs(client, results, retrying)
            costs = {
                key: r.cost_cents
                for key, r in zip(keys, results, strict=True)
                if r.cost_cents is not None
                and (key not in records or records[key].cost_cents is None)
            }
            if costs:
                await anyio.to_thread.run_sync(journal.set_costs, costs)
            try:
                after = (await retrying(client.balance)).balance_cents
            except ApiError as exc:
                log.warning("could not read the balance after the run: %s", exc)
        summary = RunSummary(
            results=tuple(results),
            stop=pool.stop,
            results_path=writer.path,
            started_at=header.started_at,
            finished_at=time.time(),
            balance_before_cents=before.balance_cents,
            balance_after_cents=after,
            peak_in_flight=pool.peak_in_flight,
            jobs_worked=pool.worked,
            api_requests=client.counts.requests,
            throttled=client.counts.throttled,
            retries=dict(pool.retry_counts),
            key_switched_to=client.switched_to,
        )
        header = replace(
            header,
            jobs_worked=summary.jobs_worked,
            api_requests=summary.api_requests,
            throttled=summary.throttled,
            retries=summary.retries,
            finished_at=summary.finished_at,
            balance_after_cents=after,
            exit_code=int(exit_code_of(summary)),
            stopped=pool.stop.message if pool.stop else None,
            key_switched_to=client.switched_to,
        )
        summary = replace(summary, exit_code=header.exit_code)
        with anyio.CancelScope(shield=True):
            await writer.write(header, summary.results)
        signals.cancel_scope.cancel()
    counts = Counter(result.status.value for result in summary.results)
    log.info(
        "run finished",
        extra=event(
            "run_finished",
            exit_code=header.exit_code,
            counts={status.value: counts.get(status.value, 0) for status in JobStatus},
            spent_cents=summary.spent_cents,
            balance_before_cents=summary.balance_before_cents,
            balance_after_cents=summary.balance_after_cents,
            elapsed_s=round(summary.finished_at - summary.started_at, 3),
            jobs_worked=summary.jobs_worked,
            api_requests=summary.api_requests,
            stopped=header.stopped,
            results=str(summary.results_path),
        ),
    )
    return summary


def shard_share(
    manifest: Manifest, keys: Sequence[str], shard: Shard | None
) -> tuple[Manifest, list[str]]:
    """The manifest with only the shard's jobs, and their keys (all of them without a shard)."""
    if shard is None:
        return manifest, list(keys)
    mine = [i for i, key in enumerate(keys) if shard.owns(key)]
    return replace(manifest, jobs=tuple(manifest.jobs[i] for i in mine)), [keys[i] for i in mine]


def _log_key_switch(refused: str, fallback: str) -> None:
    log.warning(
        "AudioPod refused the key in %s: switched to the key in %s for the rest of the run",
        refused,
        fallback,
        extra=event("key_switch", refused=refused, switched_to=fallback),
    )


def _check_writable(output_dir: Path | None, results_path: Path) -> None:
    if output_dir is not None:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=output_dir):
                pass
        except OSError as exc:
            raise OutputError(path=output_dir, reason=exc.strerror or str(exc)) from exc
    try:
        with tempfile.TemporaryFile(dir=results_path.parent):
            pass
    except OSError as exc:
        raise ResultsWriteError(path=results_path, reason=exc.strerror or str(exc)) from exc


async def _with_costs(
    client: ApiClient, results: list[JobResult], retrying: Callable[..., Awaitable[Any]]
) -> list[JobResult]:
    """Fill in each submitted job's charge from the usage log (one request per 100 rows)."""
    wanted = {r.remote_id for r in results if r.remote_id is not None and r.cost_cents is None}
    charges: dict[str, int] = {}
    page = 1
    # Newest rows come first; our jobs are the most recent, so a few pages cover them.
    max_pages = len(wanted) // 100 + 3
    try:
        while wanted - charges.keys() and page <= max_pages:
            rows = await retrying(functools.partial(client.usage, page=page, limit=100))
            for row in rows:
                if row.job_id in wanted:
                    charges.setdefault(row.job_id, row.amount_cents)
            if len(rows) < 100:
                break
            page += 1
    except ApiError as exc:
        log.warning("could not read the usage log for per-job costs: %s", exc)
    return [
        replace(r, cost_cents=charges[r.remote_id]) if r.remote_id in charges else r
        for r in results
    ]


async def _stop_on_signals(pool: Pool, grace_s: float) -> None:
    """First SIGINT/SIGTERM: take no new jobs, let those in flight finish for ``grace_s``.
    A second signal, or the end of the grace period, abandons them (their state is kept)."""
    async with anyio.create_task_group() as tg:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                stop = Stop(
                    reason=StopReason.INTERRUPTED, message=f"stopped by {name}", signal=signum
                )
                if pool.stop is None or pool.stop.reason is not StopReason.INTERRUPTED:
                    log.warning(
                        "%s: no new jobs; waiting up to %g s for the %d in flight "
                        "(again to stop at once)",
                        name,
                        grace_s,
                        pool.in_flight,
                    )
                    pool.halt(stop, cancel_in_flight=False, replace=True)
                    tg.start_soon(_end_grace, pool, stop, grace_s)
                else:
                    log.warning("%s again: stopping now; a re-run picks up where this left", name)
                    pool.halt(stop, cancel_in_flight=True)


async def _end_grace(pool: Pool, stop: Stop, grace_s: float) -> None:
    await anyio.sleep(grace_s)
    log.warning("grace period over: stopping; a re-run picks up where this left")
    pool.halt(stop, cancel_in_flight=True)


class _ResultsWriter:
    """Writes the results file off the event loop, no more often than it is worth."""

    def __init__(self, path: Path, fmt: Format, *, base: Path) -> None:
        self.path = path
        self.render = Renderer(fmt, base=base)
        self._warned = False

    async def write(
        self, header: RunHeader, results: tuple[JobResult, ...] | list[JobResult]
    ) -> None:
        pieces = self.render.pieces(header, results)
        try:
            await anyio.to_thread.run_sync(write_atomic, self.path, pieces)
        except OSError as exc:
            raise ResultsWriteError(path=self.path, reason=exc.strerror or str(exc)) from exc

    async def keep_fresh(self, header: RunHeader, pool: Pool, interval_s: float) -> None:
        """Rewrite the results while the pool runs, when something changed."""
        written = None
        while True:
            await anyio.sleep(interval_s)
            marker = pool.changes
            if marker == written:
                continue
            results = pool.results()
            began = anyio.current_time()
            try:
                await self.write(header, results)
            except ResultsWriteError as exc:
                if not self._warned:
                    log.warning("%s (will try again at the end of the run)", exc)
                    self._warned = True
                continue
            written = marker
            # A huge manifest takes a while to render: keep that under a tenth of the time.
            interval_s = max(interval_s, (anyio.current_time() - began) * 10)
