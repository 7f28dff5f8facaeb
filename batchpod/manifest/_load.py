"""The entry points: a manifest file or text -> a validated ``Manifest``, or every problem in it.

The size limit is checked here, from the file's size before it is read (and from the bytes
read, for a pipe or a device); everything else is the checker's (``_checker``). Problems are
returned sorted by position.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

from batchpod.errors import ManifestError, Problem
from batchpod.models import Manifest

from ._checker import Checker
from ._limits import DEFAULT_LIMITS, SPLIT_HINT, ManifestLimits

__all__ = ["check_manifest", "load_manifest", "parse_manifest"]


def load_manifest(path: Path | str, *, limits: ManifestLimits = DEFAULT_LIMITS) -> Manifest:
    """Read and validate the manifest at ``path``; raise ``ManifestError`` listing every problem."""
    manifest, problems = check_manifest(path, limits=limits)
    if problems:
        raise ManifestError(problems)
    assert manifest is not None  # no problems means a manifest was built
    return manifest


def check_manifest(
    path: Path | str,
    *,
    limits: ManifestLimits = DEFAULT_LIMITS,
    loader: type[Any] | None = None,
    event_parser: type[Any] | None = None,
) -> tuple[Manifest | None, list[Problem]]:
    """Read and validate ``path``: the manifest when it is clean, and every problem found.

    ``loader`` (one of ``LOADERS``) composes the YAML and ``event_parser`` (one of
    ``EVENT_PARSERS``) counts a large manifest before that; each defaults to the fastest
    available. They give the same problems: tests pass each in turn to check that they agree.
    """
    shown = str(path)
    most = limits.max_bytes
    try:
        with Path(path).open("rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            if size > most:
                return None, [_too_large(shown, size, limits)]
            # One byte past the limit: a pipe or a device has no size to check beforehand.
            data = stream.read(most + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return None, [Problem(path=shown, line=0, column=0, message=f"cannot read: {reason}")]
    if len(data) > most:
        return None, [_too_large(shown, None, limits)]
    return parse_manifest(
        data, path=Path(path), limits=limits, loader=loader, event_parser=event_parser
    )


def parse_manifest(
    data: bytes | str,
    *,
    path: Path,
    limits: ManifestLimits = DEFAULT_LIMITS,
    loader: type[Any] | None = None,
    event_parser: type[Any] | None = None,
) -> tuple[Manifest | None, list[Problem]]:
    """Validate manifest text that was read from ``path`` (which anchors relative paths).

    ``limits``, ``loader`` and ``event_parser`` as for ``check_manifest``.
    """
    size = _utf8_size(data, limits.max_bytes)
    if size > limits.max_bytes:
        return None, [_too_large(str(path), size, limits)]
    checker = Checker(path, limits)
    # Composing a large manifest creates millions of small objects that all stay alive; the
    # cyclic GC would rescan them again and again (it more than doubles the time). None of
    # them form cycles, so pause it for the duration.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        manifest = checker.run(data, loader=loader, event_parser=event_parser)
    finally:
        if was_enabled:
            gc.enable()
    problems = sorted(checker.report.problems, key=lambda p: (p.line, p.column))
    return (None if problems else manifest), problems


def _utf8_size(data: bytes | str, most: int) -> int:
    """The data's length in bytes (text counts as UTF-8), without encoding large text needlessly.

    Text that cannot be over ``most`` (the size limit) is not encoded to be measured.
    """
    if isinstance(data, bytes) or len(data) > most or data.isascii():
        return len(data)
    if len(data) * 4 <= most:  # at most 4 bytes a character: cannot be too large
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))


def _too_large(shown: str, size: int | None, limits: ManifestLimits) -> Problem:
    measured = f"{size:,} bytes, " if size is not None else ""
    most = limits.max_bytes
    return Problem(
        path=shown,
        line=0,
        column=0,
        message=f"the manifest is {measured}over the {most // 2**20} MiB limit",
        hint=f"{SPLIT_HINT} of at most {most:,} bytes",
    )
