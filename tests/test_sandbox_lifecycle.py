"""Sandbox job lifecycle, billing at settle time, presigned downloads and observability."""

from __future__ import annotations

import io
import wave
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from conftest import FakeClock, SandboxFactory

from batchpod.sandbox import KeySpec, SandboxHandle, SandboxSettings, SandboxState

pytestmark = pytest.mark.anyio

STEMS = "/api/v1/stem-extraction"
WALLET = "/api/v1/api-wallet"
SONG = "https://example.com/music/song.mp3?duration=300"  # 50 cents


def auth(key: str) -> dict[str, str]:
    """Headers that authenticate with `key`."""
    return {"X-API-Key": key}


async def submit(
    http: aiohttp.ClientSession, sb: SandboxHandle, key: str | None = None, **fields: str
) -> dict[str, Any]:
    """Submit urlencoded fields and return the job object."""
    async with http.post(
        sb.base_url + f"{STEMS}/api/extract", data=fields, headers=auth(key or sb.api_key)
    ) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def status(http: aiohttp.ClientSession, sb: SandboxHandle, job_id: int) -> dict[str, Any]:
    """GET the job's status."""
    async with http.get(sb.base_url + f"{STEMS}/status/{job_id}", headers=auth(sb.api_key)) as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def balance(http: aiohttp.ClientSession, sb: SandboxHandle) -> dict[str, Any]:
    """GET the key's wallet balance."""
    async with http.get(sb.base_url + f"{WALLET}/balance", headers=auth(sb.api_key)) as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def test_job_walks_pending_processing_completed(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """A 10 s job is PENDING for 2.5 s, PROCESSING until 10 s, then COMPLETED with outputs."""
    async with sandbox_factory(clock=fake_clock, processing_s=10.0) as sb:
        job = await submit(http, sb, url=SONG, mode="four")
        assert (await status(http, sb, job["id"]))["status"] == "PENDING"
        fake_clock.advance(3)
        running = await status(http, sb, job["id"])
        assert running["status"] == "PROCESSING"
        assert running["updated_at"] and running["download_urls"] is None
        fake_clock.advance(7)
        done = await status(http, sb, job["id"])
    assert done["status"] == "COMPLETED"
    stems = ["vocals", "drums", "bass", "other"]
    assert list(done["download_urls"]) == stems
    assert done["stem_paths"] == {s: f"stems/{job['id']}/{s}.wav" for s in stems}
    assert all(0.0 <= q <= 1.0 for q in done["quality_scores"].values())
    assert done["completed_at"] == "2026-01-01T00:00:10.000000"
    assert done["created_at"] == "2026-01-01T00:00:00.000000"
    assert done["error_message"] is None


async def test_completed_job_is_charged_and_logged(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """The hold leaves the balance at submit, is kept on completion and logged once."""
    async with sandbox_factory(clock=fake_clock, processing_s=5.0, balance_cents=1000) as sb:
        job = await submit(http, sb, url="https://e.com/a.mp3?duration=328", mode="six")
        held = await balance(http, sb)
        assert (held["balance_cents"], held["total_spent_cents"]) == (945, 0)
        fake_clock.advance(5)
        after = await balance(http, sb)
        assert (after["balance_cents"], after["total_spent_cents"]) == (945, 55)
        async with http.get(sb.base_url + f"{WALLET}/usage", headers=auth(sb.api_key)) as r:
            usage = await r.json()
        events = [(e["kind"], e["cents"]) for e in sb.stats()["wallet_events"]]
    (row,) = usage["logs"]
    assert row["job_id"] == str(job["id"])
    assert (row["amount_cents"], row["amount_usd"], row["duration_seconds"]) == (55, "$0.55", 328)
    assert row["duration_minutes"] == 5.47
    assert row["service_type"] == "stem_extraction"
    assert events == [("reserve", 55), ("charge", 55)]


async def test_failed_job_is_refunded(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """failure_rate=1 ends jobs FAILED with an error_message; the hold comes back, no usage."""
    async with sandbox_factory(clock=fake_clock, processing_s=4.0, failure_rate=1.0) as sb:
        job = await submit(http, sb, url=SONG, mode="two")
        assert (await balance(http, sb))["balance_cents"] == 10_000 - 50
        fake_clock.advance(4)
        failed = await status(http, sb, job["id"])
        assert failed["status"] == "FAILED"
        assert failed["error_message"].startswith("Stem separation failed")
        assert failed["download_urls"] is None and failed["completed_at"] is None
        after = await balance(http, sb)
        assert (after["balance_cents"], after["total_spent_cents"]) == (10_000, 0)
        async with http.get(sb.base_url + f"{WALLET}/usage", headers=auth(sb.api_key)) as r:
            assert (await r.json())["logs"] == []
        kinds = [(e["kind"], e["cents"]) for e in sb.stats()["wallet_events"]]
    assert kinds == [("reserve", 50), ("refund", 50)]


async def test_deleting_an_unfinished_job_refunds_it(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """Deleting a running job returns its hold; it never completes or logs usage."""
    async with sandbox_factory(clock=fake_clock, processing_s=10.0) as sb:
        job = await submit(http, sb, url=SONG, mode="four")
        async with http.delete(
            sb.base_url + f"{STEMS}/jobs/{job['id']}", headers=auth(sb.api_key)
        ) as resp:
            assert resp.status == 204
        fake_clock.advance(20)
        wallet = (await balance(http, sb))["balance_cents"]
        stats = sb.stats()
    assert wallet == 10_000
    assert [e["kind"] for e in stats["wallet_events"]] == ["reserve", "refund"]
    assert stats["jobs"]["active"] == 0


@pytest.mark.parametrize(
    ("fields", "stems"),
    [
        ({"mode": "two"}, ["vocals", "no_vocals"]),
        ({"mode": "six"}, ["vocals", "drums", "bass", "guitar", "piano", "other"]),
        (
            {"mode": "producer"},
            ["vocals", "kick", "snare", "hihat", "bass", "guitar", "piano", "other"],
        ),
        ({"mode": "single", "stem": "drums"}, ["drums", "no_drums"]),
    ],
)
async def test_stem_names_follow_the_mode(
    sandbox_factory: SandboxFactory,
    http: aiohttp.ClientSession,
    fake_clock: FakeClock,
    fields: dict[str, str],
    stems: list[str],
):
    """download_urls, stem_paths and quality_scores are keyed by the mode's stem names."""
    async with sandbox_factory(clock=fake_clock, processing_s=1.0, sparse_stems=False) as sb:
        job = await submit(http, sb, url=SONG, **fields)
        fake_clock.advance(1)
        done = await status(http, sb, job["id"])
    assert list(done["download_urls"]) == stems
    assert list(done["stem_paths"]) == stems
    assert list(done["quality_scores"]) == stems


@pytest.mark.parametrize(("mode", "count"), [("studio", 12), ("mastering", 16)])
async def test_detailed_modes_have_their_full_counts(
    sandbox_factory: SandboxFactory,
    http: aiohttp.ClientSession,
    fake_clock: FakeClock,
    mode: str,
    count: int,
):
    """Without sparse stems, studio returns 12 distinct stems and mastering 16."""
    async with sandbox_factory(clock=fake_clock, processing_s=1.0, sparse_stems=False) as sb:
        job = await submit(http, sb, url=SONG, mode=mode)
        fake_clock.advance(1)
        urls = (await status(http, sb, job["id"]))["download_urls"]
    assert len(set(urls)) == count


async def test_sparse_modes_return_a_subset_with_the_core(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """With sparse stems, producer jobs omit some instruments but keep vocals, bass and other."""
    full = {"vocals", "kick", "snare", "hihat", "bass", "guitar", "piano", "other"}
    async with sandbox_factory(clock=fake_clock, processing_s=1.0) as sb:
        ids = [
            (await submit(http, sb, url=f"{SONG}&n={n}", mode="producer"))["id"] for n in range(12)
        ]
        fake_clock.advance(1)
        outputs = [set((await status(http, sb, i))["download_urls"]) for i in ids]
    assert all({"vocals", "bass", "other"} <= o <= full for o in outputs)
    assert any(o != full for o in outputs)


# -- downloads -----------------------------------------------------------------------------


async def completed_job(
    http: aiohttp.ClientSession, sb: SandboxHandle, clock: FakeClock, **fields: str
) -> dict[str, Any]:
    """Submit a job and move the clock until it has completed."""
    job = await submit(http, sb, url=SONG, **(fields or {"mode": "two"}))
    clock.advance(100)
    done = await status(http, sb, job["id"])
    assert done["status"] == "COMPLETED"
    return done


async def test_download_serves_a_valid_wav_without_a_key(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """A download URL needs no key and returns a WAV the stdlib parses, with Content-Length."""
    async with sandbox_factory(clock=fake_clock) as sb:
        done = await completed_job(http, sb, fake_clock)
        async with http.get(done["download_urls"]["vocals"]) as resp:
            assert resp.status == 200
            data = await resp.read()
            assert resp.headers["Content-Length"] == str(len(data)) == "32044"
        stats = sb.stats()["downloads"]
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.getnframes() == 16000
        assert any(w.readframes(100))
    assert stats == {
        "requests": 1,
        "served": 1,
        "bytes": 32044,
        "denied": 0,
        "with_credentials": 0,
        "peak_in_flight": 1,
    }


async def test_stems_of_one_job_differ(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """Each stem of a job has its own content, so mixed-up files can be caught."""
    async with sandbox_factory(clock=fake_clock) as sb:
        done = await completed_job(http, sb, fake_clock)
        bodies = []
        for url in done["download_urls"].values():
            async with http.get(url) as resp:
                bodies.append(await resp.read())
    assert bodies[0] != bodies[1]


async def test_stem_bytes_knob_sets_the_file_size(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """stem_bytes=100000 serves 100000 bytes of audio plus the 44-byte header."""
    async with sandbox_factory(clock=fake_clock, stem_bytes=100_000) as sb:
        done = await completed_job(http, sb, fake_clock)
        async with http.get(done["download_urls"]["no_vocals"]) as resp:
            data = await resp.read()
    assert len(data) == 100_044
    with wave.open(io.BytesIO(data)) as w:
        assert w.getnframes() == 50_000


async def test_download_records_credentials_sent_to_storage(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """A download that carries X-API-Key or Authorization is counted in the stats."""
    async with sandbox_factory(clock=fake_clock) as sb:
        done = await completed_job(http, sb, fake_clock)
        url = done["download_urls"]["vocals"]
        async with http.get(url, headers=auth(sb.api_key)) as resp:
            assert resp.status == 200
        async with http.get(url, headers={"Authorization": f"Bearer {sb.api_key}"}) as resp:
            assert resp.status == 200
        assert sb.stats()["downloads"]["with_credentials"] == 2


async def test_download_url_expires_and_repoll_gives_a_fresh_one(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """After download_ttl_s the URL is a 403 S3 AccessDenied; polling again signs a new one."""
    async with sandbox_factory(clock=fake_clock, download_ttl_s=60) as sb:
        done = await completed_job(http, sb, fake_clock)
        url = done["download_urls"]["vocals"]
        fake_clock.advance(59)
        async with http.get(url) as resp:
            assert resp.status == 200
        fake_clock.advance(2)
        async with http.get(url) as resp:
            assert resp.status == 403
            assert resp.content_type == "application/xml"
            assert "<Code>AccessDenied</Code>" in await resp.text()
        fresh = (await status(http, sb, done["id"]))["download_urls"]["vocals"]
        assert fresh != url
        async with http.get(fresh) as resp:
            assert resp.status == 200
        assert sb.stats()["downloads"]["denied"] == 1


@pytest.mark.parametrize(
    ("mangle", "code"),
    [
        (lambda u: u[:-1] + ("0" if u[-1] != "0" else "1"), "SignatureDoesNotMatch"),
        (lambda u: u.replace("/vocals.wav", "/no_vocals.wav"), "SignatureDoesNotMatch"),
        (lambda u: u.split("?")[0], "AccessDenied"),
    ],
)
async def test_tampered_download_url_is_403(
    sandbox_factory: SandboxFactory,
    http: aiohttp.ClientSession,
    fake_clock: FakeClock,
    mangle: Any,
    code: str,
):
    """A wrong signature, another path, or no signature at all is a 403 S3 error."""
    async with sandbox_factory(clock=fake_clock) as sb:
        done = await completed_job(http, sb, fake_clock)
        async with http.get(mangle(done["download_urls"]["vocals"])) as resp:
            assert resp.status == 403
            assert f"<Code>{code}</Code>" in await resp.text()


async def test_download_of_a_deleted_job_is_404(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """Once a job is deleted its still-signed URLs answer 404 NoSuchKey."""
    async with sandbox_factory(clock=fake_clock) as sb:
        done = await completed_job(http, sb, fake_clock)
        async with http.delete(
            sb.base_url + f"{STEMS}/jobs/{done['id']}", headers=auth(sb.api_key)
        ) as resp:
            assert resp.status == 204
        async with http.get(done["download_urls"]["vocals"]) as resp:
            assert resp.status == 404
            assert "<Code>NoSuchKey</Code>" in await resp.text()


async def test_download_host_knob_rewrites_the_host(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """download_host="localhost" serves URLs on localhost:<same port>, which still work."""
    async with sandbox_factory(clock=fake_clock, download_host="localhost") as sb:
        done = await completed_job(http, sb, fake_clock)
        url = done["download_urls"]["vocals"]
        parts = urlsplit(url)
        assert parts.hostname == "localhost"
        assert parts.port == urlsplit(sb.base_url).port
        assert set(parse_qs(parts.query)) == {"Expires", "Signature"}
        async with http.get(url) as resp:
            assert resp.status == 200


# -- observability -------------------------------------------------------------------------


async def test_stats_count_requests_submissions_and_peaks(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """Requests are counted per route template, submissions per source/mode, peaks per key."""
    keys = {"ap_second": KeySpec(plan="basic")}
    async with sandbox_factory(clock=fake_clock, processing_s=10.0, extra_keys=keys) as sb:
        jobs = [await submit(http, sb, url=f"{SONG}&n={n}", mode="four") for n in range(3)]
        await submit(http, sb, "ap_second", url=SONG, mode="single", stem="vocals")
        await status(http, sb, jobs[0]["id"])
        await status(http, sb, jobs[1]["id"])
        fake_clock.advance(10)
        await balance(http, sb)
        stats = sb.stats()
    assert stats["requests"] == {
        "POST /api/v1/stem-extraction/api/extract": 4,
        "GET /api/v1/stem-extraction/status/{job_id}": 2,
        "GET /api/v1/api-wallet/balance": 1,
    }
    assert stats["responses"] == {"200": 7}
    assert stats["submissions"] == {"URL/four": 3, "URL/single/vocals": 1}
    assert stats["peak_active_by_key"] == {sb.api_key: 3, "ap_second": 1}
    assert stats["active_by_key"] == {sb.api_key: 0, "ap_second": 0}
    assert stats["jobs"] == {
        "created": 4,
        "stored": 4,
        "deleted": 0,
        "active": 0,
        "peak_active": 4,
    }
    assert stats["wallets"]["ap_second"]["plan"] == "basic"


async def test_admin_endpoint_serves_stats_and_resets(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
):
    """GET /_sandbox/stats is JSON without a key and uncounted; POST /_sandbox/reset zeroes."""
    await submit(http, sandbox, url=SONG, mode="four")
    async with http.get(sandbox.base_url + "/_sandbox/stats") as resp:
        remote = await resp.json()
    assert remote["requests"] == {"POST /api/v1/stem-extraction/api/extract": 1}
    assert remote == sandbox.stats()
    async with http.post(sandbox.base_url + "/_sandbox/reset") as resp:
        assert resp.status == 204
    after = sandbox.stats()
    assert after["requests"] == {} and after["submissions"] == {}
    assert after["wallet_events"] == []
    assert (
        after["wallets"][sandbox.api_key]["reserved_cents"]
        + after["wallets"][sandbox.api_key]["spent_cents"]
        == 50
    )


async def test_processing_range_bounds_every_job(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """With processing_s=(10, 20) no job ends before 10 s and all have ended by 20 s."""
    async with sandbox_factory(clock=fake_clock, processing_s=(10.0, 20.0)) as sb:
        ids = [(await submit(http, sb, url=f"{SONG}&n={n}", mode="two"))["id"] for n in range(8)]
        fake_clock.advance(9.99)
        assert {(await status(http, sb, i))["status"] for i in ids} == {"PROCESSING"}
        fake_clock.advance(10.01)
        assert {(await status(http, sb, i))["status"] for i in ids} == {"COMPLETED"}


def test_lifecycle_stays_cheap_at_100k_jobs(fake_clock: FakeClock):
    """100,000 jobs are created and settled lazily, with exact wallet totals and no tasks."""
    settings = SandboxSettings(processing_s=(1.0, 50.0), balance_cents=10**9, failure_rate=0.1)
    state = SandboxState(settings, clock=fake_clock)
    account = state.accounts[settings.api_key]
    for n in range(100_000):
        state.submit(
            account,
            source_type="URL",
            source=f"https://e.com/{n}.mp3?duration=60",
            mode="four",
            stem=None,
            duration_s=60.0,
            now=fake_clock(),
        )
        if n % 1000 == 0:
            fake_clock.advance(1)
            state.settle(fake_clock())
    fake_clock.advance(60)
    state.settle(fake_clock())
    wallet = account.wallet
    assert wallet.reserved_cents == 0
    assert wallet.balance_cents + wallet.spent_cents == 10**9
    assert wallet.spent_cents == 10 * len(account.usage)
    assert 85_000 < len(account.usage) < 95_000
    assert state.stats()["jobs"]["active"] == 0
