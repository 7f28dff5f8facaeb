"""The sandbox's endpoints and error bodies, over real loopback sockets."""

from __future__ import annotations

import ast
import io
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import SandboxFactory

from batchpod.sandbox import KeySpec, SandboxHandle

pytestmark = pytest.mark.anyio

STEMS = "/api/v1/stem-extraction"
WALLET = "/api/v1/api-wallet"
SONG = "https://example.com/music/song.mp3?duration=300"


def auth(key: str) -> dict[str, str]:
    """Headers that authenticate with `key` the documented way."""
    return {"X-API-Key": key}


def wav_bytes(seconds: float, *, rate: int = 8000) -> bytes:
    """A silent mono 16-bit WAV of `seconds`."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * round(seconds * rate))
    return buf.getvalue()


def upload_form(data: bytes, *, filename: str = "song.wav", **fields: str) -> aiohttp.FormData:
    """A multipart submit body with `fields` first and the file last, as the SDK sends it."""
    # quote_fields=False sends the file name verbatim, as requests (the SDK) does; aiohttp's
    # default would percent-encode it and the server would see "dir%2Ftake%201.wav".
    form = aiohttp.FormData(quote_fields=False)
    for name, value in fields.items():
        form.add_field(name, value)
    # A BytesIO, not bytes: aiohttp warns about large raw bytes bodies.
    form.add_field(
        "file", io.BytesIO(data), filename=filename, content_type="application/octet-stream"
    )
    return form


async def submit(
    http: aiohttp.ClientSession, sb: SandboxHandle, key: str | None = None, **fields: str
) -> aiohttp.ClientResponse:
    """POST an urlencoded submit."""
    return await http.post(
        sb.base_url + f"{STEMS}/api/extract", data=fields, headers=auth(key or sb.api_key)
    )


async def body_of(resp: aiohttp.ClientResponse) -> Any:
    """The JSON body of a response, released."""
    async with resp:
        return await resp.json()


# -- unauthenticated endpoints -------------------------------------------------------------


async def test_health_answers_without_key(sandbox: SandboxHandle, http: aiohttp.ClientSession):
    """GET /health is public and JSON."""
    async with http.get(sandbox.base_url + "/health") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "healthy"}


async def test_modes_lists_every_mode(sandbox: SandboxHandle, http: aiohttp.ClientSession):
    """GET /modes needs no key and lists the seven modes with their stem ceilings."""
    async with http.get(sandbox.base_url + f"{STEMS}/modes") as resp:
        modes = {m["mode"]: m for m in (await resp.json())["modes"]}
    assert list(modes) == ["single", "two", "four", "six", "producer", "studio", "mastering"]
    counts = {name: m["stem_count"] for name, m in modes.items()}
    assert counts == {
        "single": 2,
        "two": 2,
        "four": 4,
        "six": 6,
        "producer": 8,
        "studio": 12,
        "mastering": 16,
    }
    assert all(m["description"] for m in modes.values())


async def test_pricing_is_public(sandbox: SandboxHandle, http: aiohttp.ClientSession):
    """GET /pricing needs no key and states 10 cents a minute and the top-up limits."""
    async with http.get(sandbox.base_url + f"{WALLET}/pricing") as resp:
        body = await resp.json()
    stems = body["services"]["stem_extraction"]
    assert stems["cents_per_minute"] == 10
    assert stems["rate_per_minute"] == "$0.10/min"
    assert stems["rate_per_hour"] == "$6.00"
    assert body["wallet"]["minimum_topup_cents"] == 100
    assert body["wallet"]["maximum_topup_usd"] == "$10000.00"


@pytest.mark.parametrize(
    ("seconds", "cents", "usd"),
    [
        (328, 55, "$0.55"),
        (300, 50, "$0.50"),
        (180, 30, "$0.30"),
        (3600, 600, "$6.00"),
        (1, 1, "$0.01"),
    ],
)
async def test_estimate_rounds_up_to_whole_cents(
    sandbox: SandboxHandle, http: aiohttp.ClientSession, seconds: int, cents: int, usd: str
):
    """POST /estimate (no key) prices 10 c/min rounded up: 328 s is 55 cents."""
    payload = {"service_type": "stem_extraction", "duration_seconds": seconds}
    async with http.post(sandbox.base_url + f"{WALLET}/estimate", json=payload) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["cost_cents"] == cents
    assert body["cost_usd"] == usd
    assert body["duration_seconds"] == seconds
    assert body["rate_per_minute"] == "$0.10/min"
    assert body["duration_minutes"] == round(seconds / 60, 2)


async def test_estimate_validates_its_body(sandbox: SandboxHandle, http: aiohttp.ClientSession):
    """A missing field is a FastAPI 422; an unknown service type is a 400."""
    url = sandbox.base_url + f"{WALLET}/estimate"
    async with http.post(url, json={"service_type": "stem_extraction"}) as resp:
        assert resp.status == 422
        (err,) = (await resp.json())["detail"]
        assert err["loc"] == ["body", "duration_seconds"]
        assert err["type"] == "missing"
    async with http.post(url, json={"service_type": "tts", "duration_seconds": 5}) as resp:
        assert resp.status == 400
        assert "tts" in (await resp.json())["detail"]
    async with http.post(url, data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 422


# -- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "Not authenticated"),
        ({"X-API-Key": "ap_not_a_real_key"}, "Invalid API key"),
        ({"X-API-Key": "sk_wrong_prefix"}, "Invalid API key"),
        ({"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.jwt.sig"}, "Invalid API key"),
    ],
)
async def test_bad_or_missing_key_is_401(
    sandbox: SandboxHandle, http: aiohttp.ClientSession, headers: dict[str, str], detail: str
):
    """Authenticated endpoints answer 401 {"detail": ...} without a valid ap_ key."""
    async with http.get(sandbox.base_url + f"{WALLET}/balance", headers=headers) as resp:
        assert resp.status == 401
        assert await resp.json() == {"detail": detail}


async def test_bearer_key_is_accepted(sandbox: SandboxHandle, http: aiohttp.ClientSession):
    """`Authorization: Bearer ap_...` authenticates like X-API-Key."""
    headers = {"Authorization": f"Bearer {sandbox.api_key}"}
    async with http.get(sandbox.base_url + f"{WALLET}/balance", headers=headers) as resp:
        assert resp.status == 200


@pytest.mark.parametrize(("status", "detail"), [("revoked", "revoked"), ("expired", "expired")])
async def test_revoked_or_expired_key_is_403(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, status: str, detail: str
):
    """A revoked or expired key gets a 403 whose detail says which."""
    keys = {"ap_dead": KeySpec(status=status)}
    async with sandbox_factory(extra_keys=keys) as sb:
        async with http.get(sb.base_url + f"{WALLET}/balance", headers=auth("ap_dead")) as resp:
            assert resp.status == 403
            assert detail in (await resp.json())["detail"]
        resp = await submit(http, sb, "ap_dead", url=SONG, mode="four")
        assert resp.status == 403
        assert "plan" not in (await body_of(resp))["detail"]


# -- submit --------------------------------------------------------------------------------


async def test_submit_url_returns_the_full_pending_job(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
):
    """An urlencoded URL submit answers 200 with the §4 job object, PENDING, integer id."""
    job = await body_of(await submit(http, sandbox, url=SONG, mode="four"))
    assert isinstance(job["id"], int)
    assert job["status"] == "PENDING"
    assert job["source_type"] == "URL"
    assert job["input_path"] == SONG
    assert job["display_name"] == "song.mp3"
    assert len(job["task_id"]) == 36
    for field in ("stem_paths", "quality_scores", "download_urls", "error_message"):
        assert job[field] is None
    assert job["created_at"] and job["updated_at"] is None and job["completed_at"] is None


async def test_submit_url_as_multipart_is_accepted(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
):
    """The same fields sent as multipart (curl -F) are accepted."""
    form = aiohttp.FormData()
    form.add_field("mode", "two")
    form.add_field("url", SONG)
    async with http.post(
        sandbox.base_url + f"{STEMS}/api/extract", data=form, headers=auth(sandbox.api_key)
    ) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
    assert sandbox.stats()["submissions"] == {"URL/two": 1}


@pytest.mark.parametrize(
    ("fields", "loc", "kind"),
    [
        ({"url": SONG}, ["body", "mode"], "missing"),
        ({"url": SONG, "mode": "4stem"}, ["body", "mode"], "enum"),
        ({"url": SONG, "mode": "16stem"}, ["body", "mode"], "enum"),
        ({"url": SONG, "mode": "2stem_vocals"}, ["body", "mode"], "enum"),
        ({"url": SONG, "mode": "single"}, ["body", "stem"], "value_error"),
        ({"url": SONG, "mode": "single", "stem": "instrumental"}, ["body", "stem"], "enum"),
        ({"mode": "four"}, ["body"], "value_error"),
        ({"url": "ftp://example.com/a.mp3", "mode": "four"}, ["body", "url"], "value_error"),
    ],
)
async def test_submit_validation_is_422(
    sandbox: SandboxHandle,
    http: aiohttp.ClientSession,
    fields: dict[str, str],
    loc: list[str],
    kind: str,
):
    """Bad or missing mode/stem/url give a FastAPI-style 422 naming the field."""
    resp = await submit(http, sandbox, **fields)
    assert resp.status == 422
    errors = (await body_of(resp))["detail"]
    assert [(e["loc"], e["type"]) for e in errors] == [(loc, kind)]
    assert all(e["msg"] for e in errors)
    assert sandbox.stats()["jobs"]["created"] == 0


async def test_submit_with_both_url_and_file_is_422(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
):
    """Sending url and file together is a 422; nothing is charged."""
    form = upload_form(wav_bytes(1), mode="four", url=SONG)
    async with http.post(
        sandbox.base_url + f"{STEMS}/api/extract", data=form, headers=auth(sandbox.api_key)
    ) as resp:
        assert resp.status == 422
        assert "not both" in (await resp.json())["detail"][0]["msg"]
    assert sandbox.stats()["wallet_events"] == []


async def test_json_submit_reports_form_fields_missing(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
):
    """A JSON body is not a form: mode is reported missing, as FastAPI would."""
    async with http.post(
        sandbox.base_url + f"{STEMS}/api/extract",
        json={"url": SONG, "mode": "four"},
        headers=auth(sandbox.api_key),
    ) as resp:
        assert resp.status == 422


@pytest.mark.parametrize(
    ("plan", "mode", "needed"),
    [
        ("basic", "producer", "Creator"),
        ("creator", "studio", "Pro"),
        ("creator", "mastering", "Pro"),
    ],
)
async def test_plan_gating_is_403_naming_the_plan(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, plan: str, mode: str, needed: str
):
    """A mode above the key's plan is refused with a 403 that names the plan it needs."""
    async with sandbox_factory(plan=plan) as sb:
        resp = await submit(http, sb, url=SONG, mode=mode)
        assert resp.status == 403
        message = (await body_of(resp))["detail"]
        assert f"requires the {needed} plan" in message
        assert sb.stats()["wallet_events"] == []


