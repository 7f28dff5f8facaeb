"""API keys from the command line: the pre-flight check of `run`, key rotation with a
fallback, and `batchpod key check|list|create|revoke`, against the sandbox over loopback."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import FAST, results_of, write_manifest

from batchpod.cli import main
from batchpod.sandbox import KeySpec, SandboxThread

pytestmark = pytest.mark.usefixtures("clean_env")

REVOKED = "ap_revoked_0000000000000000"
EXPIRED = "ap_expired_0000000000000000"
JOBS = """\
  - url: https://media.example.com/k/one.mp3?duration=60
    mode: two
  - url: https://media.example.com/k/two.mp3?duration=60
    mode: four
"""


def cli(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`batchpod ARGV` with `env` added to the environment: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        code = main(list(argv), stdout=out, stderr=err)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return code, out.getvalue(), err.getvalue()


def _submits(sb: SandboxThread) -> int:
    count: int = sb.stats()["requests"].get("POST /api/v1/stem-extraction/api/extract", 0)
    return count


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (REVOKED, "key revoked or expired: create a new key and put it in AUDIOPOD_API_KEY"),
        (EXPIRED, "key revoked or expired: create a new key and put it in AUDIOPOD_API_KEY"),
        ("ap_unknown_000000000000000", "invalid or missing key: check AUDIOPOD_API_KEY"),
    ],
    ids=["revoked", "expired", "unknown"],
)
def test_a_refused_key_stops_the_run_before_any_submission(
    tmp_path: Path, key: str, message: str
) -> None:
    """Revoked, expired or unknown: exit 4 at the pre-flight, the fix named, nothing sent."""
    settings = dataclasses.replace(
        FAST,
        extra_keys={
            REVOKED: KeySpec(status="revoked"),
            EXPIRED: KeySpec(status="expired"),
        },
    )
    path = write_manifest(tmp_path, JOBS)
    with SandboxThread(settings) as sb:
        code, out, err = cli(
            "run", str(path), "--base-url", sb.base_url, env={"AUDIOPOD_API_KEY": key}
        )
        assert _submits(sb) == 0
        assert sb.stats()["jobs"]["created"] == 0
    assert code == 4
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"batchpod: error: {message}")
    assert key not in err


def test_a_key_revoked_mid_run_hands_over_to_the_fallback(tmp_path: Path) -> None:
    """The key is revoked while the run goes on: the run switches to --fallback-key-env once,
    says so, records it, and finishes every job, none submitted twice."""
    jobs = "".join(
        f"  - url: https://media.example.com/r/{i}.mp3?duration=60\n    mode: two\n"
        for i in range(12)
    )
    path = write_manifest(tmp_path, jobs, concurrency=2)
    settings = dataclasses.replace(FAST, processing_s=(0.3, 0.5), balance_cents=100_000)
    with SandboxThread(settings) as sb:
        code, fallback, _ = cli(
            "key", "create", "next", "--base-url", sb.base_url,
            env={"AUDIOPOD_API_KEY": sb.api_key},
        )  # fmt: skip
        fallback = fallback.strip()
        assert code == 0 and fallback.startswith("ap_")
        key_id = next(
            k["id"]
            for k in _get_json(sb, "/api/v1/auth/api-keys", fallback)["api_keys"]
            if k["name"] == "default"
        )

        def revoke_after_two_submits() -> None:
            while _submits(sb) < 2:
                time.sleep(0.01)
            request = urllib.request.Request(
                f"{sb.base_url}/api/v1/auth/api-keys/{key_id}",
                method="DELETE",
                headers={"X-API-Key": fallback},
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 200

        revoker = threading.Thread(target=revoke_after_two_submits)
        revoker.start()
        code, out, err = cli(
            "run", str(path), "--base-url", sb.base_url, "--no-download",
            "--fallback-key-env", "AUDIOPOD_API_KEY_NEXT",
            env={"AUDIOPOD_API_KEY": sb.api_key, "AUDIOPOD_API_KEY_NEXT": fallback},
        )  # fmt: skip
        revoker.join(timeout=10)
        assert sb.stats()["jobs"]["created"] == 12  # each job once, on one key or the other
    assert code == 0, err
    assert out.startswith("done: 12 completed")
    switches = [line for line in err.splitlines() if "switched to" in line]
    assert switches == [
        "batchpod: AudioPod refused the key in AUDIOPOD_API_KEY: switched to the key in "
        "AUDIOPOD_API_KEY_NEXT for the rest of the run"
    ]
    results = results_of(path)
    assert results["run"]["key_switched_to"] == "AUDIOPOD_API_KEY_NEXT"
    assert {job["status"] for job in results["jobs"]} == {"completed"}
    assert fallback not in err and fallback not in path.with_name("jobs.results.yaml").read_text()


def _get_json(sb: SandboxThread, route: str, key: str) -> dict[str, list[dict[str, str]]]:
    request = urllib.request.Request(f"{sb.base_url}{route}", headers={"X-API-Key": key})
    with urllib.request.urlopen(request, timeout=10) as answer:
        data: dict[str, list[dict[str, str]]] = json.load(answer)
    return data


def test_create_check_revoke_check(tmp_path: Path, sandbox_thread: SandboxThread) -> None:
    """key create -> key check with the new key (from a key file) -> key revoke -> key check
    fails with the 403's message and exit 4."""
    sb = sandbox_thread
    env = {"AUDIOPOD_API_KEY": sb.api_key}
    url = ("--base-url", sb.base_url)
    code, key, err = cli("key", "create", "ci", "--expires-in-days", "30", *url, env=env)
    assert code == 0
    key = key.strip()
    assert key.startswith("ap_") and key not in err
    assert "this is the only time AudioPod shows this key" in err
    key_file = tmp_path / "ci.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)

    code, out, err = cli("key", "check", "--api-key-file", str(key_file), *url)
    assert (code, err) == (0, "")
    assert out.splitlines()[:2] == [
        f"key in key file {key_file}: accepted by AudioPod",
        "balance: $100.00",
    ]

    code, listing, _ = cli("key", "list", *url, env=env)
    assert code == 0 and key not in listing
    head, *rows = listing.splitlines()
    assert head.split() == ["ID", "NAME", "STATUS", "CREATED", "LAST", "USED", "EXPIRES"]
    (ci_row,) = [row for row in rows if row.split()[1] == "ci"]
    key_id = ci_row.split()[0]
    assert ci_row.split()[2] == "active"

    code, out, err = cli("key", "revoke", key_id, *url, env=env)  # stdin is not a terminal
    assert code == 2 and "needs confirmation: add --yes" in err
    code, out, err = cli("key", "revoke", key_id, "--yes", *url, env=env)
    assert code == 0 and out.startswith(f"revoked key {key_id} at ")

    code, out, err = cli("key", "check", "--api-key-file", str(key_file), *url)
    assert code == 4 and out == ""
    assert err.strip() == (
        f"batchpod: error: key revoked or expired: create a new key and put it in key file "
        f"{key_file} (AudioPod answered HTTP 403: API key has been revoked)"
    )
    code, out, err = cli("key", "revoke", "no-such-key", "--yes", *url, env=env)
    assert code == 2 and "no API key with id no-such-key" in err


