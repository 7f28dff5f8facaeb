"""Stems to a bucket: ``output_dir: s3://...`` against a real S3 protocol server on loopback
(moto's server mode, ``tests/s3.py``), through a proxy that fails part uploads and holds
them, with a kill in the middle; and the checks of bucket URLs and endpoints."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import pytest
from conftest import FAST, results_of, run_cli, write_manifest
from s3 import SECRET_KEY, FaultProxy, Lister, S3Server, environment

from batchpod.cli import main
from batchpod.client import ApiClient
from batchpod.models import ObjectUrl
from batchpod.retry import RetryPolicy
from batchpod.sandbox import SandboxThread
from batchpod.storage import ObjectShelf, StorageError

BUCKET = "stems"
STEM_BYTES = 300_000  # 16 kHz mono 16-bit: whole frames, so served as 44 + 300,000 bytes
SERVED_SIZE = 44 + STEM_BYTES
PART = "128K"  # so each stem goes up in three parts (moto takes parts from 64 KiB)
SETTINGS = dataclasses.replace(FAST, stem_bytes=STEM_BYTES)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    try:
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        server.close()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in environment().items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


def _jobs(n: int) -> str:
    return "".join(
        f"  - {{url: 'https://cdn.example.com/song-{i:02}.mp3', mode: two}}\n" for i in range(n)
    )


def _served(sb: SandboxThread, remote_id: str) -> dict[str, bytes]:
    """Each stem of AudioPod job ``remote_id`` as the sandbox serves it, fetched afresh."""

    async def fetch() -> dict[str, bytes]:
        async with ApiClient(base_url=sb.base_url, api_key=sb.api_key) as api:
            job = await api.status(remote_id)
            found = {}
            for stem, url in job.download_urls.items():
                dest = Path(os.environ["BATCHPOD_TEST_TMP"]) / f"{remote_id}-{stem}.wav"
                await api.download(url, dest)
                found[stem] = dest.read_bytes()
                dest.unlink()
            return found

    return anyio.run(fetch)


def _objects(client: Any, prefix: str) -> dict[str, int]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


def test_fifty_jobs_to_s3_with_failing_parts_and_a_kill_mid_upload(
    tmp_path: Path, s3: S3Server, aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 two-stem jobs to s3:// through a proxy that answers 503 to the first attempt of
    every third stem's second part and holds every part a while; SIGKILL once 30 stems are
    stored and uploads are in flight. The re-run finishes: every stem is there with the bytes
    the sandbox served, no object was ever seen partial or torn by a lister reading the
    bucket all along, no song was submitted twice, and the store never saw the AudioPod key."""
    prefix = "catalogue/night-1"
    path = write_manifest(tmp_path, _jobs(50), output_dir=f"s3://{BUCKET}/{prefix}", concurrency=10)
    client = s3.client()
    records_seen: dict[str, str | None] = {}

    def whole(key: str, size: int) -> str | None:
        if not key.startswith(prefix + "/"):
            return None
        inner = key[len(prefix) + 1 :]
        if inner.startswith(".batchpod/probe-"):
            return None  # the pre-flight's empty probe, deleted again at once
        if inner.startswith(".batchpod/done/"):
            if key not in records_seen:
                body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                try:
                    json.loads(body)
                    records_seen[key] = None
                except ValueError:
                    records_seen[key] = f"{key}: a torn record ({len(body)} bytes)"
            return records_seen[key]
        return None if size == SERVED_SIZE else f"{key}: {size} bytes, not {SERVED_SIZE}"

    def third(key: str, part: int) -> bool:
        return part == 2 and sum(map(ord, key)) % 3 == 0

    lister = Lister(client, BUCKET, whole)
    with SandboxThread(SETTINGS) as sb:
        audiopod_key = sb.api_key
        proxy = FaultProxy(s3.url, secret=audiopod_key, fail=third, part_delay_s=0.1)
        staging = tmp_path / "tmp"
        staging.mkdir()
        monkeypatch.setenv("BATCHPOD_TEST_TMP", str(staging))
        try:
            args = ["--output-endpoint", proxy.url, "--upload-part-size", PART]
            env = dict(os.environ, AUDIOPOD_API_KEY=sb.api_key, TMPDIR=str(staging))
            argv = [sys.executable, "-m", "batchpod", "run", str(path), "--base-url", sb.base_url]
            proc = subprocess.Popen(
                [*argv, *args], env=env, cwd=tmp_path, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.poll() is None:
                stored = len(_objects(client, prefix + "/song"))
                if stored >= 30 and client.list_multipart_uploads(Bucket=BUCKET).get("Uploads"):
                    break
                time.sleep(0.02)
            assert proc.poll() is None, "the run ended before the kill"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            orphans = client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
            killed_at = len(_objects(client, prefix + "/song"))
            assert orphans, "the kill did not land during an upload"
            assert 30 <= killed_at < 100

            monkeypatch.setenv("TMPDIR", str(staging))
            code, out, err = run_cli(sb, path, *args)
            assert code == 0, err
            stats = sb.stats()
            jobs = results_of(path)["jobs"]
            assert len(jobs) == 50 and {j["status"] for j in jobs} == {"succeeded"}
            assert stats["jobs"]["created"] == 50  # no song was submitted twice
            assert sum(stats["submissions"].values()) == 50
            kept = _objects(client, prefix + "/")
            for job in jobs:
                served = _served(sb, job["remote_id"])
                assert sorted(f["stem"] for f in job["files"]) == sorted(served)
                for entry in job["files"]:
                    url = entry["path"]
                    assert url == f"s3://{BUCKET}/{prefix}/{job['name']}/{entry['stem']}.wav"
                    key = url.removeprefix(f"s3://{BUCKET}/")
                    body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                    assert body == served[entry["stem"]], key
                    assert entry["size"] == kept[key] == SERVED_SIZE
            records = [k for k in kept if "/.batchpod/done/" in k]
            assert len(records) == 50
            assert not [k for k in kept if "/.batchpod/probe-" in k]
        finally:
            lister.close()
            proxy.close()
    assert lister.rounds > 10 and lister.objects_seen > 100, (lister.rounds, lister.objects_seen)
    assert lister.problems == []
    assert proxy.seen.faults > 0 and proxy.seen.part_puts > 300  # 100 stems of 3 parts, and more
    assert proxy.seen.secret_hits == []  # the AudioPod key never went to the store
    # The re-run removed its staging folder; the killed run's is what a kill leaves behind.
    assert len(list(staging.glob("batchpod-stems-*"))) <= 1
    leftovers = [p for p in staging.rglob("*") if p.is_file()]
    assert all(".part" in p.name or p.suffix == ".wav" for p in leftovers)
    for text in (out, err, path.with_name("jobs.results.yaml").read_text()):
        assert SECRET_KEY not in text and audiopod_key not in text


def test_a_bucket_pays_once_whatever_the_state_and_keeps_flac(
    tmp_path: Path, s3: S3Server, aws: None
) -> None:
    """FLAC stems to a bucket; a re-run is 'already done'; with the state file gone, the done
    records in the bucket tell the run that every job is finished: nothing is paid again.
    --delete-remote deletes each job once its stems are stored."""
    prefix = "flac"
    path = write_manifest(
        tmp_path,
        _jobs(4),
        output_dir=f"s3://{BUCKET}/{prefix}",
        output_format="flac",
    )
    with SandboxThread(SETTINGS) as sb:
        args = ["--output-endpoint", s3.url, "--delete-remote"]
        code, _, err = run_cli(sb, path, *args)
        assert code == 0, err
        first = results_of(path)["jobs"]
        assert {j["status"] for j in first} == {"succeeded"}
        assert all(j.get("deleted_remote") for j in first)
        paths = [f["path"] for j in first for f in j["files"]]
        assert all(p.startswith(f"s3://{BUCKET}/{prefix}/") and p.endswith(".flac") for p in paths)
        assert all(f["format"].startswith("flac") for j in first for f in j["files"])

        code, _, err = run_cli(sb, path, *args)
        assert code == 0, err
        assert sb.stats()["jobs"]["created"] == 4
        assert {j["status"] for j in results_of(path)["jobs"]} == {"succeeded"}

        path.with_name("jobs.batchpod.db").unlink()
        code, _, err = run_cli(sb, path, "--output-endpoint", s3.url)
        assert code == 0, err
        again = results_of(path)["jobs"]
        assert {j.get("reason") for j in again} == {"already in output_dir"}
        assert sb.stats()["jobs"]["created"] == 4  # nothing paid again

        # An object uploaded again with the same bytes in another way (one part of a
        # multipart upload: another ETag) is still the stem: its SHA-256 is read back.
        client = s3.client()
        key = paths[1].removeprefix(f"s3://{BUCKET}/")
        same = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        before = client.head_object(Bucket=BUCKET, Key=key)["ETag"]
        upload = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        part = client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=same)
        client.complete_multipart_upload(
            Bucket=BUCKET,
            Key=key,
            UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
        )
        assert client.head_object(Bucket=BUCKET, Key=key)["ETag"] != before
        path.with_name("jobs.batchpod.db").unlink()
        code, _, err = run_cli(sb, path, "--output-endpoint", s3.url)
        assert code == 0, err
        assert {j.get("reason") for j in results_of(path)["jobs"]} == {"already in output_dir"}

        # An object changed behind batchpod's back, even to the same size, is not trusted:
        # the job is not done.
        key = paths[0].removeprefix(f"s3://{BUCKET}/")
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        client.put_object(Bucket=BUCKET, Key=key, Body=bytes([body[0] ^ 1]) + body[1:])
        path.with_name("jobs.batchpod.db").unlink()
        code, _out, err = run_cli(sb, path, "--output-endpoint", s3.url)
        changed = [
            j for j in results_of(path)["jobs"] if j.get("reason") != "already in output_dir"
        ]
        assert len(changed) == 1
        # Its AudioPod job was deleted (--delete-remote), so it cannot be fetched again free.
        assert changed[0]["status"] == "failed"
        assert sb.stats()["jobs"]["created"] == 4


