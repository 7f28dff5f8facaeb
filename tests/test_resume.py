"""Crash safety and resume: kill -9 anywhere, re-run, and nothing is lost or paid twice."""

from __future__ import annotations

import functools
import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from conftest import SONG, write_manifest
from conftest import run_cli as run

from batchpod.cli import main
from batchpod.client import ApiClient
from batchpod.identity import content_key as job_key
from batchpod.identity import file_sha256
from batchpod.journal import JobRecord, JobState, Journal, RunLock
from batchpod.manifest import load_manifest
from batchpod.sandbox import SandboxSettings, SandboxThread

pytestmark = pytest.mark.usefixtures("clean_env")


def results(path: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.with_name("jobs.results.yaml").read_text())
    jobs: list[dict[str, Any]] = data["jobs"]
    return jobs


def states(path: Path) -> list[str]:
    """The job states in the state file, read-only ([] if a killed run left none yet)."""
    state = path.with_name("jobs.batchpod.db")
    if not state.exists():
        return []
    db = sqlite3.connect(f"{state.as_uri()}?mode=ro", uri=True)
    try:
        return [row[0] for row in db.execute("SELECT state FROM jobs ORDER BY name")]
    except sqlite3.OperationalError:  # created, but killed before its tables were
        return []
    finally:
        db.close()


URLS = "".join(f"  - {{url: 'https://cdn.example.com/s{i}.mp3', mode: two}}\n" for i in range(6))


def test_sigkill_at_30_moments_never_pays_twice(tmp_path: Path) -> None:
    """`batchpod run` killed with SIGKILL at 30+ moments (many while a submit has created its
    job but not yet answered), re-run until it exits 0: every job is submitted exactly once,
    every stem is present once and is a valid WAV, and no temporary file is left."""
    settings = SandboxSettings(
        processing_s=(0.2, 0.6), submit_reply_delay_s=0.15, stem_bytes=64_000
    )
    delays = [0.42 + 0.06 * i for i in range(13)]  # seconds after start (startup is ~0.4 s)
    kills = 0
    windows = 0  # kills that left a job 'submitting' in the state file: paid, id unknown
    for scenario in range(25):  # until 30 kills have landed (early kills can miss a fast run)
        if kills >= 30:
            break
        folder = tmp_path / f"s{scenario}"
        folder.mkdir()
        path = write_manifest(folder, URLS, concurrency=3)
        with SandboxThread(settings) as sb:
            env = dict(os.environ, AUDIOPOD_API_KEY=sb.api_key)
            argv = [sys.executable, "-m", "batchpod", "run", str(path), "--quiet"]
            argv += ["--base-url", sb.base_url]
            log = folder / "stderr.txt"
            for attempt in range(8):
                with log.open("wb") as err:
                    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
                    try:
                        if attempt == 0 and scenario % 2 == 0:
                            # Aimed, not timed: kill as soon as the sandbox has created a
                            # job whose reply is still held back (submit_reply_delay_s).
                            _wait_for_created(sb, proc, sb.stats()["jobs"]["created"] + 1)
                        elif attempt < 4:
                            proc.wait(timeout=delays[(scenario * 4 + attempt) % len(delays)])
                        else:
                            proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        proc.send_signal(signal.SIGKILL)
                        proc.wait()
                        kills += 1
                        if "submitting" in states(path):
                            windows += 1
                        continue
                if proc.returncode == 0:
                    break
                pytest.fail(f"exit {proc.returncode}: {log.read_text()}")
            else:
                pytest.fail(f"scenario {scenario}: no clean run after 8 attempts")
            stats = sb.stats()
        assert stats["jobs"]["created"] == 6, f"scenario {scenario}: {stats['submissions']}"
        assert stats["submissions"] == {"URL/two": 6}
        jobs = results(path)
        assert [j["status"] for j in jobs] == ["succeeded"] * 6
        assert len({j["remote_id"] for j in jobs}) == 6
        for job in jobs:
            folder_files = sorted(p.name for p in (folder / "stems" / job["name"]).iterdir())
            assert folder_files == ["no_vocals.wav", "vocals.wav"], folder_files
            for entry in job["files"]:
                with wave.open(str(folder / entry["path"])) as audio:
                    assert audio.getnframes() == 32_000
    assert kills >= 30
    assert windows >= 1, "no kill landed between a submit's job creation and its reply"


def _wait_for_created(sb: SandboxThread, proc: subprocess.Popen[bytes], target: int) -> None:
    """Return once `proc` has exited; raise TimeoutExpired once the sandbox has created
    `target` jobs (or after 30 s), so the caller kills it there."""
    deadline = time.monotonic() + 30
    while proc.poll() is None:
        if sb.stats()["jobs"]["created"] >= target or time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, 0)
        time.sleep(0.005)


