"""ApiClient over loopback: the wire contract against the sandbox, the error seam against the
sandbox's faults and tiny hostile servers, downloads, and the secrecy of the key."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import struct
import tracemalloc
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import FakeClock, SandboxFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from batchpod.client import (
    MAX_JSON_BYTES,
    ApiClient,
    Balance,
    ClientTimeouts,
    RemoteJob,
    RemoteStatus,
    parse_retry_after,
)
from batchpod.client._classify import Call, error_for_status
from batchpod.client._models import usage_rows_of
from batchpod.errors import (
    ApiError,
    AuthenticationError,
    ConfigError,
    DownloadError,
    DownloadLinkExpired,
    InsufficientBalance,
    InvalidResponse,
    JobNotFound,
    KeyRevoked,
    PermissionDenied,
    RateLimited,
    RequestRejected,
    ServerError,
    TransportError,
    UploadFileError,
    is_transient,
    outcome_unknown,
    redact,
)
from batchpod.sandbox import KeySpec, SandboxHandle

SONG = "https://example.com/music/song.mp3?duration=300"
CANARY = "ap_canary_7f3e9d2c1b0a"  # a key that must never show up in any text


def client_for(sb: SandboxHandle, **options: Any) -> ApiClient:
    """An ApiClient for a sandbox, with its ready key unless another is given."""
    options.setdefault("api_key", sb.api_key)
    return ApiClient(base_url=sb.base_url, **options)


def write_wav(path: Path, *, data_bytes: int, sparse: bool = False) -> Path:
    """A 16 kHz mono 16-bit WAV of silence; `sparse` extends it without writing the zeros."""
    header = (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 16_000, 32_000, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )
    with path.open("wb") as f:
        f.write(header)
        if sparse:
            f.truncate(len(header) + data_bytes)
        else:
            f.write(bytes(data_bytes))
    return path


async def completed_job(api: ApiClient, clock: FakeClock, *, mode: str = "four") -> RemoteJob:
    """Submit a URL job and move the clock past its end; its completed status."""
    job = await api.submit_url(SONG, mode=mode, stem=None)
    clock.advance(60)
    done = await api.status(job.id)
    assert done.status is RemoteStatus.COMPLETED
    return done


E = TypeVar("E", bound=BaseException)


async def raises(kind: type[E], call: Awaitable[object]) -> E:
    """Await `call`, which must raise `kind`; return the exception."""
    with pytest.raises(kind) as info:
        await call
    return info.value


def assert_secret_free(*things: object, key: str = CANARY) -> None:
    """Neither str nor repr of anything given (nor an error's snippet) contains `key`."""
    for thing in things:
        texts = [str(thing), repr(thing)]
        if isinstance(thing, ApiError):
            texts.append(thing.body_snippet or "")
        for text in texts:
            assert key not in text, text


@contextlib.asynccontextmanager
async def hostile(routes: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]):
    """A small aiohttp server on loopback serving `routes` (any method); yields its base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """A raw TCP server that reads requests and never answers; yields its base URL."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(65536):
                pass
        finally:
            writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def listing(folder: Path) -> list[str]:
    """The names in `folder`, sorted (a tiny directory: no need to leave the loop)."""
    return sorted(p.name for p in folder.iterdir())


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- submit ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_submit_url_returns_the_new_job(sandbox: SandboxHandle) -> None:
    """A URL submit goes out as a form and comes back as a PENDING job with a string id."""
    async with client_for(sandbox) as api:
        job = await api.submit_url(SONG, mode="four", stem=None)
    assert job.id.isdigit()
    assert job.status is RemoteStatus.PENDING and not job.status.terminal
    assert job.source_type == "URL" and job.input_path == SONG
    assert job.created_at is not None and job.created_at.tzinfo is not None
    assert job.download_urls == {} and job.raw["id"] == int(job.id)
    assert sandbox.stats()["submissions"] == {"URL/four": 1}


@pytest.mark.anyio
async def test_submit_file_uploads_multipart(sandbox: SandboxHandle, tmp_path: Path) -> None:
    """A file submit sends a `file` part named after the file, with mode and stem."""
    song = write_wav(tmp_path / "my song (café).wav", data_bytes=32_000)
    async with client_for(sandbox) as api:
        job = await api.submit_file(song, mode="single", stem="vocals")
    assert job.source_type == "FILE" and job.display_name == "my song (café).wav"
    assert sandbox.stats()["submissions"] == {"FILE/single/vocals": 1}


