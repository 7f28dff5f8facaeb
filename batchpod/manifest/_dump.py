"""A ``Manifest`` back to version-1 YAML text, every job's name explicit (``dump_manifest``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from batchpod.models import Location, Manifest, ObjectUrl
from batchpod.templates import DEFAULT_OUTPUT_PATH

__all__ = ["dump_manifest"]


def dump_manifest(manifest: Manifest) -> str:
    """The manifest as version-1 YAML with every job's name explicit.

    Loading the result (from the same folder) gives the same jobs.
    """
    base = manifest.path.parent
    top: dict[str, Any] = {
        "version": manifest.version,
        "output_dir": _relative_text(manifest.output_dir, base),
        "concurrency": manifest.concurrency,
    }
    if not manifest.output.as_served:
        top["output_format"] = manifest.output.format.value
    if manifest.output.bit_depth is not None:
        top["output_bit_depth"] = manifest.output.bit_depth
    if manifest.output.bitrate_kbps is not None:
        top["output_bitrate_kbps"] = manifest.output.bitrate_kbps
    if manifest.output_path != DEFAULT_OUTPUT_PATH:
        top["output_path"] = manifest.output_path
    budget: dict[str, float] = {}
    if manifest.budget.max_spend_cents is not None:
        budget["max_spend_usd"] = manifest.budget.max_spend_cents / 100
    if manifest.budget.keep_balance_cents is not None:
        budget["keep_balance_usd"] = manifest.budget.keep_balance_cents / 100
    if budget:
        top["budget"] = budget
    jobs: list[dict[str, Any]] = []
    for job in manifest.jobs:
        entry: dict[str, Any] = {"name": job.name}
        if job.source.url is not None:
            entry["url"] = job.source.url
        else:
            assert job.source.file is not None
            entry["file"] = _relative_text(job.source.file, base)
        entry["mode"] = job.mode.value
        if job.stem is not None:
            entry["stem"] = job.stem.value
        if job.duration_s is not None:
            entry["duration"] = job.duration_s
        if job.meta:
            entry["meta"] = dict(job.meta)
        jobs.append(entry)
    top["jobs"] = jobs
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text: str = yaml.dump(top, Dumper=dumper, sort_keys=False, allow_unicode=True)
    return text


def _relative_text(target: Location, base: Path) -> str:
    if isinstance(target, ObjectUrl):
        return str(target)
    try:
        return target.relative_to(base).as_posix() or "."
    except ValueError:
        return str(target)
