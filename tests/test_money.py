"""The wallet during a run: another client spending from it is seen, and the floor holds."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from conftest import Quiet, SandboxFactory

from batchpod.cli import main
from batchpod.client import ApiClient
from batchpod.config import RunConfig
from batchpod.manifest import load_manifest
from batchpod.runner import StopReason
from batchpod.sandbox import SandboxSettings, SandboxThread
from batchpod.session import RunSummary, run_session


@pytest.mark.anyio
async def test_another_spender_on_the_wallet_is_seen(
    tmp_path: Path, sandbox_factory: SandboxFactory
) -> None:
    """A second client drains the shared wallet mid-run; the run reads the balance again,
    stops submitting before the wallet passes keep_balance_usd (by at most one job), and
    exits for the budget, where a run trusting its first read would have spent on."""
    body = "".join(
        f"  - {{url: 'https://cdn.example.com/{i}.mp3?duration=60', mode: two, duration: 60}}\n"
        for i in range(10)
    )
    path = tmp_path / "jobs.yaml"
    path.write_text("version: 1\nconcurrency: 1\nbudget: {keep_balance_usd: 5.00}\njobs:\n" + body)
    manifest = load_manifest(path)
    async with sandbox_factory(processing_s=0.3, balance_cents=1_000) as sb:

        async def other_client() -> None:
            await anyio.sleep(0.5)
            async with ApiClient(base_url=sb.base_url, api_key=sb.api_key) as api:
                # 48 minutes: $4.80 of the $10.00 wallet, spent by someone else.
                await api.submit_url(
                    "https://elsewhere.example/x.mp3?duration=2880", mode="two", stem=None
                )

        options = RunConfig(
            api_key=sb.api_key,
            base_url=sb.base_url,
            download=False,
            handle_signals=False,
            balance_refresh_s=0.2,
        )
        summary: RunSummary | None = None

        async def ours() -> None:
            nonlocal summary
            summary = await run_session(manifest, options, reporter=Quiet())

        async with anyio.create_task_group() as tg:
            tg.start_soon(other_client)
            tg.start_soon(ours)
        wallet = sb.stats()["wallets"][sb.api_key]
    assert summary is not None
    assert summary.stop is not None and summary.stop.reason is StopReason.BUDGET
    ours_submitted = sum(1 for r in summary.results if r.remote_id is not None)
    assert ours_submitted < 10
    # What is left: $10.00 - $4.80 - 10 c per job of ours; the floor is $5.00.
    assert wallet["balance_cents"] + wallet["reserved_cents"] >= 0
    assert 1_000 - 480 - 10 * ours_submitted >= 500 - 10


def _run(sb: SandboxThread, path: Path, *args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    os.environ["AUDIOPOD_API_KEY"] = sb.api_key
    try:
        code = main(["run", str(path), "--base-url", sb.base_url, *args], stdout=out, stderr=err)
    finally:
        os.environ.pop("AUDIOPOD_API_KEY")
    return code, err.getvalue()


def _jobs(path: Path) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = yaml.safe_load(path.with_name("jobs.results.yaml").read_text())[
        "jobs"
    ]
    return jobs


def _manifest(tmp_path: Path, count: int, seconds: int, **top: Any) -> Path:
    head = "".join(f"{key}: {value}\n" for key, value in top.items())
    body = "".join(
        f"  - {{url: 'https://cdn.example.com/{i}.mp3?duration={seconds}', mode: two, "
        f"duration: {seconds}}}\n"
        for i in range(count)
    )
    path = tmp_path / "jobs.yaml"
    path.write_text("version: 1\n" + head + "jobs:\n" + body)
    return path


def test_wallet_runs_out_then_a_top_up_lets_a_rerun_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wallet runs dry mid-run: the 402'd job and the rest are skipped (with the amounts),
    exit 3; after a top-up, the same command finishes the rest, paying each job once."""
    monkeypatch.delenv("AUDIOPOD_API_KEY", raising=False)
    path = _manifest(tmp_path, 4, 300, concurrency=3)  # 50 c each
    with SandboxThread(SandboxSettings(processing_s=0.5, balance_cents=120)) as sb:
        code, err = _run(sb, path, "--no-download")
        assert code == 3, err
        first = _jobs(path)
        # Jobs 1 and 2 were in flight when job 3 met the 402: they finished.
        assert [j["status"] for j in first] == ["completed", "completed", "skipped", "skipped"]
        assert first[2]["reason"] == "insufficient_balance"
        assert "needs $0.50, has $0.20" in first[2]["error"]["message"]
        assert first[3]["reason"] == "insufficient_balance"
        key = sb.api_key
        sb.call(lambda state: state.top_up(key, 500))
        code, err = _run(sb, path, "--no-download")
        created = sb.stats()["jobs"]["created"]
    assert code == 0, err
    assert created == 4
    again = _jobs(path)
    assert [j["status"] for j in again] == ["completed"] * 4
    assert again[0]["remote_id"] == first[0]["remote_id"]


def test_max_spend_holds_to_the_cent_with_50_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--max-spend below the manifest's cost, 50 jobs in flight at once: the charged total
    stays within the cap to the cent; a re-run with more budget does the rest."""
    monkeypatch.delenv("AUDIOPOD_API_KEY", raising=False)
    path = _manifest(tmp_path, 100, 60, concurrency=50)  # 10 c each, $10.00 in all
    with SandboxThread(SandboxSettings(processing_s=(0.2, 0.4), balance_cents=10_000)) as sb:
        code, err = _run(sb, path, "--no-download", "--max-spend", "2.55")
        charged = sum(e["cents"] for e in sb.stats()["wallet_events"] if e["kind"] == "charge")
        peak = sb.stats()["peak_active_by_key"][sb.api_key]
        assert code == 3, err
        assert charged <= 255
        assert charged == 250  # 25 jobs fit; the 26th would pass the cap
        assert peak >= 25
        code, err = _run(sb, path, "--no-download", "--max-spend", "10.00")
        stats = sb.stats()
    assert code == 0, err
    assert stats["jobs"]["created"] == 100
    total = sum(e["cents"] for e in stats["wallet_events"] if e["kind"] == "charge")
    assert total == 1_000


def test_estimate_of_the_example_matches_the_charges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the example manifest, each job of known length is charged exactly its estimate,
    and the job of unknown length no more than its worst case."""
    monkeypatch.delenv("AUDIOPOD_API_KEY", raising=False)
    root = Path(__file__).resolve().parent.parent
    shutil.copy(root / "jobs.example.yaml", tmp_path / "jobs.example.yaml")
    shutil.copytree(root / "examples" / "audio", tmp_path / "examples" / "audio")
    path = tmp_path / "jobs.example.yaml"
    out = io.StringIO()
    assert main(["estimate", str(path), "--sandbox"], stdout=out) == 0
    estimated = {
        line.split()[0]: (line.split()[2], int(line.split()[3].replace("$", "").replace(".", "")))
        for line in out.getvalue().splitlines()[1:7]
    }
    assert main(["run", str(path), "--sandbox", "--quiet"], stdout=io.StringIO()) == 0
    charged = {
        job["name"]: job["cost_cents"]
        for job in yaml.safe_load((tmp_path / "jobs.example.results.yaml").read_text())["jobs"]
    }
    assert set(charged) == set(estimated)
    for name, (length, cents) in estimated.items():
        if length == "?":
            assert charged[name] <= cents, name
        else:
            assert charged[name] == cents, name
