"""``files:`` jobs: a glob in the manifest that stands for every file it matches when the
manifest is read, so the manifest need not be rewritten as the folder grows."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from conftest import FAST, results_of
from test_init import _tone

from batchpod.cli import main
from batchpod.sandbox import SandboxThread


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


MANIFEST = """\
version: 1
defaults: {mode: two}
jobs:
  - {files: 'incoming/**/*.wav', meta: {batch: nightly}}
  - {file: incoming/first.wav, name: the-first}
"""


def test_a_glob_job_grows_with_its_folder_and_pays_only_for_new_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "incoming" / "2026-12-01").mkdir(parents=True)
    _tone(tmp_path / "incoming" / "first.wav", 1.0, 300)
    _tone(tmp_path / "incoming" / "2026-12-01" / "a song.wav", 1.5, 400)
    _tone(tmp_path / "incoming" / ".partial.wav", 1.0, 500)  # hidden: not matched
    (tmp_path / "incoming" / "notes.txt").write_text("not matched\n")
    path = tmp_path / "jobs.yaml"
    path.write_text(MANIFEST, encoding="utf-8")
    code, out, err = _cli("validate", "jobs.yaml")
    assert code == 0, err
    assert out.splitlines() == [
        "jobs.yaml:4:5: 'files' 'incoming/**/*.wav' matched 2 files (1 already listed)",
        "ok: 2 jobs, 0 URL, 2 files",
    ]
    with SandboxThread(FAST) as sb:
        monkeypatch.setenv("AUDIOPOD_API_KEY", sb.api_key)
        code, _, err = _cli("run", "jobs.yaml", "--base-url", sb.base_url)
        assert code == 0, err
        first = results_of(path)["jobs"]
        # The match takes the glob job's place and fields; the file listed by itself keeps
        # its own job (and name): the glob does not repeat it.
        assert [(j["name"], j["source"]["file"]) for j in first] == [
            ("a-song", "incoming/2026-12-01/a song.wav"),
            ("the-first", "incoming/first.wav"),
        ]
        assert first[0]["meta"] == {"batch": "nightly"} and "meta" not in first[1]
        assert sb.stats()["jobs"]["created"] == 2
        (tmp_path / "incoming" / "2026-12-02").mkdir()
        _tone(tmp_path / "incoming" / "2026-12-02" / "tonight.wav", 2.0, 600)
        code, _, err = _cli("run", "jobs.yaml", "--base-url", sb.base_url)
        assert code == 0, err
        assert sb.stats()["jobs"]["created"] == 3  # the new file only
    names = [j["name"] for j in results_of(path)["jobs"]]
    assert names == ["a-song", "tonight", "the-first"]


def test_a_glob_that_matches_nothing_is_a_warning_unless_strict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _tone(tmp_path / "kept.wav", 1.0, 300)
    (tmp_path / "jobs.yaml").write_text(
        "version: 1\njobs:\n"
        "  - {file: kept.wav, mode: two}\n"
        "  - {files: 'tonight/*.mp3', mode: four}\n",
        encoding="utf-8",
    )
    code, out, err = _cli("validate", "jobs.yaml")
    assert code == 0
    assert "jobs.yaml:4:5: 'files' 'tonight/*.mp3' matched 0 files" in out
    assert err == (
        "jobs.yaml:4:5: 'files' 'tonight/*.mp3' matched no files "
        "(a warning: --strict makes it an error)\n"
    )
    code, _, err = _cli("validate", "jobs.yaml", "--strict")
    assert code == 2 and "jobs.yaml:4:5: 'files' 'tonight/*.mp3' matched no files" in err
    with SandboxThread(FAST) as sb:
        monkeypatch.setenv("AUDIOPOD_API_KEY", sb.api_key)
        code, _, err = _cli("run", "jobs.yaml", "--base-url", sb.base_url, "--strict")
        assert code == 2 and sb.stats()["jobs"]["created"] == 0
        code, _, err = _cli("run", "jobs.yaml", "--base-url", sb.base_url)
        assert code == 0 and "matched no files (a warning" in err
        assert sb.stats()["jobs"]["created"] == 1


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ("{files: '*.wav', url: 'https://e.com/a.mp3', mode: two}", "has both 'url' and 'files'"),
        ("{files: '*.wav', name: one, mode: two}", "cannot have one 'name'"),
        ("{files: 42, mode: two}", "'files' must be text"),
    ],
)
def test_bad_glob_jobs_are_problems_at_their_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, job: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "jobs.yaml").write_text(f"version: 1\njobs:\n  - {job}\n", encoding="utf-8")
    code, _, err = _cli("validate", "jobs.yaml")
    assert code == 2
    assert err.startswith("jobs.yaml:3:") and message in err, err
