"""Shards: which jobs of a manifest each of N independent runs owns.

A shard owns the jobs whose content key (``identity.content_key``: source, mode and stem, hashed
with SHA-256) falls in it: ``int(key, 16) % count == index``. The key depends only on the
job's content, so every machine, run and Python version agrees on the split, and a song listed
twice lands in one shard (where it is paid for once). Each shard keeps its own state and
results file (``jobs.shard-3-of-8.results.yaml``), so shards never wait for each other.

Their results are merged back into one by ``batchpod.merge``. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

from batchpod.models import Manifest

_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
MAX_SHARDS = 10_000


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` (from 0) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"the shard count must be from 1 to {MAX_SHARDS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"the shard index must be from 0 to {self.count - 1} "
                f"(indexes count from 0), got {self.index}"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"3/8"`` -> ``Shard(3, 8)``; ValueError with a message for people otherwise."""
        found = _SPEC.fullmatch(text)
        if found is None:
            raise ValueError(f"a shard is INDEX/COUNT, such as 0/4, got {text!r}")
        return cls(int(found[1]), int(found[2]))

    @property
    def name(self) -> str:
        """``shard-3-of-8``: the part its state and results file names carry."""
        return f"shard-{self.index}-of-{self.count}"

    def owns(self, key: str) -> bool:
        """Whether the job with content key ``key`` (hex) belongs to this shard."""
        return int(key, 16) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_share(
    manifest: Manifest, keys: Sequence[str], shard: Shard | None
) -> tuple[Manifest, list[str]]:
    """The manifest with only the shard's jobs, and their keys (all of them without a shard)."""
    if shard is None:
        return manifest, list(keys)
    mine = [i for i, key in enumerate(keys) if shard.owns(key)]
    jobs = tuple(manifest.jobs[i] for i in mine)
    return dataclasses.replace(manifest, jobs=jobs), [keys[i] for i in mine]
