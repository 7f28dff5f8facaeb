"""The ``batchpod`` command line: the composition root.

This is the only module that reads ``argv``, the environment and the terminal, and the only one
that turns ``BatchpodError``\\ s into messages and exit codes. Everything it runs lives in the
library modules, so the CLI stays a thin layer over them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from enum import IntEnum
from typing import TextIO

from batchpod import __version__
from batchpod import sandbox as sandbox_api
from batchpod.errors import BatchpodError, ConfigError, ManifestError
from batchpod.manifest import check_manifest


class ExitCode(IntEnum):
    """Exit codes of every batchpod command (documented in the README)."""

    OK = 0
    USAGE = 2  # a usage or manifest error: nothing was submitted
    INTERRUPTED = 130  # Ctrl-C


PROG = "batchpod"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command (also used by the docs test)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Batch runner for the AudioPod stem-separation API: a YAML manifest of songs in, "
            "stems and a results manifest out."
        ),
        epilog="Run 'batchpod COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    validate = commands.add_parser(
        "validate",
        help="check a manifest and report every problem in it",
        description=(
            "Parse and check the whole manifest. Every problem is printed as "
            "FILE:LINE:COL: message. Exit 0 when clean, 2 otherwise."
        ),
    )
    validate.add_argument("manifest", metavar="MANIFEST", help="the jobs manifest (YAML)")
    validate.set_defaults(handler=_cmd_validate)

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
    return parser


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run one batchpod command; return its exit code."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help, --version and usage errors
        return int(exc.code) if isinstance(exc.code, int) else ExitCode.USAGE
    try:
        code: int = args.handler(args, out, err)
    except ManifestError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        return ExitCode.USAGE
    except BatchpodError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=err)
        return ExitCode.INTERRUPTED
    return code


def console_main() -> None:
    """Entry point of the ``batchpod`` console script."""
    raise SystemExit(main())


def _cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    manifest, problems = check_manifest(args.manifest)
    if problems:
        raise ManifestError(problems)
    assert manifest is not None
    urls = sum(1 for job in manifest.jobs if job.source.kind == "url")
    files = len(manifest.jobs) - urls
    jobs = "job" if len(manifest.jobs) == 1 else "jobs"
    print(f"ok: {len(manifest.jobs)} {jobs}, {urls} URL, {files} files", file=out)
    return ExitCode.OK


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