def test_an_upload_that_keeps_failing_is_aborted_and_leaves_nothing(
    tmp_path: Path, s3: S3Server, aws: None
) -> None:
    """A part the store refuses past every retry: the upload is aborted (no multipart upload
    left behind), no object appears, the staged file stays for a re-run, and the error is one
    line naming the object."""
    proxy = FaultProxy(s3.url, secret="-", fail=lambda key, part: part == 2, every_attempt=True)
    try:
        root = ObjectUrl.parse(f"s3://{BUCKET}/aborted")
        retry = RetryPolicy(
            max_attempts=3, max_total_s=5, base_s=0.01, max_backoff_s=0.05, max_retry_after_s=1
        )
        shelf = ObjectShelf(root, endpoint=proxy.url, retry=retry, part_bytes=128 * 1024)
        relative = PurePosixPath("song/vocals.wav")
        staged = shelf.place(relative)
        staged.write_bytes(os.urandom(400_000))
        with pytest.raises(StorageError) as caught:
            shelf.keep("vocals", staged, relative, 400_000)
        message = str(caught.value)
        assert message.startswith(f"cannot store {root}/song/vocals.wav: ") and "\n" not in message
        assert "503" in message
        client = s3.client()
        assert (
            client.list_multipart_uploads(Bucket=BUCKET, Prefix="aborted/").get("Uploads") is None
        )
        assert _objects(client, "aborted/") == {}
        assert proxy.seen.faults == 3  # the part was tried as often as the policy allows
        assert staged.exists()
        shelf.close()
        assert not staged.exists()
    finally:
        proxy.close()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("s3://", "is not a bucket name"),
        ("s3://B", "is not a bucket name"),
        ("s3://stems/a/../b", "plain names between slashes"),
        ("s3://key:secret@stems/x", "credentials and ports do not go in the URL"),
        ("ftp://stems/x", "must be a folder path"),
        ("s3://stems/x?versionId=1", "no query or fragment"),
    ],
)
def test_a_bad_bucket_url_is_one_line_with_its_place(
    tmp_path: Path, value: str, message: str
) -> None:
    path = write_manifest(tmp_path, _jobs(1), output_dir=f"'{value}'")
    (code, _), err = _capture(["validate", str(path)])
    assert code == 2
    lines = err.strip().splitlines()
    assert lines and lines[0].startswith(f"{path}:2:"), err
    assert message in err or (message == "must be a folder path" and "use s3://" in err), err
    assert "Traceback" not in err


