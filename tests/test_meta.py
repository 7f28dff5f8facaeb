"""A job's ``meta``: the catalogue's own fields, checked with FILE:LINE, merged under
'defaults', carried to the results, the CSV report, the JSON log and the output path, and
never part of what a job is (editing it pays nothing again)."""

from __future__ import annotations

import csv
import io
import json
import string
from pathlib import Path

import pytest
import yaml
from conftest import FAST, results_of, run_cli, write_manifest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchpod.cli import main
from batchpod.identity import content_key
from batchpod.manifest import parse_manifest
from batchpod.sandbox import SandboxThread

BODY = """\
  - {url: 'https://cdn.example.com/one.mp3', name: one,
     meta: {isrc: USRC17607839, label: 'A/B Records'}}
  - {url: 'https://cdn.example.com/two.mp3', name: two,
     meta: {isrc: GBAYE0601498, catalogue: '007'}}
  - {url: 'https://cdn.example.com/three.mp3', name: three, meta: {isrc: '..'}}
"""


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_meta_travels_to_results_csv_logs_and_paths(tmp_path: Path) -> None:
    path = write_manifest(
        tmp_path,
        BODY,
        output_path="'{meta.label}/{meta.isrc}/{stem}.{ext}'",
        defaults="{mode: two, meta: {label: House}}",
    )
    code, _, err = _run(["validate", str(path)])
    assert code == 0, err
    log = tmp_path / "run.log"
    with SandboxThread(FAST) as sb:
        code, _, err = run_cli(sb, path, "--log-format", "json", "--log-file", str(log))
        assert code == 0, err
    jobs = {j["name"]: j for j in results_of(path)["jobs"]}
    # A job's keys over the defaults', in the order written: defaults' first, then its own.
    assert jobs["one"]["meta"] == {"label": "A/B Records", "isrc": "USRC17607839"}
    assert jobs["two"]["meta"] == {"label": "House", "isrc": "GBAYE0601498", "catalogue": "007"}
    assert jobs["three"]["meta"] == {"label": "House", "isrc": ".."}
    stems = tmp_path / "stems"
    # Made safe as folder names: "/" becomes "_", a leading dot is dropped ("..": "_").
    assert sorted(p.relative_to(stems).as_posix() for p in stems.rglob("*.wav")) == [
        "A_B Records/USRC17607839/no_vocals.wav",
        "A_B Records/USRC17607839/vocals.wav",
        "House/GBAYE0601498/no_vocals.wav",
        "House/GBAYE0601498/vocals.wav",
        "House/_/no_vocals.wav",
        "House/_/vocals.wav",
    ]
    results = path.with_name("jobs.results.yaml")
    code, text, err = _run(["report", str(results), "--format", "csv"])
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["name"] for r in rows] == ["one", "two", "three"]
    assert list(rows[0])[-3:] == ["meta.label", "meta.isrc", "meta.catalogue"]
    assert [r["meta.catalogue"] for r in rows] == ["", "007", ""]
    assert rows[0]["meta.label"] == "A/B Records"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    finished = {e["job"]: e for e in events if e.get("event") == "job_finished"}
    assert finished["two"]["meta"]["catalogue"] == "007"
    assert all(e["meta"]["isrc"] for e in events if e.get("event") == "job")


def test_editing_meta_pays_nothing_again(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, BODY, defaults="{mode: two}")
    with SandboxThread(FAST) as sb:
        assert run_cli(sb, path)[0] == 0
        path.write_text(path.read_text().replace("USRC17607839", "USRC00000001"))
        code, _, err = run_cli(sb, path)
        assert code == 0, err
        assert sb.stats()["jobs"]["created"] == 3
    jobs = results_of(path)["jobs"]
    assert jobs[0]["meta"]["isrc"] == "USRC00000001"
    assert {j["status"] for j in jobs} == {"succeeded"}


@pytest.mark.parametrize(
    ("meta", "column", "message"),
    [
        ("notamap", 51, "'meta' must be a mapping"),
        ("{1st: x}", 52, "'meta' key '1st' is not a name"),
        ("{is-rc: x}", 52, "'meta' key 'is-rc' is not a name"),
        ("{a: [1, 2]}", 55, "'meta.a' must be text or a number, got a list"),
        ("{a: null}", 55, "'meta.a' must be text or a number"),
        ("{a: yes}", 55, "'meta.a' must be text or a number"),
        ("{a: x, a: y}", 58, "duplicate 'meta' key 'a'"),
        ('{a: "x\\ny"}', 55, "'meta.a' cannot hold control characters or newlines"),
        ("{a: " + "x" * 600 + "}", 55, "'meta.a' is longer than 512 characters"),
    ],
)
def test_a_bad_meta_is_one_problem_at_its_place(
    tmp_path: Path, meta: str, column: int, message: str
) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(
        f"version: 1\njobs:\n  - {{url: 'https://e.com/a.mp3', mode: two, meta: {meta}}}\n",
        encoding="utf-8",
    )
    code, _, err = _run(["validate", str(path)])
    assert code == 2
    problems = [ln for ln in err.splitlines() if ln.startswith(str(path))]
    assert len(problems) == 1, err
    assert problems[0].startswith(f"{path}:3:{column}: {message}"), problems[0]


def test_a_template_key_a_job_lacks_is_a_problem_at_the_job(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(
        "version: 1\noutput_path: '{meta.isrc}/{stem}.{ext}'\njobs:\n"
        "  - {url: 'https://e.com/a.mp3', mode: two, meta: {isrc: X1}}\n"
        "  - {url: 'https://e.com/b.mp3', mode: two}\n",
        encoding="utf-8",
    )
    code, _, err = _run(["validate", str(path)])
    assert code == 2
    assert f"{path}:5:5: job 2 has no 'meta.isrc', which output_path uses" in err, err
    # Two jobs with one ISRC would share a folder: a clash, as for any field.
    path.write_text(path.read_text().replace("mode: two}", "mode: two, meta: {isrc: x1}}"))
    code, _, err = _run(["validate", str(path)])
    assert code == 2 and "as job 1's (line 4)" in err, err


_values = st.text(string.printable.replace("\n", "").replace("\r", ""), max_size=20)
_meta = st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), _values)


@settings(max_examples=200, deadline=None)
@given(meta=_meta, defaults=_meta)
def test_meta_never_changes_a_jobs_content_key(
    meta: dict[str, str], defaults: dict[str, str]
) -> None:
    """Whatever the metadata (the job's own, the defaults'), the job read from the manifest
    has the content key of the same job without any."""
    plain = {"url": "https://cdn.example.com/a.mp3", "mode": "two"}
    bare, problems = parse_manifest(
        yaml.safe_dump({"version": 1, "jobs": [plain]}), path=Path("/m/jobs.yaml")
    )
    assert bare is not None, problems
    doc = {"version": 1, "defaults": {"meta": defaults}, "jobs": [{**plain, "meta": meta}]}
    text = yaml.safe_dump(doc)
    manifest, problems = parse_manifest(text, path=Path("/m/jobs.yaml"))
    if manifest is None:  # e.g. a value with a control character: refused, not keyed
        assert problems
        return
    (job,) = manifest.jobs
    assert dict(job.meta) == {**{k: str(v) for k, v in defaults.items()}, **meta}
    assert content_key(job) == content_key(bare.jobs[0])
