"""Stems in a bucket: S3 (and S3-compatible stores), Google Cloud Storage, Azure Blob Storage,
through ``obstore`` (the Rust ``object_store`` crate, one wheel for all three clouds).

A stem is written to a local staging folder (downloaded, encoded if asked), then uploaded:
in one PUT when it is smaller than a part, else as a multipart upload whose parts go up while
the file is read and which is completed only once every part is sent; a failure aborts it.
Either way the object appears whole or not at all, since a store makes an object visible
only when the PUT or the completion succeeds. Its size is then read back (HEAD) and compared
with the file's. Each request is retried by ``object_store`` on 5xx answers, dropped
connections and timeouts, within the run's retry policy (attempts, total time, backoff).

Credentials come from each cloud's usual environment, read by ``object_store`` itself:
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_REGION``, web
identity (EKS) and instance metadata for S3; ``GOOGLE_APPLICATION_CREDENTIALS`` or the metadata
server for GCS; ``AZURE_STORAGE_ACCOUNT_NAME`` with a key, SAS or workload identity for Azure.
batchpod never reads, prints or records them, and sends nothing of AudioPod's (its key, its
signed links) to a store.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import re
import secrets
import shutil
import tempfile
import threading
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import BaseError as ObstoreError

from batchpod.errors import ConfigError, OutputError
from batchpod.identity import file_sha256
from batchpod.models import Location, ObjectUrl, OutputFile
from batchpod.retry import RetryPolicy

from ._local import clear_temporaries
from ._naming import RECORDS

if TYPE_CHECKING:
    from obstore.store import ObjectStore

#: The size of a multipart upload's parts, unless the run says otherwise: S3 takes parts of
#: 5 MiB to 5 GiB (the last may be smaller) and at most 10,000 of them, so 8 MiB carries
#: stems up to 78 GiB; a four-minute stereo stem of 40 MiB goes up in five.
DEFAULT_PART_BYTES: Final = 8 * 1024 * 1024
# What a run may set: S3 refuses parts under 5 MiB (but the last), S3-compatible servers may
# take smaller ones; 5 GiB is the largest part any of them takes.
MIN_PART_BYTES: Final = 64 * 1024
MAX_PART_BYTES: Final = 5 * 1024**3
_READ_BLOCK: Final = 1024 * 1024
_PARTS_AT_ONCE: Final = 4  # parts of one upload in flight at once
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})


class StorageError(Exception):
    """A store refused or failed a request, after its retries: one line, never a secret."""


def check_endpoint(text: str) -> str:
    """An S3-compatible endpoint URL as given, or ValueError saying why not: https to any
    host, plain http only to this machine (loopback), no credentials, query or fragment."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    del port  # read only to check it
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("give an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials do not go in the URL: use the AWS_* environment")
    if parts.query or parts.fragment:
        raise ValueError("an endpoint takes no query or fragment")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError("plain http only to this machine (loopback): use https")
    return text.rstrip("/")


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def retry_config(policy: RetryPolicy) -> dict[str, Any]:
    """The run's retry policy in ``object_store``'s terms."""
    return {
        "max_retries": policy.max_attempts - 1,
        "retry_timeout": timedelta(seconds=policy.max_total_s),
        "backoff": {
            "init_backoff": timedelta(seconds=max(policy.base_s, 0.01)),
            "max_backoff": timedelta(seconds=max(policy.max_backoff_s, 0.01)),
            "base": 2,
        },
    }


#: The variables the AWS SDKs (and object_store) read an S3 endpoint from, in their order.
ENDPOINT_VARIABLES: Final = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")


def s3_endpoint(endpoint: str | None) -> str | None:
    """The S3 endpoint to use: ``endpoint``, else the first of ``ENDPOINT_VARIABLES`` set,
    checked as ``--output-endpoint`` is (ConfigError naming the variable). object_store
    would read those variables itself; reading them here first keeps plain http to
    loopback only, whichever way the address comes."""
    if endpoint is not None:
        return endpoint
    for variable in ENDPOINT_VARIABLES:
        if text := os.environ.get(variable):
            try:
                return check_endpoint(text)
            except ValueError as exc:
                raise ConfigError(f"${variable}: {exc}") from None
    return None


