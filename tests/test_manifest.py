"""The manifest format: loading, every validation rule, positions, and round trips."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

import pytest

from batchpod.cli import main
from batchpod.errors import ManifestError, Problem
from batchpod.identity import normalize_url
from batchpod.manifest import (
    DEFAULT_CONCURRENCY,
    LOADERS,
    check_manifest,
    dump_manifest,
    load_manifest,
    parse_manifest,
)
from batchpod.models import Mode, Stem


def write(tmp_path: Path, text: str, name: str = "jobs.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str) -> list[Problem]:
    manifest, problems = check_manifest(write(tmp_path, text))
    assert manifest is None, "a manifest with problems must not be returned"
    return problems


def only_problem(tmp_path: Path, text: str) -> Problem:
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


@pytest.fixture
def song(tmp_path: Path) -> Path:
    """A local source file next to the manifest."""
    path = tmp_path / "song.wav"
    path.write_bytes(b"RIFF....WAVE")
    return path


# -- a clean manifest ------------------------------------------------------------------------


def test_minimal_manifest_gets_documented_defaults(tmp_path: Path) -> None:
    """version + one job is enough; output_dir, concurrency and budget take their defaults."""
    path = write(
        tmp_path,
        """
        version: 1
        jobs:
          - url: https://example.com/a/Night%20Drive.mp3
            mode: four
        """,
    )
    manifest = load_manifest(path)
    assert manifest.version == 1
    assert manifest.output_dir == tmp_path / "stems"
    assert manifest.concurrency == DEFAULT_CONCURRENCY == 8
    assert manifest.budget.max_spend_cents is None
    assert manifest.budget.keep_balance_cents is None
    (job,) = manifest.jobs
    assert job.source.url == "https://example.com/a/Night%20Drive.mp3"
    assert job.mode is Mode.FOUR
    assert job.stem is None
    assert job.name == "night-20drive"
    assert job.line == 3


def test_every_field_is_read(tmp_path: Path, song: Path) -> None:
    """Top-level fields and every per-job field end up in the Manifest."""
    path = write(
        tmp_path,
        """
        version: 1
        output_dir: out/here
        concurrency: 3
        budget: {max_spend_usd: 12.5, keep_balance_usd: 2}
        jobs:
          - file: song.wav
            mode: single
            stem: drums
            name: My Song
            duration: 61.5
        """,
    )
    manifest = load_manifest(path)
    assert manifest.output_dir == tmp_path / "out" / "here"
    assert manifest.concurrency == 3
    assert manifest.budget.max_spend_cents == 1250
    assert manifest.budget.keep_balance_cents == 200
    (job,) = manifest.jobs
    assert job.source.file == song
    assert (job.mode, job.stem, job.name, job.duration_s) == (
        Mode.SINGLE,
        Stem.DRUMS,
        "My Song",
        61.5,
    )


_DEFAULTS = """\
defaults:
  mode: single
  stem: vocals
  duration: 100
  url: https://example.com/default.mp3
"""
_JOBS = """\
jobs:
  - name: a
  - file: song.wav
    stem: bass
  - url: https://example.com/other.mp3
    mode: four
"""


@pytest.mark.parametrize("defaults_first", [True, False], ids=["defaults-first", "defaults-last"])
@pytest.mark.parametrize("loader", LOADERS, ids=lambda loader: loader.__name__)
def test_defaults_apply_and_job_values_win(
    tmp_path: Path, song: Path, loader: type[Any], defaults_first: bool
) -> None:
    """defaults fill missing fields; a job's own value, including its source, wins.

    Jobs are checked as they are read, so 'defaults' written below 'jobs' is the harder case.
    """
    parts = (_DEFAULTS, _JOBS) if defaults_first else (_JOBS, _DEFAULTS)
    manifest, problems = check_manifest(
        write(tmp_path, "version: 1\n" + "".join(parts)), loader=loader
    )
    assert problems == [] and manifest is not None
    a, b, c = manifest.jobs
    assert (a.source.url, a.mode, a.stem, a.duration_s) == (
        "https://example.com/default.mp3",
        Mode.SINGLE,
        Stem.VOCALS,
        100.0,
    )
    assert (b.source.file, b.stem) == (song, Stem.BASS)
    # A stem inherited from defaults does not apply to a non-single job.
    assert (c.source.url, c.mode, c.stem) == ("https://example.com/other.mp3", Mode.FOUR, None)


@pytest.mark.parametrize("loader", LOADERS, ids=lambda loader: loader.__name__)
def test_a_jobs_own_stem_outside_single_is_reported_with_defaults_written_last(
    tmp_path: Path, song: Path, loader: type[Any]
) -> None:
    """The job's own 'stem' is found while reading it, and reported where it was written."""
    text = _JOBS + "    stem: drums\nversion: 1\n" + _DEFAULTS
    _, problems = check_manifest(write(tmp_path, text), loader=loader)
    assert [(p.line, p.column, p.message) for p in problems] == [
        (7, 11, "'stem' only applies to mode 'single', not 'four'")
    ]