@pytest.mark.anyio
async def test_upload_over_the_cap_is_rejected_413(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """An upload past the plan's cap is a permanent RequestRejected 413 and creates no job."""
    song = write_wav(tmp_path / "big.wav", data_bytes=4 * 1024 * 1024, sparse=True)
    async with sandbox_factory(upload_cap_bytes=64 * 1024) as sb, client_for(sb) as api:
        exc = await raises(RequestRejected, api.submit_file(song, mode="four", stem=None))
        stats = sb.stats()
    assert exc.http_status == 413 and "too large" in exc.message
    assert not is_transient(exc) and not outcome_unknown(exc)
    assert stats["submissions"] == {} and stats["jobs"]["created"] == 0


@pytest.mark.anyio
async def test_upload_is_streamed_not_read_whole(sandbox: SandboxHandle, tmp_path: Path) -> None:
    """Uploading a 24 MB file never holds more than a fraction of it in memory."""
    size = 24 * 1024 * 1024
    song = write_wav(tmp_path / "long.wav", data_bytes=size, sparse=True)
    async with client_for(sandbox) as api:
        tracemalloc.start()
        try:
            job = await api.submit_file(song, mode="two", stem=None)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert job.status is RemoteStatus.PENDING
    assert peak < size // 4, f"peak {peak} bytes while uploading {size}"
    assert sandbox.stats()["submissions"] == {"FILE/two": 1}


@pytest.mark.anyio
async def test_unreadable_upload_is_upload_file_error(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """A missing local file is an UploadFileError (a RequestRejected) and nothing is sent."""
    async with client_for(sandbox) as api:
        exc = await raises(
            UploadFileError, api.submit_file(tmp_path / "gone.wav", mode="four", stem=None)
        )
    assert isinstance(exc, RequestRejected) and exc.http_status is None
    assert sandbox.stats()["requests"] == {}


# -- status, list, delete ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_status_follows_a_job_to_completion(
    sandbox_factory: SandboxFactory, fake_clock: FakeClock
) -> None:
    """status() walks PENDING -> PROCESSING -> COMPLETED, then gives URLs, scores and times."""
    async with sandbox_factory(clock=fake_clock, processing_s=10.0) as sb, client_for(sb) as api:
        job = await api.submit_url(SONG, mode="four", stem=None)
        fake_clock.advance(5)
        assert (await api.status(job.id)).status is RemoteStatus.PROCESSING
        fake_clock.advance(6)
        done = await api.status(job.id)
    stems = {"vocals", "drums", "bass", "other"}
    assert done.status is RemoteStatus.COMPLETED and done.status.terminal
    assert set(done.download_urls) == set(done.quality_scores) == stems
    assert all(0 <= s <= 1 for s in done.quality_scores.values())
    assert done.created_at is not None and done.completed_at is not None
    assert done.completed_at - done.created_at == timedelta(seconds=10)
    assert done.error_message is None


@pytest.mark.anyio
async def test_failed_job_carries_its_error_message(
    sandbox_factory: SandboxFactory, fake_clock: FakeClock
) -> None:
    """A job the service fails is FAILED (terminal) with the server's error_message."""
    async with sandbox_factory(clock=fake_clock, failure_rate=1.0) as sb, client_for(sb) as api:
        job = await api.submit_url(SONG, mode="six", stem=None)
        fake_clock.advance(60)
        failed = await api.status(job.id)
    assert failed.status is RemoteStatus.FAILED and failed.status.terminal
    assert failed.error_message and failed.error_message.startswith("Stem separation failed")
    assert failed.download_urls == {}


@pytest.mark.anyio
async def test_list_jobs_pages_newest_first(sandbox: SandboxHandle) -> None:
    """list_jobs() returns this key's jobs newest first, honouring skip and limit."""
    async with client_for(sandbox) as api:
        ids = [(await api.submit_url(f"{SONG}&n={n}", mode="two", stem=None)).id for n in range(3)]
        everything = await api.list_jobs()
        second = await api.list_jobs(skip=1, limit=1)
    assert [j.id for j in everything] == ids[::-1]
    assert [j.id for j in second] == [ids[1]]
    assert all(j.display_name for j in everything)


@pytest.mark.anyio
async def test_delete_job_then_it_is_not_found(sandbox: SandboxHandle) -> None:
    """delete_job() removes a job; its status and a second delete are then JobNotFound."""
    async with client_for(sandbox) as api:
        job = await api.submit_url(SONG, mode="four", stem=None)
        assert await api.delete_job(job.id) is None
        gone = await raises(JobNotFound, api.status(job.id))
        again = await raises(JobNotFound, api.delete_job(job.id))
    assert gone.job_id == job.id and gone.http_status == 404
    assert "Job not found" in gone.message and isinstance(again, RequestRejected)


# -- wallet ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_balance_estimate_price_and_usage(
    sandbox_factory: SandboxFactory, fake_clock: FakeClock
) -> None:
    """balance, estimate, price and usage read the wallet endpoints in integer cents."""
    async with sandbox_factory(clock=fake_clock) as sb, client_for(sb) as api:
        before = await api.balance()
        assert await api.estimate_cents(300) == 50
        assert await api.estimate_cents(328) == 55  # the contract's one real data point
        assert await api.price_per_minute_cents() == 10
        job = await completed_job(api, fake_clock)
        after = await api.balance()
        rows = await api.usage()
    assert before == Balance(
        balance_cents=10_000,
        total_spent_cents=0,
        low_balance_warning=False,
        warning_threshold_cents=500,
    )
    assert after.balance_cents == 9_950 and after.total_spent_cents == 50
    assert [(r.job_id, r.amount_cents) for r in rows] == [(job.id, 50)]


