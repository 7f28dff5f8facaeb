"""The results manifest: what a run did with every job, written atomically.

The document is a header (which batchpod, which manifest, which API, when, the wallet before
and after, counts by status, the exit code) and one entry per job in manifest order. It is
rewritten whole, through a temporary file and a rename, so a reader (or a crash) only ever
sees a complete file. It is created owner-only: it names the user's catalogue and spend.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from batchpod.budget import usd
from batchpod.models import JobResult, JobStatus, Location, ObjectUrl, OutputFile
from batchpod.spool import Spool

Format = Literal["yaml", "json"]
RESULTS_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RunHeader:
    """Facts about one run, for the head of its results manifest."""

    batchpod_version: str | None
    manifest: Path | str | None
    manifest_sha256: str | None
    base_url: str | None
    sandbox: bool | None
    started_at: float | None
    finished_at: float | None = None
    balance_before_cents: int | None = None
    balance_after_cents: int | None = None
    exit_code: int | None = None
    stopped: str | None = None  # why the run stopped early, for people
    max_spend_cents: int | None = None  # the caps in force
    keep_balance_cents: int | None = None
    # For a shard under a manifest's cap: the manifest's cap and the estimates this shard's
    # share of it (max_spend_cents) was taken from.
    max_spend_share: Mapping[str, int] | None = None
    jobs_worked: int | None = None  # jobs this run submitted or followed at AudioPod
    api_requests: int | None = None  # API requests sent (stem downloads apart)
    throttled: int | None = None  # of which answered 429
    retries: Mapping[str, int] | None = None  # requests sent again, by cause
    shard: tuple[int, int] | None = None  # (index, count) when the run was one shard
    worker: str | None = None  # the fleet worker's name, when the state is a fleet's
    state: str | None = None  # a fleet's state database (no password), for ``results``
    key_switched_to: str | None = None  # the fallback key's source, when the first was refused
    # For a merge of shards' results (batchpod merge): the files, the shard count, and the
    # manifest's jobs that no file lists.
    merged_from: tuple[str, ...] | None = None
    shards: int | None = None
    missing: tuple[str, ...] = ()


def results_document(
    header: RunHeader, results: Sequence[JobResult], *, base: Path, entries: bool = True
) -> dict[str, Any]:
    """The results manifest as plain data, with paths relative to ``base`` where possible."""
    run = run_section(
        header,
        statuses=[r.status.value for r in results],
        costs=[r.cost_cents for r in results],
        estimates=[r.estimated_cents for r in results],
    )
    document: dict[str, Any] = {"results_version": RESULTS_VERSION, "run": run}
    if entries:
        document["jobs"] = [_entry(result, base) for result in results]
    return document


def run_section(
    header: RunHeader,
    *,
    statuses: Iterable[str],
    costs: Iterable[int | None],
    estimates: Iterable[int | None],
) -> dict[str, Any]:
    """The ``run`` header of a results document (a run's, or a merge's): the facts in
    ``header`` and the counts, spend and estimates of its jobs."""
    counts = Counter(statuses)
    spent = [cents for cents in costs if cents is not None]
    run: dict[str, Any] = {
        "batchpod_version": header.batchpod_version,
        "manifest": None if header.manifest is None else str(header.manifest),
        "manifest_sha256": header.manifest_sha256,
        "base_url": header.base_url,
        "sandbox": header.sandbox,
    }
    if header.merged_from is not None:
        run["merged_from"] = list(header.merged_from)
        run["shards"] = header.shards
    run.update(
        {
            "started_at": _iso(header.started_at),
            "finished_at": _iso(header.finished_at),
            "balance_before_cents": header.balance_before_cents,
            "balance_after_cents": header.balance_after_cents,
            "spent_cents": sum(spent) if spent else None,
            "estimated_cents": sum(cents or 0 for cents in estimates),
            "max_spend_cents": header.max_spend_cents,
            "keep_balance_cents": header.keep_balance_cents,
        }
    )
    if header.max_spend_share is not None:
        run["max_spend_share"] = dict(header.max_spend_share)
    run.update(
        {
            "counts": {status.value: counts.get(status.value, 0) for status in JobStatus},
            "exit_code": header.exit_code,
        }
    )
    if header.api_requests is not None:
        worked = header.jobs_worked or 0
        run["requests"] = {
            "api": header.api_requests,
            "jobs_worked": worked,
            "per_job": round(header.api_requests / worked, 2) if worked else None,
            "throttled": header.throttled or 0,
            "retries": dict(sorted((header.retries or {}).items())),
        }
    if header.shard is not None:
        run["shard"] = {"index": header.shard[0], "count": header.shard[1]}
    if header.state is not None:
        run["state"] = header.state
    if header.worker is not None:
        run["worker"] = header.worker
    if header.key_switched_to:
        run["key_switched_to"] = header.key_switched_to
    if header.stopped:
        run["stopped"] = header.stopped
    if header.missing:
        run["missing"] = list(header.missing)
    return run


def _entry(result: JobResult, base: Path) -> dict[str, Any]:
    job = result.job
    source: dict[str, str]
    if job.source.url is not None:
        source = {"url": job.source.url}
    else:
        assert job.source.file is not None
        source = {"file": _shown(job.source.file, base)}
    entry: dict[str, Any] = {"name": job.name, "source": source, "mode": job.mode.value}
    if job.stem is not None:
        entry["stem"] = job.stem.value
    if job.meta:
        entry["meta"] = dict(job.meta)
    entry["status"] = result.status.value
    if result.reason:
        entry["reason"] = result.reason
    if result.duplicate_of:
        entry["duplicate_of"] = result.duplicate_of
    entry["remote_id"] = result.remote_id
    entry["submitted_at"] = _iso(result.submitted_at)
    entry["completed_at"] = _iso(result.completed_at)
    entry["finished_at"] = _iso(result.finished_at)
    entry["attempts"] = result.attempts
    if result.retries:
        entry["retries"] = dict(sorted(result.retries.items()))
    entry["estimated_cents"] = result.estimated_cents
    entry["cost_cents"] = result.cost_cents
    entry["cost_usd"] = usd(result.cost_cents) if result.cost_cents is not None else None
    if result.files:
        entry["files"] = [_file_entry(f, base) for f in result.files]
    if result.deleted_remote:
        entry["deleted_remote"] = True
    if result.quality_scores:
        entry["quality_scores"] = dict(sorted(result.quality_scores.items()))
    if result.download_urls:
        entry["download_urls"] = dict(sorted(result.download_urls.items()))
    if result.error is not None:
        entry["error"] = {
            "type": result.error.type,
            "http_status": result.error.http_status,
            "message": result.error.message,
        }
    return entry


_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def results_yaml(document: Mapping[str, Any]) -> str:
    """A whole results document as YAML (as a run writes it)."""
    return "".join(results_yaml_pieces(document))


def results_yaml_pieces(document: Mapping[str, Any]) -> Iterator[str]:
    """A results document as YAML in pieces, laid out as a run writes its file: everything
    but ``jobs`` first, then each entry as ``_entry_yaml`` renders it. For ``write_atomic``:
    a merge of many jobs is written without one text of it all, and without PyYAML's Python
    representer, which would take minutes and gigabytes over 100,000 entries."""
    head = {key: value for key, value in document.items() if key != "jobs"}
    jobs = document.get("jobs")
    if not isinstance(jobs, list | tuple) or not jobs:
        yield _yaml(dict(document))  # no entries to stream, or not a list of them
        return
    yield (_yaml(head) if head else "") + "jobs:\n"
    for entry in jobs:
        yield _entry_yaml(entry)


def _yaml(data: Any) -> str:
    text: str = yaml.dump(data, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, width=100)
    return text


# -- one job's entry as YAML, fast ---------------------------------------------------------
#
# PyYAML's representer is Python, and it took a quarter of a 10,000-job run's CPU: every
# entry is rendered once or twice as the results file is kept fresh. An entry is plain data
# of a few shapes (mappings of strings, numbers, booleans, None, and lists of mappings), so it
# is written here directly: block style as PyYAML writes it, strings plain where the YAML 1.1
# resolver PyYAML loads with would read them back as the same string, else double-quoted with
# escapes. Anything of another shape goes to PyYAML. tests/test_results.py checks, over
# generated entries, that what it writes loads back as the same data.

# A plain scalar here: starts with a letter, '_' or '/' (not an indicator: no '&', '*', '!',
# '|', '>', '%', '@', quote or bracket), then none of space, '#', quotes, brackets or braces,
# and no ':' at the end (which would make it a key).
_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./:@%+=~,?&-]*(?<!:)\Z")
# Words YAML 1.1 reads as booleans or null, in any case (PyYAML knows fewer; all are quoted).
_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})
# What a double-quoted scalar must escape: the quote, the backslash, and every character
# outside YAML's printable set or that YAML 1.1 reads as a line break (NEL, LS, PS) or BOM.
_UNPRINTABLE = re.compile(r'["\\\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff]')
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    known = _ESCAPES.get(char)
    if known is not None:
        return known
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _scalar(value: object) -> str | None:
    """``value`` as a YAML scalar, or None if it is not one this writer knows."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _WORDS:
            return value
        return '"' + _UNPRINTABLE.sub(_escape, value) + '"'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value in (math.inf, -math.inf):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        if "." not in text and "e" in text:  # 1e-05: YAML 1.1 wants 1.0e-05
            text = text.replace("e", ".0e", 1)
        return text
    return None


