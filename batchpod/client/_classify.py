"""The rules of the HTTP -> batchpod error seam: which ``ApiError`` a response or failure is.

Pure functions of a status, headers, body bytes or an aiohttp exception. They are applied in
exactly two places: ``Transport._send`` for the API and ``_download.fetch_to_file`` for
storage. They know the contract's error table (§9, §14 #12-13) and nothing of sessions or
files. Every piece of server text passes through ``redact`` before it reaches a message.
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Final

import aiohttp

from batchpod.budget import usd
from batchpod.errors import (
    ApiError,
    ApiKeyNotFound,
    AuthenticationError,
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
    redact,
)

from ._models import DEFAULT_KEY_SOURCE, ClientTimeouts, cents_of

#: Statuses that usually pass: the request may succeed if sent again later.
TRANSIENT_STATUSES: Final = frozenset({408, 500, 502, 503, 504})
_DETAIL_CHARS: Final = 300
_LIST_ITEMS: Final = 5
# A 403 that names one of these is about the key (api-keys.mdx: "revoked or expired"). A bare
# "invalid" is not enough ("Invalid mode for your plan" is about the plan): it must be the key.
_KEY_WORDS = re.compile(
    r"\b(revoked|expired|disabled|deactivated|inactive|not authenticated|unauthori[sz]ed|"
    r"invalid (?:api )?key|invalid token|invalid credentials)\b",
    re.IGNORECASE,
)
# ... one that names these is about what the plan allows (§5 "rejected", §9) ...
_PLAN_WORDS = re.compile(
    r"\b(plan|plans|upgrade|tier|subscription|feature|package|not included)\b", re.IGNORECASE
)
# ... and one that names these is about what the key's scopes allow (§1: scopes exist; whether
# REST checks them is undocumented). The key works: switching keys would not be the answer.
_SCOPE_WORDS = re.compile(r"\b(scope|scopes)\b", re.IGNORECASE)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_S3_FIELD = re.compile(r"<(Code|Message)>(.*?)</\1>", re.DOTALL)
_TAG = re.compile(r"<[^>]{0,200}>")


@dataclass(frozen=True, slots=True)
class Call:
    """One API request, as error messages describe it: no query string, never the key."""

    method: str
    path: str
    host: str
    submit: bool = False  # the non-idempotent submit: a 403 there is about the plan
    job_id: str | None = None  # set on a job's status and delete: a 404 is JobNotFound
    key_id: str | None = None  # set on revoking an API key: a 404 is ApiKeyNotFound

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def endpoint(self) -> str:
        """``METHOD PATH`` with the job's or key's id (the path's last segment) as ``{id}``:
        one name for all the requests of a kind, as metrics label them."""
        path = self.path
        if self.job_id is not None or self.key_id is not None:
            path = path.rpartition("/")[0] + "/{id}"
        return f"{self.method} {path}"


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date.

    ``now`` is Unix seconds. A date in the past gives ``0.0``; garbage gives ``None``.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def decode_json(body: bytes, call: Call) -> Any:
    """The JSON value of a successful response's body, or InvalidResponse."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, digit limits
        raise InvalidResponse(
            f"{call} answered with something that is not JSON; check the base URL points at "
            "the AudioPod API (not a proxy or web page), or retry later",
            body_snippet=_excerpt(body),
        ) from exc


def server_detail(body: bytes, *, secrets: Iterable[str] = ()) -> str | None:
    """What the server said about an error, on one line: FastAPI's ``detail`` (a string, an
    object or a list of validation errors), ``message`` or ``error`` (§14 #13); the title of
    an HTML page; the code and message of an S3 XML error; else the start of the text."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return None
    found: str | None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        found = _markup_detail(text)
    else:
        found = _detail_of(data)
    if not found:
        return None
    flat = " ".join(redact(found, secrets=secrets).split())
    return flat if len(flat) <= _DETAIL_CHARS else flat[: _DETAIL_CHARS - 1] + "…"


def error_for_status(
    call: Call,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    secrets: Iterable[str] = (),
    key_source: str = DEFAULT_KEY_SOURCE,
) -> ApiError:
    """The error an unsuccessful API response stands for (the contract's §9 table).

    ``key_source`` names where the request's key came from (never the key), for the messages
    of a refused key.
    """
    secrets = tuple(secrets)
    detail = server_detail(body, secrets=secrets)
    said = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    snippet = redact(body[:1000].decode("utf-8", "replace"), secrets=secrets)
    common: dict[str, Any] = {"http_status": status, "body_snippet": snippet}
    if status == 401:
        return AuthenticationError(
            f"invalid or missing key: check {key_source} (AudioPod answered {said})",
            source=key_source,
            **common,
        )
    if status == 402:
        required, available = _balance_figures(body)
        return InsufficientBalance(
            f"the AudioPod wallet cannot pay for this job ({_money_said(said, required, available)}"
            "); top up the API wallet or run fewer jobs",
            required_cents=required,
            available_cents=available,
            **common,
        )
    if status == 403:
        return _forbidden(call, said, detail or "", common, key_source=key_source)
    if status == 429:
        wait = parse_retry_after(headers.get("Retry-After"), now=now)
        when = f"retry after {wait:g} s" if wait is not None else "retry later"
        return RateLimited(
            f"AudioPod is rate-limiting this key ({said}); {when} or send fewer requests",
            retry_after_s=wait,
            **common,
        )
    if status in TRANSIENT_STATUSES:
        return ServerError(
            f"AudioPod or a proxy in front of it failed on {call} ({said}); this is usually "
            "temporary: retry later",
            retry_after_s=parse_retry_after(headers.get("Retry-After"), now=now),
            **common,
        )
    if 500 <= status <= 599:  # 501, 505, ...: not a passing condition
        return ServerError(
            f"AudioPod or a proxy in front of it cannot serve {call} ({said})",
            transient=False,
            **common,
        )
    if status == 404 and call.job_id is not None:
        return JobNotFound(
            f"job {call.job_id}: {detail or 'not found'} (deleted, or made with another key)",
            job_id=call.job_id,
            **common,
        )
    if status == 404 and call.key_id is not None:
        return ApiKeyNotFound(
            f"no API key with id {call.key_id} ({said}): list the keys to see their ids",
            key_id=call.key_id,
            **common,
        )
    if status == 404:
        return RequestRejected(
            f"{call}: {said}; check the base URL (the API lives at /api/v1/ under it)", **common
        )
    if 400 <= status <= 499:
        return RequestRejected(detail or f"{call} was refused with HTTP {status}", **common)
    if 300 <= status <= 399:
        where = headers.get("Location", "")
        return InvalidResponse(
            f"{call} was redirected ({said}) to {redact(where[:200], secrets=secrets)!r}; "
            "batchpod does not follow API redirects (they could carry the key elsewhere): "
            "check the base URL",
            **common,
        )
    return InvalidResponse(f"{call} gave an unexpected HTTP {status}", **common)


def error_for_exception(
    call: Call, exc: BaseException, *, timeouts: ClientTimeouts, read_s: float
) -> ApiError:
    """The error an aiohttp failure (or an expired total timeout) stands for.

    ``sent`` is False only when no connection was made, so nothing can have reached the server.
    """
    host = call.host
    if isinstance(exc, aiohttp.ClientSSLError):
        return TransportError(
            f"TLS with {host} failed ({_reason(exc)}); batchpod always verifies certificates: "
            "check the base URL and the system's CA certificates",
            sent=False,
            transient=False,
        )
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return TransportError(
            f"cannot resolve {host}: check the base URL and the network", sent=False
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TransportError(
            f"cannot connect to {host} ({_reason(exc)}): check the base URL and the network",
            sent=False,
        )
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return TransportError(
            f"timed out connecting to {host} after {timeouts.connect_s:g} s: check the network",
            sent=False,
            timed_out=True,
        )
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return TransportError(
            f"{host} sent no answer to {call} within {read_s:g} s; it may still have acted on it",
            sent=True,
            timed_out=True,
        )
    if isinstance(exc, aiohttp.ClientResponseError):  # a malformed HTTP answer, no status
        return InvalidResponse(f"{host} sent a malformed HTTP response to {call}: {exc.message}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransportError(f"the answer from {host} to {call} was cut off", sent=True)
    if isinstance(exc, aiohttp.InvalidURL):
        return TransportError(f"cannot send {call} to {host}: the URL is invalid", sent=False)
    if isinstance(exc, aiohttp.ClientError):
        return TransportError(
            f"the connection to {host} broke during {call} ({_reason(exc)})", sent=True
        )
    # The whole-request time limit: it may have run out before or after sending.
    limit = f" after {timeouts.total_s:g} s" if timeouts.total_s is not None else ""
    return TransportError(f"{call} to {host} timed out{limit}", sent=True, timed_out=True)


def storage_error(status: int, body: bytes, *, where: str) -> DownloadError:
    """The error for a storage host's answer other than 200 (S3-style XML bodies)."""
    detail = server_detail(body)
    said = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    snippet = body[:1000].decode("utf-8", "replace")
    if status in (403, 404):
        return DownloadLinkExpired(
            f"the storage host refused {where} ({said}); the link has probably expired: "
            "fetch the job's status again for fresh links",
            http_status=status,
            body_snippet=snippet,
        )
    transient = status == 429 or status in TRANSIENT_STATUSES
    return DownloadError(
        f"the storage host failed to serve {where} ({said})"
        + ("; retry later" if transient else ""),
        http_status=status,
        transient=transient,
        body_snippet=snippet,
    )


def download_failure(exc: BaseException, *, where: str) -> DownloadError:
    """The error for a connection failure or timeout while downloading: worth retrying."""
    if isinstance(exc, aiohttp.ClientSSLError):
        return DownloadError(
            f"TLS with the storage host failed for {where} ({_reason(exc)})", transient=False
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        reason = "the transfer was cut off"
    elif isinstance(exc, TimeoutError):
        reason = "it timed out"
    else:
        reason = _reason(exc)
    return DownloadError(f"downloading {where} failed ({reason}); retry", transient=True)


# -- helpers ---------------------------------------------------------------------------------


def _forbidden(
    call: Call, said: str, detail: str, common: dict[str, Any], *, key_source: str
) -> ApiError:
    """403 is the key (revoked, expired), the plan (a gated mode) or the key's scopes: tell them
    apart by the body, the key first (a dead key stops everything; a fallback key may help).

    When the body says none of these, a 403 on submit is taken as the plan (that job fails,
    the run goes on), and anywhere else as the key (no other request depends on the plan).
    """
    key_words = {m.lower() for m in _KEY_WORDS.findall(detail)}
    if key_words:
        reason = next((w for w in ("expired", "revoked") if w in key_words), None)
        return KeyRevoked(
            f"key revoked or expired: create a new key and put it in {key_source} "
            f"(AudioPod answered {said})",
            reason=reason,
            source=key_source,
            **common,
        )
    if _PLAN_WORDS.search(detail) or (call.submit and not _SCOPE_WORDS.search(detail)):
        return PermissionDenied(
            f"this AudioPod plan may not run this job ({said}); upgrade the plan or use another "
            "mode",
            **common,
        )
    if _SCOPE_WORDS.search(detail):
        return PermissionDenied(
            f"the key in {key_source} works, but its scopes do not allow {call} ({said}); use a "
            'key created with the "*" scope',
            **common,
        )
    return KeyRevoked(
        f"key refused, probably revoked or expired: create a new key and put it in "
        f"{key_source} (AudioPod answered {said})",
        source=key_source,
        **common,
    )


def _balance_figures(body: bytes) -> tuple[int | None, int | None]:
    """``required_cents`` and ``available_cents`` of a 402, top-level or under ``detail``."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None, None
    for place in (data, data.get("detail") if isinstance(data, dict) else None):
        if isinstance(place, dict) and ("required_cents" in place or "available_cents" in place):
            return cents_of(place.get("required_cents")), cents_of(place.get("available_cents"))
    return None, None


def _money_said(said: str, required: int | None, available: int | None) -> str:
    if required is None or available is None:
        return said
    return f"needs {usd(required)}, has {usd(available)}; HTTP 402"


def _detail_of(data: object) -> str | None:
    if isinstance(data, dict):
        for key in ("detail", "message", "error"):
            value = data.get(key)
            if value is not None and (found := _flatten(value)):
                return found
        return None
    return _flatten(data)


def _flatten(value: object, depth: int = 0) -> str:
    """One line of text from a detail value: a string, an object or a validation list."""
    if isinstance(value, str):
        return value
    if depth > 3:
        return ""
    if isinstance(value, dict):
        if "msg" in value:
            return _validation_item(value)
        for key in ("message", "detail", "error", "code"):
            if value.get(key) is not None and (found := _flatten(value[key], depth + 1)):
                return found
        return _compact(value)
    if isinstance(value, list):
        parts = [_flatten(item, depth + 1) for item in value[:_LIST_ITEMS]]
        more = len(value) - _LIST_ITEMS
        text = "; ".join(p for p in parts if p)
        return f"{text} (and {more} more)" if more > 0 else text
    return _compact(value)


def _validation_item(item: Mapping[str, Any]) -> str:
    """``mode: Input should be ...`` from a FastAPI/pydantic error record."""
    loc = item.get("loc")
    parts = [str(p) for p in loc] if isinstance(loc, list) else []
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    msg = item.get("msg")
    text = msg if isinstance(msg, str) else _compact(msg)
    return f"{'.'.join(parts)}: {text}" if parts else text


def _compact(value: object) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), default=str)[:_DETAIL_CHARS]
    except (ValueError, RecursionError):
        return ""


def _markup_detail(text: str) -> str:
    """The useful line of a non-JSON body: an S3 error's code and message, an HTML title."""
    fields = dict(_S3_FIELD.findall(text[:10_000]))
    if fields:
        return ": ".join(v for k in ("Code", "Message") if (v := fields.get(k)))
    title = _TITLE.search(text[:10_000])
    if title:
        return _TAG.sub(" ", title.group(1))
    return _TAG.sub(" ", text[: _DETAIL_CHARS * 2])


def _excerpt(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace")


def _reason(exc: BaseException) -> str:
    """A short reason for a connection failure, without aiohttp's repr noise."""
    for error in (getattr(exc, "os_error", None), exc):
        if isinstance(error, OSError) and error.errno:
            return os.strerror(error.errno)  # "Connection refused", not aiohttp's wording
    text = str(exc) or type(exc).__name__
    return text[:200]