# -- downloads -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_download_writes_a_valid_wav_atomically(
    sandbox_factory: SandboxFactory, fake_clock: FakeClock, tmp_path: Path
) -> None:
    """download() replaces the target with a complete, readable WAV and leaves no temp file."""
    dest = tmp_path / "vocals.wav"
    dest.write_bytes(b"an older, partial attempt")
    async with sandbox_factory(clock=fake_clock) as sb, client_for(sb) as api:
        job = await completed_job(api, fake_clock)
        size = await api.download(job.download_urls["vocals"], dest)
        stats = sb.stats()
    assert size == dest.stat().st_size == 44 + 32_000
    with wave.open(str(dest), "rb") as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (1, 16_000, 16_000)
    assert listing(tmp_path) == ["vocals.wav"]
    assert stats["downloads"]["served"] == 1 and stats["downloads"]["with_credentials"] == 0


@pytest.mark.anyio
async def test_expired_link_is_download_link_expired(
    sandbox_factory: SandboxFactory, fake_clock: FakeClock, tmp_path: Path
) -> None:
    """A link past its TTL is DownloadLinkExpired (403); a fresh status gives one that works."""
    dest = tmp_path / "bass.wav"
    async with (
        sandbox_factory(clock=fake_clock, download_ttl_s=60) as sb,
        client_for(sb) as api,
    ):
        job = await completed_job(api, fake_clock)
        fake_clock.advance(61)
        exc = await raises(DownloadLinkExpired, api.download(job.download_urls["bass"], dest))
        assert not dest.exists() and listing(tmp_path) == []
        fresh = await api.status(job.id)
        assert await api.download(fresh.download_urls["bass"], dest) > 0
    assert exc.http_status == 403 and "AccessDenied" in exc.message
    assert isinstance(exc, DownloadError) and not is_transient(exc)


@pytest.mark.anyio
async def test_tampered_or_deleted_link_is_download_link_expired(
    sandbox_factory: SandboxFactory, fake_clock: FakeClock, tmp_path: Path
) -> None:
    """A bad signature (403) and a deleted job's stem (404) are both DownloadLinkExpired."""
    async with sandbox_factory(clock=fake_clock) as sb, client_for(sb) as api:
        job = await completed_job(api, fake_clock)
        url = job.download_urls["drums"]
        forged = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
        bad_sig = await raises(DownloadLinkExpired, api.download(forged, tmp_path / "d.wav"))
        await api.delete_job(job.id)
        missing = await raises(DownloadLinkExpired, api.download(url, tmp_path / "d.wav"))
    assert bad_sig.http_status == 403 and "SignatureDoesNotMatch" in bad_sig.message
    assert "Signature=" not in bad_sig.message  # the signed query never reaches a message
    assert missing.http_status == 404 and "NoSuchKey" in missing.message
    assert listing(tmp_path) == []


@pytest.mark.anyio
async def test_download_session_never_sends_the_key(
    sandbox_factory: SandboxFactory, fake_clock: FakeClock, tmp_path: Path
) -> None:
    """Stems fetched from another host (download_host) arrive without X-API-Key."""
    async with (
        sandbox_factory(clock=fake_clock, download_host="localhost") as sb,
        client_for(sb) as api,
    ):
        job = await completed_job(api, fake_clock)
        for stem, url in job.download_urls.items():
            assert url.startswith("http://localhost:")
            await api.download(url, tmp_path / f"{stem}.wav")
        downloads = sb.stats()["downloads"]
    assert downloads["served"] == 4 and downloads["with_credentials"] == 0


