"""The sandbox's memory: users, their keys, wallets, jobs and counters, with no HTTP in it.

Job states are computed lazily from the clock: a job stores when it was submitted, when it
leaves PENDING and when it finishes (and whether it fails, decided at submit by a seeded RNG).
No task runs per job. Each request first calls `settle(now)`, which pops every job that has
come due from a heap and charges or refunds it, so wallets and the usage log are exact at every
request and the cost per request is O(log n) whatever the number of jobs.

Each configured key (`api_key` and every `extra_keys` entry) is its own `User` with its own
wallet. A key created through `POST /auth/api-keys` joins the creating key's user, so it spends
from the same wallet and sees the same jobs and usage log.

Errors meant for the wire are raised as `ApiError` (status, JSON body, headers); the app turns
them into responses. Imports nothing from batchpod.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from ._billing import InsufficientFunds
from ._contract import (
    MAX_INPUT_S,
    MODE_PLAN,
    PLAN_RANK,
    PLAN_TITLES,
    SERVICE_TYPE,
    cost_cents,
    duration_ms,
    usd,
)
from ._keys import SECONDS_PER_DAY, NewKey, not_found
from ._records import (
    COMPLETED,
    FAILED,
    FAILURE_MESSAGES,
    FIRST_JOB_ID,
    KEY_EXPIRED,
    KEY_REVOKED,
    MEDIA_PREFIX,
    NOT_FOUND_DETAIL,
    PENDING_SHARE,
    PROCESSING,
    RATE_LIMIT_DETAIL,
    Account,
    ApiError,
    Job,
    UsageRow,
    User,
    detail,
    iso,
)
from ._settings import SandboxSettings


class SandboxState:
    """Everything one sandbox app remembers. Single-threaded: touch it from its event loop."""

    def __init__(
        self, settings: SandboxSettings, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.settings = settings
        # Unix seconds. Lifecycle, expiry and rate limits all read this one clock, so a test
        # can drive a whole job through its life by advancing a fake clock.
        self.clock: Callable[[], float] = clock or time.time
        seed = settings.seed
        self._job_rng = random.Random(f"{seed}:jobs")
        self._fault_rng = random.Random(f"{seed}:faults")
        self._id_rng = random.Random(f"{seed}:ids")
        # Its own stream, so creating a key does not shift any job's or usage row's draws.
        self._key_rng = random.Random(f"{seed}:keys")
        self._secret = hashlib.sha256(f"batchpod-sandbox:{seed}".encode()).digest()
        # Every key by its value, whichever user it belongs to.
        self.accounts: dict[str, Account] = {}
        started = self.clock()
        for key, spec in settings.all_keys().items():
            # A configured "revoked" key was revoked, and an "expired" one expired, the moment
            # the sandbox started; the key list shows them so.
            self.accounts[key] = Account(
                key=key,
                key_id=self._uuid(),
                user=User(plan=spec.plan, balance_cents=spec.balance_cents),
                name="default",
                scopes=("*",),
                created=started,
                expires_at=started if spec.status == KEY_EXPIRED else None,
                revoked_at=started if spec.status == KEY_REVOKED else None,
            )
        self.jobs: dict[int, Job] = {}
        self._due: list[tuple[float, int]] = []
        self._next_id = FIRST_JOB_ID
        self._active_total = 0
        self.reset_counters()

    # -- counters -------------------------------------------------------------------------

    def reset_counters(self) -> None:
        """Zero every counter and the wallet history; jobs, wallets and usage logs stay."""
        self.requests: Counter[str] = Counter()
        self.responses: Counter[str] = Counter()
        self.submissions: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.downloads: Counter[str] = Counter()
        self.key_changes: Counter[str] = Counter()  # "created" / "revoked" through the API
        self.events: list[tuple[str, str, int, int, float]] = []
        for account in self.accounts.values():
            account.peak_active = account.active
        self._peak_total = self._active_total

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))

    # -- faults and limits ------------------------------------------------------------------

    def draw_fault(self) -> ApiError | None:
        """The injected 429 or 5xx for this request, if the dice say so."""
        s = self.settings
        if s.rate_429 == 0 and s.rate_5xx == 0:
            return None
        roll = self._fault_rng.random()
        if roll < s.rate_429:
            self.injected["429"] += 1
            return detail(429, RATE_LIMIT_DETAIL, self._retry_after(s.retry_after_s))
        if roll < s.rate_429 + s.rate_5xx:
            status = self._fault_rng.choice((500, 502, 503))
            self.injected[str(status)] += 1
            headers = self._retry_after(s.retry_after_s) if status == 503 else {}
            return ApiError(status, None, headers)  # the app renders a proxy-style body
        return None

    def draw_lost_submit(self) -> bool:
        """Whether this accepted submit's response is to be lost (see `lost_submit_rate`)."""
        rate = self.settings.lost_submit_rate
        if rate and self._fault_rng.random() < rate:
            self.injected["lost_submit"] += 1
            return True
        return False

    @staticmethod
    def _retry_after(seconds: float | None) -> dict[str, str]:
        return {} if seconds is None else {"Retry-After": str(math.ceil(seconds))}

    def _take_token(self, account: Account, now: float) -> None:
        rps = self.settings.rps_limit
        if rps is None:
            return
        burst = max(1.0, rps)  # one second's worth of requests may arrive at once
        account.tokens = min(burst, account.tokens + (now - account.tokens_at) * rps)
        account.tokens_at = now
        if account.tokens >= 1.0:
            account.tokens -= 1.0
            return
        self.injected["rate_limited"] += 1
        wait = (1.0 - account.tokens) / rps
        raise detail(429, RATE_LIMIT_DETAIL, {"Retry-After": str(max(1, math.ceil(wait)))})

    # -- auth -----------------------------------------------------------------------------

    def authenticate(
        self, *, x_api_key: str | None, authorization: str | None, now: float
    ) -> Account:
        """The account behind the request's key, or a 401/403/429 ApiError."""
        key = x_api_key
        if not key and authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() == "bearer":
                key = token.strip()
        if not key:
            raise detail(401, "Not authenticated", {"WWW-Authenticate": "Bearer"})
        account = self.accounts.get(key)
        if account is None:
            # A Bearer value that is not an `ap_` key would be a JWT on the real service; the
            # sandbox has no sessions, so both are simply invalid.
            raise detail(401, "Invalid API key", {"WWW-Authenticate": "Bearer"})
        status = account.status(now)
        if status == KEY_REVOKED:
            raise detail(403, "API key has been revoked")
        if status == KEY_EXPIRED:
            raise detail(403, "API key has expired")
        account.last_used = now  # set before the rate limit: a throttled call still used the key
        self._take_token(account, now)
        return account

    # -- key management -------------------------------------------------------------------

    def create_key(self, account: Account, new: NewKey, *, now: float) -> tuple[Account, str]:
        """A new key of `account`'s user, working at once; returns it and its value.

        [INFERRED] The value is `ap_` and 32 hex digits: the docs only show `ap_xxx…`, and the
        SDK insists on the prefix. Drawn from the seeded RNG, so a run repeats.
        """
        rng = self._key_rng
        key = f"ap_{rng.getrandbits(128):032x}"
        while key in self.accounts:  # cannot really happen; a configured key might match
            key = f"ap_{rng.getrandbits(128):032x}"
        days = new.expires_in_days
        created = Account(
            key=key,
            key_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            user=account.user,
            name=new.name,
            scopes=new.scopes,
            created=now,
            expires_at=None if days is None else now + days * SECONDS_PER_DAY,
        )
        self.accounts[key] = created
        self.key_changes["created"] += 1
        return created, key

    def list_keys(self, account: Account, *, status: str | None, now: float) -> list[Account]:
        """The keys of `account`'s user, newest first; `status` filters (older docs)."""
        keys = reversed(account.user.keys)
        return [k for k in keys if status is None or k.status(now) == status]

    def revoke_key(self, account: Account, key_id: str, *, now: float) -> Account:
        """Revoke one of the user's keys (the caller's own included); 404 for any other id.

        Revoking is a soft delete: the key stays listed with `revoked_at`. Revoking it again
        changes nothing.
        """
        for key in account.user.keys:
            if key.key_id == key_id:
                if key.revoked_at is None:
                    key.revoked_at = now
                    self.key_changes["revoked"] += 1
                return key
        raise not_found()

    # -- lifecycle ------------------------------------------------------------------------

    def settle(self, now: float) -> None:
        """Charge or refund every job that has finished by `now`."""
        due = self._due
        while due and due[0][0] <= now:
            _, job_id = heapq.heappop(due)
            job = self.jobs.get(job_id)
            if job is not None and not job.settled:
                self._finish(job)

    def _finish(self, job: Job) -> None:
        job.settled = True
        account = job.account
        account.active -= 1
        self._active_total -= 1
        if job.error_message is not None:
            cents = account.wallet.refund(job.id)
            self.events.append(("refund", account.key, job.id, cents, job.due))
            return
        cents = account.wallet.charge(job.id)
        self.events.append(("charge", account.key, job.id, cents, job.due))
        # The usage row is written when the charge is kept: the docs' one example has it a few
        # milliseconds after the job's completed_at (§6.4 vs §3.2).
        account.usage.append(
            UsageRow(
                row_seed=self._id_rng.getrandbits(128),
                job_id=job.id,
                key_id=account.key_id,
                duration_s=job.duration_s,
                cents=cents,
                at=job.due,
            )
        )

    def check_plan(self, account: Account, mode: str) -> None:
        """403 when the key's plan is below what `mode` needs (§5; the code is our guess)."""
        needed = MODE_PLAN[mode]
        if PLAN_RANK[account.plan] < PLAN_RANK[needed]:
            raise detail(
                403,
                f"Mode '{mode}' requires the {PLAN_TITLES[needed]} plan or higher; "
                f"this API key's plan is {PLAN_TITLES[account.plan]}.",
            )

    def insufficient(self, *, required_cents: int, available_cents: int) -> ApiError:
        """The documented 402, in the shape the settings ask for (§9, §14 #2)."""
        body: dict[str, object] = {
            "error": "insufficient_api_balance",
            "message": (
                f"Insufficient balance. Required: {usd(required_cents)}, "
                f"Available: {usd(available_cents)}"
            ),
            "required_cents": required_cents,
            "available_cents": available_cents,
        }
        if self.settings.balance_error_shape == "detail":
            return ApiError(402, {"detail": body})
        return ApiError(402, body)

    def submit(
        self,
        account: Account,
        *,
        source_type: str,
        source: str,
        mode: str,
        stem: str | None,
        duration_s: float,
        now: float,
    ) -> Job:
        """Create a job: check the input length, reserve its cost, schedule its end.

        `source` is the URL of a URL job or the (sanitised) file name of an upload.
        """
        limit = MAX_INPUT_S[account.plan]
        if duration_s > limit:
            # The code for an over-long input is undocumented; a 400 with a detail is the most
            # likely FastAPI shape for a business-rule rejection.
            raise detail(
                400,
                f"Audio is {duration_s / 60:.1f} minutes long; the "
                f"{PLAN_TITLES[account.plan]} plan accepts up to {limit // 60} minutes.",
            )
        cost = cost_cents(duration_s)
        job_id = self._next_id
        try:
            account.wallet.reserve(job_id, cost)
        except InsufficientFunds as exc:
            raise self.insufficient(
                required_cents=exc.required_cents, available_cents=exc.available_cents
            ) from None
        self._next_id += 1
        # Always the same draws per job, so changing one knob does not reshuffle the others.
        rng = self._job_rng
        lo, hi = self.settings.processing_range_s
        processing = rng.uniform(lo, hi)
        fails = rng.random() < self.settings.failure_rate
        message = rng.choice(FAILURE_MESSAGES)
        seed = rng.getrandbits(128)
        job = Job(
            job_id=job_id,
            account=account,
            source_type=source_type,
            source=source,
            mode=mode,
            stem=stem,
            duration_s=duration_ms(duration_s) / 1000,
            cost=cost,
            created=now,
            started=now + processing * PENDING_SHARE,
            due=now + processing,
            error_message=message if fails else None,
            detail_seed=seed,
        )
        self.jobs[job_id] = job
        account.jobs[job_id] = job
        heapq.heappush(self._due, (job.due, job_id))
        account.active += 1
        account.peak_active = max(account.peak_active, account.active)
        self._active_total += 1
        self._peak_total = max(self._peak_total, self._active_total)
        self.events.append(("reserve", account.key, job_id, cost, now))
        key = f"{source_type}/{mode}" + (f"/{stem}" if mode == "single" else "")
        self.submissions[key] += 1
        return job

    def job_for(self, account: Account, job_id: int) -> Job:
        """The user's job, or the documented 404 (also for another user's job)."""
        job = account.jobs.get(job_id)
        if job is None:
            raise detail(404, NOT_FOUND_DETAIL)
        return job

    def list_jobs(
        self, account: Account, *, skip: int, limit: int, status: str | None, now: float
    ) -> list[Job]:
        """The user's jobs (from any of its keys), newest first; `status` filters (SDK 2.1
        sent it)."""
        newest_first: Iterator[Job] = reversed(account.jobs.values())
        if status is not None:
            newest_first = (j for j in newest_first if j.status(now) == status)
        return list(islice(newest_first, skip, skip + limit))

    def delete_job(self, account: Account, job_id: int, *, now: float) -> None:
        """Forget a job. An unfinished one is refunded: its result will never be delivered.

        The real service's choice here is undocumented (§14); refunding is the one a user
        would expect, and the charge of a finished job stays either way.
        """
        job = self.job_for(account, job_id)
        if not job.settled:
            job.settled = True
            job.account.active -= 1  # the key that submitted it, maybe not the caller
            self._active_total -= 1
            cents = account.wallet.refund(job.id)
            self.events.append(("refund", job.account.key, job.id, cents, now))
        del account.jobs[job_id]
        del self.jobs[job_id]

    def top_up(self, key: str, cents: int) -> None:
        """Add ``cents`` to the wallet ``key`` spends from (tests: a top-up between runs)."""
        self.accounts[key].wallet.top_up(cents)

    # -- rendering ------------------------------------------------------------------------

    def render_job(self, job: Job, now: float, *, media_base: str) -> dict[str, Any]:
        """The job object of §4 as the status, list and submit endpoints return it."""
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
            scores = job.outputs(sparse=self.settings.sparse_stems)
            paths = {stem: stem_path(job.id, stem) for stem in scores}
            expires = math.floor(now + self.settings.download_ttl_s)
            body["stem_paths"] = paths
            body["quality_scores"] = scores
            body["download_urls"] = {
                stem: self.presign(media_base, path, expires) for stem, path in paths.items()
            }
        return body

    # -- presigned downloads --------------------------------------------------------------

    def _signature(self, path: str, expires: int) -> str:
        return hmac.new(self._secret, f"GET\n{path}\n{expires}".encode(), "sha256").hexdigest()

    def presign(self, media_base: str, path: str, expires: int) -> str:
        """An S3-style query-string-signed URL for a storage path."""
        url_path = MEDIA_PREFIX + path
        signature = self._signature(url_path, expires)
        return f"{media_base}{url_path}?Expires={expires}&Signature={signature}"

    def verify_download(
        self, url_path: str, *, expires: str | None, signature: str | None, now: float
    ) -> str | None:
        """None when the signed URL may be served, else the S3 error code to answer with."""
        if not expires or not signature or not expires.isdigit():
            return "AccessDenied"
        if not hmac.compare_digest(signature, self._signature(url_path, int(expires))):
            return "SignatureDoesNotMatch"
        if now > int(expires):
            return "AccessDenied"
        return None

    def stored_stem(self, job_id: int, stem: str) -> Job | None:
        """The completed job that holds `stem`, if it still exists."""
        job = self.jobs.get(job_id)
        if job is None or not job.settled or job.error_message is not None:
            return None
        if stem not in job.outputs(sparse=self.settings.sparse_stems):
            return None
        return job

    # -- wallet views ---------------------------------------------------------------------

    def balance(self, account: Account) -> dict[str, Any]:
        """`GET /api-wallet/balance` (§6.1, with the Dec-2025 fields)."""
        w = account.wallet
        return {
            "balance_cents": w.balance_cents,
            "balance_usd": usd(w.balance_cents),
            "total_topup_cents": w.initial_cents,
            "total_topup_usd": usd(w.initial_cents),
            "total_spent_cents": w.spent_cents,
            "total_spent_usd": usd(w.spent_cents),
            "warning_threshold_cents": 500,
            "low_balance_warning": w.balance_cents < 500,
        }

    def usage(self, account: Account, *, page: int, limit: int) -> dict[str, Any]:
        """`GET /api-wallet/usage`: newest first, pages of `limit` (§6.4)."""
        rows = account.usage
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

    # -- observability --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters and wallets as plain, JSON-ready data (see the package docstring).

        `wallets` is keyed by API key; keys of one user show that user's one wallet.
        """
        wallets = {}
        for key, a in self.accounts.items():
            w = a.wallet
            wallets[key] = {
                "plan": a.plan,
                "initial_cents": w.initial_cents,
                "balance_cents": w.balance_cents,
                "reserved_cents": w.reserved_cents,
                "spent_cents": w.spent_cents,
            }
        return {
            "requests": dict(self.requests),
            "responses": dict(self.responses),
            "submissions": dict(self.submissions),
            "jobs": {
                "created": self._next_id - FIRST_JOB_ID,
                "stored": len(self.jobs),
                "active": self._active_total,
                "peak_active": self._peak_total,
            },
            "active_by_key": {k: a.active for k, a in self.accounts.items()},
            "peak_active_by_key": {k: a.peak_active for k, a in self.accounts.items()},
            "wallets": wallets,
            "wallet_events": [
                {"kind": kind, "api_key": key, "job_id": job_id, "cents": cents, "at": at}
                for kind, key, job_id, cents, at in self.events
            ],
            "downloads": {
                "requests": self.downloads["requests"],
                "served": self.downloads["served"],
                "bytes": self.downloads["bytes"],
                "denied": self.downloads["denied"],
                "with_credentials": self.downloads["with_credentials"],
            },
            "injected": dict(self.injected),
            "api_keys": {
                "created": self.key_changes["created"],
                "revoked": self.key_changes["revoked"],
            },
        }


def stem_path(job_id: int, stem: str) -> str:
    """The storage key of a stem (§4)."""
    return f"stems/{job_id}/{stem}.wav"


def _number(seconds: float) -> int | float:
    return int(seconds) if float(seconds).is_integer() else seconds