async def test_plan_allows_its_own_modes(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
):
    """Creator may use producer; basic may use every core mode."""
    async with sandbox_factory(plan="creator") as sb:
        assert (await submit(http, sb, url=SONG, mode="producer")).status == 200
    async with sandbox_factory(plan="basic") as sb:
        for mode in ("two", "four", "six"):
            assert (await submit(http, sb, url=SONG, mode=mode)).status == 200
        assert (await submit(http, sb, url=SONG, mode="single", stem="piano")).status == 200


async def test_insufficient_balance_is_402_top_level(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
):
    """Without funds the submit is a 402 with the documented top-level fields; nothing held."""
    async with sandbox_factory(balance_cents=10) as sb:
        resp = await submit(http, sb, url="https://e.com/a.mp3?duration=600", mode="four")
        assert resp.status == 402
        assert await body_of(resp) == {
            "error": "insufficient_api_balance",
            "message": "Insufficient balance. Required: $1.00, Available: $0.10",
            "required_cents": 100,
            "available_cents": 10,
        }
        wallet = sb.stats()["wallets"][sb.api_key]
        assert (wallet["balance_cents"], wallet["reserved_cents"]) == (10, 0)


async def test_insufficient_balance_nested_under_detail(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
):
    """balance_error_shape="detail" nests the same 402 fields under `detail`."""
    async with sandbox_factory(balance_cents=0, balance_error_shape="detail") as sb:
        resp = await submit(http, sb, url="https://e.com/a.mp3?duration=60", mode="four")
        assert resp.status == 402
        body = await body_of(resp)
    assert body["detail"]["error"] == "insufficient_api_balance"
    assert (body["detail"]["required_cents"], body["detail"]["available_cents"]) == (10, 0)


