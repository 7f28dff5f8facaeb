"""The sandbox's HTTP face: aiohttp routes for the AudioPod contract, plus `/_sandbox/*`.

Handlers parse and validate the wire format, then call `SandboxState`; one middleware counts
requests, settles finished jobs, adds latency and injects faults. Imports nothing from batchpod.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web

from ._audio import UnreadableAudio, stem_file_size, stem_wav_chunks, upload_duration_s
from ._contract import (
    CENTS_PER_MINUTE,
    MODE_DESCRIPTIONS,
    MODE_STEMS,
    MODES,
    SERVICE_DESCRIPTION,
    SERVICE_TYPE,
    UPLOAD_CAP_BYTES,
    cost_cents,
    url_duration_s,
    usd,
)
from ._form import read_submit_form, validated_submit
from ._keys import parse_new_key, render_created, render_key, render_revoked
from ._records import STATUSES, Account, ApiError, detail
from ._settings import KEY_STATUSES, SandboxSettings
from ._state import SandboxState
from ._validation import int_param, invalid, missing, missing_body, not_one_of, value_error

STATE: Final = web.AppKey("batchpod_sandbox_state", SandboxState)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STEMS: Final = "/api/v1/stem-extraction"
WALLET: Final = "/api/v1/api-wallet"
AUTH: Final = "/api/v1/auth"

# What a load balancer in front of the real service sends for an injected 5xx: not JSON.
_PROXY_BODIES: Final[Mapping[int, tuple[str, str]]] = {
    500: ("text/plain", "Internal Server Error"),
    502: (
        "text/html",
        "<html><head><title>502 Bad Gateway</title></head><body>"
        "<center><h1>502 Bad Gateway</h1></center></body></html>",
    ),
    503: (
        "text/html",
        "<html><head><title>503 Service Temporarily Unavailable</title></head>"
        "<body><center><h1>503 Service Temporarily Unavailable</h1></center></body></html>",
    ),
}


def make_app(
    settings: SandboxSettings | None = None, *, clock: Callable[[], float] | None = None
) -> web.Application:
    """A fresh sandbox application. `clock` returns Unix seconds (default `time.time`)."""
    state = SandboxState(settings or SandboxSettings(), clock=clock)
    # client_max_size bounds urlencoded and JSON bodies only; uploads are streamed.
    app = web.Application(middlewares=[_middleware], client_max_size=1024 * 1024)
    app[STATE] = state
    r = app.router
    r.add_post(f"{STEMS}/api/extract", _submit)
    r.add_get(f"{STEMS}/status/{{job_id}}", _status)
    r.add_get(f"{STEMS}/jobs", _list_jobs)
    r.add_delete(f"{STEMS}/jobs/{{job_id}}", _delete_job)
    r.add_get(f"{STEMS}/modes", _modes)
    r.add_get(f"{WALLET}/balance", _balance)
    r.add_post(f"{WALLET}/estimate", _estimate)
    r.add_post(f"{WALLET}/check-balance", _check_balance)
    r.add_get(f"{WALLET}/usage", _usage)
    r.add_get(f"{WALLET}/pricing", _pricing)
    r.add_post(f"{AUTH}/api-keys", _create_key)
    r.add_get(f"{AUTH}/api-keys", _list_keys)
    r.add_delete(f"{AUTH}/api-keys/{{key_id}}", _revoke_key)
    r.add_get("/health", _health)
    r.add_get("/media/stems/{job_id}/{filename}", _download)
    r.add_get("/_sandbox/stats", _admin_stats)
    r.add_post("/_sandbox/reset", _admin_reset)
    return app


# -- middleware ---------------------------------------------------------------------------


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else "<unmatched>"
    if template.startswith("/_sandbox/"):
        return await handler(request)  # the admin endpoints observe without being observed
    state.requests[f"{request.method} {template}"] += 1
    if template.startswith("/api/"):
        state.counters.api_arrival(time.monotonic())
    state.settle(state.clock())
    try:
        response = await _guarded(state, request, handler, template)
    except ApiError as exc:
        response = _error_response(exc)
    except web.HTTPException as exc:
        # aiohttp's own 404/405/413 become FastAPI-style JSON, as the real service answers.
        if exc.status < 400:
            raise
        response = web.json_response(
            {"detail": exc.reason}, status=exc.status, headers=_allow_header(exc)
        )
    state.responses[str(response.status)] += 1
    return response


async def _guarded(
    state: SandboxState, request: web.Request, handler: Handler, template: str
) -> web.StreamResponse:
    api = template.startswith("/api/")
    if (api or template == "/health") and state.settings.latency_s:
        await state.sleep(state.settings.latency_s)
    if api:
        fault = state.draw_fault()
        if fault is not None:
            raise fault
    return await handler(request)


def _allow_header(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}


def _error_response(exc: ApiError) -> web.Response:
    if exc.body is None:
        content_type, text = _PROXY_BODIES[exc.status]
        return web.Response(
            status=exc.status, text=text, content_type=content_type, headers=exc.headers
        )
    return web.json_response(exc.body, status=exc.status, headers=exc.headers)


# -- helpers ------------------------------------------------------------------------------


def _account_and_now(request: web.Request) -> tuple[SandboxState, Account, float]:
    state = request.app[STATE]
    now = state.clock()
    account = state.authenticate(
        x_api_key=request.headers.get("X-API-Key"),
        authorization=request.headers.get("Authorization"),
        now=now,
    )
    return state, account, now


def _job_id(request: web.Request) -> int:
    return int_param(
        "path", "job_id", request.match_info["job_id"], default=0, lo=-(2**63), hi=2**63 - 1
    )


async def _json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body, or the 422 FastAPI gives for a model body."""
    raw = await request.read()
    if not raw.strip():
        raise invalid(missing_body())
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise invalid(
            {"type": "json_invalid", "loc": ["body"], "msg": "JSON decode error", "input": None}
        ) from None
    if not isinstance(body, dict):
        raise invalid(value_error(["body"], "expected a JSON object", body))
    return body


