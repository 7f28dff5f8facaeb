"""`batchpod run` end to end: the CLI, the pool and the client against the sandbox on loopback."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import threading
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_manifest as manifest

from batchpod.cli import main
from batchpod.sandbox import KeySpec, SandboxSettings, SandboxThread

FAST = SandboxSettings(processing_s=(0.05, 0.2))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No AudioPod variables leak in from the environment running the tests."""
    for name in list(os.environ):
        if name.startswith("AUDIOPOD_"):
            monkeypatch.delenv(name)
    yield


def run(
    sb: SandboxThread | None, path: Path, *args: str, key: str | None = None
) -> tuple[int, str, str]:
    """`batchpod run` against sandbox `sb` with its key (or `key`) in AUDIOPOD_API_KEY."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["run", str(path), *args]
    if sb is not None:
        argv += ["--base-url", sb.base_url]
        os.environ["AUDIOPOD_API_KEY"] = key if key is not None else sb.api_key
    try:
        code = main(argv, stdout=out, stderr=err)
    finally:
        os.environ.pop("AUDIOPOD_API_KEY", None)
    return code, out.getvalue(), err.getvalue()


def results_of(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.with_name("jobs.results.yaml").read_text())
    return data


ALL_MODES = """\
  - {url: 'https://cdn.example.com/a.mp3?duration=61', mode: single, stem: vocals}
  - {url: 'https://cdn.example.com/b.mp3?duration=30', mode: two}
  - {file: song.wav, mode: four}
  - {url: 'https://cdn.example.com/d.mp3?duration=120', mode: six, name: Dee}
  - {url: 'https://cdn.example.com/e.mp3', mode: producer}
  - {file: song.wav, mode: studio}
  - {url: 'https://cdn.example.com/g.mp3', mode: mastering}
