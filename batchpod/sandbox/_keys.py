"""API-key management on the wire: the create body's checks and how a key is shown.

The contract (§8) documents `POST /api/v1/auth/api-keys` with `{name, scopes, expires_in_days}`
and its response, and names `GET` (list) and `DELETE .../{id}` (revoke) without bodies. What is
not documented is inferred here and marked so. The keys themselves live in `KeyRing`
(`_keyring`); this module only validates and renders. Imports nothing from batchpod.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._records import Account, ApiError, detail, iso
from ._validation import invalid, missing

# [INFERRED] The docs give no bounds. 100 characters is the usual VARCHAR(100) name column.
NAME_MAX_CHARS: Final = 100
# The sandbox's own bound: it keeps every expiry inside datetime's range. Real one unknown.
EXPIRES_MAX_DAYS: Final = 3650
DEFAULT_SCOPES: Final = ("*",)  # what every docs example sends
SECONDS_PER_DAY: Final = 86_400
KEY_NOT_FOUND_DETAIL: Final = "API key not found"  # [INFERRED] FastAPI's usual 404 wording


@dataclass(frozen=True, slots=True, kw_only=True)
class NewKey:
    """A validated `POST /auth/api-keys` body."""

    name: str
    scopes: tuple[str, ...]
    expires_in_days: int | None


def parse_new_key(body: dict[str, Any]) -> NewKey:
    """The create body as pydantic would check `name: constr(strip_whitespace=True,
    min_length=1, max_length=100)`, `scopes: list[str] = ["*"]`, `expires_in_days:
    PositiveInt | None = None`; every problem is reported at once, as a FastAPI 422.

    Unknown fields are ignored, as pydantic does by default. Stricter than pydantic's lax mode
    in one way: `true` and `"90"` are not accepted as a number of days.
    """
    errors: list[dict[str, Any]] = []
    name = _name(body, errors)
    scopes = _scopes(body, errors)
    days = _days(body, errors)
    if errors:
        raise invalid(*errors)
    assert name is not None and scopes is not None
    return NewKey(name=name, scopes=scopes, expires_in_days=days)


def _name(body: dict[str, Any], errors: list[dict[str, Any]]) -> str | None:
    if "name" not in body or body["name"] is None:
        errors.append(missing("body", "name"))
        return None
    raw = body["name"]
    loc = ["body", "name"]
    if not isinstance(raw, str):
        errors.append(_error("string_type", loc, "Input should be a valid string", raw))
        return None
    # [INFERRED] A blank name is refused (whitespace stripped first), as a list of keys is
    # useless with nameless rows in it.
    name = raw.strip()
    if not name:
        errors.append(
            _error(
                "string_too_short",
                loc,
                "String should have at least 1 character",
                raw,
                {"min_length": 1},
            )
        )
        return None
    if len(name) > NAME_MAX_CHARS:
        errors.append(
            _error(
                "string_too_long",
                loc,
                f"String should have at most {NAME_MAX_CHARS} characters",
                raw,
                {"max_length": NAME_MAX_CHARS},
            )
        )
        return None
    return name


def _scopes(body: dict[str, Any], errors: list[dict[str, Any]]) -> tuple[str, ...] | None:
    if "scopes" not in body:
        return DEFAULT_SCOPES
    raw = body["scopes"]
    if not isinstance(raw, list):
        errors.append(_error("list_type", ["body", "scopes"], "Input should be a valid list", raw))
        return None
    bad = [
        _error("string_type", ["body", "scopes", i], "Input should be a valid string", item)
        for i, item in enumerate(raw)
        if not isinstance(item, str)
    ]
    errors.extend(bad)
    return None if bad else tuple(raw)


def _days(body: dict[str, Any], errors: list[dict[str, Any]]) -> int | None:
    raw = body.get("expires_in_days")
    if raw is None:
        return None  # no expiry, as `"expires_in_days": null` in the docs
    loc = ["body", "expires_in_days"]
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)  # pydantic accepts 90.0 for an int
    if isinstance(raw, float):
        errors.append(
            _error(
                "int_from_float",
                loc,
                "Input should be a valid integer, got a number with a fractional part",
                raw,
            )
        )
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        errors.append(_error("int_type", loc, "Input should be a valid integer", raw))
        return None
    if raw <= 0:
        errors.append(_error("greater_than", loc, "Input should be greater than 0", raw, {"gt": 0}))
        return None
    if raw > EXPIRES_MAX_DAYS:
        errors.append(
            _error(
                "less_than_equal",
                loc,
                f"Input should be less than or equal to {EXPIRES_MAX_DAYS}",
                raw,
                {"le": EXPIRES_MAX_DAYS},
            )
        )
        return None
    return raw


def _error(
    kind: str, loc: Sequence[str | int], msg: str, value: object, ctx: dict[str, int] | None = None
) -> dict[str, Any]:
    """One pydantic v2 error record."""
    record: dict[str, Any] = {"type": kind, "loc": list(loc), "msg": msg, "input": value}
    if ctx is not None:
        record["ctx"] = ctx
    return record


def render_created(account: Account, key: str) -> dict[str, Any]:
    """The documented create response (§8): the only place the key's value is ever shown."""
    return {
        "id": account.key_id,
        "name": account.name,
        "api_key": key,
        "scopes": list(account.scopes),
        "created_at": iso(account.created),
        "expires_at": _iso_or_none(account.expires_at),
    }


def render_key(account: Account, now: float) -> dict[str, Any]:
    """One row of `GET /auth/api-keys`: never the key's value.

    `id`, `name`, `scopes`, `created_at` and `expires_at` are the create response's documented
    fields; `last_used_at` and `revoked_at` come from the older docs [DOCS-HIST]; `status`
    ("active"/"revoked"/"expired") is [INFERRED] from their `?status=active` filter and the
    dashboard's "Status (active/revoked)" column. No masked prefix such as "ap_ab12…" is shown:
    no AudioPod source mentions one, and a client should not learn to rely on a field the
    real service may not send.
    """
    return {
        "id": account.key_id,
        "name": account.name,
        "scopes": list(account.scopes),
        "status": account.status(now),
        "created_at": iso(account.created),
        "last_used_at": _iso_or_none(account.last_used),
        "expires_at": _iso_or_none(account.expires_at),
        "revoked_at": _iso_or_none(account.revoked_at),
    }


def render_revoked(account: Account) -> dict[str, Any]:
    """`DELETE /auth/api-keys/{id}`'s answer. [INFERRED] The docs show no body; a FastAPI
    route that soft-deletes most likely answers 200 with a short message (the stem job delete
    answers 204, but that one removes the job outright). Revoking twice is the same 200 with
    the first `revoked_at`, so a retried DELETE is harmless."""
    assert account.revoked_at is not None
    return {
        "id": account.key_id,
        "message": "API key revoked",
        "revoked_at": iso(account.revoked_at),
    }


def _iso_or_none(ts: float | None) -> str | None:
    return None if ts is None else iso(ts)


def not_found() -> ApiError:
    """The 404 for an unknown key id or another user's key (the two are not told apart)."""
    return detail(404, KEY_NOT_FOUND_DETAIL)
