"""``ApiClient``: the run's two aiohttp sessions and one method per AudioPod call it needs.

One session talks to the API and carries the key (``X-API-Key`` only, never ``Authorization``,
never across a redirect: API redirects are not followed). A second session fetches stems from
the presigned storage links and carries no key at all. Every aiohttp exception and error status
of the API is translated in ``_send``; those of storage in ``_download.fetch_to_file``.
``_request`` owns key rotation: one switch to a fallback key when AudioPod refuses the first.

It must not know terminals, the manifest, retry policy or any file but the one it uploads or
the download target it is given: the runner owns retries, paths and what a failure means.
"""

from __future__ import annotations

import ipaddress
import math
import mimetypes
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, TypeVar
from urllib.parse import quote

import aiohttp
import anyio
import anyio.to_thread
from yarl import URL

from batchpod._version import __version__
from batchpod.errors import AuthenticationError, ConfigError, InvalidResponse, UploadFileError
from batchpod.flow import Pacer

from ._classify import Call, decode_json, error_for_exception, error_for_status
from ._download import fetch_to_file
from ._models import (
    DEFAULT_KEY_SOURCE,
    SERVICE_TYPE,
    ApiKeyInfo,
    Balance,
    ClientTimeouts,
    CreatedApiKey,
    RemoteJob,
    RevokedApiKey,
    UsageRow,
    api_keys_of,
    estimate_cents_of,
    is_key_shaped,
    price_per_minute_cents_of,
    usage_rows_of,
)

STEMS: Final = "/api/v1/stem-extraction"
WALLET: Final = "/api/v1/api-wallet"
AUTH: Final = "/api/v1/auth"
DEFAULT_FALLBACK_SOURCE: Final = "the fallback key"
MAX_JSON_BYTES: Final = 10 * 1024 * 1024  # a page of 100 jobs is ~100 KB; more is hostile
MAX_ERROR_BYTES: Final = 64 * 1024  # enough for any error detail; the rest is not read
DEFAULT_TIMEOUTS: Final = ClientTimeouts()
_READ_CHUNK: Final = 64 * 1024

T = TypeVar("T")


