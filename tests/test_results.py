"""The results manifest: the incremental renderer writes exactly the document's data."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from conftest import Quiet, SandboxFactory, write_manifest
from hypothesis import given, settings
from hypothesis import strategies as st

import batchpod.results as results_module
from batchpod.config import RunConfig
from batchpod.manifest import load_manifest
from batchpod.models import ErrorRecord, JobResult, JobStatus, OutputFile
from batchpod.results import Format, Renderer, RunHeader, _entry_yaml, results_document
from batchpod.retry import RetryPolicy
from batchpod.session import run_session
from batchpod.spool import Spool

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_renderer_text_loads_to_the_document(fmt: Format) -> None:
    """Rendered twice (the second time from its cache, after a change), the text loads back
    to exactly what results_document builds, in both formats."""
    manifest = load_manifest(ROOT / "jobs.example.yaml")
    base = manifest.path.parent
    header = RunHeader(
        batchpod_version="0", manifest=manifest.path, manifest_sha256="x", base_url="u",
        sandbox=True, started_at=0.0,
    )  # fmt: skip
    results = [
        JobResult(job=job, status=JobStatus.SKIPPED, reason="budget") for job in manifest.jobs
    ]
    render = Renderer(fmt, base=base)
    load = json.loads if fmt == "json" else yaml.safe_load
    assert load(render(header, [])) == results_document(header, [], base=base)
    assert load(render(header, results)) == results_document(header, results, base=base)
    results[1] = JobResult(
        job=manifest.jobs[1],
        status=JobStatus.FAILED,
        remote_id="7",
        cost_cents=3,
        files=(OutputFile(stem="vocals", path=base / "stems" / "beat" / "vocals.wav", size=9),),
        error=ErrorRecord(type="X", message='it\'s "quoted" é', http_status=500),
    )
    assert load(render(header, results)) == results_document(header, results, base=base)


@pytest.mark.parametrize("fmt", ["yaml", "json"])
@settings(max_examples=30, deadline=None)
@given(
    changes=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(list(JobStatus))), max_size=30),
    read_bytes=st.integers(1, 2000),
    listed=st.sets(st.integers(0, 5)),
)
def test_spooled_renderer_streams_the_document(
    tmp_path_factory: pytest.TempPathFactory,
    fmt: Format,
    changes: list[tuple[int, JobStatus]],
    read_bytes: int,
    listed: set[int],
) -> None:
    """Entries re-rendered in any order into a spool on disk, streamed back in pieces of any
    size for any subset of the jobs (a fleet worker lists only its own), load to exactly the
    document of those jobs' latest results; the tally adds up the same results."""
    manifest = load_manifest(ROOT / "jobs.example.yaml")
    jobs = (manifest.jobs * 3)[:6]
    base = manifest.path.parent
    header = RunHeader(
        batchpod_version="0", manifest=manifest.path, manifest_sha256="x", base_url="u",
        sandbox=True, started_at=0.0,
    )  # fmt: skip
    latest = [JobResult(job=job, status=JobStatus.SKIPPED) for job in jobs]
    render = Renderer(fmt, base=base, spool=Spool(tmp_path_factory.mktemp("spool")))
    for index, result in enumerate(latest):
        render.update(index, result)
    for step, (index, status) in enumerate(changes):
        latest[index] = JobResult(
            job=jobs[index],
            status=status,
            remote_id=str(step),
            cost_cents=step,
            estimated_cents=2 * step or None,
            download_urls={"vocals": f"https://x.example/{step}.wav?sig=é"},
        )
        render.update(index, latest[index])
    indexes = sorted(listed)
    saved = results_module._READ_BYTES
    results_module._READ_BYTES = read_bytes
    try:
        text = b"".join(render.stream(header, indexes)).decode()
    finally:
        results_module._READ_BYTES = saved
    chosen = [latest[i] for i in indexes]
    load = json.loads if fmt == "json" else yaml.safe_load
    assert load(text) == results_document(header, chosen, base=base)
    tally = render.tally(indexes)
    assert dict(tally.counts) == dict(Counter(r.status.value for r in chosen))
    costs = [r.cost_cents for r in chosen if r.cost_cents is not None]
    assert tally.spent_cents == (sum(costs) if costs else None)
    assert tally.failed == sum(not r.ok for r in chosen)


# -- the entry writer: what it writes loads back as the data, as PyYAML's own output does ----

