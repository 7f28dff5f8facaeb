"""Where stems land: the manifest's ``output_path`` template, checked at validate time and
followed by a run against the sandbox; properties (hypothesis) that an accepted template
never leaves the output folder and never puts two stems on one path."""

from __future__ import annotations

import io
import json
import string
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from conftest import FAST, results_of, run_cli, write_manifest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchpod.cli import main
from batchpod.manifest import parse_manifest
from batchpod.models import Job, Mode, Source, Stem
from batchpod.runner._stems import stem_paths
from batchpod.sandbox import SandboxThread
from batchpod.templates import FIELDS, PathTemplate, TemplateError, clashes, safe_stem, stems_of

pytestmark = pytest.mark.usefixtures("clean_env")


def _validate(path: Path) -> tuple[int, list[str]]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["validate", str(path)], stdout=out, stderr=err)
    return code, [ln for ln in err.getvalue().splitlines() if ln.startswith(str(path))]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("'../{name}/{stem}.{ext}'", "cannot have a '..' folder"),
        ("'/srv/{name}/{stem}.{ext}'", "must be relative to the output folder"),
        ("'{name}//{stem}.{ext}'", "cannot have an empty folder"),
        ("'{name}/{stem}.{ext}/'", "cannot have an empty folder"),
        ("'.batchpod/{stem}.{ext}'", "cannot start with a hidden folder"),
        ("'{name}/./{stem}.{ext}'", "cannot have a '.' folder"),
        ("'{name}\\\\{stem}.{ext}'", "cannot hold '\\\\'"),
        ("'{artist}/{stem}.{ext}'", "unknown 'output_path' field {artist}"),
        ("'{meta}/{stem}.{ext}'", "{meta} names no metadata key"),
        ("'{meta.is-rc}/{stem}.{ext}'", "{meta.is-rc} names no metadata key"),
        ("'{name}/{stem:>10}.{ext}'", "cannot take a format or conversion"),
        ("'{name}/{stem.{ext}'", "is not a template"),
        ("'{name}/song.{ext}'", "must contain {stem}"),
        ("'{name}/{stem}.wav'", "must contain {ext}"),
        ("42", "'output_path' must be text"),
    ],
)
def test_a_bad_template_is_one_problem_at_its_line(
    tmp_path: Path, template: str, message: str
) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(
        "version: 1\noutput_format: flac\n"
        f"output_path: {template}\n"
        "jobs:\n  - {url: 'https://e.com/a.mp3', mode: two}\n",
        encoding="utf-8",
    )
    code, problems = _validate(path)
    assert code == 2
    (problem,) = problems
    assert problem.startswith(f"{path}:3:14: ") and message in problem, problem


