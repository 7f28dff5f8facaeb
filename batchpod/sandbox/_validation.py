"""FastAPI-shaped 422 bodies and parameter checks for the sandbox's handlers.

The real service is FastAPI (§1), so validation failures are lists of pydantic v2 error
records under `detail` (§9, inferred). Imports nothing from batchpod.
"""

from __future__ import annotations

from typing import Any

from ._records import ApiError


def invalid(*errors: dict[str, Any]) -> ApiError:
    """FastAPI's 422 body: a list of pydantic v2 error records (§9 [INFERRED])."""
    return ApiError(422, {"detail": list(errors)})


def missing(where: str, name: str) -> dict[str, Any]:
    return {"type": "missing", "loc": [where, name], "msg": "Field required", "input": None}


def missing_body() -> dict[str, Any]:
    """The record FastAPI gives when a required JSON body is absent or empty."""
    return {"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}


def not_one_of(where: str, name: str, value: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    expected = ", ".join(f"'{a}'" for a in allowed[:-1]) + f" or '{allowed[-1]}'"
    return {
        "type": "enum",
        "loc": [where, name],
        "msg": f"Input should be {expected}",
        "input": value,
        "ctx": {"expected": expected},
    }


def value_error(loc: list[str], message: str, value: object = None) -> dict[str, Any]:
    return {"type": "value_error", "loc": loc, "msg": f"Value error, {message}", "input": value}


def int_param(where: str, name: str, raw: str | None, *, default: int, lo: int, hi: int) -> int:
    """An integer query/path parameter validated like FastAPI's `Query(ge=lo, le=hi)`."""
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(
            {
                "type": "int_parsing",
                "loc": [where, name],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": raw,
            }
        ) from None
    if value < lo:
        raise invalid(_bound(where, name, raw, "greater_than_equal", lo))
    if value > hi:
        raise invalid(_bound(where, name, raw, "less_than_equal", hi))
    return value


def _bound(where: str, name: str, raw: str, kind: str, limit: int) -> dict[str, Any]:
    words = "greater than or equal to" if kind == "greater_than_equal" else "less than or equal to"
    return {
        "type": kind,
        "loc": [where, name],
        "msg": f"Input should be {words} {limit}",
        "input": raw,
        "ctx": {"ge" if kind == "greater_than_equal" else "le": limit},
    }
