"""One run's settings: every option of ``batchpod run`` and ``run_manifest``, each default once.

``RunConfig`` is built by the CLI (from argv) or by the Python API (from keyword arguments),
and read by the session and the pool; nothing copies it field by field. A field left ``None``
where the manifest has a say (``concurrency``, ``output_dir``, the caps) means "the
manifest's"; ``for_manifest`` settles those. The key fields are never shown in a repr.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from batchpod.budget import DEFAULT_ASSUMED_DURATION_S, DEFAULT_CENTS_PER_MINUTE
from batchpod.client import DEFAULT_BASE_URL
from batchpod.errors import ConfigError
from batchpod.fleet import DEFAULT_LEASE_S, DatabaseUrl, is_database_url
from batchpod.keys import DEFAULT_KEY_VARIABLE, KeySource
from batchpod.models import (
    Budget,
    Location,
    Manifest,
    OutputFormat,
    OutputSpec,
    location,
    takes_bitrate,
)
from batchpod.retry import PollPolicy, RetryPolicy
from batchpod.shards import Shard
from batchpod.storage import DEFAULT_PART_BYTES, MAX_PART_BYTES, MIN_PART_BYTES, check_endpoint
from batchpod.templates import PathTemplate, TemplateError

if TYPE_CHECKING:
    from batchpod.results import Format

BASE_URL_ENV: Final = "AUDIOPOD_BASE_URL"

BudgetScope = Literal["shard", "wallet"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunConfig:
    """How to run a manifest (the manifest itself says what to run)."""

    # -- the API and the key
    sandbox: bool = False  # start a local sandbox for the run and use it instead
    base_url: str | None = None  # None: $AUDIOPOD_BASE_URL, else AudioPod's own
    api_key: str | None = field(default=None, repr=False)  # None: read from key_source
    api_key_env: str = DEFAULT_KEY_VARIABLE  # the variable read when key_source is None
    key_source: KeySource | None = None  # an environment variable or a key file
    fallback_key_source: KeySource | None = None  # switched to once if the first is refused
    fallback_key: str | None = field(default=None, repr=False)  # None: read from the source

    # -- which jobs, and what to do with them
    shard: Shard | None = None  # only this shard's jobs, with files of its own ("3/8" too)
    concurrency: int | None = None  # jobs in flight at once; None: the manifest's
    # Where stems go: a folder, or a bucket (ObjectUrl, or "s3://bucket/prefix", also gs://
    # and az://); None: the manifest's.
    output_dir: Location | None = None
    # An S3-compatible store's address (MinIO, R2, Ceph) for an s3:// output_dir; https, or
    # plain http to this machine only. None: AWS's own (or $AWS_ENDPOINT_URL, read by the CLI).
    output_endpoint: str | None = None
    upload_part_bytes: int = DEFAULT_PART_BYTES  # a bucket's multipart upload part size
    # The format stems are written in; None: the manifest's output_format. The manifest's
    # bit depth or bitrate is kept where it applies to this format.
    output_format: OutputFormat | None = None
    output: OutputSpec | None = None  # the whole output spec; None: as the two above make it
    output_path: str | None = None  # where each stem goes in output_dir; None: the manifest's
    download: bool = True  # False: stop at completed jobs and record their links
    retry_failed: bool = False  # submit jobs that failed in an earlier run again
    force: bool = False  # submit jobs already done (in the state or output_dir) again
    # Delete each job at AudioPod once its stems are stored and that is committed.
    delete_remote: bool = False

    # -- money (integer cents)
    max_spend_cents: int | None = None  # None: the manifest's budget.max_spend_usd
    keep_balance_cents: int | None = None  # None: the manifest's budget.keep_balance_usd
    # "wallet": read the wallet before every reservation too, so that shards spending from
    # one wallet all keep its keep_balance (one more request per job).
    budget_scope: BudgetScope = "shard"
    assumed_duration_s: float = DEFAULT_ASSUMED_DURATION_S  # for songs of unknown length
    cents_per_minute: int = DEFAULT_CENTS_PER_MINUTE
    balance_refresh_s: float = 30.0  # how often the wallet is read again (0: never)

    # -- files
    results_path: Path | None = None  # None: <manifest>.results.<format> beside it
    results_format: Format = "yaml"
    state_path: Path | None = None  # None: <manifest>.batchpod.db beside it
    # A PostgreSQL database (postgresql://...) shared by a fleet of workers, in place of the
    # SQLite file; its password may be in it, so it is never shown (DatabaseUrl.where).
    state_url: str | None = field(default=None, repr=False)
    lease_s: float = DEFAULT_LEASE_S  # with state_url: a silent worker's jobs stay its own
    flush_interval_s: float = 1.0  # how often the results file is rewritten, at least

    # -- signals for monitoring (batchpod.metrics)
    metrics_file: Path | None = None  # node_exporter's textfile format, rewritten as it goes
    metrics_interval_s: float = 30.0  # how often metrics_file is rewritten during the run
    # A Pushgateway (http://host:9091), pushed to at the start and the end of the run.
    pushgateway_url: str | None = field(default=None, repr=False)

    # -- time and flow
    job_timeout_s: float = 2 * 3600.0  # submit to last stem; then the job is 'expired'
    grace_s: float = 30.0  # after a first signal, how long jobs in flight may still finish
    handle_signals: bool = False  # SIGINT/SIGTERM stop the run cleanly (main thread only)
    max_rps: float | None = None  # API requests per second at most (None: no cap)
    download_concurrency: int = 16  # stem downloads at once, across all jobs
    link_refreshes: int = 3  # fresh download links fetched per stem when one has expired
    max_stem_bytes: int = 4 * 1024**3  # a stem larger than this is refused (a runaway)
    poll: PollPolicy = field(default_factory=PollPolicy)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if isinstance(self.shard, str):  # the Python API takes "3/8" as the CLI does
            try:
                object.__setattr__(self, "shard", Shard.parse(self.shard))
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
        if isinstance(self.state_path, str) and is_database_url(self.state_path):
            object.__setattr__(self, "state_url", self.state_path)  # as --state takes it
            object.__setattr__(self, "state_path", None)
        if self.state_url is not None:
            try:
                DatabaseUrl(self.state_url)
            except ValueError as exc:
                raise ConfigError(f"the state database's URL: {exc}") from None
            if self.shard is not None:
                raise ConfigError(
                    "a PostgreSQL state needs no --shard: every worker claims jobs as it goes"
                )
            if self.force:
                raise ConfigError("--force is for an SQLite state, not a fleet's")
            if self.delete_remote:
                raise ConfigError("--delete-remote is for an SQLite state, not a fleet's")
        if not (math.isfinite(self.lease_s) and self.lease_s >= 1):
            raise ConfigError("the lease must be at least 1 s")
        for name in ("results_path", "state_path"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Path(value))
        if isinstance(self.output_dir, str):
            try:
                object.__setattr__(self, "output_dir", location(self.output_dir))
            except ValueError as exc:
                raise ConfigError(f"output_dir is not a folder or bucket URL: {exc}") from None
        if self.output_endpoint is not None:
            try:
                object.__setattr__(self, "output_endpoint", check_endpoint(self.output_endpoint))
            except ValueError as exc:
                raise ConfigError(f"--output-endpoint: {exc}") from None
        if not MIN_PART_BYTES <= self.upload_part_bytes <= MAX_PART_BYTES:
            raise ConfigError(
                f"the upload part size must be from {MIN_PART_BYTES // 2**10} KiB to "
                f"{MAX_PART_BYTES // 2**30} GiB (S3 itself takes no parts under 5 MiB)"
            )
        if isinstance(self.output_format, str) and not isinstance(self.output_format, OutputFormat):
            try:
                object.__setattr__(self, "output_format", OutputFormat(self.output_format))
            except ValueError:
                choices = ", ".join(f.value for f in OutputFormat)
                raise ConfigError(
                    f"unknown output format {self.output_format!r}: use {choices}"
                ) from None
        if self.output_path is not None:
            try:
                PathTemplate.parse(self.output_path)
            except TemplateError as exc:
                hint = f" ({exc.hint})" if exc.hint else ""
                raise ConfigError(f"{exc.message}{hint}") from None
        if self.delete_remote and not self.download:
            raise ConfigError("--delete-remote needs the stems downloaded (not --no-download)")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        if not self.job_timeout_s > 0:
            raise ConfigError("the job timeout must be positive")
        if self.download_concurrency < 1:
            raise ConfigError("download_concurrency must be at least 1")
        if self.budget_scope not in ("shard", "wallet"):
            raise ConfigError(f"budget_scope is 'shard' or 'wallet', got {self.budget_scope!r}")
        if self.results_format not in ("yaml", "json"):
            raise ConfigError(f"results_format is 'yaml' or 'json', got {self.results_format!r}")
        for cap in (self.max_spend_cents, self.keep_balance_cents):
            if cap is not None and cap < 0:
                raise ConfigError(f"budget caps must not be negative, got {cap}")

    @classmethod
    def with_options(cls, base: RunConfig | None = None, /, **options: Any) -> RunConfig:
        """``base`` (else the defaults) with these fields set; an unknown name is a
        TypeError naming it, as for any keyword argument."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown run option {unknown[0]!r}")
        return dataclasses.replace(base or cls(), **options)

    @property
    def primary_key_source(self) -> KeySource:
        """Where the key is read from: ``key_source``, else the variable ``api_key_env``."""
        if self.key_source is not None:
            return self.key_source
        try:
            return KeySource.env(self.api_key_env)
        except ValueError as exc:
            raise ConfigError(f"not an environment variable's name: {self.api_key_env!r}") from exc

    @property
    def key_description(self) -> str:
        """Where the key came from, for messages (never the key)."""
        return "the sandbox's key" if self.sandbox else self.primary_key_source.describe()

    @property
    def fallback_description(self) -> str | None:
        """Where the fallback key came from, for messages (None: there is none)."""
        if self.fallback_key is None:
            return None
        if self.fallback_key_source is None:
            return "the fallback key"
        return self.fallback_key_source.describe()

    @property
    def wallet_before_reserve(self) -> bool:
        """Read the wallet before every reservation (``budget_scope="wallet"``)."""
        return self.budget_scope == "wallet"

    def budget_for(self, manifest: Manifest) -> Budget:
        """The manifest's budget with this run's caps (where given) in place of its own."""
        budget = manifest.budget
        if self.max_spend_cents is not None:
            budget = dataclasses.replace(budget, max_spend_cents=self.max_spend_cents)
        if self.keep_balance_cents is not None:
            budget = dataclasses.replace(budget, keep_balance_cents=self.keep_balance_cents)
        return budget

    def output_for(self, manifest: Manifest) -> OutputSpec:
        """How stems are written: ``output``, else the manifest's spec in ``output_format``
        (keeping its bit depth or bitrate where the format takes them)."""
        if self.output is not None:
            return self.output
        own = manifest.output
        fmt = self.output_format
        if fmt is None or fmt is own.format:
            return own
        rate = own.bitrate_kbps
        return OutputSpec(
            format=fmt,
            bit_depth=own.bit_depth if fmt.lossless else None,
            bitrate_kbps=rate if rate is not None and takes_bitrate(fmt, rate) else None,
        )

    def for_manifest(self, manifest: Manifest) -> RunConfig:
        """This config with what the manifest decides filled in: concurrency, the output
        folder and format, and both caps, so that every reader sees one answer."""
        budget = self.budget_for(manifest)
        return dataclasses.replace(
            self,
            concurrency=self.concurrency or manifest.concurrency,
            output_dir=self.output_dir or manifest.output_dir,
            output=self.output_for(manifest),
            output_path=self.output_path or manifest.output_path,
            max_spend_cents=budget.max_spend_cents,
            keep_balance_cents=budget.keep_balance_cents,
        )


def base_url_from_env() -> str:
    """``$AUDIOPOD_BASE_URL``, else AudioPod's own address."""
    return (os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


def as_duration(seconds: float, *, flag: bool = False) -> str:
    """A time setting as people write it: ``7200`` -> ``2 h``, ``5400`` -> ``90 min``,
    ``45`` -> ``45 s``; with ``flag``, as ``--job-timeout`` takes it: ``2h``, ``90m``, ``45``."""
    units = (("h", 3600), ("m", 60)) if flag else (("h", 3600), ("min", 60))
    for unit, size in units:
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{'' if flag else ' '}{unit}"
    return f"{seconds:g}" if flag else f"{seconds:g} s"