@pytest.mark.anyio
async def test_disk_error_is_download_error_without_temp_file(
    sandbox_factory: SandboxFactory, fake_clock: FakeClock, tmp_path: Path
) -> None:
    """A target folder that cannot be written gives DownloadError with the OS reason."""
    async with sandbox_factory(clock=fake_clock) as sb, client_for(sb) as api:
        job = await completed_job(api, fake_clock)
        exc = await raises(
            DownloadError, api.download(job.download_urls["other"], tmp_path / "no" / "x.wav")
        )
    assert "No such file or directory" in exc.message and not exc.transient
    assert not isinstance(exc, DownloadLinkExpired)


@pytest.mark.anyio
@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")
async def test_failed_write_is_download_error_and_removes_temp_file(
    sandbox_factory: SandboxFactory, fake_clock: FakeClock, tmp_path: Path
) -> None:
    """A write that fails half-way (file-size limit: EFBIG) removes the partial temp file."""
    import resource

    async with sandbox_factory(clock=fake_clock) as sb, client_for(sb) as api:
        job = await completed_job(api, fake_clock)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, hard))
        try:
            exc = await raises(
                DownloadError, api.download(job.download_urls["vocals"], tmp_path / "v.wav")
            )
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)
    assert "File too large" in exc.message and not exc.transient
    assert listing(tmp_path) == []


