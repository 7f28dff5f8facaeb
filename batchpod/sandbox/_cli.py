"""Glue for `batchpod sandbox`: the knob flags, settings from them, and a foreground server.

Kept here so the command can expose every knob without this package importing batchpod.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from decimal import Decimal, InvalidOperation
from typing import TextIO

from ._contract import PLANS, usd
from ._run import DEFAULT_HOST, DEFAULT_PORT, serve
from ._settings import BALANCE_ERROR_SHAPES, KEY_STATUSES, KeySpec, SandboxSettings


def _dollars_to_cents(text: str) -> int:
    try:
        value = Decimal(text.strip().lstrip("$"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount in dollars: {text!r}") from None
    cents = value * 100
    if not value.is_finite() or value < 0 or cents != cents.to_integral_value():
        raise argparse.ArgumentTypeError(f"dollars must be >= 0 with at most 2 decimals: {text!r}")
    return int(cents)


def _processing(text: str) -> float | tuple[float, float]:
    lo, sep, hi = text.partition("-")
    try:
        if sep:
            return (float(lo), float(hi))
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected SECONDS or MIN-MAX seconds, e.g. 5 or 2-8: {text!r}"
        ) from None


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    factor = units.get(t[-1:], 1)
    number = t[:-1] if t[-1:] in units else t
    try:
        value = int(number) * factor
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected bytes, e.g. 1048576 or 10M: {text!r}") from None
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction 0..1: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction 0..1: {text!r}")
    return value


def _retry_after(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole seconds or 'none': {text!r}") from None


def _extra_key(text: str) -> tuple[str, KeySpec]:
    key, sep, rest = text.partition("=")
    parts = rest.split(":") if sep else []
    if not key or not 1 <= len(parts) <= 3:
        raise argparse.ArgumentTypeError(
            f"expected KEY=PLAN[:DOLLARS[:STATUS]], e.g. ap_b=basic:5:revoked: {text!r}"
        )
    plan = parts[0]
    cents = _dollars_to_cents(parts[1]) if len(parts) > 1 else 10_000
    status = parts[2] if len(parts) > 2 else "active"
    try:
        return key, KeySpec(plan=plan, balance_cents=cents, status=status)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def add_arguments(parser: argparse.ArgumentParser, *, server: bool = True) -> None:
    """Add the sandbox's flags to `parser`; `server=False` leaves out --host/--port.

    Knob destinations are prefixed `sandbox_` so they cannot clash with a host command's own.
    """
    d = SandboxSettings()
    if server:
        parser.add_argument(
            "--host",
            default=DEFAULT_HOST,
            help="address to listen on (default %(default)s; loopback only unless --allow-remote)",
        )
        parser.add_argument(
            "--port",
            type=int,
            default=DEFAULT_PORT,
            help="port to listen on; 0 picks a free one (default %(default)s)",
        )
        parser.add_argument(
            "--allow-remote",
            action="store_true",
            help="allow a non-loopback --host (the sandbox has no real security)",
        )
    g = parser.add_argument_group("sandbox knobs")
    add = g.add_argument
    add(
        "--api-key",
        dest="sandbox_api_key",
        default=d.api_key,
        metavar="KEY",
        help="the ready API key; must start with ap_ (default %(default)s)",
    )
    add(
        "--plan",
        dest="sandbox_plan",
        choices=PLANS,
        default=d.plan,
        help="plan of the ready key: producer needs creator+, studio/mastering pro+ "
        "(default %(default)s)",
    )
    add(
        "--balance",
        dest="sandbox_balance_cents",
        type=_dollars_to_cents,
        default=d.balance_cents,
        metavar="DOLLARS",
        help=f"starting wallet of the ready key in dollars (default {usd(d.balance_cents)[1:]})",
    )
    add(
        "--extra-key",
        dest="sandbox_extra_keys",
        type=_extra_key,
        action="append",
        default=[],
        metavar="KEY=PLAN[:DOLLARS[:STATUS]]",
        help=f"another key (repeatable); STATUS is one of {', '.join(KEY_STATUSES)}",
    )
    add(
        "--processing-time",
        dest="sandbox_processing_s",
        type=_processing,
        default=d.processing_s,
        metavar="SECONDS|MIN-MAX",
        help="seconds from submit to COMPLETED/FAILED, fixed or a per-job range (default 5-15)",
    )
    add(
        "--latency",
        dest="sandbox_latency_s",
        type=float,
        default=d.latency_s,
        metavar="SECONDS",
        help="delay added to every API response (default %(default)s)",
    )
    add(
        "--download-latency",
        dest="sandbox_download_latency_s",
        type=float,
        default=d.download_latency_s,
        metavar="SECONDS",
        help="delay added to every stem download, after its link is checked (default %(default)s)",
    )
    add(
        "--delete-reply-delay",
        dest="sandbox_delete_reply_delay_s",
        type=float,
        default=d.delete_reply_delay_s,
        metavar="SECONDS",
        help="delay between a delete removing its job and the reply (default %(default)s)",
    )
    add(
        "--submit-reply-delay",
        dest="sandbox_submit_reply_delay_s",
        type=float,
        default=d.submit_reply_delay_s,
        metavar="SECONDS",
        help="delay between a submit creating its job and the reply, to test crashes in that "
        "window (default %(default)s)",
    )
    add(
        "--failure-rate",
        dest="sandbox_failure_rate",
        type=_fraction,
        default=d.failure_rate,
        metavar="FRACTION",
        help="fraction of jobs that end FAILED and are refunded (default %(default)s)",
    )
    add(
        "--rate-429",
        dest="sandbox_rate_429",
        type=_fraction,
        default=d.rate_429,
        metavar="FRACTION",
        help="fraction of API requests answered 429 with Retry-After (default %(default)s)",
    )
    add(
        "--rate-5xx",
        dest="sandbox_rate_5xx",
        type=_fraction,
        default=d.rate_5xx,
        metavar="FRACTION",
        help="fraction of API requests answered 500/502/503 (default %(default)s)",
    )
    add(
        "--lost-submit-rate",
        dest="sandbox_lost_submit_rate",
        type=_fraction,
        default=d.lost_submit_rate,
        metavar="FRACTION",
        help="fraction of submits that create and charge the job but answer 502 "
        "(default %(default)s)",
    )
    add(
        "--lost-submit-mode",
        dest="sandbox_lost_submit_mode",
        choices=("502", "drop"),
        default=d.lost_submit_mode,
        help="how a lost submit reply is lost: a 502, or the connection dropped "
        "(default %(default)s)",
    )
    add(
        "--retry-after",
        dest="sandbox_retry_after_s",
        type=_retry_after,
        default=d.retry_after_s,
        metavar="SECONDS|none",
        help="Retry-After on injected 429/503 responses; 'none' omits it (default %(default)s)",
    )
    add(
        "--rps-limit",
        dest="sandbox_rps_limit",
        type=float,
        default=d.rps_limit,
        metavar="N",
        help="requests per second allowed per key, excess answered 429 (default: unlimited)",
    )
    add(
        "--download-ttl",
        dest="sandbox_download_ttl_s",
        type=float,
        default=d.download_ttl_s,
        metavar="SECONDS",
        help="lifetime of presigned download URLs (default %(default)s)",
    )
    add(
        "--download-host",
        dest="sandbox_download_host",
        default=d.download_host,
        metavar="HOST",
        help="host name put in download URLs, e.g. localhost (default: the API's)",
    )
    add(
        "--stem-bytes",
        dest="sandbox_stem_bytes",
        type=_size,
        default=d.stem_bytes,
        metavar="BYTES",
        help="audio bytes in each served stem WAV; suffixes K/M/G (default %(default)s = 1 s)",
    )
    add(
        "--no-sparse-stems",
        dest="sandbox_sparse_stems",
        action="store_false",
        help="producer/studio/mastering always return every stem name",
    )
    add(
        "--seed",
        dest="sandbox_seed",
        type=int,
        metavar="N",
        default=d.seed,
        help="seed for every random choice, for reproducible runs (default %(default)s)",
    )
    add(
        "--upload-cap",
        dest="sandbox_upload_cap_bytes",
        type=_size,
        default=d.upload_cap_bytes,
        metavar="BYTES",
        help="upload limit for every plan; K/M/G suffixes "
        "(default: 250M basic, 500M creator, 1G pro+)",
    )
    add(
        "--balance-error-shape",
        dest="sandbox_balance_error_shape",
        choices=BALANCE_ERROR_SHAPES,
        default=d.balance_error_shape,
        help="402 body: top-level fields (documented) or nested under detail (default %(default)s)",
    )


def settings_from_args(ns: argparse.Namespace) -> SandboxSettings:
    """The settings the parsed flags describe; ValueError names a bad combination."""
    return SandboxSettings(
        api_key=ns.sandbox_api_key,
        plan=ns.sandbox_plan,
        balance_cents=ns.sandbox_balance_cents,
        extra_keys=dict(ns.sandbox_extra_keys),
        processing_s=ns.sandbox_processing_s,
        latency_s=ns.sandbox_latency_s,
        download_latency_s=ns.sandbox_download_latency_s,
        failure_rate=ns.sandbox_failure_rate,
        rate_429=ns.sandbox_rate_429,
        rate_5xx=ns.sandbox_rate_5xx,
        lost_submit_rate=ns.sandbox_lost_submit_rate,
        lost_submit_mode=ns.sandbox_lost_submit_mode,
        submit_reply_delay_s=ns.sandbox_submit_reply_delay_s,
        delete_reply_delay_s=ns.sandbox_delete_reply_delay_s,
        retry_after_s=ns.sandbox_retry_after_s,
        rps_limit=ns.sandbox_rps_limit,
        download_ttl_s=ns.sandbox_download_ttl_s,
        download_host=ns.sandbox_download_host,
        stem_bytes=ns.sandbox_stem_bytes,
        sparse_stems=ns.sandbox_sparse_stems,
        seed=ns.sandbox_seed,
        upload_cap_bytes=ns.sandbox_upload_cap_bytes,
        balance_error_shape=ns.sandbox_balance_error_shape,
    )


def serve_forever(
    settings: SandboxSettings,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    out: TextIO,
    allow_remote: bool = False,
) -> None:
    """Serve until SIGINT or SIGTERM, printing the base URL and a ready key to `out`.

    Returns normally after a clean shutdown. OSError (port in use) and ValueError (refused
    host) propagate before anything is printed.
    """
    asyncio.run(_serve_until_signalled(settings, host, port, out=out, allow_remote=allow_remote))


async def _serve_until_signalled(
    settings: SandboxSettings, host: str, port: int, *, out: TextIO, allow_remote: bool
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not available off the main thread or on Windows; Ctrl-C then raises
        # KeyboardInterrupt to the caller instead.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        async with serve(settings, host=host, port=port, allow_remote=allow_remote) as sb:
            s = settings
            lo, hi = s.processing_range_s
            timing = f"{lo:g}s" if lo == hi else f"{lo:g}-{hi:g}s"
            out.write(
                f"AudioPod sandbox listening on {sb.base_url} "
                f"(plan {s.plan}, balance {usd(s.balance_cents)}, jobs take {timing})\n"
                f"export AUDIOPOD_BASE_URL={sb.base_url}\n"
                f"export AUDIOPOD_API_KEY={sb.api_key}\n"
                f"Stats: {sb.base_url}/_sandbox/stats - press Ctrl-C to stop.\n"
            )
            out.flush()
            await stop.wait()
        out.write("Sandbox stopped.\n")
        out.flush()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
