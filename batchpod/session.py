"""One run wired together: lock, state, client, pre-flight, pool, charges, results, signals.

``run_session`` is what ``batchpod run`` and ``run_manifest`` come down to, once the manifest
is loaded and the key read. It checks that stems and results have somewhere to go, takes the
state's lock, checks the key and reads the wallet before anything is submitted, runs the
worker pool, keeps the results manifest fresh while jobs finish, reads each job's charge from
AudioPod's usage log, and writes the final results. It talks to no terminal: progress goes
to the ``Reporter`` it is given, and the summary carries the exit code.
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
from typing import TYPE_CHECKING, Any, overload

import anyio

from batchpod._version import __version__
from batchpod.budget import BudgetGuard
from batchpod.charges import PAGE_ROWS, read_charges
from batchpod.client import ApiClient
from batchpod.config import RunConfig
from batchpod.encode import extension
from batchpod.errors import (
    ApiError,
    BatchpodError,
    ConfigError,
    ExitCode,
    LeaseLost,
    ResultsWriteError,
    exit_code_of,
)
from batchpod.estimate import estimate_cents
from batchpod.fleet import DatabaseUrl
from batchpod.flow import with_retries
from batchpod.identity import content_keys
from batchpod.journal import JobRecord, Journal, JournalWriter, RunLock
from batchpod.layouts import other_layouts, read_locked, take_up
from batchpod.logs import event
from batchpod.metrics import RunFacts, RunMetrics, read_last_success
from batchpod.models import JobResult, JobStatus, Manifest
from batchpod.paths import results_path_for, state_path_for, worker_results_path
from batchpod.results import Renderer, RunHeader, write_atomic
from batchpod.runner import Pool, Reporter, Stop, StopReason
from batchpod.shards import CapShare, Shard, cap_share, shard_share
from batchpod.spool import Spool
from batchpod.storage import open_shelf
from batchpod.templates import MAX_COMPONENT_BYTES, PathTemplate, clashes, missing_meta

if TYPE_CHECKING:
    from batchpod.fleet import FleetWorker

log = logging.getLogger("batchpod")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSummary:
    """What a run did: every job's result, why it stopped early (if it did), the money.

    ``results`` is a sequence made from the run's records as it is read, one ``JobResult``
    at a time: a run of 100,000 jobs does not hold 100,000 results in memory. ``counts``,
    ``spent_cents`` and ``failed`` add them up.
    """

    results: Sequence[JobResult]
    stop: Stop | None
    results_path: Path
    started_at: float
    finished_at: float
    balance_before_cents: int | None
    balance_after_cents: int | None
    peak_in_flight: int
    counts: Mapping[str, int] = field(default_factory=dict)  # jobs by status value
    spent_cents: int = 0  # the sum of the charges read back from AudioPod's usage log
    failed: int = 0  # jobs that did not do what was asked (exit code 1 when no stop)
    jobs_worked: int = 0  # jobs this run submitted or followed at AudioPod
    api_requests: int = 0  # API requests sent (stem downloads apart)
    throttled: int = 0  # of which answered 429
    retries: Mapping[str, int] = field(default_factory=dict)  # requests sent again, by cause
    key_switched_to: str | None = None  # the fallback key's source, if the run switched to it

    @property
    def exit_code(self) -> ExitCode:
        """The exit code of the run: why it stopped early, else whether every job did."""
        return exit_code_for(self.stop, failed=self.failed)


def exit_code_for(stop: Stop | None, *, failed: int) -> ExitCode:
    """A finished run's exit code: its stop's, else 1 if ``failed`` jobs did not do what was
    asked."""
    if stop is not None:
        return stop.exit_code
    return ExitCode.JOBS_FAILED if failed else ExitCode.OK


class _Results(Sequence[JobResult]):
    """The results of a finished run's jobs, made as they are read (``RunSummary.results``)."""

    def __init__(self, pool: Pool, indexes: Sequence[int]) -> None:
        self._pool = pool
        self._indexes = indexes

    def __len__(self) -> int:
        return len(self._indexes)

    @overload
    def __getitem__(self, item: int) -> JobResult: ...
    @overload
    def __getitem__(self, item: slice) -> Sequence[JobResult]: ...
    def __getitem__(self, item: int | slice) -> JobResult | Sequence[JobResult]:
        if isinstance(item, slice):
            return [self._pool.result(index) for index in self._indexes[item]]
        return self._pool.result(self._indexes[item])

    def __repr__(self) -> str:
        return f"<{len(self)} job results>"