@pytest.mark.anyio
async def test_cut_off_transfer_is_transient_and_leaves_nothing(tmp_path: Path) -> None:
    """A body shorter than its Content-Length is a transient DownloadError; no temp file."""

    async def truncated(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 100_000
        await resp.prepare(request)
        await resp.write(b"x" * 1000)
        assert request.transport is not None
        request.transport.close()
        return resp

    async with (
        hostile({"/stem.wav": truncated}) as base,
        ApiClient(base_url=base, api_key=CANARY) as api,
    ):
        exc = await raises(DownloadError, api.download(f"{base}/stem.wav", tmp_path / "s.wav"))
    assert exc.transient and is_transient(exc)
    assert listing(tmp_path) == []


@pytest.mark.anyio
async def test_download_larger_than_allowed_is_refused(tmp_path: Path) -> None:
    """max_bytes stops a body with no length that goes on and on; no temp file is left."""

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(b"\0" * 65_536)
        return resp

    async with (
        hostile({"/stem.wav": endless}) as base,
        ApiClient(base_url=base, api_key=CANARY) as api,
    ):
        exc = await raises(
            DownloadError,
            api.download(f"{base}/stem.wav", tmp_path / "s.wav", max_bytes=100_000),
        )
    assert "100000" in exc.message and not exc.transient
    assert listing(tmp_path) == []


# -- authentication and money -----------------------------------------------------------------


@pytest.mark.anyio
async def test_unknown_key_is_authentication_error_401(sandbox: SandboxHandle) -> None:
    """A key the service does not know is AuthenticationError 401, and the key is not echoed."""
    async with client_for(sandbox, api_key=CANARY) as api:
        exc = await raises(AuthenticationError, api.balance())
    assert exc.http_status == 401 and "Invalid API key" in exc.message
    assert not is_transient(exc)
    assert_secret_free(exc, api)


@pytest.mark.anyio
@pytest.mark.parametrize("status", ["revoked", "expired"])
async def test_revoked_or_expired_key_is_authentication_error(
    sandbox_factory: SandboxFactory, status: str
) -> None:
    """A revoked or expired key's 403 is AuthenticationError, on submit as everywhere else."""
    async with (
        sandbox_factory(extra_keys={CANARY: KeySpec(status=status)}) as sb,
        client_for(sb, api_key=CANARY) as api,
    ):
        on_balance = await raises(AuthenticationError, api.balance())
        on_submit = await raises(AuthenticationError, api.submit_url(SONG, mode="four", stem=None))
    for exc in (on_balance, on_submit):
        assert exc.http_status == 403 and status in exc.message and "revoked or expired" in str(exc)
        assert_secret_free(exc)


@pytest.mark.anyio
async def test_plan_gated_mode_is_permission_denied(sandbox_factory: SandboxFactory) -> None:
    """A 403 because the plan lacks the mode is PermissionDenied: the key itself still works."""
    async with (
        sandbox_factory(extra_keys={CANARY: KeySpec(plan="basic")}) as sb,
        client_for(sb, api_key=CANARY) as api,
    ):
        exc = await raises(PermissionDenied, api.submit_url(SONG, mode="producer", stem=None))
        assert (await api.balance()).balance_cents == 10_000
    assert exc.http_status == 403 and "Creator" in exc.message
    assert not isinstance(exc, AuthenticationError) and not is_transient(exc)
    assert_secret_free(exc)


@pytest.mark.anyio
@pytest.mark.parametrize("shape", ["top", "detail"])
async def test_insufficient_balance_reads_both_body_shapes(
    sandbox_factory: SandboxFactory, shape: str
) -> None:
    """402 gives InsufficientBalance with both cents figures, top-level or under `detail`."""
    async with (
        sandbox_factory(balance_cents=10, balance_error_shape=shape) as sb,
        client_for(sb) as api,
    ):
        exc = await raises(InsufficientBalance, api.submit_url(SONG, mode="four", stem=None))
    assert (exc.http_status, exc.required_cents, exc.available_cents) == (402, 50, 10)
    assert "needs $0.50, has $0.10" in exc.message and not is_transient(exc)


@pytest.mark.anyio
async def test_validation_error_is_request_rejected_with_server_message(
    sandbox: SandboxHandle,
) -> None:
    """A 422 is RequestRejected whose message is the server's validation detail."""
    async with client_for(sandbox) as api:
        exc = await raises(RequestRejected, api.submit_url(SONG, mode="4stem", stem=None))
    assert exc.http_status == 422
    assert exc.message.startswith("mode: Input should be 'single', 'two'")
    assert not is_transient(exc) and not outcome_unknown(exc)


# -- transient failures ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_rate_limit_carries_retry_after(sandbox_factory: SandboxFactory) -> None:
    """A 429 is RateLimited with Retry-After in seconds; transient, and surely not acted on."""
    async with sandbox_factory(rate_429=1.0, retry_after_s=2) as sb, client_for(sb) as api:
        exc = await raises(RateLimited, api.submit_url(SONG, mode="four", stem=None))
    assert exc.http_status == 429 and exc.retry_after_s == 2.0
    assert "Rate limit exceeded" in exc.message
    assert is_transient(exc) and not outcome_unknown(exc)


@pytest.mark.anyio
async def test_server_errors_are_server_error(sandbox_factory: SandboxFactory) -> None:
    """Injected 500/502/503 (HTML or text bodies) are ServerError; 503 carries Retry-After."""
    seen: set[int] = set()
    async with sandbox_factory(rate_5xx=1.0, retry_after_s=3) as sb, client_for(sb) as api:
        for _ in range(30):
            exc = await raises(ServerError, api.balance())
            assert exc.http_status in (500, 502, 503) and is_transient(exc)
            assert exc.retry_after_s == (3.0 if exc.http_status == 503 else None)
            if exc.http_status == 502:
                assert "502 Bad Gateway" in exc.message  # the HTML page's title
            seen.add(exc.http_status)
    assert seen == {500, 502, 503}


@pytest.mark.anyio
async def test_lost_submit_is_an_ambiguous_server_error(sandbox_factory: SandboxFactory) -> None:
    """A 502 after the job was created is a ServerError whose outcome is unknown."""
    async with sandbox_factory(lost_submit_rate=1.0) as sb, client_for(sb) as api:
        exc = await raises(ServerError, api.submit_url(SONG, mode="four", stem=None))
        assert len(await api.list_jobs()) == 1
    assert exc.http_status == 502 and outcome_unknown(exc)


@pytest.mark.anyio
async def test_connection_refused_is_transport_error_not_sent(anyio_backend: str) -> None:
    """Nothing listening is a TransportError with sent=False: safe to submit again."""
    async with ApiClient(base_url=f"http://127.0.0.1:{free_port()}", api_key=CANARY) as api:
        exc = await raises(TransportError, api.submit_url(SONG, mode="four", stem=None))
    assert exc.sent is False and exc.http_status is None
    assert is_transient(exc) and not outcome_unknown(exc)
    assert "cannot connect to 127.0.0.1 (Connection refused)" in exc.message
    assert_secret_free(exc)


@pytest.mark.anyio
async def test_silent_server_is_an_ambiguous_transport_error(anyio_backend: str) -> None:
    """A server that takes the request and never answers gives TransportError(sent=True)."""
    timeouts = ClientTimeouts(read_s=0.3, upload_read_s=0.3)
    async with (
        silent_server() as base,
        ApiClient(base_url=base, api_key=CANARY, timeouts=timeouts) as api,
    ):
        exc = await raises(TransportError, api.submit_url(SONG, mode="four", stem=None))
    assert exc.sent is True and "0.3 s" in exc.message
    assert is_transient(exc) and outcome_unknown(exc)


# -- hostile responses -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_unreadable_responses_are_invalid_response(anyio_backend: str) -> None:
    """Non-JSON, a job without id, a non-list and an oversized body are InvalidResponse."""

    async def html(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html><title>Welcome</title></html>", content_type="text/html")

    async def no_id(request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "PENDING"})

    async def not_a_list(request: web.Request) -> web.StreamResponse:
        return web.json_response({"detail": "nope"})

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"[")
        for _ in range(MAX_JSON_BYTES // 65_536 + 2):
            await resp.write(b"0," * 32_768)
        return resp

    routes = {
        "/api/v1/stem-extraction/status/{id}": html,
        "/api/v1/stem-extraction/api/extract": no_id,
        "/api/v1/stem-extraction/jobs": not_a_list,
        "/api/v1/api-wallet/balance": huge,
    }
    async with hostile(routes) as base, ApiClient(base_url=base, api_key=CANARY) as api:
        not_json = await raises(InvalidResponse, api.status("1"))
        missing_id = await raises(InvalidResponse, api.submit_url(SONG, mode="four", stem=None))
        wrong_type = await raises(InvalidResponse, api.list_jobs())
        too_big = await raises(InvalidResponse, api.balance())
    assert "not JSON" in not_json.message and not_json.body_snippet
    assert "'id'" in missing_id.message and outcome_unknown(missing_id)
    assert "array" in wrong_type.message
    assert "larger than" in too_big.message


@pytest.mark.anyio
async def test_api_sends_only_x_api_key_and_never_follows_redirects(anyio_backend: str) -> None:
    """Requests carry X-API-Key (no Bearer) and a batchpod User-Agent; a redirect is refused."""
    seen: list[dict[str, str]] = []
    elsewhere: list[dict[str, str]] = []

    def record_to(
        log: list[dict[str, str]], reply: Callable[[], web.StreamResponse]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            log.append(dict(request.headers))
            return reply()

        return handler

    async with hostile(
        {"/{tail:.*}": record_to(elsewhere, lambda: web.json_response({}))}
    ) as other:
        target = f"{other}/api/v1/api-wallet/balance"
        routes = {
            "/api/v1/api-wallet/pricing": record_to(seen, lambda: web.json_response({})),
            "/api/v1/api-wallet/balance": record_to(
                seen, lambda: web.Response(status=307, headers={"Location": target})
            ),
        }
        async with hostile(routes) as base, ApiClient(base_url=base, api_key=CANARY) as api:
            await raises(InvalidResponse, api.price_per_minute_cents())
            redirected = await raises(InvalidResponse, api.balance())
    assert len(seen) == 2 and elsewhere == []
    for headers in seen:
        assert headers["X-API-Key"] == CANARY and "Authorization" not in headers
        assert headers["User-Agent"].startswith("batchpod/")
    assert redirected.http_status == 307 and "redirect" in redirected.message


@pytest.mark.anyio
async def test_server_text_echoing_the_key_is_redacted(anyio_backend: str) -> None:
    """A server that echoes the key in an error body never gets it into a message or snippet."""

    async def echo(request: web.Request) -> web.StreamResponse:
        key = request.headers["X-API-Key"]
        return web.json_response({"detail": f"key {key} is not allowed here"}, status=400)

    async with (
        hostile({"/{tail:.*}": echo}) as base,
        ApiClient(base_url=base, api_key=CANARY) as api,
    ):
        exc = await raises(RequestRejected, api.submit_url(SONG, mode="four", stem=None))
    assert exc.message == "key ap_*** is not allowed here"
    assert_secret_free(exc)


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://api.audiopod.ai",
        "http://10.0.0.5:8765",
        "http://localhost.evil.example",
        "ftp://api.audiopod.ai",
        "https://user:pw@api.audiopod.ai",
        "https://api.audiopod.ai/?x=1",
        "api.audiopod.ai",
    ],
)
def test_unsafe_base_urls_are_refused(url: str) -> None:
    """Plain http:// off this machine, credentials, queries and non-http schemes: ConfigError."""
    with pytest.raises(ConfigError) as info:
        ApiClient(base_url=url, api_key=CANARY)
    assert_secret_free(info.value)


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://api.audiopod.ai/", "https://api.audiopod.ai"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://127.4.5.6", "http://127.4.5.6"),
        ("http://[::1]:8080/", "http://[::1]:8080"),
        ("http://LocalHost:9/", "http://localhost:9"),
    ],
)
def test_https_and_loopback_base_urls_are_accepted(url: str, kept: str) -> None:
    """https:// anywhere and http:// to loopback are accepted, without a trailing slash."""
    client = ApiClient(base_url=url, api_key=CANARY)
    assert client.base_url == kept
    assert_secret_free(client)