def test_default_names_are_readable_and_unique(tmp_path: Path, song: Path) -> None:
    """Unnamed jobs get a slug of their source, made unique without touching explicit names."""
    path = write(
        tmp_path,
        """
        version: 1
        jobs:
          - file: song.wav
            mode: four
          - file: song.wav
            mode: single
            stem: vocals
          - url: https://www.youtube.com/watch?v=AbC_123
            mode: two
          - url: https://example.com/music/Song.flac
            mode: six
          - url: https://example.com/
            mode: six
          - url: https://example.com/Ünïcode_Tïtle.mp3
            mode: four
          - url: https://example.com/x/song-four.mp3
            mode: two
            name: SONG-FOUR
        """,
    )
    names = [job.name for job in load_manifest(path).jobs]
    assert names == [
        "song",
        "song-vocals",
        "abc-123",
        "song-six",
        "example-com",
        "unicode-title",
        "SONG-FOUR",
    ]


def test_example_manifest_is_valid_and_shows_every_field() -> None:
    """jobs.example.yaml validates, has >= 5 jobs of both kinds, and uses every field."""
    root = Path(__file__).resolve().parent.parent
    example = root / "jobs.example.yaml"
    manifest = load_manifest(example)
    assert len(manifest.jobs) >= 5
    kinds = {job.source.kind for job in manifest.jobs}
    assert kinds == {"url", "file"}
    assert len({job.mode for job in manifest.jobs}) >= 3
    text = example.read_text(encoding="utf-8")
    for key in ("version:", "defaults:", "output_dir:", "concurrency:", "budget:",
                "max_spend_usd:", "keep_balance_usd:", "jobs:", "url:", "file:", "mode:",
                "stem:", "name:", "duration:"):  # fmt: skip
        assert key in text, key
    for job in manifest.jobs:
        if job.source.file is not None:
            assert job.source.file.read_bytes()[:4] == b"RIFF"


# -- every rule ------------------------------------------------------------------------------

