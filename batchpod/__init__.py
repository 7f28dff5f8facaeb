"""batchpod: a batch runner for the AudioPod stem-separation API."""

from __future__ import annotations

from batchpod._version import __version__
from batchpod.api import run_manifest, run_manifest_sync
from batchpod.config import RunConfig
from batchpod.errors import BatchpodError, ConfigError, ExitCode, ManifestError, MissingApiKey
from batchpod.models import JobResult, JobStatus
from batchpod.session import RunSummary
from batchpod.shards import Shard

__all__ = [
    "BatchpodError",
    "ConfigError",
    "ExitCode",
    "JobResult",
    "JobStatus",
    "ManifestError",
    "MissingApiKey",
    "RunConfig",
    "RunSummary",
    "Shard",
    "__version__",
    "run_manifest",
    "run_manifest_sync",
]
