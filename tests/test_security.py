"""What batchpod promises about secrets, files and hostile input, checked end to end.

- The key never lands in anything batchpod writes, and never reaches the storage host.
- Stems land inside ``output_dir`` only, under safe names, never through a planted link.
- A hostile API (garbage, huge bodies, unknown statuses, runaway or endless downloads) fails
  the job it concerns; the run goes on.
- A full disk fails the jobs it hits with a clear error; a re-run finishes without paying
  twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import resource
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Quiet, results_of, run_cli, write_manifest

from batchpod.budget import BudgetGuard
from batchpod.cli import main
from batchpod.client import ApiClient
from batchpod.config import RunConfig
from batchpod.models import Job, JobStatus, Mode, Source
from batchpod.retry import PollPolicy, RetryPolicy
from batchpod.runner import Pool
from batchpod.sandbox import SandboxSettings, SandboxThread

CANARY = "ap_live_CANARYcanary0123456789abcdef"


pytestmark = pytest.mark.usefixtures("clean_env")


# -- the key -------------------------------------------------------------------------------


def test_the_key_is_in_nothing_batchpod_writes(tmp_path: Path) -> None:
    """A run with failures, retries and refusals, then `status -v`: the key appears in no
    byte of stdout, stderr, the results, the state file (and its journal files) or the output
    folder; the storage host (another host name) never received it."""
    settings = SandboxSettings(
        api_key=CANARY,
        processing_s=(0.05, 0.3),
        failure_rate=0.3,
        rate_5xx=0.1,
        rate_429=0.05,
        retry_after_s=0,
        upload_cap_bytes=1000,
        download_host="localhost",
        seed=11,
    )
    body = "".join(
        f"  - {{url: 'https://cdn.example.com/k{i}.mp3', mode: two}}\n" for i in range(12)
    )
    path = write_manifest(tmp_path, body + "  - {file: song.wav, mode: two, name: too-big}\n")
    outputs: list[str] = []
    with SandboxThread(settings) as sb:
        assert sb.api_key == CANARY
        code, out, err = run_cli(sb, path, "--format", "yaml")
        outputs += [out, err]
        code_json, out, err = run_cli(sb, path, "--format", "json", "--retry-failed")
        outputs += [out, err]
        stats = sb.stats()
    assert code == 1 and code_json in (0, 1)  # some jobs failed, as the knobs made them
    for argv in (["status", str(path), "-v"], ["estimate", str(path)]):
        out_io, err_io = io.StringIO(), io.StringIO()
        main(argv, stdout=out_io, stderr=err_io)
        outputs += [out_io.getvalue(), err_io.getvalue()]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in written) and any(p.suffix == ".wav" for p in written)
    assert any(p.name == "jobs.results.json" for p in written)
    secret = CANARY.encode()
    for file in written:
        assert secret not in file.read_bytes(), file
    for text in outputs:
        assert CANARY not in text
    assert "error" in results_of(path)["jobs"][-1]  # the 413 message is there, key-free
    downloads = stats["downloads"]
    assert downloads["served"] > 0 and downloads["with_credentials"] == 0


def test_state_and_results_are_owner_only(tmp_path: Path) -> None:
    """The state file, its journal files and the results are created 0600."""
    path = write_manifest(tmp_path, "  - {url: 'https://cdn.example.com/p.mp3', mode: two}\n")
    with SandboxThread(SandboxSettings(processing_s=0.05)) as sb:
        code, _, err = run_cli(sb, path)
    assert code == 0, err
    for name in ("jobs.batchpod.db", "jobs.results.yaml"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    for extra in tmp_path.glob("jobs.batchpod.db-*"):  # -wal, -shm while they exist
        assert stat.S_IMODE(extra.stat().st_mode) & 0o077 == 0, extra


# -- files ---------------------------------------------------------------------------------


def test_a_link_planted_in_the_output_folder_is_not_written_through(tmp_path: Path) -> None:
    """output_dir/<job> as a symlink to a folder elsewhere fails that job with a clear error;
    a stem file planted as a symlink is replaced, not written through."""
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.wav"
    victim.write_bytes(b"precious")
    path = write_manifest(
        tmp_path,
        "  - {url: 'https://cdn.example.com/a.mp3', mode: two, name: linked}\n"
        "  - {url: 'https://cdn.example.com/b.mp3', mode: two, name: planted}\n",
    )
    stems = tmp_path / "stems"
    stems.mkdir()
    (stems / "linked").symlink_to(outside, target_is_directory=True)
    (stems / "planted").mkdir()
    (stems / "planted" / "vocals.wav").symlink_to(victim)
    with SandboxThread(SandboxSettings(processing_s=0.05)) as sb:
        code, _, err = run_cli(sb, path)
    assert code == 1
    linked, planted = results_of(path)["jobs"]
    assert linked["status"] == "failed" and linked["error"]["type"] == "OutputError"
    assert "symbolic link" in linked["error"]["message"]
    assert "linked: failed: OutputError" in err and "Traceback" not in err
    assert planted["status"] == "succeeded"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.wav"]
    assert victim.read_bytes() == b"precious"
    assert not (stems / "planted" / "vocals.wav").is_symlink()


# -- a hostile API -------------------------------------------------------------------------

STEMS = "/api/v1/stem-extraction"
OK_STEMS = {"vocals", "no_vocals"}
EVIL_STEMS = [
    "../../escape",
    "/etc/passwd",
    "nul\x00byte",
    "Vocals",
    "vocals",
    "a/b",
    "a_b",
    "x" * 300,
    ".hidden",
]


def hostile_app(base: list[str]) -> web.Application:
    """A minimal AudioPod whose jobs misbehave as their song's name says (see the test)."""
    jobs: dict[str, str] = {}  # id -> scenario

    async def submit(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        scenario = str(form["url"]).rsplit("/", 1)[-1].removesuffix(".mp3")
        job_id = str(len(jobs) + 1)
        jobs[job_id] = scenario
        return web.json_response({"id": int(job_id), "status": "PENDING"})

    def urls(job_id: str, stems: list[str] | set[str]) -> dict[str, str]:
        return {stem: f"{base[0]}/media/{job_id}/{i}.wav" for i, stem in enumerate(sorted(stems))}

    def row(job_id: str) -> dict[str, Any]:
        scenario = jobs[job_id]
        if scenario == "mars":
            return {"id": int(job_id), "status": "QUEUED_ON_MARS"}
        done = {"id": int(job_id), "status": "COMPLETED"}
        if scenario == "evil":
            return {**done, "download_urls": urls(job_id, EVIL_STEMS)}
        if scenario in ("garbage", "huge", "wrongtypes"):
            return done  # no links in the row: its status endpoint (which misbehaves) has them
        return {**done, "download_urls": urls(job_id, OK_STEMS)}

    async def listing(request: web.Request) -> web.StreamResponse:
        return web.json_response([row(i) for i in sorted(jobs, key=int, reverse=True)])

    async def status(request: web.Request) -> web.StreamResponse:
        job_id = request.match_info["job_id"]
        scenario = jobs[job_id]
        if scenario == "garbage":
            return web.Response(text="<html>{ not json", content_type="application/json")
        if scenario == "huge":
            return web.Response(body=b'{"id": 1, "pad": "' + b"x" * (12 * 1024 * 1024) + b'"}')
        if scenario == "wrongtypes":
            return web.json_response({"id": [1], "status": {"a": 1}, "download_urls": "nope"})
        return web.json_response(row(job_id))

    async def media(request: web.Request) -> web.StreamResponse:
        scenario = jobs[request.match_info["job_id"]]
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        if scenario == "runaway":  # no length given, and far more than any stem
            await response.prepare(request)
            for _ in range(64):
                await response.write(b"\0" * 65536)
            return response
        if scenario == "endless":  # a byte now and then, forever
            await response.prepare(request)
            while True:
                await response.write(b"\0")
                await asyncio.sleep(0.05)
        body = b"RIFF" + b"\0" * 996
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body)
        return response

    async def balance(request: web.Request) -> web.StreamResponse:
        return web.json_response({"balance_cents": 100_000})

    async def usage(request: web.Request) -> web.StreamResponse:
        return web.json_response({"page": 1, "limit": 100, "logs": []})

    app = web.Application()
    app.router.add_post(f"{STEMS}/api/extract", submit)
    app.router.add_get(f"{STEMS}/jobs", listing)
    app.router.add_get(f"{STEMS}/status/{{job_id}}", status)
    app.router.add_get("/media/{job_id}/{name}", media)
    app.router.add_get("/api/v1/api-wallet/balance", balance)
    app.router.add_get("/api/v1/api-wallet/usage", usage)
    return app