@dataclass(slots=True)
class RequestCounts:
    """What one client sent: API requests (stem downloads apart) and the 429s they met."""

    requests: int = 0
    throttled: int = 0  # answered 429
    downloads: int = 0  # stem download requests to the storage host


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
    ) -> None:
        self._base = _checked_base_url(base_url)
        if not isinstance(key_source, str) or not key_source.strip():
            raise ConfigError("key_source must name where the key came from")
        _check_key(api_key, source=key_source)
        if fallback_key is None and fallback_source is not None:
            raise ConfigError(f"{fallback_source} is named as the fallback, but no key was given")
        fallback_source = fallback_source or DEFAULT_FALLBACK_SOURCE
        if fallback_key is not None:
            _check_key(fallback_key, source=fallback_source)
            if fallback_key == api_key:
                raise ConfigError(
                    f"the fallback key ({fallback_source}) is the same key as {key_source}: "
                    "give a different key, or none"
                )
        if max_connections < 1:
            raise ConfigError(f"max_connections must be at least 1, got {max_connections}")
        self._key = api_key
        self._source = key_source
        self._fallback = fallback_key
        self._fallback_source = fallback_source
        self._on_key_switch = on_key_switch
        # Bumped when the fallback takes over; each request notes the generation of the key it
        # carried, so a refusal of an already-replaced key re-sends instead of switching again.
        self._generation = 0
        self._switched_to: str | None = None
        # Every key this client has held or made: masked in any server text that echoes one.
        self._secrets: list[str] = [k for k in (api_key, fallback_key) if k is not None]
        self._max_connections = max_connections
        self._timeouts = timeouts
        self._user_agent = user_agent or f"batchpod/{__version__}"
        self._clock = clock  # Unix seconds, for Retry-After dates
        self._api: aiohttp.ClientSession | None = None
        self._storage: aiohttp.ClientSession | None = None
        self._pacer = Pacer(max_rps) if max_rps is not None else None
        self.counts = RequestCounts()

    @property
    def base_url(self) -> str:
        """The API's scheme, host, port and any path prefix, without a trailing slash."""
        return str(self._base)

    @property
    def key_source(self) -> str:
        """Where the key in use came from: ``key_source``, or the fallback's once switched."""
        return self._source

    @property
    def switched_to(self) -> str | None:
        """The fallback key's source once the client has switched to it, else ``None``."""
        return self._switched_to

    def __repr__(self) -> str:
        return f"ApiClient(base_url={self.base_url!r}, key_source={self._source!r})"

    async def __aenter__(self) -> ApiClient:
        if self._api is not None:
            raise RuntimeError("this ApiClient is already open")
        t = self._timeouts
        # The key goes on each request (``_send``), not here: it may change mid-run.
        self._api = aiohttp.ClientSession(
            headers={"User-Agent": self._user_agent, "Accept": "application/json"},
            connector=aiohttp.TCPConnector(limit=self._max_connections),
            timeout=aiohttp.ClientTimeout(
                total=t.total_s, sock_connect=t.connect_s, sock_read=t.read_s
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # Presigned links authenticate themselves; this session never holds the key. Identity
        # encoding keeps Content-Length comparable with the bytes written.
        self._storage = aiohttp.ClientSession(
            headers={"User-Agent": self._user_agent, "Accept-Encoding": "identity"},
            connector=aiohttp.TCPConnector(limit=self._max_connections),
            timeout=aiohttp.ClientTimeout(sock_connect=t.connect_s, sock_read=t.read_s),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        api, storage = self._api, self._storage
        self._api = self._storage = None
        with anyio.CancelScope(shield=True):
            try:
                if api is not None:
                    await api.close()
            finally:
                if storage is not None:
                    await storage.close()

    # -- stem jobs ---------------------------------------------------------------------------

    async def submit_url(self, url: str, *, mode: str, stem: str | None) -> RemoteJob:
        """Submit a URL job (urlencoded form, §3.1); the new job, usually PENDING."""
        fields = {"mode": str(mode), "url": url}
        if stem is not None:
            fields["stem"] = str(stem)
        call = self._call("POST", f"{STEMS}/api/extract", submit=True)
        return _job(call, await self._request(call, data=fields))

    async def submit_file(self, path: Path, *, mode: str, stem: str | None) -> RemoteJob:
        """Submit a local file as a streamed multipart upload (field ``file``, §3.1)."""
        opened: list[IO[bytes]] = []

        async def form() -> aiohttp.FormData:
            # aiohttp closes the file once it has sent it: a re-send after a key switch opens
            # it again and builds a new form.
            try:
                handle, content_type = await anyio.to_thread.run_sync(_open_upload, path)
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
            data.add_field("file", handle, filename=_upload_name(path), content_type=content_type)
            return data

        t = self._timeouts
        timeout = aiohttp.ClientTimeout(sock_connect=t.connect_s, sock_read=t.upload_read_s)
        call = self._call("POST", f"{STEMS}/api/extract", submit=True)
        try:
            body = await self._request(call, form=form, client_timeout=timeout)
        finally:
            for handle in opened:  # those aiohttp did not get to send (and close)
                handle.close()
        return _job(call, body)

    async def status(self, job_id: str) -> RemoteJob:
        """The job's current state (§3.2); download URLs are fresh on each call."""
        call = self._call("GET", f"{STEMS}/status/{_segment(job_id)}", job_id=job_id)
        return _job(call, await self._request(call))

    async def list_jobs(self, *, skip: int = 0, limit: int = 50) -> list[RemoteJob]:
        """A page of this key's jobs, newest first (§3.3)."""
        if skip < 0 or limit < 1:
            raise ValueError(f"need skip >= 0 and limit >= 1, got skip={skip}, limit={limit}")
        call = self._call("GET", f"{STEMS}/jobs")
        body = await self._request(call, params={"skip": str(skip), "limit": str(limit)})
        items = body.get("jobs") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise InvalidResponse(f"{call} should answer with a JSON array of jobs")
        return [_job(call, item) for item in items]

    async def delete_job(self, job_id: str) -> None:
        """Delete a job and its results (§3.3): 204, or JobNotFound."""
        call = self._call("DELETE", f"{STEMS}/jobs/{_segment(job_id)}", job_id=job_id)
        await self._request(call)

    # -- wallet ------------------------------------------------------------------------------

    async def balance(self) -> Balance:
        """The API wallet (§6.1); also the cheapest check that the key works."""
        call = self._call("GET", f"{WALLET}/balance")
        return _parsed(call, Balance.from_json, await self._request(call))

    async def usage(self, *, page: int = 1, limit: int = 50) -> list[UsageRow]:
        """A page of the wallet's usage log, newest first (§6.4): one row per kept charge."""
        if page < 1 or limit < 1:
            raise ValueError(f"need page >= 1 and limit >= 1, got page={page}, limit={limit}")
        call = self._call("GET", f"{WALLET}/usage")
        body = await self._request(call, params={"page": str(page), "limit": str(limit)})
        return _parsed(call, usage_rows_of, body)

    async def estimate_cents(self, duration_s: float) -> int:
        """What AudioPod says ``duration_s`` seconds of stem extraction cost (§6.2)."""
        if not (math.isfinite(duration_s) and duration_s >= 0):
            raise ValueError(f"duration_s must be a finite number >= 0, got {duration_s!r}")
        seconds: float | int = int(duration_s) if float(duration_s).is_integer() else duration_s
        call = self._call("POST", f"{WALLET}/estimate")
        body = await self._request(
            call, json_body={"service_type": SERVICE_TYPE, "duration_seconds": seconds}
        )
        return _parsed(call, estimate_cents_of, body)

    async def price_per_minute_cents(self) -> int:
        """Stem extraction's price per input minute from the price table (§6.5)."""
        call = self._call("GET", f"{WALLET}/pricing")
        return _parsed(call, price_per_minute_cents_of, await self._request(call))

    # -- API keys (§8) -------------------------------------------------------------------------

    async def list_api_keys(self) -> list[ApiKeyInfo]:
        """The account's API keys, revoked and expired ones included: metadata, never values."""
        call = self._call("GET", f"{AUTH}/api-keys")
        body = await self._request(call)
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
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
        call = self._call("POST", f"{AUTH}/api-keys")
        payload = {"name": name, "scopes": list(scopes), "expires_in_days": expires_in_days}
        body = await self._request(call, json_body=payload)
        if isinstance(body, dict) and isinstance(value := body.get("api_key"), str) and value:
            self._secrets.append(value)  # masked from here on, even if the answer is unusable
        return _parsed(call, CreatedApiKey.from_json, body)

    async def revoke_api_key(self, key_id: str) -> RevokedApiKey:
        """Revoke one of the account's keys (this client's own included: its next request is
        then refused). Revoking a revoked key again is harmless; an unknown id raises
        ``ApiKeyNotFound``."""
        call = self._call("DELETE", f"{AUTH}/api-keys/{_segment(key_id)}", key_id=key_id)
        body = await self._request(call)
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
        storage = self._open_session(self._storage)
        self.counts.downloads += 1
        return await fetch_to_file(storage, url, dest, chunk_size=chunk_size, max_bytes=max_bytes)

    # -- the seam ----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        submit: bool = False,
        job_id: str | None = None,
        key_id: str | None = None,
    ) -> Call:
        return Call(
            method, path, self._base.host or "", submit=submit, job_id=job_id, key_id=key_id
        )

    async def _request(
        self,
        call: Call,
        *,
        data: Any = None,
        form: Callable[[], Awaitable[aiohttp.FormData]] | None = None,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        client_timeout: aiohttp.ClientTimeout | None = None,
    ) -> Any:
        """Send one API request; return its decoded JSON (``None`` for an empty body).

        ``form`` builds a multipart body afresh for each sending. When AudioPod refuses the
        key and a fallback takes over (``_switch_key``), the request is sent once more with it.
        """
        session = self._open_session(self._api)
        for attempt in (1, 2):
            if self._pacer is not None:
                await self._pacer.wait()
            # Read together, with no await between: the generation is that of this key.
            key, source, generation = self._key, self._source, self._generation
            try:
                return await self._send(
                    session,
                    call,
                    key=key,
                    source=source,
                    data=await form() if form is not None else data,
                    json_body=json_body,
                    params=params,
                    client_timeout=client_timeout,
                )
            except AuthenticationError:
                if attempt == 2 or not self._switch_key(sent_with=generation):
                    raise
            # AudioPod checks the key before anything else: a request refused with 401 or a
            # key's 403 was not acted on. A submit refused so created no job and charged
            # nothing, so sending it again with the new key cannot make a duplicate.
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _switch_key(self, *, sent_with: int) -> bool:
        """Whether a request whose key (of generation ``sent_with``) was refused should be sent
        again: yes if the fallback has taken over since, or takes over now; no without one.

        Synchronous, so no other task runs between the check and the switch: of many requests
        refused at once, the first switches and the rest only see the new generation.
        """
        if self._generation > sent_with:
            return True  # another request switched while this one was out
        if self._fallback is None:
            return False  # no fallback, or it is the key that was just refused
        old = self._source
        self._key, self._source = self._fallback, self._fallback_source
        self._fallback = None
        self._generation += 1
        self._switched_to = self._source
        if self._on_key_switch is not None:
            self._on_key_switch(old, self._source)
        return True

    async def _send(
        self,
        session: aiohttp.ClientSession,
        call: Call,
        *,
        key: str,
        source: str,
        data: Any,
        json_body: Any,
        params: dict[str, str] | None,
        client_timeout: aiohttp.ClientTimeout | None,
    ) -> Any:
        """Send one API request with ``key``; its decoded JSON (``None`` for an empty body).

        The one place where aiohttp exceptions and HTTP error statuses become ``ApiError``s.
        """
        url = URL(str(self._base) + call.path, encoded=True)
        options: dict[str, Any] = {"allow_redirects": False, "headers": {"X-API-Key": key}}
        if client_timeout is not None:
            options["timeout"] = client_timeout
        read_s = (client_timeout or session.timeout).sock_read or self._timeouts.read_s
        self.counts.requests += 1
        try:
            async with session.request(
                call.method, url, data=data, json=json_body, params=params, **options
            ) as resp:
                status, headers = resp.status, resp.headers
                if 200 <= status <= 299:
                    body = await _read_capped(resp, limit=MAX_JSON_BYTES, truncate=False)
                else:
                    body = await _read_capped(resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise error_for_exception(call, exc, timeouts=self._timeouts, read_s=read_s) from exc
        if not 200 <= status <= 299:
            if status == 429:
                self.counts.throttled += 1
            raise error_for_status(
                call,
                status,
                headers,
                body,
                now=self._clock(),
                secrets=tuple(self._secrets),
                key_source=source,
            )
        if status == 204 or not body.strip():
            return None
        return decode_json(body, call)

    @staticmethod
    def _open_session(session: aiohttp.ClientSession | None) -> aiohttp.ClientSession:
        if session is None:
            raise RuntimeError("use the ApiClient inside 'async with ApiClient(...) as api:'")
        return session


# -- helpers -----------------------------------------------------------------------------------


def _job(call: Call, data: Any) -> RemoteJob:
    return _parsed(call, RemoteJob.from_json, data)


def _parsed(call: Call, parse: Callable[[Any], T], data: Any) -> T:
    """``parse(data)``, with the request named in any InvalidResponse."""
    try:
        return parse(data)
    except InvalidResponse as exc:
        raise InvalidResponse(f"{call}: {exc.message}", body_snippet=exc.body_snippet) from exc


async def _read_capped(
    resp: aiohttp.ClientResponse, limit: int = MAX_ERROR_BYTES, *, truncate: bool = True
) -> bytes:
    """At most ``limit`` bytes of a body: the rest is left unread (``truncate``) or refused."""
    declared = resp.content_length
    if not truncate and declared is not None and declared > limit:
        raise InvalidResponse(f"a {declared}-byte response is larger than the {limit} allowed")
    body = bytearray()
    while chunk := await resp.content.read(_READ_CHUNK):
        body += chunk
        if len(body) > limit:
            if truncate:
                return bytes(body[:limit])
            raise InvalidResponse(f"a response is larger than the {limit} bytes allowed")
    return bytes(body)


def _open_upload(path: Path) -> tuple[IO[bytes], str]:
    """The file to upload, opened, and its MIME type (runs in a worker thread)."""
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path.open("rb"), content_type


def _upload_name(path: Path) -> str:
    """The file name to send: the basename, with control characters (which would break the
    part's headers) replaced."""
    name = "".join("_" if ord(c) < 32 or ord(c) == 127 else c for c in path.name)
    return name or "upload"


def _segment(job_id: str) -> str:
    """A job id as one URL path segment."""
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"a job id must be a non-empty string, got {job_id!r}")
    return quote(job_id, safe="")


def _checked_base_url(base_url: str) -> URL:
    """The API's base URL, refused unless https (or http to this machine) with no extras."""
    try:
        url = URL(base_url.strip())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the base URL {base_url!r} is not a URL") from exc
    if url.scheme not in ("https", "http") or not url.host:
        raise ConfigError(
            f"the base URL {base_url!r} must be https://HOST[:PORT], e.g. https://api.audiopod.ai"
        )
    if url.user is not None or url.password is not None or url.query_string or url.fragment:
        raise ConfigError(
            "the base URL must not carry a user, password, query or fragment; give only "
            "https://HOST[:PORT]"
        )
    if url.scheme == "http" and not _is_loopback(url.host):
        raise ConfigError(
            f"refusing plain http:// to {url.host}: the API key would cross the network "
            "unencrypted; use https:// (http:// is allowed only to 127.0.0.1, ::1 or localhost)"
        )
    return url.with_path(url.path.rstrip("/"))


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_key(api_key: str, *, source: str) -> None:
    """Refuse a key AudioPod would refuse, before anything is sent; never echo it."""
    if not isinstance(api_key, str) or not api_key:
        raise ConfigError(
            f"the API key from {source} is empty; set it to a key from the AudioPod dashboard"
        )
    if not api_key.startswith("ap_") or len(api_key) < 4:
        raise ConfigError(
            f"the API key from {source} does not look like an AudioPod key (they start with "
            "'ap_'); copy it again from the AudioPod dashboard"
        )
    if not is_key_shaped(api_key):
        raise ConfigError(
            f"the API key from {source} contains spaces, line breaks or other unexpected "
            "characters (a stray newline from a file?); copy it again"
        )