RULES = [
    # (manifest text, line, marker, message fragment, hint fragment): the problem must point at
    # the first occurrence of `marker` on that line (None: column 1).
    ("version: 1\njobs: []\n", 2, "[]", "'jobs' is empty", "at least one"),
    ("version: 1\n", 1, None, "missing 'jobs'", "jobs.example.yaml"),
    ("jobs:\n  - {url: 'https://e.com/a', mode: two}\n", 1, None, "missing 'version'", "version: 1"),
    ("version: 2\njobs:\n  - {url: 'https://e.com/a', mode: two}\n", 1, "2", "unsupported manifest version 2", "version 1"),
    ("version: one\njobs:\n  - {url: 'https://e.com/a', mode: two}\n", 1, "one", "'version' must be a whole number", None),
    ("version: 1\nconcurrency: 0\njobs:\n  - {url: 'https://e.com/a', mode: two}\n", 2, "0", "'concurrency' must be a whole number from 1", None),
    ("version: 1\nconcurrency: lots\njobs:\n  - {url: 'https://e.com/a', mode: two}\n", 2, "lots", "'concurrency' must be a whole number", None),
    ("version: 1\nconcurrency: 2.5\njobs:\n  - {url: 'https://e.com/a', mode: two}\n", 2, "2.5", "got '2.5'", None),
    ("version: 1\noutput_dir: [a]\njobs:\n  - {url: 'https://e.com/a', mode: two}\n", 2, "[a]", "expected a single value", None),
    ("version: 1\nbudget: 5\njobs:\n  - {url: 'https://e.com/a', mode: two}\n", 2, "5", "'budget' must be a mapping", None),
    ("version: 1\nbudget: {max_spend: 5}\njobs:\n  - {url: 'https://e.com/a', mode: two}\n", 2, "max_spend", "unknown key 'max_spend' in 'budget'", "did you mean 'max_spend_usd'?"),
    ("version: 1\nbudget: {max_spend_usd: -1}\njobs:\n  - {url: 'https://e.com/a', mode: two}\n", 2, "-1", "dollar amount of 0 or more", None),
    ("version: 1\nbudget: {max_spend_usd: ten}\njobs:\n  - {url: 'https://e.com/a', mode: two}\n", 2, "ten", "dollar amount", None),
    ("version: 1\nbudget: {keep_balance_usd: 1.005}\njobs:\n  - {url: 'https://e.com/a', mode: two}\n", 2, "1.005", "whole cents", None),
    ("version: 1\nconcurency: 3\njobs:\n  - {url: 'https://e.com/a', mode: two}\n", 2, "concurency", "unknown key 'concurency' at the top level", "did you mean 'concurrency'?"),
    ("version: 1\nversion: 1\njobs:\n  - {url: 'https://e.com/a', mode: two}\n", 2, "version", "duplicate key 'version'", None),
    ("version: 1\njobs: {url: 'https://e.com/a'}\n", 2, "{", "'jobs' must be a list", None),
    ("version: 1\njobs:\n  - https://e.com/a\n", 3, "https", "job 1 must be a mapping", None),
    ("version: 1\njobs:\n  - {mode: two}\n", 3, "{", "neither 'url' nor 'file'", "add one"),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', file: song.wav, mode: two}\n", 3, "{", "both 'url' and 'file'", "exactly one"),
    ("version: 1\njobs:\n  - {url: 'e.com/a', mode: two}\n", 3, "'e.com", "must start with http:// or https://", "did you mean 'https://e.com/a'?"),
    ("version: 1\njobs:\n  - {url: 'ftp://e.com/a', mode: two}\n", 3, "'ftp", "scheme 'ftp' is not supported", "http or https"),
    ("version: 1\njobs:\n  - {url: 'https:///a', mode: two}\n", 3, "'https", "no valid host", None),
    ("version: 1\njobs:\n  - {url: 'https://[::1', mode: two}\n", 3, "'https", "no valid host", None),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a b', mode: two}\n", 3, "'https", "must not contain spaces", "%20"),
    ("version: 1\njobs:\n  - {url: 42, mode: two}\n", 3, "42", "'url' must be text, got '42'", None),
    ("version: 1\njobs:\n  - {file: nowhere.wav, mode: two}\n", 3, "nowhere", "file not found: nowhere.wav", "looked for"),
    ("version: 1\njobs:\n  - {file: ., mode: two}\n", 3, ".,", "not a regular file", None),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a'}\n", 3, "{", "job 1 has no 'mode'", "single|two|four"),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: 4stem}\n", 3, "4stem", "unknown mode '4stem'", "use 'four'"),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: Four}\n", 3, "Four", "unknown mode 'Four'", "lower case: 'four'"),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: karaoke}\n", 3, "karaoke", "unknown mode 'karaoke'", "valid modes: single, two, four, six, producer, studio, mastering"),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: 4}\n", 3, "4}", "'mode' must be text", "valid modes"),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: single}\n", 3, "{", "mode 'single' but no 'stem'", "stem: vocals|drums"),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: single, stem: vocal}\n", 3, "vocal}", "unknown stem 'vocal'", "did you mean 'vocals'?"),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: single, stem: banjo}\n", 3, "banjo", "unknown stem 'banjo'", "valid stems: vocals, drums, bass, guitar, piano, other"),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: four, stem: bass}\n", 3, "bass", "'stem' only applies to mode 'single'", "remove 'stem'"),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: two, mdoe: two}\n", 3, "mdoe", "unknown key 'mdoe' in job 1", "did you mean 'mode'?"),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: two, duration: -3}\n", 3, "-3", "'duration' must be a number of seconds above 0", None),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: two, duration: 0}\n", 3, "0}", "above 0", None),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: two, duration: 3 minutes}\n", 3, "3 min", "got text '3 minutes'", None),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: two, duration: .nan}\n", 3, ".nan", "above 0", None),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: two, duration: true}\n", 3, "true", "got true/false 'true'", None),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: two, name: ../up}\n", 3, "../up", "cannot start with a dot", "letters, digits"),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: two, name: a/b}\n", 3, "a/b", "cannot be a folder name", None),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: two, name: ''}\n", 3, "''", "must not be empty", None),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: two, name: 'x\\0y'}\n", 3, "'x", "cannot be a folder name", None),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: two, name: " + "n" * 101 + "}\n", 3, "nnn", "longer than 100", None),
    ("version: 1\ndefaults: {name: x}\njobs:\n  - {url: 'https://e.com/a', mode: two}\n", 2, "x}", "'name' cannot be a default", None),
    ("version: 1\ndefaults: {mode: seven}\njobs:\n  - {url: 'https://e.com/a'}\n", 2, "seven", "unknown mode 'seven'", None),
    ("version: 1\ndefaults: [mode]\njobs:\n  - {url: 'https://e.com/a', mode: two}\n", 2, "[", "'defaults' must be a mapping", None),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: two}\n  - {url: 'HTTPS://E.com:443/a#x', mode: two}\n", 4, "{", "job 2 repeats job 1 (line 3)", "remove one"),
    ("version: 1\njobs:\n  - {file: song.wav, mode: two}\n  - {file: ./song.wav, mode: two}\n", 4, "{", "job 2 repeats job 1 (line 3)", None),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: two, name: Intro}\n  - {url: 'https://e.com/b', mode: two, name: intro}\n", 4, "intro", "uses the name 'intro' of job 1 (line 3)", "ignoring case"),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: !!python/name:os.system two}\n", 3, "!!", "unsupported YAML tag tag:yaml.org,2002:python/name:os.system", None),
    ("version: 1\njobs:\n  - {url: 'https://e.com/a', mode: two\n", 4, None, "YAML syntax error", None),
    ("version: 1\n  jobs: x\n", 2, ": x", "YAML syntax error: mapping values are not allowed", None),
    ("version: 1\n---\nversion: 1\n", 2, "---", "expected a single document", None),
    ("[1, 2]\n", 1, "[", "must be a mapping with 'version' and 'jobs'", None),
    ("# nothing here\n", 1, None, "the manifest is empty", "version: 1"),
]  # fmt: skip