def _media_base(request: web.Request) -> str:
    """Scheme, host and port for download URLs: the request's, or `download_host`'s."""
    origin = request.url.origin()
    host = request.app[STATE].settings.download_host
    return str(origin.with_host(host) if host else origin)


# -- stem extraction ----------------------------------------------------------------------


async def _submit(request: web.Request) -> web.StreamResponse:
    state, account, _ = _account_and_now(request)
    cap = state.settings.upload_cap_bytes or UPLOAD_CAP_BYTES[account.plan]
    fields, upload = await read_submit_form(request, cap=cap, plan=account.plan)
    mode, stem, url = validated_submit(fields, upload)
    state.check_plan(account, mode)
    if upload is not None:
        try:
            duration = upload_duration_s(upload.filename, upload.prefix, upload.size)
        except UnreadableAudio as exc:
            # The legacy docs list 400 for unsupported or corrupt audio (§9).
            raise detail(400, f"Could not read the uploaded audio: {exc}") from None
        source_type, source = "FILE", upload.filename
    else:
        assert url is not None
        duration, source_type, source = url_duration_s(url), "URL", url
    now = state.clock()
    job = state.submit(
        account,
        source_type=source_type,
        source=source,
        mode=mode,
        stem=stem,
        duration_s=duration,
        now=now,
    )
    if state.draw_lost_submit():
        if state.settings.lost_submit_mode == "drop" and request.transport is not None:
            request.transport.close()  # the job exists and is charged; the client hears nothing
            raise asyncio.CancelledError
        raise ApiError(502, None)
    if state.settings.submit_reply_delay_s:
        # The job exists and is charged from here on: a client that dies or gives up now
        # has paid without learning the job's id (what crash tests need to provoke).
        await asyncio.sleep(state.settings.submit_reply_delay_s)
    return web.json_response(state.render_job(job, now, media_base=_media_base(request)))


async def _status(request: web.Request) -> web.StreamResponse:
    state, account, now = _account_and_now(request)
    job = state.job_for(account, _job_id(request))
    return web.json_response(state.render_job(job, now, media_base=_media_base(request)))


async def _list_jobs(request: web.Request) -> web.StreamResponse:
    state, account, now = _account_and_now(request)
    q = request.query
    skip = int_param("query", "skip", q.get("skip"), default=0, lo=0, hi=2**31)
    limit = int_param("query", "limit", q.get("limit"), default=50, lo=1, hi=100)
    status = q.get("status")
    if status is not None:
        status = status.upper()
        if status not in STATUSES:
            raise invalid(not_one_of("query", "status", q["status"], STATUSES))
    jobs = state.list_jobs(account, skip=skip, limit=limit, status=status, now=now)
    base = _media_base(request)
    return web.json_response([state.render_job(j, now, media_base=base) for j in jobs])