@contextlib.asynccontextmanager
async def hostile_server() -> AsyncIterator[str]:
    base: list[str] = []
    server = TestServer(hostile_app(base), host="127.0.0.1")
    await server.start_server()
    base.append(str(server.make_url("")).rstrip("/"))
    try:
        yield base[0]
    finally:
        await server.close()


SCENARIOS = ["fine", "garbage", "huge", "wrongtypes", "mars", "evil", "runaway", "endless", "fine2"]


@pytest.mark.anyio
async def test_a_hostile_api_fails_only_the_jobs_it_concerns(
    anyio_backend: str, tmp_path: Path
) -> None:
    """Garbage JSON, a 12 MB body, wrong types, an unknown status forever, hostile stem
    names, a runaway download and an endless one: each ends its own job with a clear error
    (or as expired), leaves no partial file, and the well-behaved jobs succeed."""
    jobs = [
        Job(name=s, source=Source(url=f"https://songs.example/{s}.mp3"), mode=Mode.TWO)
        for s in SCENARIOS
    ]
    options = RunConfig(
        concurrency=len(jobs),
        output_dir=tmp_path,
        poll=PollPolicy(first_s=0.05, growth=0.25, max_s=0.2),
        retry=RetryPolicy(max_attempts=2, base_s=0.01, max_backoff_s=0.02),
        job_timeout_s=2.0,
        max_stem_bytes=1024 * 1024,
    )
    guard = BudgetGuard(max_spend_cents=None, keep_balance_cents=None, balance_cents=None)
    async with hostile_server() as base, ApiClient(base_url=base, api_key=CANARY) as client:
        pool = Pool(client, jobs, options, budget=guard, reporter=Quiet(), rng=random.Random(5))
        with anyio.fail_after(30):
            results = {r.job.name: r for r in await pool.run()}
    for name in ("fine", "fine2"):
        assert results[name].status is JobStatus.SUCCEEDED
    expect = {
        "garbage": (JobStatus.FAILED, "InvalidResponse", "not JSON"),
        "huge": (JobStatus.FAILED, "InvalidResponse", "larger than"),
        "wrongtypes": (JobStatus.FAILED, "InvalidResponse", "'id'"),
        "mars": (JobStatus.EXPIRED, "JobTimeout", "not finished after 2 s"),
        "runaway": (JobStatus.FAILED, "DownloadError", "more than the 1048576 bytes allowed"),
        "endless": (JobStatus.EXPIRED, "JobTimeout", "not all downloaded within 2 s"),
    }
    for name, (status, kind, words) in expect.items():
        result = results[name]
        assert result.status is status, (name, result.error)
        assert result.error is not None and result.error.type == kind, (name, result.error)
        assert words in result.error.message, (name, result.error.message)
    # Hostile stem names: every file inside the job's folder, safe and distinct.
    evil = results["evil"]
    assert evil.status is JobStatus.SUCCEEDED, evil.error
    folder = tmp_path / "evil"
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == len(EVIL_STEMS) == len({n.lower() for n in names})
    for file in evil.files:
        assert file.path.parent == folder and file.path.is_file()
        assert not file.path.name.startswith(".") and len(file.path.name) <= 80
        assert "\x00" not in file.path.name and "/" not in file.path.name
    # Nothing escaped the output folder, and no temporary file is left anywhere.
    assert not (tmp_path.parent / "escape.wav").exists()
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # noqa: ASYNC240
    assert leftovers == []
    _assert_no_key(results.values())