def test_reordered_renamed_and_added_jobs_resume(tmp_path: Path) -> None:
    """Reordering, renaming and adding jobs re-runs nothing finished: only the new job is
    submitted, and the same song listed twice is one job."""
    path = write_manifest(
        tmp_path,
        "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n"
        "  - {url: 'https://cdn.example.com/b.mp3', mode: four}\n"
        "  - {file: song.wav, mode: two}\n",
    )
    with SandboxThread(SandboxSettings(processing_s=0.05)) as sb:
        assert run(sb, path)[0] == 0
        first = {j["mode"] + j["name"]: j["remote_id"] for j in results(path)}
        (tmp_path / "copy.wav").write_bytes(SONG.read_bytes())  # same content, another name
        path.write_text(
            "version: 1\njobs:\n"
            "  - {file: song.wav, mode: two, name: renamed}\n"
            "  - {url: 'HTTPS://CDN.example.com/b.mp3', mode: four}\n"
            "  - {url: 'https://cdn.example.com/c.mp3', mode: six}\n"
            "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n"
            "  - {file: copy.wav, mode: two}\n"
        )
        code, _, err = run(sb, path)
        stats = sb.stats()
    assert code == 0, err
    assert stats["jobs"]["created"] == 4  # three, then only c.mp3
    jobs = results(path)
    assert [j["status"] for j in jobs] == ["succeeded"] * 4 + ["skipped"]
    assert jobs[0]["remote_id"] == first["twosong"]
    assert jobs[3]["remote_id"] == first["twoa"]
    assert "same song, mode and stem as 'renamed'" in jobs[4]["reason"]


@pytest.mark.parametrize("mode", ["502", "drop"])
def test_lost_submit_reply_is_reconciled_not_resubmitted(tmp_path: Path, mode: str) -> None:
    """A submit whose job is created but whose reply is lost (a 502, or the connection
    dropped) is found in the job list and adopted: each job exists once and is paid once."""
    path = write_manifest(
        tmp_path,
        "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n"
        "  - {url: 'https://cdn.example.com/b.mp3', mode: four}\n"
        "  - {file: song.wav, mode: two}\n",
    )
    settings = SandboxSettings(processing_s=0.05, lost_submit_rate=1.0, lost_submit_mode=mode)
    with SandboxThread(settings) as sb:
        code, _, err = run(sb, path)
        stats = sb.stats()
    assert code == 0, err
    assert stats["injected"]["lost_submit"] == 3
    assert stats["jobs"]["created"] == 3
    reserves = [e for e in stats["wallet_events"] if e["kind"] == "reserve"]
    assert len(reserves) == 3
    assert [j["status"] for j in results(path)] == ["succeeded"] * 3
    assert "found its job" in err


def test_failed_jobs_stay_failed_unless_retry_failed(tmp_path: Path) -> None:
    """A job AudioPod failed is not resubmitted on a re-run; --retry-failed submits it again."""
    path = write_manifest(tmp_path, "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n")
    with SandboxThread(SandboxSettings(processing_s=0.05, failure_rate=1.0)) as failing:
        assert run(failing, path)[0] == 1
        code, _, _ = run(failing, path)
        assert failing.stats()["jobs"]["created"] == 1
    assert code == 1
    (job,) = results(path)
    assert job["status"] == "failed" and "--retry-failed" in job["reason"]
    with SandboxThread(SandboxSettings(processing_s=0.05)) as working:
        code, _, err = run(working, path, "--retry-failed")
        assert working.stats()["jobs"]["created"] == 1
    assert code == 0, err
    assert results(path)[0]["status"] == "succeeded"


def test_second_run_is_locked_out_with_75(tmp_path: Path) -> None:
    """While a run holds the state, another exits 75 at once naming the holder's pid."""
    path = write_manifest(tmp_path, "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n")
    with SandboxThread(SandboxSettings(processing_s=0.05)) as sb:
        with RunLock(path.with_name("jobs.batchpod.db")):
            code, _, err = run(sb, path)
        assert sb.stats()["requests"] == {}
    assert code == 75
    assert f"pid {os.getpid()}" in err


