"""Stems in a local folder: written in place through temporary files and renames."""

from __future__ import annotations

import errno
import glob
import os
import tempfile
from pathlib import Path, PurePosixPath

from batchpod.client import download_temp_prefix
from batchpod.errors import OutputError
from batchpod.identity import file_sha256
from batchpod.models import Location, ObjectUrl, OutputFile

from ._naming import RECORDS, served_path


class LocalShelf:
    """An output folder on this machine (see the package docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __str__(self) -> str:
        return str(self.root)

    def at(self, relative: PurePosixPath) -> Path:
        return self.root.joinpath(*relative.parts)

    def relative(self, where: Location) -> PurePosixPath:
        if isinstance(where, ObjectUrl):
            raise ValueError(f"{where} is not in the output folder {self.root}")
        return PurePosixPath(where.relative_to(self.root).as_posix())

    def check(self) -> None:
        """That stems can be written here: the folder is made, and a file made in it."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as exc:
            raise OutputError(path=self.root, reason=exc.strerror or str(exc)) from exc

    def place(self, relative: PurePosixPath) -> Path:
        """Where the stem at ``relative`` is written: its folders made, and the temporary
        files a killed run left for it cleared (only its own: other jobs may share the
        folder).

        A symbolic link on the way is refused: stems go inside the output folder, never
        through a link someone planted there to somewhere else.
        """
        dest = self.at(relative)
        here = self.root
        for part in relative.parts[:-1]:
            here = here / part
            if here.is_symlink():
                raise OSError(
                    errno.ELOOP,
                    "it is a symbolic link; batchpod does not write through links in the "
                    "output folder",
                    str(here),
                )
        dest.parent.mkdir(parents=True, exist_ok=True)
        clear_temporaries(dest)
        return dest

    def keep(self, stem: str, written: Path, relative: PurePosixPath, size: int) -> OutputFile:
        """The record of a stem written in its place (blocking: hashes it)."""
        digest = file_sha256(written)
        return OutputFile(
            stem=stem, path=written, size=size, sha256=digest, mtime_ns=written.stat().st_mtime_ns
        )

    def matches(self, file: OutputFile) -> bool:
        """Whether a written stem is still there as it was written (blocking: may hash it):
        a file whose size and modification time are unchanged is taken as unchanged (the
        quick check rsync and make rely on); any other is hashed again."""
        path = file.path
        if isinstance(path, ObjectUrl) or not path.is_relative_to(self.root):
            return False  # kept elsewhere than this run's output folder
        try:
            info = path.stat()
        except OSError:
            return False
        if info.st_size != file.size:
            return False
        if file.sha256 is None:
            return True  # recorded by an older batchpod: the size is all there is to check
        if file.mtime_ns is not None and info.st_mtime_ns == file.mtime_ns:
            return True
        try:
            return file_sha256(path) == file.sha256
        except OSError:
            return False

    # The done records, in .batchpod/done/ of the folder.
    def record_keys(self) -> set[str]:
        try:
            return {p.name.removesuffix(".json") for p in self.at(RECORDS).glob("*.json")}
        except OSError:
            return set()

    def read_record(self, name: str) -> bytes | None:
        try:
            return self.at(RECORDS / f"{name}.json").read_bytes()
        except OSError:
            return None

    def write_record(self, name: str, data: bytes) -> None:
        """Write a record atomically: a temporary file, synced, then renamed (blocking)."""
        folder = self.at(RECORDS)
        folder.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{name}.json.part-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            Path(temp).replace(folder / f"{name}.json")
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    @property
    def records_where(self) -> str:
        return str(self.at(RECORDS))

    def close(self) -> None:
        """Nothing to release: the folder is the stems' home."""


def clear_temporaries(dest: Path) -> None:
    """Remove what a killed run left for the stem at ``dest``: the served file waiting to be
    encoded, the downloads' temporary files, and the encoder's (named in full:
    ``encode.encode``)."""
    served = served_path(dest)
    served.unlink(missing_ok=True)
    for prefix in {download_temp_prefix(dest), download_temp_prefix(served), f".{dest.name}.part-"}:
        for stale in dest.parent.glob(f"{glob.escape(prefix)}*"):
            stale.unlink(missing_ok=True)
