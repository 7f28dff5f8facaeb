"""What operators watch: the metrics file, the Pushgateway's pushes and the health pings.

Each test runs real runs against the sandbox. The metrics are read back with
``prometheus_client.parser`` and checked against the run's results file. The pushes and pings
go to a recording HTTP server on loopback, which checks their paths and bodies, and checks
that none of them carries the key or a signed link.
"""

from __future__ import annotations

import dataclasses
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FAST, Quiet, SandboxFactory, results_of, run_cli, write_manifest
from prometheus_client.parser import text_string_to_metric_families

from batchpod.config import RunConfig
from batchpod.manifest import load_manifest
from batchpod.pings import Pinger
from batchpod.retry import RetryPolicy
from batchpod.sandbox import SandboxThread
from batchpod.session import run_session

pytestmark = pytest.mark.usefixtures("clean_env")


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a metrics text, by name and labels (the manifest label apart)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if k != "manifest")
            out[sample.name, labels] = sample.value
    return out


def _by(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, label: str
) -> dict[str, float]:
    return {
        dict(labels)[label]: value
        for (sample, labels), value in samples.items()
        if sample == name and label in dict(labels)
    }


def _leftovers(folder: Path, prefix: str) -> list[str]:
    """Files in ``folder`` named with ``prefix`` (a temporary file not renamed)."""
    return [p.name for p in folder.iterdir() if p.name.startswith(prefix)]


def _urls(count: int, prefix: str = "") -> str:
    return "".join(
        f"  - {{url: 'https://cdn.example.com/{prefix}{i}.mp3?duration=60', mode: four, "
        "duration: 60}\n"
        for i in range(count)
    )


@pytest.mark.anyio
async def test_metrics_file_counts_are_the_results_files(
    tmp_path: Path, sandbox_factory: SandboxFactory
) -> None:
    """After a run with failed jobs, retried 429s and 5xxs and a budget stop, every count of
    the metrics file equals the results file's: jobs by status, spend, estimate, wallet,
    requests, throttles, retries by cause, stems and bytes; and it keeps no last success."""
    path = write_manifest(tmp_path, _urls(24), concurrency=6, budget={"max_spend_usd": 2.0})
    metrics = tmp_path / "batchpod.prom"
    async with sandbox_factory(
        processing_s=(0.05, 0.3), failure_rate=0.25, rate_429=0.05, rate_5xx=0.05, seed=5,
        retry_after_s=None,
    ) as sb:  # fmt: skip
        config = RunConfig(
            api_key=sb.api_key,
            base_url=sb.base_url,
            metrics_file=metrics,
            metrics_interval_s=0.05,
            retry=RetryPolicy(max_attempts=50, base_s=0.01, max_backoff_s=0.1),
        )
        summary = await run_session(load_manifest(path), config, reporter=Quiet())
    results = results_of(path)
    run, jobs = results["run"], results["jobs"]
    assert run["exit_code"] == 3, run  # the budget stop
    assert {"failed", "skipped", "succeeded"} <= {
        status for status, n in run["counts"].items() if n
    }
    assert run["requests"]["retries"], "the sandbox's 429s and 5xxs were retried"
    samples = _samples(metrics.read_text(encoding="utf-8"))

    def one(name: str, **labels: str) -> float:
        return samples[name, frozenset(labels.items())]

    assert _by(samples, "batchpod_jobs", "status") == {
        status: n for status, n in run["counts"].items() if n
    }
    assert one("batchpod_spent_cents") == run["spent_cents"] == summary.spent_cents > 0
    assert one("batchpod_estimated_cents") == run["estimated_cents"]
    assert one("batchpod_wallet_balance_cents", when="before") == run["balance_before_cents"]
    assert one("batchpod_wallet_balance_cents", when="after") == run["balance_after_cents"]
    requests = {k: v for (name, k), v in samples.items() if name == "batchpod_api_requests_total"}
    assert sum(requests.values()) == run["requests"]["api"]
    codes = Counter[str]()
    for labels, n in requests.items():
        codes[dict(labels)["code"]] += int(n)
    assert codes["429"] == run["requests"]["throttled"] > 0
    assert codes["200"] > 0 and any(code.startswith("5") for code in codes)
    assert _by(samples, "batchpod_retries_total", "cause") == run["requests"]["retries"]
    files = [f for job in jobs for f in job.get("files", ())]
    assert one("batchpod_stems_written_total") == len(files) > 0
    assert one("batchpod_stem_bytes_written_total") == sum(f["size"] for f in files)
    separated = [j for j in jobs if j.get("completed_at") and j.get("submitted_at")]
    assert one("batchpod_job_wait_seconds_count") == len(separated) > 0
    assert one("batchpod_job_wait_seconds_bucket", le="+Inf") == len(separated)
    assert one("batchpod_exit_code") == 3
    assert one("batchpod_running") == 0
    assert one("batchpod_jobs_in_flight") == 0
    assert not any(name == "batchpod_last_success_timestamp_seconds" for name, _ in samples)
    assert oct(metrics.stat().st_mode & 0o777) == "0o644"  # node_exporter reads it
    assert _leftovers(tmp_path, ".batchpod.prom") == []


