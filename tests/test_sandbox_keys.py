"""The sandbox's API-key management: create, list and revoke keys of one user, over sockets."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest
from audiopod import Client
from audiopod.exceptions import APIError
from conftest import FakeClock, SandboxFactory

from batchpod.sandbox import KeySpec, SandboxHandle, SandboxThread

KEYS = "/api/v1/auth/api-keys"
BALANCE = "/api/v1/api-wallet/balance"
STEMS = "/api/v1/stem-extraction"
SONG = "https://example.com/music/song.mp3?duration=300"  # 50 cents
START = "2026-01-01T00:00:00.000000"  # FakeClock's start, as the API writes it
DAY = 86_400
ROW_FIELDS = {
    "id",
    "name",
    "scopes",
    "status",
    "created_at",
    "last_used_at",
    "expires_at",
    "revoked_at",
}
REVOKED = {"detail": "API key has been revoked"}
EXPIRED = {"detail": "API key has expired"}


def auth(key: str) -> dict[str, str]:
    """Headers that authenticate with `key` the documented way."""
    return {"X-API-Key": key}


async def call(
    http: aiohttp.ClientSession,
    sb: SandboxHandle,
    method: str,
    path: str,
    key: str | None,
    **kwargs: Any,
) -> tuple[int, Any]:
    """Send one request with `key` (none if None); the status and the JSON body."""
    headers = auth(key) if key is not None else {}
    async with http.request(method, sb.base_url + path, headers=headers, **kwargs) as resp:
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, body


async def create(
    http: aiohttp.ClientSession, sb: SandboxHandle, key: str | None = None, **body: Any
) -> dict[str, Any]:
    """Create a key with `key` (default: the sandbox's) and return the 200 body."""
    status, created = await call(http, sb, "POST", KEYS, key or sb.api_key, json=body)
    assert status == 200, created
    assert isinstance(created, dict)
    return created


async def listed(
    http: aiohttp.ClientSession, sb: SandboxHandle, key: str | None = None, **query: str
) -> list[dict[str, Any]]:
    """The rows of `GET /auth/api-keys` as seen by `key` (default: the sandbox's)."""
    status, body = await call(http, sb, "GET", KEYS, key or sb.api_key, params=query)
    assert status == 200, body
    rows: list[dict[str, Any]] = body["api_keys"]
    return rows


async def balance_cents(http: aiohttp.ClientSession, sb: SandboxHandle, key: str) -> int:
    """The wallet balance `key` reads."""
    status, body = await call(http, sb, "GET", BALANCE, key)
    assert status == 200, body
    cents: int = body["balance_cents"]
    return cents


async def submit(
    http: aiohttp.ClientSession, sb: SandboxHandle, key: str, **fields: str
) -> tuple[int, Any]:
    """POST an urlencoded submit with `key`."""
    return await call(http, sb, "POST", f"{STEMS}/api/extract", key, data=fields)


# -- create ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_create_returns_the_documented_shape(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """POST /auth/api-keys answers 200 with exactly id, name, api_key, scopes, created_at and
    expires_at; the value is a fresh ap_ key and scopes default to ["*"]."""
    async with sandbox_factory(clock=fake_clock) as sb:
        body = await create(http, sb, name="production-key", expires_in_days=None)
    assert set(body) == {"id", "name", "api_key", "scopes", "created_at", "expires_at"}
    assert uuid.UUID(body["id"]).version == 4
    assert body["name"] == "production-key"
    assert body["api_key"].startswith("ap_") and len(body["api_key"]) == 35
    assert body["api_key"] != sb.api_key
    assert body["scopes"] == ["*"]
    assert (body["created_at"], body["expires_at"]) == (START, None)


@pytest.mark.anyio
async def test_create_echoes_scopes_expiry_and_accepts_bearer(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """A Bearer key may create; scopes are echoed, expiry is N days on, the name is trimmed."""
    async with sandbox_factory(clock=fake_clock) as sb:
        headers = {"Authorization": f"Bearer {sb.api_key}"}
        payload = {"name": "  ci-runner  ", "scopes": ["stems:separate"], "expires_in_days": 90}
        async with http.post(sb.base_url + KEYS, json=payload, headers=headers) as resp:
            assert resp.status == 200
            body = await resp.json()
        longest = await create(http, sb, name="n" * 100, expires_in_days=1.0)
    assert body["name"] == "ci-runner"
    assert body["scopes"] == ["stems:separate"]
    assert body["expires_at"] == "2026-04-01T00:00:00.000000"
    assert longest["name"] == "n" * 100
    assert longest["expires_at"] == "2026-01-02T00:00:00.000000"


@pytest.mark.anyio
async def test_created_key_works_at_once_and_shares_wallet_jobs_and_usage(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """A new key reads the creating key's balance, spends from it, and both keys see the
    same jobs and usage log (one user, several keys)."""
    async with sandbox_factory(clock=fake_clock, processing_s=10.0) as sb:
        new = await create(http, sb, name="second")
        assert await balance_cents(http, sb, new["api_key"]) == 10_000
        status, job = await submit(http, sb, new["api_key"], url=SONG, mode="four")
        assert status == 200
        assert await balance_cents(http, sb, sb.api_key) == 9_950
        status, seen = await call(http, sb, "GET", f"{STEMS}/status/{job['id']}", sb.api_key)
        assert (status, seen["status"]) == (200, "PENDING")
        status, jobs = await call(http, sb, "GET", f"{STEMS}/jobs", sb.api_key)
        assert [j["id"] for j in jobs] == [job["id"]]
        fake_clock.advance(10)
        status, usage = await call(http, sb, "GET", "/api/v1/api-wallet/usage", sb.api_key)
        stats = sb.stats()
    (row,) = usage["logs"]
    assert (row["job_id"], row["amount_cents"]) == (str(job["id"]), 50)
    assert row["api_key_id"] == new["id"]  # the key that ran the job
    assert stats["wallets"][new["api_key"]] == stats["wallets"][sb.api_key]
    assert stats["wallets"][sb.api_key]["spent_cents"] == 50
    assert stats["api_keys"] == {"created": 1, "revoked": 0}


@pytest.mark.anyio
async def test_one_key_deletes_another_keys_pending_job(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """Deleting a pending job submitted by another key of the user refunds the shared wallet
    and frees the submitting key's active count."""
    async with sandbox_factory(clock=fake_clock, processing_s=10.0) as sb:
        new = await create(http, sb, name="worker")
        _, job = await submit(http, sb, new["api_key"], url=SONG, mode="four")
        assert sb.stats()["active_by_key"][new["api_key"]] == 1
        status, _ = await call(http, sb, "DELETE", f"{STEMS}/jobs/{job['id']}", sb.api_key)
        assert status == 204
        stats = sb.stats()
        assert await balance_cents(http, sb, new["api_key"]) == 10_000
    assert stats["active_by_key"] == {sb.api_key: 0, new["api_key"]: 0}
    refund = stats["wallet_events"][-1]
    assert (refund["kind"], refund["api_key"], refund["cents"]) == ("refund", new["api_key"], 50)


# -- list ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_list_never_shows_a_key_value(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """GET /auth/api-keys lists the user's keys newest first with their metadata, and no key
    value appears anywhere in the raw body."""
    async with sandbox_factory(clock=fake_clock) as sb:
        first = await create(http, sb, name="first")
        fake_clock.advance(60)
        second = await create(http, sb, name="second", scopes=["stems:separate"])
        async with http.get(sb.base_url + KEYS, headers=auth(second["api_key"])) as resp:
            assert resp.status == 200
            raw = await resp.text()
            body = await resp.json()
    for value in (sb.api_key, first["api_key"], second["api_key"]):
        assert value not in raw
    assert "ap_" not in raw
    rows = body["api_keys"]
    assert [r["name"] for r in rows] == ["second", "first", "default"]
    assert all(set(r) == ROW_FIELDS for r in rows)
    newest = rows[0]
    assert newest == {
        "id": second["id"],
        "name": "second",
        "scopes": ["stems:separate"],
        "status": "active",
        "created_at": "2026-01-01T00:01:00.000000",
        "last_used_at": "2026-01-01T00:01:00.000000",  # it authenticated this very list call
        "expires_at": None,
        "revoked_at": None,
    }
    assert rows[1]["last_used_at"] is None  # `first` was created but never used
    assert rows[2]["last_used_at"] == "2026-01-01T00:01:00.000000"  # created `second`


@pytest.mark.anyio
async def test_last_used_at_follows_each_authenticated_call(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """Every call a key authenticates moves its last_used_at to the sandbox clock."""
    async with sandbox_factory(clock=fake_clock) as sb:
        new = await create(http, sb, name="probe")
        fake_clock.advance(3600)
        await balance_cents(http, sb, new["api_key"])
        fake_clock.advance(60)
        rows = {r["name"]: r for r in await listed(http, sb)}
    assert rows["probe"]["last_used_at"] == "2026-01-01T01:00:00.000000"
    assert rows["default"]["last_used_at"] == "2026-01-01T01:01:00.000000"


@pytest.mark.anyio
async def test_list_filters_by_status(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """?status=active|revoked|expired keeps only those keys; another value is a 422."""
    async with sandbox_factory(clock=fake_clock) as sb:
        await create(http, sb, name="live")
        dead = await create(http, sb, name="dead")
        await create(http, sb, name="short", expires_in_days=1)
        status, _ = await call(http, sb, "DELETE", f"{KEYS}/{dead['id']}", sb.api_key)
        assert status == 200
        fake_clock.advance(DAY)
        names = {
            s: [r["name"] for r in await listed(http, sb, status=s)]
            for s in ("active", "revoked", "expired")
        }
        every = await listed(http, sb)
        status, bad = await call(http, sb, "GET", KEYS, sb.api_key, params={"status": "Active"})
    assert names == {"active": ["live", "default"], "revoked": ["dead"], "expired": ["short"]}
    assert [(r["name"], r["status"]) for r in every] == [
        ("short", "expired"),
        ("dead", "revoked"),
        ("live", "active"),
        ("default", "active"),
    ]
    assert status == 422
    (err,) = bad["detail"]
    assert (err["loc"], err["type"], err["input"]) == (["query", "status"], "enum", "Active")


@pytest.mark.anyio
async def test_configured_keys_are_separate_users_listed_with_their_status(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """Each configured key is its own user: it lists only itself, with its own wallet."""
    keys = {"ap_other": KeySpec(balance_cents=500)}
    async with sandbox_factory(clock=fake_clock, extra_keys=keys) as sb:
        await create(http, sb, name="mine")
        (other,) = await listed(http, sb, "ap_other")
        mine = await listed(http, sb)
        assert await balance_cents(http, sb, "ap_other") == 500
    assert (other["name"], other["status"], other["created_at"]) == ("default", "active", START)
    assert other["id"] not in {r["id"] for r in mine}
    assert [r["name"] for r in mine] == ["mine", "default"]


# -- revoke ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_revoked_key_is_403_on_every_call(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """DELETE /auth/api-keys/{id} answers 200; from then on the key gets 403 "API key has
    been revoked" on balance, submit and key management, while the other key still works."""
    async with sandbox_factory(clock=fake_clock) as sb:
        new = await create(http, sb, name="leaked")
        fake_clock.advance(30)
        status, body = await call(http, sb, "DELETE", f"{KEYS}/{new['id']}", sb.api_key)
        assert status == 200
        assert body == {
            "id": new["id"],
            "message": "API key revoked",
            "revoked_at": "2026-01-01T00:00:30.000000",
        }
        dead = new["api_key"]
        assert await call(http, sb, "GET", BALANCE, dead) == (403, REVOKED)
        assert await submit(http, sb, dead, url=SONG, mode="four") == (403, REVOKED)
        assert await call(http, sb, "GET", KEYS, dead) == (403, REVOKED)
        assert await call(http, sb, "POST", KEYS, dead, json={"name": "x"}) == (403, REVOKED)
        assert await balance_cents(http, sb, sb.api_key) == 10_000
        fake_clock.advance(30)
        again = await call(http, sb, "DELETE", f"{KEYS}/{new['id']}", sb.api_key)
        (row,) = [r for r in await listed(http, sb) if r["id"] == new["id"]]
        stats = sb.stats()
    assert again == (200, body)  # revoking twice keeps the first revoked_at
    assert (row["status"], row["revoked_at"]) == ("revoked", "2026-01-01T00:00:30.000000")
    assert stats["api_keys"] == {"created": 1, "revoked": 1}
    assert stats["wallet_events"] == []


@pytest.mark.anyio
async def test_a_key_may_revoke_itself(sandbox: SandboxHandle, http: aiohttp.ClientSession):
    """A key that revokes itself gets its 200, then 403 on its next call."""
    new = await create(http, sandbox, name="self")
    key = new["api_key"]
    status, _ = await call(http, sandbox, "DELETE", f"{KEYS}/{new['id']}", key)
    assert status == 200
    assert await call(http, sandbox, "GET", BALANCE, key) == (403, REVOKED)


@pytest.mark.anyio
@pytest.mark.parametrize("key_id", ["other", str(uuid.uuid4()), "not-a-uuid"])
async def test_revoking_a_key_outside_the_user_is_404(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, key_id: str
):
    """Another user's key id, an unknown UUID or a non-UUID are all 404 "API key not found",
    and the other user's key keeps working."""
    async with sandbox_factory(extra_keys={"ap_other": KeySpec()}) as sb:
        if key_id == "other":
            (row,) = await listed(http, sb, "ap_other")
            key_id = row["id"]
        status, body = await call(http, sb, "DELETE", f"{KEYS}/{key_id}", sb.api_key)
        assert (status, body) == (404, {"detail": "API key not found"})
        assert await balance_cents(http, sb, "ap_other") == 10_000
        assert sb.stats()["api_keys"]["revoked"] == 0


# -- expiry ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_expiring_key_works_until_its_expires_at(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """A key made with expires_in_days=1 works for 24 h less a second; from expires_at on it
    gets 403 "API key has expired" on balance and submit."""
    async with sandbox_factory(clock=fake_clock) as sb:
        new = await create(http, sb, name="temp", expires_in_days=1)
        key = new["api_key"]
        assert new["expires_at"] == "2026-01-02T00:00:00.000000"
        fake_clock.advance(DAY - 1)
        assert await balance_cents(http, sb, key) == 10_000
        status, _ = await submit(http, sb, key, url=SONG, mode="four")
        assert status == 200
        fake_clock.advance(1)
        assert await call(http, sb, "GET", BALANCE, key) == (403, EXPIRED)
        assert await submit(http, sb, key, url=SONG, mode="four") == (403, EXPIRED)
        fake_clock.advance(DAY)
        assert await call(http, sb, "GET", BALANCE, key) == (403, EXPIRED)
        (row,) = [r for r in await listed(http, sb) if r["id"] == new["id"]]
        assert await balance_cents(http, sb, sb.api_key) == 9_950
    assert (row["status"], row["last_used_at"]) == ("expired", "2026-01-01T23:59:59.000000")


# -- validation and auth ---------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, [(["body", "name"], "missing")]),
        ({"name": None}, [(["body", "name"], "missing")]),
        ({"name": ""}, [(["body", "name"], "string_too_short")]),
        ({"name": "   "}, [(["body", "name"], "string_too_short")]),
        ({"name": "n" * 101}, [(["body", "name"], "string_too_long")]),
        ({"name": 7}, [(["body", "name"], "string_type")]),
        ({"name": "k", "scopes": "*"}, [(["body", "scopes"], "list_type")]),
        ({"name": "k", "scopes": None}, [(["body", "scopes"], "list_type")]),
        ({"name": "k", "scopes": ["*", 3]}, [(["body", "scopes", 1], "string_type")]),
        ({"name": "k", "expires_in_days": 0}, [(["body", "expires_in_days"], "greater_than")]),
        ({"name": "k", "expires_in_days": -5}, [(["body", "expires_in_days"], "greater_than")]),
        ({"name": "k", "expires_in_days": 1.5}, [(["body", "expires_in_days"], "int_from_float")]),
        ({"name": "k", "expires_in_days": "90"}, [(["body", "expires_in_days"], "int_type")]),
        ({"name": "k", "expires_in_days": True}, [(["body", "expires_in_days"], "int_type")]),
        (
            {"name": "k", "expires_in_days": 3651},
            [(["body", "expires_in_days"], "less_than_equal")],
        ),
        (
            {"scopes": [1], "expires_in_days": 0},
            [
                (["body", "name"], "missing"),
                (["body", "scopes", 0], "string_type"),
                (["body", "expires_in_days"], "greater_than"),
            ],
        ),
    ],
)
async def test_bad_create_body_is_422(
    sandbox: SandboxHandle,
    http: aiohttp.ClientSession,
    body: dict[str, Any],
    errors: list[tuple[list[str | int], str]],
):
    """Each bad field is a FastAPI-style 422 record naming it; all are reported; no key made."""
    status, answer = await call(http, sandbox, "POST", KEYS, sandbox.api_key, json=body)
    assert status == 422
    assert [(e["loc"], e["type"]) for e in answer["detail"]] == errors
    assert all(e["msg"] for e in answer["detail"])
    assert sandbox.stats()["api_keys"]["created"] == 0
    assert len(await listed(http, sandbox)) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("data", "loc", "kind"),
    [
        (b"", ["body"], "missing"),
        (b"{not json", ["body"], "json_invalid"),
        (b'["production-key"]', ["body"], "value_error"),
    ],
)
async def test_unusable_create_body_is_422(
    sandbox: SandboxHandle, http: aiohttp.ClientSession, data: bytes, loc: list[str], kind: str
):
    """An empty, malformed or non-object JSON body is a 422 on the body itself."""
    headers = {**auth(sandbox.api_key), "Content-Type": "application/json"}
    async with http.post(sandbox.base_url + KEYS, data=data, headers=headers) as resp:
        assert resp.status == 422
        (err,) = (await resp.json())["detail"]
    assert (err["loc"], err["type"]) == (loc, kind)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", KEYS), ("GET", KEYS), ("DELETE", f"{KEYS}/{uuid.UUID(int=1)}")],
)
@pytest.mark.parametrize(
    ("key", "detail"), [(None, "Not authenticated"), ("ap_not_a_real_key", "Invalid API key")]
)
async def test_key_management_needs_a_valid_key(
    sandbox: SandboxHandle,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    key: str | None,
    detail: str,
):
    """Without a key, or with an unknown one, every key endpoint is 401 before any 422."""
    status, body = await call(http, sandbox, method, path, key, json={})
    assert (status, body) == (401, {"detail": detail})


@pytest.mark.anyio
async def test_key_routes_are_counted_per_template(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
):
    """The stats count the three routes by method and template, and their statuses."""
    new = await create(http, sandbox, name="counted")
    await listed(http, sandbox)
    await call(http, sandbox, "DELETE", f"{KEYS}/{new['id']}", sandbox.api_key)
    await call(http, sandbox, "DELETE", f"{KEYS}/{new['id']}-x", sandbox.api_key)
    stats = sandbox.stats()
    assert stats["requests"] == {
        f"POST {KEYS}": 1,
        f"GET {KEYS}": 1,
        f"DELETE {KEYS}/{{key_id}}": 2,
    }
    assert stats["responses"] == {"200": 3, "404": 1}
    assert stats["api_keys"] == {"created": 1, "revoked": 1}


# -- the official SDK ------------------------------------------------------------------------


def test_sdk_transport_manages_keys_and_uses_a_minted_key(sandbox_thread: SandboxThread):
    """audiopod 2.12 has no API-key methods, but its generic `request` (both auth headers,
    JSON Content-Type on DELETE) drives the three endpoints, and a minted key works in it."""
    base = sandbox_thread.base_url
    with Client(api_key=sandbox_thread.api_key, base_url=base) as admin:
        made = admin.request("POST", KEYS, json_data={"name": "sdk", "expires_in_days": 30})
        with Client(api_key=made["api_key"], base_url=base) as minted:
            assert minted.wallet.get_balance()["balance_cents"] == 10_000
            rows = admin.request("GET", KEYS, params={"status": "active"})["api_keys"]
            assert [r["name"] for r in rows] == ["sdk", "default"]
            revoked = admin.request("DELETE", f"{KEYS}/{made['id']}")
            assert revoked["id"] == made["id"]
            with pytest.raises(APIError) as exc:
                minted.wallet.get_balance()
    assert exc.value.status_code == 403
    assert "API key has been revoked" in str(exc.value)