def _check_output_path(manifest: Manifest, config: RunConfig) -> None:
    """Refuse an output path given for this run that would put two jobs' stems on one path
    (the manifest's own was checked when it was read)."""
    assert config.output_path is not None and config.output is not None
    template = PathTemplate.parse(config.output_path)
    ext = "wav" if config.output.as_served else extension(config.output)
    for index, key in missing_meta(template, manifest.jobs):
        raise ConfigError(
            f"--output-path uses {{meta.{key}}}, which job {manifest.jobs[index].name!r} "
            "has not got in its 'meta'"
        )
    for found in clashes(template, manifest.jobs, ext=ext):
        if isinstance(found, int):
            name = manifest.jobs[found].name
            raise ConfigError(
                f"--output-path gives job {name!r} a folder or file name longer than "
                f"{MAX_COMPONENT_BYTES} bytes"
            )
        first, later = manifest.jobs[found.first].name, manifest.jobs[found.second].name
        raise ConfigError(
            f"--output-path would write a stem of job {later!r} to {found.path}, where job "
            f"{first!r} writes one: every job's stems need paths of their own (add {{name}})"
        )


async def run_session(manifest: Manifest, config: RunConfig, *, reporter: Reporter) -> RunSummary:
    """Run every job of ``manifest`` (see the module docstring); ``config`` names the API and
    carries the key (``config.base_url`` and ``config.api_key`` must be set)."""
    if config.base_url is None or config.api_key is None:
        raise ValueError("run_session needs the API's address and key")
    base_url = config.base_url
    started = time.time()
    config = config.for_manifest(manifest)
    if config.output_path != manifest.output_path:
        _check_output_path(manifest, config)
    header = RunHeader(
        batchpod_version=__version__,
        manifest=manifest.path,
        manifest_sha256=hashlib.sha256(manifest.path.read_bytes()).hexdigest(),
        base_url=base_url,
        sandbox=config.sandbox,
        started_at=started,
        max_spend_cents=config.max_spend_cents,
        keep_balance_cents=config.keep_balance_cents,
        shard=(config.shard.index, config.shard.count) if config.shard else None,
    )
    if config.state_url is not None:
        summary, header = await _run_fleet(
            manifest, config, header=header, reporter=reporter, started=started
        )
        _log_finished(summary, header)
        return summary
    results_path = results_path_for(
        manifest.path, config.results_path, config.shard, fmt=config.results_format
    )
    writer = _ResultsWriter(results_path, config, base=manifest.path.parent)
    state_path = state_path_for(manifest.path, config.state_path, config.shard)
    # Before anything is paid for: the stems and the results must have somewhere to go.
    await anyio.to_thread.run_sync(_check_writable, config, results_path)
    others = other_layouts(manifest.path, config.state_path, config.shard)
    with RunLock(state_path), read_locked(others), Journal.open(state_path) as journal:
        # What other shard layouts of this manifest did or have in flight is this run's too.
        taken = await anyio.to_thread.run_sync(take_up, journal, others)
        if taken:
            log.info("took up %d jobs from the state of other shard layouts", taken)
        keys = await content_keys(manifest.jobs, journal)
        if config.shard is not None and config.max_spend_cents is not None:
            # The cap is the whole manifest's: this shard spends its share of it.
            share = await anyio.to_thread.run_sync(
                _cap_share, manifest, keys, config, config.shard, config.max_spend_cents
            )
            config = replace(config, max_spend_cents=share.cap_cents)
            header = replace(
                header,
                max_spend_cents=share.cap_cents,
                max_spend_share={
                    "manifest_cap_cents": share.manifest_cap_cents,
                    "manifest_estimate_cents": share.manifest_estimate_cents,
                    "shard_estimate_cents": share.shard_estimate_cents,
                },
            )
        manifest, keys = shard_share(manifest, keys, config.shard)
        _log_started(manifest, config, results_path, state=str(state_path))
        with writer:
            summary, header = await _run_locked(
                manifest,
                config,
                header=header,
                writer=writer,
                keys=keys,
                reporter=reporter,
                started=started,
                records=journal.records(),
                journal=JournalWriter(journal),
                set_costs=functools.partial(_set_costs, journal),
            )
    _log_finished(summary, header)
    return summary