async def test_input_longer_than_the_plan_allows_is_400(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
):
    """A basic key may not submit more than 30 minutes of audio."""
    async with sandbox_factory(plan="basic") as sb:
        resp = await submit(http, sb, url="https://e.com/a.mp3?duration=1801", mode="four")
        assert resp.status == 400
        assert "30 minutes" in (await body_of(resp))["detail"]
        assert (await submit(http, sb, url="https://e.com/a.mp3?duration=1800", mode="four")).ok


async def test_url_duration_is_deterministic(sandbox: SandboxHandle, http: aiohttp.ClientSession):
    """A URL without `duration` is priced from its hash, 2-8 minutes, the same each time."""
    url = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
    first = await body_of(await submit(http, sandbox, url=url, mode="four"))
    await body_of(await submit(http, sandbox, url=url, mode="four"))
    reserves = [e["cents"] for e in sandbox.stats()["wallet_events"]]
    assert reserves[0] == reserves[1]
    assert 20 <= reserves[0] <= 80
    assert first["display_name"] == "www.youtube.com?v=dQw4w9WgXcQ"


# -- uploads -------------------------------------------------------------------------------


async def post_upload(
    http: aiohttp.ClientSession, sb: SandboxHandle, form: aiohttp.FormData
) -> aiohttp.ClientResponse:
    """POST a multipart submit."""
    return await http.post(
        sb.base_url + f"{STEMS}/api/extract", data=form, headers=auth(sb.api_key)
    )


