"""The figures of a results document as every rendering shows them: seconds between two
timestamps, numbers, money from integer cents, one-line text."""

from __future__ import annotations

import re
from datetime import datetime

from batchpod.budget import usd

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def seconds_between(start: object, end: object) -> float | None:
    """``end - start`` in seconds, for ISO 8601 strings (or datetimes a YAML loader made)."""
    try:
        first, last = (
            v if isinstance(v, datetime) else datetime.fromisoformat(str(v)) for v in (start, end)
        )
        return (last - first).total_seconds()
    except (TypeError, ValueError):  # null, not a timestamp, or one naive and one aware
        return None


def number(value: float) -> str:
    return str(int(value)) if value.is_integer() else f"{value:.3f}"


def money(cents: object) -> str:
    if isinstance(cents, int) and not isinstance(cents, bool):
        return usd(cents)
    return "unknown"


def line(value: object) -> str:
    """``value`` as one line of text: whitespace runs as one space, control characters
    escaped (so a server's message cannot move a terminal's cursor)."""
    if value is None:
        return "unknown"
    flat = " ".join(str(value).split())
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", flat)
