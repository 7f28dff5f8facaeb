"""Every file a run names: the state, the results, and their shard-suffixed forms.

A run of ``jobs.yaml`` keeps its state in ``jobs.batchpod.db`` and writes its results to
``jobs.results.yaml`` (or ``.json``), both beside the manifest; shard 3 of 8 gets
``jobs.shard-3-of-8.batchpod.db`` and ``jobs.shard-3-of-8.results.yaml``. A path the user
gives gets the shard's name too, so one command line serves every shard. Pure: nothing here
touches the disk but ``realpath``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from batchpod.results import Format
    from batchpod.shards import Shard

STATE_SUFFIX: Final = ".batchpod.db"


def default_state_path(manifest: Path) -> Path:
    """``jobs.yaml`` -> ``jobs.batchpod.db`` beside the manifest (its real path, so a
    manifest reached through a symlink or another spelling still has one state)."""
    real = Path(os.path.realpath(manifest))
    return real.with_name(f"{real.stem}{STATE_SUFFIX}")


def default_results_path(manifest: Path, fmt: Format) -> Path:
    """``jobs.yaml`` -> ``jobs.results.yaml`` (or ``.json``) beside the manifest."""
    return manifest.with_name(f"{manifest.stem}.results.{fmt}")


def shard_path(path: Path, shard: Shard | None, *, stem: str) -> Path:
    """The shard's own file for ``path`` (unchanged without a shard). A file named after the
    manifest (whose name without ``.yaml`` is ``stem``) gets the shard's name after the stem:
    ``jobs.results.yaml`` -> ``jobs.shard-3-of-8.results.yaml``; any other name gets it
    before its last suffix: ``out/r.yaml`` -> ``out/r.shard-3-of-8.yaml``."""
    if shard is None:
        return path
    return _tagged(path, shard.name, stem=stem)


def _tagged(path: Path, tag: str, *, stem: str) -> Path:
    if path.name.startswith(f"{stem}."):
        return path.with_name(f"{stem}.{tag}{path.name[len(stem) :]}")
    return path.with_name(f"{path.stem}.{tag}{path.suffix}")


def worker_results_path(
    manifest: Path, results_path: Path | None, worker: str, *, fmt: Format
) -> Path:
    """A fleet worker's own results file: ``jobs.worker-<name>.results.yaml`` (or the given
    path with ``worker-<name>`` in it), so that workers on one machine never overwrite each
    other's; ``batchpod results`` writes the whole fleet's."""
    tag = "worker-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in worker)
    return _tagged(results_path or default_results_path(manifest, fmt), tag, stem=manifest.stem)


def state_path_for(manifest: Path, state_path: Path | None, shard: Shard | None) -> Path:
    """The state file of a run of ``manifest``: ``state_path``, else the default beside the
    manifest; either with the shard's name for a shard."""
    default = default_state_path(manifest)
    stem = default.name.removesuffix(STATE_SUFFIX)
    return shard_path(state_path or default, shard, stem=stem)


def results_path_for(
    manifest: Path, results_path: Path | None, shard: Shard | None, *, fmt: Format
) -> Path:
    """The results file of a run of ``manifest``: ``results_path``, else the default beside
    the manifest; either with the shard's name for a shard (shards given the same
    ``--results`` must not overwrite each other)."""
    path = results_path or default_results_path(manifest, fmt)
    return shard_path(path, shard, stem=manifest.stem)