async def test_wav_upload_is_priced_from_its_header(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
):
    """A 90 s WAV costs 15 cents; the job records FILE, the file name and its storage key."""
    resp = await post_upload(
        http, sandbox, upload_form(wav_bytes(90), filename="dir/take 1.wav", mode="four")
    )
    job = await body_of(resp)
    assert resp.status == 200
    assert job["source_type"] == "FILE"
    assert job["display_name"] == "take 1.wav"
    assert job["input_path"] == f"inputs/stem_extraction/job{job['id']}/take 1.wav"
    (reserve,) = sandbox.stats()["wallet_events"]
    assert reserve["cents"] == 15
    assert sandbox.stats()["submissions"] == {"FILE/four": 1}


async def test_compressed_upload_is_priced_from_its_size(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
):
    """An MP3 is timed at 128 kbps: 1.6 MB is 100 s, 17 cents."""
    resp = await post_upload(
        http, sandbox, upload_form(b"\xff" * 1_600_000, filename="a.mp3", mode="two")
    )
    assert resp.status == 200
    resp.release()
    assert sandbox.stats()["wallet_events"][0]["cents"] == 17


@pytest.mark.parametrize(
    ("data", "filename", "needle"),
    [
        (b"not a riff header", "a.wav", "RIFF"),
        (b"%PDF-1.4", "a.pdf", "unsupported"),
        (b"", "a.mp3", "empty"),
    ],
)
async def test_unreadable_upload_is_400(
    sandbox: SandboxHandle, http: aiohttp.ClientSession, data: bytes, filename: str, needle: str
):
    """A broken WAV, an unknown format or an empty file is refused with a 400."""
    resp = await post_upload(http, sandbox, upload_form(data, filename=filename, mode="four"))
    assert resp.status == 400
    assert needle in (await body_of(resp))["detail"]


