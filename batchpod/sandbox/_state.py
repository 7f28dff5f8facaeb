"""The sandbox's memory as one object: the parts below, wired together, behind the app's verbs.

`SandboxState` is what the app and the tests hold. It owns the knobs, the clock and the seeded
random streams, and hands each part what it needs; the work is the parts':

    KeyRing        (_keyring)   every API key and its user; authentication; create/list/revoke
    RateLimiter    (_faults)    the per-key token bucket of `rps_limit`
    FaultInjector  (_faults)    injected 429/5xx and lost submits
    JobStore       (_jobs)      plan admission, the lazy job lifecycle, lookup, delete
    Ledger         (_ledger)    holds, charges, refunds, usage rows, the 402
    UrlSigner      (_presign)   presigned stem URLs
    Counters       (_counters)  the tallies of `/_sandbox/stats`
    render_*       (_views)     the job and wallet bodies

Errors meant for the wire are raised as `ApiError` (status, JSON body, headers); the app turns
them into responses. Single-threaded: touch it from its event loop. Imports nothing from
batchpod.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from . import _views
from ._counters import Counters
from ._faults import FaultInjector, RateLimiter
from ._jobs import JobStore, check_plan
from ._keyring import KeyRing
from ._keys import NewKey
from ._ledger import Ledger
from ._presign import UrlSigner
from ._records import Account, ApiError, Job
from ._settings import SandboxSettings


class SandboxState:
    """Everything one sandbox app remembers, and the one door to it."""

    def __init__(
        self, settings: SandboxSettings, *, clock: Callable[[], float] | None = None
    ) -> None:
        # Assignable: the parts read the knobs through `_current_settings`, so a test may swap
        # them mid-run (say, to end a storm of 429s) and every part obeys at the next request.
        self.settings = settings
        # Unix seconds. Lifecycle, expiry and rate limits all read this one clock, so a test
        # can drive a whole job through its life by advancing a fake clock.
        self.clock: Callable[[], float] = clock or time.time
        # How `latency_s` and `download_latency_s` wait. Assignable, like `settings`: a test
        # can record the waits instead of timing them.
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        seed = settings.seed
        knobs = self._current_settings
        self.counters = Counters()
        # One stream per purpose, so a knob that changes one part's draws leaves the others'.
        # Configured keys' ids and then usage rows' ids share "ids".
        ids = random.Random(f"{seed}:ids")
        self.keyring = KeyRing(
            settings.all_keys(),
            started=self.clock(),
            id_rng=ids,
            key_rng=random.Random(f"{seed}:keys"),
            counters=self.counters,
        )
        self.rate_limiter = RateLimiter(knobs, counters=self.counters)
        self.faults = FaultInjector(
            knobs, rng=random.Random(f"{seed}:faults"), counters=self.counters
        )
        self.ledger = Ledger(knobs, id_rng=ids, counters=self.counters)
        self.job_store = JobStore(
            knobs, rng=random.Random(f"{seed}:jobs"), ledger=self.ledger, counters=self.counters
        )
        self.signer = UrlSigner(seed)

    def _current_settings(self) -> SandboxSettings:
        return self.settings

    @property
    def accounts(self) -> dict[str, Account]:
        """Every key by its value, whichever user it belongs to."""
        return self.keyring.accounts

    @property
    def jobs(self) -> dict[int, Job]:
        """Every stored job by id, whichever user it belongs to."""
        return self.job_store.jobs

    @property
    def requests(self) -> Counter[str]:
        """Requests by method and route template (the app counts them)."""
        return self.counters.requests

    @property
    def responses(self) -> Counter[str]:
        """Responses by status code (the app counts them)."""
        return self.counters.responses

    @property
    def downloads(self) -> Counter[str]:
        """Stem downloads: requests, served, bytes, denied, with_credentials (the app counts)."""
        return self.counters.downloads

    # -- faults, auth and keys ------------------------------------------------------------

    def draw_fault(self) -> ApiError | None:
        """The injected 429 or 5xx for this request, if the dice say so."""
        return self.faults.draw_fault()

    def draw_lost_submit(self) -> bool:
        """Whether this accepted submit's response is to be lost (see `lost_submit_rate`)."""
        return self.faults.draw_lost_submit()

    def authenticate(
        self, *, x_api_key: str | None, authorization: str | None, now: float
    ) -> Account:
        """The account behind the request's key, or a 401/403/429 ApiError."""
        account = self.keyring.authenticate(
            x_api_key=x_api_key, authorization=authorization, now=now
        )
        # After the key is marked used: a throttled call still used the key.
        self.rate_limiter.take_token(account, now)
        return account

    def create_key(self, account: Account, new: NewKey, *, now: float) -> tuple[Account, str]:
        """A new key of `account`'s user (see `KeyRing.create_key`); returns it and its value."""
        return self.keyring.create_key(account, new, now=now)

    def list_keys(self, account: Account, *, status: str | None, now: float) -> list[Account]:
        """The keys of `account`'s user, newest first; `status` filters."""
        return self.keyring.list_keys(account, status=status, now=now)

    def revoke_key(self, account: Account, key_id: str, *, now: float) -> Account:
        """Revoke one of the user's keys (see `KeyRing.revoke_key`); 404 for any other id."""
        return self.keyring.revoke_key(account, key_id, now=now)

    # -- jobs and money -------------------------------------------------------------------

    def settle(self, now: float) -> None:
        """Charge or refund every job that has finished by `now`."""
        self.job_store.settle(now)

    def check_plan(self, account: Account, mode: str) -> None:
        """403 when the key's plan is below what `mode` needs."""
        check_plan(account, mode)

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
        """Create a job (see `JobStore.submit`): 400 if too long, 402 if unaffordable."""
        return self.job_store.submit(
            account,
            source_type=source_type,
            source=source,
            mode=mode,
            stem=stem,
            duration_s=duration_s,
            now=now,
        )

    def job_for(self, account: Account, job_id: int) -> Job:
        """The user's job, or the documented 404 (also for another user's job)."""
        return self.job_store.job_for(account, job_id)

    def list_jobs(
        self, account: Account, *, skip: int, limit: int, status: str | None, now: float
    ) -> list[Job]:
        """The user's jobs, newest first; `status` filters."""
        return self.job_store.list_jobs(account, skip=skip, limit=limit, status=status, now=now)

    def delete_job(self, account: Account, job_id: int, *, now: float) -> None:
        """Forget a job, refunding it if unfinished (see `JobStore.delete_job`)."""
        self.job_store.delete_job(account, job_id, now=now)

    def stored_stem(self, job_id: int, stem: str) -> Job | None:
        """The completed job that holds `stem`, if it still exists."""
        return self.job_store.stored_stem(job_id, stem)

    def insufficient(self, *, required_cents: int, available_cents: int) -> ApiError:
        """The documented 402, in the shape the settings ask for."""
        return self.ledger.insufficient(
            required_cents=required_cents, available_cents=available_cents
        )

    def top_up(self, key: str, cents: int) -> None:
        """Add ``cents`` to the wallet ``key`` spends from (tests: a top-up between runs)."""
        self.ledger.top_up(self.accounts[key], cents)

    # -- wire bodies and downloads --------------------------------------------------------

    def render_job(self, job: Job, now: float, *, media_base: str) -> dict[str, Any]:
        """The job object of §4, its links signed for `media_base` (scheme://host:port)."""
        s = self.settings
        if job.settled:  # terminal (see Job.status): the client may learn of its end now
            self.counters.notice(job.id, now - job.due)
        return _views.render_job(
            job,
            now,
            sparse=s.sparse_stems,
            ttl_s=s.download_ttl_s,
            sign=functools.partial(self.signer.presign, media_base),
        )

    def balance(self, account: Account) -> dict[str, Any]:
        """`GET /api-wallet/balance` for the user's wallet."""
        return _views.render_balance(account.wallet)

    def usage(self, account: Account, *, page: int, limit: int) -> dict[str, Any]:
        """`GET /api-wallet/usage` for the user's log: newest first, pages of `limit`."""
        return _views.render_usage(account.usage, page=page, limit=limit)

    def verify_download(
        self, url_path: str, *, expires: str | None, signature: str | None, now: float
    ) -> str | None:
        """None when the signed URL may be served, else the S3 error code to answer with."""
        return self.signer.verify(url_path, expires=expires, signature=signature, now=now)

    # -- observability --------------------------------------------------------------------

    def reset_counters(self) -> None:
        """Zero every counter and the wallet history; jobs, wallets and usage logs stay."""
        self.counters.reset()
        self.job_store.reset_peaks(self.accounts.values())

    def stats(self) -> dict[str, Any]:
        """Counters and wallets as plain, JSON-ready data (see the package docstring).

        `wallets` is keyed by API key; keys of one user show that user's one wallet.
        """
        c = self.counters
        accounts = self.accounts
        wallets = {
            key: {
                "plan": a.plan,
                "initial_cents": a.wallet.initial_cents,
                "balance_cents": a.wallet.balance_cents,
                "reserved_cents": a.wallet.reserved_cents,
                "spent_cents": a.wallet.spent_cents,
            }
            for key, a in accounts.items()
        }
        return {
            "requests": dict(c.requests),
            "responses": dict(c.responses),
            "submissions": dict(c.submissions),
            "jobs": self.job_store.totals(),
            "active_by_key": {k: a.active for k, a in accounts.items()},
            "peak_active_by_key": {k: a.peak_active for k, a in accounts.items()},
            "wallets": wallets,
            "wallet_events": [
                {"kind": kind, "api_key": key, "job_id": job_id, "cents": cents, "at": at}
                for kind, key, job_id, cents, at in c.events
            ],
            "downloads": {
                name: c.downloads[name]
                for name in (
                    "requests",
                    "served",
                    "bytes",
                    "denied",
                    "with_credentials",
                    "peak_in_flight",
                )
            },
            "api_peak_per_s": c.api_peak_per_s,
            "api_rate": c.api_rate(),
            "injected": dict(c.injected),
            "api_keys": {"created": c.key_changes["created"], "revoked": c.key_changes["revoked"]},
            "notice_delay": c.notice_summary(),
        }
