"""What AudioPod answers about the account's API keys (§8): frozen value objects parsed from JSON.

Pure: no I/O and no aiohttp. Owns the reading of the key list, a created key and a revocation,
and ``is_key_shaped``, the one test of what an AudioPod key looks like. Of all the client's
value objects only ``CreatedApiKey`` ever holds a key's value, and its repr does not show it.
Parsing follows ``_models``: ``from_json`` raises nothing but ``InvalidResponse``, and any key
value a list item carries is not kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from batchpod.errors import InvalidResponse

from ._models import SHORT_TOKEN, kind_of, parse_time, text_of


class KeyStatus(StrEnum):
    """Whether an API key still works, as the key list says or as its times imply.

    ``UNKNOWN`` is a status word batchpod does not know (the list's ``status`` is inferred
    from the older docs' ``?status=active`` filter, §8).
    """

    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyInfo:
    """One API key as ``GET /auth/api-keys`` lists it (§8): its metadata, never its value."""

    id: str
    name: str | None = None
    scopes: tuple[str, ...] = ()
    status: KeyStatus = KeyStatus.ACTIVE
    created_at: datetime | None = None
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not SHORT_TOKEN.fullmatch(self.id):
            raise ValueError("an API key id must be a short token")
        object.__setattr__(self, "scopes", tuple(self.scopes))

    @classmethod
    def from_json(cls, data: object, *, now: datetime) -> ApiKeyInfo:
        """A key from one decoded list item. ``status`` is read when the item has a string
        one, else derived: ``revoked_at`` set means revoked, ``expires_at`` at or before
        ``now`` expired, otherwise active. Any value the item carries is not kept."""
        if not isinstance(data, dict):
            raise InvalidResponse(f"expected an API key object, got {kind_of(data)}")
        revoked_at = parse_time(data.get("revoked_at"))
        expires_at = parse_time(data.get("expires_at"))
        raw_status = data.get("status")
        if isinstance(raw_status, str) and raw_status.strip():
            try:
                status = KeyStatus(raw_status.strip().lower())
            except ValueError:
                status = KeyStatus.UNKNOWN
        elif revoked_at is not None:
            status = KeyStatus.REVOKED
        elif expires_at is not None and expires_at <= now:
            status = KeyStatus.EXPIRED
        else:
            status = KeyStatus.ACTIVE
        return cls(
            id=_key_id_of(data),
            name=text_of(data.get("name")),
            scopes=_scopes_of(data.get("scopes")),
            status=status,
            created_at=parse_time(data.get("created_at")),
            last_used_at=parse_time(data.get("last_used_at")),
            expires_at=expires_at,
            revoked_at=revoked_at,
        )


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class CreatedApiKey:
    """A key ``POST /auth/api-keys`` just made (§8). The only object that holds a key's value
    (``key``): AudioPod shows it this once. Its repr and str show ``ap_***`` instead."""

    id: str
    key: str
    name: str | None = None
    scopes: tuple[str, ...] = ()
    created_at: datetime | None = None
    expires_at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not SHORT_TOKEN.fullmatch(self.id):
            raise ValueError("an API key id must be a short token")
        if not is_key_shaped(self.key):
            raise ValueError("the key's value is not an AudioPod key (ap_...)")
        object.__setattr__(self, "scopes", tuple(self.scopes))

    def __repr__(self) -> str:
        return (
            f"CreatedApiKey(id={self.id!r}, name={self.name!r}, scopes={self.scopes!r}, "
            "key='ap_***')"
        )

    __str__ = __repr__

    @property
    def info(self) -> ApiKeyInfo:
        """The new key's metadata, as the key list would show it."""
        return ApiKeyInfo(
            id=self.id,
            name=self.name,
            scopes=self.scopes,
            status=KeyStatus.ACTIVE,
            created_at=self.created_at,
            expires_at=self.expires_at,
        )

    @classmethod
    def from_json(cls, data: object) -> CreatedApiKey:
        """The key from a decoded create response: ``id``, ``api_key`` and the rest (§8)."""
        if not isinstance(data, dict):
            raise InvalidResponse(f"expected the created API key, got {kind_of(data)}")
        key_id = _key_id_of(data)
        value = data.get("api_key")
        if not is_key_shaped(value):
            # Never the value itself, even a malformed one: it may be most of a real key.
            raise InvalidResponse(
                f"AudioPod made API key {key_id} but sent no usable value for it (no ap_ "
                "'api_key'); revoke that key and create another"
            )
        assert isinstance(value, str)
        return cls(
            id=key_id,
            key=value,
            name=text_of(data.get("name")),
            scopes=_scopes_of(data.get("scopes")),
            created_at=parse_time(data.get("created_at")),
            expires_at=parse_time(data.get("expires_at")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RevokedApiKey:
    """What ``DELETE /auth/api-keys/{id}`` says (the docs show no body: ``revoked_at`` is
    ``None`` when the answer has none)."""

    id: str
    revoked_at: datetime | None = None

    @classmethod
    def from_json(cls, data: object, *, key_id: str) -> RevokedApiKey:
        """The revocation from a decoded answer (``None`` for an empty one) to revoking
        ``key_id``."""
        if not isinstance(data, dict):
            return cls(id=key_id)
        return cls(id=key_id, revoked_at=parse_time(data.get("revoked_at")))


# -- field readers ---------------------------------------------------------------------------


def api_keys_of(data: object, *, now: datetime) -> list[ApiKeyInfo]:
    """The keys of a key list body: ``{"api_keys": [...]}`` (the sandbox, after the one
    AudioPod example), ``{"keys": [...]}`` or a bare array."""
    items = data
    if isinstance(data, dict):
        items = next((data[k] for k in ("api_keys", "keys") if k in data), None)
    if not isinstance(items, list):
        raise InvalidResponse("the key list has no 'api_keys' array")
    return [ApiKeyInfo.from_json(item, now=now) for item in items]


def is_key_shaped(value: object) -> bool:
    """Whether ``value`` looks like an AudioPod key: ``ap_`` and more, printable ASCII, no
    spaces. Says nothing about whether AudioPod accepts it."""
    return (
        isinstance(value, str)
        and value.startswith("ap_")
        and len(value) > 3
        and value.isascii()
        and value.isprintable()
        and not any(c.isspace() for c in value)
    )


def _key_id_of(data: Mapping[str, Any]) -> str:
    """An API key's ``id`` (or ``key_id``) as a short token; InvalidResponse otherwise."""
    value = data.get("id")
    if value is None:
        value = data.get("key_id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not SHORT_TOKEN.fullmatch(value.strip()):
        raise InvalidResponse(f"an API key has no usable 'id' ({kind_of(value)})")
    return value.strip()


def _scopes_of(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()