async def test_upload_over_the_cap_is_413_while_streaming(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
):
    """An upload past the cap gets 413 naming the limit; one at the cap is accepted."""
    async with sandbox_factory(upload_cap_bytes=1024 * 1024, plan="basic") as sb:
        big = b"\xff" * (3 * 1024 * 1024)
        resp = await post_upload(http, sb, upload_form(big, filename="a.mp3", mode="four"))
        assert resp.status == 413
        assert (await body_of(resp)) == {
            "detail": "File too large: the Basic plan accepts uploads up to 1 MB."
        }
        exact = b"\xff" * (1024 * 1024)
        resp = await post_upload(http, sb, upload_form(exact, filename="a.mp3", mode="four"))
        assert resp.status == 200
        resp.release()
        assert sb.stats()["jobs"]["created"] == 1


async def test_chunked_upload_is_counted_too(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
):
    """A multipart body with no Content-Length is still cut off at the cap."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"\xff" * 65536

    form = aiohttp.FormData()
    form.add_field("mode", "four")
    form.add_field("file", chunks(), filename="a.mp3")
    async with sandbox_factory(upload_cap_bytes=1_000_000) as sb:
        resp = await post_upload(http, sb, form)
        assert resp.status == 413
        resp.release()


# -- jobs, status, list, delete ------------------------------------------------------------


async def test_unknown_or_foreign_job_is_404(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
):
    """Status and delete of an unknown job, or another key's, are the same 404."""
    async with sandbox_factory(extra_keys={"ap_other": KeySpec()}) as sb:
        job = await body_of(await submit(http, sb, url=SONG, mode="four"))
        not_found = {"detail": "Job not found or access denied"}
        for key, job_id in (("ap_other", job["id"]), (sb.api_key, 999_999)):
            async with http.get(
                sb.base_url + f"{STEMS}/status/{job_id}", headers=auth(key)
            ) as resp:
                assert (resp.status, await resp.json()) == (404, not_found)
            async with http.delete(
                sb.base_url + f"{STEMS}/jobs/{job_id}", headers=auth(key)
            ) as resp:
                assert (resp.status, await resp.json()) == (404, not_found)


async def test_non_integer_job_id_is_422(sandbox: SandboxHandle, http: aiohttp.ClientSession):
    """A job id that is not an integer fails path validation."""
    async with http.get(
        sandbox.base_url + f"{STEMS}/status/abc", headers=auth(sandbox.api_key)
    ) as resp:
        assert resp.status == 422
        assert (await resp.json())["detail"][0]["loc"] == ["path", "job_id"]


async def test_list_jobs_newest_first_own_only_and_paged(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
):
    """GET /jobs is a JSON array of the key's jobs, newest first, honouring skip and limit."""
    async with sandbox_factory(extra_keys={"ap_other": KeySpec()}) as sb:
        ids = [
            (await body_of(await submit(http, sb, url=f"{SONG}&n={n}", mode="four")))["id"]
            for n in range(3)
        ]
        await body_of(await submit(http, sb, "ap_other", url=SONG, mode="two"))
        url = sb.base_url + f"{STEMS}/jobs"
        async with http.get(url, headers=auth(sb.api_key)) as resp:
            listed = await resp.json()
        assert [j["id"] for j in listed] == ids[::-1]
        assert listed[0]["input_path"] == f"{SONG}&n=2"
        async with http.get(url, params={"skip": 1, "limit": 1}, headers=auth(sb.api_key)) as r:
            assert [j["id"] for j in await r.json()] == [ids[1]]
        async with http.get(url, headers=auth("ap_other")) as resp:
            assert len(await resp.json()) == 1