async def _run_fleet(
    manifest: Manifest,
    config: RunConfig,
    *,
    header: RunHeader,
    reporter: Reporter,
    started: float,
) -> tuple[RunSummary, RunHeader]:
    """This process as one worker of the manifest's fleet (``--state postgresql://...``):
    it joins, claims jobs until none is left for it, and signs off; a worker killed instead
    leaves its jobs to be taken over once its lease lapses (``batchpod.fleet``)."""
    # Here, not at the top: a run on an SQLite state never loads the database driver.
    from batchpod.fleet import FleetStore, FleetWorker, HashCache, worker_name

    assert config.state_url is not None
    url = DatabaseUrl(config.state_url)
    name = worker_name()
    results_path = worker_results_path(
        manifest.path, config.results_path, name, fmt=config.results_format
    )
    writer = _ResultsWriter(results_path, config, base=manifest.path.parent)
    await anyio.to_thread.run_sync(_check_writable, config, results_path)
    store = await FleetStore.open(url)
    try:
        keys = await content_keys(manifest.jobs, HashCache(store))
    except BaseException:
        await store.close()
        raise
    firsts: dict[str, str] = {}
    for key, job in zip(keys, manifest.jobs, strict=True):
        firsts.setdefault(key, job.name)
    estimates: dict[str, int] = {}
    if config.max_spend_cents is not None or config.keep_balance_cents is not None:
        # What jobs left in flight by an earlier run may cost counts against this run's cap.
        costs = await anyio.to_thread.run_sync(_job_estimates, manifest, config)
        estimates = dict(zip(keys, costs, strict=True))
    assert header.manifest_sha256 is not None
    fleet = await FleetWorker.join(
        store,
        name=name,
        identity=manifest.path.name,
        manifest=str(manifest.path),
        manifest_sha256=header.manifest_sha256,
        jobs=list(firsts.items()),
        lease_s=config.lease_s,
        retry_failed=config.retry_failed,
        max_spend_cents=config.max_spend_cents,
        keep_balance_cents=config.keep_balance_cents,
        estimates=estimates,
    )
    header = replace(header, worker=name, state=url.where)
    _log_started(manifest, config, results_path, state=url.where, worker=name)
    exit_code: int | None = None
    try:
        with writer:
            async with anyio.create_task_group() as lease:
                lease.start_soon(fleet.keep_alive)
                summary, header = await _run_locked(
                    manifest,
                    config,
                    header=header,
                    writer=writer,
                    keys=keys,
                    reporter=reporter,
                    started=started,
                    records={},
                    journal=JournalWriter(commit=fleet.commit),
                    set_costs=fleet.set_costs,
                    fleet=fleet,
                )
                lease.cancel_scope.cancel()
        exit_code = header.exit_code
    except (BatchpodError, BaseExceptionGroup) as exc:
        # Woken after a freeze longer than its lease: its connections may have been ended
        # and its jobs taken over; that, not what failed on the way, is the one problem.
        with anyio.CancelScope(shield=True):
            if await fleet.was_evicted():
                raise LeaseLost(where=url.where, jobs=0) from exc
        raise
    finally:
        with anyio.CancelScope(shield=True):
            if not fleet.evicted:
                try:
                    await fleet.leave(exit_code)
                except BatchpodError as exc:  # its lease lapses: others take its jobs then
                    log.warning("could not sign off from the fleet: %s", exc)
            await fleet.close()
    return summary, header