def open_store(root: ObjectUrl, *, endpoint: str | None, retry: RetryPolicy) -> ObjectStore:
    """The ``obstore`` store of ``root``'s bucket (its keys are whole, prefix included).
    ConfigError for an endpoint given with gs:// or az://; OutputError if the store's
    settings are refused (an Azure account not set, say)."""
    from obstore.store import AzureStore, GCSStore, S3Store

    if endpoint is not None and root.scheme != "s3":
        raise ConfigError("--output-endpoint is for s3:// (S3-compatible stores) only")
    options: dict[str, Any] = {"allow_http": False}
    retries = retry_config(retry)
    try:
        if root.scheme == "s3":
            endpoint = s3_endpoint(endpoint)
            config: dict[str, Any] = {}
            if endpoint is not None:
                # Set here, explicitly, so that plain http is allowed only where
                # check_endpoint let it (to loopback), whatever the environment says.
                options["allow_http"] = urlsplit(endpoint).scheme == "http"
                config = {"endpoint": endpoint, "virtual_hosted_style_request": False}
            return S3Store(
                root.bucket,
                config=config,  # type: ignore[arg-type]
                client_options=options,  # type: ignore[arg-type]
                retry_config=retries,  # type: ignore[arg-type]
            )
        if root.scheme == "gs":
            return GCSStore(
                root.bucket,
                client_options=options,  # type: ignore[arg-type]
                retry_config=retries,  # type: ignore[arg-type]
            )
        return AzureStore(
            root.bucket,
            client_options=options,  # type: ignore[arg-type]
            retry_config=retries,  # type: ignore[arg-type]
        )
    except (ObstoreError, ValueError) as exc:
        raise OutputError(path=str(root), reason=_one_line(exc)) from None


