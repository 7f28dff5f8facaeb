"""``batchpod sandbox``: serve the local AudioPod API for trying batchpod without an account.

Its flags and settings belong to ``batchpod.sandbox`` (which imports nothing from batchpod);
this module only names the command and turns the sandbox's refusals into ``ConfigError``.
"""

from __future__ import annotations

import argparse
from typing import TextIO

from batchpod import sandbox as sandbox_api
from batchpod.errors import ConfigError, ExitCode

from ._options import Commands


def add_parsers(commands: Commands) -> None:
    """Add ``sandbox``."""
    sandbox = commands.add_parser(
        "sandbox",
        help="serve a local AudioPod API for trying batchpod without an account",
        description=(
            "Serve the sandbox, a local AudioPod API with a ready key and wallet, on "
            "loopback. It prints the base URL and the key to use; Ctrl-C stops it."
        ),
    )
    sandbox_api.add_arguments(sandbox)
    sandbox.set_defaults(handler=_cmd_sandbox)


def _cmd_sandbox(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        settings = sandbox_api.settings_from_args(args)
    except ValueError as exc:
        raise ConfigError(f"sandbox: {exc}") from exc
    try:
        sandbox_api.serve_forever(
            settings, args.host, args.port, out=out, allow_remote=args.allow_remote
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot serve the sandbox on {args.host}:{args.port}: {reason}") from exc
    except ValueError as exc:  # a non-loopback host without --allow-remote
        raise ConfigError(f"sandbox: {exc}") from exc
    return ExitCode.OK
