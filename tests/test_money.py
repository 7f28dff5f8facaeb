"""The wallet during a run: another client spending from it is seen, and the floor holds."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from conftest import SandboxFactory

from batchpod.batch import BatchOptions, RunSummary, run_batch
from batchpod.client import ApiClient
from batchpod.manifest import load_manifest
from batchpod.models import Job, JobResult
from batchpod.runner import StopReason


class Quiet:
    def job_event(self, job: Job, event: str, detail: str = "") -> None:
        pass

    def job_finished(self, result: JobResult) -> None:
        pass

    def spent(self, cents: int) -> None:
        pass


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

        options = BatchOptions(
            api_key=sb.api_key,
            base_url=sb.base_url,
            download=False,
            handle_signals=False,
            balance_refresh_s=0.2,
        )
        summary: RunSummary | None = None

        async def ours() -> None:
            nonlocal summary
            summary = await run_batch(manifest, options, reporter=Quiet(), exit_code_of=lambda s: 0)

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
