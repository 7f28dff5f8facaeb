"""The sandbox's records: jobs, usage rows, users and their keys, and the error type its
handlers raise.

Plain slotted classes, cheap enough to keep 100,000 jobs in memory. A job's status is derived
from the clock and its `settled` flag rather than stored, and so is a key's. Imports nothing
from batchpod.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

from ._billing import Wallet
from ._contract import (
    ALWAYS_PRESENT,
    MODE_STEMS,
    SPARSE_MODES,
    single_remainder,
    url_display_name,
)

PENDING: Final = "PENDING"
PROCESSING: Final = "PROCESSING"
COMPLETED: Final = "COMPLETED"
FAILED: Final = "FAILED"
STATUSES: Final = (PENDING, PROCESSING, COMPLETED, FAILED)

PENDING_SHARE: Final = 0.25  # of a job's processing time spent queued
SPARSE_DROP_CHANCE: Final = 0.2  # chance an optional instrument is "absent" from a sparse mode
FIRST_JOB_ID: Final = 5001  # real ids are large integers (docs show 5512)
MEDIA_PREFIX: Final = "/media/"

FAILURE_MESSAGES: Final = (
    "Stem separation failed: the audio could not be decoded",
    "Stem separation failed: the worker ran out of memory",
    "Stem separation failed: processing timed out",
)

NOT_FOUND_DETAIL: Final = "Job not found or access denied"
RATE_LIMIT_DETAIL: Final = "Rate limit exceeded. Try again later."


class ApiError(Exception):
    """A response the sandbox answers instead of doing the work: status, JSON body, headers."""

    def __init__(self, status: int, body: object, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body!r}")
        self.status = status
        self.body = body
        self.headers: dict[str, str] = dict(headers or {})


def detail(status: int, message: str, headers: Mapping[str, str] | None = None) -> ApiError:
    """A FastAPI-style `{"detail": message}` error."""
    return ApiError(status, {"detail": message}, headers)


def iso(ts: float) -> str:
    """Unix seconds as the API writes them: ISO-8601, microseconds, no timezone (§1)."""
    return (
        datetime.fromtimestamp(ts, tz=UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    )


class Job:
    """One stem job. Only `settled` changes after submit; the status is derived from the clock."""

    __slots__ = (
        "account",
        "cost_cents",
        "created",
        "detail_seed",
        "due",
        "duration_s",
        "error_message",
        "id",
        "mode",
        "settled",
        "source",
        "source_type",
        "started",
        "stem",
    )

    def __init__(
        self,
        *,
        job_id: int,
        account: Account,
        source_type: str,
        source: str,
        mode: str,
        stem: str | None,
        duration_s: float,
        cost: int,
        created: float,
        started: float,
        due: float,
        error_message: str | None,
        detail_seed: int,
    ) -> None:
        self.id = job_id
        self.account = account
        self.source_type = source_type
        self.source = source  # the URL of a URL job, the file name of an upload
        self.mode = mode
        self.stem = stem
        self.duration_s = duration_s
        self.cost_cents = cost
        self.created = created
        self.started = started
        self.due = due
        self.error_message = error_message
        self.detail_seed = detail_seed
        self.settled = False  # charged or refunded; the status is then terminal

    def status(self, now: float) -> str:
        """The job's status at `now`. Terminal only once settled, so it never outruns the wallet."""
        if self.settled:
            return FAILED if self.error_message is not None else COMPLETED
        # `<= created` keeps a zero-length job PENDING in its own submit response.
        if now < self.started or now <= self.created:
            return PENDING
        return PROCESSING

    def outputs(self, *, sparse: bool) -> dict[str, float]:
        """Stem name -> quality score, derived from the job's seed (nothing stored per stem)."""
        rng = random.Random(self.detail_seed)
        if self.mode == "single":
            assert self.stem is not None
            names: tuple[str, ...] = (self.stem, single_remainder(self.stem))
        else:
            names = MODE_STEMS[self.mode]
            drop = [rng.random() < SPARSE_DROP_CHANCE for _ in names]
            if sparse and self.mode in SPARSE_MODES:
                names = tuple(
                    n for n, d in zip(names, drop, strict=True) if n in ALWAYS_PRESENT or not d
                )
        return {name: round(rng.uniform(0.3, 0.95), 2) for name in names}

    @property
    def input_path(self) -> str:
        """Where the input lives. For URL jobs the real value is a storage key of the
        downloaded media; the sandbox keeps the URL itself (and a name in display_name) so a
        client can find the job of an ambiguous submit by listing. Uploads follow §4."""
        if self.source_type == "URL":
            return self.source
        return f"inputs/stem_extraction/job{self.id}/{self.source}"

    @property
    def display_name(self) -> str:
        """A human name for the input: the upload's file name, or one derived from the URL."""
        return url_display_name(self.source) if self.source_type == "URL" else self.source

    @property
    def task_id(self) -> str:
        """The Celery-style task UUID the real service reports."""
        return str(uuid.UUID(int=self.detail_seed, version=4))


