"""The sandbox's knobs: one frozen value object, validated when built.

Imports nothing from batchpod.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from ._contract import PLANS

KEY_STATUSES: Final = ("active", "revoked", "expired")
BALANCE_ERROR_SHAPES: Final = ("top", "detail")
DEFAULT_API_KEY: Final = "ap_sandbox_0123456789abcdef"


def _check_rate(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a fraction between 0 and 1, got {value!r}")


def _check_seconds(name: str, value: float, *, positive: bool = False) -> None:
    ok = isinstance(value, int | float) and math.isfinite(value) and value >= 0
    if not ok or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")


def _check_cents(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number of cents >= 0, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySpec:
    """An extra API key, and the user it alone belongs to: plan, starting wallet, and whether
    the key still works."""

    plan: str = "pro"
    balance_cents: int = 10_000
    status: str = "active"  # "revoked" or "expired" answer 403 on every authenticated call

    def __post_init__(self) -> None:
        if self.plan not in PLANS:
            raise ValueError(f"plan must be one of {', '.join(PLANS)}, got {self.plan!r}")
        _check_cents("balance_cents", self.balance_cents)
        if self.status not in KEY_STATUSES:
            raise ValueError(f"status must be one of {', '.join(KEY_STATUSES)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxSettings:
    """Every knob of the sandbox. Defaults give a well-behaved Pro account with $100.00.

    Rates are fractions of requests (or of jobs, for `failure_rate`) drawn from RNGs seeded by
    `seed`, so a run repeats exactly when its requests arrive in the same order.
    """

    api_key: str = DEFAULT_API_KEY  # the ready key `serve()` hands out
    plan: str = "pro"  # plan of `api_key`
    balance_cents: int = 10_000  # starting wallet of `api_key`
    # Excluded from the hash (a mapping is unhashable) but not from equality.
    extra_keys: Mapping[str, KeySpec] = field(default_factory=dict, hash=False)
    # Seconds from submit to a terminal state: one number, or a (min, max) range drawn per job.
    # The first quarter of it is PENDING, the rest PROCESSING.
    processing_s: float | tuple[float, float] = (5.0, 15.0)
    latency_s: float = 0.0  # added before every /api/ and /health response
    download_latency_s: float = 0.0  # added to every stem download, after its link is checked
    submit_reply_delay_s: float = 0.0  # after a submit creates its job, before the reply
    delete_reply_delay_s: float = 0.0  # after a delete removes its job, before the reply
    failure_rate: float = 0.0  # fraction of jobs that end FAILED (and are refunded)
    rate_429: float = 0.0  # fraction of /api/ requests answered 429 before any work
    rate_5xx: float = 0.0  # fraction of /api/ requests answered 500/502/503 before any work
    # Fraction of accepted submits whose job is created and charged but whose response is
    # replaced by a 502, as when a proxy gives up on a slow backend. Lets a client prove it
    # reconciles an ambiguous submit instead of paying twice.
    lost_submit_rate: float = 0.0
    # How a lost response is lost: "502" (a proxy's error page) or "drop" (the connection is
    # closed with no response at all, as when a load balancer resets it).
    lost_submit_mode: str = "502"
    retry_after_s: int | None = 1  # Retry-After on 429s and 503s; None omits the header
    rps_limit: float | None = None  # per-key requests per second (1 s burst); excess gets 429
    download_ttl_s: float = 3600.0  # lifetime of each presigned download URL
    download_host: str | None = None  # host put in download URLs (same port); None: as requested
    stem_bytes: int = 32_000  # audio bytes per served stem WAV (16 kHz mono 16-bit: 1 s)
    sparse_stems: bool = True  # producer/studio/mastering omit some "absent" instruments
    seed: int = 0
    upload_cap_bytes: int | None = None  # overrides every plan's upload cap
    balance_error_shape: str = "top"  # 402 body: "top" (documented) or "detail" (nested)

    def __post_init__(self) -> None:
        keys = dict(self.extra_keys)
        for key, spec in keys.items():
            if not isinstance(spec, KeySpec):
                raise ValueError(f"extra_keys[{key!r}] must be a KeySpec")
        for key in (self.api_key, *keys):
            if not isinstance(key, str) or not key.startswith("ap_") or len(key) < 4:
                raise ValueError(f"API keys must start with 'ap_' (the SDK insists), got {key!r}")
        if self.api_key in keys:
            raise ValueError(f"{self.api_key!r} is both api_key and an extra key")
        object.__setattr__(self, "extra_keys", MappingProxyType(keys))
        if self.plan not in PLANS:
            raise ValueError(f"plan must be one of {', '.join(PLANS)}, got {self.plan!r}")
        _check_cents("balance_cents", self.balance_cents)
        lo, hi = self.processing_range_s
        _check_seconds("processing_s", lo)
        _check_seconds("processing_s", hi)
        if lo > hi:
            raise ValueError(f"processing_s range is reversed: {lo} > {hi}")
        _check_seconds("latency_s", self.latency_s)
        _check_seconds("download_latency_s", self.download_latency_s)
        _check_seconds("submit_reply_delay_s", self.submit_reply_delay_s)
        _check_seconds("delete_reply_delay_s", self.delete_reply_delay_s)
        for name in ("failure_rate", "rate_429", "rate_5xx", "lost_submit_rate"):
            _check_rate(name, getattr(self, name))
        if self.rate_429 + self.rate_5xx > 1.0:
            raise ValueError("rate_429 + rate_5xx must not exceed 1")
        if self.retry_after_s is not None and (
            isinstance(self.retry_after_s, bool)
            or not isinstance(self.retry_after_s, int)
            or self.retry_after_s < 0
        ):
            raise ValueError("retry_after_s must be whole seconds >= 0, or None")
        if self.rps_limit is not None:
            _check_seconds("rps_limit", self.rps_limit, positive=True)
        _check_seconds("download_ttl_s", self.download_ttl_s, positive=True)
        if self.download_host is not None and (
            not self.download_host or any(c in self.download_host for c in "/:@?# ")
        ):
            raise ValueError("download_host must be a bare host name, e.g. 'localhost'")
        if isinstance(self.stem_bytes, bool) or not isinstance(self.stem_bytes, int):
            raise ValueError("stem_bytes must be an integer")
        if self.stem_bytes < 2:
            raise ValueError("stem_bytes must be >= 2")
        if self.upload_cap_bytes is not None and (
            isinstance(self.upload_cap_bytes, bool)
            or not isinstance(self.upload_cap_bytes, int)
            or self.upload_cap_bytes < 1
        ):
            raise ValueError("upload_cap_bytes must be a positive integer, or None")
        if self.lost_submit_mode not in ("502", "drop"):
            raise ValueError("lost_submit_mode must be '502' or 'drop'")
        if self.balance_error_shape not in BALANCE_ERROR_SHAPES:
            raise ValueError(f"balance_error_shape must be one of {BALANCE_ERROR_SHAPES}")

    @property
    def processing_range_s(self) -> tuple[float, float]:
        """`processing_s` as a (min, max) pair."""
        if isinstance(self.processing_s, tuple):
            if len(self.processing_s) != 2:
                raise ValueError("processing_s must be seconds or a (min, max) pair")
            return (self.processing_s[0], self.processing_s[1])
        return (self.processing_s, self.processing_s)

    def all_keys(self) -> dict[str, KeySpec]:
        """Every configured key, the ready `api_key` first."""
        main = KeySpec(plan=self.plan, balance_cents=self.balance_cents)
        return {self.api_key: main, **self.extra_keys}
