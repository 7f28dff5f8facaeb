"""What AudioPod answers about jobs and the wallet: frozen value objects parsed from JSON.

Pure: no I/O and no aiohttp. Owns the reading of the job object (contract §4), the wallet
balance (§6.1), the estimate (§6.2), the usage log (§6.4) and the price table (§6.5), plus
``ClientTimeouts`` and the field readers the API keys' models (``_key_models``) share. None of
these ever holds a key's value.

Parsing is strict where a wrong value would mislead the run and lenient where it would only
cost a paid-for job: a missing or malformed ``id``, ``download_urls`` or ``balance_cents``
raises ``InvalidResponse``; a malformed status becomes ``UNKNOWN`` (callers keep polling) and a
malformed timestamp, quality score or name becomes ``None`` or is left out. ``from_json``
raises nothing but ``InvalidResponse``, whatever it is given.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from batchpod.errors import InvalidResponse

DEFAULT_BASE_URL: Final = "https://api.audiopod.ai"
#: How messages name the key when the caller does not say where it came from.
DEFAULT_KEY_SOURCE: Final = "AUDIOPOD_API_KEY"
SERVICE_TYPE: Final = "stem_extraction"

# Ids go into URL paths; the API's are integers, so anything but a short token is suspect.
# API key ids are UUIDs (§8), which fit the same pattern.
SHORT_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_USD = re.compile(r"\s*\$?\s*(\d{1,12}(?:\.\d{1,4})?)\b")


class RemoteStatus(StrEnum):
    """A job's state as the API reports it, compared case-insensitively.

    ``ERROR`` means ``FAILED``; anything unrecognised (or missing) is ``UNKNOWN``, which callers
    treat as still running.
    """

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: object) -> RemoteStatus:
        """The status for an API value such as ``"COMPLETED"``, ``"error"`` or ``None``."""
        if not isinstance(value, str):
            return cls.UNKNOWN
        text = value.strip().lower()
        if text == "error":
            return cls.FAILED
        try:
            return cls(text)
        except ValueError:
            return cls.UNKNOWN

    @property
    def terminal(self) -> bool:
        """Whether the job will not change any more (completed or failed)."""
        return self in (RemoteStatus.COMPLETED, RemoteStatus.FAILED)


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteJob:
    """One stem job as the API last described it (§4). Mappings are read-only copies."""

    id: str
    status: RemoteStatus
    # stem name -> URL, empty until completed. Mappings take no part in hashing.
    download_urls: Mapping[str, str] = field(default_factory=dict, hash=False)
    quality_scores: Mapping[str, float] = field(default_factory=dict, hash=False)
    error_message: str | None = None
    source_type: str | None = None
    display_name: str | None = None
    input_path: str | None = None
    created_at: datetime | None = None
    completed_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not SHORT_TOKEN.fullmatch(self.id):
            raise ValueError(f"a RemoteJob id must be a short token, got {self.id!r}")
        for name in ("download_urls", "quality_scores", "raw"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @classmethod
    def from_json(cls, data: object) -> RemoteJob:
        """A job from a decoded JSON object (a submit, status or list item body)."""
        if not isinstance(data, dict):
            raise InvalidResponse(f"expected a job object, got {kind_of(data)}")
        return cls(
            id=job_id_of(data),
            status=RemoteStatus.parse(data.get("status")),
            download_urls=_download_urls(data.get("download_urls")),
            quality_scores=_scores(data.get("quality_scores")),
            error_message=text_of(data.get("error_message")),
            source_type=text_of(data.get("source_type")),
            display_name=text_of(data.get("display_name")),
            input_path=text_of(data.get("input_path")),
            created_at=parse_time(data.get("created_at")),
            completed_at=parse_time(data.get("completed_at")),
            raw=data,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Balance:
    """The API wallet (§6.1), in integer cents."""

    balance_cents: int
    total_spent_cents: int | None = None
    low_balance_warning: bool | None = None  # as the API says; None when it does not
    warning_threshold_cents: int | None = None  # only the Dec-2025 docs show it

    @classmethod
    def from_json(cls, data: object) -> Balance:
        """The balance from a decoded ``GET /api-wallet/balance`` body."""
        if not isinstance(data, dict):
            raise InvalidResponse(f"expected a balance object, got {kind_of(data)}")
        balance = cents_of(data.get("balance_cents"))
        if balance is None:
            balance = usd_cents(data.get("balance_usd"))
        if balance is None:
            raise InvalidResponse("the balance has no whole-cent 'balance_cents'")
        warning = data.get("low_balance_warning")
        return cls(
            balance_cents=balance,
            total_spent_cents=cents_of(data.get("total_spent_cents")),
            low_balance_warning=warning if isinstance(warning, bool) else None,
            warning_threshold_cents=cents_of(data.get("warning_threshold_cents")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageRow:
    """One line of the wallet's usage log (§6.4): a charge that was kept, in cents."""

    job_id: str | None  # a string on the wire, unlike the job's own integer id
    amount_cents: int
    duration_s: float | None = None
    service_type: str | None = None
    created_at: datetime | None = None

    @classmethod
    def from_json(cls, data: object) -> UsageRow:
        """A row from one decoded ``logs`` item."""
        if not isinstance(data, dict):
            raise InvalidResponse(f"expected a usage row object, got {kind_of(data)}")
        amount = cents_of(data.get("amount_cents"))
        if amount is None:
            amount = usd_cents(data.get("amount_usd"))
        if amount is None:
            raise InvalidResponse("a usage row has no whole-cent 'amount_cents'")
        raw_id = data.get("job_id")
        job_id = job_id_of({"id": raw_id}) if raw_id is not None else None
        duration = data.get("duration_seconds")
        return cls(
            job_id=job_id,
            amount_cents=amount,
            duration_s=_seconds(duration),
            service_type=text_of(data.get("service_type")),
            created_at=parse_time(data.get("created_at")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientTimeouts:
    """Time limits for one HTTP request, in seconds (``None``: no limit).

    ``connect_s`` bounds opening a connection (TCP and TLS); ``read_s`` the wait for each
    piece of a response once the request is sent; ``total_s`` a whole API request but for
    uploads; ``upload_read_s`` replaces ``read_s`` for the answer to a file upload, which the
    server may take long to store and probe. File uploads and downloads are not bound by
    ``total_s`` (a file may be large): the caller's whole-job deadline bounds them.
    """

    connect_s: float = 10.0
    read_s: float = 60.0
    total_s: float | None = None
    upload_read_s: float = 600.0

    def __post_init__(self) -> None:
        for name in ("connect_s", "read_s", "total_s", "upload_read_s"):
            value = getattr(self, name)
            if value is None and name == "total_s":
                continue
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


# -- field readers ---------------------------------------------------------------------------


def job_id_of(data: Mapping[str, Any]) -> str:
    """The job's ``id``, or ``job_id`` (§14 #1), as a string; InvalidResponse if neither fits."""
    value = data.get("id")
    if value is None:
        value = data.get("job_id")
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise InvalidResponse(f"the job object has no usable 'id' or 'job_id' ({kind_of(value)})")
    if not SHORT_TOKEN.fullmatch(text):
        raise InvalidResponse(f"the job id {text[:40]!r} is not a short token")
    return text


def parse_time(value: object) -> datetime | None:
    """An API timestamp, read leniently: ISO-8601 with or without zone or ``Z`` (naive: UTC),
    or Unix seconds. Anything else is ``None``."""
    when: datetime | None = None
    try:
        if isinstance(value, str) and value.strip():
            when = datetime.fromisoformat(value.strip())
        elif isinstance(value, int | float) and not isinstance(value, bool):
            when = datetime.fromtimestamp(value, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def cents_of(value: object) -> int | None:
    """A whole number of cents: an int, or a float with no fraction; else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def usd_cents(value: object) -> int | None:
    """Cents from a display string such as ``"$0.50"`` or ``"$0.10/min"``; else ``None``."""
    if not isinstance(value, str):
        return None
    match = _USD.match(value)
    if match is None:
        return None
    try:
        cents = Decimal(match.group(1)) * 100
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        return None
    return int(cents) if cents == cents.to_integral_value() else None


def estimate_cents_of(data: object) -> int:
    """``cost_cents`` of an estimate body, or cents parsed from ``cost_usd`` (the current docs
    show only that one)."""
    if isinstance(data, dict):
        cents = cents_of(data.get("cost_cents"))
        if cents is None:
            cents = usd_cents(data.get("cost_usd"))
        if cents is not None and cents >= 0:
            return cents
    raise InvalidResponse("the estimate has neither 'cost_cents' nor a readable 'cost_usd'")


def price_per_minute_cents_of(data: object) -> int:
    """Stem extraction's ``cents_per_minute`` from a pricing body (or its ``rate_per_minute``)."""
    services = data.get("services") if isinstance(data, dict) else None
    entry = services.get(SERVICE_TYPE) if isinstance(services, dict) else None
    if isinstance(entry, dict):
        cents = cents_of(entry.get("cents_per_minute"))
        if cents is None:
            cents = usd_cents(entry.get("rate_per_minute"))
        if cents is not None and cents >= 0:
            return cents
    raise InvalidResponse(f"the price table has no per-minute price for {SERVICE_TYPE!r}")


def usage_rows_of(data: object) -> list[UsageRow]:
    """The rows of a usage page body: ``{"page", "limit", "logs": [...]}``."""
    logs = data.get("logs") if isinstance(data, dict) else None
    if not isinstance(logs, list):
        raise InvalidResponse("the usage page has no 'logs' array")
    return [UsageRow.from_json(item) for item in logs]


def _seconds(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            return None
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    return None


def _download_urls(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidResponse(f"'download_urls' should be an object, got {kind_of(value)}")
    urls: dict[str, str] = {}
    for stem, url in value.items():
        if not isinstance(url, str) or not url.strip():
            raise InvalidResponse(f"'download_urls' for {stem[:40]!r} is not a URL")
        urls[stem] = url.strip()
    return urls


def _scores(value: object) -> dict[str, float]:
    scores: dict[str, float] = {}
    if not isinstance(value, dict):
        return scores
    for stem, score in value.items():
        if isinstance(score, int | float) and not isinstance(score, bool):
            try:
                number = float(score)
            except OverflowError:  # an integer too large for a float: not a score
                continue
            if math.isfinite(number):
                scores[stem] = number
    return scores


def text_of(value: object) -> str | None:
    """``value`` if it is a string, else ``None``."""
    return value if isinstance(value, str) else None


def kind_of(value: object) -> str:
    """What JSON gave instead, for messages: ``null``, ``list``, ``int``..., never the value."""
    return "null" if value is None else type(value).__name__