@pytest.mark.parametrize(
    "content",
    [b"this is not a database at all\n" * 10, "sqlite-foreign"],
    ids=["garbage", "foreign-sqlite"],
)
def test_corrupt_or_foreign_state_is_refused_untouched(tmp_path: Path, content: Any) -> None:
    """A state file that is not batchpod's: one clear line, exit 2, the file untouched,
    nothing sent."""
    path = write_manifest(tmp_path, "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n")
    state = path.with_name("jobs.batchpod.db")
    if content == "sqlite-foreign":
        with sqlite3.connect(state) as db:
            db.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
            db.execute("INSERT INTO invoices VALUES (1, 9.5)")
        db.close()
    else:
        state.write_bytes(content)
    before = state.read_bytes()
    with SandboxThread(SandboxSettings(processing_s=0.05)) as sb:
        code, _, err = run(sb, path)
        assert sb.stats()["requests"] == {}
    assert code == 2
    assert state.read_bytes() == before
    assert err.count("\n") == 1 and "state file" in err and "Traceback" not in err


def test_sigint_lets_jobs_in_flight_finish_within_grace(tmp_path: Path) -> None:
    """First Ctrl-C: no new submissions; jobs in flight finish and download within the grace
    period; the results are written; exit 130. The run ends when its last job does, not when
    the grace does: with an hour of grace, waiting it out would trip the test's timeout."""
    body = "".join(f"  - {{url: 'https://cdn.example.com/{i}.mp3', mode: two}}\n" for i in range(5))
    path = write_manifest(tmp_path, body, concurrency=2)
    with SandboxThread(SandboxSettings(processing_s=1.0)) as sb:
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            code, _, err = run(sb, path, "--grace", "3600")
        finally:
            timer.cancel()
        created = sb.stats()["jobs"]["created"]
    assert code == 130
    assert created == 2
    statuses = [j["status"] for j in results(path)]
    assert statuses == ["succeeded", "succeeded", "skipped", "skipped", "skipped"]
    assert "SIGINT" in err


def test_status_command_reads_the_state(tmp_path: Path) -> None:
    """`batchpod status` counts jobs by state; -v lists each with its remote id."""
    path = write_manifest(
        tmp_path,
        "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n"
        "  - {url: 'https://cdn.example.com/b.mp3', mode: two}\n",
    )
    with SandboxThread(SandboxSettings(processing_s=0.05)) as sb:
        assert run(sb, path, "--no-download")[0] == 0
    out, err = io.StringIO(), io.StringIO()
    assert main(["status", str(path), "-v"], stdout=out, stderr=err) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "jobs.yaml: 2 jobs: 2 completed"
    assert lines[1].startswith("  a: completed id ")
    out = io.StringIO()
    assert main(["status", str(tmp_path / "nope.yaml")], stdout=out, stderr=err) == 2
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    new = write_manifest(fresh, "  - {url: 'https://cdn.example.com/z.mp3', mode: two}\n")
    assert main(["status", str(new)], stdout=out, stderr=err) == 0
    assert out.getvalue().startswith("jobs.yaml: 1 jobs, none run yet")


def _seed_unknown(path: Path, url: str, *, intent_at: float) -> None:
    """Write a state file whose one job has an unknown submit, as a crash would leave it."""
    (job,) = load_manifest(path).jobs
    assert job.source.url == url
    with Journal.open(path.with_name("jobs.batchpod.db")) as journal:
        journal.put(
            JobRecord(
                key=job_key(job),
                state=JobState.UNKNOWN,
                name=job.name,
                intent_at=intent_at,
                attempts=1,
            )
        )


def _submit_directly(sb: SandboxThread, url: str, times: int) -> None:
    """Create jobs at the sandbox as an earlier, crashed run's submits would have."""

    async def go() -> None:
        async with ApiClient(base_url=sb.base_url, api_key=sb.api_key) as api:
            for _ in range(times):
                await api.submit_url(url, mode="two", stem=None)

    anyio.run(go)


@pytest.mark.parametrize(
    ("existing", "created", "status"), [(0, 1, "succeeded"), (1, 1, "succeeded"), (2, 2, "unknown")]
)
def test_rerun_reconciles_an_unknown_submit(
    tmp_path: Path, existing: int, created: int, status: str
) -> None:
    """A re-run settles an unknown submit from the job list: no matching job -> submit;
    exactly one -> adopt it (no new charge); two -> report 'unknown', submit nothing."""
    url = "https://cdn.example.com/a.mp3"
    path = write_manifest(tmp_path, f"  - {{url: '{url}', mode: two}}\n")
    with SandboxThread(SandboxSettings(processing_s=0.05)) as sb:
        _seed_unknown(path, url, intent_at=time.time() - 1)
        _submit_directly(sb, url, existing)
        code, _, err = run(sb, path)
        assert sb.stats()["jobs"]["created"] == created
    (job,) = results(path)
    assert job["status"] == status, err
    if status == "unknown":
        assert code == 1
        assert job["error"]["type"] == "AmbiguousSubmit"
        assert "will not guess" in job["error"]["message"]
    else:
        assert code == 0


