"""Sandbox knobs (faults, limits, latency, seed), settings validation and the ways to run it."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
from conftest import FakeClock, SandboxFactory

from batchpod.sandbox import (
    KeySpec,
    SandboxSettings,
    SandboxThread,
    add_arguments,
    serve,
    settings_from_args,
)

STEMS = "/api/v1/stem-extraction"
WALLET = "/api/v1/api-wallet"
SONG = "https://example.com/music/song.mp3?duration=300"


def auth(key: str) -> dict[str, str]:
    """Headers that authenticate with `key`."""
    return {"X-API-Key": key}


# -- latency and injected faults ------------------------------------------------------------


@pytest.mark.anyio
async def test_latency_delays_api_responses_only(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
):
    """latency_s makes each /api/ answer wait that long first; the admin endpoint does not wait.

    The waits are recorded through the state's assignable `sleep`, so nothing is timed.
    """
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    async with sandbox_factory(latency_s=0.3) as sb:
        sb.state.sleep = sleep
        async with http.get(sb.base_url + f"{STEMS}/modes") as resp:
            assert resp.status == 200
        assert waits == [0.3]
        async with http.get(sb.base_url + "/_sandbox/stats") as resp:
            assert resp.status == 200
        assert waits == [0.3]


@pytest.mark.anyio
async def test_rate_429_answers_with_retry_after(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
):
    """rate_429=1 answers every /api/ call 429 with Retry-After and the documented detail."""
    async with sandbox_factory(rate_429=1.0, retry_after_s=2) as sb:
        async with http.post(
            sb.base_url + f"{STEMS}/api/extract",
            data={"url": SONG, "mode": "four"},
            headers=auth(sb.api_key),
        ) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "2"
            assert await resp.json() == {"detail": "Rate limit exceeded. Try again later."}
        async with http.get(sb.base_url + "/health") as resp:
            assert resp.status == 200
        stats = sb.stats()
    assert stats["injected"] == {"429": 1}
    assert stats["jobs"]["created"] == 0


@pytest.mark.anyio
async def test_retry_after_can_be_omitted(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
):
    """retry_after_s=None sends 429s without a Retry-After header."""
    async with (
        sandbox_factory(rate_429=1.0, retry_after_s=None) as sb,
        http.get(sb.base_url + f"{STEMS}/modes") as resp,
    ):
        assert resp.status == 429
        assert "Retry-After" not in resp.headers


@pytest.mark.anyio
async def test_rate_5xx_answers_proxy_style_errors(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
):
    """rate_5xx=1 answers 500/502/503 with non-JSON bodies, as a load balancer would."""
    seen = set()
    async with sandbox_factory(rate_5xx=1.0) as sb:
        for _ in range(30):
            async with http.get(sb.base_url + f"{WALLET}/pricing") as resp:
                seen.add(resp.status)
                assert resp.content_type in {"text/plain", "text/html"}
                if resp.status == 503:
                    assert resp.headers["Retry-After"] == "1"
        injected = sb.stats()["injected"]
    assert seen == {500, 502, 503}
    assert sum(injected.values()) == 30


@pytest.mark.anyio
async def test_fault_rates_mix_as_configured(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
):
    """With rate_429=0.3 and rate_5xx=0.2, about that share of 200 calls fail, the rest pass."""
    async with sandbox_factory(rate_429=0.3, rate_5xx=0.2, seed=7) as sb:
        statuses = []
        for _ in range(200):
            async with http.get(sb.base_url + f"{STEMS}/modes") as resp:
                statuses.append(resp.status)
    share_429 = statuses.count(429) / 200
    share_5xx = sum(s >= 500 for s in statuses) / 200
    assert 0.2 < share_429 < 0.4
    assert 0.1 < share_5xx < 0.3
    assert statuses.count(200) == 200 - statuses.count(429) - sum(s >= 500 for s in statuses)


@pytest.mark.anyio
async def test_rps_limit_is_per_key_with_retry_after(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession, fake_clock: FakeClock
):
    """rps_limit=2 lets a key make 2 calls a second; the third is a 429; other keys are apart."""
    keys = {"ap_other": KeySpec()}
    async with sandbox_factory(clock=fake_clock, rps_limit=2.0, extra_keys=keys) as sb:
        url = sb.base_url + f"{WALLET}/balance"

        async def call(key: str) -> aiohttp.ClientResponse:
            async with http.get(url, headers=auth(key)) as resp:
                await resp.read()
                return resp

        assert [(await call(sb.api_key)).status for _ in range(2)] == [200, 200]
        limited = await call(sb.api_key)
        assert limited.status == 429
        assert limited.headers["Retry-After"] == "1"
        assert (await call("ap_other")).status == 200
        fake_clock.advance(0.5)
        assert (await call(sb.api_key)).status == 200
        assert (await call(sb.api_key)).status == 429
        assert sb.stats()["injected"] == {"rate_limited": 2}


@pytest.mark.anyio
async def test_lost_submit_creates_and_charges_but_answers_502(
    sandbox_factory: SandboxFactory, http: aiohttp.ClientSession
):
    """lost_submit_rate=1 answers 502, yet the job exists, is held, and can be found by listing."""
    async with sandbox_factory(lost_submit_rate=1.0) as sb:
        async with http.post(
            sb.base_url + f"{STEMS}/api/extract",
            data={"url": SONG, "mode": "four"},
            headers=auth(sb.api_key),
        ) as resp:
            assert resp.status == 502
            assert resp.content_type == "text/html"
        async with http.get(sb.base_url + f"{STEMS}/jobs", headers=auth(sb.api_key)) as resp:
            (job,) = await resp.json()
        stats = sb.stats()
    assert job["input_path"] == SONG and job["source_type"] == "URL"
    assert stats["injected"] == {"lost_submit": 1}
    assert stats["wallet_events"][0]["kind"] == "reserve"


async def run_jobs(http: aiohttp.ClientSession, seed: int, clock: FakeClock) -> list[Any]:
    """Submit 20 jobs to a fresh sandbox with `seed`, finish them, return their outcomes."""
    settings = SandboxSettings(seed=seed, failure_rate=0.5, processing_s=(1.0, 9.0))
    async with serve(settings, clock=clock) as sb:
        ids = []
        for n in range(20):
            async with http.post(
                sb.base_url + f"{STEMS}/api/extract",
                data={"url": f"{SONG}&n={n}", "mode": "producer"},
                headers=auth(sb.api_key),
            ) as resp:
                ids.append((await resp.json())["id"])
        clock.advance(10)
        outcomes = []
        for job_id in ids:
            async with http.get(
                sb.base_url + f"{STEMS}/status/{job_id}", headers=auth(sb.api_key)
            ) as resp:
                job = await resp.json()
            outcomes.append(
                (job["status"], job["error_message"], job["task_id"], job["quality_scores"])
            )
        return outcomes


@pytest.mark.anyio
async def test_seed_makes_runs_reproducible(http: aiohttp.ClientSession):
    """The same seed and requests give the same failures, task ids and scores; another differs."""
    first = await run_jobs(http, 3, FakeClock())
    again = await run_jobs(http, 3, FakeClock())
    other = await run_jobs(http, 4, FakeClock())
    assert first == again
    assert first != other
    assert {o[0] for o in first} == {"COMPLETED", "FAILED"}


# -- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "knobs",
    [
        {"api_key": "sk_live_x"},
        {"plan": "enterprise"},
        {"balance_cents": -1},
        {"balance_cents": 1.5},
        {"processing_s": -1.0},
        {"processing_s": (5.0, 1.0)},
        {"failure_rate": 1.5},
        {"rate_429": 0.7, "rate_5xx": 0.7},
        {"retry_after_s": -1},
        {"rps_limit": 0.0},
        {"download_ttl_s": 0.0},
        {"download_host": "http://localhost"},
        {"stem_bytes": 1},
        {"upload_cap_bytes": 0},
        {"balance_error_shape": "flat"},
        {"extra_keys": {"nokey": KeySpec()}},
        {"extra_keys": {"ap_sandbox_0123456789abcdef": KeySpec()}},
        {"latency_s": float("inf")},
    ],
)
def test_settings_reject_bad_knobs(knobs: dict[str, Any]):
    """SandboxSettings validates every knob when built."""
    with pytest.raises(ValueError):
        SandboxSettings(**knobs)


def test_key_spec_rejects_bad_values():
    """KeySpec validates plan, balance and status."""
    bad: list[dict[str, Any]] = [{"plan": "free"}, {"balance_cents": -5}, {"status": "x"}]
    for kwargs in bad:
        with pytest.raises(ValueError):
            KeySpec(**kwargs)


def test_settings_are_frozen():
    """Settings are immutable, hashable values."""
    settings = SandboxSettings(extra_keys={"ap_x": KeySpec()})
    assert hash(settings) == hash(SandboxSettings(extra_keys={"ap_x": KeySpec()}))
    with pytest.raises(AttributeError):
        settings.plan = "basic"  # type: ignore[misc]  # writing a frozen field on purpose


# -- CLI glue -----------------------------------------------------------------------------


def parse(*argv: str, server: bool = True) -> argparse.Namespace:
    """Parse `argv` with the sandbox flags."""
    parser = argparse.ArgumentParser()
    add_arguments(parser, server=server)
    return parser.parse_args(argv)


def test_flag_defaults_match_the_settings_defaults():
    """With no flags, settings_from_args gives SandboxSettings() on 127.0.0.1:8765."""
    ns = parse()
    assert (ns.host, ns.port, ns.allow_remote) == ("127.0.0.1", 8765, False)
    assert settings_from_args(ns) == SandboxSettings()


def test_every_knob_has_a_flag():
    """Each flag sets its knob; dollars become cents and sizes take suffixes."""
    ns = parse(
        "--api-key", "ap_mine", "--plan", "basic", "--balance", "12.34",
        "--extra-key", "ap_b=creator:5:revoked", "--extra-key", "ap_c=studio",
        "--processing-time", "2-8", "--latency", "0.25", "--failure-rate", "0.1",
        "--rate-429", "0.2", "--rate-5xx", "0.05", "--lost-submit-rate", "0.01",
        "--retry-after", "none", "--rps-limit", "50", "--download-ttl", "600",
        "--download-host", "localhost", "--stem-bytes", "1M", "--no-sparse-stems",
        "--seed", "42", "--upload-cap", "10M", "--balance-error-shape", "detail",
    )  # fmt: skip
    assert settings_from_args(ns) == SandboxSettings(
        api_key="ap_mine",
        plan="basic",
        balance_cents=1234,
        extra_keys={
            "ap_b": KeySpec(plan="creator", balance_cents=500, status="revoked"),
            "ap_c": KeySpec(plan="studio"),
        },
        processing_s=(2.0, 8.0),
        latency_s=0.25,
        failure_rate=0.1,
        rate_429=0.2,
        rate_5xx=0.05,
        lost_submit_rate=0.01,
        retry_after_s=None,
        rps_limit=50.0,
        download_ttl_s=600.0,
        download_host="localhost",
        stem_bytes=1024 * 1024,
        sparse_stems=False,
        seed=42,
        upload_cap_bytes=10 * 1024 * 1024,
        balance_error_shape="detail",
    )


def test_processing_time_accepts_a_single_number():
    """--processing-time 0 makes jobs finish at once."""
    assert settings_from_args(parse("--processing-time", "0")).processing_range_s == (0.0, 0.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["--balance", "1.234"],
        ["--balance", "ten"],
        ["--failure-rate", "2"],
        ["--processing-time", "fast"],
        ["--stem-bytes", "lots"],
        ["--extra-key", "ap_x"],
        ["--extra-key", "ap_x=gold"],
        ["--plan", "free"],
        ["--retry-after", "soon"],
    ],
)
def test_bad_flag_values_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]):
    """argparse rejects malformed knob values with a usage error."""
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_server_flags_can_be_left_out():
    """add_arguments(server=False) adds the knobs without --host/--port."""
    ns = parse("--seed", "1", server=False)
    assert not hasattr(ns, "host")
    assert settings_from_args(ns).seed == 1


# -- running it ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_serve_refuses_a_non_loopback_host():
    """serve() will not listen on 0.0.0.0 unless allow_remote is set."""
    with pytest.raises(ValueError, match="loopback"):
        async with serve(host="0.0.0.0"):
            pass
    async with serve(host="0.0.0.0", allow_remote=True) as sb:
        assert sb.base_url.startswith("http://0.0.0.0:")


@pytest.mark.anyio
async def test_serve_on_a_busy_port_raises_oserror():
    """A port already in use is an OSError, raised before serving."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError):
            async with serve(port=port):
                pass


