"""One command from argv to exit code: the parser assembled, logging set up, errors reported.

``build_parser`` adds each command module's parsers in the order ``--help`` lists them.
``main`` parses, points the batchpod logger at the terminal (and ``--log-file``), calls the
command's handler, and turns what it raises (a ``BatchpodError``, Ctrl-C, or a task group
holding one of them) into lines on stderr and the exit code the error carries. Nothing else
in batchpod prints an error or decides an exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from batchpod import logs
from batchpod._version import __version__
from batchpod.errors import BatchpodError, ExitCode, ManifestError
from batchpod.logs import LogFormat

from . import (
    cleanup,
    estimate,
    fleet,
    init,
    keys,
    recovery,
    results,
    run,
    sandbox,
    status,
    validate,
)
from ._options import PROG


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
    # The order here is the order of the command list in --help.
    init.add_parsers(commands)
    validate.add_parsers(commands)
    run.add_parsers(commands)
    status.add_parsers(commands)
    fleet.add_parsers(commands)  # results
    estimate.add_parsers(commands)
    keys.add_parsers(commands)  # balance, key
    results.add_parsers(commands)  # merge, report
    recovery.add_parsers(commands)  # recover, resolve
    cleanup.add_parsers(commands)
    sandbox.add_parsers(commands)
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
    fmt: LogFormat = getattr(args, "log_format", "text")
    log_path: Path | None = getattr(args, "log_file", None)
    quiet: bool = getattr(args, "quiet", False)
    log_file = None
    if log_path is not None:
        try:
            log_file = logs.open_log_file(log_path)
        except OSError as exc:
            print(f"{PROG}: error: cannot write the log file {log_path}: {exc.strerror}", file=err)
            return ExitCode.IO_ERROR
    # The terminal (or cron's mail) gets the log unless it goes to a file; then only problems.
    people = logs.handler_for(
        err,
        "text" if log_file else fmt,
        prefix=PROG,
        level=logging.WARNING if quiet or log_file else logging.INFO,
    )
    handlers = [people] + ([logs.handler_for(log_file, fmt, prefix=PROG)] if log_file else [])
    args.people_log = people  # a progress bar quiets it
    report = functools.partial(
        _report,
        err=err,
        json_to=err if fmt == "json" and not log_file else None,
        log_file=log_file if fmt == "json" else None,
    )
    try:
        with _logging_to(handlers):
            code: int = args.handler(args, out, err)
    except BaseExceptionGroup as group:
        # Task groups wrap what their tasks raise; one condition inside is still one line.
        inner = _sole_error(group)
        if inner is None:
            raise
        return report(inner)
    except (BatchpodError, KeyboardInterrupt) as exc:
        return report(exc)
    finally:
        if log_file is not None:
            log_file.close()
    return code


def console_main() -> None:
    """Entry point of the ``batchpod`` console script."""
    raise SystemExit(main())


def _sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one BatchpodError or KeyboardInterrupt inside (nested) groups, if there is one."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    known = [e for e in leaves if isinstance(e, BatchpodError | KeyboardInterrupt)]
    # The same condition met by several workers (a full disk, say, or a database that went
    # away, each task seeing it in its own words) is still one problem: the first told.
    distinct = {type(e) for e in known}
    return known[0] if known and len(known) == len(leaves) and len(distinct) == 1 else None


def _report(
    exc: BaseException, *, err: TextIO, json_to: TextIO | None, log_file: TextIO | None
) -> int:
    """Print one condition the way users see it; return its exit code.

    With a JSON log, each line is a JSON error event: on stderr (``json_to``) instead of the
    text when the log goes there, else in the log file as well as the text on stderr.
    """
    code, lines = _describe_failure(exc)
    for line in lines:
        if json_to is None:
            print(line, file=err)
        for stream in (json_to, log_file):
            if stream is not None:
                print(logs.error_line(line, exit_code=code), file=stream)
    return code


def _describe_failure(exc: BaseException) -> tuple[int, list[str]]:
    """The exit code of a condition, and its lines for people."""
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED, [f"{PROG}: interrupted"]
    assert isinstance(exc, BatchpodError)
    if isinstance(exc, ManifestError):
        return exc.exit_code, [str(problem) for problem in exc.problems]
    return exc.exit_code, [f"{PROG}: error: {exc.lead}{exc}"]


@contextlib.contextmanager
def _logging_to(handlers: Sequence[logging.Handler]) -> Iterator[None]:
    """Send the batchpod logger's records to ``handlers`` for the length of one command."""
    logger = logging.getLogger(PROG)
    level, propagate = logger.level, logger.propagate
    for handler in handlers:
        logger.addHandler(handler)
    # No record is made that no handler wants (a --quiet run makes one per job otherwise).
    logger.setLevel(min(handler.level for handler in handlers))
    logger.propagate = False
    try:
        yield
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