@pytest.mark.parametrize(
    "key", ["sk_live_123", "", "ap_", "AP_upper", f"{CANARY}\n", f" {CANARY}", "ap_tab\there"]
)
def test_malformed_keys_are_refused_without_echo(key: str) -> None:
    """A key that is not an `ap_` token is a ConfigError that never repeats the key."""
    with pytest.raises(ConfigError) as info:
        ApiClient(base_url="https://api.audiopod.ai", api_key=key)
    if len(key.strip()) > 3:
        assert_secret_free(info.value, key=key.strip())


@pytest.mark.anyio
async def test_client_must_be_opened_first(sandbox: SandboxHandle) -> None:
    """Calling a method outside `async with` is a programming error, said plainly."""
    with pytest.raises(RuntimeError, match="async with"):
        await client_for(sandbox).balance()


# -- pure helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "status"),
    [
        ("PENDING", RemoteStatus.PENDING),
        ("processing", RemoteStatus.PROCESSING),
        (" Completed ", RemoteStatus.COMPLETED),
        ("FAILED", RemoteStatus.FAILED),
        ("ERROR", RemoteStatus.FAILED),
        ("QUEUED", RemoteStatus.UNKNOWN),
        (None, RemoteStatus.UNKNOWN),
        (3, RemoteStatus.UNKNOWN),
    ],
)
def test_remote_status_is_read_case_insensitively(wire: object, status: RemoteStatus) -> None:
    """Statuses ignore case; ERROR is FAILED; anything else is UNKNOWN (still running)."""
    assert RemoteStatus.parse(wire) is status


