"""The results manifest: the incremental renderer writes exactly the document's data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from batchpod.manifest import load_manifest
from batchpod.models import ErrorRecord, JobResult, JobStatus, OutputFile
from batchpod.results import Format, Renderer, RunHeader, results_document

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
