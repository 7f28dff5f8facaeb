"""batchpod: a batch runner for the AudioPod stem-separation API."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("batchpod")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

from batchpod.api import ExitCode, run_manifest, run_manifest_sync
from batchpod.batch import RunSummary
from batchpod.errors import BatchpodError, ConfigError, ManifestError, MissingApiKey
from batchpod.models import JobResult, JobStatus
from batchpod.shards import Shard

__all__ = [
    "BatchpodError",
    "ConfigError",
    "ExitCode",
    "JobResult",
    "JobStatus",
    "ManifestError",
    "MissingApiKey",
    "RunSummary",
    "Shard",
    "__version__",
    "run_manifest",
    "run_manifest_sync",
]