def test_remote_job_accepts_job_id_and_lenient_times() -> None:
    """`job_id` stands in for `id`; naive, `Z` and offset timestamps all come out in UTC."""
    job = RemoteJob.from_json(
        {
            "job_id": 12345,
            "status": "PENDING",
            "created_at": "2025-12-11T12:39:37.379848",
            "completed_at": "2025-12-11T12:40:00Z",
            "quality_scores": {"vocals": 0.5, "bad": "x", "big": 10**400},
        }
    )
    assert job.id == "12345" and job.status is RemoteStatus.PENDING
    assert job.created_at == datetime(2025, 12, 11, 12, 39, 37, 379848, tzinfo=UTC)
    assert job.completed_at == datetime(2025, 12, 11, 12, 40, tzinfo=UTC)
    assert job.quality_scores == {"vocals": 0.5} and hash(job) == hash(job)
    assert RemoteJob.from_json({"id": "77", "status": "x", "created_at": "soon"}).created_at is None
    for bad in ({"id": True}, {"id": "../x"}, {"id": 1, "download_urls": ["u"]}, []):
        with pytest.raises(InvalidResponse):
            RemoteJob.from_json(bad)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)
JOB_LIKE = st.fixed_dictionaries(
    {},
    optional=dict.fromkeys(
        ("id", "job_id", "status", "download_urls", "quality_scores", "created_at"), JSON
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(JSON, JOB_LIKE))
def test_job_parsing_never_raises_anything_but_invalid_response(data: object) -> None:
    """Whatever JSON arrives, RemoteJob/Balance.from_json either parse or raise InvalidResponse."""
    for parse in (RemoteJob.from_json, Balance.from_json):
        with contextlib.suppress(InvalidResponse):
            parse(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(JSON, st.fixed_dictionaries({}, optional={"logs": st.lists(JSON, max_size=3)})))
def test_usage_parsing_never_raises_anything_but_invalid_response(data: object) -> None:
    """Whatever a usage page holds, it parses to rows or raises InvalidResponse."""
    with contextlib.suppress(InvalidResponse):
        usage_rows_of(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(300, 599),
    st.one_of(st.binary(max_size=300), JSON.map(lambda v: json.dumps(v).encode())),
    st.one_of(st.none(), st.text(max_size=40)),
)
def test_any_error_answer_becomes_one_key_free_api_error(
    status: int, body: bytes, retry_after: str | None
) -> None:
    """Any status, body and Retry-After header (even one echoing the key) classify into an
    ApiError whose message names the request and never carries the key."""
    headers: CIMultiDict[str] = CIMultiDict()
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    call = Call("POST", "/api/v1/stem-extraction/api/extract", "api.example", submit=True)
    body = body.replace(b"KEY", CANARY.encode())
    exc = error_for_status(call, status, headers, body, now=0.0, secrets=(CANARY,))
    assert isinstance(exc, ApiError)
    assert_secret_free(exc)


@pytest.mark.parametrize(
    ("status", "detail", "submit", "kind", "start"),
    [
        (401, "Invalid API key", False, AuthenticationError, "invalid or missing key: check KF ("),
        (401, "", True, AuthenticationError, "invalid or missing key: check KF (AudioPod answered"),
        (403, "API key has been revoked", False, KeyRevoked, "key revoked or expired: create"),
        (403, "API key has expired", True, KeyRevoked, "key revoked or expired: create"),
        (403, "Mode 'studio' requires the Pro plan", True, PermissionDenied, "this AudioPod plan"),
        (403, "Invalid mode for your plan", True, PermissionDenied, "this AudioPod plan"),
        (403, "Insufficient scope for this route", False, PermissionDenied, "the key in KF works"),
        (403, "", True, PermissionDenied, "this AudioPod plan"),
        (403, "", False, KeyRevoked, "key refused, probably revoked or expired: create a new key"),
    ],
)
def test_auth_failures_are_told_apart_by_status_and_body(
    status: int, detail: str, submit: bool, kind: type[ApiError], start: str
) -> None:
    """401 is AuthenticationError; a 403 is KeyRevoked when it names the key, PermissionDenied
    when it names the plan or scopes (or says nothing, on submit). Key failures name the key's
    source (here "KF"); the plan's failure does not blame the key."""
    call = Call("POST" if submit else "GET", "/api/v1/x", "api.example", submit=submit)
    body = json.dumps({"detail": detail}).encode() if detail else b""
    exc = error_for_status(call, status, CIMultiDict(), body, now=0.0, key_source="KF")
    assert type(exc) is kind and exc.message.startswith(start), exc.message
    assert ("KF" in exc.message) is (kind is not PermissionDenied or "scope" in detail)
    if isinstance(exc, AuthenticationError):
        assert exc.source == "KF"
    if isinstance(exc, KeyRevoked):
        assert exc.reason == next((w for w in ("expired", "revoked") if w in detail), None)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    """Retry-After is delay-seconds or an HTTP-date (relative to now); garbage is None."""
    now = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert parse_retry_after("120", now=now) == 120.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now=now) == 0.0
    for bad in (None, "", "soon", "-5", "nan", "inf"):
        assert parse_retry_after(bad, now=now) is None


