"""The batchpod exception tree: every condition batchpod reports to a person.

Foreign exceptions (yaml, aiohttp, sqlite3, OSError) are translated into these at their
module's seam with ``raise ... from exc``; nothing else escapes the library. The CLI is the one
place that turns them into messages and exit codes.

::

    BatchpodError
    ├── ManifestError         the manifest cannot be used; carries every Problem found
    └── ConfigError           a flag, environment variable or option is unusable

Each message says what is wrong and, where it can, how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class BatchpodError(Exception):
    """Root of every error batchpod raises on purpose."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One thing wrong with a manifest, at a 1-based line and column of its file (0: none)."""

    path: str
    line: int
    column: int
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        # Line 0 means the whole file (it could not be read or decoded at all).
        where = f"{self.path}:{self.line}:{self.column}" if self.line else self.path
        text = f"{where}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class ManifestError(BatchpodError):
    """The manifest has one or more problems; nothing may be submitted."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("ManifestError needs at least one problem")
        self.problems: tuple[Problem, ...] = tuple(problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{self.problems[0].path}: {len(self.problems)} {noun}")


class ConfigError(BatchpodError):
    """A command-line flag, environment variable or option value cannot be used."""