def _column(text: str, line: int, marker: str | None) -> int:
    if marker is None:
        return 1
    row = text.splitlines()[line - 1]
    assert marker in row, (marker, row)
    return row.index(marker) + 1


@pytest.mark.parametrize(("text", "line", "marker", "message", "hint"), RULES)
def test_rule(
    tmp_path: Path,
    song: Path,
    text: str,
    line: int,
    marker: str | None,
    message: str,
    hint: str | None,
) -> None:
    """Each mistake is reported once, at its line and column, with its message and hint."""
    column = _column(text, line, marker)
    problem = only_problem(tmp_path, text)
    assert (problem.line, problem.column) == (line, column), str(problem)
    assert message in problem.message, str(problem)
    if hint is not None:
        assert problem.hint is not None and hint in problem.hint, str(problem)
    assert str(problem).startswith(f"{tmp_path / 'jobs.yaml'}:{line}:{column}: ")


@pytest.mark.parametrize(("text", "line", "marker", "message", "hint"), RULES)
def test_loaders_agree_on_positions(
    tmp_path: Path,
    song: Path,
    text: str,
    line: int,
    marker: str | None,
    message: str,
    hint: str | None,
) -> None:
    """libyaml's parser and the pure-Python one report the same problems at the same places."""
    assert [loader.__name__ for loader in LOADERS] == ["_CLoader", "_PyLoader"]
    path = write(tmp_path, text)
    results = [check_manifest(path, loader=loader)[1] for loader in LOADERS]
    assert [(p.line, p.column) for p in results[0]] == [(p.line, p.column) for p in results[1]]
    assert len(results[0]) == 1
    if not message.startswith("YAML syntax error"):  # libyaml words its syntax errors its own way
        assert results[0] == results[1]


def test_many_mistakes_all_reported_with_their_lines(tmp_path: Path, song: Path) -> None:
    """A manifest with a dozen different mistakes gets every one, in order, one per line."""
    path = write(
        tmp_path,
        """
        version: 1
        concurency: 4
        budget:
          max_spend_usd: -3
        jobs:
          - url: www.youtube.com/watch?v=abc
            mode: four
          - file: missing.wav
            mode: 4stem
          - url: https://example.com/a.mp3
            file: song.wav
            mode: four
          - url: https://example.com/b.mp3
            mode: single
          - url: https://example.com/c.mp3
            mode: four
            duration: -5
          - url: https://example.com/c.mp3
            mode: four
          - file: song.wav
            mode: two
            name: x
            mdoe: two
          - url: ftp://x/y
            mode: single
            stem: vocal
            name: X
          - url: https://example.com/d.mp3
            mode: six
            stem: bass
        """,
    )
    out, err = io.StringIO(), io.StringIO()
    code = main(["validate", str(path)], stdout=out, stderr=err)
    assert code == 2
    assert out.getvalue() == ""
    lines = err.getvalue().splitlines()
    expected = [
        (2, "unknown key 'concurency'"),
        (4, "'max_spend_usd' must be a dollar amount"),
        (6, "'url' must start with http:// or https://"),
        (8, "file not found: missing.wav"),
        (9, "unknown mode '4stem'"),
        (10, "has both 'url' and 'file'"),
        (13, "mode 'single' but no 'stem'"),
        (17, "'duration' must be a number of seconds above 0"),
        (18, "job 6 repeats job 5 (line 15)"),
        (23, "unknown key 'mdoe'"),
        (24, "'url' scheme 'ftp' is not supported"),
        (26, "unknown stem 'vocal'"),
        (27, "uses the name 'X' of job 7 (line 20)"),
        (30, "'stem' only applies to mode 'single'"),
    ]
    assert len(lines) == len(expected), lines
    for got, (line, fragment) in zip(lines, expected, strict=True):
        assert got.startswith(f"{path}:{line}:"), got
        assert fragment in got, got