@pytest.mark.anyio
async def test_serve_on_ipv6_loopback(http: aiohttp.ClientSession):
    """serve() can listen on ::1 and brackets the address in base_url."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        ctx = serve(host="::1")
        sb = await ctx.__aenter__()
    except OSError:
        pytest.skip("IPv6 loopback unavailable")
    try:
        assert sb.base_url.startswith("http://[::1]:")
        async with http.get(sb.base_url + "/health") as resp:
            assert resp.status == 200
    finally:
        await ctx.__aexit__(None, None, None)


def test_sandbox_thread_serves_synchronous_callers(sandbox_thread: SandboxThread):
    """SandboxThread answers plain blocking HTTP and reads its stats across threads."""
    import urllib.request

    request = urllib.request.Request(
        sandbox_thread.base_url + f"{WALLET}/balance", headers=auth(sandbox_thread.api_key)
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
    assert sandbox_thread.stats()["requests"] == {"GET /api/v1/api-wallet/balance": 1}
    sandbox_thread.reset_counters()
    assert sandbox_thread.stats()["requests"] == {}


def test_sandbox_thread_raises_startup_errors():
    """A SandboxThread that cannot bind raises OSError from __enter__."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError), SandboxThread(port=busy.getsockname()[1]):
            pass


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_forever_prints_exports_and_stops_cleanly(sig: signal.Signals):
    """serve_forever prints the base URL and key, then exits 0 without a traceback on a signal."""
    code = (
        "import sys\n"
        "from batchpod.sandbox import SandboxSettings, serve_forever\n"
        "serve_forever(SandboxSettings(), '127.0.0.1', 0, out=sys.stdout)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        exports = [proc.stdout.readline(), proc.stdout.readline()]
        assert first.startswith("AudioPod sandbox listening on http://127.0.0.1:")
        assert exports[0].startswith("export AUDIOPOD_BASE_URL=http://127.0.0.1:")
        assert exports[1] == "export AUDIOPOD_API_KEY=ap_sandbox_0123456789abcdef\n"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "Sandbox stopped." in out


def test_arrivals_give_the_rate_and_the_peak_a_client_sent_at() -> None:
    """api_rate is (N - 1) / span and api_peak_per_s the most in any (t - 1, t]: sixteen
    requests paced at 8 per second show 8 and 8; twelve at one instant a peak of 12 and no
    rate (no span to measure it over)."""
    from batchpod.sandbox._counters import Counters

    paced = Counters()
    for n in range(16):
        paced.api_arrival(100 + n / 8)
    assert paced.api_rate() == pytest.approx(8.0) and paced.api_peak_per_s == 8
    burst = Counters()
    for _ in range(12):
        burst.api_arrival(5.0)
    assert burst.api_rate() is None and burst.api_peak_per_s == 12
