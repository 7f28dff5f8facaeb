"""Merging the results files of a manifest's shards into one, in the manifest's job order.

``merge`` reads shard results files back and writes one results document in manifest order,
as a single run would have, refusing files that do not belong together. It knows nothing of
the API.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchpod.errors import ConfigError
from batchpod.manifest import load_manifest
from batchpod.report import load_results
from batchpod.results import RESULTS_VERSION, RunHeader, parse_iso, run_section


@dataclass(frozen=True, slots=True)
class Merged:
    """The merged results document, and the manifest's jobs that no shard's file has."""

    document: dict[str, Any]
    missing: tuple[str, ...]
    missing_shards: tuple[int, ...]


def merge(paths: Sequence[Path], *, manifest: Path | None = None) -> Merged:
    """Merge shard results files into one document in the manifest's job order.

    Every file must come from the same manifest (by SHA-256, as it was when each shard ran)
    and, when shards carry their index, the same count. The manifest (``manifest``, else the
    one the files name) gives the order; jobs that no file lists are returned in ``missing``,
    and the shard indexes with no file in ``missing_shards``. Raises ``ConfigError`` with a
    one-line message when a file is unusable or the files do not belong together.
    """
    if not paths:
        raise ConfigError("merge needs at least one results file")
    docs = [(path, load_results(path)) for path in paths]
    first_path, first = docs[0]
    sha = first["run"].get("manifest_sha256")
    for path, doc in docs[1:]:
        if doc["run"].get("manifest_sha256") != sha:
            raise ConfigError(
                f"{path} is the results of another manifest (or of another version of it) "
                f"than {first_path}: merge only the shards of one run"
            )
    counts = {c for path, doc in docs if (c := _shard_count(path, doc)) is not None}
    if len(counts) > 1:
        raise ConfigError(f"the files are shards of different counts ({sorted(counts)})")
    seen_shards: dict[int, Path] = {}
    for path, doc in docs:
        shard = doc["run"].get("shard")
        if isinstance(shard, Mapping):
            index = shard.get("index")
            if isinstance(index, int):
                if index in seen_shards:
                    raise ConfigError(f"{path} and {seen_shards[index]} are both shard {index}")
                seen_shards[index] = path
    count = counts.pop() if counts else None
    missing_shards = tuple(i for i in range(count) if i not in seen_shards) if count else ()

    manifest_path = manifest or Path(str(first["run"].get("manifest", "")))
    if not manifest_path.is_file():
        raise ConfigError(
            f"cannot find the manifest {manifest_path} that the results name: "
            "give it with --manifest"
        )
    if sha and _sha256(manifest_path) != sha:
        raise ConfigError(
            f"{manifest_path} has changed since the shards ran: merge needs the manifest "
            "they ran (give that version with --manifest)"
        )
    order = [job.name for job in load_manifest(manifest_path).jobs]

    entries: dict[str, Mapping[str, Any]] = {}
    for path, doc in docs:
        for entry in doc["jobs"]:
            name = entry["name"]
            if name in entries:
                raise ConfigError(f"job {name!r} is in more than one file (again in {path})")
            entries[name] = entry
    strangers = sorted(set(entries) - set(order))
    if strangers:  # cannot happen with the manifest they ran: never drop results silently
        raise ConfigError(f"the results list jobs the manifest does not: {', '.join(strangers)}")
    jobs = [entries[name] for name in order if name in entries]
    missing = tuple(name for name in order if name not in entries)
    return Merged(
        document=_document(docs, jobs, count, missing),
        missing=missing,
        missing_shards=missing_shards,
    )


def _shard_count(path: Path, doc: Mapping[str, Any]) -> int | None:
    shard = doc["run"].get("shard")
    if shard is None:
        return None
    if not isinstance(shard, Mapping) or not isinstance(shard.get("count"), int):
        raise ConfigError(f"{path}: 'run.shard' is not a shard index and count")
    count: int = shard["count"]
    return count


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _document(
    docs: Sequence[tuple[Path, Mapping[str, Any]]],
    jobs: list[Mapping[str, Any]],
    count: int | None,
    missing: tuple[str, ...],
) -> dict[str, Any]:
    runs = [doc["run"] for _, doc in docs]
    first = runs[0]
    started = [t for r in runs if (t := parse_iso(r.get("started_at"))) is not None]
    finished = [parse_iso(r.get("finished_at")) for r in runs]
    requests = [r["requests"] for r in runs if isinstance(r.get("requests"), Mapping)]
    retries: Counter[str] = Counter()
    for r in requests:
        retries.update({str(k): int(v) for k, v in (r.get("retries") or {}).items()})
    notes: dict[str, str | None] = {}
    for field in ("stopped", "key_switched_to"):  # said of some shards: which, and what
        said = [
            f"shard {_index(doc)}: {doc['run'][field]}" for _, doc in docs if doc["run"].get(field)
        ]
        notes[field] = "; ".join(said) or None
    header = RunHeader(
        batchpod_version=first.get("batchpod_version"),
        manifest=first.get("manifest"),
        manifest_sha256=first.get("manifest_sha256"),
        base_url=first.get("base_url"),
        sandbox=first.get("sandbox"),
        merged_from=tuple(str(path) for path, _ in docs),
        shards=count,
        started_at=min(started, default=None),
        finished_at=None if None in finished else max(t for t in finished if t is not None),
        # The wallet before the first shard read it, and after the last.
        balance_before_cents=max(_ints(r.get("balance_before_cents") for r in runs), default=None),
        balance_after_cents=min(_ints(r.get("balance_after_cents") for r in runs), default=None),
        max_spend_cents=_manifest_cap(first),
        keep_balance_cents=first.get("keep_balance_cents"),
        exit_code=max(_ints(r.get("exit_code") for r in runs), default=None),
        api_requests=sum(int(r.get("api") or 0) for r in requests) if requests else None,
        jobs_worked=sum(int(r.get("jobs_worked") or 0) for r in requests),
        throttled=sum(int(r.get("throttled") or 0) for r in requests),
        retries=retries,
        stopped=notes["stopped"],
        key_switched_to=notes["key_switched_to"],
        missing=missing,
    )
    run = run_section(
        header,
        statuses=[str(job.get("status")) for job in jobs],
        costs=[_int_or_none(job.get("cost_cents")) for job in jobs],
        estimates=[_int_or_none(job.get("estimated_cents")) for job in jobs],
    )
    return {"results_version": RESULTS_VERSION, "run": run, "jobs": jobs}


def _manifest_cap(run: Mapping[str, Any]) -> int | None:
    """The cap of the whole manifest that the shards ran under (each spent a share of it)."""
    share = run.get("max_spend_share")
    if isinstance(share, Mapping) and isinstance(share.get("manifest_cap_cents"), int):
        cap: int = share["manifest_cap_cents"]
        return cap
    return _int_or_none(run.get("max_spend_cents"))


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _ints(values: Iterable[object]) -> list[int]:
    return [v for v in values if isinstance(v, int)]


def _index(doc: Mapping[str, Any]) -> str:
    shard = doc["run"].get("shard")
    return str(shard.get("index")) if isinstance(shard, Mapping) else "?"