def _block(mapping: Mapping[Any, Any], pad: str, out: list[str]) -> bool:
    """Append ``mapping`` in block style at indent ``pad``; False if a value is unknown."""
    for key, value in mapping.items():
        name = _scalar(key) if isinstance(key, str) else None
        if name is None or len(name) > 128:  # PyYAML writes a long key as '? key'; libyaml
            return False  # reads no simple key over 1024 characters
        if isinstance(value, dict) and value:
            out.append(f"{pad}{name}:\n")
            if not _block(value, pad + "  ", out):
                return False
        elif isinstance(value, list) and value:
            out.append(f"{pad}{name}:\n")
            for item in value:  # PyYAML's indentless sequence of mappings
                if not isinstance(item, dict) or not item:
                    return False
                start = len(out)
                if not _block(item, pad + "  ", out):
                    return False
                out[start] = f"{pad}- {out[start][len(pad) + 2 :]}"
        else:
            text = "{}" if value == {} else "[]" if value == [] else _scalar(value)
            if text is None:
                return False
            out.append(f"{pad}{name}: {text}\n")
    return True


def _entry_yaml(entry: Mapping[str, Any]) -> str:
    """One job's entry as an item of the ``jobs:`` sequence."""
    out: list[str] = []
    if not entry or not _block(entry, "  ", out):
        return _yaml([dict(entry)])
    out[0] = f"- {out[0][2:]}"
    return "".join(out)