def test_stems_that_would_meet_are_a_problem_at_the_later_jobs_line(tmp_path: Path) -> None:
    """Without {name}, two jobs of one song name (in other folders, and case) meet; a job
    of another mode that shares a stem name meets too; two single jobs of one song that
    isolate different stems do not."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for name in ("a/Song.wav", "b/song.wav", "a/other.wav"):
        (tmp_path / name).write_bytes(b"RIFF")
    path = tmp_path / "jobs.yaml"
    path.write_text(
        "version: 1\n"
        "output_path: '{source}/{stem}.{ext}'\n"
        "jobs:\n"
        "  - {file: a/Song.wav, mode: four}\n"  # line 4
        "  - {file: b/song.wav, mode: two}\n"  # line 5: vocals meets line 4's
        "  - {file: a/other.wav, mode: single, stem: vocals}\n"
        "  - {file: a/other.wav, mode: single, stem: drums}\n"  # no stem in common
        "  - {file: a/other.wav, mode: six}\n",  # line 8: vocals meets line 6's
        encoding="utf-8",
    )
    code, problems = _validate(path)
    assert code == 2
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"{path}:5:") and "as job 1's (line 4)" in problems[0]
    assert "'song/vocals.wav'" in problems[0].casefold()
    assert problems[1].startswith(f"{path}:8:") and "as job 3's (line 6)" in problems[1]


def test_a_name_too_long_for_a_file_system_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    name = "é" * 90  # 180 bytes
    path.write_text(
        "version: 1\noutput_path: '{name}-{source}-{stem}.{ext}'\njobs:\n"
        f"  - {{url: 'https://e.com/{'s' * 90}.mp3', mode: two, name: {name}}}\n",
        encoding="utf-8",
    )
    code, problems = _validate(path)
    assert code == 2
    (problem,) = problems
    assert problem.startswith(f"{path}:4:") and "longer than 255 bytes" in problem


def test_a_run_writes_where_the_template_says_and_a_rerun_fetches_nothing(
    tmp_path: Path,
) -> None:
    path = write_manifest(
        tmp_path,
        "  - {url: 'https://cdn.example.com/music/Night%20Drive.mp3', mode: two}\n"
        "  - {file: song.wav, mode: single, stem: drums}\n",
        output_path="'{mode}/{source}/{stem}.{ext}'",
        output_format="flac",
    )
    assert _validate(path) == (0, [])
    with SandboxThread(FAST) as sb:
        code, _, err = run_cli(sb, path)
        again = run_cli(sb, path)
        stats = sb.stats()
    assert code == 0, err
    assert again[0] == 0, again[2]
    assert stats["jobs"]["created"] == 2
    stems = tmp_path / "stems"
    written = sorted(p.relative_to(stems).as_posix() for p in stems.rglob("*.flac"))
    assert written == [
        "single/song/drums.flac",
        "single/song/no_drums.flac",
        "two/Night Drive/no_vocals.flac",
        "two/Night Drive/vocals.flac",
    ]
    recorded = sorted(f["path"] for job in results_of(path)["jobs"] for f in job["files"])
    assert recorded == [f"stems/{p}" for p in written]
    # The done records name the files where they are.
    for record in (stems / ".batchpod" / "done").glob("*.json"):
        for entry in json.loads(record.read_text())["files"]:
            assert (stems / entry["path"]).is_file()
    assert all(j["status"] == "succeeded" for j in results_of(path)["jobs"])
    assert "downloaded" not in again[1] + again[2]


def test_output_path_flag_is_checked_against_the_jobs(tmp_path: Path) -> None:
    path = write_manifest(
        tmp_path,
        "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n"
        "  - {url: 'https://cdn.example.com/b/a.mp3', mode: two}\n",
    )
    with SandboxThread(FAST) as sb:
        code, _, err = run_cli(sb, path, "--output-path", "{source}/{stem}.{ext}")
        bad = run_cli(sb, path, "--output-path", "../{name}/{stem}.{ext}")
        good = run_cli(sb, path, "--output-path", "{name}-{stem}.{ext}")
        stats = sb.stats()
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "would write a stem of job 'a-two' to a/vocals.wav, where job 'a' writes" in line
    assert bad[0] == 2 and "cannot have a '..' folder" in bad[2]
    assert good[0] == 0, good[2]
    assert stats["jobs"]["created"] == 2
    assert sorted(p.name for p in (tmp_path / "stems").glob("*.wav")) == [
        "a-no_vocals.wav",
        "a-two-no_vocals.wav",
        "a-two-vocals.wav",
        "a-vocals.wav",
    ]


def test_a_symbolic_link_on_the_way_fails_the_job(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    path = write_manifest(
        tmp_path,
        "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n",
        output_path="'{mode}/{name}/{stem}.{ext}'",
    )
    (tmp_path / "stems").mkdir()
    (tmp_path / "stems" / "two").symlink_to(outside)
    with SandboxThread(FAST) as sb:
        code, _, _ = run_cli(sb, path)
    assert code != 0
    (job,) = results_of(path)["jobs"]
    assert job["status"] == "failed" and "symbolic link" in job["error"]["message"]
    assert not list(outside.iterdir())


# -- properties ----------------------------------------------------------------------------

# Template text from pieces that include everything a hostile or careless template could
# hold: separators, dots, spaces, braces, Unicode, and every field (some unknown).
_literal = st.sampled_from(["/", "-", "_", ".", "..", " ", "x", "Ü", "{{", "}}", ":", "./", ""])
_field = st.sampled_from([*FIELDS, "stem", "stem", "ext", "meta.isrc", "bad"]).map(
    lambda f: "{" + f + "}"
)
_hostile = st.lists(st.one_of(_literal, _field), min_size=1, max_size=9).map("".join)
# And templates shaped like real ones (folders of fields and a little text, {stem} in one of
# them and .{ext} at the end, mostly), so that many are accepted and their paths tested.
_piece = st.one_of(
    st.sampled_from(["-", "_", "x", "Ü", "x y", "."]),
    st.sampled_from([*FIELDS, "meta.isrc"]).map(lambda f: "{" + f + "}"),
)
_folder = st.lists(_piece, min_size=1, max_size=3).map("".join)


@st.composite
def _shaped(draw: st.DrawFn) -> str:
    folders = draw(st.lists(_folder, min_size=1, max_size=3))
    at = draw(st.integers(0, len(folders) - 1))
    folders[at] += draw(st.sampled_from(["{stem}", "-{stem}", "_{stem}", "{stem}x"]))
    return "/".join(folders) + draw(st.sampled_from([".{ext}", ".{ext}", "-{ext}", ""]))


_template = st.one_of(_hostile, _shaped(), _shaped())

_name = st.text(
    string.ascii_letters + string.digits + " -_.éßÅ",
    min_size=1,
    max_size=12,
)
_base = st.lists(
    st.sampled_from([*string.ascii_letters[:8], "A", "B", ".", "-", "_", "%20", "%2F", "é", "1"]),
    min_size=1,
    max_size=8,
).map("".join)


_meta_value = st.lists(
    st.sampled_from(["/", "..", ".", " ", "\\", ":", "a", "A", "b", "1", "é", "?"]),
    min_size=1,
    max_size=6,
).map("".join)


@st.composite
def _jobs(draw: st.DrawFn) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 6))):
        job: dict[str, Any] = {"url": f"https://e.com/{draw(_base)}/{draw(_base)}.mp3"}
        mode = draw(st.sampled_from([Mode.TWO, Mode.FOUR, Mode.SIX, Mode.SINGLE]))
        job["mode"] = mode.value
        if mode is Mode.SINGLE:
            job["stem"] = draw(st.sampled_from(list(Stem))).value
        if draw(st.booleans()):
            job["name"] = draw(_name)
        if draw(st.integers(0, 3)):  # metadata of any text: separators, dots, spaces, case
            job["meta"] = {"isrc": draw(_meta_value)}
        jobs.append(job)
    return jobs


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(template=_template, jobs=_jobs())
def test_an_accepted_template_stays_inside_and_never_puts_two_stems_on_one_path(
    template: str, jobs: list[dict[str, Any]]
) -> None:
    """Whatever template and jobs: if ``validate`` accepts the manifest, every stem a job's
    mode returns gets a path inside the output folder (relative, no '..', not in
    .batchpod/), every path has the template's depth, and no two are equal ignoring case."""
    text = yaml.safe_dump({"version": 1, "output_path": template, "jobs": jobs})
    manifest, problems = parse_manifest(text, path=Path("/m/jobs.yaml"))
    try:
        PathTemplate.parse(template)
        parsed = True
    except TemplateError:
        parsed = False
    if manifest is None:
        # Refused: for the template itself (the same answer as PathTemplate.parse), or for
        # the jobs (names, clashes); never silently.
        assert problems
        return
    assert parsed
    layout = PathTemplate.parse(manifest.output_path)
    seen: dict[str, str] = {}
    depths = set()
    for job in manifest.jobs:
        urls = {s: f"https://cdn/{s}.wav" for s in stems_of(job)}
        for stem, path in stem_paths(layout, job, urls).items():
            _assert_inside(path)
            depths.add(len(path.parts))
            key = str(path).casefold()
            assert key not in seen, f"{job.name}/{stem} and {seen[key]} both at {path}"
            seen[key] = f"{job.name}/{stem}"
    assert len(depths) <= 1