def test_not_utf8_is_reported_at_the_bad_byte(tmp_path: Path) -> None:
    """A manifest that is not UTF-8 gets one problem at the offending byte."""
    path = tmp_path / "jobs.yaml"
    path.write_bytes(b"version: 1\njobs:\n  - url: https://e.com/caf\xe9\n")
    (problem,) = check_manifest(path)[1]
    assert (problem.line, problem.column) == (3, len("  - url: https://e.com/caf") + 1)
    assert "not UTF-8" in problem.message


def test_bom_is_accepted(tmp_path: Path) -> None:
    """A UTF-8 byte-order mark (as some Windows editors write) is not an error."""
    path = tmp_path / "jobs.yaml"
    path.write_bytes(b"\xef\xbb\xbfversion: 1\njobs:\n  - {url: 'https://e.com/a', mode: two}\n")
    assert len(load_manifest(path).jobs) == 1


def test_unreadable_manifest_is_one_problem(tmp_path: Path) -> None:
    """A missing manifest file is reported as one problem naming the file, without a line."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ManifestError) as info:
        load_manifest(missing)
    (problem,) = info.value.problems
    assert str(problem) == f"{missing}: cannot read: No such file or directory"


def test_deep_nesting_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    """Absurdly nested YAML is refused with a clear problem."""
    path = tmp_path / "jobs.yaml"
    path.write_text("version: 1\njobs: " + "[" * 100_000 + "]" * 100_000 + "\n")
    for loader in LOADERS:
        manifest, problems = check_manifest(path, loader=loader)
        assert manifest is None
        assert problems and all(isinstance(p, Problem) for p in problems)


def test_relative_paths_follow_the_manifest_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """file: and output_dir are relative to the manifest's folder, wherever batchpod runs."""
    sub = tmp_path / "project"
    sub.mkdir()
    (sub / "a.wav").write_bytes(b"RIFF")
    write(sub, "version: 1\noutput_dir: out\njobs:\n  - {file: a.wav, mode: two}\n")
    monkeypatch.chdir(tmp_path)
    manifest = load_manifest(Path("project/jobs.yaml"))
    assert manifest.output_dir == sub / "out"
    assert manifest.jobs[0].source.file == sub / "a.wav"


def test_normalize_url() -> None:
    """Spellings of one URL that differ only trivially normalise to one string."""
    assert normalize_url("HTTPS://Example.COM:443/A?b=1#frag") == "https://example.com/A?b=1"
    assert normalize_url("http://e.com") == "http://e.com/"
    assert normalize_url("http://e.com:8080/x") == "http://e.com:8080/x"
    assert normalize_url("http://[::1]:80/x") == "http://[::1]/x"


def test_parse_manifest_takes_text(tmp_path: Path) -> None:
    """parse_manifest checks text in memory, anchored at the given path."""
    manifest, problems = parse_manifest(
        "version: 1\njobs:\n  - {url: 'https://e.com/a', mode: six}\n", path=tmp_path / "m.yaml"
    )
    assert problems == []
    assert manifest is not None and manifest.output_dir == tmp_path / "stems"


def test_dump_round_trip_keeps_everything(tmp_path: Path, song: Path) -> None:
    """dump_manifest writes a manifest that loads back to the same settings and jobs."""
    path = write(
        tmp_path,
        """
        version: 1
        output_dir: out
        concurrency: 5
        budget: {max_spend_usd: 0.3, keep_balance_usd: 10}
        jobs:
          - {file: song.wav, mode: single, stem: piano, duration: 10.25}
          - {url: 'https://e.com/a?x=1', mode: producer}
        """,
    )
    first = load_manifest(path)
    again = load_manifest(write(tmp_path, dump_manifest(first), name="again.yaml"))
    assert again.jobs == first.jobs
    assert (again.output_dir, again.concurrency, again.budget) == (
        first.output_dir,
        first.concurrency,
        first.budget,
    )