def _assert_no_key(results: Any) -> None:
    for result in results:
        assert CANARY not in json.dumps(str(result))


# -- a full disk ---------------------------------------------------------------------------


def _run_limited(sb: SandboxThread, path: Path, limit: int) -> subprocess.CompletedProcess[str]:
    """`batchpod run` in a child whose files may not grow past `limit` bytes (as a full disk
    would stop them: writes fail with EFBIG)."""

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, AUDIOPOD_API_KEY=sb.api_key)
    argv = [sys.executable, "-m", "batchpod", "run", str(path), "--base-url", sb.base_url]
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, preexec_fn=limit_files, check=False
    )


def test_a_full_disk_fails_the_stems_and_a_rerun_finishes_without_paying_twice(
    tmp_path: Path,
) -> None:
    """Stems of 3 MB cannot be written where files may not pass 2 MB: each job fails with
    the system's reason, one line each, no partial file is left, and the state keeps the jobs
    as separated. With room again, a re-run downloads them without a single new submit."""
    body = "".join(
        f"  - {{url: 'https://cdn.example.com/d{i}.mp3', mode: two}}\n" for i in range(3)
    )
    path = write_manifest(tmp_path, body)
    settings = SandboxSettings(processing_s=0.05, stem_bytes=3_000_000)
    with SandboxThread(settings) as sb:
        first = _run_limited(sb, path, 2_000_000)
        assert first.returncode == 1, first.stderr
        assert "Traceback" not in first.stderr
        failed = [line for line in first.stderr.splitlines() if ": failed: " in line]
        assert len(failed) == 3 and all("File too large" in line for line in failed), failed
        assert [j["status"] for j in results_of(path)["jobs"]] == ["failed"] * 3
        assert [p for p in (tmp_path / "stems").rglob("*") if p.is_file()] == []
        code, _, err = run_cli(sb, path)
        stats = sb.stats()
    assert code == 0, err
    assert [j["status"] for j in results_of(path)["jobs"]] == ["succeeded"] * 3
    assert stats["jobs"]["created"] == 3 and stats["submissions"] == {"URL/two": 3}