"""


def test_every_mode_url_and_file_jobs_succeed(tmp_path: Path, env: None) -> None:
    """All seven modes, URL and file sources: every stem is a valid WAV; results say so."""
    path = manifest(tmp_path, ALL_MODES, concurrency=3)
    with SandboxThread(FAST) as sb:
        code, out, err = run(sb, path)
        stats = sb.stats()
        base_url, key = sb.base_url, sb.api_key
    assert code == 0, err
    assert out.startswith("done: 7 succeeded in ")
    assert err.count("succeeded") == 7  # one log line per finished job on a non-terminal
    doc = results_of(path)
    jobs = doc["jobs"]
    assert [j["name"] for j in jobs] == ["a", "b", "song", "Dee", "e", "song-studio", "g"]
    assert [j["mode"] for j in jobs] == [
        "single", "two", "four", "six", "producer", "studio", "mastering"
    ]  # fmt: skip
    assert all(j["status"] == "succeeded" for j in jobs)
    assert stats["submissions"] == {
        "URL/single/vocals": 1, "URL/two": 1, "FILE/four": 1, "URL/six": 1,
        "URL/producer": 1, "FILE/studio": 1, "URL/mastering": 1,
    }  # fmt: skip
    for job in jobs:
        assert job["remote_id"] and job["attempts"] == 1
        assert job["submitted_at"].endswith("Z") and job["completed_at"].endswith("Z")
        assert job["files"], job
        for entry in job["files"]:
            file = tmp_path / entry["path"]
            assert entry["path"] == f"stems/{job['name']}/{entry['stem']}.wav"
            assert file.stat().st_size == entry["size"]
            with wave.open(str(file)) as audio:
                assert audio.getnframes() > 0
        assert set(job["quality_scores"]) == {f["stem"] for f in job["files"]}
    assert {f["stem"] for f in jobs[0]["files"]} == {"vocals", "no_vocals"}
    assert {f["stem"] for f in jobs[1]["files"]} == {"vocals", "no_vocals"}
    assert {f["stem"] for f in jobs[2]["files"]} == {"vocals", "drums", "bass", "other"}
    # Costs come from AudioPod's usage log and add up to what the wallet lost.
    assert jobs[0]["cost_cents"] == 11 and jobs[0]["cost_usd"] == "$0.11"  # 61 s
    assert jobs[3]["cost_cents"] == 20  # 120 s
    run_info = doc["run"]
    charged = sum(e["cents"] for e in stats["wallet_events"] if e["kind"] == "charge")
    assert run_info["spent_cents"] == charged == sum(j["cost_cents"] for j in jobs)
    assert run_info["balance_before_cents"] - run_info["balance_after_cents"] == charged
    assert run_info["counts"]["succeeded"] == 7 and run_info["exit_code"] == 0
    assert run_info["sandbox"] is False and run_info["base_url"] == base_url
    assert len(run_info["manifest_sha256"]) == 64
    assert key not in path.with_name("jobs.results.yaml").read_text()
    assert key not in out + err


def test_peak_in_flight_never_exceeds_concurrency(tmp_path: Path, env: None) -> None:
    """With 24 jobs and concurrency 4, AudioPod never sees more than 4 jobs active at once."""
    body = "".join(
        f"  - {{url: 'https://cdn.example.com/{i}.mp3?duration=10', mode: two}}\n"
        for i in range(24)
    )
    path = manifest(tmp_path, body, concurrency=4)
    with SandboxThread(SandboxSettings(processing_s=(0.1, 0.3))) as sb:
        code, _, err = run(sb, path, "--no-download")
        stats = sb.stats()
        key = sb.api_key
    assert code == 0, err
    assert stats["jobs"]["created"] == 24
    assert stats["peak_active_by_key"][key] == 4


def test_remote_failure_is_a_result_and_refunded(tmp_path: Path, env: None) -> None:
    """A job AudioPod fails is recorded with its error; the run goes on; exit code 1."""
    path = manifest(
        tmp_path,
        "  - {url: 'https://cdn.example.com/x.mp3?duration=60', mode: four}\n",
    )
    with SandboxThread(SandboxSettings(processing_s=0.05, failure_rate=1.0)) as sb:
        code, out, err = run(sb, path)
    assert code == 1
    (job,) = results_of(path)["jobs"]
    assert job["status"] == "failed"
    assert job["error"]["type"] == "RemoteJobFailed"
    assert job["error"]["message"]
    assert job["cost_cents"] is None  # refunded: no usage row
    run_info = results_of(path)["run"]
    assert run_info["balance_before_cents"] == run_info["balance_after_cents"]
    assert "x: failed: RemoteJobFailed" in err
    assert out.startswith("done: 1 failed")


def test_bad_key_exits_4_before_submitting(tmp_path: Path, env: None) -> None:
    """A key AudioPod refuses (401) stops the run at pre-flight: exit 4, nothing submitted."""
    path = manifest(tmp_path, "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n")
    with SandboxThread(FAST) as sb:
        code, out, err = run(sb, path, key="ap_not_a_real_key")
        stats = sb.stats()
    assert code == 4
    assert stats["submissions"] == {}
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "ap_not_a_real_key" not in err


def test_revoked_key_exits_4(tmp_path: Path, env: None) -> None:
    """A revoked key (403) is an authentication failure: exit 4, nothing submitted."""
    path = manifest(tmp_path, "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n")
    revoked = "ap_revoked_key_000"
    settings = SandboxSettings(extra_keys={revoked: KeySpec(status="revoked")})
    with SandboxThread(settings) as sb:
        code, _, err = run(sb, path, key=revoked)
        assert sb.stats()["submissions"] == {}
    assert code == 4
    assert "revoked" in err.lower()


def test_missing_key_names_the_variable(tmp_path: Path, env: None) -> None:
    """No key in the environment: one line naming the variable, exit 4, no request sent."""
    path = manifest(tmp_path, "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n")
    with SandboxThread(FAST) as sb:
        out, err = io.StringIO(), io.StringIO()
        code = main(
            ["run", str(path), "--base-url", sb.base_url, "--api-key-env", "AUDIOPOD_API_KEY_PROD"],
            stdout=out,
            stderr=err,
        )
        assert sb.stats()["requests"] == {}
    assert code == 4
    assert err.getvalue().count("\n") == 1
    assert "AUDIOPOD_API_KEY_PROD" in err.getvalue()


def test_manifest_problems_exit_2_and_send_nothing(tmp_path: Path, env: None) -> None:
    """A manifest with a problem: exit 2, the problem printed, no request to AudioPod."""
    path = manifest(tmp_path, "  - {url: 'https://cdn.example.com/a.mp3', mode: 4stem}\n")
    with SandboxThread(FAST) as sb:
        code, _, err = run(sb, path)
        assert sb.stats()["requests"] == {}
    assert code == 2
    assert "unknown mode '4stem'" in err


def test_download_failure_is_reported(tmp_path: Path, env: None) -> None:
    """A job whose stems cannot be written fails with the reason; the others succeed."""
    path = manifest(
        tmp_path,
        "  - {url: 'https://cdn.example.com/a.mp3', mode: two, name: blocked}\n"
        "  - {url: 'https://cdn.example.com/b.mp3', mode: two, name: fine}\n",
    )
    (tmp_path / "stems").mkdir()
    (tmp_path / "stems" / "blocked").write_text("a file where the job's folder should be")
    with SandboxThread(FAST) as sb:
        code, _, err = run(sb, path)
    assert code == 1
    blocked, fine = results_of(path)["jobs"]
    assert blocked["status"] == "failed" and blocked["error"]["type"] == "OutputError"
    assert "cannot create" in blocked["error"]["message"]
    assert fine["status"] == "succeeded"
    assert "blocked: failed: OutputError" in err


def test_expired_download_links_fail_the_job(tmp_path: Path, env: None) -> None:
    """Links that expire before they are used are refreshed three times, then the job fails
    with the reason; the run finishes with exit 1 and no partial files."""
    path = manifest(tmp_path, "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n")
    with SandboxThread(SandboxSettings(processing_s=0.05, download_ttl_s=0.001)) as sb:
        code, _, err = run(sb, path)
        downloads = sb.stats()["downloads"]
    assert code == 1
    (job,) = results_of(path)["jobs"]
    assert job["status"] == "failed"
    assert job["error"]["type"] == "DownloadLinkExpired"
    assert job["error"]["http_status"] == 403
    assert downloads["denied"] == 4  # the first link, then each of three refreshed ones
    assert "a: failed: DownloadLinkExpired (HTTP 403)" in err
    assert "Traceback" not in err
    assert list((tmp_path / "stems" / "a").iterdir()) == []


def test_no_download_records_urls(tmp_path: Path, env: None) -> None:
    """--no-download stops at completed jobs and records their download URLs."""
    path = manifest(tmp_path, "  - {url: 'https://cdn.example.com/a.mp3', mode: four}\n")
    with SandboxThread(FAST) as sb:
        code, _, _ = run(sb, path, "--no-download")
        assert sb.stats()["downloads"]["requests"] == 0
    assert code == 0
    (job,) = results_of(path)["jobs"]
    assert job["status"] == "completed"
    assert set(job["download_urls"]) == {"vocals", "drums", "bass", "other"}
    assert "files" not in job
    assert not (tmp_path / "stems").exists()


def test_json_results_at_a_chosen_path(tmp_path: Path, env: None) -> None:
    """--format json --results PATH writes JSON there, owner-only."""
    path = manifest(tmp_path, "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n")
    target = tmp_path / "out" / "r.json"
    target.parent.mkdir()
    with SandboxThread(FAST) as sb:
        code, out, _ = run(sb, path, "--format", "json", "--results", str(target))
    assert code == 0
    doc = json.loads(target.read_text())
    assert doc["results_version"] == 1 and doc["jobs"][0]["status"] == "succeeded"
    assert target.stat().st_mode & 0o077 == 0
    assert str(target) in out


def test_budget_stops_submissions_exit_3(tmp_path: Path, env: None) -> None:
    """A job that would pass max_spend_usd is not submitted; the rest are skipped; exit 3."""
    body = (
        "  - {url: 'https://cdn.example.com/a.mp3?duration=60', mode: two, duration: 60}\n"
        "  - {url: 'https://cdn.example.com/b.mp3?duration=600', mode: two, duration: 600}\n"
        "  - {url: 'https://cdn.example.com/c.mp3?duration=60', mode: two, duration: 60}\n"
    )
    path = manifest(tmp_path, body, concurrency=1, budget="{max_spend_usd: 0.50}")
    with SandboxThread(FAST) as sb:
        code, _, err = run(sb, path)
        assert sb.stats()["jobs"]["created"] == 1
    assert code == 3
    a, b, c = results_of(path)["jobs"]
    assert a["status"] == "succeeded" and a["cost_cents"] == 10
    assert (b["status"], b["reason"]) == ("skipped", "budget")
    assert (a["estimated_cents"], b["estimated_cents"], c["estimated_cents"]) == (10, 100, None)
    run_info = results_of(path)["run"]
    assert (run_info["max_spend_cents"], run_info["keep_balance_cents"]) == (50, None)
    assert run_info["estimated_cents"] == 110 and run_info["spent_cents"] == 10
    assert (c["status"], c["reason"]) == ("skipped", "budget")
    assert "max_spend_usd" in err


def test_insufficient_balance_stops_exit_3(tmp_path: Path, env: None) -> None:
    """AudioPod's 402 stops new submissions; the job and the rest are skipped; exit 3."""
    body = "".join(
        f"  - {{url: 'https://cdn.example.com/{i}.mp3?duration=300', mode: two}}\n"
        for i in range(3)
    )
    path = manifest(tmp_path, body, concurrency=1)
    with SandboxThread(SandboxSettings(processing_s=0.05, balance_cents=60)) as sb:
        code, _, err = run(sb, path)
    assert code == 3
    statuses = [(j["status"], j.get("reason")) for j in results_of(path)["jobs"]]
    assert statuses == [
        ("succeeded", None),
        ("skipped", "insufficient_balance"),
        ("skipped", "insufficient_balance"),
    ]
    assert "stopped early: " in err and "wallet cannot pay for this job" in err