class ObjectShelf:
    """A bucket and prefix (see the module docstring)."""

    def __init__(
        self,
        root: ObjectUrl,
        *,
        endpoint: str | None = None,
        retry: RetryPolicy | None = None,
        part_bytes: int = DEFAULT_PART_BYTES,
    ) -> None:
        self.root: ObjectUrl = root
        self.part_bytes = part_bytes
        self._store = open_store(root, endpoint=endpoint, retry=retry or RetryPolicy())
        self._staging: Path | None = None
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return str(self.root)

    def at(self, relative: PurePosixPath) -> ObjectUrl:
        return self.root.joinpath(*relative.parts)

    def relative(self, where: Location) -> PurePosixPath:
        if not isinstance(where, ObjectUrl):
            raise ValueError(f"{where} is not in {self.root}")
        return where.relative_to(self.root)

    def check(self) -> None:
        """That stems can be kept here, and what is kept read back: a small object is
        written, read, listed with the done records and deleted again. A store that lets a
        run write but not list or read would hide what earlier runs stored, and the run
        would pay for it again."""
        probe = self._key(RECORDS.parent / f"probe-{secrets.token_hex(8)}")
        try:
            obstore.put(self._store, probe, b"batchpod")
            obstore.get(self._store, probe).bytes()
            obstore.list(self._store, prefix=self._key(RECORDS) + "/").collect()
            obstore.delete(self._store, probe)
        except (ObstoreError, OSError) as exc:
            raise OutputError(path=str(self.root), reason=_one_line(exc)) from None

    def place(self, relative: PurePosixPath) -> Path:
        """Where the stem at ``relative`` is written before it is uploaded: in this run's
        staging folder (in the system's temporary folder, ``TMPDIR``)."""
        with self._lock:  # places are asked for from several worker threads at once
            if self._staging is None:
                self._staging = Path(tempfile.mkdtemp(prefix="batchpod-stems-"))
            staging = self._staging
        dest = staging.joinpath(*relative.parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        clear_temporaries(dest)
        return dest

    def keep(self, stem: str, written: Path, relative: PurePosixPath, size: int) -> OutputFile:
        """Upload a staged stem to its object, check the object's size, and remove the staged
        file (blocking). StorageError if the store fails it; nothing partial is left
        visible."""
        digest = file_sha256(written)
        key = self._key(relative)
        try:
            # The writer aborts the multipart upload when the block raises, and completes
            # it when the block ends: until then the object is not there at all.
            with (
                obstore.open_writer(
                    self._store, key, buffer_size=self.part_bytes, max_concurrency=_PARTS_AT_ONCE
                ) as out,
                written.open("rb") as source,
            ):
                while block := source.read(_READ_BLOCK):
                    out.write(block)
            stored = obstore.head(self._store, key)
        except (ObstoreError, OSError) as exc:
            raise StorageError(f"cannot store {self.at(relative)}: {_one_line(exc)}") from None
        if stored["size"] != size:
            self._forget(key)
            raise StorageError(
                f"{self.at(relative)} holds {stored['size']} bytes after its upload, not {size}"
            )
        written.unlink(missing_ok=True)
        return OutputFile(
            stem=stem, path=self.at(relative), size=size, sha256=digest, etag=stored["e_tag"]
        )

    def matches(self, file: OutputFile) -> bool:
        """Whether a stored stem is still there, under this prefix, as it was stored: the
        same size, and the same ETag or else (an object copied or uploaded again in other
        parts) the same SHA-256, read back. OutputError when the store cannot say: that is
        not "gone", and must not make a run fetch or pay for the job again."""
        where = file.path
        if not isinstance(where, ObjectUrl):
            return False
        try:
            where.relative_to(self.root)
        except ValueError:
            return False  # kept elsewhere than this run's output
        try:
            stored = obstore.head(self._store, where.key)
            if stored["size"] != file.size:
                return False
            if file.etag is not None and stored["e_tag"] == file.etag:
                return True
            if file.sha256 is None:
                return True  # nothing more to compare
            digest = hashlib.sha256()
            for chunk in obstore.get(self._store, where.key).stream(min_chunk_size=_READ_BLOCK):
                digest.update(chunk)
            return digest.hexdigest() == file.sha256
        except FileNotFoundError:
            return False
        except (ObstoreError, OSError) as exc:
            raise OutputError(path=str(where), reason=_one_line(exc)) from None

    # The done records, below the prefix's .batchpod/done/.
    def record_keys(self) -> set[str]:
        """The content keys with a record. OutputError if the store will not list them (a
        run that took that for "none" would pay again for every song stored)."""
        try:
            listed = obstore.list(self._store, prefix=self._key(RECORDS) + "/").collect()
        except (ObstoreError, OSError) as exc:
            raise OutputError(path=self.records_where, reason=_one_line(exc)) from None
        names = (PurePosixPath(item["path"]).name for item in listed)
        return {n.removesuffix(".json") for n in names if n.endswith(".json")}

    def read_record(self, name: str) -> bytes | None:
        """A record's bytes; None if there is none, OutputError if the store will not say."""
        key = self._key(RECORDS / f"{name}.json")
        try:
            return bytes(obstore.get(self._store, key).bytes())
        except FileNotFoundError:
            return None
        except (ObstoreError, OSError) as exc:
            raise OutputError(path=str(self.at(RECORDS)), reason=_one_line(exc)) from None

    def write_record(self, name: str, data: bytes) -> None:
        """Write a record in one PUT, which a store applies whole or not at all (blocking);
        OSError if the store fails it."""
        try:
            obstore.put(self._store, self._key(RECORDS / f"{name}.json"), data)
        except (ObstoreError, OSError) as exc:
            raise OSError(_one_line(exc)) from None

    @property
    def records_where(self) -> str:
        return str(self.at(RECORDS))

    def close(self) -> None:
        """Remove the staging folder and whatever a failed stem left in it."""
        with self._lock:
            staging, self._staging = self._staging, None
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)

    def _key(self, relative: PurePosixPath) -> str:
        """The whole key of the object at ``relative`` below the prefix."""
        return self.at(relative).key

    def _forget(self, key: str) -> None:
        # The record never names it, and the next upload of the stem replaces it.
        with contextlib.suppress(ObstoreError, OSError):
            obstore.delete(self._store, key)


_STATUS = re.compile(r"status code: (\d{3}[^:<]*)")
_S3_CODE = re.compile(r"<Code>([A-Za-z0-9]+)</Code>")
_RETRIES = re.compile(r"after (\d+) retr")


def _one_line(exc: BaseException) -> str:
    """A store's error as one short line. object_store's messages carry the whole request and
    the store's XML answer, over several lines; what a user needs is the status, the store's
    own error code (NoSuchBucket, AccessDenied, ...) and how often it was tried."""
    text = str(exc).strip()
    status = _STATUS.search(text)
    if status is not None:
        said = f"the store answered {status.group(1).strip()}"
        if (code := _S3_CODE.search(text)) is not None:
            said += f" ({code.group(1)})"
        if (retries := _RETRIES.search(text)) is not None and retries.group(1) != "0":
            said += f", after {retries.group(1)} retries"
        return said
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."