def test_redact_hides_keys_but_not_words() -> None:
    """redact() masks `ap_` tokens and given secrets, and leaves words like map_size alone."""
    text = f"bad key {CANARY}; map_size=3; (ap_x-y.z) odd:key!"
    assert redact(text, secrets=["odd:key!"]) == "bad key ap_***; map_size=3; (ap_***) ap_***"
    assert redact("ap_***") == "ap_***"


def test_transient_and_unknown_outcome_classification() -> None:
    """Which errors may succeed on retry, and which may have been acted on by the server."""
    assert is_transient(RateLimited("slow down"))
    assert is_transient(ServerError("boom", http_status=500))
    assert is_transient(TransportError("reset", sent=True))
    assert is_transient(DownloadError("cut off", transient=True))
    assert not is_transient(DownloadLinkExpired("expired", transient=True))
    assert not is_transient(RequestRejected("bad mode", http_status=422))
    assert outcome_unknown(TransportError("timeout", sent=None))
    assert not outcome_unknown(TransportError("refused", sent=False))
    assert not outcome_unknown(ServerError("too slow to send", http_status=408))
    assert outcome_unknown(InvalidResponse("not JSON"))


@pytest.mark.parametrize(
    ("status", "transient"),
    [(408, True), (500, True), (502, True), (503, True), (504, True), (501, False), (505, False)],
)
def test_only_passing_server_statuses_are_transient(status: int, transient: bool) -> None:
    """408, 500, 502, 503 and 504 are worth a retry; 501, 505 and the like are not."""
    call = Call("GET", "/api/v1/stem-extraction/status/1", "api.example", job_id="1")
    exc = error_for_status(call, status, CIMultiDict(), b"", now=0.0, secrets=())
    assert isinstance(exc, ServerError) and is_transient(exc) is transient
    assert exc.http_status == status


def test_error_reprs_show_fields_not_keys() -> None:
    """An error built from text holding a key shows the status and a redacted message."""
    exc = RequestRejected(f"refused {CANARY}", http_status=400, body_snippet=json.dumps(CANARY))
    assert repr(exc) == "RequestRejected(http_status=400, message='refused ap_***')"
    assert_secret_free(exc)