def _capture(argv: list[str]) -> tuple[tuple[int, str], str]:
    import io

    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdout=out, stderr=err)
    return (code, out.getvalue()), err.getvalue()


def test_endpoints_http_only_to_loopback_and_a_missing_bucket_before_any_charge(
    tmp_path: Path,
    s3: S3Server,
    aws: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_manifest(tmp_path, _jobs(2), output_dir=f"s3://{BUCKET}/x")
    with SandboxThread(SETTINGS) as sb:
        code, _, _ = run_cli(sb, path, "--output-endpoint", "http://storage.example.com")
        usage = capsys.readouterr().err  # argparse's own usage error
        assert code == 2 and "plain http only to this machine" in usage, usage

        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.0.0.5:9000")
        code, _, err = run_cli(sb, path)
        assert code == 2 and "$AWS_ENDPOINT_URL: plain http only" in err, err
        monkeypatch.delenv("AWS_ENDPOINT_URL")

        missing = write_manifest(tmp_path, _jobs(2), output_dir="s3://no-such-bucket/x")
        code, _, err = run_cli(sb, missing, "--output-endpoint", s3.url)
        assert code == 74, err  # the I/O error code: nothing could be written
        assert (
            len(err.strip().splitlines()) == 1
            and "cannot write stems to s3://no-such-bucket/x" in err
        )
        assert "Traceback" not in err and SECRET_KEY not in err
        assert sb.stats()["jobs"]["created"] == 0  # refused before anything was paid


def test_cleanup_checks_the_stems_in_the_bucket(tmp_path: Path, s3: S3Server, aws: None) -> None:
    """``cleanup`` of a manifest whose stems went to a bucket: a job whose object is gone is
    kept; the others are deleted at AudioPod."""
    prefix = "cleanup"
    path = write_manifest(tmp_path, _jobs(3), output_dir=f"s3://{BUCKET}/{prefix}")
    with SandboxThread(SETTINGS) as sb:
        code, _, err = run_cli(sb, path, "--output-endpoint", s3.url)
        assert code == 0, err
        jobs = results_of(path)["jobs"]
        lost = jobs[1]["files"][0]["path"].removeprefix(f"s3://{BUCKET}/")
        s3.client().delete_object(Bucket=BUCKET, Key=lost)
        argv = ["cleanup", str(path), "--yes", "--base-url", sb.base_url]
        argv += ["--output-endpoint", s3.url]
        os.environ["AUDIOPOD_API_KEY"] = sb.api_key
        try:
            (code, out), err = _capture(argv)
        finally:
            del os.environ["AUDIOPOD_API_KEY"]
        assert code == 0, err
        deleted = sorted(
            line.split(": ")[1] for line in out.splitlines() if line.startswith("deleted: ")
        )
        assert deleted == sorted([jobs[0]["name"], jobs[2]["name"]]), out
        assert f"kept {jobs[1]['name']}" in err
        assert sb.stats()["jobs"]["deleted"] == 2


def test_a_store_that_will_not_list_stops_the_run_before_it_pays_again(
    tmp_path: Path, s3: S3Server, aws: None
) -> None:
    """A bucket policy that lets a run write but not list: with the state gone, reading the
    done records fails, and that is an error (exit 74, one line, nothing submitted), never
    taken for "nothing stored yet", which would pay for every song again."""
    path = write_manifest(tmp_path, _jobs(3), output_dir=f"s3://{BUCKET}/listless")
    with SandboxThread(SETTINGS) as sb:
        code, _, err = run_cli(sb, path, "--output-endpoint", s3.url)
        assert code == 0, err
        path.with_name("jobs.batchpod.db").unlink()
        proxy = FaultProxy(s3.url, secret=sb.api_key, refuse=lambda m, p, q: "list-type" in q)
        try:
            code, _, err = run_cli(sb, path, "--output-endpoint", proxy.url)
            assert code == 74, err
            lines = err.strip().splitlines()
            assert len(lines) == 1 and "AccessDenied" in lines[0], err
            assert "Traceback" not in err
            # With --no-download (no pre-flight probe), the records cannot be read either.
            code, _, err = run_cli(sb, path, "--output-endpoint", proxy.url, "--no-download")
            assert code == 74 and "AccessDenied" in err and "Traceback" not in err, err
        finally:
            proxy.close()
        assert proxy.seen.refused >= 2
        assert sb.stats()["jobs"]["created"] == 3  # nothing paid again


def test_settings_a_store_refuses_and_urls_with_credentials_are_one_clean_line(
    tmp_path: Path, aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    with SandboxThread(SETTINGS) as sb:
        path = write_manifest(tmp_path, _jobs(1), output_dir="az://stems/x")
        for extra in ([], ["--no-download"]):
            code, _, err = run_cli(sb, path, *extra)
            assert code == 74, err
            assert err.strip() == (
                "batchpod: error: cannot write stems to az://stems/x: "
                "Generic MicrosoftAzure error: Account must be specified"
            )
        # An AWS endpoint variable is for s3:// only: it changes nothing for gs:// or az://.
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.0.0.5:9000")
        code, _, err = run_cli(sb, path)
        assert code == 74 and "Account must be specified" in err, err
        # --output-endpoint with gs:// or az:// is a usage mistake, not an I/O failure.
        code, _, err = run_cli(sb, path, "--output-endpoint", "https://minio.example.com")
        assert code == 2 and "--output-endpoint is for s3://" in err, err
        assert sb.stats()["jobs"]["created"] == 0

    secret = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"
    bad = write_manifest(tmp_path, _jobs(1), output_dir=f"'s3://AKIAEXAMPLE:{secret}@stems/x'")
    (code, _), err = _capture(["validate", str(bad)])
    assert code == 2 and "not a bucket URL" in err and secret not in err, err
    (code, _), err = _capture(["run", str(bad), "--output-dir", f"s3://AKIA:{secret}@stems/x"])
    usage = capsys.readouterr().err
    assert code == 2 and "not a folder or bucket URL" in usage and secret not in usage
    (code, _), err = _capture(["run", str(bad), "--output-dir", "S3://stems/x"])
    assert code == 2 and "use s3://" in capsys.readouterr().err
