"""Shards: which jobs of a manifest each of N independent runs owns.

A shard owns the jobs whose content key (``identity.content_key``: source, mode and stem, hashed
with SHA-256) falls in it: ``int(key, 16) % count == index``. The key depends only on the
job's content, so every machine, run and Python version agrees on the split, and a song listed
twice lands in one shard (where it is paid for once). Each shard keeps its own state and
results file (``jobs.shard-3-of-8.results.yaml``), so shards never wait for each other.

Their results are merged back into one by ``batchpod.merge``.

The manifest's ``max_spend_usd`` is for the whole manifest, however it is sharded: each shard
takes the share of the cap that its jobs are of the manifest's estimated cost
(``cap_share``), rounded down. Every shard computes the same estimates from the manifest
alone, so the shares add up to at most the cap with no process coordinating them. Pure: no
I/O.
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


@dataclass(frozen=True, slots=True, kw_only=True)
class CapShare:
    """A shard's part of the manifest's spending cap, and the estimates it was taken from."""

    manifest_cap_cents: int  # the cap for the whole manifest
    manifest_estimate_cents: int  # the estimated cost of every job of the manifest
    shard_estimate_cents: int  # of which this shard's jobs
    cap_cents: int  # this shard's cap: its share of the manifest's, rounded down


def cap_share(
    cap_cents: int, keys: Sequence[str], estimates: Sequence[int], shard: Shard
) -> CapShare:
    """The shard's cap: ``cap_cents`` times its jobs' share of the estimated cost of all of
    ``keys`` (one per job, each song counted once, however often it is listed), rounded
    down, so that the shards' caps together never pass ``cap_cents``. A manifest estimated
    at nothing leaves each shard the whole cap (its jobs cost nothing either)."""
    cost: dict[str, int] = {}
    for key, cents in zip(keys, estimates, strict=True):
        cost.setdefault(key, cents)
    total = sum(cost.values())
    mine = sum(cents for key, cents in cost.items() if shard.owns(key))
    return CapShare(
        manifest_cap_cents=cap_cents,
        manifest_estimate_cents=total,
        shard_estimate_cents=mine,
        cap_cents=cap_cents * mine // total if total else cap_cents,
    )
