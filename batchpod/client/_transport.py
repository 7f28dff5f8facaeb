"""``Transport``: the client's two aiohttp sessions and the one seam every API request crosses.

One session talks to the API and carries the key (``X-API-Key`` only, never ``Authorization``,
never across a redirect: API redirects are not followed). A second session fetches stems from
the presigned storage links and carries no key at all. Every aiohttp exception and error status
of the API is translated in ``_send``; those of storage in ``_download.fetch_to_file``.
``request`` paces requests (``max_rps``), counts them, and sends a request once more when its
key was refused and the ``KeyRing`` switched to the fallback.

It knows no endpoint, and nothing of what a body means beyond decoding its JSON: ``ApiClient``
builds the requests and reads the answers.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import anyio
from yarl import URL

from batchpod._version import __version__
from batchpod.errors import AuthenticationError, ConfigError, InvalidResponse
from batchpod.flow import Pacer

from ._classify import Call, decode_json, error_for_exception, error_for_status
from ._download import fetch_to_file
from ._keyring import KeyRing
from ._models import ClientTimeouts

MAX_JSON_BYTES: Final = 10 * 1024 * 1024  # a page of 100 jobs is ~100 KB; more is hostile
MAX_ERROR_BYTES: Final = 64 * 1024  # enough for any error detail; the rest is not read
_READ_CHUNK: Final = 64 * 1024


@dataclass(slots=True)
class RequestCounts:
    """What one client sent: API requests (stem downloads apart) and the 429s they met."""

    requests: int = 0
    throttled: int = 0  # answered 429
    downloads: int = 0  # stem download requests to the storage host
    # API requests by (endpoint, answer): "GET /api/v1/.../{id}" and the HTTP status, or
    # "error" when no answer came (for the run's metrics).
    by_call: Counter[tuple[str, str]] = field(default_factory=Counter)


class Transport:
    """The sessions, opened by ``open`` and closed by ``close``, and ``request``, which sends.

    Takes the ``ApiClient`` constructor's settings (checked here, base URL first, then the keys)
    and holds the ``KeyRing`` (``keys``), the ``RequestCounts`` (``counts``), the time limits
    and the clock (Unix seconds, for Retry-After dates) that the requests use.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        key_source: str,
        fallback_key: str | None,
        fallback_source: str | None,
        on_key_switch: Callable[[str, str], None] | None,
        max_connections: int,
        timeouts: ClientTimeouts,
        user_agent: str | None,
        clock: Callable[[], float],
        max_rps: float | None,
        submit_guard: Callable[[], None] | None = None,
    ) -> None:
        self._base = _checked_base_url(base_url)
        self.keys = KeyRing(
            api_key=api_key,
            key_source=key_source,
            fallback_key=fallback_key,
            fallback_source=fallback_source,
            on_key_switch=on_key_switch,
        )
        if max_connections < 1:
            raise ConfigError(f"max_connections must be at least 1, got {max_connections}")
        self._max_connections = max_connections
        self.timeouts = timeouts
        self._user_agent = user_agent or f"batchpod/{__version__}"
        self.clock = clock
        self._api: aiohttp.ClientSession | None = None
        self._storage: aiohttp.ClientSession | None = None
        self._pacer = Pacer(max_rps) if max_rps is not None else None
        self.counts = RequestCounts()
        # Called once a submit has its connection, the last moment before its bytes leave:
        # it raises to keep the submit from being sent (a fleet worker that lost its jobs).
        self._submit_guard = submit_guard

    @property
    def base_url(self) -> str:
        """The API's scheme, host, port and any path prefix, without a trailing slash."""
        return str(self._base)

    async def open(self) -> None:
        """Open both sessions; a second ``open`` before ``close`` is a programming error."""
        if self._api is not None:
            raise RuntimeError("this ApiClient is already open")
        t = self.timeouts
        # The key goes on each request (``_send``), not here: it may change mid-run.
        self._api = aiohttp.ClientSession(
            headers={"User-Agent": self._user_agent, "Accept": "application/json"},
            connector=_GuardedConnector(limit=self._max_connections),
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

    async def close(self) -> None:
        """Close both sessions, shielded from cancellation; harmless when not open."""
        api, storage = self._api, self._storage
        self._api = self._storage = None
        with anyio.CancelScope(shield=True):
            try:
                if api is not None:
                    await api.close()
            finally:
                if storage is not None:
                    await storage.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        submit: bool = False,
        job_id: str | None = None,
        key_id: str | None = None,
    ) -> Call:
        """The request ``method path`` (under the base URL), as messages will name it."""
        return Call(
            method, path, self._base.host or "", submit=submit, job_id=job_id, key_id=key_id
        )

    async def request(
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
        key and a fallback takes over (``KeyRing.switch``), the request is sent once more with
        it.
        """
        session = _opened(self._api)
        keys = self.keys
        for attempt in (1, 2):
            if self._pacer is not None:
                await self._pacer.wait()
            # Read together, with no await between: the generation is that of this key.
            key, source, generation = keys.key, keys.source, keys.generation
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
                if attempt == 2 or not keys.switch(sent_with=generation):
                    raise
            # AudioPod checks the key before anything else: a request refused with 401 or a
            # key's 403 was not acted on. A submit refused so created no job and charged
            # nothing, so sending it again with the new key cannot make a duplicate.
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def download(
        self, url: str, dest: Path, *, chunk_size: int, max_bytes: int | None
    ) -> int:
        """Fetch a presigned link into ``dest`` with the key-less session (see
        ``ApiClient.download``); the bytes written."""
        storage = _opened(self._storage)
        self.counts.downloads += 1
        return await fetch_to_file(storage, url, dest, chunk_size=chunk_size, max_bytes=max_bytes)

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
        read_s = (client_timeout or session.timeout).sock_read or self.timeouts.read_s
        self.counts.requests += 1
        guarded = _GUARD.set(self._submit_guard if call.submit else None)
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
            self.counts.by_call[call.endpoint, "error"] += 1
            raise error_for_exception(call, exc, timeouts=self.timeouts, read_s=read_s) from exc
        finally:
            _GUARD.reset(guarded)
        self.counts.by_call[call.endpoint, str(status)] += 1
        if not 200 <= status <= 299:
            if status == 429:
                self.counts.throttled += 1
            raise error_for_status(
                call,
                status,
                headers,
                body,
                now=self.clock(),
                secrets=tuple(self.keys.secrets),
                key_source=source,
            )
        if status == 204 or not body.strip():
            return None
        return decode_json(body, call)


# -- helpers -----------------------------------------------------------------------------------


def _opened(session: aiohttp.ClientSession | None) -> aiohttp.ClientSession:
    if session is None:
        raise RuntimeError("use the ApiClient inside 'async with ApiClient(...) as api:'")
    return session


#: The guard of the submit being sent by this task, if any (see ``_GuardedConnector``).
_GUARD: ContextVar[Callable[[], None] | None] = ContextVar("batchpod_submit_guard", default=None)


class _GuardedConnector(aiohttp.TCPConnector):
    """A connector that, once a guarded request has its connection (new or reused, after
    any wait for one), calls the request's guard: what the guard raises closes that
    connection and stops the request before any byte of it is sent."""

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:  # noqa: ASYNC109
        connection = await super().connect(req, traces, timeout)
        guard = _GUARD.get()
        if guard is not None:
            try:
                guard()
            except BaseException:
                connection.close()
                raise
        return connection


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