class UsageRow:
    """One usage-log line: a charge that was kept, and the id of the key that ran the job."""

    __slots__ = ("at", "cents", "duration_s", "job_id", "key_id", "row_seed")

    def __init__(
        self, *, row_seed: int, job_id: int, key_id: str, duration_s: float, cents: int, at: float
    ):
        self.row_seed = row_seed  # the row's UUID, built only when the log is read
        self.job_id = job_id
        self.key_id = key_id
        self.duration_s = duration_s
        self.cents = cents
        self.at = at

    @property
    def id(self) -> str:
        """The row's UUID."""
        return str(uuid.UUID(int=self.row_seed, version=4))


KEY_ACTIVE: Final = "active"
KEY_REVOKED: Final = "revoked"
KEY_EXPIRED: Final = "expired"


class User:
    """One AudioPod user: the plan, wallet, jobs and usage log that all of its API keys share.

    The real service bills a user, not a key: a key created with another key spends from the
    same wallet and sees the same jobs (§8; the docs' "one user with several keys").
    """

    __slots__ = ("jobs", "keys", "plan", "usage", "wallet")

    def __init__(self, *, plan: str, balance_cents: int) -> None:
        self.plan = plan
        self.wallet = Wallet(initial_cents=balance_cents)
        self.jobs: dict[int, Job] = {}  # insertion order = submit order
        self.usage: list[UsageRow] = []
        self.keys: list[Account] = []  # creation order


class Account:
    """One API key as a caller: its identity, lifetime and rate-limit bucket, and the `User`
    whose plan, wallet, jobs and usage log it shares with that user's other keys.

    `active`/`peak_active` count the jobs this key submitted that have not finished.
    """

    __slots__ = (
        "active",
        "created",
        "expires_at",
        "key",
        "key_id",
        "last_used",
        "name",
        "peak_active",
        "revoked_at",
        "scopes",
        "tokens",
        "tokens_at",
        "user",
    )

    def __init__(
        self,
        *,
        key: str,
        key_id: str,
        user: User,
        name: str,
        scopes: tuple[str, ...],
        created: float,
        expires_at: float | None = None,
        revoked_at: float | None = None,
    ) -> None:
        self.key = key
        self.key_id = key_id
        self.user = user
        self.name = name
        self.scopes = scopes
        self.created = created
        self.expires_at = expires_at  # the first instant the key no longer works
        self.revoked_at = revoked_at
        self.last_used: float | None = None
        self.active = 0
        self.peak_active = 0
        self.tokens = 0.0
        self.tokens_at = -math.inf
        user.keys.append(self)

    def status(self, now: float) -> str:
        """ "active", "revoked" or "expired" at `now`; a revoked key stays revoked."""
        if self.revoked_at is not None:
            return KEY_REVOKED
        if self.expires_at is not None and now >= self.expires_at:
            return KEY_EXPIRED
        return KEY_ACTIVE

    @property
    def plan(self) -> str:
        """The user's plan."""
        return self.user.plan

    @property
    def wallet(self) -> Wallet:
        """The user's wallet, shared by all of the user's keys."""
        return self.user.wallet

    @property
    def jobs(self) -> dict[int, Job]:
        """The user's jobs, whichever key submitted them, in submit order."""
        return self.user.jobs

    @property
    def usage(self) -> list[UsageRow]:
        """The user's usage log."""
        return self.user.usage
