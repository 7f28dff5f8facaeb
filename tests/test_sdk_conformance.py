"""The official `audiopod` SDK (2.12.0, unchanged) works against the sandbox.

The SDK's `separate()` polls with a hard-coded 5 s sleep after the first status call, so these
sandboxes finish jobs instantly (`processing_s=0`) and the first poll already sees COMPLETED.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from audiopod import AsyncClient, Client
from audiopod.exceptions import APIError, AuthenticationError, InsufficientBalanceError

from batchpod.sandbox import KeySpec, SandboxSettings, SandboxThread

INSTANT = SandboxSettings(
    processing_s=0.0,
    extra_keys={
        "ap_basic": KeySpec(plan="basic"),
        "ap_broke": KeySpec(balance_cents=10),
        "ap_revoked": KeySpec(status="revoked"),
    },
)
SONG = "https://example.com/music/song.mp3?duration=328"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxThread]:
    """One instant-processing sandbox shared by the module's tests."""
    with SandboxThread(INSTANT) as sb:
        yield sb


@pytest.fixture
def client(sandbox: SandboxThread) -> Iterator[Client]:
    """The SDK's sync client pointed at the sandbox."""
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as c:
        yield c


def write_wav(path: Path, seconds: float) -> Path:
    """Write a silent 8 kHz mono WAV of `seconds` to `path`."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * round(seconds * 8000))
    return path


def test_sdk_url_job_completes_with_download_urls(client: Client):
    """stems.separate(url=...) submits urlencoded, polls, and returns COMPLETED stems."""
    job = client.stems.separate(url=SONG, mode="six")
    assert job["status"] == "COMPLETED"
    assert set(job["download_urls"]) == {"vocals", "drums", "bass", "guitar", "piano", "other"}
    data = requests.get(job["download_urls"]["piano"], timeout=10).content
    with wave.open(io.BytesIO(data)) as w:
        assert w.getnframes() > 0


# The SDK opens the upload and never closes it (contract §12.7); under warnings-as-errors
# that ResourceWarning would fail the test, so it alone is ignored here.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_sdk_file_job_uploads_multipart(client: Client, tmp_path: Path, sandbox: SandboxThread):
    """stems.extract(file=...) uploads multipart; wait_for_completion returns the stems."""
    path = write_wav(tmp_path / "take.wav", 90)
    submitted = client.stems.extract(file=str(path), mode="single", stem="vocals")
    assert submitted["status"] == "PENDING"
    assert isinstance(submitted["id"], int)
    done = client.stems.wait_for_completion(submitted["id"])
    assert set(done["download_urls"]) == {"vocals", "no_vocals"}
    assert done["source_type"] == "FILE"
    assert done["display_name"] == "take.wav"
    reserve = [e for e in sandbox.stats()["wallet_events"] if e["job_id"] == submitted["id"]]
    assert reserve[0]["cents"] == 15


def test_sdk_reads_balance_estimate_usage_and_pricing(client: Client):
    """The wallet methods the SDK really has all parse the sandbox's answers."""
    before = client.wallet.get_balance()["balance_cents"]
    client.stems.separate(url=SONG, mode="four")
    balance = client.wallet.get_balance()
    assert balance["balance_cents"] == before - 55
    assert balance["balance_usd"].startswith("$")
    estimate = client.wallet.estimate_cost("stem_extraction", 328)
    assert (estimate["cost_cents"], estimate["cost_usd"]) == (55, "$0.55")
    check = client.wallet.check_balance("stem_extraction", 60)
    assert check["can_proceed"] is True
    usage = client.wallet.get_usage_history(page=1, limit=10)
    assert isinstance(usage["logs"][0]["job_id"], str)
    assert client.wallet.get_pricing()["services"]["stem_extraction"]["cents_per_minute"] == 10


def test_sdk_lists_and_deletes_jobs(client: Client):
    """list_jobs returns a list, delete_job returns {} on 204, and the job is then gone."""
    job = client.stems.extract(url=SONG, mode="two")
    listed = client.stems.list_jobs(skip=0, limit=5)
    assert listed[0]["id"] == job["id"]
    assert client.stems.delete_job(job["id"]) == {}
    with pytest.raises(APIError) as exc:
        client.stems.status(job["id"])
    assert exc.value.status_code == 404
    assert "Job not found" in str(exc.value)


def test_sdk_modes(client: Client):
    """stems.modes() sees every documented mode."""
    modes = [m["mode"] for m in client.stems.modes()["modes"]]
    assert modes == ["single", "two", "four", "six", "producer", "studio", "mastering"]


def test_sdk_maps_sandbox_errors(sandbox: SandboxThread):
    """401, 402 (with both cents fields), plan 403 and revoked 403 reach the SDK's exceptions."""
    base = sandbox.base_url
    with Client(api_key="ap_unknown", base_url=base) as c, pytest.raises(AuthenticationError):
        c.wallet.get_balance()
    with Client(api_key="ap_broke", base_url=base) as c:
        with pytest.raises(InsufficientBalanceError) as low:
            c.stems.extract(url=SONG, mode="four")
        assert (low.value.required_cents, low.value.available_cents) == (55, 10)
    with Client(api_key="ap_basic", base_url=base) as c:
        with pytest.raises(APIError) as gated:
            c.stems.extract(url=SONG, mode="producer")
        assert gated.value.status_code == 403
        assert "Creator" in str(gated.value)
    with Client(api_key="ap_revoked", base_url=base) as c:
        with pytest.raises(APIError) as revoked:
            c.wallet.get_balance()
        assert revoked.value.status_code == 403
        assert "revoked" in str(revoked.value)


def test_sdk_parses_the_nested_402_shape():
    """With balance_error_shape="detail" the SDK still finds required/available cents."""
    nested = SandboxSettings(balance_cents=0, balance_error_shape="detail", processing_s=0.0)
    with (
        SandboxThread(nested) as sb,
        Client(api_key=sb.api_key, base_url=sb.base_url) as c,
        pytest.raises(InsufficientBalanceError) as low,
    ):
        c.stems.extract(url=SONG, mode="four")
    assert (low.value.required_cents, low.value.available_cents) == (55, 0)


def test_sdk_gives_up_on_429_with_retry_error():
    """A sandbox that always answers 429 makes the sync SDK raise requests' RetryError."""
    limited = SandboxSettings(rate_429=1.0, retry_after_s=0)
    with SandboxThread(limited) as sb:
        with (
            Client(api_key=sb.api_key, base_url=sb.base_url, max_retries=0) as c,
            pytest.raises(requests.exceptions.RetryError),
        ):
            c.wallet.get_balance()
        assert sb.stats()["injected"] == {"429": 1}


@pytest.mark.anyio
async def test_async_sdk_submits_and_reads_status(sandbox: SandboxThread):
    """AsyncClient's separate(wait_for_completion=False) and status() work too."""
    client = AsyncClient(api_key=sandbox.api_key, base_url=sandbox.base_url)
    try:
        job = await client.stems.separate(url=SONG, mode="four", wait_for_completion=False)
        done = await client.stems.status(job["id"])
        assert done["status"] == "COMPLETED"
        assert len(done["download_urls"]) == 4
    finally:
        await client.session.close()
