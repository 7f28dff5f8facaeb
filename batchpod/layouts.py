"""Other shard layouts of a manifest's state: their files found, read-locked, their jobs taken up.

A manifest run as ``--shard I/N`` keeps its state in ``jobs.shard-I-of-N.batchpod.db``,
unsharded in ``jobs.batchpod.db`` (``batchpod.paths``). When the layout changes (2 shards to
4, or sharded to unsharded and back), the new layout's runs must not pay again for what the
old one did or has in flight. So a run reads every state file of every other layout beside
its own, and takes up each job's most advanced record (``RANK``): a job done there is done
here, a job in flight there is followed here by its AudioPod id, an unsettled submit is
reconciled here. The rows of jobs it does not own are taken up too, so that reconciliation
knows every AudioPod id that some job already holds.

Those files are held with a shared lock for the length of the run (``RunLock(shared=True)``):
the shards of one layout may read them together, while a run of the other layout, which needs
its own state exclusively, exits 75 until they are done; and a run whose other layout is still
running exits 75 itself.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Final

from batchpod.journal import JobRecord, JobState, Journal, RunLock
from batchpod.paths import state_path_for
from batchpod.shards import Shard

#: How far a record has come: the furthest of a job's records, across layouts, is taken up.
RANK: Final[Mapping[JobState, int]] = {
    JobState.PENDING: 0,
    JobState.FAILED: 1,
    JobState.SUBMITTING: 2,
    JobState.UNKNOWN: 2,
    JobState.SUBMITTED: 3,
    JobState.COMPLETED: 4,
    JobState.DOWNLOADED: 5,
    JobState.CLEANED: 6,
}


def other_layouts(manifest: Path, state_path: Path | None, shard: Shard | None) -> list[Path]:
    """The state files of the manifest's other shard layouts that exist beside this run's:
    the unsharded one for a shard, and every shard of another count."""
    base = state_path_for(manifest, state_path, None)
    sample = state_path_for(manifest, state_path, Shard(0, 1)).name
    head, _, tail = sample.partition("shard-0-of-1")
    pattern = re.compile(re.escape(head) + r"shard-(\d+)-of-(\d+)" + re.escape(tail))
    found = []
    if shard is not None and base.exists():
        found.append(base)
    if base.parent.is_dir():
        for path in sorted(base.parent.iterdir()):
            match = pattern.fullmatch(path.name)
            if match is not None and (shard is None or int(match[2]) != shard.count):
                found.append(path)
    return found


@contextlib.contextmanager
def read_locked(paths: Iterable[Path]) -> Iterator[None]:
    """Hold every one of ``paths`` with a shared lock (StateLocked if a run holds one)."""
    with contextlib.ExitStack() as stack:
        for path in paths:
            stack.enter_context(RunLock(path, shared=True))
        yield


def further_on(own: Mapping[str, JobRecord], others: Iterable[Path]) -> dict[str, JobRecord]:
    """Every record of the state files ``others`` that is further on than the job's record
    in ``own`` (the furthest, where several are). Blocking; reads only."""
    newer: dict[str, JobRecord] = {}
    for path in others:
        with Journal.open(path, create=False, readonly=True) as other:
            for key, record in other.records().items():
                best = newer.get(key) or own.get(key)
                if best is None or RANK[record.state] > RANK[best.state]:
                    newer[key] = record
    return newer


def take_up(journal: Journal, others: Iterable[Path]) -> int:
    """Copy into ``journal`` every record of ``others`` that is further on than its own;
    the number copied. Blocking."""
    newer = further_on(journal.records(), others)
    if newer:
        journal.put_many(list(newer.values()))
    return len(newer)