def test_a_shared_key_file_is_refused_with_the_fix(tmp_path: Path) -> None:
    """A key file others may read is refused (exit 4) before anything is sent."""
    key_file = tmp_path / "key"
    key_file.write_text("ap_sandbox_0123456789abcdef\n")
    key_file.chmod(0o644)
    path = write_manifest(tmp_path, JOBS)
    code, out, err = cli("run", str(path), "--api-key-file", str(key_file))
    assert code == 4 and out == ""
    assert err.strip().endswith(f"chmod 600 {key_file}")
    assert "ap_sandbox" not in err
    code, _, err = cli("key", "check", "--api-key-file", str(key_file), "--api-key-env", "X")
    assert code == 2 and "not both" in err


def test_a_plan_gated_mode_fails_only_its_own_job(tmp_path: Path) -> None:
    """A Basic key: the producer job fails with the plan's 403; the other job succeeds, and
    the key is not reported as refused."""
    path = write_manifest(
        tmp_path,
        JOBS + "  - url: https://media.example.com/k/three.mp3?duration=60\n    mode: producer\n",
    )
    with SandboxThread(dataclasses.replace(FAST, plan="basic")) as sb:
        code, out, err = cli(
            "run", str(path), "--base-url", sb.base_url, env={"AUDIOPOD_API_KEY": sb.api_key}
        )
    assert code == 1
    assert out.startswith("done: 2 succeeded, 1 failed")
    statuses = {job["name"]: job["status"] for job in results_of(path)["jobs"]}
    assert statuses == {"one": "succeeded", "two": "succeeded", "three": "failed"}
    (failure,) = [line for line in err.splitlines() if "failed" in line]
    assert failure.startswith(
        "batchpod: three: failed: PermissionDenied (HTTP 403): this AudioPod plan"
    )
    assert "revoked" not in err and "invalid or missing key" not in err


@pytest.mark.parametrize(
    "argv", [["--fallback-key-env", "A=B"], ["--api-key-env", "A=B"], ["--api-key-env", ""]]
)
def test_a_variable_name_that_cannot_be_one_is_one_clear_line(
    tmp_path: Path, argv: list[str]
) -> None:
    """A name with '=' (or none at all) is refused before anything happens (exit 2)."""
    path = write_manifest(tmp_path, JOBS)
    code, out, err = cli("run", str(path), *argv, env={"AUDIOPOD_API_KEY": "ap_x_0000000000"})
    assert (code, out) == (2, "")
    (line,) = err.splitlines()
    assert line.startswith("batchpod: error: not an environment variable's name: ")


def test_a_fallback_is_not_needed_against_a_sandbox(tmp_path: Path) -> None:
    """--sandbox brings its own key: a fallback named beside it is simply not used."""
    path = write_manifest(tmp_path, JOBS)
    code, out, err = cli(
        "run", str(path), "--sandbox", "--no-download", "--fallback-key-env", "NEXT",
        env={"NEXT": "ap_next_000000000000000"},
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("done: 2 completed")
