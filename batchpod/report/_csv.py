"""A results document as CSV for spreadsheets, with cells that cannot run as formulas."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from batchpod.report._values import number, seconds_between

#: The columns of ``render_csv``, in order.
CSV_COLUMNS = (
    "name", "status", "mode", "stem", "source", "remote_id", "submitted_at", "completed_at",
    "seconds", "attempts", "estimated_cents", "cost_cents", "cost_usd", "error_type",
    "http_status", "error_message", "files", "reason", "duplicate_of",
    "finished_at",  # last: added after the others, so their positions stay as they were
)  # fmt: skip
#: What a spreadsheet reads as the start of a formula (OWASP, "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def render_csv(doc: Mapping[str, Any]) -> str:
    """Results document ``doc`` as CSV: a header row of ``CSV_COLUMNS`` and a ``meta.KEY``
    column for each metadata key the jobs carry (in the order they first appear), then one
    row per job in manifest order.

    ``source`` is the job's URL or file; ``seconds`` is ``completed_at - submitted_at``;
    ``files`` is the number of stems written; ``error_*`` and ``http_status`` come from the
    job's error record. A missing or null value is an empty field. Fields are quoted as the
    ``csv`` module's default (Excel) dialect does, so commas, quotes and newlines inside a
    message read back intact; rows end in ``\\r\\n`` (write the text without newline
    translation, and read it with ``newline=""``). A text field that a spreadsheet would take
    for a formula (it begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return: a
    job's name, an error message, a metadata value) is written with a ``'`` in front, as
    OWASP advises, so that opening the report never runs what a song's name says.
    """
    out = io.StringIO()
    writer = csv.writer(out)  # RFC 4180: rows end in CRLF; a lone CR in a field is quoted
    jobs = doc.get("jobs") or []
    keys = list(dict.fromkeys(k for job in jobs for k in (job.get("meta") or {})))
    writer.writerow([*CSV_COLUMNS, *(f"meta.{k}" for k in keys)])
    for job in jobs:
        meta = job.get("meta") or {}
        source = job.get("source") or {}
        error = job.get("error") or {}
        seconds = seconds_between(job.get("submitted_at"), job.get("completed_at"))
        row = {
            **{key: job.get(key) for key in CSV_COLUMNS},
            "source": source.get("url", source.get("file")),
            "seconds": None if seconds is None else number(seconds),
            "error_type": error.get("type"),
            "http_status": error.get("http_status"),
            "error_message": error.get("message"),
            "files": len(job.get("files") or ()),
        }
        values = [row[key] for key in CSV_COLUMNS] + [meta.get(k) for k in keys]
        writer.writerow(_cell(value) for value in values)
    return out.getvalue()


def _cell(value: object) -> object:
    """A CSV field: empty for None, text that could start a formula neutralised."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