def test_an_older_job_of_the_same_song_is_not_adopted(tmp_path: Path) -> None:
    """A matching job created well before the submit intent (an earlier, finished run) is
    not taken for the unknown submit's job: the job is submitted afresh."""
    url = "https://cdn.example.com/a.mp3"
    path = write_manifest(tmp_path, f"  - {{url: '{url}', mode: two}}\n")
    with SandboxThread(SandboxSettings(processing_s=0.05)) as sb:
        _submit_directly(sb, url, 1)
        _seed_unknown(path, url, intent_at=time.time() + 3600)  # the intent came long after
        code, _, _ = run(sb, path)
        assert sb.stats()["jobs"]["created"] == 2
    assert code == 0


def _seed(path: Path, index: int, state: JobState, **fields: Any) -> None:
    """Write one job's record (job `index` of the manifest) as an earlier run left it."""
    job = load_manifest(path).jobs[index]
    file_hash = file_sha256(job.source.file) if job.source.file else None
    with Journal.open(path.with_name("jobs.batchpod.db")) as journal:
        journal.put(
            JobRecord(key=job_key(job, file_hash=file_hash), state=state, name=job.name, **fields)
        )


async def _create(sb: SandboxThread, *, url: str | None = None, file: Path | None = None,
                  mode: str = "two") -> str:  # fmt: skip
    async with ApiClient(base_url=sb.base_url, api_key=sb.api_key) as api:
        if file is not None:
            return (await api.submit_file(file, mode=mode, stem=None)).id
        assert url is not None
        return (await api.submit_url(url, mode=mode, stem=None)).id


def test_a_song_listed_twice_is_reconciled_once(tmp_path: Path) -> None:
    """One unknown submit shared by two manifest entries of the same song (same content,
    two names) is settled once: its job is adopted and nothing is submitted again."""
    path = write_manifest(
        tmp_path, "  - {file: song.wav, mode: two}\n  - {file: copy.wav, mode: two}\n"
    )
    (tmp_path / "copy.wav").write_bytes(SONG.read_bytes())
    with SandboxThread(SandboxSettings(processing_s=0.05)) as sb:
        _seed(path, 0, JobState.UNKNOWN, intent_at=time.time() - 1, attempts=1)
        anyio.run(functools.partial(_create, sb, file=tmp_path / "song.wav"))
        code, _, err = run(sb, path)
        assert sb.stats()["jobs"]["created"] == 1
    assert code == 0, err
    assert [j["status"] for j in results(path)] == ["succeeded", "skipped"]


def test_a_job_of_another_mode_is_not_adopted(tmp_path: Path) -> None:
    """An unknown 'two' submit is not settled by a 'four' job of the same song: once the
    candidate's stems show its mode, it is set aside and the job is submitted."""
    url = "https://cdn.example.com/a.mp3"
    path = write_manifest(tmp_path, f"  - {{url: '{url}', mode: two}}\n")
    with SandboxThread(SandboxSettings(processing_s=0.1)) as sb:
        _seed(path, 0, JobState.UNKNOWN, intent_at=time.time() - 1, attempts=1)
        anyio.run(functools.partial(_create, sb, url=url, mode="four"))
        code, _, err = run(sb, path)
        stats = sb.stats()
    assert code == 0, err
    assert stats["submissions"] == {"URL/four": 1, "URL/two": 1}
    (job,) = results(path)
    assert sorted(f["stem"] for f in job["files"]) == ["no_vocals", "vocals"]


def test_a_resumed_run_counts_what_the_crashed_run_spent(tmp_path: Path) -> None:
    """A job an earlier (crashed) run left in flight counts against max_spend_usd in the
    run that resumes it, so crash after crash cannot pass the cap."""
    body = (
        "  - {url: 'https://cdn.example.com/a.mp3?duration=60', mode: two, duration: 60}\n"
        "  - {url: 'https://cdn.example.com/b.mp3?duration=60', mode: two, duration: 60}\n"
    )
    path = write_manifest(tmp_path, body, budget="{max_spend_usd: 0.15}")
    with SandboxThread(SandboxSettings(processing_s=0.05)) as sb:
        remote = anyio.run(
            functools.partial(_create, sb, url="https://cdn.example.com/a.mp3?duration=60")
        )
        _seed(path, 0, JobState.SUBMITTED, remote_id=remote, intent_at=time.time(), attempts=1)
        code, _, err = run(sb, path)
        assert sb.stats()["jobs"]["created"] == 1
    assert code == 3, err
    a, b = results(path)
    assert (a["status"], a["remote_id"]) == ("succeeded", remote)
    assert b["status"] == "skipped"
