"""The Python API: run a manifest from code (Airflow, Prefect, a notebook) as the CLI does.

``run_manifest`` is what ``batchpod run`` does, minus the terminal: it loads and checks the
manifest, builds one ``RunConfig`` from its keyword arguments (the same names as the
config's fields), reads the key, runs the session (against AudioPod, or a sandbox it starts),
and returns the ``RunSummary`` with every job's result and the exit code the CLI would use.
``run_manifest_sync`` wraps it for code without an event loop. Problems that stop a run before
any work (a bad manifest, no key, a refused key, a locked state file) raise ``BatchpodError``
subclasses; a run that ends with failed jobs returns normally, with ``exit_code`` 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from batchpod import sandbox as sandbox_api
from batchpod.config import RunConfig, base_url_from_env
from batchpod.errors import ConfigError
from batchpod.keys import read_key
from batchpod.manifest import load_manifest
from batchpod.models import Manifest
from batchpod.reporters import LogReporter
from batchpod.runner import Reporter
from batchpod.session import RunSummary, run_session

# The sandbox that `sandbox=True` starts: jobs take a few seconds, the wallet holds $100.
SANDBOX_SETTINGS = sandbox_api.SandboxSettings(processing_s=(1.0, 4.0), balance_cents=10_000)


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


async def run_manifest(
    path: Path | str | Manifest,
    config: RunConfig | None = None,
    *,
    reporter: Reporter | None = None,
    **options: Any,
) -> RunSummary:
    """Run the manifest at ``path`` (or one already loaded); return the summary
    (``.results``, ``.exit_code``, ...).

    The run is configured by ``config`` (a ``RunConfig``), with any of its fields given as
    keyword ``options`` on top (``shard="3/8"``, ``max_spend_cents=2_000``, ...; an unknown
    name is a TypeError). The key is ``api_key``, else the one in ``key_source`` (a
    ``batchpod.keys.KeySource``: an environment variable or a key file), else the variable
    ``api_key_env``. If AudioPod refuses it (401/403), the run switches once to the key in
    ``fallback_key_source`` when one is given, and records that. The API is ``base_url``,
    else ``$AUDIOPOD_BASE_URL``, else AudioPod's; ``sandbox=True`` runs against a local
    sandbox started for the run instead. ``shard`` runs that shard's jobs only, with its own
    state and results files. Caps are integer cents and replace the manifest's ``budget``;
    with ``budget_scope="wallet"`` the wallet is read before every reservation, so shards
    sharing it all respect ``keep_balance``. ``handle_signals`` makes SIGINT/SIGTERM stop the
    run cleanly (main thread only; off by default, as the host application owns its signals).
    Progress goes to ``reporter``, else to the ``batchpod`` logger.
    """
    config = RunConfig.with_options(config, **options)
    manifest = path
    if not isinstance(manifest, Manifest):  # a large manifest takes seconds: off the loop
        manifest = await anyio.to_thread.run_sync(load_manifest, manifest)
    api_key, fallback = config.api_key, config.fallback_key
    if not config.sandbox:
        # Missing or unusable keys are reported before anything else happens.
        api_key = api_key or read_key(config.primary_key_source)
        if fallback is None and config.fallback_key_source is not None:
            fallback = read_key(config.fallback_key_source)
    async with api_endpoint(sandbox=config.sandbox, api_key=api_key, base_url=config.base_url) as (
        url,
        key,
    ):
        fallback = None if config.sandbox else fallback  # the sandbox has one key
        config = dataclasses.replace(config, base_url=url, api_key=key, fallback_key=fallback)
        return await run_session(manifest, config, reporter=reporter or LogReporter())


def run_manifest_sync(
    path: Path | str, config: RunConfig | None = None, **options: Any
) -> RunSummary:
    """``run_manifest`` for code without an event loop (it runs one for the call)."""
    return anyio.run(functools.partial(run_manifest, path, config, **options))
