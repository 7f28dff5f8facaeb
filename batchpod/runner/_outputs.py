"""What the output folder says of finished jobs: a record of each, trusted only while its
files match.

After a job's last stem is written, ``output_dir/.batchpod/done/<content key>.json`` is
written atomically: the job's content key, its AudioPod id, and each stem's path (relative to
the output folder), size, SHA-256 and modification time. The records live apart from the
stems, so that a job's folder holds its audio only, and a job is looked up by its content key
with no scan of the folder. Any later run that writes the same output folder (from any
manifest, state file or shard layout) takes a job with a record as done without paying for it
again. A record is trusted only while every file it lists is there with its size and content:
a file whose size and modification time are unchanged is taken as unchanged (the quick check
rsync and make rely on); any other is hashed again. A record that no longer matches is not
trusted, but its AudioPod id still is: the job is followed there, and its stems downloaded
again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

from batchpod.identity import file_sha256
from batchpod.models import OutputFile

RECORDS_DIR: Final = Path(".batchpod") / "done"
RECORD_VERSION: Final = 1


def file_matches(file: OutputFile) -> bool:
    """Whether a written stem is still there as it was written (blocking: may hash it)."""
    try:
        info = file.path.stat()
    except OSError:
        return False
    if info.st_size != file.size:
        return False
    if file.sha256 is None:
        return True  # recorded by an older batchpod: the size is all there is to check
    if file.mtime_ns is not None and info.st_mtime_ns == file.mtime_ns:
        return True
    try:
        return file_sha256(file.path) == file.sha256
    except OSError:
        return False


def written(stem: str, path: Path, size: int) -> OutputFile:
    """The record of a stem just written to ``path`` (blocking: hashes it)."""
    digest = file_sha256(path)
    return OutputFile(
        stem=stem, path=path, size=size, sha256=digest, mtime_ns=path.stat().st_mtime_ns
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DoneRecord:
    """A finished job as the output folder records it."""

    content_key: str
    remote_id: str | None
    files: tuple[OutputFile, ...]
    trusted: bool  # every file is there as it was written


class DoneRecords:
    """The records of one output folder; safe from worker threads. The keys that have a
    record are listed once at the start of a run (``load``) and kept up to date with the
    records the run writes, so a job without one costs a set look-up, never a read."""

    def __init__(self, output_dir: Path, *, enabled: bool = True) -> None:
        self.output_dir = output_dir
        self.folder = output_dir / RECORDS_DIR
        # Off where jobs have no content keys (a pool without a state, as in tests): their
        # keys could not tell one run's job from another's.
        self.enabled = enabled
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    def load(self) -> None:
        """List the content keys that have a record (blocking)."""
        if not self.enabled:
            return
        try:
            keys = {p.name.removesuffix(".json") for p in self.folder.glob("*.json")}
        except OSError:
            keys = set()
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
        trusted = bool(found.files) and all(map(file_matches, found.files))
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
                    "path": f.path.relative_to(self.output_dir).as_posix(),
                    "size": f.size,
                    "sha256": f.sha256,
                    "mtime_ns": f.mtime_ns,
                    **(
                        {"served_size": f.served_size, "encoding": f.encoding}
                        if f.encoding is not None
                        else {}
                    ),
                }
                for f in files
            ],
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{content_key}.json.part-", dir=self.folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            Path(temp).replace(self.folder / f"{content_key}.json")
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        with self._lock:
            self._keys.add(content_key)

    def _read(self, content_key: str) -> DoneRecord | None:
        """The record of ``content_key``; None if it is missing or not one batchpod wrote."""
        try:
            with (self.folder / f"{content_key}.json").open(encoding="utf-8") as stream:
                data: Any = json.load(stream)
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
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def _inside(self, relative: str) -> Path:
        """A recorded path, refused (ValueError) unless it names a file inside the folder."""
        parts = PurePosixPath(relative).parts
        if not parts or relative.startswith("/") or any(p in ("..", "") for p in parts):
            raise ValueError(f"not a path inside the output folder: {relative!r}")
        return self.output_dir.joinpath(*parts)
