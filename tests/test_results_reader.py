"""Reading a results file back in pieces (report/_load.py): the same data as reading it whole,
whatever the layout, in a fraction of the memory."""

from __future__ import annotations

import dataclasses
import re
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FAST, run_cli, write_manifest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_results import _ENTRIES

from batchpod.errors import ConfigError
from batchpod.report import REPORT_UNUSED, _load, load_results
from batchpod.results import _entry_yaml, results_yaml, results_yaml_pieces, write_atomic
from batchpod.sandbox import SandboxThread

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def whole_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file that had to be read whole; pieces are as small as they can be (one entry)."""
    monkeypatch.setattr(_load, "PIECE_BYTES", 1)
    reads: list[Path] = []
    whole = _load._whole

    def counted(path: Path, raw: bytes) -> Any:
        reads.append(path)
        return whole(path, raw)

    monkeypatch.setattr(_load, "_whole", counted)
    return reads


def _without(doc: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    jobs = [{k: v for k, v in job.items() if k not in keys} for job in doc["jobs"]]
    return {**doc, "jobs": jobs}


def test_a_real_runs_file_reads_in_pieces_as_it_does_whole(
    tmp_path: Path, whole_reads: list[Path]
) -> None:
    """A run with failed and retried jobs and links in its entries: read an entry at a time,
    the document is the one PyYAML reads from the whole file, and it is never read whole."""
    body = "".join(
        f"  - {{url: 'https://cdn.example.com/{i}.mp3', mode: two}}\n" for i in range(12)
    )
    path = write_manifest(tmp_path, body, concurrency=4)
    settings = dataclasses.replace(FAST, failure_rate=0.3, rate_5xx=0.1, retry_after_s=0, seed=7)
    with SandboxThread(settings) as sb:
        run_cli(sb, path, "--no-download")
    results = path.with_name("jobs.results.yaml")
    expected = yaml.safe_load(results.read_text(encoding="utf-8"))
    statuses = {job["status"] for job in expected["jobs"]}
    assert {"failed", "completed"} <= statuses  # the file has both kinds of entry
    assert any(job.get("download_urls") for job in expected["jobs"])
    assert load_results(results) == expected
    assert load_results(results, drop=REPORT_UNUSED) == _without(expected, REPORT_UNUSED)
    assert whole_reads == []


HEAD = "results_version: 1\nrun:\n  exit_code: 0\n"
ENTRIES = (
    "- name: a\n  status: succeeded\n  retries:\n    '429': 2\n"
    "- name: b\n  status: failed\n  error: {type: RemoteJobFailed, message: 'it: failed'}\n"
    "- name: c\n  status: skipped\n  meta: {album: x}\n"
)


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        (HEAD + "jobs:\n" + ENTRIES, True),
        (HEAD + "jobs:\n" + ENTRIES.replace("\n", "\r\n"), True),
        ("\ufeff" + HEAD + "jobs:\n" + ENTRIES, True),
        ("---\n" + HEAD + "jobs:\n" + ENTRIES, True),
        (  # entries indented under 'jobs:', as people write them
            HEAD + "jobs:\n" + "".join("  " + line + "\n" for line in ENTRIES.splitlines()),
            True,
        ),
        (  # comments and blank lines between entries, and before the first
            HEAD + "jobs:\n\n# the jobs\n" + ENTRIES.replace("- name: b", "\n# b\n- name: b"),
            True,
        ),
        # A quoted message whose next line starts like an entry: a piece cut there does not
        # parse, so the file is read whole, which joins the lines as YAML does.
        (
            HEAD + 'jobs:\n- name: a\n  status: failed\n  error:\n    message: "one\n'
            '- two\n  three"\n- name: b\n  status: succeeded\n',
            False,
        ),
        (  # an alias to an anchor in an earlier entry
            HEAD + "jobs:\n- name: a\n  status: failed\n  meta: &m {album: x}\n"
            "- name: b\n  status: failed\n  meta: *m\n",
            False,
        ),
        (HEAD + "jobs:\n" + ENTRIES + "extra: 1\n", False),  # a key after the jobs
        (HEAD + "jobs: [{name: a, status: succeeded}]\n", False),  # flow style
        (HEAD + "jobs: []\n", False),
        ("jobs:\n" + ENTRIES + HEAD, False),  # the run after the jobs
    ],
    ids=[
        "written",
        "crlf",
        "bom",
        "document-start",
        "indented",
        "comments",
        "quoted-line-like-an-entry",
        "alias",
        "key-after",
        "flow",
        "empty",
        "jobs-first",
    ],
)
def test_every_layout_reads_as_pyyaml_reads_it(
    tmp_path: Path, whole_reads: list[Path], text: str, pieces: bool
) -> None:
    """Whatever the layout, the document is PyYAML's; results.py's layout and its usual
    variants are read in pieces, anything else whole."""
    path = tmp_path / "jobs.results.yaml"
    path.write_bytes(text.encode("utf-8"))
    assert load_results(path) == yaml.safe_load(text.removeprefix("\ufeff"))
    assert whole_reads == ([] if pieces else [path])


H = "results_version: 1\nrun:\n  exit_code: 0\n"
E = "- name: a\n  status: succeeded\n- name: b\n  status: failed\n"
# Inputs a piece could read differently than the whole file does (found by a review): each
# must come out as the whole reader has it, data or refusal.
AWKWARD = {
    "empty-jobs": H + "jobs:\n",
    "empty-jobs-no-newline": H + "jobs:",
    "empty-jobs-comment": H + "jobs:\n# nothing\n",
    "lone-cr-hides-an-entry": H + "jobs:\n# c\r- name: hidden\r  status: failed\n" + E,
    "ls-hides-an-entry": H + "jobs:\n# c\u2028- name: hidden\u2028  status: failed\n" + E,
    "nel-hides-an-entry": H + "jobs:\n# c\u0085- name: hidden\u0085  status: failed\n" + E,
    "lone-cr-hides-a-key": H + "jobs:\n# c\rextra: 1\n" + E,
    "control-char-in-a-comment": H + "jobs:\n# \x07bell\n" + E,
    "end-marker-hidden-in-header": "results_version: 1\nrun: {}\r...\njobs:\n" + E,
    "end-marker-hidden-in-entry": H + "jobs:\n- name: a\n  status: failed\r...\n" + E,
    "indented-header": "  results_version: 1\n  run: {}\njobs:\n" + E,
    "flow-header": "{results_version: 1, run: {}}\njobs:\n" + E,
    "two-line-flow-header": "{results_version: 1,\n run: {}}\njobs:\n" + E,
    "two-boms": "\ufeff\ufeff" + H + "jobs:\n" + E,
    "repeated-anchor": H + "jobs:\n- name: a\n  status: failed\n  meta: &m {x: 1}\n"
    "- name: b\n  status: failed\n  meta: &m {x: 2}\n",
    "anchor-in-header-and-entry": "results_version: 1\nrun: &m {}\njobs:\n"
    "- name: a\n  status: failed\n  meta: &m {x: 2}\n",
    "bad-date-then-broken": "results_version: 1\nrun: {d: 2026-13-01}\njobs:\n"
    "- name: a\n  status: [\n",
    "bad-date-in-entry-then-broken": H + "jobs:\n- name: a\n  status: failed\n"
    "  at: 2026-02-30\n- name: b\n  status: [unclosed\n",
    "unhashable-status": H + "jobs:\n- name: a\n  status: [x]\n",
    "version-true": "results_version: true\nrun: {}\njobs:\n" + E,
    "version-float": "results_version: 1.0\nrun: {}\njobs:\n" + E,
    "ampersand-in-text": H + "jobs:\n- name: rock & roll\n  status: failed\n"
    "  error: {message: 'a &b'}\n",
}


def _read_whole(path: Path, raw: bytes) -> Any:
    """The file as the whole reader has it, checked."""
    data = _load._whole(path, raw)
    _load._check(path, data)
    return data


def _outcome(read: Any) -> Any:
    try:
        return read()
    except ConfigError as exc:
        return f"ConfigError: {exc}"
    except ValueError as exc:  # what PyYAML's constructors raise for an impossible date
        return f"ValueError: {exc}"


@pytest.mark.parametrize("piece_bytes", [1, _load.PIECE_BYTES], ids=["entry", "default"])
@pytest.mark.parametrize("name", sorted(AWKWARD))
def test_what_a_piece_could_misread_comes_out_as_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, piece_bytes: int
) -> None:
    monkeypatch.setattr(_load, "PIECE_BYTES", piece_bytes)
    path = tmp_path / "jobs.results.yaml"
    raw = AWKWARD[name].encode("utf-8")
    path.write_bytes(raw)

    assert _outcome(lambda: load_results(path)) == _outcome(lambda: _read_whole(path, raw))


def test_a_results_version_of_true_is_not_version_1(tmp_path: Path) -> None:
    path = tmp_path / "jobs.results.yaml"
    path.write_bytes(AWKWARD["version-true"].encode())
    with pytest.raises(ConfigError, match="results_version True is not one this batchpod reads"):
        load_results(path)


def test_an_unhashable_status_is_a_clear_refusal(tmp_path: Path) -> None:
    path = tmp_path / "jobs.results.yaml"
    path.write_bytes(AWKWARD["unhashable-status"].encode())
    with pytest.raises(ConfigError, match=re.escape("jobs[0] has no name or no known status")):
        load_results(path)


def _yaml_error_at(text: str) -> str:
    """Where PyYAML, reading ``text`` whole, says it is broken."""
    with pytest.raises(yaml.YAMLError) as caught:
        yaml.load(text, Loader=_load._LOADER)
    mark = getattr(caught.value, "problem_mark", None)
    assert mark is not None
    return f"not valid YAML (line {mark.line + 1}, column {mark.column + 1})"


@pytest.mark.parametrize(
    "text",
    [
        HEAD + "jobs:\n" + ENTRIES + "- name: d\n  status: [unclosed\n- name: e\n",
        HEAD + "jobs:\n" + ENTRIES + "---\nresults_version: 1\n",
        HEAD + "jobs:\n- name: a\n  status: 'unclosed\n" + ENTRIES,
    ],
    ids=["broken-entry", "second-document", "unclosed-quote"],
)
def test_a_broken_file_is_refused_with_the_whole_readers_position(
    tmp_path: Path, whole_reads: list[Path], text: str
) -> None:
    """A piece that does not parse sends the file to the whole reader: the message gives the
    line and column that reading the file whole finds, in one line."""
    path = tmp_path / "jobs.results.yaml"
    path.write_bytes(text.encode("utf-8"))
    with pytest.raises(ConfigError) as caught:
        load_results(path)
    message = str(caught.value)
    assert message == f"{path} is not a batchpod results file: {_yaml_error_at(text)}"
    assert whole_reads == [path]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (HEAD + "jobs:\n" + ENTRIES + "- name: d\n  status: done\n", "jobs[3] has no name or"),
        (HEAD + "jobs:\n- name: a\n  status: failed\n  meta: [x]\n", "jobs[0]'s meta is not"),
    ],
    ids=["unknown-status", "meta-not-a-mapping"],
)
def test_a_bad_entry_read_in_pieces_is_named_by_its_index(
    tmp_path: Path, whole_reads: list[Path], text: str, says: str
) -> None:
    path = tmp_path / "jobs.results.yaml"
    path.write_bytes(text.encode("utf-8"))
    with pytest.raises(
        ConfigError, match=re.escape(f"{path} is not a batchpod results file: {says}")
    ):
        load_results(path)
    assert whole_reads == []


def _big(jobs: int) -> dict[str, Any]:
    def entry(n: int) -> dict[str, Any]:
        links = {
            stem: f"https://storage.example.com/stems/{n}/{stem}.wav?Expires=1796689591"
            f"&Signature={n:064x}"
            for stem in ("vocals", "drums", "bass", "other")
        }
        return {
            "name": f"song-{n:06d}",
            "source": {"url": f"https://media.example.com/catalogue/{n:07d}.mp3"},
            "mode": "four",
            "status": "completed",
            "remote_id": str(5000 + n),
            "submitted_at": "2026-12-07T23:26:31Z",
            "completed_at": "2026-12-07T23:27:31Z",
            "finished_at": "2026-12-07T23:27:33Z",
            "attempts": 1,
            "estimated_cents": 40,
            "cost_cents": 40,
            "cost_usd": "$0.40",
            "quality_scores": dict.fromkeys(links, 0.5),
            "download_urls": links,
        }

    return {"results_version": 1, "run": {"exit_code": 0}, "jobs": [entry(n) for n in range(jobs)]}


def _peak(read: Any) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        data = read()
        return data, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_large_file_read_for_the_report_takes_a_fraction_of_the_memory(
    tmp_path: Path,
) -> None:
    """3,000 entries with their links: read for the report in pieces, the peak of Python
    memory is under a sixth of reading the file whole, and the entries are the same ones."""
    path = tmp_path / "jobs.results.yaml"
    path.write_text(results_yaml(_big(3000)), encoding="utf-8")
    whole, whole_peak = _peak(
        lambda: yaml.load(path.read_text(encoding="utf-8"), Loader=_load._LOADER)
    )
    slim, slim_peak = _peak(lambda: load_results(path, drop=REPORT_UNUSED))
    assert slim == _without(whole, REPORT_UNUSED)
    assert slim_peak * 6 < whole_peak, (slim_peak, whole_peak)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ENTRIES, min_size=1, max_size=6), st.sampled_from([1, 64, 1 << 18]))
def test_entries_as_results_py_writes_them_read_back_in_pieces_as_whole(
    entries: list[dict[str, Any]], piece_bytes: int
) -> None:
    """Any entries the results writer can write (YAML's words and numbers, line breaks of
    every kind, quotes, nesting), cut into pieces anywhere between entries, read back as
    PyYAML reads the whole file: the same data, or the same refusal."""
    jobs = [{"name": "n", "status": "succeeded", **entry} for entry in entries]
    text = HEAD + "jobs:\n" + "".join(_entry_yaml(job) for job in jobs)
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        patch.setattr(_load, "PIECE_BYTES", piece_bytes)
        path = Path(folder) / "jobs.results.yaml"
        raw = text.encode("utf-8")
        path.write_bytes(raw)
        assert _outcome(lambda: load_results(path)) == _outcome(lambda: _read_whole(path, raw))


def test_a_merged_document_is_written_in_the_layout_read_in_pieces(
    tmp_path: Path, whole_reads: list[Path]
) -> None:
    """What `merge` writes (results_yaml_pieces, entry by entry) is the data, in the layout a
    run writes, so reading it back needs no whole read; with no entries it is still the data."""
    doc = _big(40)
    path = tmp_path / "merged.results.yaml"
    pieces = list(results_yaml_pieces(doc))
    assert len(pieces) == 41  # the head, then one piece per entry
    write_atomic(path, pieces)
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == doc
    assert load_results(path) == doc
    assert whole_reads == []
    empty = {**doc, "jobs": []}
    write_atomic(path, results_yaml_pieces(empty))
    assert load_results(path) == empty


def test_what_libyaml_cannot_read_plain_is_written_so_that_it_can(tmp_path: Path) -> None:
    """A key over 128 characters (libyaml reads no simple key over 1024) is written by PyYAML
    as '? key', and a document with nothing but jobs has no empty head: both read back."""
    long_key = "v" * 1100
    doc = {**_big(2), "jobs": [{"name": "a", "status": "failed", "meta": {long_key: "x"}}]}
    path = tmp_path / "jobs.results.yaml"
    write_atomic(path, results_yaml_pieces(doc))
    assert load_results(path) == doc
    only_jobs = {"jobs": [{"name": "a", "status": "failed"}]}
    assert yaml.safe_load(results_yaml(only_jobs)) == only_jobs


def test_json_with_a_lone_surrogate_is_refused_in_one_line(tmp_path: Path) -> None:
    """A JSON shard whose text escapes a lone surrogate could not be written again as YAML."""
    path = tmp_path / "shard.results.json"
    path.write_text(
        '{"results_version": 1, "run": {}, "jobs": [{"name": "a", "status": "failed", '
        '"reason": "bad \\ud800 byte"}]}',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="lone surrogate") as caught:
        load_results(path)
    assert "\n" not in str(caught.value)
    pair = tmp_path / "pair.results.json"  # an escaped pair is one character: accepted
    pair.write_text(
        '{"results_version": 1, "run": {}, "jobs": [{"name": "\\ud83c\\udfb5", '
        '"status": "failed"}]}',
        encoding="utf-8",
    )
    assert load_results(pair)["jobs"][0]["name"] == "\U0001f3b5"
