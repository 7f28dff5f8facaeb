"""``batchpod report``: a results manifest read back, summarised for people or as CSV.

Owns reading a results file (the YAML or JSON that ``results.py`` writes) and rendering it.
It must not know the API, the state file or the terminal: the CLI picks where the text goes
and turns the ``ConfigError`` raised for an unusable file into its message and exit code.
Money stays integer cents until it is shown, through ``budget.usd``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from batchpod.budget import usd
from batchpod.errors import ConfigError
from batchpod.models import JobStatus
from batchpod.results import RESULTS_VERSION

#: The columns of ``render_csv``, in order.
CSV_COLUMNS = (
    "name", "status", "mode", "stem", "source", "remote_id", "submitted_at", "completed_at",
    "seconds", "attempts", "estimated_cents", "cost_cents", "cost_usd", "error_type",
    "http_status", "error_message", "files", "reason", "duplicate_of",
)  # fmt: skip
#: What a spreadsheet reads as the start of a formula (OWASP, "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: Statuses whose jobs ``render_text`` lists one by one, with their error.
_TROUBLE = (JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.UNKNOWN)

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def load_results(path: Path) -> dict[str, Any]:
    """The data of results file ``path``: YAML, or JSON when it is named ``.json`` or opens
    with ``{``. Checked to be a batchpod results document this version can read: a mapping
    with ``results_version`` 1, a ``run`` mapping and a ``jobs`` list whose entries have a
    ``name`` and a known ``status``.

    Raises ``ConfigError`` with a one-line message naming ``path`` when the file is missing or
    unreadable, not UTF-8, not YAML/JSON, or not a results document (a jobs manifest given by
    mistake is named as such).
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the results file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise _not_results(path, "it is not UTF-8 text") from exc
    try:
        if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            data = json.loads(text)
        else:
            data = yaml.load(text, Loader=_LOADER)  # a safe loader: tags are refused
    except json.JSONDecodeError as exc:
        raise _not_results(path, f"not valid JSON (line {exc.lineno}, column {exc.colno})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise _not_results(path, f"not valid YAML{where}") from exc
    except RecursionError as exc:
        raise _not_results(path, "it is nested too deeply") from exc
    _check(path, data)
    document: dict[str, Any] = data
    return document


def _check(path: Path, data: object) -> None:
    if not isinstance(data, dict) or "results_version" not in data:
        if isinstance(data, dict) and "version" in data and "jobs" in data:
            hint = f"{path.stem}.results.yaml beside it"
            raise _not_results(path, f"it looks like a jobs manifest; its results are in {hint}")
        raise _not_results(path, "it has no results_version")
    if data["results_version"] != RESULTS_VERSION:
        raise ConfigError(
            f"{path}: results_version {data['results_version']!r} is not one this batchpod "
            f"reads ({RESULTS_VERSION}); use the batchpod that wrote it"
        )
    if not isinstance(data.get("run"), dict):
        raise _not_results(path, "'run' is missing or not a mapping")
    jobs = data.get("jobs")
    if not isinstance(jobs, list):
        raise _not_results(path, "'jobs' is missing or not a list")
    statuses = {status.value for status in JobStatus}
    for index, entry in enumerate(jobs):
        ok = isinstance(entry, dict) and isinstance(entry.get("name"), str)
        if not ok or entry.get("status") not in statuses:
            raise _not_results(path, f"jobs[{index}] has no name or no known status")
        if not isinstance(entry.get("meta", {}), dict):
            raise _not_results(path, f"jobs[{index}]'s meta is not a mapping")


def _not_results(path: Path, reason: str) -> ConfigError:
    return ConfigError(f"{path} is not a batchpod results file: {reason}")


def render_text(doc: Mapping[str, Any], *, slowest: int = 5) -> str:
    """A summary of results document ``doc`` for people, one fact per line, ending in a newline.

    In order: the manifest (and whether the sandbox ran it), start and finish (with the
    elapsed seconds), the exit code, why the run stopped early if it did, the job count by
    status (every status with jobs, in ``JobStatus`` order), the spend and the estimate, the
    wallet before and after, the API requests (when recorded; retries by cause), the
    ``slowest`` jobs by ``completed_at - submitted_at`` (longest first, ties in manifest
    order; whole seconds, as the file records them), and one line per failed, expired or
    unknown job in manifest order: ``NAME: STATUS: TYPE (HTTP N): MESSAGE``. Text from the
    file is put on one line with control characters escaped. Money is shown as dollars from
    integer cents; a figure the file does not have is shown as ``unknown``.
    """
    if slowest < 0:
        raise ValueError(f"slowest must be 0 or more, got {slowest}")
    run: Mapping[str, Any] = doc.get("run") or {}
    jobs: Sequence[Mapping[str, Any]] = doc.get("jobs") or []
    sandbox = " (sandbox)" if run.get("sandbox") else ""
    elapsed = _seconds(run.get("started_at"), run.get("finished_at"))
    lines = [
        f"manifest: {_line(run.get('manifest'))}{sandbox}",
        f"started: {_line(run.get('started_at'))}",
        f"finished: {_line(run.get('finished_at'))}"
        + (f" ({_number(elapsed)} s)" if elapsed is not None else ""),
        f"exit code: {_line(run.get('exit_code'))}",
    ]
    if run.get("stopped"):
        lines.append(f"stopped: {_line(run['stopped'])}")
    counts = Counter(job.get("status") for job in jobs)
    by_status = ", ".join(f"{counts[s]} {s}" for s in JobStatus if counts[s.value])
    lines.append(f"jobs: {len(jobs)}" + (f" ({by_status})" if by_status else ""))
    spent = "none recorded" if run.get("spent_cents") is None else _money(run["spent_cents"])
    lines.append(f"spent: {spent} (estimated {_money(run.get('estimated_cents'))})")
    before, after = run.get("balance_before_cents"), run.get("balance_after_cents")
    lines.append(f"balance: {_money(before)} before, {_money(after)} after")
    requests = run.get("requests")
    if isinstance(requests, Mapping):
        retries = sorted((str(k), v) for k, v in (requests.get("retries") or {}).items())
        detail = [
            f"{_line(requests.get('per_job'))} per job",
            f"{_line(requests.get('throttled', 0))} throttled",
        ]
        detail += [f"{_line(cause)} retried {_line(n)}" for cause, n in retries]
        lines.append(f"api requests: {_line(requests.get('api'))} ({', '.join(detail)})")
    timed = [
        (seconds, index, job)
        for index, job in enumerate(jobs)
        if (seconds := _seconds(job.get("submitted_at"), job.get("completed_at"))) is not None
    ]
    timed.sort(key=lambda item: (-item[0], item[1]))
    if slowest and timed:
        lines.append("slowest jobs:")
        lines += [f"  {_line(job['name'])}: {_number(s)} s" for s, _, job in timed[:slowest]]
    trouble = [job for job in jobs if job.get("status") in _TROUBLE]
    if trouble:
        lines.append("failed, expired or unknown jobs:")
        lines += [f"  {_trouble(job)}" for job in trouble]
    return "\n".join(lines) + "\n"


def _trouble(job: Mapping[str, Any]) -> str:
    head = f"{_line(job.get('name'))}: {_line(job.get('status'))}"
    error = job.get("error")
    if not isinstance(error, Mapping):
        return f"{head}: {_line(job.get('reason') or 'no error recorded')}"
    status = error.get("http_status")
    http = f" (HTTP {_line(status)})" if status is not None else ""
    return f"{head}: {_line(error.get('type'))}{http}: {_line(error.get('message'))}"


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
        seconds = _seconds(job.get("submitted_at"), job.get("completed_at"))
        row = {
            **{key: job.get(key) for key in CSV_COLUMNS},
            "source": source.get("url", source.get("file")),
            "seconds": None if seconds is None else _number(seconds),
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


def _seconds(start: object, end: object) -> float | None:
    """``end - start`` in seconds, for ISO 8601 strings (or datetimes a YAML loader made)."""
    try:
        first, last = (
            v if isinstance(v, datetime) else datetime.fromisoformat(str(v)) for v in (start, end)
        )
        return (last - first).total_seconds()
    except (TypeError, ValueError):  # null, not a timestamp, or one naive and one aware
        return None


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else f"{value:.3f}"


def _money(cents: object) -> str:
    if isinstance(cents, int) and not isinstance(cents, bool):
        return usd(cents)
    return "unknown"


def _line(value: object) -> str:
    """``value`` as one line of text: whitespace runs as one space, control characters
    escaped (so a server's message cannot move a terminal's cursor)."""
    if value is None:
        return "unknown"
    flat = " ".join(str(value).split())
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", flat)
