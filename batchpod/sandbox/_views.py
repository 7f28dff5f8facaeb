"""The wire bodies of jobs (§4) and wallets (§6): pure functions from records to JSON data.

How an API key is shown is `_keys`'s. Imports nothing from batchpod.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from ._billing import Wallet
from ._contract import LOW_BALANCE_WARNING_CENTS, SERVICE_TYPE, usd
from ._records import COMPLETED, FAILED, PROCESSING, Job, UsageRow, iso


def render_job(
    job: Job,
    now: float,
    *,
    sparse: bool,
    ttl_s: float,
    sign: Callable[[str, int], str],
) -> dict[str, Any]:
    """The job object of §4 as the status, list and submit endpoints return it.

    `sign(path, expires)` is the presigned URL of a storage path, valid until `expires`
    (Unix seconds); a completed job's links are signed afresh for `ttl_s` from `now`.
    """
    status = job.status(now)
    body: dict[str, Any] = {
        "id": job.id,
        "status": status,
        "source_type": job.source_type,
        "input_path": job.input_path,
        "display_name": job.display_name,
        "task_id": job.task_id,
        "stem_paths": None,
        "quality_scores": None,
        "download_urls": None,
        "error_message": None,
        "created_at": iso(job.created),
        "updated_at": None,
        "completed_at": None,
    }
    if status == PROCESSING:
        body["updated_at"] = iso(job.started)
    elif status == FAILED:
        body["updated_at"] = iso(job.due)
        body["error_message"] = job.error_message
    elif status == COMPLETED:
        body["updated_at"] = body["completed_at"] = iso(job.due)
        scores = job.outputs(sparse=sparse)
        paths = {stem: stem_path(job.id, stem) for stem in scores}
        expires = math.floor(now + ttl_s)
        body["stem_paths"] = paths
        body["quality_scores"] = scores
        body["download_urls"] = {stem: sign(path, expires) for stem, path in paths.items()}
    return body


def stem_path(job_id: int, stem: str) -> str:
    """The storage key of a stem (§4)."""
    return f"stems/{job_id}/{stem}.wav"


def render_balance(wallet: Wallet) -> dict[str, Any]:
    """`GET /api-wallet/balance` (§6.1, with the Dec-2025 fields)."""
    return {
        "balance_cents": wallet.balance_cents,
        "balance_usd": usd(wallet.balance_cents),
        "total_topup_cents": wallet.initial_cents,
        "total_topup_usd": usd(wallet.initial_cents),
        "total_spent_cents": wallet.spent_cents,
        "total_spent_usd": usd(wallet.spent_cents),
        "warning_threshold_cents": LOW_BALANCE_WARNING_CENTS,
        "low_balance_warning": wallet.balance_cents < LOW_BALANCE_WARNING_CENTS,
    }


def render_usage(rows: Sequence[UsageRow], *, page: int, limit: int) -> dict[str, Any]:
    """`GET /api-wallet/usage`: newest first, pages of `limit` (§6.4)."""
    end = len(rows) - (page - 1) * limit
    start = max(0, end - limit)
    logs = [
        {
            "id": r.id,
            "service_type": SERVICE_TYPE,
            "duration_seconds": _number(r.duration_s),
            "duration_minutes": round(r.duration_s / 60, 2),
            "amount_cents": r.cents,
            "amount_usd": usd(r.cents),
            "job_id": str(r.job_id),  # a string here, an int on the job (§6.4)
            "api_key_id": r.key_id,  # the key that ran the job
            "created_at": iso(r.at),
        }
        for r in reversed(rows[start:end] if end > 0 else [])
    ]
    return {"page": page, "limit": limit, "logs": logs}


def _number(seconds: float) -> int | float:
    return int(seconds) if float(seconds).is_integer() else seconds