def _job_estimates(manifest: Manifest, config: RunConfig) -> list[int]:
    """Each job's worst-case cost, in manifest order (blocking: a local file's length is
    read from its header)."""
    return [
        estimate_cents(
            job,
            cents_per_minute=config.cents_per_minute,
            assumed_duration_s=config.assumed_duration_s,
        )
        for job in manifest.jobs
    ]


def _log_started(
    manifest: Manifest,
    config: RunConfig,
    results_path: Path,
    *,
    state: str,
    worker: str | None = None,
) -> None:
    log.info(
        "run started: %d jobs%s%s",
        len(manifest.jobs),
        f" (shard {config.shard})" if config.shard else "",
        f" (worker {worker})" if worker else "",
        extra=event(
            "run_started",
            manifest=str(manifest.path),
            jobs=len(manifest.jobs),
            shard=str(config.shard) if config.shard else None,
            worker=worker,
            concurrency=config.concurrency,
            base_url=config.base_url,
            sandbox=config.sandbox,
            download=config.download,
            max_spend_cents=config.max_spend_cents,
            keep_balance_cents=config.keep_balance_cents,
            results=str(results_path),
            state=state,
        ),
    )


async def _set_costs(journal: Journal, costs: Mapping[str, int]) -> None:
    await anyio.to_thread.run_sync(journal.set_costs, costs)


def _log_finished(summary: RunSummary, header: RunHeader) -> None:
    counts = summary.counts
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


async def _run_locked(
    manifest: Manifest,
    config: RunConfig,
    *,
    header: RunHeader,
    writer: _ResultsWriter,
    keys: Sequence[str],
    reporter: Reporter,
    started: float,
    records: Mapping[str, JobRecord],
    journal: JournalWriter,
    set_costs: Callable[[dict[str, int]], Awaitable[object]],
    fleet: FleetWorker | None = None,
) -> tuple[RunSummary, RunHeader]:
    """The run itself, once its state is open: ``records`` are what the state held at the
    start, ``journal`` takes every job's transitions, ``set_costs`` the charges read at the
    end; with a ``fleet``, its workers share the jobs and the caps (the guard here then
    only models this worker's own wallet use)."""
    assert config.base_url is not None and config.api_key is not None
    async with (
        ApiClient(
            base_url=config.base_url,
            api_key=config.api_key,
            key_source=config.key_description,
            fallback_key=config.fallback_key,
            fallback_source=config.fallback_description,
            on_key_switch=_log_key_switch,
            max_connections=config.concurrency or 1,
            max_rps=config.max_rps,
            submit_guard=fleet.guard if fleet is not None else None,
        ) as client,
        anyio.create_task_group() as signals,
    ):
        metrics = _Metrics.of(config, header)
        if metrics is not None:
            await metrics.publish(_facts(header, client, None, running=True), push=True)
        try:
            outcome = await _run_with_client(
                manifest,
                config,
                client=client,
                signals=signals,
                metrics=metrics,
                header=header,
                writer=writer,
                keys=keys,
                reporter=reporter,
                started=started,
                records=records,
                journal=journal,
                set_costs=set_costs,
                fleet=fleet,
            )
        except BaseException as exc:
            if metrics is not None:  # the run ended here: say so, keeping the last success
                facts = _facts(header, client, None, running=False, exit_code=exit_code_of(exc))
                with anyio.CancelScope(shield=True):
                    await metrics.publish(facts, push=True)
            raise
    return outcome


