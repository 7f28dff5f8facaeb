"""What the output location says of finished jobs: a record of each, trusted only while its
files match.

After a job's last stem is kept, ``<output>/.batchpod/done/<content key>.json`` is written
atomically (a renamed file in a folder, one PUT in a bucket: ``batchpod.storage``): the
job's content key, its AudioPod id, and each stem's path (relative to the output folder or
prefix), size, SHA-256 and modification time (or ETag). The records live apart from the
stems, so that a job's folder holds its audio only, and a job is looked up by its content key
with no scan of the folder. Any later run that writes the same output location (from any
manifest, state file or shard layout) takes a job with a record as done without paying for it
again. A record is trusted only while every file it lists is there as it was written
(``Shelf.matches``). A record that no longer matches is not trusted, but its AudioPod id
still is: the job is followed there, and its stems downloaded again.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final

from batchpod.models import Location, OutputFile
from batchpod.storage import Shelf

RECORD_VERSION: Final = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class DoneRecord:
    """A finished job as the output folder records it."""

    content_key: str
    remote_id: str | None
    files: tuple[OutputFile, ...]
    trusted: bool  # every file is there as it was written


class DoneRecords:
    """The records of one output location; safe from worker threads. The keys that have a
    record are listed once at the start of a run (``load``) and kept up to date with the
    records the run writes, so a job without one costs a set look-up, never a read."""

    def __init__(self, shelf: Shelf, *, enabled: bool = True) -> None:
        self.shelf = shelf
        self.where = shelf.records_where
        # Off where jobs have no content keys (a pool without a state, as in tests): their
        # keys could not tell one run's job from another's.
        self.enabled = enabled
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    def load(self) -> None:
        """List the content keys that have a record (blocking)."""
        if not self.enabled:
            return
        keys = self.shelf.record_keys()
        with self._lock:
            self._keys = keys

    def has(self, content_key: str) -> bool:
        with self._lock:
            return content_key in self._keys

    def find(self, content_key: str) -> DoneRecord | None:
        """The record of ``content_key``, with whether it is to be trusted (blocking: its
        files are checked). None if there is none, or none that can be read."""
        found = self._read(content_key)
        if found is None:
            return None
        trusted = bool(found.files) and all(map(self.shelf.matches, found.files))
        return dataclasses.replace(found, trusted=trusted)

    def write(self, *, content_key: str, remote_id: str | None, files: list[OutputFile]) -> None:
        """Record a finished job, atomically (blocking)."""
        if not self.enabled:
            return
        data = {
            "batchpod_job": RECORD_VERSION,
            "content_key": content_key,
            "remote_id": remote_id,
            "files": [
                {
                    "stem": f.stem,
                    "path": self.shelf.relative(f.path).as_posix(),
                    "size": f.size,
                    "sha256": f.sha256,
                    "mtime_ns": f.mtime_ns,
                    **({"etag": f.etag} if f.etag is not None else {}),
                    **(
                        {"served_size": f.served_size, "encoding": f.encoding}
                        if f.encoding is not None
                        else {}
                    ),
                }
                for f in files
            ],
        }
        self.shelf.write_record(content_key, json.dumps(data, indent=1).encode())
        with self._lock:
            self._keys.add(content_key)

    def _read(self, content_key: str) -> DoneRecord | None:
        """The record of ``content_key``; None if it is missing or not one batchpod wrote."""
        raw = self.shelf.read_record(content_key)
        if raw is None:
            return None
        try:
            data: Any = json.loads(raw)
            if data.get("batchpod_job") != RECORD_VERSION or data["content_key"] != content_key:
                return None
            files = tuple(
                OutputFile(
                    stem=str(f["stem"]),
                    path=self._inside(str(f["path"])),
                    size=int(f["size"]),
                    sha256=str(f["sha256"]),
                    mtime_ns=int(f["mtime_ns"]) if f.get("mtime_ns") is not None else None,
                    served_size=int(f["served_size"]) if f.get("served_size") is not None else None,
                    encoding=str(f["encoding"]) if f.get("encoding") is not None else None,
                    etag=str(f["etag"]) if f.get("etag") is not None else None,
                )
                for f in data["files"]
            )
            remote = data.get("remote_id")
            return DoneRecord(
                content_key=content_key,
                remote_id=str(remote) if remote is not None else None,
                files=files,
                trusted=False,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def _inside(self, relative: str) -> Location:
        """A recorded path, refused (ValueError) unless it names a file inside the folder."""
        parts = PurePosixPath(relative).parts
        if not parts or relative.startswith("/") or any(p in ("..", "") for p in parts):
            raise ValueError(f"not a path inside the output folder: {relative!r}")
        return self.shelf.at(PurePosixPath(*parts))
