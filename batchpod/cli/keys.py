"""``batchpod balance`` and ``batchpod key check|list|create|revoke``: the wallet and the keys.

Each command is one API call through the client the API options name; checking a key is
``batchpod.keys.check_key``'s. A created key's value is printed once, alone on stdout, so that
``batchpod key create NAME > FILE`` stores it; everything else about it goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TextIO

import anyio

from batchpod.budget import usd
from batchpod.client import ApiKeyInfo, CreatedApiKey, RevokedApiKey
from batchpod.errors import ConfigError, ExitCode
from batchpod.keys import KeyCheck, check_key

from ._options import PROG, Commands, add_api_arguments, client, positive_int


def add_parsers(commands: Commands) -> None:
    """Add ``balance``, then ``key`` with its four actions."""
    balance = commands.add_parser(
        "balance",
        help="print the API wallet's balance",
        description="Check the key against AudioPod and print the wallet's balance.",
    )
    add_api_arguments(balance)
    balance.set_defaults(handler=_cmd_balance)

    key = commands.add_parser(
        "key",
        help="test the API key, and list, create or revoke the account's keys",
        description=(
            "Manage AudioPod API keys. 'check' tests the key (exit 0, or 4 with the fix); "
            "'list' shows the account's keys (never a key's value); 'create' makes a key "
            "and prints it once; 'revoke' disables one."
        ),
    )
    key_commands = key.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    key_check = key_commands.add_parser(
        "check",
        help="test the key against the balance endpoint and show the balance",
        description="Test the key with GET /api-wallet/balance and print the balance and "
        "the low-balance warning. Exit 0 when AudioPod accepts the key, 4 otherwise.",
    )
    add_api_arguments(key_check)
    key_check.set_defaults(handler=_cmd_key_check)
    key_list = key_commands.add_parser(
        "list",
        help="list the account's API keys: name, created, last used, expiry, status",
        description="List the account's API keys. Key values are never shown.",
    )
    add_api_arguments(key_list)
    key_list.set_defaults(handler=_cmd_key_list)
    key_create = key_commands.add_parser(
        "create",
        help="create an API key and print it (the only time it is shown)",
        description="Create an API key. The key alone goes to stdout (so that "
        "'batchpod key create ci > ci.key' stores it), its details to stderr. AudioPod "
        "shows a key only once.",
    )
    key_create.add_argument("name", metavar="NAME", help="a name for the key, e.g. prod-nightly")
    key_create.add_argument(
        "--scopes",
        metavar="SCOPES",
        default="*",
        help="comma-separated scopes (default: *, everything)",
    )
    key_create.add_argument(
        "--expires-in-days",
        metavar="N",
        type=positive_int,
        help="the key stops working after N days (default: never), for temporary access",
    )
    add_api_arguments(key_create)
    key_create.set_defaults(handler=_cmd_key_create)
    key_revoke = key_commands.add_parser(
        "revoke",
        help="revoke an API key by id (asks first unless --yes)",
        description="Revoke the API key with this id (see 'batchpod key list'). Every "
        "request with it is refused from then on (403).",
    )
    key_revoke.add_argument("id", metavar="ID", help="the key's id")
    key_revoke.add_argument("--yes", action="store_true", help="revoke without asking")
    add_api_arguments(key_revoke)
    key_revoke.set_defaults(handler=_cmd_key_revoke)


def _cmd_balance(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def go() -> tuple[int, int | None]:
        async with client(args) as api:
            balance = await api.balance()
            return balance.balance_cents, balance.total_spent_cents

    cents, spent = anyio.run(go)
    extra = f" (spent so far {usd(spent)})" if spent is not None else ""
    print(f"balance: {usd(cents)}{extra}", file=out)
    return ExitCode.OK


def _cmd_key_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def go() -> KeyCheck:
        async with client(args) as api:
            return await check_key(api)

    check = anyio.run(go)
    print(f"key in {check.source}: accepted by AudioPod", file=out)
    print(f"balance: {usd(check.balance_cents)}", file=out)
    warning = {True: "on (the balance is under the threshold)", False: "off", None: None}
    state = warning[check.low_balance_warning]
    threshold = check.warning_threshold_cents
    if state is None and threshold is None:
        print("low-balance warning: not reported by AudioPod", file=out)
    else:
        at = f", threshold {usd(threshold)}" if threshold is not None else ""
        print(f"low-balance warning: {state or 'not reported'}{at}", file=out)
    return ExitCode.OK


def _cmd_key_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def go() -> list[ApiKeyInfo]:
        async with client(args) as api:
            return await api.list_api_keys()

    keys = anyio.run(go)
    rows = [
        (
            k.id,
            k.name or "",
            k.status.value,
            _when(k.created_at),
            _when(k.last_used_at),
            _when(k.expires_at) if k.expires_at else "never",
        )
        for k in keys
    ]
    head = ("ID", "NAME", "STATUS", "CREATED", "LAST USED", "EXPIRES")
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out
        )
    return ExitCode.OK


def _cmd_key_create(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    scopes = tuple(s.strip() for s in args.scopes.split(",") if s.strip())
    if not scopes:
        raise ConfigError("--scopes needs at least one scope (or leave it out for '*')")

    async def go() -> CreatedApiKey:
        async with client(args) as api:
            return await api.create_api_key(
                args.name, scopes=scopes, expires_in_days=args.expires_in_days
            )

    created = anyio.run(go)
    expires = _when(created.expires_at) if created.expires_at else "never"
    print(
        f"{PROG}: created key {created.name or args.name!r} (id {created.id}, scopes "
        f"{','.join(created.scopes) or '*'}, expires {expires})",
        file=err,
    )
    print(
        f"{PROG}: this is the only time AudioPod shows this key: store it now (a secret "
        "manager, or an owner-only file for --api-key-file)",
        file=err,
    )
    print(created.key, file=out)
    return ExitCode.OK


def _cmd_key_revoke(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"revoking key {args.id} needs confirmation: add --yes")
        print(
            f"Revoke API key {args.id}? Every request with it will be refused. [y/N] ",
            end="",
            file=err,
            flush=True,
        )
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            print(f"{PROG}: not revoked", file=err)
            return ExitCode.OK

    async def go() -> RevokedApiKey:
        async with client(args) as api:
            return await api.revoke_api_key(args.id)

    revoked = anyio.run(go)
    at = f" at {_when(revoked.revoked_at)}" if revoked.revoked_at else ""
    print(f"revoked key {revoked.id}{at}", file=out)
    return ExitCode.OK


def _when(moment: datetime | None) -> str:
    """A moment in UTC to the second (``2025-01-31T12:00:00Z``), or ``-`` for none."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
