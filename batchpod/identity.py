"""What makes two jobs one: URL normalisation, readable slugs, file hashes and content keys.

The manifest (duplicate jobs, default names), the state (which row is which job), shards
(which shard owns a job) and reconciliation (does a remote row name this URL) all ask these
questions; this module is where they are answered, once. It knows nothing of YAML, SQLite
or HTTP::

    normalize_url(url) -> str            lower-case scheme and host, no default port or #fragment
    url_parts(url) -> (host, path, query)
    is_simple_url(text) -> bool          http(s)://host/path?query with nothing unusual in it
    source_key(source) -> str            "url:<normalised>" or "file:<path>", for duplicates
    slug_for(source) -> str              a readable folder name: 'Night Drive.mp3' -> 'night-drive'
    file_sha256(path) -> str             a file's content hash (blocking, 1 MiB reads)
    content_key(job, file_hash=) -> str  source, mode and stem, hashed: the job's identity
    async content_keys(jobs, cache=)     every job's content key, files hashed off the loop
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import parse_qs, urlsplit, urlunsplit

import anyio

from batchpod.errors import SourceFileError
from batchpod.models import Job, Source

_HASH_CHUNK: Final = 1 << 20
# The common URL shape (lower-case scheme and host, no port, user or fragment), for which
# `urlsplit` is sure to find: this scheme, this host, this path and this query. Taking a URL
# of this shape apart with the pattern alone saves most of the time spent on a large manifest
# (a property test checks that both ways agree).
_SIMPLE_URL: Final = re.compile(r"(https?)://([a-z0-9.-]+)(/[^?#\s]*)?(?:\?([^#\s]*))?")
_NOT_SLUG: Final = re.compile(r"[^A-Za-z0-9]+")


def is_simple_url(text: str) -> bool:
    """Whether ``text`` is an http(s) URL of the common shape that needs no urlsplit."""
    return _SIMPLE_URL.fullmatch(text) is not None


def normalize_url(url: str) -> str:
    """The URL in a canonical form, so that trivially different spellings compare equal.

    Scheme and host are lower-cased, a default port and the fragment are dropped; the path and
    query are kept as written (servers may treat their case as significant).
    """
    url = url.strip()
    simple = _SIMPLE_URL.fullmatch(url)
    if simple is not None:
        scheme, host, path, query = simple.groups()
        return f"{scheme}://{host}{path or '/'}{'?' + query if query else ''}"
    return normalize_url_split(url)


def url_parts(url: str) -> tuple[str, str, str]:
    """The URL's host (lower case), path and query."""
    simple = _SIMPLE_URL.fullmatch(url)
    if simple is not None:
        return simple.group(2), simple.group(3) or "", simple.group(4) or ""
    return url_parts_split(url)


def url_parts_split(url: str) -> tuple[str, str, str]:
    """``url_parts`` the long way, through ``urlsplit``: for every shape of URL."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.path, parts.query


def normalize_url_split(url: str) -> str:
    """``normalize_url`` the long way, through ``urlsplit``: for every shape of URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    port = parts.port
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}" if userinfo else host
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def source_key(source: Source) -> str:
    """The source as the manifest compares sources: a normalised URL, or a resolved path
    (case-folded where the file system folds case)."""
    if source.url is not None:
        return "url:" + normalize_url(source.url)
    return "file:" + os.path.normcase(str(source.file))


def slug_for(source: Source) -> str:
    """A readable folder name for a source: the song's file or URL name, as ASCII."""
    if source.file is not None:
        base = source.file.stem
    else:
        assert source.url is not None
        host, path, query = url_parts(source.url)
        video = parse_qs(query).get("v") if "v=" in query else None  # YouTube
        segments = [s for s in path.split("/") if s]
        if video:
            base = video[0]
        elif segments:
            base = segments[-1].rsplit(".", 1)[0] or segments[-1]
        else:
            base = host
    if not base.isascii():
        base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    text = _NOT_SLUG.sub("-", base).strip("-").lower()
    return text[:60].strip("-") or "song"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's content, read in 1 MiB chunks (blocking)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_key(job: Job, *, file_hash: str | None = None) -> str:
    """The job's content-addressed key: source, mode and stem, hashed.

    A URL source is taken in its normalised form; a file source by its content hash, which
    the caller passes (hashing may be slow, so it is done off the event loop). Reordering,
    renaming or adding jobs in a manifest does not change the key of a job.
    """
    if job.source.url is not None:
        source = "url:" + normalize_url(job.source.url)
    else:
        if file_hash is None:
            raise ValueError("a file job's key needs the file's content hash")
        source = "sha256:" + file_hash
    canonical = json.dumps(
        {"source": source, "mode": job.mode.value, "stem": job.stem.value if job.stem else None},
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class HashCache(Protocol):
    """Where file hashes are kept between runs (the state file), by path, size and mtime."""

    def cached_hash(self, path: Path, size: int, mtime_ns: int) -> str | None: ...

    def remember_hash(self, path: Path, size: int, mtime_ns: int, sha256: str) -> None: ...


async def content_keys(
    jobs: Sequence[Job], cache: HashCache | None = None, *, remember: bool = True
) -> list[str]:
    """Every job's content key; local files are hashed off the event loop, once each.

    With a ``cache`` (the state file), a file's hash is kept with its size and modification
    time, so a re-run hashes only files that changed; ``remember=False`` reads the cache
    without adding to it (for read-only commands).
    """

    def hash_files() -> dict[Path, str]:
        hashes: dict[Path, str] = {}
        for job in jobs:
            path = job.source.file
            if path is None or path in hashes:
                continue
            try:
                info = path.stat()
                found = None
                if cache is not None:
                    found = cache.cached_hash(path, info.st_size, info.st_mtime_ns)
                if found is None:
                    found = file_sha256(path)
                    if cache is not None and remember:
                        cache.remember_hash(path, info.st_size, info.st_mtime_ns, found)
            except OSError as exc:
                raise SourceFileError(path=path, reason=exc.strerror or str(exc)) from exc
            hashes[path] = found
        return hashes

    hashes = await anyio.to_thread.run_sync(hash_files)
    return [
        content_key(job, file_hash=hashes[job.source.file] if job.source.file else None)
        for job in jobs
    ]