async def _run_with_client(
    manifest: Manifest,
    config: RunConfig,
    *,
    client: ApiClient,
    signals: anyio.abc.TaskGroup,
    metrics: _Metrics | None,
    header: RunHeader,
    writer: _ResultsWriter,
    keys: Sequence[str],
    reporter: Reporter,
    started: float,
    records: Mapping[str, JobRecord],
    journal: JournalWriter,
    set_costs: Callable[[dict[str, int]], Awaitable[object]],
    fleet: FleetWorker | None,
) -> tuple[RunSummary, RunHeader]:
    """``_run_locked`` once the client is open."""
    # Pre-flight: a refused key stops the run here, before anything is submitted. A read
    # that outlasts the retry policy stops it too (exit 69): nothing is lost.
    retrying = functools.partial(with_retries, policy=config.retry, rng=random.Random())
    sent_at = await fleet.clock() if fleet is not None else 0.0
    before = await retrying(client.balance)
    header = replace(header, balance_before_cents=before.balance_cents)
    alone = fleet is None
    guard = BudgetGuard(
        max_spend_cents=config.max_spend_cents if alone else None,
        keep_balance_cents=config.keep_balance_cents if alone else None,
        balance_cents=before.balance_cents,
    )
    if fleet is not None:
        fleet.capped = config.max_spend_cents is not None or (config.keep_balance_cents is not None)
        await fleet.balance(before.balance_cents, sent_at=sent_at)
    pool = Pool(
        client,
        manifest.jobs,
        config,
        budget=guard,
        reporter=reporter,
        content_keys=keys,
        records=records,
        journal=journal,
        fleet=fleet,
        spool=writer.spool,
    )
    if config.handle_signals and threading.current_thread() is threading.main_thread():
        # Watched until the results are written: a signal after the pool has ended must
        # not cut the final bookkeeping short.
        signals.start_soon(_stop_on_signals, pool, config.grace_s)
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.keep_fresh, header, pool)
        tg.start_soon(journal.run)
        if metrics is not None:
            tg.start_soon(metrics.keep_fresh, lambda: _facts(header, client, pool, running=True))
        try:
            await pool.run()
        finally:
            tg.cancel_scope.cancel()
    after: int | None = None
    worked = pool.worked_indexes()
    with anyio.move_on_after(30, shield=True):
        costs = await _read_costs(client, pool, worked, retrying)
        for index, cents in costs.items():
            pool.set_cost(index, cents)
        unsaved = {
            keys[index]: cents
            for index, cents in costs.items()
            if keys[index] not in records or records[keys[index]].cost_cents is None
        }
        if unsaved:
            await set_costs(unsaved)
        try:
            after = (await retrying(client.balance)).balance_cents
        except ApiError as exc:
            log.warning("could not read the balance after the run: %s", exc)
    writer.render_changes(pool)
    tally = writer.render.tally(worked)
    summary = RunSummary(
        results=_Results(pool, worked),
        stop=pool.stop,
        results_path=writer.path,
        started_at=started,
        finished_at=time.time(),
        balance_before_cents=before.balance_cents,
        balance_after_cents=after,
        peak_in_flight=pool.peak_in_flight,
        counts=dict(tally.counts),
        spent_cents=tally.spent_cents or 0,
        failed=tally.failed,
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
        exit_code=int(summary.exit_code),
        stopped=pool.stop.message if pool.stop else None,
        key_switched_to=client.switched_to,
    )
    with anyio.CancelScope(shield=True):
        await writer.write(header, pool)
        if metrics is not None:
            facts = _facts(
                header,
                client,
                pool,
                running=False,
                counts=summary.counts,
                spent_cents=summary.spent_cents,
                estimated_cents=tally.estimated_cents,
                exit_code=int(summary.exit_code),
            )
            await metrics.publish(facts, push=True)
    signals.cancel_scope.cancel()
    return summary, header