# Status codes for the renderer's per-job tallies (an index into _STATUSES; -1: none yet).
_STATUSES = tuple(JobStatus)
_CODE = {status: code for code, status in enumerate(_STATUSES)}
_NO_CENTS = -1  # a cost or estimate not known, in the tallies' arrays
#: At most this many bytes of spooled entries are read back in one piece.
_READ_BYTES = 1 << 20


class Renderer:
    """Every job's results entry, rendered once each time the job changes and kept in a
    ``Spool``, so that the results file can be rewritten again and again while a run goes on
    without rendering 100,000 entries each time or holding them in memory.

    ``update(index, result)`` renders job ``index``'s entry (the caller knows which jobs
    changed); ``stream(header, indexes)`` yields the whole document for those jobs, in that
    order, read back from the spool a piece at a time. Beside each entry it keeps the job's
    status, cost, estimate and whether it did what was asked, in flat arrays, for the
    header's counts and the run's tally (``tally``). The text loads to ``results_document``'s
    data: YAML, or JSON with one job per line.
    """

    def __init__(self, fmt: Format, *, base: Path, spool: Spool | None = None) -> None:
        self.fmt = fmt
        self.base = base
        self.spool = spool if spool is not None else Spool()
        self._offset = array("q")
        self._length = array("q")
        self._status = array("b")
        self._cost = array("q")
        self._estimate = array("q")
        self._ok = bytearray()

    def __call__(self, header: RunHeader, results: Sequence[JobResult]) -> str:
        """The whole document for ``results`` (every one rendered afresh)."""
        for index, result in enumerate(results):
            self.update(index, result)
        return b"".join(self.stream(header, range(len(results)))).decode()

    def update(self, index: int, result: JobResult) -> None:
        """Render job ``index``'s entry as ``result`` says, in place of what it said before."""
        entry = _entry(result, self.base)
        text = json.dumps(entry, ensure_ascii=False) if self.fmt == "json" else _entry_yaml(entry)
        data = text.encode()
        if index >= len(self._offset):
            grow = index + 1 - len(self._offset)
            self._offset.extend([-1] * grow)
            self._length.extend([0] * grow)
            self._status.extend([-1] * grow)
            self._cost.extend([_NO_CENTS] * grow)
            self._estimate.extend([_NO_CENTS] * grow)
            self._ok.extend(bytes(grow))
        self._offset[index] = self.spool.put(data)
        self._length[index] = len(data)
        self._status[index] = _CODE[result.status]
        self._cost[index] = _NO_CENTS if result.cost_cents is None else result.cost_cents
        cents = result.estimated_cents
        self._estimate[index] = _NO_CENTS if cents is None else cents
        self._ok[index] = result.ok

    def tally(self, indexes: Iterable[int]) -> Tally:
        """What the rendered entries of ``indexes`` add up to."""
        counts: Counter[str] = Counter()
        spent: int | None = None
        failed = estimated = 0
        for index in indexes:
            counts[_STATUSES[self._status[index]].value] += 1
            cost = self._cost[index]
            if cost != _NO_CENTS:
                spent = (spent or 0) + cost
            if self._estimate[index] != _NO_CENTS:
                estimated += self._estimate[index]
            failed += not self._ok[index]
        return Tally(counts=counts, spent_cents=spent, failed=failed, estimated_cents=estimated)

    def stream(self, header: RunHeader, indexes: Sequence[int]) -> Iterator[bytes]:
        """The document for the jobs ``indexes`` (each rendered by ``update``), in pieces of
        at most about a MiB: joined, a large file's text would be a second copy of every
        entry. Blocking reads of the spool: iterate it in a worker thread, with no
        ``update`` meanwhile."""
        missing = [index for index in indexes if self._offset_of(index) < 0]
        if missing:
            raise ValueError(f"job {missing[0]}'s entry was never rendered")
        head = results_document(header, [], base=self.base, entries=False)
        head["run"] = run_section(
            header,
            statuses=(_STATUSES[self._status[i]].value for i in indexes),
            costs=(None if self._cost[i] == _NO_CENTS else self._cost[i] for i in indexes),
            estimates=(
                None if self._estimate[i] == _NO_CENTS else self._estimate[i] for i in indexes
            ),
        )
        if self.fmt == "json":
            top = json.dumps(head, indent=2, ensure_ascii=False)[:-2]  # reopen the object
            yield f'{top},\n  "jobs": [\n    '.encode()
            separator = b",\n    "
        else:
            yield (_yaml(head) + ("jobs:\n" if indexes else "jobs: []\n")).encode()
            separator = b""
        yield from self._entries(indexes, separator)
        if self.fmt == "json":
            yield b"\n  ]\n}\n"

    def _offset_of(self, index: int) -> int:
        return self._offset[index] if 0 <= index < len(self._offset) else -1

    def _entries(self, indexes: Sequence[int], separator: bytes) -> Iterator[bytes]:
        """The entries, with ``separator`` between them: entries that lie one after another
        in the spool are read back in one piece."""
        get = self.spool.get
        out: list[bytes] = []
        size = 0
        start = end = -1  # the run of spooled bytes not yet read
        for position, index in enumerate(indexes):
            offset, length = self._offset[index], self._length[index]
            if start >= 0 and (offset != end or separator or end - start >= _READ_BYTES):
                out.append(get(start, end - start))
                size += end - start
                start = -1
            if separator and position:
                out.append(separator)
            if start < 0:
                start, end = offset, offset + length
            else:
                end += length
            if size >= _READ_BYTES:
                yield b"".join(out)
                out, size = [], 0
        if start >= 0:
            out.append(get(start, end - start))
        if out:
            yield b"".join(out)


