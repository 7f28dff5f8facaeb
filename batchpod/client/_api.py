"""``ApiClient``: one method per AudioPod call a run needs, over one ``Transport``.

Each method builds its request (path, form, query, JSON body), hands it to the transport, and
reads the answer into a value object of ``_models`` or ``_key_models``, naming the request in
any ``InvalidResponse``. The sessions, the key, pacing, counts and the translation of failures
belong to ``_transport``; the client adds none of its own.

It must not know terminals, the manifest, retry policy or any file but the one it uploads or
the download target it is given: the runner owns retries, paths and what a failure means.
"""

from __future__ import annotations

import math
import mimetypes
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, TypeVar
from urllib.parse import quote

import aiohttp
import anyio.to_thread

from batchpod.audio import UPLOAD_EXTENSIONS, audio_kind
from batchpod.errors import InvalidResponse, UploadFileError

from ._classify import Call
from ._key_models import ApiKeyInfo, CreatedApiKey, RevokedApiKey, api_keys_of
from ._models import (
    DEFAULT_KEY_SOURCE,
    SERVICE_TYPE,
    Balance,
    ClientTimeouts,
    RemoteJob,
    UsageRow,
    estimate_cents_of,
    price_per_minute_cents_of,
    usage_rows_of,
)
from ._transport import RequestCounts, Transport

STEMS: Final = "/api/v1/stem-extraction"
WALLET: Final = "/api/v1/api-wallet"
AUTH: Final = "/api/v1/auth"
DEFAULT_TIMEOUTS: Final = ClientTimeouts()

T = TypeVar("T")