@pytest.mark.anyio
async def test_a_failed_run_keeps_the_last_success(
    tmp_path: Path, sandbox_factory: SandboxFactory
) -> None:
    """A run that ends with 0 stamps the last success; a later one that fails leaves the
    same value in the file it rewrites."""
    metrics = tmp_path / "nightly.prom"
    path = write_manifest(tmp_path, _urls(3, "a"))
    async with sandbox_factory() as sb:
        config = RunConfig(api_key=sb.api_key, base_url=sb.base_url, metrics_file=metrics)
        before = time.time()
        first = await run_session(load_manifest(path), config, reporter=Quiet())
    assert first.exit_code == 0
    stamp = _samples(metrics.read_text())["batchpod_last_success_timestamp_seconds", frozenset()]
    assert before <= stamp <= time.time()

    path = write_manifest(tmp_path, _urls(3, "b"))  # other songs: these are submitted
    async with sandbox_factory(failure_rate=1.0) as sb:
        config = dataclasses.replace(config, api_key=sb.api_key, base_url=sb.base_url)
        second = await run_session(load_manifest(path), config, reporter=Quiet())
    assert second.exit_code == 1
    samples = _samples(metrics.read_text())
    assert samples["batchpod_exit_code", frozenset()] == 1
    assert _by(samples, "batchpod_jobs", "status") == {"failed": 3}
    assert samples["batchpod_last_success_timestamp_seconds", frozenset()] == stamp


