"""Clean-up at AudioPod: ``run --delete-remote`` deletes each job once its stems are stored
and committed (a kill in between is finished by the next run, once), and ``batchpod
cleanup`` deletes later only the finished jobs of its own manifest."""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST, results_of, run_cli, write_manifest

from batchpod.cli import main
from batchpod.sandbox import SandboxThread

pytestmark = pytest.mark.usefixtures("clean_env")

DELETE = "DELETE /api/v1/stem-extraction/jobs/{job_id}"
THREE = (
    "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n"
    "  - {url: 'https://cdn.example.com/b.mp3', mode: four}\n"
    "  - {file: song.wav, mode: single, stem: vocals}\n"
)


def _states(manifest: Path) -> dict[str, str]:
    with sqlite3.connect(manifest.with_name(f"{manifest.stem}.batchpod.db")) as db:
        return dict(db.execute("SELECT name, state FROM jobs").fetchall())


def _cleanup(sb: SandboxThread, path: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    os.environ["AUDIOPOD_API_KEY"] = sb.api_key
    try:
        argv = ["cleanup", str(path), "--base-url", sb.base_url, *args]
        code = main(argv, stdout=out, stderr=err)
    finally:
        os.environ.pop("AUDIOPOD_API_KEY", None)
    return code, out.getvalue(), err.getvalue()


def test_delete_remote_deletes_each_job_once_its_stems_are_stored(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, THREE)
    with SandboxThread(FAST) as sb:
        code, _, err = run_cli(sb, path, "--delete-remote")
        first = sb.stats()
        again = run_cli(sb, path, "--delete-remote")
        second = sb.stats()
    assert code == 0, err
    assert first["jobs"]["created"] == 3 and first["jobs"]["deleted"] == 3
    assert first["jobs"]["stored"] == 0
    jobs = results_of(path)["jobs"]
    assert [j["status"] for j in jobs] == ["succeeded"] * 3
    assert all(j["deleted_remote"] is True for j in jobs)
    for job in jobs:  # every stem is there, as recorded
        for f in job["files"]:
            assert (tmp_path / f["path"]).stat().st_size == f["size"]
    assert set(_states(path).values()) == {"cleaned"}
    # The re-run finds them done: nothing submitted, nothing deleted again.
    assert again[0] == 0, again[2]
    assert second["jobs"]["created"] == 3 and second["requests"][DELETE] == 3
    assert all(j["deleted_remote"] is True for j in results_of(path)["jobs"])


def test_a_later_run_with_delete_remote_deletes_what_earlier_runs_stored(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, THREE)
    with SandboxThread(FAST) as sb:
        assert run_cli(sb, path)[0] == 0
        before = sb.stats()["jobs"]
        code, _, err = run_cli(sb, path, "--delete-remote")
        after = sb.stats()
    assert code == 0, err
    assert before["deleted"] == 0 and before["stored"] == 3
    assert after["jobs"]["created"] == 3, "a stored job was submitted again"
    assert after["jobs"]["deleted"] == 3 and after["requests"][DELETE] == 3
    assert all(j["deleted_remote"] is True for j in results_of(path)["jobs"])


def test_a_kill_between_stored_and_deleted_is_finished_by_the_next_run_once(
    tmp_path: Path,
) -> None:
    """SIGKILL while AudioPod has deleted the job but not yet answered: the state still says
    downloaded; the re-run deletes it (AudioPod answers 404: gone), records it, and submits
    nothing. AudioPod deleted the job once."""
    path = write_manifest(tmp_path, "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n")
    settings = dataclasses.replace(FAST, delete_reply_delay_s=60.0)
    with SandboxThread(settings) as sb:
        env = dict(os.environ, AUDIOPOD_API_KEY=sb.api_key)
        argv = [sys.executable, "-m", "batchpod", "run", str(path), "--base-url", sb.base_url]
        proc = subprocess.Popen(
            [*argv, "--delete-remote"], env=env, cwd=tmp_path, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if sb.stats()["jobs"]["deleted"]:
                break
            time.sleep(0.01)
        assert sb.stats()["jobs"]["deleted"] == 1, "the delete never reached AudioPod"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _states(path) == {"a": "downloaded"}
        code, _, err = run_cli(sb, path, "--delete-remote")
        stats = sb.stats()
    assert code == 0, err
    assert _states(path) == {"a": "cleaned"}
    assert stats["jobs"]["created"] == 1 and stats["jobs"]["deleted"] == 1
    assert stats["requests"][DELETE] == 2  # the killed run's, and the re-run's (404)
    (job,) = results_of(path)["jobs"]
    assert job["status"] == "succeeded" and job["deleted_remote"] is True
    assert len(job["files"]) == 2


def test_cleanup_deletes_only_finished_jobs_of_its_own_manifest(tmp_path: Path) -> None:
    ours, theirs, unfinished = (tmp_path / n for n in ("ours", "theirs", "unfinished"))
    for folder in (ours, theirs, unfinished):
        folder.mkdir()
    path = write_manifest(ours, THREE)
    other = write_manifest(theirs, "  - {url: 'https://cdn.example.com/x.mp3', mode: two}\n")
    pending = write_manifest(unfinished, "  - {url: 'https://cdn.example.com/y.mp3', mode: two}\n")
    with SandboxThread(FAST) as sb:
        assert run_cli(sb, path)[0] == 0
        assert run_cli(sb, other)[0] == 0
        assert run_cli(sb, pending, "--no-download")[0] == 0  # completed, stems not stored
        # One of our jobs lost a stem: it is not all stored, so it is kept.
        lost = results_of(path)["jobs"][1]
        (ours / lost["files"][0]["path"]).unlink()

        listed = _cleanup(sb, path)
        after_listing = sb.stats()["jobs"]["deleted"]
        recent = _cleanup(sb, path, "--older-than", "7d", "--yes")
        code, out, err = _cleanup(sb, path, "--yes")
        stats = sb.stats()
        none_unfinished = _cleanup(sb, pending, "--yes")
        rerun = run_cli(sb, path)
        last = sb.stats()
    names = [j["name"] for j in results_of(path)["jobs"]]
    assert listed[0] == 0 and after_listing == 0, "listing deleted something"
    assert listed[1].count("would delete: ") == 2
    assert f"kept {lost['name']}: its stems are not all in the output folder" in listed[2]
    assert recent[0] == 0 and "deleted 0 AudioPod jobs; 3 separated less than" in recent[1]
    assert code == 0, err
    assert out.count("deleted: ") == 2 and f"deleted: {lost['name']}:" not in out
    assert stats["jobs"]["deleted"] == 2 and stats["jobs"]["stored"] == 3  # theirs and 2 more
    assert _states(path) == {
        names[0]: "cleaned",
        names[1]: "downloaded",
        names[2]: "cleaned",
    }
    assert _states(other) == {"x": "downloaded"}
    assert none_unfinished[0] == 0 and "deleted 0 AudioPod jobs" in none_unfinished[1]
    # A run afterwards pays for nothing: the cleaned jobs are done, the kept one is fetched
    # again from its AudioPod job, which is still there.
    assert rerun[0] == 0, rerun[2]
    assert last["jobs"]["created"] == 5
    assert [j["status"] for j in results_of(path)["jobs"]] == ["succeeded"] * 3
    assert (ours / lost["files"][0]["path"]).is_file()


def test_a_cleaned_job_whose_stems_are_gone_is_not_paid_for_again_unasked(
    tmp_path: Path,
) -> None:
    path = write_manifest(tmp_path, "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n")
    with SandboxThread(FAST) as sb:
        assert run_cli(sb, path, "--delete-remote")[0] == 0
        for stem in (tmp_path / "stems" / "a").iterdir():
            stem.unlink()
        code, _, _ = run_cli(sb, path)
        refused = results_of(path)["jobs"][0]
        forced = run_cli(sb, path, "--force")
        stats = sb.stats()
    assert code == 1
    assert refused["status"] == "failed" and refused["error"]["type"] == "RemoteDeleted"
    assert "--force submits it again" in refused["error"]["message"]
    assert forced[0] == 0, forced[2]
    assert stats["jobs"]["created"] == 2  # only --force paid again


def test_delete_remote_needs_downloads_and_an_sqlite_state(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n")
    with SandboxThread(FAST) as sb:
        code, _, err = run_cli(sb, path, "--delete-remote", "--no-download")
        stats = sb.stats()
    assert code == 2 and "--delete-remote needs the stems downloaded" in err
    assert len(err.strip().splitlines()) == 1
    assert stats["jobs"]["created"] == 0
