"""The results manifest: the incremental renderer writes exactly the document's data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from batchpod.manifest import load_manifest
from batchpod.models import ErrorRecord, JobResult, JobStatus, OutputFile
from batchpod.results import Format, Renderer, RunHeader, _entry_yaml, results_document

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