def _facts(
    header: RunHeader,
    client: ApiClient,
    pool: Pool | None,
    *,
    running: bool,
    counts: Mapping[str, int] | None = None,
    spent_cents: int | None = None,
    estimated_cents: int | None = None,
    exit_code: int | None = None,
) -> RunFacts:
    """What the run has done so far, for its metrics: from the pool's live records while it
    runs (``counts`` and the money from the results' tally at the end)."""
    jobs: Counter[str] = Counter()
    spent = estimated = 0
    waits: list[float] = []
    stems = size = in_flight = 0
    retries: Mapping[str, int] = {}
    if pool is not None:
        for index in pool.worked_indexes():
            live = pool.live[index]
            estimated += live.estimate_cents
            if live.done:
                jobs[live.status.value] += 1
            if live.cost_cents is not None:
                spent += live.cost_cents
            if live.submitted_at is not None and live.completed_at is not None:
                waits.append(max(0.0, live.completed_at - live.submitted_at))
        stems, size = pool.written
        in_flight = 0 if not running else pool.in_flight
        retries = dict(pool.retry_counts)
    assert header.started_at is not None
    return RunFacts(
        started_at=header.started_at,
        now=header.finished_at if header.finished_at is not None else time.time(),
        running=running,
        jobs=jobs if counts is None else counts,
        in_flight=in_flight,
        spent_cents=spent if spent_cents is None else spent_cents,
        estimated_cents=estimated if estimated_cents is None else estimated_cents,
        balance_before_cents=header.balance_before_cents,
        balance_after_cents=header.balance_after_cents,
        requests=dict(client.counts.by_call),
        retries=retries,
        stems_written=stems,
        bytes_written=size,
        waits_s=waits,
        exit_code=exit_code,
    )


class _Metrics:
    """The run's metrics file and Pushgateway (``batchpod.metrics``), fed from the pool."""

    def __init__(self, config: RunConfig, header: RunHeader) -> None:
        labels = {"manifest": Path(str(header.manifest)).name}
        if header.shard is not None:
            labels["shard"] = f"{header.shard[0]}/{header.shard[1]}"
        if header.worker is not None:
            labels["worker"] = header.worker
        self.file = config.metrics_file
        self.url = config.pushgateway_url
        self.interval_s = config.metrics_interval_s
        last = None if self.file is None else read_last_success(self.file, labels)
        self.metrics = RunMetrics(labels=labels, last_success=last)

    @classmethod
    def of(cls, config: RunConfig, header: RunHeader) -> _Metrics | None:
        if config.metrics_file is None and config.pushgateway_url is None:
            return None
        return cls(config, header)

    async def publish(self, facts: RunFacts, *, push: bool) -> None:
        """Write the file, and push when ``push`` (off the event loop; never raises)."""
        if self.file is not None:
            await anyio.to_thread.run_sync(self.metrics.write, self.file, facts)
        if push and self.url is not None:
            await anyio.to_thread.run_sync(self.metrics.push, self.url, facts)

    async def keep_fresh(self, facts: Callable[[], RunFacts]) -> None:
        """Rewrite the file every interval while the run goes on."""
        if self.file is None:
            return
        while True:
            await anyio.sleep(self.interval_s)
            await self.publish(facts(), push=False)


def _cap_share(
    manifest: Manifest, keys: Sequence[str], config: RunConfig, shard: Shard, cap_cents: int
) -> CapShare:
    """The shard's part of the manifest's cap, from every job's estimate (blocking)."""
    return cap_share(cap_cents, keys, _job_estimates(manifest, config), shard)


def _log_key_switch(refused: str, fallback: str) -> None:
    log.warning(
        "AudioPod refused the key in %s: switched to the key in %s for the rest of the run",
        refused,
        fallback,
        extra=event("key_switch", refused=refused, switched_to=fallback),
    )