async def _delete_job(request: web.Request) -> web.StreamResponse:
    state, account, now = _account_and_now(request)
    state.delete_job(account, _job_id(request), now=now)
    if state.settings.delete_reply_delay_s:
        # Deleted from here on: a client that dies now has not learnt it (crash tests).
        await asyncio.sleep(state.settings.delete_reply_delay_s)
    return web.Response(status=204)


async def _modes(request: web.Request) -> web.StreamResponse:
    # No auth: the docs' curl example sends no key (§3.4).
    modes = [
        {
            "mode": mode,
            "description": MODE_DESCRIPTIONS[mode],
            "stem_count": 2 if mode == "single" else len(MODE_STEMS[mode]),
        }
        for mode in MODES
    ]
    return web.json_response({"modes": modes})


# -- wallet -------------------------------------------------------------------------------


async def _balance(request: web.Request) -> web.StreamResponse:
    state, account, _ = _account_and_now(request)
    return web.json_response(state.balance(account))


async def _estimate_body(request: web.Request) -> tuple[str, float]:
    """service_type and duration_seconds of an estimate or check-balance JSON body."""
    body = await _json_object(request)
    errors = []
    service = body.get("service_type")
    duration = body.get("duration_seconds")
    if service is None:
        errors.append(missing("body", "service_type"))
    elif not isinstance(service, str):
        errors.append(value_error(["body", "service_type"], "must be a string", service))
    if duration is None:
        errors.append(missing("body", "duration_seconds"))
    elif isinstance(duration, bool) or not isinstance(duration, int | float) or duration < 0:
        errors.append(value_error(["body", "duration_seconds"], "must be a number >= 0", duration))
    if errors:
        raise invalid(*errors)
    assert isinstance(service, str) and isinstance(duration, int | float)
    if service != SERVICE_TYPE:
        # The real wallet prices other services too; the sandbox knows only stems.
        raise detail(
            400, f"Unknown service_type {service!r}; the sandbox prices only {SERVICE_TYPE!r}"
        )
    return service, float(duration)


async def _estimate(request: web.Request) -> web.StreamResponse:
    # No auth (§6.2); a key that is sent is ignored.
    service, duration = await _estimate_body(request)
    cents = cost_cents(duration)
    return web.json_response(
        {
            "service_type": service,
            "duration_seconds": int(duration) if duration.is_integer() else duration,
            "duration_minutes": round(duration / 60, 2),
            "rate_per_minute": f"{usd(CENTS_PER_MINUTE)}/min",
            "cost_cents": cents,
            "cost_usd": usd(cents),
            "description": SERVICE_DESCRIPTION,
        }
    )


async def _check_balance(request: web.Request) -> web.StreamResponse:
    state, account, _ = _account_and_now(request)
    _, duration = await _estimate_body(request)
    cents = cost_cents(duration)
    available = account.wallet.balance_cents
    if cents > available:
        raise state.insufficient(required_cents=cents, available_cents=available)
    return web.json_response(
        {"can_proceed": True, "cost_cents": cents, "current_balance_cents": available}
    )


async def _usage(request: web.Request) -> web.StreamResponse:
    state, account, _ = _account_and_now(request)
    q = request.query
    page = int_param("query", "page", q.get("page"), default=1, lo=1, hi=2**31)
    limit = int_param("query", "limit", q.get("limit"), default=50, lo=1, hi=100)
    return web.json_response(state.usage(account, page=page, limit=limit))


async def _pricing(request: web.Request) -> web.StreamResponse:
    # No auth (§6.5).
    return web.json_response(
        {
            "services": {
                SERVICE_TYPE: {
                    "rate_per_minute": f"{usd(CENTS_PER_MINUTE)}/min",
                    "rate_per_hour": usd(CENTS_PER_MINUTE * 60),
                    "cents_per_minute": CENTS_PER_MINUTE,
                    "description": SERVICE_DESCRIPTION,
                }
            },
            "wallet": {
                "minimum_topup_cents": 100,
                "minimum_topup_usd": usd(100),
                "maximum_topup_cents": 1_000_000,
                "maximum_topup_usd": usd(1_000_000),
                "currency": "USD",
            },
        }
    )


