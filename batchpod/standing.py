"""What a state file says of a manifest's jobs, read without the run's lock (status, estimate).

A run may hold the state while this reads it (the file is in WAL mode, and nothing here
writes). The states of the manifest's other shard layouts are read too, as a run would take
them up (``batchpod.layouts``). Jobs are matched to their rows by content key, so a renamed
or reordered manifest still finds them; a song listed twice is one row, and its later
listings are ``repeated``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anyio

from batchpod.identity import content_keys
from batchpod.journal import JobRecord, Journal
from batchpod.layouts import further_on, other_layouts
from batchpod.models import Job, Manifest
from batchpod.paths import state_path_for
from batchpod.shards import Shard, shard_share


@dataclass(frozen=True, slots=True, kw_only=True)
class Standing:
    """The manifest's jobs (a shard's share, with a shard) and each one's row, if any."""

    state_path: Path
    exists: bool  # False: no run of any layout has made a state yet
    jobs: tuple[Job, ...]
    records: tuple[JobRecord | None, ...]
    repeated: frozenset[int]  # indexes of jobs whose song an earlier job already lists


def read_standing(
    manifest: Manifest, *, state_path: Path | None = None, shard: Shard | None = None
) -> Standing:
    """Read the state of a run of ``manifest`` (``state_path``, else the default; a shard's
    own with ``shard``). Without a state file, every job is as yet unrun and, with a shard,
    its share is unknown (``jobs`` is then the whole manifest's)."""
    path = state_path_for(manifest.path, state_path, shard)
    others = other_layouts(manifest.path, state_path, shard)
    if not path.exists() and not others:
        return Standing(
            state_path=path,
            exists=False,
            jobs=manifest.jobs,
            records=(None,) * len(manifest.jobs),
            repeated=frozenset(),
        )
    if path.exists():
        with Journal.open(path, create=False, readonly=True) as journal:
            rows = journal.records()
            keys = anyio.run(_keys_of, manifest.jobs, journal)
    else:
        rows, keys = {}, anyio.run(_keys_of, manifest.jobs, None)
    # What another shard layout did or has in flight, a run of this one takes up.
    rows.update(further_on(rows, others))
    manifest, keys = shard_share(manifest, keys, shard)
    seen: set[str] = set()
    repeated: set[int] = set()
    for index, key in enumerate(keys):
        if key in seen:
            repeated.add(index)
        seen.add(key)
    return Standing(
        state_path=path,
        exists=True,
        jobs=manifest.jobs,
        records=tuple(rows.get(key) for key in keys),
        repeated=frozenset(repeated),
    )


async def _keys_of(jobs: tuple[Job, ...], journal: Journal | None) -> list[str]:
    return await content_keys(jobs, journal, remember=False)