@pytest.mark.parametrize(
    "params", [{"limit": "101"}, {"limit": "0"}, {"skip": "-1"}, {"limit": "x"}]
)
async def test_list_jobs_rejects_bad_paging(
    sandbox: SandboxHandle, http: aiohttp.ClientSession, params: dict[str, str]
):
    """skip < 0, limit outside 1..100 or a non-integer is a 422."""
    async with http.get(
        sandbox.base_url + f"{STEMS}/jobs", params=params, headers=auth(sandbox.api_key)
    ) as resp:
        assert resp.status == 422


async def test_delete_job_is_204_then_gone(sandbox: SandboxHandle, http: aiohttp.ClientSession):
    """DELETE answers 204 with no body, after which the job is 404 and unlisted."""
    job = await body_of(await submit(http, sandbox, url=SONG, mode="four"))
    headers = auth(sandbox.api_key)
    async with http.delete(sandbox.base_url + f"{STEMS}/jobs/{job['id']}", headers=headers) as r:
        assert r.status == 204
        assert await r.read() == b""
    async with http.get(sandbox.base_url + f"{STEMS}/status/{job['id']}", headers=headers) as r:
        assert r.status == 404
    async with http.get(sandbox.base_url + f"{STEMS}/jobs", headers=headers) as r:
        assert await r.json() == []


# -- wallet --------------------------------------------------------------------------------


async def test_balance_reports_cents_and_display_strings(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
):
    """GET /balance has integer cents, "$" strings and the low-balance flag."""
    async with (
        sandbox_factory(balance_cents=2500) as sb,
        http.get(sb.base_url + f"{WALLET}/balance", headers=auth(sb.api_key)) as r,
    ):
        body = await r.json()
    assert body == {
        "balance_cents": 2500,
        "balance_usd": "$25.00",
        "total_topup_cents": 2500,
        "total_topup_usd": "$25.00",
        "total_spent_cents": 0,
        "total_spent_usd": "$0.00",
        "warning_threshold_cents": 500,
        "low_balance_warning": False,
    }


async def test_check_balance_answers_or_402(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
):
    """POST /check-balance says can_proceed, or 402s like a submit would."""
    async with sandbox_factory(balance_cents=50) as sb:
        url = sb.base_url + f"{WALLET}/check-balance"
        payload = {"service_type": "stem_extraction", "duration_seconds": 300}
        async with http.post(url, json=payload, headers=auth(sb.api_key)) as resp:
            assert await resp.json() == {
                "can_proceed": True,
                "cost_cents": 50,
                "current_balance_cents": 50,
            }
        payload["duration_seconds"] = 301
        async with http.post(url, json=payload, headers=auth(sb.api_key)) as resp:
            assert resp.status == 402
            assert (await resp.json())["required_cents"] == 51


async def test_unknown_route_and_method_are_json(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
):
    """Unrouted paths are FastAPI-style JSON 404s; a wrong method is a 405."""
    async with http.get(sandbox.base_url + "/api/v1/jobs/1") as resp:
        assert (resp.status, await resp.json()) == (404, {"detail": "Not Found"})
    async with http.put(sandbox.base_url + f"{STEMS}/jobs") as resp:
        assert (resp.status, await resp.json()) == (405, {"detail": "Method Not Allowed"})


# -- independence ---------------------------------------------------------------------------


def test_sandbox_imports_nothing_from_batchpod():
    """Every module of batchpod.sandbox imports only the stdlib, aiohttp and itself."""
    package = Path(__file__).parents[1] / "batchpod" / "sandbox"
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level in (0, 1), f"{path.name} reaches outside the sandbox"
                if node.level == 0:
                    assert not (node.module or "").startswith("batchpod"), path.name
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("batchpod") for a in node.names), path.name
