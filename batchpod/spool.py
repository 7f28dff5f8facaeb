"""Scratch space on disk for what a long run must keep but need not hold in memory.

A run keeps, for every job it finished, the job's results entry and (without downloads) its
signed stem links and quality scores until the results file is written at the end. Held in
memory they were most of a large run's footprint (about 2 KB a job: 200 MB for 100,000
jobs). A ``Spool`` is an append-only file that takes them instead: ``put`` returns where the
bytes went, ``get`` reads them back. Writes are gathered in a buffer of ``BUFFER_BYTES`` and
written in one call; the buffer is read from directly until then.

The file is created unlinked (``tempfile.TemporaryFile``: no name, owner-only), in the folder
the results go to rather than ``TMPDIR``, which is often a RAM disk. A crash or a ``kill -9``
leaves nothing behind; the space is freed when the file is closed or the process ends. When
the disk refuses a write (full, gone), the spool says so once in the log and keeps what it
is given in memory from then on: nothing is lost, only the memory is no longer flat.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("batchpod")

#: Bytes gathered before they are written to the file.
BUFFER_BYTES = 1 << 20


class Spool:
    """An append-only byte store: in an unlinked file in ``folder``, or in memory when
    ``folder`` is None (small runs, tests, embedding without a results folder)."""

    def __init__(self, folder: Path | None = None) -> None:
        self._file: IO[bytes] | None = None
        self._writing = False  # whether the buffer goes to the file when full
        self._flushed = 0  # bytes in the file; the buffer holds the bytes after them
        self._buffer = bytearray()
        self._folder = folder
        if folder is not None:
            try:
                self._file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (kept open)
                self._writing = True
                # Closed with the spool: what reads it back (a finished run's results, their
                # links) may outlive the run that made it.
                weakref.finalize(self, self._file.close)
            except OSError as exc:
                self._refused(folder, exc)

    @property
    def size(self) -> int:
        """Bytes put so far."""
        return self._flushed + len(self._buffer)

    def put(self, data: bytes) -> int:
        """Keep ``data``; return its offset (read it back with ``get(offset, len(data))``)."""
        offset = self.size
        self._buffer += data
        if self._writing and len(self._buffer) >= BUFFER_BYTES:
            self._flush()
        return offset

    def get(self, offset: int, length: int) -> bytes:
        """The ``length`` bytes put at ``offset``."""
        if offset >= self._flushed:
            start = offset - self._flushed
            return bytes(self._buffer[start : start + length])
        if offset + length > self._flushed:  # begins in the file, ends in the buffer
            head = self._read(offset, self._flushed - offset)
            return head + bytes(self._buffer[: offset + length - self._flushed])
        return self._read(offset, length)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._writing = False
        self._buffer = bytearray()

    def _read(self, offset: int, length: int) -> bytes:
        assert self._file is not None
        chunks = []
        while length > 0:
            chunk = os.pread(self._file.fileno(), length, offset)
            if not chunk:
                raise OSError(f"the spool file ended at {offset} bytes")
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(chunks)

    def _flush(self) -> None:
        assert self._file is not None
        written = 0
        with memoryview(self._buffer) as view:
            try:
                while written < len(view):
                    at = self._flushed + written
                    written += os.pwrite(self._file.fileno(), view[written:], at)
            except OSError as exc:
                # What reached the file stays readable there; the rest stays in memory.
                self._refused(self._folder, exc)
        self._flushed += written
        del self._buffer[:written]

    def _refused(self, folder: Path | None, exc: OSError) -> None:
        log.warning(
            "could not keep finished jobs' results on disk in %s (%s): keeping them in "
            "memory for the rest of the run",
            folder,
            exc.strerror or exc,
        )
        self._writing = False


class SpooledMapping(Mapping[str, Any]):
    """A JSON object kept in a ``Spool`` and read back each time it is looked at: for what a
    finished job carries but is rarely read again (its stem links, its quality scores)."""

    __slots__ = ("_count", "_length", "_offset", "_spool")

    def __init__(self, spool: Spool, data: Mapping[str, Any]) -> None:
        encoded = json.dumps(dict(data), ensure_ascii=False, separators=(",", ":")).encode()
        self._spool = spool
        self._offset = spool.put(encoded)
        self._length = len(encoded)
        self._count = len(data)

    def _load(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self._spool.get(self._offset, self._length))
        return loaded

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return self._count

    def items(self) -> Any:
        return self._load().items()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and self._load() == dict(other)

    def __hash__(self) -> int:  # a Mapping is not hashable; nor is this
        raise TypeError("unhashable type: 'SpooledMapping'")

    def __repr__(self) -> str:
        return f"SpooledMapping({self._count} keys)"
