"""The run's log: lines for people, or one JSON event per line for machines.

Every module logs to the ``batchpod`` logger. A record that marks a moment worth a machine's
attention carries ``extra=event(NAME, field=value, ...)``; the JSON formatter writes it as
``{"ts": ..., "level": ..., "event": NAME, "message": ..., field: value, ...}``, and a record
without one as event ``"log"``. Some events exist for machines only (``run_started``,
``retry``, ``stop``, ``run_finished``): the text handler leaves them out, so a person's log does not
change. Messages never hold the API key (nothing that logs here is given it).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TextIO

LogFormat = Literal["text", "json"]

#: Events written in the JSON log only.
MACHINE_ONLY: Final = frozenset({"run_started", "retry", "stop", "run_finished"})

_EVENT_ATTR: Final = "batchpod_event"
_FIELDS_ATTR: Final = "batchpod_fields"


def event(name: str, **fields: Any) -> dict[str, Any]:
    """The ``extra=`` of a log call that records event ``name`` with ``fields``."""
    return {_EVENT_ATTR: name, _FIELDS_ATTR: fields}


def event_of(record: logging.LogRecord) -> str | None:
    """The event a record carries, if any."""
    name: str | None = getattr(record, _EVENT_ATTR, None)
    return name


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC, ISO 8601), level, event, message, then fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "event": event_of(record) or "log",
            "message": record.getMessage(),
        }
        for key, value in getattr(record, _FIELDS_ATTR, {}).items():
            line.setdefault(key, value)
        return json.dumps(line, ensure_ascii=False, default=str)


def _for_people(record: logging.LogRecord) -> bool:
    return event_of(record) not in MACHINE_ONLY


def handler_for(
    stream: TextIO, fmt: LogFormat, *, prefix: str, level: int = logging.INFO
) -> logging.Handler:
    """A handler writing ``fmt`` records of ``level`` and above to ``stream``."""
    handler = logging.StreamHandler(stream)
    handler.setLevel(level)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"{prefix}: %(message)s"))
        handler.addFilter(_for_people)
    return handler


def open_log_file(path: Path) -> TextIO:
    """``path`` opened for appending (created owner-only: it names songs and spend)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8", buffering=1)


def error_line(message: str, *, exit_code: int) -> str:
    """A JSON error event, for conditions reported outside the logger (the CLI's last word)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps(
        {"ts": now, "level": "error", "event": "error", "message": message, "exit_code": exit_code},
        ensure_ascii=False,
    )