async def _health(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "healthy"})


# -- API-key management -------------------------------------------------------------------
# Authenticated by any working key of the user (or a JWT on the real service, which the sandbox
# does not have). Scopes are stored and shown but, as on the REST API as far as documented,
# not enforced: a "stems:separate" key may manage keys too.


async def _create_key(request: web.Request) -> web.StreamResponse:
    state, account, now = _account_and_now(request)  # 401/403 come before any 422, as in FastAPI
    new = parse_new_key(await _json_object(request))
    key, value = state.create_key(account, new, now=now)
    # [INFERRED] 200: FastAPI's default, and the current docs show no code (a deleted 2025 page
    # tested for 201, but its other bodies are known wrong, §14 #13).
    return web.json_response(render_created(key, value))


async def _list_keys(request: web.Request) -> web.StreamResponse:
    state, account, now = _account_and_now(request)
    status = request.query.get("status")
    if status is not None and status not in KEY_STATUSES:
        raise invalid(not_one_of("query", "status", status, KEY_STATUSES))
    keys = state.list_keys(account, status=status, now=now)
    # [INFERRED from DOCS-HIST] wrapped as {"api_keys": [...]}: the one AudioPod example of
    # this call reads `response.json()["api_keys"]` (the jobs list, by contrast, is a bare array).
    return web.json_response({"api_keys": [render_key(k, now) for k in keys]})


async def _revoke_key(request: web.Request) -> web.StreamResponse:
    state, account, now = _account_and_now(request)
    # Any string is looked up: an id that is not a UUID is simply not found (404), as with a
    # `key_id: str` path parameter.
    key = state.revoke_key(account, request.match_info["key_id"], now=now)
    return web.json_response(render_revoked(key))


# -- presigned downloads ------------------------------------------------------------------


def _s3_error(status: int, code: str, message: str) -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")


_S3_MESSAGES: Final = {
    "AccessDenied": "Request has expired or is missing its signature",
    "SignatureDoesNotMatch": "The request signature we calculated does not match the signature "
    "you provided.",
}


async def _download(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    counts = state.downloads
    counts["requests"] += 1
    # Storage needs no API key; a client that sends one leaks it to another host.
    if "X-API-Key" in request.headers or "Authorization" in request.headers:
        counts["with_credentials"] += 1
    q = request.query
    code = state.verify_download(
        request.path, expires=q.get("Expires"), signature=q.get("Signature"), now=state.clock()
    )
    if code is not None:
        counts["denied"] += 1
        return _s3_error(403, code, _S3_MESSAGES[code])
    filename = request.match_info["filename"]
    raw_id = request.match_info["job_id"]
    job = None
    if raw_id.isdigit() and filename.endswith(".wav"):
        job = state.stored_stem(int(raw_id), filename.removesuffix(".wav"))
    if job is None:
        return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
    counts["in_flight"] += 1
    counts["peak_in_flight"] = max(counts["peak_in_flight"], counts["in_flight"])
    try:
        if state.settings.download_latency_s:
            await state.sleep(state.settings.download_latency_s)  # a slow transfer
        stem_bytes = state.settings.stem_bytes
        size = stem_file_size(stem_bytes)
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        response.content_length = size
        await response.prepare(request)
        if request.method != "HEAD":
            for chunk in stem_wav_chunks(job_id=job.id, stem=filename[:-4], stem_bytes=stem_bytes):
                await response.write(chunk)
            counts["bytes"] += size
        await response.write_eof()
    finally:
        counts["in_flight"] -= 1
    counts["served"] += 1
    return response


# -- admin --------------------------------------------------------------------------------


def _require_loopback(request: web.Request) -> None:
    try:
        loopback = ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise web.HTTPForbidden(text="the sandbox admin endpoints answer loopback clients only")


async def _admin_stats(request: web.Request) -> web.StreamResponse:
    _require_loopback(request)
    return web.json_response(request.app[STATE].stats())


async def _admin_reset(request: web.Request) -> web.StreamResponse:
    _require_loopback(request)
    request.app[STATE].reset_counters()
    return web.Response(status=204)


__all__ = ["STATE", "make_app"]
