"""The stems path of one job: download every stem into the job's folder, safely named, and
encode it where the output format is not the WAV AudioPod serves.

Each stem goes to its place in the output location (the manifest's ``output_path``, by
default ``<name>/<stem>.<ext>``, ``batchpod.templates``) through the client's atomic download
(a new temporary file, then a rename). A stem to be encoded is downloaded first to a hidden
``.<file>.part-served`` beside its place, encoded from there in a worker thread (at most
one encode per core at once, ``batchpod.encode``) and the served file removed; a crash in
between leaves only temporary files, which the next run clears before fetching the stem
again from the same AudioPod job (never paid again). Where the output is a bucket, the place
is in a local staging folder and the finished file is uploaded from there
(``batchpod.storage``), at most ``download_concurrency`` at once.

A link that has expired is replaced by fresh ones from the job's status endpoint, fetched
while the download holds its slot so that they are used at once; stems already on disk with
their recorded size, in this run's format, are not fetched again. Stem names from
the server are made safe and distinct ignoring case, and a job folder that is a symbolic link
fails the job rather than being written through.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import anyio

from batchpod.client import RemoteJob
from batchpod.encode import EncodeError, encode, extension
from batchpod.errors import DownloadError, DownloadLinkExpired
from batchpod.journal import JobRecord, JobState
from batchpod.models import ErrorRecord, Job, JobStatus, OutputFile, OutputSpec
from batchpod.storage import Shelf, StorageError, served_path
from batchpod.templates import PathTemplate, safe_stem

from ._crew import Crew
from ._live import LiveJob
from ._outcomes import JobFailed, error_record


class Stems:
    """Downloads completed jobs' stems, at most ``download_concurrency`` at once."""

    def __init__(self, crew: Crew) -> None:
        self.crew = crew
        self._downloads = anyio.CapacityLimiter(crew.config.download_concurrency)
        self._encodes = anyio.CapacityLimiter(os.cpu_count() or 1)
        self._uploads = anyio.CapacityLimiter(crew.config.download_concurrency)

    async def fetch(self, job: Job, live: LiveJob, remote: RemoteJob) -> None:
        """Download every stem not already kept, then record the job as done."""
        shelf = self.crew.shelf
        output = self.crew.output
        have = await anyio.to_thread.run_sync(_still_there, live.files, output, shelf)
        live.files = list(have.values())
        places = stem_paths(
            self.crew.layout,
            job,
            remote.download_urls,
            ext=None if output.as_served else extension(output),
        )
        for stem in sorted(remote.download_urls):
            if stem in have:
                continue
            relative = places[stem]
            try:
                dest = await anyio.to_thread.run_sync(shelf.place, relative)
            except OSError as exc:
                where = exc.filename or shelf.at(relative.parent)
                message = f"cannot create {where}: {exc.strerror or exc}"
                raise JobFailed(ErrorRecord(type="OutputError", message=message)) from exc
            if output.as_served:
                remote, size = await self._download(live, remote, stem, dest)
                live.files = [*live.files, await self._keep(stem, dest, relative, size)]
                self._count(size)
                continue
            served = served_path(dest)
            remote, served_size = await self._download(live, remote, stem, served)
            try:
                size = await anyio.to_thread.run_sync(
                    encode, served, dest, output, limiter=self._encodes
                )
            except EncodeError as exc:
                raise JobFailed(ErrorRecord(type="EncodeError", message=str(exc))) from exc
            except OSError as exc:
                message = f"cannot write {dest}: {exc.strerror or exc}"
                raise JobFailed(ErrorRecord(type="OutputError", message=message)) from exc
            finally:
                served.unlink(missing_ok=True)
            file = await self._keep(stem, dest, relative, size)
            encoded = dataclasses.replace(file, served_size=served_size, encoding=output.label)
            live.files = [*live.files, encoded]
            self._count(size)
        live.files = sorted(live.files, key=lambda f: f.stem)
        try:  # the record that tells any later run, from any manifest, that this job is done
            await anyio.to_thread.run_sync(
                functools.partial(
                    self.crew.done.write,
                    content_key=live.key,
                    remote_id=live.remote_id,
                    files=live.files,
                )
            )
        except OSError as exc:
            where, why = self.crew.done.where, exc.strerror or exc
            message = f"cannot record the finished job in {where}: {why}"
            raise JobFailed(ErrorRecord(type="OutputError", message=message)) from exc
        await self.crew.save(live, JobState.DOWNLOADED)
        if self.crew.config.delete_remote and live.remote_id is not None:
            await self.crew.delete_remote(live)
        self.crew.finish(live, JobStatus.SUCCEEDED)

    def _count(self, size: int) -> None:
        self.crew.stems_written += 1
        self.crew.bytes_written += size

    async def _keep(
        self, stem: str, written: Path, relative: PurePosixPath, size: int
    ) -> OutputFile:
        """Keep a stem written to its place: its record, after the upload for a bucket."""
        keep = functools.partial(self.crew.shelf.keep, stem, written, relative, size)
        try:
            return await anyio.to_thread.run_sync(keep, limiter=self._uploads)
        except StorageError as exc:
            raise JobFailed(ErrorRecord(type="OutputError", message=str(exc))) from exc

    async def _download(
        self, live: LiveJob, remote: RemoteJob, stem: str, dest: Path
    ) -> tuple[RemoteJob, int]:
        """Download one stem; when its link has expired, fetch fresh links (a few times) and
        go on with them. Returns the job as last read, so later stems use the fresh links,
        and the stem's size."""
        crew = self.crew
        refreshes = 0
        # Fresh links are fetched while holding the download slot, so that they are used at
        # once instead of ageing in the queue of downloads again.
        async with self._downloads:
            while True:
                url = remote.download_urls.get(stem)
                if url is None:
                    message = f"AudioPod no longer lists a download link for stem {stem!r}"
                    raise JobFailed(ErrorRecord(type="DownloadLinkExpired", message=message))
                try:
                    fetch = functools.partial(
                        crew.api.download, url, dest, max_bytes=crew.config.max_stem_bytes
                    )
                    size = await crew.retrying(fetch, live)
                except DownloadLinkExpired as exc:
                    if refreshes >= crew.config.link_refreshes:
                        raise JobFailed(error_record(exc)) from exc
                    refreshes += 1
                    crew.retried(live, exc)
                    status = functools.partial(crew.api.status, remote.id)
                    remote = await crew.retrying(status, live)
                    continue
                except DownloadError as exc:
                    raise JobFailed(error_record(exc)) from exc
                return remote, size


