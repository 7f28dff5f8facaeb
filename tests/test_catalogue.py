"""A catalogue pays once, whatever the runs: reshards, new manifests, lost state, tampering.

Every step runs the real CLI against the sandbox over loopback; the sandbox's own count of
the jobs it created is the measure of what was paid for.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from conftest import results_of, run_cli, write_manifest

from batchpod.cli import main
from batchpod.client import ApiClient
from batchpod.errors import StateLocked
from batchpod.identity import content_key
from batchpod.journal import JobRecord, JobState, Journal, RunLock
from batchpod.manifest import load_manifest
from batchpod.sandbox import SandboxSettings, SandboxThread
from batchpod.shards import Shard

pytestmark = pytest.mark.usefixtures("clean_env")

SONGS = 20
# Jobs take long enough that a run is still submitting when it is killed.
SETTINGS = SandboxSettings(processing_s=(0.4, 0.8), stem_bytes=4_000)


def _urls(names: range, *, prefix: str = "song") -> str:
    return "".join(
        f"  - {{url: 'https://cdn.example.com/{prefix}-{i}.mp3?duration=30', mode: two}}\n"
        for i in names
    )


def _created(sb: SandboxThread) -> int:
    created: int = sb.stats()["jobs"]["created"]
    return created


def _kill_mid_run(sb: SandboxThread, path: Path, *args: str) -> None:
    """Start `batchpod run PATH ARGS` and SIGKILL it once it has submitted a new job."""
    before = _created(sb)
    argv = [sys.executable, "-m", "batchpod", "run", str(path), "--quiet"]
    argv += ["--base-url", sb.base_url, *args]
    env = dict(os.environ, AUDIOPOD_API_KEY=sb.api_key)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while _created(sb) == before and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.01)
        assert _created(sb) > before, "the run submitted nothing before it was to be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _statuses(path: Path) -> dict[str, tuple[str, Any]]:
    return {j["name"]: (j["status"], j.get("reason")) for j in results_of(path)["jobs"]}


def test_reshards_new_manifests_and_lost_state_pay_once(tmp_path: Path) -> None:
    """2 shards (one killed mid-run), then 4 (one killed mid-run, then run again), then
    unsharded; then a second manifest of the same songs (some renamed) plus new ones into the
    same output folder; then that manifest again with its state deleted. The sandbox creates
    exactly one job per song, and the last results list every song as succeeded."""
    path = write_manifest(tmp_path, _urls(range(SONGS)), concurrency=2)
    keys = [content_key(job) for job in load_manifest(path).jobs]
    with SandboxThread(SETTINGS) as sb:
        code, _, err = run_cli(sb, path, "--shard", "0/2", "--quiet")
        assert code == 0, err
        _kill_mid_run(sb, path, "--shard", "1/2")
        # The 4-shard layout: kill the shard with the most work the 2-shard layout left.
        left = [k for k in keys if Shard(1, 2).owns(k)]
        busiest = max(range(4), key=lambda i: sum(Shard(i, 4).owns(k) for k in left))
        for index in range(4):
            if index == busiest:
                _kill_mid_run(sb, path, "--shard", f"{index}/4")
            code, _, err = run_cli(sb, path, "--shard", f"{index}/4", "--quiet")
            assert code == 0, err
        code, _, err = run_cli(sb, path, "--quiet")
        assert code == 0, err
        assert _created(sb) == SONGS
        assert {s for s, _ in _statuses(path).values()} == {"succeeded"}

        # Next month's manifest: the same songs (a few under other names) and five new ones,
        # into the same output folder, with a state of its own.
        later = tmp_path / "next"
        later.mkdir()
        renamed = "".join(
            f"  - {{url: 'https://cdn.example.com/song-{i}.mp3?duration=30', mode: two,"
            f" name: renamed-{i}}}\n"
            for i in range(3)
        )
        body = renamed + _urls(range(3, SONGS)) + _urls(range(5), prefix="new")
        second = write_manifest(later, body, concurrency=4, output_dir="../stems/")
        code, _, err = run_cli(sb, second, "--quiet")
        assert code == 0, err
        assert _created(sb) == SONGS + 5
        statuses = _statuses(second)
        assert len(statuses) == SONGS + 5
        done = {n for n, (s, why) in statuses.items() if why == "already in output_dir"}
        assert len(done) == SONGS and all(statuses[n][0] == "succeeded" for n in done)
        assert {"renamed-0", "renamed-1", "renamed-2"} <= done

        # The state is lost (a pod replaced without its volume): nothing is paid again.
        for leftover in later.glob("jobs.batchpod.db*"):
            leftover.unlink()
        code, _, err = run_cli(sb, second, "--quiet")
        assert code == 0, err
        assert _created(sb) == SONGS + 5
        last = _statuses(second)
        assert len(last) == SONGS + 5 and {s for s, _ in last.values()} == {"succeeded"}
        assert {why for _, why in last.values()} == {"already in output_dir"}
        costs = [j["cost_cents"] for j in results_of(second)["jobs"]]
        assert costs == [0] * (SONGS + 5)


def test_a_tampered_stem_is_downloaded_again_and_never_paid_twice(tmp_path: Path) -> None:
    """A stem changed on disk after a run (same size, new content): the next run trusts
    neither the state's record nor the output folder's, downloads the stem again from the
    same AudioPod job, and creates no new job; with the state gone too, the same."""
    path = write_manifest(tmp_path, _urls(range(3)), concurrency=3)
    with SandboxThread(SETTINGS) as sb:
        code, _, err = run_cli(sb, path, "--quiet")
        assert code == 0, err
        first = results_of(path)["jobs"][0]
        stem = tmp_path / first["files"][0]["path"]
        original = stem.read_bytes()
        for round_ in range(2):
            stem.write_bytes(bytes(len(original)))  # same size, other bytes
            if round_ == 1:  # and then the state is lost as well
                for leftover in tmp_path.glob("jobs.batchpod.db*"):
                    leftover.unlink()
            downloads = sb.stats()["downloads"]["served"]
            code, _, err = run_cli(sb, path, "--quiet")
            assert code == 0, err
            assert stem.read_bytes() == original  # fetched again, from the same job
            assert sb.stats()["downloads"]["served"] == downloads + 1
            assert _created(sb) == 3
            again = results_of(path)["jobs"][0]
            assert again["status"] == "succeeded" and again["remote_id"] == first["remote_id"]


def test_force_redoes_a_job_that_is_already_done(tmp_path: Path) -> None:
    """--force submits (and pays for) a job already done: that is what it is for."""
    path = write_manifest(tmp_path, _urls(range(1)))
    with SandboxThread(SETTINGS) as sb:
        assert run_cli(sb, path, "--quiet")[0] == 0
        assert run_cli(sb, path, "--quiet")[0] == 0
        assert _created(sb) == 1
        assert run_cli(sb, path, "--quiet", "--force")[0] == 0
        assert _created(sb) == 2
        assert results_of(path)["jobs"][0]["status"] == "succeeded"


def test_a_run_of_another_layout_waits_for_the_running_one(tmp_path: Path) -> None:
    """While shard 0/2 runs, an unsharded run (which would take up its state) exits 75."""
    path = write_manifest(tmp_path, _urls(range(6)), concurrency=1)
    with SandboxThread(SETTINGS) as sb:
        argv = [sys.executable, "-m", "batchpod", "run", str(path), "--quiet"]
        argv += ["--base-url", sb.base_url, "--shard", "0/2"]
        env = dict(os.environ, AUDIOPOD_API_KEY=sb.api_key)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while _created(sb) == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            code, _, err = run_cli(sb, path, "--quiet")
            assert code == 75, err
            assert "another batchpod run" in err
        finally:
            assert proc.wait(timeout=60) == 0
        assert yaml.safe_load(path.with_name("jobs.shard-0-of-2.results.yaml").read_text())


def _cli(sb: SandboxThread, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    os.environ["AUDIOPOD_API_KEY"] = sb.api_key
    try:
        code = main([*argv, "--base-url", sb.base_url], stdout=out, stderr=err)
    finally:
        os.environ.pop("AUDIOPOD_API_KEY")
    return code, out.getvalue(), err.getvalue()


def test_recover_rebuilds_a_state_deleted_mid_run(tmp_path: Path) -> None:
    """A run is killed with jobs in flight and its state is deleted: recover adopts every job
    AudioPod has that no finished-job record covers, and the next run pays for no song
    twice."""
    path = write_manifest(tmp_path, _urls(range(8)), concurrency=4)
    with SandboxThread(SETTINGS) as sb:
        _kill_mid_run(sb, path)
        for leftover in tmp_path.glob("jobs.batchpod.db*"):
            leftover.unlink()
        created = _created(sb)
        assert 0 < created < 8
        code, out, err = _cli(sb, "recover", str(path))
        assert code == 0, err
        assert out.count("adopted: ") == created, out
        assert out.rstrip().endswith(f"state: {path.with_name('jobs.batchpod.db')}")
        code, _, err = run_cli(sb, path, "--quiet")
        assert code == 0, err
        assert _created(sb) == 8
        assert {s for s, _ in _statuses(path).values()} == {"succeeded"}


def _unknown_job_with_two_candidates(sb: SandboxThread, path: Path) -> list[str]:
    """Leave the manifest's one job 'unknown': its submit's outcome lost, and two AudioPod
    jobs of the same song that could each be it. Their ids."""
    (job,) = load_manifest(path).jobs
    with Journal.open(path.with_name("jobs.batchpod.db")) as journal:
        journal.put(
            JobRecord(
                key=content_key(job), state=JobState.UNKNOWN, name=job.name,
                intent_at=time.time() - 1, attempts=1,
            )
        )  # fmt: skip

    async def submit_twice() -> list[str]:
        async with ApiClient(base_url=sb.base_url, api_key=sb.api_key) as api:
            assert job.source.url is not None
            return [
                (await api.submit_url(job.source.url, mode="two", stem=None)).id for _ in range(2)
            ]

    ids = anyio.run(submit_twice)
    code, _, _ = run_cli(sb, path, "--quiet")
    assert code == 1 and results_of(path)["jobs"][0]["status"] == "unknown"
    return ids


@pytest.mark.parametrize("choice", ["adopt", "resubmit"])
def test_resolve_settles_an_unknown_job(tmp_path: Path, choice: str) -> None:
    """resolve --adopt ID: the next run follows that job and pays nothing more;
    resolve --resubmit: the next run submits it again. Refused while a run holds the state,
    and for a job that is not unknown."""
    path = write_manifest(tmp_path, _urls(range(1)))
    (name,) = [job.name for job in load_manifest(path).jobs]
    with SandboxThread(SETTINGS) as sb:
        ids = _unknown_job_with_two_candidates(sb, path)
        with RunLock(path.with_name("jobs.batchpod.db")):
            code, _, err = _cli(sb, "resolve", str(path), name, "--resubmit")
        assert code == 75, err
        args = ["--adopt", ids[1]] if choice == "adopt" else ["--resubmit"]
        code, out, err = _cli(sb, "resolve", str(path), name, *args)
        assert code == 0, err
        assert out.startswith(f"{name}: ")
        code, _, err = run_cli(sb, path, "--quiet")
        assert code == 0, err
        (job,) = results_of(path)["jobs"]
        assert job["status"] == "succeeded"
        if choice == "adopt":
            assert job["remote_id"] == ids[1] and _created(sb) == 2
        else:
            assert job["remote_id"] not in ids and _created(sb) == 3
        code, _, err = _cli(sb, "resolve", str(path), name, "--resubmit")
        assert code == 2 and "not unknown" in err


def test_read_locks_share_and_exclude_the_owner(tmp_path: Path) -> None:
    """Readers of a layout's state share its lock; its own run cannot take it meanwhile (and
    is told it is another layout's runs), and no reader can while that run holds it."""
    state = tmp_path / "jobs.shard-0-of-2.batchpod.db"
    with RunLock(state, shared=True), RunLock(state, shared=True):
        with pytest.raises(StateLocked) as refused:
            RunLock(state).__enter__()
        assert refused.value.holder_pid is None
        assert "of another shard layout" in str(refused.value)
    with RunLock(state):
        with pytest.raises(StateLocked) as refused:
            RunLock(state, shared=True).__enter__()
        assert refused.value.holder_pid == str(os.getpid())