class ApiClient:
    """The AudioPod API for one run: ``async with ApiClient(...) as api: await api.status(id)``.

    No method retries: each makes one request and returns its result or raises one
    ``ApiError`` subclass (see ``batchpod.errors``). Safe to share between tasks of one event
    loop (not between threads). With ``max_rps``, API requests (not stem downloads) leave at
    most that many per second, evenly spaced; ``counts`` tells what was sent.

    ``key_source`` says where ``api_key`` came from ("AUDIOPOD_API_KEY", "key file PATH"):
    messages about a refused key name it, never the key.

    **Key rotation.** With ``fallback_key``, the first API request AudioPod refuses as an auth
    failure (401, or a 403 saying the key is revoked or expired; not a plan's 403) switches
    the client to the fallback for good, calls ``on_key_switch(old_source, new_source)`` once,
    and sends that request again with the new key. Requests that were already out with the old
    key and come back refused are sent again with the new key too, without a second switch.
    A request the fallback key sent that is refused raises as usual: there is no third key.
    ``key_source`` is the key in use; ``switched_to`` the fallback's source once switched.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        key_source: str = DEFAULT_KEY_SOURCE,
        fallback_key: str | None = None,
        fallback_source: str | None = None,
        on_key_switch: Callable[[str, str], None] | None = None,
        max_connections: int = 100,
        timeouts: ClientTimeouts = DEFAULT_TIMEOUTS,
        user_agent: str | None = None,
        clock: Callable[[], float] = time.time,
        max_rps: float | None = None,
        submit_guard: Callable[[], None] | None = None,
    ) -> None:
        self._transport = Transport(
            base_url=base_url,
            api_key=api_key,
            key_source=key_source,
            fallback_key=fallback_key,
            fallback_source=fallback_source,
            on_key_switch=on_key_switch,
            max_connections=max_connections,
            timeouts=timeouts,
            user_agent=user_agent,
            clock=clock,
            max_rps=max_rps,
            submit_guard=submit_guard,
        )

    @property
    def base_url(self) -> str:
        """The API's scheme, host, port and any path prefix, without a trailing slash."""
        return self._transport.base_url

    @property
    def key_source(self) -> str:
        """Where the key in use came from: ``key_source``, or the fallback's once switched."""
        return self._transport.keys.source

    @property
    def switched_to(self) -> str | None:
        """The fallback key's source once the client has switched to it, else ``None``."""
        return self._transport.keys.switched_to

    @property
    def counts(self) -> RequestCounts:
        """What this client has sent so far (updated in place as requests go out)."""
        return self._transport.counts

    def __repr__(self) -> str:
        return f"ApiClient(base_url={self.base_url!r}, key_source={self.key_source!r})"

    async def __aenter__(self) -> ApiClient:
        await self._transport.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._transport.close()

    # -- stem jobs ---------------------------------------------------------------------------

    async def submit_url(self, url: str, *, mode: str, stem: str | None) -> RemoteJob:
        """Submit a URL job (urlencoded form, §3.1); the new job, usually PENDING."""
        fields = {"mode": str(mode), "url": url}
        if stem is not None:
            fields["stem"] = str(stem)
        call = self._transport.call("POST", f"{STEMS}/api/extract", submit=True)
        return _job(call, await self._transport.request(call, data=fields))

    async def submit_file(self, path: Path, *, mode: str, stem: str | None) -> RemoteJob:
        """Submit a local file as a streamed multipart upload (field ``file``, §3.1)."""
        opened: list[IO[bytes]] = []

        async def form() -> aiohttp.FormData:
            # aiohttp closes the file once it has sent it: a re-send after a key switch opens
            # it again and builds a new form.
            try:
                handle, content_type, name = await anyio.to_thread.run_sync(_open_upload, path)
            except OSError as exc:
                raise UploadFileError(
                    f"cannot read {path} to upload it ({exc.strerror or exc}); check that the "
                    "file exists and is readable"
                ) from exc
            opened.append(handle)
            # Raw UTF-8 names, as browsers and the SDK send them; aiohttp's default would send
            # "my%20song.wav", which a FastAPI server keeps as the name.
            data = aiohttp.FormData(quote_fields=False)
            data.add_field("mode", str(mode))
            if stem is not None:
                data.add_field("stem", str(stem))
            # A file object makes aiohttp stream the part in chunks: never read whole.
            data.add_field("file", handle, filename=name, content_type=content_type)
            return data

        t = self._transport.timeouts
        timeout = aiohttp.ClientTimeout(sock_connect=t.connect_s, sock_read=t.upload_read_s)
        call = self._transport.call("POST", f"{STEMS}/api/extract", submit=True)
        try:
            body = await self._transport.request(call, form=form, client_timeout=timeout)
        finally:
            for handle in opened:  # those aiohttp did not get to send (and close)
                handle.close()
        return _job(call, body)

    async def status(self, job_id: str) -> RemoteJob:
        """The job's current state (§3.2); download URLs are fresh on each call."""
        call = self._transport.call("GET", f"{STEMS}/status/{_segment(job_id)}", job_id=job_id)
        return _job(call, await self._transport.request(call))

    async def list_jobs(self, *, skip: int = 0, limit: int = 50) -> list[RemoteJob]:
        """A page of this key's jobs, newest first (§3.3)."""
        if skip < 0 or limit < 1:
            raise ValueError(f"need skip >= 0 and limit >= 1, got skip={skip}, limit={limit}")
        call = self._transport.call("GET", f"{STEMS}/jobs")
        body = await self._transport.request(call, params={"skip": str(skip), "limit": str(limit)})
        items = body.get("jobs") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise InvalidResponse(f"{call} should answer with a JSON array of jobs")
        return [_job(call, item) for item in items]

    async def delete_job(self, job_id: str) -> None:
        """Delete a job and its results (§3.3): 204, or JobNotFound."""
        call = self._transport.call("DELETE", f"{STEMS}/jobs/{_segment(job_id)}", job_id=job_id)
        await self._transport.request(call)

    # -- wallet ------------------------------------------------------------------------------

    async def balance(self) -> Balance:
        """The API wallet (§6.1); also the cheapest check that the key works."""
        call = self._transport.call("GET", f"{WALLET}/balance")
        return _parsed(call, Balance.from_json, await self._transport.request(call))

    async def usage(self, *, page: int = 1, limit: int = 50) -> list[UsageRow]:
        """A page of the wallet's usage log, newest first (§6.4): one row per kept charge."""
        if page < 1 or limit < 1:
            raise ValueError(f"need page >= 1 and limit >= 1, got page={page}, limit={limit}")
        call = self._transport.call("GET", f"{WALLET}/usage")
        body = await self._transport.request(call, params={"page": str(page), "limit": str(limit)})
        return _parsed(call, usage_rows_of, body)

    async def estimate_cents(self, duration_s: float) -> int:
        """What AudioPod says ``duration_s`` seconds of stem extraction cost (§6.2)."""
        if not (math.isfinite(duration_s) and duration_s >= 0):
            raise ValueError(f"duration_s must be a finite number >= 0, got {duration_s!r}")
        seconds: float | int = int(duration_s) if float(duration_s).is_integer() else duration_s
        call = self._transport.call("POST", f"{WALLET}/estimate")
        body = await self._transport.request(
            call, json_body={"service_type": SERVICE_TYPE, "duration_seconds": seconds}
        )
        return _parsed(call, estimate_cents_of, body)

    async def price_per_minute_cents(self) -> int:
        """Stem extraction's price per input minute from the price table (§6.5)."""
        call = self._transport.call("GET", f"{WALLET}/pricing")
        return _parsed(call, price_per_minute_cents_of, await self._transport.request(call))

    # -- API keys (§8) -------------------------------------------------------------------------

    async def list_api_keys(self) -> list[ApiKeyInfo]:
        """The account's API keys, revoked and expired ones included: metadata, never values."""
        call = self._transport.call("GET", f"{AUTH}/api-keys")
        body = await self._transport.request(call)
        now = datetime.fromtimestamp(self._transport.clock(), tz=UTC)
        return _parsed(call, lambda data: api_keys_of(data, now=now), body)

    async def create_api_key(
        self, name: str, *, scopes: Sequence[str] = ("*",), expires_in_days: int | None = None
    ) -> CreatedApiKey:
        """Make a new key of the same account (same wallet and jobs); it works at once.

        The answer is the only time AudioPod shows the key's value: it is in
        ``CreatedApiKey.key`` and nowhere else. Not idempotent: if this raises an error with
        ``outcome_unknown``, a key may exist; ``list_api_keys`` shows it.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError("an API key needs a non-empty name")
        if isinstance(scopes, str) or not all(isinstance(x, str) for x in scopes):
            raise ValueError("scopes must be a sequence of strings, such as ('*',)")
        if expires_in_days is not None and (
            isinstance(expires_in_days, bool)
            or not isinstance(expires_in_days, int)
            or expires_in_days < 1
        ):
            raise ValueError(f"expires_in_days must be a whole number >= 1: {expires_in_days!r}")
        call = self._transport.call("POST", f"{AUTH}/api-keys")
        payload = {"name": name, "scopes": list(scopes), "expires_in_days": expires_in_days}
        body = await self._transport.request(call, json_body=payload)
        if isinstance(body, dict) and isinstance(value := body.get("api_key"), str) and value:
            # Masked from here on, even if the answer is unusable.
            self._transport.keys.remember(value)
        return _parsed(call, CreatedApiKey.from_json, body)

    async def revoke_api_key(self, key_id: str) -> RevokedApiKey:
        """Revoke one of the account's keys (this client's own included: its next request is
        then refused). Revoking a revoked key again is harmless; an unknown id raises
        ``ApiKeyNotFound``."""
        call = self._transport.call("DELETE", f"{AUTH}/api-keys/{_segment(key_id)}", key_id=key_id)
        body = await self._transport.request(call)
        return RevokedApiKey.from_json(body, key_id=key_id)

    # -- downloads ---------------------------------------------------------------------------

    async def download(
        self,
        url: str,
        dest: Path,
        *,
        chunk_size: int = 256 * 1024,
        max_bytes: int | None = None,
    ) -> int:
        """Fetch a presigned stem URL into ``dest`` atomically; return the bytes written.

        Streams to ``.<name>.part-<random>`` beside ``dest`` (created exclusively, so a planted
        file or symlink is never written through), fsyncs it, checks the length against
        Content-Length and ``max_bytes``, then renames it onto ``dest``. On any failure the
        temporary file is removed and ``dest`` is untouched. 403/404 from storage raise
        ``DownloadLinkExpired``; everything else a ``DownloadError``. Sent with the key-less
        session: the key never goes to storage.
        """
        return await self._transport.download(url, dest, chunk_size=chunk_size, max_bytes=max_bytes)


# -- helpers -----------------------------------------------------------------------------------


def _job(call: Call, data: Any) -> RemoteJob:
    return _parsed(call, RemoteJob.from_json, data)


def _parsed(call: Call, parse: Callable[[Any], T], data: Any) -> T:
    """``parse(data)``, with the request named in any InvalidResponse."""
    try:
        return parse(data)
    except InvalidResponse as exc:
        raise InvalidResponse(f"{call}: {exc.message}", body_snippet=exc.body_snippet) from exc


def _open_upload(path: Path) -> tuple[IO[bytes], str, str]:
    """The file to upload, opened, its MIME type and the name to send (runs in a worker
    thread)."""
    name = _upload_name(path)
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return path.open("rb"), content_type, name


def _upload_name(path: Path) -> str:
    """The file name to send: the basename, with control characters (which would break the
    part's headers) replaced. AudioPod tells a file's format by its name's extension, so a
    file whose extension names no audio format ("take 3.txt", "master" with none) but whose
    content is audio is sent as what its content is ("take 3.txt.wav")."""
    name = "".join("_" if ord(c) < 32 or ord(c) == 127 else c for c in path.name) or "upload"
    if path.suffix.lower().lstrip(".") not in UPLOAD_EXTENSIONS:
        kind = audio_kind(path)
        if kind is not None:
            name = f"{name}.{kind}"
    return name


def _segment(job_id: str) -> str:
    """A job id as one URL path segment."""
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"a job id must be a non-empty string, got {job_id!r}")
    return quote(job_id, safe="")
