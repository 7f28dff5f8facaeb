"""Where a run's stems are kept: a shelf, in a local folder or in a bucket.

A shelf answers the few questions the runner asks of an output location, the same way for
both: where a stem is written on this machine (``place``), how it is made to stay
(``keep``: nothing for a file, already in place; an upload for an object), whether a stem
recorded earlier is still there as it was (``matches``), and the done records of finished
jobs, which live next to the stems (``<output>/.batchpod/done/<content key>.json``). Its
methods block; the runner calls them in worker threads.

- ``_local.py``: a folder (temporary files and renames; no writing through symbolic links);
- ``_objects.py``: ``s3://``, ``gs://``, ``az://`` through ``obstore``, staged locally first;
- ``_naming.py``: names both use.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Protocol

from batchpod.models import Location, ObjectUrl, OutputFile
from batchpod.retry import RetryPolicy

from ._local import LocalShelf
from ._naming import RECORDS, served_path
from ._objects import (
    DEFAULT_PART_BYTES,
    MAX_PART_BYTES,
    MIN_PART_BYTES,
    ObjectShelf,
    StorageError,
    check_endpoint,
)

__all__ = [
    "DEFAULT_PART_BYTES",
    "MAX_PART_BYTES",
    "MIN_PART_BYTES",
    "RECORDS",
    "LocalShelf",
    "ObjectShelf",
    "Shelf",
    "StorageError",
    "check_endpoint",
    "open_shelf",
    "served_path",
]


class Shelf(Protocol):
    """An output location (see the module docstring)."""

    @property
    def root(self) -> Location: ...

    @property
    def records_where(self) -> str:
        """Where the done records are, to name in a message."""
        ...

    def at(self, relative: PurePosixPath) -> Location: ...

    def relative(self, where: Location) -> PurePosixPath: ...

    def check(self) -> None:
        """That stems can be kept here; OutputError saying why not."""
        ...

    def place(self, relative: PurePosixPath) -> Path:
        """The local file a stem at ``relative`` is written to, its folder made."""
        ...

    def keep(self, stem: str, written: Path, relative: PurePosixPath, size: int) -> OutputFile:
        """The record of a stem written to ``place(relative)``, once it is kept."""
        ...

    def matches(self, file: OutputFile) -> bool: ...

    def record_keys(self) -> set[str]: ...

    def read_record(self, name: str) -> bytes | None: ...

    def write_record(self, name: str, data: bytes) -> None: ...

    def close(self) -> None: ...


def open_shelf(
    root: Location,
    *,
    endpoint: str | None = None,
    retry: RetryPolicy | None = None,
    part_bytes: int = DEFAULT_PART_BYTES,
) -> Shelf:
    """The shelf of ``root``: a folder, or a bucket and prefix. OutputError if a store's
    settings are refused, ConfigError for an endpoint it cannot take."""
    if isinstance(root, ObjectUrl):
        return ObjectShelf(root, endpoint=endpoint, retry=retry, part_bytes=part_bytes)
    return LocalShelf(root)
