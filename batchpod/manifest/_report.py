"""Problems as they are found: each placed at a line and column, with user text quoted safely.

Every rule reports through one ``Reporter`` per manifest, so every problem names the same file
and quotes user text the same way: cut to ``ManifestLimits.quote_chars`` characters, control
characters (newlines too) escaped, so that each problem stays one line. It knows nothing of
the format's rules.
"""

from __future__ import annotations

import difflib
from typing import Any

from yaml.nodes import Node

from batchpod.errors import Problem

from ._limits import SPLIT_HINT, ManifestLimits

__all__ = ["Position", "Reporter", "close_match", "position"]

# A place in the manifest for a message: (line, column), both from 1.
Position = tuple[int, int]


def position(node: Node) -> Position:
    """Where the node starts in the text."""
    return node.start_mark.line + 1, node.start_mark.column + 1


class Reporter:
    """Collects one manifest's problems in ``problems``, in the order they are found.

    ``problems`` may be swapped for another list for a while (the jobs of a 'jobs' list keep
    theirs apart until it is known that the list counts).
    """

    __slots__ = ("limits", "problems", "shown")

    def __init__(self, shown: str, limits: ManifestLimits) -> None:
        self.shown = shown
        self.limits = limits
        self.problems: list[Problem] = []

    def add(self, line: int, column: int, message: str, hint: str | None = None) -> None:
        """Report a problem at ``line`` and ``column`` (from 1; line 0 for the whole file)."""
        self.problems.append(
            Problem(path=self.shown, line=line, column=column, message=message, hint=hint)
        )

    def on(self, node: Node | None, message: str, hint: str | None = None) -> None:
        """Report a problem where ``node`` starts (at the start of the text if there is none)."""
        self.at(position(node) if node else (1, 1), message, hint)

    def at(self, pos: Position, message: str, hint: str | None = None) -> None:
        self.add(pos[0], pos[1], message, hint)

    def at_mark(self, mark: Any, message: str, hint: str | None = None) -> None:
        """Report at a parser's mark (0-based), or at the start of the text if there is none."""
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        self.add(line, column, message, hint)

    def too_many_jobs(self, mark: Any) -> None:
        """The 'jobs' list that starts at ``mark`` passes the job limit."""
        self.at_mark(
            mark,
            f"'jobs' lists more than {self.limits.max_jobs:,} jobs, the limit for one manifest",
            SPLIT_HINT,
        )

    def cut(self, text: str) -> str:
        """The text, cut short for a message if it is long."""
        most = self.limits.quote_chars
        return text if len(text) <= most else text[: most - 3] + "..."

    def quote(self, text: str) -> str:
        """User text for a message: cut short, control characters (newlines too) escaped."""
        text = self.cut(text)
        return text if text.isprintable() else self.cut(repr(text)[1:-1])


def close_match(word: str, options: tuple[str, ...], cutoff: float = 0.6) -> str | None:
    """The option most like ``word``, if one is close enough (``difflib``'s ratio)."""
    # The ratio is at most 2*len(option) / (len(word) + len(option)): a word much longer than
    # every option cannot pass the cutoff, and matching it would take time and memory.
    if len(word) * cutoff > (2 - cutoff) * max(map(len, options)):
        return None
    close = difflib.get_close_matches(word, options, n=1, cutoff=cutoff)
    return close[0] if close else None
