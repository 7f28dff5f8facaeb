"""The text summary of a results document, for people: one fact per line."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from batchpod.models import JobStatus
from batchpod.report._values import line, money, number, seconds_between

#: Statuses whose jobs ``render_text`` lists one by one, with their error.
_TROUBLE = (JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.UNKNOWN)


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
    elapsed = seconds_between(run.get("started_at"), run.get("finished_at"))
    lines = [
        f"manifest: {line(run.get('manifest'))}{sandbox}",
        f"started: {line(run.get('started_at'))}",
        f"finished: {line(run.get('finished_at'))}"
        + (f" ({number(elapsed)} s)" if elapsed is not None else ""),
        f"exit code: {line(run.get('exit_code'))}",
    ]
    if run.get("stopped"):
        lines.append(f"stopped: {line(run['stopped'])}")
    counts = Counter(job.get("status") for job in jobs)
    by_status = ", ".join(f"{counts[s]} {s}" for s in JobStatus if counts[s.value])
    lines.append(f"jobs: {len(jobs)}" + (f" ({by_status})" if by_status else ""))
    spent = "none recorded" if run.get("spent_cents") is None else money(run["spent_cents"])
    lines.append(f"spent: {spent} (estimated {money(run.get('estimated_cents'))})")
    before, after = run.get("balance_before_cents"), run.get("balance_after_cents")
    lines.append(f"balance: {money(before)} before, {money(after)} after")
    requests = run.get("requests")
    if isinstance(requests, Mapping):
        retries = sorted((str(k), v) for k, v in (requests.get("retries") or {}).items())
        detail = [
            f"{line(requests.get('per_job'))} per job",
            f"{line(requests.get('throttled', 0))} throttled",
        ]
        detail += [f"{line(cause)} retried {line(n)}" for cause, n in retries]
        lines.append(f"api requests: {line(requests.get('api'))} ({', '.join(detail)})")
    timed = [
        (seconds, index, job)
        for index, job in enumerate(jobs)
        if (seconds := seconds_between(job.get("submitted_at"), job.get("completed_at")))
        is not None
    ]
    timed.sort(key=lambda item: (-item[0], item[1]))
    if slowest and timed:
        lines.append("slowest jobs:")
        lines += [f"  {line(job['name'])}: {number(s)} s" for s, _, job in timed[:slowest]]
    trouble = [job for job in jobs if job.get("status") in _TROUBLE]
    if trouble:
        lines.append("failed, expired or unknown jobs:")
        lines += [f"  {_trouble(job)}" for job in trouble]
    return "\n".join(lines) + "\n"


def _trouble(job: Mapping[str, Any]) -> str:
    head = f"{line(job.get('name'))}: {line(job.get('status'))}"
    error = job.get("error")
    if not isinstance(error, Mapping):
        return f"{head}: {line(job.get('reason') or 'no error recorded')}"
    status = error.get("http_status")
    http = f" (HTTP {line(status)})" if status is not None else ""
    return f"{head}: {line(error.get('type'))}{http}: {line(error.get('message'))}"
