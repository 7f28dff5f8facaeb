"""Operations: shards run side by side and merged, JSON logs, --quiet, the Python API.

Shard runs are real ``batchpod`` processes against one sandbox on loopback; the merged results
are compared with a single unsharded run of the same manifest.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from conftest import FAST, results_of, run_cli, write_manifest
from test_examples import ALL_EXAMPLES, _batchpod_args

import batchpod
from batchpod.cli import build_parser, main
from batchpod.identity import content_key as job_key
from batchpod.manifest import load_manifest
from batchpod.paths import shard_path
from batchpod.sandbox import SandboxThread, serve
from batchpod.shards import Shard

pytestmark = pytest.mark.usefixtures("clean_env")

SHARDS = 4


def _url_jobs(count: int) -> str:
    modes = ("two", "four", "six")
    return "".join(
        f"  - url: https://media.example.com/s/{i:04d}.mp3?duration={60 + i}\n"
        f"    mode: {modes[i % 3]}\n"
        for i in range(count)
    )


def _comparable(entry: dict[str, Any]) -> dict[str, Any]:
    """A results entry without what differs from one run to another (ids, times, links)."""
    volatile = {
        "remote_id", "submitted_at", "completed_at", "finished_at", "download_urls",
        "quality_scores",
    }  # fmt: skip
    return {k: v for k, v in entry.items() if k not in volatile}


def test_shard_is_index_over_count() -> None:
    """I/N parses with I from 0; the shard's files carry its name after the manifest's stem."""
    assert Shard.parse(" 3 / 8 ") == Shard(3, 8)
    for bad in ("8/8", "-1/4", "1/0", "x/4", "4", "1/2/3"):
        with pytest.raises(ValueError):
            Shard.parse(bad)
    stem = "jobs.v2"  # the manifest is jobs.v2.yaml
    assert shard_path(Path("/a/jobs.v2.results.yaml"), Shard(3, 8), stem=stem) == Path(
        "/a/jobs.v2.shard-3-of-8.results.yaml"
    )
    assert shard_path(Path("/a/jobs.v2.batchpod.db"), None, stem=stem) == Path(
        "/a/jobs.v2.batchpod.db"
    )


def test_the_split_is_every_job_once_and_fixed_by_content(tmp_path: Path) -> None:
    """Every job falls in exactly one shard, by its content key alone (a known split)."""
    manifest = load_manifest(write_manifest(tmp_path, _url_jobs(200)))
    keys = [job_key(job) for job in manifest.jobs]
    owners = [[i for i in range(SHARDS) if Shard(i, SHARDS).owns(key)] for key in keys]
    assert all(len(owner) == 1 for owner in owners)
    sizes = Counter(owner[0] for owner in owners)
    assert sorted(sizes) == [0, 1, 2, 3] and min(sizes.values()) >= 30
    # The key is SHA-256 of canonical JSON: the same on every machine and Python version.
    assert keys[0] == job_key(manifest.jobs[0]) and len(keys[0]) == 32
    assert int(keys[0], 16) % SHARDS == owners[0][0]


@pytest.fixture
def rich_sandbox() -> Iterator[SandboxThread]:
    """A FAST sandbox whose wallet pays for two runs of 200 jobs."""
    with SandboxThread(dataclasses.replace(FAST, balance_cents=1_000_000)) as sb:
        yield sb


def test_four_shard_processes_do_every_job_once_and_merge_to_one_run(
    tmp_path: Path, rich_sandbox: SandboxThread
) -> None:
    """4 shard processes at once against one sandbox: each job submitted exactly once, and
    the merged results equal a single unsharded run's, job for job."""
    sandbox_thread = rich_sandbox
    sharded, single = tmp_path / "sharded", tmp_path / "single"
    sharded.mkdir()
    single.mkdir()
    body = _url_jobs(200)
    path = write_manifest(sharded, body, concurrency=16)
    env = dict(os.environ, AUDIOPOD_API_KEY=sandbox_thread.api_key)
    command = [sys.executable, "-m", "batchpod", "run", str(path), "--quiet", "--no-download"]
    command += ["--base-url", sandbox_thread.base_url]
    procs = [
        subprocess.Popen(
            [*command, "--shard", f"{i}/{SHARDS}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(SHARDS)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * SHARDS, outputs
    assert outputs == [("", "")] * SHARDS  # --quiet: nothing when all is well

    # The sandbox's own record: 200 jobs, one per song, none twice.
    inputs = Counter(job.source for job in sandbox_thread.handle.state.jobs.values())
    assert len(inputs) == 200 and set(inputs.values()) == {1}
    shard_files = sorted(sharded.glob("jobs.shard-*-of-4.results.yaml"))
    assert len(shard_files) == SHARDS
    assert sorted(sharded.glob("jobs.shard-*-of-4.batchpod.db")) != []
    sizes = [len(yaml.safe_load(f.read_text())["jobs"]) for f in shard_files]
    assert sum(sizes) == 200 and min(sizes) > 0

    out = io.StringIO()
    assert main(["status", str(path), "--shard", "2/4"], stdout=out) == 0
    assert out.getvalue() == f"jobs.yaml shard 2/4: {sizes[2]} jobs: {sizes[2]} completed\n"
    out = io.StringIO()
    code = main(["merge", *map(str, shard_files)], stdout=out, stderr=io.StringIO())
    assert code == 0, out.getvalue()
    merged = results_of(path)

    single_path = write_manifest(single, body, concurrency=16)
    code, _, err = run_cli(sandbox_thread, single_path, "--quiet", "--no-download")
    assert code == 0, err
    alone = results_of(single_path)
    assert [_comparable(e) for e in merged["jobs"]] == [_comparable(e) for e in alone["jobs"]]
    for field in ("counts", "spent_cents", "estimated_cents", "exit_code", "manifest_sha256"):
        assert merged["run"][field] == alone["run"][field], field
    assert merged["run"]["shards"] == SHARDS and "missing" not in merged["run"]


def test_merge_reports_a_missing_shard_and_its_jobs(
    tmp_path: Path, sandbox_thread: SandboxThread
) -> None:
    """A shard that never ran: merge writes what it has, names the shard and every job it
    lacks, and exits 1."""
    path = write_manifest(tmp_path, _url_jobs(12))
    for index in (0, 2):
        code, _, err = run_cli(sandbox_thread, path, "--shard", f"{index}/3", "--no-download")
        assert code == 0, err
    files = [tmp_path / f"jobs.shard-{i}-of-3.results.yaml" for i in (0, 2)]
    out, err_stream = io.StringIO(), io.StringIO()
    code = main(
        ["merge", *map(str, files), "-o", str(tmp_path / "all.yaml")], stdout=out, stderr=err_stream
    )
    manifest = load_manifest(path)
    lacking = [j.name for j in manifest.jobs if Shard(1, 3).owns(job_key(j))]
    assert code == 1 and lacking
    lines = err_stream.getvalue().splitlines()
    assert lines[0] == "batchpod: shard 1 has no results file here"
    assert lines[1:] == [f"batchpod: job {name!r} is in no shard's results" for name in lacking]
    merged = yaml.safe_load((tmp_path / "all.yaml").read_text())
    assert merged["run"]["missing"] == lacking
    assert [e["name"] for e in merged["jobs"]] == [
        j.name for j in manifest.jobs if j.name not in lacking
    ]
    # Files of two different runs of the same shard do not merge.
    code = main(["merge", str(files[0]), str(files[0])], stdout=out, stderr=err_stream)
    assert code == 2 and "are both shard 0" in err_stream.getvalue().splitlines()[-1]


def test_json_log_lines_parse_and_carry_the_documented_fields(
    tmp_path: Path, sandbox_thread: SandboxThread
) -> None:
    """--log-format json: every stderr line is one JSON event; the run's story is in them."""
    path = write_manifest(
        tmp_path,
        """\
          - file: song.wav
            mode: four
          - url: https://media.example.com/a.mp3?duration=60
            mode: two
        """,
    )
    code, out, err = run_cli(sandbox_thread, path, "--log-format", "json")
    assert code == 0, err
    events = [json.loads(line) for line in err.splitlines()]
    assert events and all({"ts", "level", "event", "message"} <= e.keys() for e in events)
    assert all(e["ts"].endswith("Z") for e in events)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    started, finished = events[0], events[-1]
    assert started["jobs"] == 2 and started["shard"] is None and started["download"] is True
    assert finished["exit_code"] == 0 and finished["counts"]["succeeded"] == 2
    assert finished["spent_cents"] > 0 and finished["results"].endswith("jobs.results.yaml")
    done = [e for e in events if e["event"] == "job_finished"]
    assert sorted(e["job"] for e in done) == ["a", "song"]
    assert all(e["status"] == "succeeded" and e["remote_id"] and e["files"] for e in done)
    transitions = {(e["job"], e["transition"]) for e in events if e["event"] == "job"}
    assert {("song", "submitting"), ("song", "submitted"), ("a", "separated")} <= transitions
    assert sandbox_thread.api_key not in err
    assert out.startswith("done: 2 succeeded")


def test_json_log_records_retries_and_a_budget_stop(tmp_path: Path) -> None:
    """Retries (a 429 storm) and a budget stop are events of their own in the JSON log,
    which --log-file appends to a file while stderr keeps only the problems."""
    settings = dataclasses.replace(FAST, rate_429=0.4, retry_after_s=0)
    jobs = _url_jobs(12).replace("    mode:", "    duration: 60\n    mode:")  # 10 cents each
    path = write_manifest(tmp_path, jobs, budget="{max_spend_usd: 0.55}")
    log = tmp_path / "run.log"
    with SandboxThread(settings) as sb:
        code, _out, err = run_cli(sb, path, "--log-format", "json", "--log-file", str(log))
    assert code == 3, err
    assert "stopped early" in err and not err.lstrip().startswith("{")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(e["event"] == "retry" and e["cause"] == "429" for e in events)
    (stop,) = [e for e in events if e["event"] == "stop"]
    assert stop["reason"] == "budget" and stop["message"]
    assert events[-1]["event"] == "run_finished" and events[-1]["exit_code"] == 3
    assert log.stat().st_mode & 0o777 == 0o600


def test_quiet_prints_nothing_on_success_and_the_problems_otherwise(
    tmp_path: Path, sandbox_thread: SandboxThread
) -> None:
    """--quiet is silent when every job succeeded, and speaks up when one did not."""
    path = write_manifest(tmp_path, _url_jobs(3))
    assert run_cli(sandbox_thread, path, "--quiet") == (0, "", "")
    (tmp_path / "bad").mkdir()
    bad = write_manifest(
        tmp_path / "bad",
        "  - url: https://media.example.com/x.mp3?duration=60\n    mode: producer\n",
    )
    with SandboxThread(dataclasses.replace(FAST, plan="basic")) as basic:
        code, out, err = run_cli(basic, bad, "--quiet")
    assert code == 1
    assert out.startswith("done: 1 failed")
    assert "x: failed: PermissionDenied (HTTP 403)" in err


def test_a_json_error_before_the_run_is_one_json_line(tmp_path: Path) -> None:
    """A condition that stops the command (no key) is a JSON error event with its exit code."""
    path = write_manifest(tmp_path, _url_jobs(1))
    err = io.StringIO()
    code = main(["run", str(path), "--log-format", "json"], stdout=io.StringIO(), stderr=err)
    (line,) = err.getvalue().splitlines()
    event = json.loads(line)
    assert code == 4 and event["event"] == "error" and event["exit_code"] == 4
    assert "AUDIOPOD_API_KEY" in event["message"]


def test_python_api_runs_a_manifest_and_returns_every_result(
    tmp_path: Path, sandbox_thread: SandboxThread
) -> None:
    """run_manifest_sync: the summary with each job's result and the CLI's exit code."""
    path = write_manifest(tmp_path, _url_jobs(5))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("batchpod")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        summary = batchpod.run_manifest_sync(
            path,
            api_key=sandbox_thread.api_key,
            base_url=sandbox_thread.base_url,
            download=False,
            shard="1/2",
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    owned = [j.name for j in load_manifest(path).jobs if Shard(1, 2).owns(job_key(j))]
    assert summary.exit_code == 0
    finished = [
        r.batchpod_fields["job"]  # type: ignore[attr-defined]
        for r in records
        if getattr(r, "batchpod_event", None) == "job_finished"
    ]
    assert sorted(finished) == sorted(owned)  # progress reaches the logger by default
    assert [r.job.name for r in summary.results] == owned
    assert all(r.status.value == "completed" and r.remote_id for r in summary.results)
    assert summary.results_path == tmp_path / "jobs.shard-1-of-2.results.yaml"
    assert summary.results_path.exists()


@pytest.mark.anyio
async def test_python_api_is_async_and_raises_errors_not_exit_codes(tmp_path: Path) -> None:
    """run_manifest is a coroutine; a problem that stops it is a BatchpodError."""
    path = write_manifest(tmp_path, _url_jobs(2))
    with pytest.raises(batchpod.MissingApiKey):
        await batchpod.run_manifest(path)
    summary = await batchpod.run_manifest(path, sandbox=True, download=False)
    assert summary.exit_code == 0 and len(summary.results) == 2


def test_python_api_takes_the_path_by_name_and_a_fallback_key_as_given(
    tmp_path: Path, sandbox_thread: SandboxThread
) -> None:
    """run_manifest_sync(path=...) works as any keyword argument does; a fallback_key given
    directly is switched to when AudioPod refuses the first key, and the switch is recorded."""
    path = write_manifest(tmp_path, _url_jobs(2))
    summary = batchpod.run_manifest_sync(
        path=path,
        api_key="ap_not_a_key_of_this_account",
        fallback_key=sandbox_thread.api_key,
        base_url=sandbox_thread.base_url,
        download=False,
    )
    assert summary.exit_code == 0 and len(summary.results) == 2
    assert summary.key_switched_to == "the fallback key"


@pytest.mark.parametrize("example", ALL_EXAMPLES)
def test_every_scheduler_example_is_a_command_batchpod_accepts(example: str) -> None:
    """Each batchpod command line in the examples parses, and its shards cover 0..N-1 once."""
    parser = build_parser()
    shards = []
    for argv in _batchpod_args(example):
        args = parser.parse_args(argv[1:])
        if args.command == "run":
            shards.append(args.shard)
    assert shards
    count = shards[0].count
    assert sorted(s.index for s in shards) == list(range(count))
    assert {s.count for s in shards} == {count}


async def _two_shards_at_once(tmp_path: Path, *, scope: str) -> int:
    """Shards 0/2 and 1/2 of 40 ten-cent jobs, side by side, on one $3.00 wallet that must
    keep $2.00; the wallet's balance afterwards."""
    folder = tmp_path / scope
    folder.mkdir()
    jobs = "".join(  # each costs 10 cents, and is estimated at that
        f"  - url: https://media.example.com/w/{i}.mp3?duration=60\n    duration: 60\n"
        "    mode: two\n"
        for i in range(40)
    )
    path = write_manifest(folder, jobs, concurrency=1, budget="{keep_balance_usd: 2.00}")
    settings = dataclasses.replace(FAST, balance_cents=300)
    async with serve(settings) as sb:
        async with anyio.create_task_group() as tg:
            for index in range(2):
                tg.start_soon(
                    functools.partial(
                        batchpod.run_manifest,
                        path,
                        api_key=sb.api_key,
                        base_url=sb.base_url,
                        shard=f"{index}/2",
                        budget_scope=scope,  # type: ignore[arg-type]
                        download=False,
                    )
                )
        balance: int = sb.stats()["wallets"][sb.api_key]["balance_cents"]
        return balance


@pytest.mark.anyio
async def test_budget_scope_wallet_keeps_the_shared_balance_across_shards(tmp_path: Path) -> None:
    """Each shard alone keeps $2.00 of a $3.00 wallet, yet two at once spend both their
    $1.00: with --budget-scope wallet each reads the wallet before each job, and the pair
    stops at the floor (one job in flight per shard may pass it)."""
    shard_scope = await _two_shards_at_once(tmp_path, scope="shard")
    wallet_scope = await _two_shards_at_once(tmp_path, scope="wallet")
    assert shard_scope < 200 - 30  # the control: side by side, each spent its own $1.00
    assert wallet_scope >= 200 - 2 * 10  # at most one 10-cent job per shard past the floor


@pytest.mark.anyio
async def test_four_shards_at_once_share_one_max_spend(tmp_path: Path) -> None:
    """max_spend_usd is the whole manifest's: four shards side by side, under a $2.00 cap on
    $4.00 of work, are charged $2.00 at most between them, and each shard stops at its share
    (some jobs skipped for the budget); each results file records its share."""
    jobs = "".join(  # each costs 10 cents, and is estimated at that
        f"  - url: https://media.example.com/c/{i}.mp3?duration=60\n    duration: 60\n"
        "    mode: two\n"
        for i in range(40)
    )
    path = write_manifest(tmp_path, jobs, concurrency=2, budget="{max_spend_usd: 2.00}")
    async with serve(dataclasses.replace(FAST, balance_cents=10_000)) as sb:
        summaries: list[batchpod.RunSummary] = []

        async def shard(index: int) -> None:
            summary = await batchpod.run_manifest(
                path, api_key=sb.api_key, base_url=sb.base_url, shard=f"{index}/4", download=False
            )
            summaries.append(summary)

        async with anyio.create_task_group() as tg:
            for index in range(4):
                tg.start_soon(shard, index)
        wallet = sb.stats()["wallets"][sb.api_key]
    charged = wallet["spent_cents"] + wallet["reserved_cents"]
    assert 0 < charged <= 200
    assert sum(s.spent_cents for s in summaries) <= 200
    results = [r for s in summaries for r in s.results]
    assert len(results) == 40
    assert any(r.status.value == "skipped" and r.reason == "budget" for r in results)
    headers = [yaml.safe_load(s.results_path.read_text())["run"] for s in summaries]
    assert sum(h["max_spend_cents"] for h in headers) <= 200
    for h in headers:
        share = h["max_spend_share"]
        assert share["manifest_cap_cents"] == 200 and share["manifest_estimate_cents"] == 400
        assert h["max_spend_cents"] == 200 * share["shard_estimate_cents"] // 400


def test_merge_refuses_a_manifest_changed_since_the_shards_ran(
    tmp_path: Path, sandbox_thread: SandboxThread
) -> None:
    """A job removed from the manifest after the shards ran: merge refuses (exit 2) rather
    than drop that job's results."""
    path = write_manifest(tmp_path, _url_jobs(4))
    for index in (0, 1):
        code, _, err = run_cli(sandbox_thread, path, "--shard", f"{index}/2", "--no-download")
        assert code == 0, err
    write_manifest(tmp_path, _url_jobs(3))  # the last job is gone
    files = [str(tmp_path / f"jobs.shard-{i}-of-2.results.yaml") for i in (0, 1)]
    err = io.StringIO()
    code = main(["merge", *files], stdout=io.StringIO(), stderr=err)
    assert code == 2
    assert err.getvalue().strip() == (
        f"batchpod: error: {path} has changed since the shards ran: merge needs the manifest "
        "they ran (give that version with --manifest)"
    )
    assert not (tmp_path / "jobs.results.yaml").exists()


def test_shards_given_one_results_and_state_path_keep_files_of_their_own(
    tmp_path: Path, sandbox_thread: SandboxThread
) -> None:
    """--results and --state named by the user still get the shard's name: shards sharing
    one command line neither overwrite nor lock out each other."""
    path = write_manifest(tmp_path, _url_jobs(6))
    out = tmp_path / "out"
    out.mkdir()
    for index in (0, 1):
        code, _, err = run_cli(
            sandbox_thread, path, "--shard", f"{index}/2", "--no-download",
            "--results", str(out / "r.yaml"), "--state", str(out / "s.db"),
        )  # fmt: skip
        assert code == 0, err
    names = sorted(p.name for p in out.iterdir() if not p.name.endswith((".lock", "-wal", "-shm")))
    assert names == [
        "r.shard-0-of-2.yaml", "r.shard-1-of-2.yaml", "s.shard-0-of-2.db", "s.shard-1-of-2.db",
    ]  # fmt: skip
    jobs = [len(yaml.safe_load((out / n).read_text())["jobs"]) for n in names[:2]]
    assert sum(jobs) == 6


def test_the_cli_leaves_the_logger_as_it_found_it(
    tmp_path: Path, sandbox_thread: SandboxThread
) -> None:
    """An embedding application's logging is untouched by a CLI run in its process."""
    logger = logging.getLogger("batchpod")
    before = (logger.level, logger.propagate, list(logger.handlers))
    code, _, _ = run_cli(sandbox_thread, write_manifest(tmp_path, _url_jobs(1)), "--quiet")
    assert code == 0
    assert (logger.level, logger.propagate, list(logger.handlers)) == before