def _check_writable(config: RunConfig, results_path: Path) -> None:
    """That the stems (when the run downloads them) and the results have somewhere to go: a
    file made in the output folder, or an object written and deleted in the bucket."""
    if config.download and config.output_dir is not None:
        shelf = open_shelf(
            config.output_dir,
            endpoint=config.output_endpoint,
            retry=config.retry,
            part_bytes=config.upload_part_bytes,
        )
        shelf.check()
    try:
        with tempfile.TemporaryFile(dir=results_path.parent):
            pass
    except OSError as exc:
        raise ResultsWriteError(path=results_path, reason=exc.strerror or str(exc)) from exc


async def _read_costs(
    client: ApiClient,
    pool: Pool,
    indexes: Sequence[int],
    retrying: Callable[..., Awaitable[Any]],
) -> dict[int, int]:
    """Each submitted job's charge not yet known, from the usage log (one request per 100
    rows), by job index."""
    wanted: dict[str, list[int]] = {}
    for index in indexes:
        live = pool.live[index]
        if live.remote_id is not None and live.cost_cents is None:
            wanted.setdefault(live.remote_id, []).append(index)
    charges: dict[str, int] = {}

    def read_page(page: int) -> Awaitable[Any]:
        return retrying(functools.partial(client.usage, page=page, limit=PAGE_ROWS))

    try:
        # Newest rows come first; our jobs are the most recent, so a few pages cover them.
        pages = len(wanted) // PAGE_ROWS + 3
        await read_charges(read_page, into=charges, max_pages=pages, wanted=set(wanted))
    except ApiError as exc:
        log.warning("could not read the usage log for per-job costs: %s", exc)
    return {
        index: cents for remote_id, cents in charges.items() for index in wanted.get(remote_id, ())
    }


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
    """Writes the results file off the event loop, no more often than it is worth.

    Each job's entry is rendered when it changed (``Pool.take_marks``) and kept in a spool
    beside the results file, as are finished jobs' links and scores (``Pool(spool=...)``):
    the run holds neither in memory, and every write streams the file from the spool.
    """

    def __init__(self, path: Path, config: RunConfig, *, base: Path) -> None:
        self.path = path
        self.format = config.results_format
        self.base = base
        self.interval_s = config.flush_interval_s
        self.render = Renderer(self.format, base=base)
        self.spool = Spool()
        self._warned = False

    def __enter__(self) -> _ResultsWriter:
        """Make the spools in the results' folder (once it is known to be writable)."""
        self.render = Renderer(self.format, base=self.base, spool=Spool(self.path.parent))
        self.spool = Spool(self.path.parent)
        return self

    def __exit__(self, *exc: object) -> None:
        # The entries' spool only: the links' one is read by the summary's results.
        self.render.spool.close()

    def render_changes(self, pool: Pool) -> None:
        """Render again the entries of the jobs that changed since the last time."""
        for index in sorted(pool.take_marks()):
            self.render.update(index, pool.result(index))

    async def write(self, header: RunHeader, pool: Pool) -> None:
        self.render_changes(pool)
        pieces = self.render.stream(header, pool.worked_indexes())
        try:
            await anyio.to_thread.run_sync(write_atomic, self.path, pieces)
        except OSError as exc:
            raise ResultsWriteError(path=self.path, reason=exc.strerror or str(exc)) from exc

    async def keep_fresh(self, header: RunHeader, pool: Pool) -> None:
        """Rewrite the results while the pool runs, when something changed."""
        written = None
        interval_s = self.interval_s
        while True:
            await anyio.sleep(interval_s)
            marker = pool.changes
            if marker == written:
                continue
            began = anyio.current_time()
            try:
                await self.write(header, pool)
            except ResultsWriteError as exc:
                if not self._warned:
                    log.warning("%s (will try again at the end of the run)", exc)
                    self._warned = True
                continue
            written = marker
            # A huge manifest takes a while to render: keep that under a tenth of the time.
            interval_s = max(interval_s, (anyio.current_time() - began) * 10)
