"""What several commands share: their common options, and the values those options become.

The API options (``--sandbox``, ``--api-key-env``, ``--api-key-file``, ``--base-url``) sit
next to the code that turns them into a key source, a key and a client, and the money options
(``--max-spend``, ``--keep-balance``, ``--assume-duration``) next to the argparse types that
check every number a command takes. A type raises ``argparse.ArgumentTypeError``, so a bad
value is a usage error (exit 2) with argparse's own message.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TextIO, TypeAlias, TypeVar

from batchpod.api import api_endpoint
from batchpod.budget import dollars_to_cents
from batchpod.client import DEFAULT_BASE_URL, ApiClient
from batchpod.config import BASE_URL_ENV, RunConfig
from batchpod.errors import ConfigError
from batchpod.fleet import DatabaseUrl, is_database_url
from batchpod.keys import DEFAULT_KEY_VARIABLE, KeySource, read_key
from batchpod.models import Location, Manifest, location
from batchpod.pings import check_ping_url
from batchpod.shards import Shard
from batchpod.storage import check_endpoint

N = TypeVar("N", int, float)

PROG = "batchpod"
#: The run's defaults, shown in --help and given to argparse: written once, in RunConfig.
DEFAULTS = RunConfig()

#: What ``add_subparsers()`` returns; each command module adds its parsers to it. (A string:
#: argparse's action class is not subscriptable at run time.)
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that say which API to talk to and with which key."""
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="run against a local sandbox AudioPod started for this command (no account, "
        "no network, nothing charged)",
    )
    parser.add_argument(
        "--api-key-env",
        metavar="NAME",
        help=f"environment variable holding the API key (default: {DEFAULT_KEY_VARIABLE}), such as "
        "one per environment: AUDIOPOD_API_KEY_PROD",
    )
    parser.add_argument(
        "--api-key-file",
        metavar="PATH",
        type=Path,
        help="read the API key from this file (as secret managers mount them); it must be "
        "readable by its owner only (chmod 600)",
    )
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help=f"the AudioPod API's address (default: ${BASE_URL_ENV} or {DEFAULT_BASE_URL})",
    )


def add_money_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the budget options that override the manifest's, and the assumed song length."""
    parser.add_argument(
        "--max-spend",
        metavar="USD",
        type=dollars,
        help="the most this run may spend, in dollars (overrides budget.max_spend_usd)",
    )
    parser.add_argument(
        "--keep-balance",
        metavar="USD",
        type=dollars,
        help="the balance to leave in the wallet, in dollars (overrides budget.keep_balance_usd)",
    )
    parser.add_argument(
        "--assume-duration",
        metavar="MINUTES",
        type=positive_float,
        default=DEFAULTS.assumed_duration_s / 60,
        help="the length assumed for songs of unknown length, in minutes "
        f"(default: {DEFAULTS.assumed_duration_s / 60:g})",
    )


