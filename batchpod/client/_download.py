"""Downloading one stem from a presigned storage link into one file, atomically.

Owns the temporary file beside the target, the length checks, the fsync and the rename, and
the translation of storage answers, aiohttp failures and disk errors into ``DownloadError``.
It is handed a session that carries no API key and a target path the caller chose; it must not
know the API, job records or how targets are named.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import IO, Final

import aiohttp
import anyio
import anyio.to_thread
from yarl import URL

from batchpod.errors import DownloadError

from ._classify import download_failure, storage_error

MAX_STORAGE_ERROR_BYTES: Final = 16 * 1024  # an S3 XML error is a few hundred bytes
_TEMP_NAME_CHARS: Final = 200  # leaves room for ".part-..." within a 255-byte name


def temp_prefix(dest: Path) -> str:
    """How the name of a download's temporary file for ``dest`` begins (then a random
    tail), so that what a killed run left can be found and cleared."""
    return f".{dest.name[:_TEMP_NAME_CHARS]}.part-"


async def fetch_to_file(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    *,
    chunk_size: int,
    max_bytes: int | None,
) -> int:
    """Stream ``url`` into ``dest`` through a temporary file; the bytes written (see
    ``ApiClient.download``)."""
    target = _checked_url(url)
    where = f"{target.host}{target.path}"  # never the query: it holds the signature
    temp = dest.parent / f"{temp_prefix(dest)}{secrets.token_hex(6)}"
    handle: IO[bytes] | None = None
    done = False
    try:
        async with session.get(target) as resp:
            if resp.status != 200:
                body = await resp.content.read(MAX_STORAGE_ERROR_BYTES)
                raise storage_error(resp.status, body, where=where)
            # Content-Length counts the bytes on the wire; compare only unencoded bodies.
            encoded = resp.headers.get("Content-Encoding", "identity").lower() != "identity"
            expected = None if encoded else resp.content_length
            if max_bytes is not None and expected is not None and expected > max_bytes:
                raise DownloadError(
                    f"{where} is {expected} bytes, more than the {max_bytes} allowed"
                )
            # Creating a file is one quick syscall: cheaper on the loop than a thread hop.
            handle = _create_exclusive(temp)
            written = 0
            async for chunk in resp.content.iter_chunked(chunk_size):
                written += len(chunk)
                if max_bytes is not None and written > max_bytes:
                    raise DownloadError(f"{where} sent more than the {max_bytes} bytes allowed")
                handle.write(chunk)  # one chunk: short enough for the event loop
        await anyio.to_thread.run_sync(_flush_sync_close, handle)
        if expected is not None and written != expected:
            raise DownloadError(
                f"{where} announced {expected} bytes but sent {written}; retry", transient=True
            )
        temp.replace(dest)
        done = True
        return written
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise download_failure(exc, where=where) from exc
    except OSError as exc:  # the disk: full, read-only, a missing folder, a name too long
        raise DownloadError(
            f"cannot write {dest} ({exc.strerror or exc}); check the output folder and free space"
        ) from exc
    finally:
        if handle is not None and not handle.closed:
            with contextlib.suppress(OSError):
                handle.close()
        if not done:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)


def _flush_sync_close(handle: IO[bytes]) -> None:
    """Make the bytes durable before the rename publishes them (one thread hop for all three)."""
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def _create_exclusive(path: Path) -> IO[bytes]:
    """A new file at ``path``; fails if anything (a file, a symlink) is already there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    return os.fdopen(os.open(path, flags, 0o666), "wb")


def _checked_url(url: str) -> URL:
    """A stem link, refused (not transient) unless it is an absolute http(s) URL."""
    try:
        target = URL(url, encoded=True)
    except (TypeError, ValueError) as exc:
        raise DownloadError("the download link is not a URL") from exc
    if target.scheme not in ("https", "http") or not target.host:
        raise DownloadError(f"the download link is not an http(s) URL ({target.scheme!r})")
    return target