@dataclass(frozen=True, slots=True)
class Tally:
    """What a run's results add up to: jobs by status, the charges read, and how many jobs
    did not do what was asked."""

    counts: Mapping[str, int]
    spent_cents: int | None
    failed: int
    estimated_cents: int = 0  # the sum of the jobs' estimates (as the header's)


def write_atomic(
    path: Path, text: str | bytes | Iterable[str | bytes], *, mode: int = 0o600
) -> None:
    """Replace ``path`` with ``text`` (or its pieces, one after another, text as UTF-8) so
    that readers see the old file or the new, never half; the file gets permissions ``mode``
    (by default owner-only: results name the user's catalogue and spend).

    Blocking: call it from a worker thread when on the event loop.
    """
    pieces = [text] if isinstance(text, str | bytes) else text
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for piece in pieces:
                out.write(piece.encode() if isinstance(piece, str) else piece)
            out.flush()
            os.fsync(out.fileno())
        Path(temp).chmod(mode)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def parse_iso(text: object) -> float | None:
    """A time as the results file writes it (``2026-11-28T18:49:16Z``) -> Unix seconds;
    None for anything else."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return (
        datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def _shown(path: Location, base: Path) -> str:
    if isinstance(path, ObjectUrl):
        return str(path)  # an object: its URL
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _file_entry(file: OutputFile, base: Path) -> dict[str, Any]:
    """A stem as the results list it: its path and size, and for an encoded one its format
    and the size of the WAV AudioPod served."""
    entry: dict[str, Any] = {"stem": file.stem, "path": _shown(file.path, base), "size": file.size}
    if file.encoding is not None:
        entry["format"] = file.encoding
        entry["served_size"] = file.served_size
    return entry