def test_sigint_records_in_flight_jobs_exit_130(tmp_path: Path, env: None) -> None:
    """Ctrl-C mid-run, jobs outlasting the grace period: they are recorded as interrupted
    with their ids, the rest as skipped; the results are written; exit 130."""
    body = "".join(f"  - {{url: 'https://cdn.example.com/{i}.mp3', mode: two}}\n" for i in range(6))
    path = manifest(tmp_path, body, concurrency=2)
    with SandboxThread(SandboxSettings(processing_s=30)) as sb:
        timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            code, _, err = run(sb, path, "--grace", "0.5")
        finally:
            timer.cancel()
    assert code == 130
    jobs = results_of(path)["jobs"]
    assert [j["status"] for j in jobs] == ["interrupted"] * 2 + ["skipped"] * 4
    assert all(j["remote_id"] for j in jobs[:2])
    assert results_of(path)["run"]["exit_code"] == 130
    assert "SIGINT" in err


def test_sandbox_flag_runs_the_example_offline(
    tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`batchpod run MANIFEST --sandbox` needs no key or network and says it used the sandbox."""
    path = manifest(tmp_path, "  - {file: song.wav, mode: two}\n")
    out, err = io.StringIO(), io.StringIO()
    code = main(["run", str(path), "--sandbox", "--quiet"], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    assert err.getvalue() == ""  # --quiet: nothing but errors
    assert results_of(path)["run"]["sandbox"] is True
    assert (tmp_path / "stems" / "song" / "vocals.wav").exists()


def test_balance_command(env: None) -> None:
    """`batchpod balance` prints the wallet in dollars."""
    with SandboxThread(SandboxSettings(balance_cents=1234)) as sb:
        os.environ["AUDIOPOD_API_KEY"] = sb.api_key
        out, err = io.StringIO(), io.StringIO()
        try:
            code = main(["balance", "--base-url", sb.base_url], stdout=out, stderr=err)
        finally:
            os.environ.pop("AUDIOPOD_API_KEY")
    assert code == 0, err.getvalue()
    assert out.getvalue().startswith("balance: $12.34")


def test_readme_main_command_on_the_example(tmp_path: Path, env: None) -> None:
    """`batchpod run jobs.example.yaml --sandbox` (the README's main command) succeeds on a
    copy of the example, and every stem it downloads is a valid WAV file."""
    root = Path(__file__).resolve().parent.parent
    shutil.copy(root / "jobs.example.yaml", tmp_path / "jobs.example.yaml")
    shutil.copytree(root / "examples" / "audio", tmp_path / "examples" / "audio")
    out, err = io.StringIO(), io.StringIO()
    code = main(["run", str(tmp_path / "jobs.example.yaml"), "--sandbox"], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    assert out.getvalue().startswith("done: 6 succeeded in ")
    doc = yaml.safe_load((tmp_path / "jobs.example.results.yaml").read_text())
    assert doc["run"]["sandbox"] is True
    stems = sorted((tmp_path / "stems").rglob("*.wav"))
    assert len(stems) == sum(len(job["files"]) for job in doc["jobs"]) >= 6 * 2
    for stem in stems:
        with wave.open(str(stem)) as audio:
            assert audio.getnchannels() >= 1 and audio.getnframes() > 0


def test_unwritable_results_exit_74_before_paying(tmp_path: Path, env: None) -> None:
    """A results path in a folder that does not exist: exit 74, nothing submitted."""
    path = manifest(tmp_path, "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n")
    with SandboxThread(FAST) as sb:
        code, _, err = run(sb, path, "--results", str(tmp_path / "missing" / "r.yaml"))
        assert sb.stats()["requests"] == {}
    assert code == 74
    assert err.count("\n") == 1 and "cannot write the results" in err


def test_unreachable_api_exits_69(tmp_path: Path, env: None) -> None:
    """No AudioPod at the base URL: one line, exit 69, nothing recorded as submitted."""
    path = manifest(tmp_path, "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n")
    with SandboxThread(FAST) as sb:
        base_url, key = sb.base_url, sb.api_key
    os.environ["AUDIOPOD_API_KEY"] = key
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(["run", str(path), "--base-url", base_url], stdout=out, stderr=err)
    finally:
        os.environ.pop("AUDIOPOD_API_KEY")
    assert code == 69
    assert err.getvalue().count("\n") == 1 and "AudioPod could not be used" in err.getvalue()


def test_sigterm_exits_143(tmp_path: Path, env: None) -> None:
    """SIGTERM (as cron or Kubernetes send) stops the run like Ctrl-C, with exit 143."""
    path = manifest(tmp_path, "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n")
    with SandboxThread(SandboxSettings(processing_s=30)) as sb:
        timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        try:
            code, _, err = run(sb, path, "--grace", "0.2")
        finally:
            timer.cancel()
    assert code == 143
    assert "SIGTERM" in err
    assert results_of(path)["jobs"][0]["status"] == "interrupted"


def test_plan_gated_mode_fails_that_job_only(tmp_path: Path, env: None) -> None:
    """A mode the key's plan does not allow (403 on submit) fails that job with a message
    naming the plan needed; the other jobs go on; exit 1 (not 4: the key is fine)."""
    path = manifest(
        tmp_path,
        "  - {url: 'https://cdn.example.com/a.mp3', mode: producer}\n"
        "  - {url: 'https://cdn.example.com/b.mp3', mode: two}\n",
    )
    with SandboxThread(SandboxSettings(processing_s=0.05, plan="basic")) as sb:
        code, _, err = run(sb, path)
    assert code == 1, err
    gated, fine = results_of(path)["jobs"]
    assert gated["status"] == "failed"
    assert gated["error"]["type"] == "PermissionDenied" and gated["error"]["http_status"] == 403
    assert "creator" in gated["error"]["message"].lower()
    assert fine["status"] == "succeeded"


def test_caps_count_real_charges_not_estimates(tmp_path: Path, env: None) -> None:
    """Each completed job is settled with AudioPod's charge from the usage log: songs that
    are longer than the manifest claims use up max_spend_usd at their real price."""
    body = "".join(
        f"  - {{url: 'https://cdn.example.com/{i}.mp3?duration=300', mode: two, duration: 60}}\n"
        for i in range(5)
    )  # estimated at 10 c each, charged 50 c each
    path = manifest(tmp_path, body, concurrency=1, budget="{max_spend_usd: 1.20}")
    with SandboxThread(SandboxSettings(processing_s=0.05)) as sb:
        code, _, err = run(sb, path)
        created = sb.stats()["jobs"]["created"]
    assert code == 3, err
    jobs = results_of(path)["jobs"]
    assert created == 3  # on estimates alone all five would have gone ($2.50)
    assert [j["cost_cents"] for j in jobs[:3]] == [50, 50, 50]
    assert [j["status"] for j in jobs[3:]] == ["skipped", "skipped"]