_KEYS = st.text(max_size=12)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(
        [
            "yes",
            "No",
            "null",
            "~",
            "007",
            "1:20",
            "0x1f",
            "2026-12-03",
            ".inf",
            "a: b",
            "x:",
            "- a",
            "#c",
            "=1+2",
            "https://x.example.com/a.mp3?d=1&e=2",
            "<<",
            "",
            " lead",
            "trail ",
            "a\nb",
            "\x85",
            "\u2028",
            "\ufeff",
            "é",
        ]
    )
)
_ENTRIES = st.dictionaries(
    _KEYS,
    _SCALARS
    | st.dictionaries(_KEYS, _SCALARS, max_size=4)
    | st.lists(st.dictionaries(_KEYS, _SCALARS, min_size=1, max_size=3), max_size=3),
    min_size=1,
    max_size=8,
)


@settings(max_examples=400, deadline=None)
@given(_ENTRIES)
def test_entry_writer_loads_back_as_the_data(entry: dict[str, Any]) -> None:
    """Every string (quotes, colons, YAML's words and numbers, line breaks and control
    characters), number and nesting an entry can hold loads back unchanged (PyYAML's own
    writer does not: it writes a NEL bare, which loads back as a space)."""
    assert yaml.safe_load(_entry_yaml(entry)) == [entry]


def test_entry_writer_writes_block_yaml_as_people_read_it() -> None:
    """Plain where plain is safe, quoted where YAML would read something else."""
    text = _entry_yaml(
        {
            "name": "intro",
            "remote_id": "123",
            "status": "completed",
            "meta": {"explicit": "no"},
            "files": [{"stem": "vocals", "bytes": 10}],
            "quality_scores": {"vocals": 0.5},
        }
    )
    assert text == (
        "- name: intro\n"
        '  remote_id: "123"\n'
        "  status: completed\n"
        "  meta:\n"
        '    explicit: "no"\n'
        "  files:\n"
        "  - stem: vocals\n"
        "    bytes: 10\n"
        "  quality_scores:\n"
        "    vocals: 0.5\n"
    )


# -- a run's results file, rendered job by job as the jobs change ----------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("download", [False, True])
async def test_a_runs_results_file_is_its_results(
    tmp_path: Path, sandbox_factory: SandboxFactory, download: bool
) -> None:
    """Jobs that fail, are retried (429s and 5xxs), are charged after they end, and are
    skipped by a budget stop: the file written from the entries re-rendered as each job
    changed is exactly the document of the run's results read afresh at the end. The
    links of the jobs (without downloads) come back from the spool, and nothing of it is
    left beside the results."""
    body = "".join(
        f"  - {{url: 'https://cdn.example.com/{i}.mp3?duration=60', mode: four, duration: 60}}\n"
        for i in range(30)
    )
    path = write_manifest(tmp_path, body, concurrency=6, budget={"max_spend_usd": 2.0})
    manifest = load_manifest(path)
    before = _names(tmp_path)
    async with sandbox_factory(
        processing_s=(0.05, 0.4),
        failure_rate=0.2,
        rate_429=0.05,
        rate_5xx=0.05,
        seed=3,
        retry_after_s=None,
    ) as sb:
        options = RunConfig(
            api_key=sb.api_key,
            base_url=sb.base_url,
            download=download,
            handle_signals=False,
            flush_interval_s=0.05,  # many rewrites while jobs change
            retry=RetryPolicy(max_attempts=50, base_s=0.01, max_backoff_s=0.1),
        )
        summary = await run_session(manifest, options, reporter=Quiet())
    statuses = {r.status for r in summary.results}
    assert {JobStatus.FAILED, JobStatus.SKIPPED} <= statuses, statuses
    assert summary.retries, "the sandbox's 429s and 5xxs were retried"
    written = yaml.safe_load(await anyio.Path(summary.results_path).read_text(encoding="utf-8"))
    fresh = results_document(
        RunHeader(batchpod_version=None, manifest=None, manifest_sha256=None, base_url=None,
                  sandbox=None, started_at=None),
        list(summary.results),
        base=tmp_path,
    )  # fmt: skip
    assert written["jobs"] == fresh["jobs"]
    assert (
        written["run"]["counts"]
        == fresh["run"]["counts"]
        == {status.value: summary.counts.get(status.value, 0) for status in JobStatus}
    )
    assert written["run"]["spent_cents"] == summary.spent_cents > 0
    links = [job.get("download_urls") for job in written["jobs"] if job["status"] == "completed"]
    if download:
        assert not any(links) and statuses & {JobStatus.SUCCEEDED}
    else:
        assert links and all(link and set(link) == {"vocals", "drums", "bass", "other"}
                             for link in links)  # fmt: skip
    made = _names(tmp_path) - before
    assert made - {"stems"} == {"jobs.batchpod.db", "jobs.batchpod.db.lock", "jobs.results.yaml"}


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}
