"""The sandbox's API keys: every key by its value, the user behind it, and whether it may call.

Each configured key (`api_key` and every `extra_keys` entry) is its own `User` with its own
wallet. A key created through `POST /auth/api-keys` joins the creating key's user, so it spends
from the same wallet and sees the same jobs and usage log. How a key body is checked and shown
on the wire is `_keys`'s; this module holds the keys. Imports nothing from batchpod.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping

from ._counters import Counters
from ._keys import SECONDS_PER_DAY, NewKey, not_found
from ._records import KEY_EXPIRED, KEY_REVOKED, Account, User, detail
from ._settings import KeySpec


class KeyRing:
    """Every API key by its value: who is calling, and each user's create, list and revoke."""

    def __init__(
        self,
        keys: Mapping[str, KeySpec],
        *,
        started: float,
        id_rng: random.Random,
        key_rng: random.Random,
        counters: Counters,
    ) -> None:
        # Its own stream, so creating a key does not shift any job's or usage row's draws.
        self._rng = key_rng
        self._counters = counters
        self.accounts: dict[str, Account] = {}  # whichever user each key belongs to
        for key, spec in keys.items():
            # A configured "revoked" key was revoked, and an "expired" one expired, the moment
            # the sandbox started; the key list shows them so.
            self.accounts[key] = Account(
                key=key,
                key_id=_uuid4(id_rng),
                user=User(plan=spec.plan, balance_cents=spec.balance_cents),
                name="default",
                scopes=("*",),
                created=started,
                expires_at=started if spec.status == KEY_EXPIRED else None,
                revoked_at=started if spec.status == KEY_REVOKED else None,
            )

    def authenticate(
        self, *, x_api_key: str | None, authorization: str | None, now: float
    ) -> Account:
        """The account behind the request's key, marked used at `now`, or a 401/403 ApiError."""
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
        account.last_used = now
        return account

    def create_key(self, account: Account, new: NewKey, *, now: float) -> tuple[Account, str]:
        """A new key of `account`'s user, working at once; returns it and its value.

        [INFERRED] The value is `ap_` and 32 hex digits: the docs only show `ap_xxx…`, and the
        SDK insists on the prefix. Drawn from the seeded RNG, so a run repeats.
        """
        rng = self._rng
        key = f"ap_{rng.getrandbits(128):032x}"
        while key in self.accounts:  # cannot really happen; a configured key might match
            key = f"ap_{rng.getrandbits(128):032x}"
        days = new.expires_in_days
        created = Account(
            key=key,
            key_id=_uuid4(rng),
            user=account.user,
            name=new.name,
            scopes=new.scopes,
            created=now,
            expires_at=None if days is None else now + days * SECONDS_PER_DAY,
        )
        self.accounts[key] = created
        self._counters.key_changes["created"] += 1
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
                    self._counters.key_changes["revoked"] += 1
                return key
        raise not_found()


def _uuid4(rng: random.Random) -> str:
    """A version-4 UUID drawn from `rng`, so ids repeat with the seed."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