_server_stem = st.text(string.ascii_letters + "./_-Ü ", min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    template=_template,
    stems=st.lists(_server_stem, min_size=1, max_size=8, unique=True),
    name=_name.filter(lambda n: n == n.strip() and not n.startswith(".")),
)
def test_whatever_stems_the_server_names_one_job_gets_paths_of_its_own(
    template: str, stems: list[str], name: str
) -> None:
    """Stem names from the server (separators, dots, case twins) never leave the folder
    and never share a path within a job."""
    try:
        layout = PathTemplate.parse(template)
    except TemplateError:
        return
    job = Job(name=name, source=Source(url="https://e.com/a.mp3"), mode=Mode.PRODUCER)
    paths = stem_paths(layout, job, {s: f"https://cdn/{s}.wav" for s in stems})
    assert len({str(p).casefold() for p in paths.values()}) == len(stems)
    for path in paths.values():
        _assert_inside(path)
    assert all(safe_stem(s) and "/" not in safe_stem(s) for s in stems)


def test_clashes_finds_a_shared_unknown_stem_name_between_jobs() -> None:
    """Modes whose stem names are not documented meet on any name they share."""
    layout = PathTemplate.parse("{source}/{stem}.{ext}")
    jobs = [
        Job(name=n, source=Source(url=f"https://e.com/{d}/song.mp3"), mode=Mode.PRODUCER)
        for n, d in (("one", "a"), ("two", "b"))
    ]
    (found,) = list(clashes(layout, jobs, ext="wav"))
    assert not isinstance(found, int)
    assert (found.first, found.second, found.path, found.stem) == (0, 1, "song/{stem}.wav", None)


def _assert_inside(path: PurePosixPath) -> None:
    assert not path.is_absolute(), path
    assert ".." not in path.parts and "." not in path.parts and "" not in path.parts
    assert not path.parts[0].startswith("."), path
    assert all(len(p.encode()) <= 255 for p in path.parts)