def intact(record: JobRecord | None, shelf: Shelf) -> bool:
    """Whether a job's recorded stems are all still on ``shelf`` as written (blocking: may
    hash, or ask the store)."""
    return record is not None and bool(record.files) and all(map(shelf.matches, record.files))


def _still_there(
    files: Sequence[OutputFile], output: OutputSpec, shelf: Shelf
) -> dict[str, OutputFile]:
    """The recorded stems still there as written in the format ``output`` asks for, by stem
    (blocking: may hash, or ask the store)."""
    return {f.stem: f for f in files if _in_format(f, output) and shelf.matches(f)}


def in_format(files: Sequence[OutputFile], output: OutputSpec) -> bool:
    """Whether every recorded stem was written in the format ``output`` asks for."""
    return all(_in_format(f, output) for f in files)


def _in_format(file: OutputFile, output: OutputSpec) -> bool:
    return file.encoding == output.label


def stem_paths(
    layout: PathTemplate, job: Job, download_urls: Mapping[str, str], *, ext: str | None = None
) -> dict[str, PurePosixPath]:
    """Each stem's path inside the output folder, by ``layout``: safe, and unique even where
    case is not told apart (``Vocals`` and ``vocals``, or ``a/b`` and ``a_b``, get ``-2``
    and so on). The extension is ``ext``, else the one the stem's link names (``wav`` if
    none)."""
    paths: dict[str, PurePosixPath] = {}
    taken: set[str] = set()
    for stem in sorted(download_urls):
        base = safe_stem(stem)
        suffix = ext if ext is not None else _suffix(download_urls[stem])
        path, n = layout.render(job, base, suffix), 1
        while str(path).casefold() in taken:
            n += 1
            path = layout.render(job, f"{base}-{n}", suffix)
        taken.add(str(path).casefold())
        paths[stem] = path
    return paths


def _suffix(url: str) -> str:
    suffix = Path(urlsplit(url).path).suffix.lower()
    return suffix[1:] if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else "wav"