def dollars(text: str) -> int:
    """Dollars as typed ('5', '12.50', '$3') -> integer cents."""
    try:
        value = Decimal(text.strip().removeprefix("$"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount in dollars: {text!r}") from None
    try:
        return dollars_to_cents(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"dollars >= 0 in whole cents, please: {text!r}") from None


def number(
    convert: Callable[[str], N], noun: str, accept: Callable[[N], bool], requirement: str
) -> Callable[[str], N]:
    """An argparse type: ``convert`` the text, then insist that ``accept`` holds."""

    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{requirement}: {text}")
        return value

    return parse


positive_float = number(float, "a number", lambda v: 0 < v < math.inf, "must be above 0")
seconds = number(float, "a number of seconds", lambda v: v >= 0, "must be 0 or more")
positive_int = number(int, "a whole number", lambda v: v >= 1, "must be at least 1")
count = number(int, "a whole number", lambda v: v >= 0, "must be 0 or more")


def shard(text: str) -> Shard:
    """An argparse type: ``I/N``, shard I (from 0) of N."""
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def state(text: str) -> Path | str:
    """An argparse type for ``--state``: an SQLite file's path, or a ``postgresql://`` URL
    (kept as text; an error about it never repeats it, as it may hold a password)."""
    if is_database_url(text):
        try:
            DatabaseUrl(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text
    return Path(text)


def output_location(text: str) -> Location:
    """An argparse type for ``--output-dir``: a folder, or ``s3://``, ``gs://``, ``az://``.
    A bad URL is not repeated: it may hold credentials typed into it."""
    try:
        return location(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a folder or bucket URL: {exc}") from None


def endpoint(text: str) -> str:
    """An argparse type for ``--output-endpoint``: https, or http to loopback only."""
    try:
        return check_endpoint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_storage_arguments(parser: argparse.ArgumentParser, *, verb: str) -> None:
    """``--output-dir`` and ``--output-endpoint``."""
    parser.add_argument(
        "--output-dir",
        metavar="PATH|URL",
        type=output_location,
        help=f"where stems are {verb}: a folder, or s3://BUCKET/PREFIX, gs://..., az://... "
        "(overriding the manifest's 'output_dir')",
    )
    parser.add_argument(
        "--output-endpoint",
        metavar="URL",
        type=endpoint,
        help="an S3-compatible store's address for s3:// (MinIO, R2, Ceph); https, or plain "
        "http to this machine only (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, "
        "else AWS's own)",
    )


def report_globs(
    manifest: Manifest, shown: str, out: TextIO | None, err: TextIO, *, strict: bool
) -> None:
    """Each 'files:' job's count of matches (to ``out``, if given), and a warning with its
    place for each that matched nothing: an empty night is no error, unless ``strict``
    (then ConfigError, exit 2)."""
    empty = []
    for glob in manifest.globs:
        where = f"{shown}:{glob.line}:{glob.column}"
        if out is not None:
            repeats = glob.matched - glob.jobs
            extra = f" ({repeats} already listed)" if repeats else ""
            print(
                f"{where}: 'files' {glob.pattern!r} matched {glob.matched} files{extra}", file=out
            )
        if not glob.matched:
            empty.append(f"{where}: 'files' {glob.pattern!r} matched no files")
    if empty and strict:
        raise ConfigError("; ".join(empty) + " (--strict)")
    for line in empty:
        print(f"{line} (a warning: --strict makes it an error)", file=err)


def sqlite_state(args: argparse.Namespace, command: str) -> Path | None:
    """``--state`` for a command that reads only an SQLite state."""
    if isinstance(args.state, str):
        raise ConfigError(
            f"{command} reads an SQLite state file; for a fleet's PostgreSQL state, "
            "'batchpod status' and 'batchpod results' show what it holds"
        )
    value: Path | None = args.state
    return value


_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def duration(text: str) -> float:
    """An argparse type: seconds, or a number with a unit (``90s``, ``45m``, ``2h``)."""
    amount, unit = text.strip(), "s"
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if amount.lower().endswith(suffix):
            amount, unit = amount[: -len(suffix)].strip(), suffix
            break
    total = positive_float(amount) * _UNITS[unit]
    if not math.isfinite(total):
        raise argparse.ArgumentTypeError(f"must be a finite time: {text}")
    return total


def http_url(text: str) -> str:
    """An argparse type: an http:// or https:// URL with a host."""
    try:
        return check_ping_url(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


_SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def byte_size(text: str) -> int:
    """An argparse type: bytes, or a whole number with K, M or G (KiB, MiB, GiB)."""
    amount = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = amount[-1:] if amount[-1:] in _SIZE_UNITS else ""
    return positive_int(amount[: len(amount) - len(unit)] or text) * _SIZE_UNITS[unit]


def key_source(args: argparse.Namespace) -> KeySource:
    """Where the key is: --api-key-file, else --api-key-env, else $AUDIOPOD_API_KEY."""
    if args.api_key_file is not None:
        if args.api_key_env is not None:
            raise ConfigError("give --api-key-env or --api-key-file, not both")
        return KeySource.file(args.api_key_file)
    return env_source(DEFAULT_KEY_VARIABLE if args.api_key_env is None else args.api_key_env)


def env_source(variable: str) -> KeySource:
    """The key in environment variable ``variable``; ConfigError if that is not a name."""
    try:
        return KeySource.env(variable)
    except ValueError as exc:
        raise ConfigError(f"not an environment variable's name: {variable!r}") from exc


def api_key(args: argparse.Namespace) -> str:
    """The key the API options name, read now."""
    return read_key(key_source(args))


@contextlib.asynccontextmanager
async def client(args: argparse.Namespace) -> AsyncIterator[ApiClient]:
    """A client for the configured API with the configured key, or for a sandbox started for
    this command."""
    key = None if args.sandbox else api_key(args)
    source = "the sandbox's key" if args.sandbox else key_source(args).describe()
    endpoint = api_endpoint(sandbox=args.sandbox, api_key=key, base_url=args.base_url)
    async with (
        endpoint as (url, endpoint_key),
        ApiClient(base_url=url, api_key=endpoint_key, key_source=source) as api,
    ):
        yield api