def test_kill_9_mid_run_leaves_a_whole_metrics_file(tmp_path: Path) -> None:
    """A run rewriting its metrics file a hundred times a second, read all the while and
    then killed with SIGKILL, only ever shows whole files: each read parses to the end."""
    path = write_manifest(tmp_path, _urls(20))
    metrics = tmp_path / "batchpod.prom"
    with SandboxThread(dataclasses.replace(FAST, processing_s=(30.0, 40.0))) as sb:
        env = {**os.environ, "AUDIOPOD_API_KEY": sb.api_key}
        child = subprocess.Popen(
            [sys.executable, "-m", "batchpod", "run", str(path), "--base-url", sb.base_url,
             "--metrics-file", str(metrics), "--metrics-interval", "0.01"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            reads = 0
            deadline = time.monotonic() + 60
            while reads < 200 and time.monotonic() < deadline:
                try:
                    text = metrics.read_text(encoding="utf-8")
                except FileNotFoundError:
                    time.sleep(0.005)
                    continue
                samples = _samples(text)  # a torn file fails to parse or loses its end
                assert samples["batchpod_running", frozenset()] == 1
                assert ("batchpod_job_wait_seconds_count", frozenset()) in samples
                reads += 1
            assert reads == 200, "the run wrote its metrics file while it ran"
            assert child.poll() is None, "the run was still going"
            child.send_signal(signal.SIGKILL)
            assert child.wait(timeout=10) == -signal.SIGKILL
        finally:
            child.kill()
            child.wait()
    samples = _samples(metrics.read_text(encoding="utf-8"))
    assert samples["batchpod_running", frozenset()] == 1  # the last whole file, as it was
    assert _by(samples, "batchpod_api_requests_total", "endpoint")


# -- pushes and pings ---------------------------------------------------------------------


class _Recorder(http.server.ThreadingHTTPServer):
    """A loopback HTTP server that answers 200 to everything and keeps what it was sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Recorder

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.seen.append(
                {"method": self.command, "path": self.path, "headers": dict(self.headers),
                 "body": body.decode("utf-8", "replace")}
            )  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    do_GET = do_POST = do_PUT = do_DELETE = _record

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    server = _Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _no_secrets(seen: list[dict[str, Any]], sb: SandboxThread) -> None:
    """No request carries the key, in any header or body, or a stem's (signed) link."""
    for request in seen:
        text = yaml.safe_dump(request)
        assert sb.api_key not in text
        assert "x-api-key" not in {name.lower() for name in request["headers"]}
        assert sb.base_url not in text and "/download" not in text, request


def test_pushes_and_pings_of_a_run_that_succeeds(
    tmp_path: Path, sandbox_thread: SandboxThread, recorder: _Recorder
) -> None:
    """Start ping first, then a push with the running marker; at the end a push that
    replaces the group (with the last success), then the success ping with the summary."""
    path = write_manifest(tmp_path, "  - {file: song.wav, mode: two}\n")
    code, out, err = run_cli(
        sandbox_thread, path,
        "--healthcheck-url", f"{recorder.url}/ping/check-uuid?rid=7",
        "--pushgateway", recorder.url,
    )  # fmt: skip
    assert code == 0, err
    seen = recorder.seen
    assert [(r["method"], r["path"]) for r in seen] == [
        ("POST", "/ping/check-uuid/start?rid=7"),
        ("POST", "/metrics/job/batchpod/manifest/jobs.yaml"),
        ("PUT", "/metrics/job/batchpod/manifest/jobs.yaml"),
        ("POST", "/ping/check-uuid?rid=7"),
    ]
    start, end = _samples(seen[1]["body"]), _samples(seen[2]["body"])
    assert start["batchpod_running", frozenset()] == 1
    assert ("batchpod_last_success_timestamp_seconds", frozenset()) not in start
    assert end["batchpod_running", frozenset()] == 0
    assert end["batchpod_exit_code", frozenset()] == 0
    assert end["batchpod_last_success_timestamp_seconds", frozenset()] > 0
    assert _by(end, "batchpod_jobs", "status") == {"succeeded": 1}
    assert seen[3]["body"] == out  # the summary line, as the run printed it
    assert out.startswith("done: 1 succeeded") and "spent $" in out
    _no_secrets(seen, sandbox_thread)


def test_pushes_and_pings_of_a_run_with_failures(tmp_path: Path, recorder: _Recorder) -> None:
    """A run whose jobs fail pings URL/fail with its exit code and summary; its pushes
    only add (POST), so the gateway keeps the last success it had."""
    path = write_manifest(tmp_path, _urls(2))
    with SandboxThread(dataclasses.replace(FAST, failure_rate=1.0)) as sb:
        code, out, _ = run_cli(
            sb, path, "--healthcheck-url", f"{recorder.url}/hc/abc", "--pushgateway", recorder.url
        )
        assert code == 1
        seen = recorder.seen
        assert [(r["method"], r["path"]) for r in seen] == [
            ("POST", "/hc/abc/start"),
            ("POST", "/metrics/job/batchpod/manifest/jobs.yaml"),
            ("POST", "/metrics/job/batchpod/manifest/jobs.yaml"),
            ("POST", "/hc/abc/fail"),
        ]
        end = _samples(seen[2]["body"])
        assert end["batchpod_exit_code", frozenset()] == 1
        assert _by(end, "batchpod_jobs", "status") == {"failed": 2}
        assert ("batchpod_last_success_timestamp_seconds", frozenset()) not in end
        assert seen[3]["body"] == f"exit code 1\n{out}"
        assert "2 failed" in out
        _no_secrets(seen, sb)


def test_a_run_stopped_by_its_manifest_pings_fail_with_exit_2(
    tmp_path: Path, sandbox_thread: SandboxThread, recorder: _Recorder
) -> None:
    """Even a run that never started its jobs (its manifest has a problem) ends its
    check: a start ping, then a fail ping with exit code 2 and the problem."""
    path = tmp_path / "jobs.yaml"
    path.write_text("version: 1\njobs:\n  - {url: 'ftp://nowhere/x.mp3'}\n", encoding="utf-8")
    code, _, err = run_cli(sandbox_thread, path, "--healthcheck-url", f"{recorder.url}/hc")
    assert code == 2, err
    paths = [r["path"] for r in recorder.seen]
    assert paths == ["/hc/start", "/hc/fail"]
    body = recorder.seen[1]["body"]
    assert body.startswith("exit code 2\nbatchpod: ") and "jobs.yaml" in body


def test_dead_ping_server_and_gateway_change_nothing(
    tmp_path: Path, sandbox_thread: SandboxThread
) -> None:
    """Nobody listening for the pings and the pushes: the run ends as it would have, with
    one warning each for the pings and the pushes, naming the host but not the check."""
    with _Recorder() as closed:  # a port that was free a moment ago: connections refused
        dead = closed.url
    path = write_manifest(tmp_path, "  - {file: song.wav, mode: two}\n")
    code, out, err = run_cli(
        sandbox_thread, path, "--healthcheck-url", f"{dead}/secret-check",
        "--pushgateway", dead, "--metrics-file", str(tmp_path / "m.prom"),
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("done: 1 succeeded")
    assert results_of(path)["run"]["counts"]["succeeded"] == 1
    warnings = [line for line in err.splitlines() if "ping" in line or "Pushgateway" in line]
    assert len(warnings) == 2, err
    assert all("127.0.0.1" in line and "secret-check" not in line for line in warnings)
    assert _samples((tmp_path / "m.prom").read_text())["batchpod_exit_code", frozenset()] == 0


def test_ping_addresses_keep_the_query() -> None:
    pinger = Pinger("https://hc.example.com/ping/abc/?create=1")
    assert pinger.address("/start") == "https://hc.example.com/ping/abc/start?create=1"
    assert pinger.address("") == "https://hc.example.com/ping/abc?create=1"
    with pytest.raises(ValueError, match="not an http"):
        Pinger("ftp://hc.example.com/x")


def test_bad_ping_and_gateway_urls_are_usage_errors(
    tmp_path: Path, sandbox_thread: SandboxThread, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_manifest(tmp_path, "  - {file: song.wav, mode: two}\n")
    for flag in ("--healthcheck-url", "--pushgateway"):
        code, _, _ = run_cli(sandbox_thread, path, flag, "hc.example.com/x")
        assert code == 2
        err = capsys.readouterr().err  # argparse writes its usage errors to sys.stderr
        assert f"{flag}: 'hc.example.com/x' is not an http:// or https:// URL" in err
        assert "Traceback" not in err
