"""The Python API: run a manifest from code (Airflow, Prefect, a notebook) as the CLI does.

``run_manifest`` is what ``batchpod run`` does, minus the terminal: it loads and checks the
manifest, applies the options, runs the batch (against AudioPod, or a sandbox it starts), and
returns the ``RunSummary`` with every job's result and the exit code the CLI would use.
``run_manifest_sync`` wraps it for code without an event loop. Problems that stop a run before
any work (a bad manifest, no key, a refused key, a locked state file) raise ``BatchpodError``
subclasses; a run that ends with failed jobs returns normally, with ``exit_code`` 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
from collections.abc import AsyncIterator
from enum import IntEnum
from pathlib import Path
from typing import Literal

import anyio

from batchpod import sandbox as sandbox_api
from batchpod.batch import BatchOptions, RunSummary, run_batch
from batchpod.budget import DEFAULT_ASSUMED_DURATION_S
from batchpod.client import DEFAULT_BASE_URL
from batchpod.errors import ConfigError
from batchpod.keys import KeySource, read_key
from batchpod.manifest import load_manifest
from batchpod.models import Manifest
from batchpod.progress import LogReporter
from batchpod.results import Format
from batchpod.runner import Reporter, StopReason
from batchpod.shards import Shard

API_KEY_ENV = "AUDIOPOD_API_KEY"
BASE_URL_ENV = "AUDIOPOD_BASE_URL"
# The sandbox that `sandbox=True` starts: jobs take a few seconds, the wallet holds $100.
SANDBOX_SETTINGS = sandbox_api.SandboxSettings(processing_s=(1.0, 4.0), balance_cents=10_000)

BudgetScope = Literal["shard", "wallet"]


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


def exit_code_of(summary: RunSummary) -> int:
    """The exit code of a finished run: why it stopped early, else whether every job did."""
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


def base_url_from_env() -> str:
    """``$AUDIOPOD_BASE_URL``, else AudioPod's own address."""
    return (os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


@contextlib.asynccontextmanager
async def api_endpoint(
    *, sandbox: bool, api_key: str | None, base_url: str | None
) -> AsyncIterator[tuple[str, str]]:
    """The (base URL, key) to use: a sandbox started for the occasion, or the configured API
    with ``api_key`` (read by ``batchpod.keys``)."""
    if sandbox:
        async with sandbox_api.serve(SANDBOX_SETTINGS) as sb:
            yield sb.base_url, sb.api_key
    else:
        if api_key is None:
            raise ConfigError("no API key was given for the API")
        yield (base_url or base_url_from_env()).rstrip("/"), api_key


def with_budget(
    manifest: Manifest, *, max_spend_cents: int | None, keep_balance_cents: int | None
) -> Manifest:
    """The manifest with these caps (where given) in place of its own budget."""
    budget = manifest.budget
    if max_spend_cents is not None:
        budget = dataclasses.replace(budget, max_spend_cents=max_spend_cents)
    if keep_balance_cents is not None:
        budget = dataclasses.replace(budget, keep_balance_cents=keep_balance_cents)
    return dataclasses.replace(manifest, budget=budget)


async def run_manifest(
    path: Path | str | Manifest,
    *,
    api_key: str | None = None,
    api_key_env: str = API_KEY_ENV,
    key_source: KeySource | None = None,
    fallback_key_source: KeySource | None = None,
    base_url: str | None = None,
    sandbox: bool = False,
    shard: Shard | str | None = None,
    budget_scope: BudgetScope = "shard",
    max_spend_cents: int | None = None,
    keep_balance_cents: int | None = None,
    concurrency: int | None = None,
    download: bool = True,
    results_path: Path | None = None,
    results_format: Format = "yaml",
    state_path: Path | None = None,
    retry_failed: bool = False,
    job_timeout_s: float = 2 * 3600.0,
    max_rps: float | None = None,
    download_concurrency: int = 16,
    grace_s: float = 30.0,
    assumed_duration_s: float = DEFAULT_ASSUMED_DURATION_S,
    reporter: Reporter | None = None,
    handle_signals: bool = False,
) -> RunSummary:
    """Run the manifest at ``path`` (or one already loaded); return the summary
    (``.results``, ``.exit_code``, ...).

    The key is ``api_key``, else the one in ``key_source`` (a ``batchpod.keys.KeySource``:
    an environment variable or a key file), else the environment variable ``api_key_env``.
    If AudioPod refuses it (401/403), the run switches once to the key in
    ``fallback_key_source`` when one is given, and records that. The API is
    ``base_url``, else ``$AUDIOPOD_BASE_URL``, else AudioPod's. ``sandbox=True`` runs against a
    local sandbox started for the run instead. ``shard`` ("3/8" or a ``Shard``) runs that
    shard's jobs only, with its own state and results files. Caps are integer cents and
    replace the manifest's ``budget``; with ``budget_scope="wallet"`` the wallet is read before
    every reservation, so shards sharing it all respect ``keep_balance``. ``handle_signals``
    makes SIGINT/SIGTERM stop the run cleanly (main thread only; off by default, as the host
    application owns its signals).
    """
    if not isinstance(path, Manifest):  # a large manifest takes seconds: off the event loop
        path = await anyio.to_thread.run_sync(load_manifest, path)
    manifest = with_budget(
        path,
        max_spend_cents=max_spend_cents,
        keep_balance_cents=keep_balance_cents,
    )
    if isinstance(shard, str):
        try:
            shard = Shard.parse(shard)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    source = key_source or KeySource.env(api_key_env)
    fallback = None
    if not sandbox:
        # Missing or unusable keys are reported before anything else happens.
        api_key = api_key or read_key(source)
        fallback = read_key(fallback_key_source) if fallback_key_source else None
    async with api_endpoint(sandbox=sandbox, api_key=api_key, base_url=base_url) as (url, key):
        options = BatchOptions(
            api_key=key,
            base_url=url,
            key_source=source.describe() if not sandbox else "the sandbox's key",
            fallback_key=fallback,
            fallback_source=(
                fallback_key_source.describe() if fallback and fallback_key_source else None
            ),
            sandbox=sandbox,
            download=download,
            results_path=results_path,
            results_format=results_format,
            concurrency=concurrency,
            state_path=state_path,
            retry_failed=retry_failed,
            grace_s=grace_s,
            assumed_duration_s=assumed_duration_s,
            job_timeout_s=job_timeout_s,
            max_rps=max_rps,
            download_concurrency=download_concurrency,
            shard=shard,
            balance_before_reserve=budget_scope == "wallet",
            handle_signals=handle_signals,
        )
        return await run_batch(
            manifest, options, reporter=reporter or LogReporter(), exit_code_of=exit_code_of
        )


def run_manifest_sync(path: Path | str, **options: object) -> RunSummary:
    """``run_manifest`` for code without an event loop (it runs one for the call)."""
    return anyio.run(functools.partial(run_manifest, path, **options))  # type: ignore[arg-type]
