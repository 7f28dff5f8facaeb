"""Hostile manifests: each is refused with a clear problem, quickly, in bounded memory.

Alias bombs, deep nesting, huge scalars, bytes that are not UTF-8, tags that would construct
objects, and manifests of a million jobs. None may raise, take long, or print more than one
short line per problem. The largest ones run in a child process with its address space capped.
"""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchpod.errors import Problem
from batchpod.manifest import (
    DEFAULT_LIMITS,
    EVENT_PARSERS,
    LOADERS,
    MAX_JOBS,
    MAX_MANIFEST_BYTES,
    ManifestLimits,
    check_manifest,
    parse_manifest,
)

LOADER_IDS = [loader.__name__ for loader in LOADERS]
JOB = "{url: 'https://e.com/a', mode: two}"
JOB_FORMAT = JOB.replace("{", "{{").replace("}", "}}")
JOBS_LIMIT = f"'jobs' lists more than {MAX_JOBS:,} jobs, the limit for one manifest"
SIZE_LIMIT = f"over the {MAX_MANIFEST_BYTES // 2**20} MiB limit"
SPLIT = "split the catalogue into several manifests"
#: The most Python memory refusing a hostile manifest may take. Reading a file takes a
#: buffer of the size limit (32 MiB); the largest refusal here peaks at about 76 MiB.
PEAK_MIB = 128


def checked(
    path: Path,
    loader: type[Any],
    *,
    limits: ManifestLimits = DEFAULT_LIMITS,
    event_parser: type[Any] | None = None,
) -> list[Problem]:
    """The problems in ``path``, which must be refused with at most ``PEAK_MIB`` of Python
    memory at the peak (traced by ``tracemalloc``): the work a hostile manifest makes is
    bounded by the limits, not by what the file asks for (an expanded alias bomb or an
    unbounded nesting would take gigabytes). How fast it is refused is the benchmark's
    business (``scripts/bench.py validate``); a hang meets pytest-timeout."""
    tracemalloc.start()
    try:
        manifest, problems = check_manifest(
            path, limits=limits, loader=loader, event_parser=event_parser
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert manifest is None
    assert problems, "a hostile manifest must be refused"
    assert peak <= PEAK_MIB * 2**20, f"peaked at {peak / 2**20:.1f} MiB"
    for problem in problems:
        text = str(problem)
        assert "\n" not in text and "\x1b" not in text, text
        assert len(text) < 1000, text[:200]
    return problems


def messages(problems: list[Problem]) -> list[str]:
    return [p.message for p in problems]


def laughs(levels: int = 9, width: int = 9) -> str:
    """Top-level lists that alias the one before, ``width`` times each: ``width**levels`` leaves."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def merge_laughs(levels: int = 9, width: int = 9) -> str:
    """Mappings that merge (``<<:``) the one before, ``width`` times each."""
    lines = [f"m0: &m0 {JOB}"]
    lines += [
        f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * width)}]}}" for i in range(1, levels + 1)
    ]
    return "\n".join(lines) + "\n"


# -- alias bombs ----------------------------------------------------------------------------

ALIAS_BOMBS = [
    # (name, manifest text, a message every such manifest must get)
    (
        "jobs is a list of aliases to lists",
        "version: 1\n" + laughs() + "jobs: *l9\n",
        "job 9 must be a mapping of job fields, got a list",
    ),
    (
        "job fields are aliases to the bomb",
        "version: 1\n"
        + laughs()
        + "jobs:\n  - &j {url: *l9, mode: *l9, stem: *l9, name: *l9, duration: *l9}\n"
        + "  - *j\n" * 1000,
        "job 1001 is job 1 again (through a YAML alias)",
    ),
    (
        "one job reached through aliases many times",
        f"version: 1\njobs:\n  - &j {JOB}\n" + "  - *j\n" * 20_000,
        "job 20001 is job 1 again (through a YAML alias)",
    ),
    (
        "jobs merge a merge bomb",
        "version: 1\n" + merge_laughs() + "jobs:\n" + "  - {<<: *m9, name: x}\n" * 1000,
        "keys must be plain names in job 1000",
    ),
    (
        "jobs are the merge bomb itself",
        "version: 1\n" + merge_laughs() + "jobs: [" + ", ".join(["*m9"] * 1000) + "]\n",
        "job 1000 is job 1 again (through a YAML alias)",
    ),
    (
        "aliases inside defaults",
        "version: 1\n"
        + laughs()
        + merge_laughs()
        + "defaults: {<<: *m9, mode: *l9, stem: *l9, duration: *l9, url: *l9}\n"
        + f"jobs:\n  - {JOB}\n",
        "keys must be plain names in 'defaults'",
    ),
    (
        "a list that contains itself",
        "version: 1\njobs: &r [*r, *r, *r]\n",
        "job 3 must be a mapping of job fields, got a list",
    ),
    (
        "a job that contains itself",
        "version: 1\njobs:\n  - &m {url: *m, mode: *m, name: *m}\n  - *m\n",
        "expected a single value, got a mapping",
    ),
]


@pytest.mark.parametrize("loader", LOADERS, ids=LOADER_IDS)
@pytest.mark.parametrize(
    ("text", "message"), [b[1:] for b in ALIAS_BOMBS], ids=[b[0] for b in ALIAS_BOMBS]
)
def test_alias_bombs_are_reported_quickly(
    tmp_path: Path, loader: type[Any], text: str, message: str
) -> None:
    """Aliases share nodes and a job reached again is not checked again: no work multiplies."""
    path = tmp_path / "bomb.yaml"
    path.write_text(text, encoding="utf-8")
    problems = checked(path, loader)
    assert any(message in m for m in messages(problems)), messages(problems)[:20]
    # Problems grow with the text (its lines and aliases), not with the leaves aliases reach.
    assert len(problems) <= 5 * (text.count("\n") + text.count("*")), len(problems)


@pytest.mark.parametrize("loader", LOADERS, ids=LOADER_IDS)
def test_a_job_listed_again_is_found_wherever_it_was_written(
    tmp_path: Path, loader: type[Any]
) -> None:
    """A repeat is found whether its mapping was written in the list, before it, or inside
    another job; a mapping first listed through an alias is checked like any other job."""
    path = tmp_path / "jobs.yaml"
    path.write_text(
        "version: 1\n"
        "x: &early {url: 'https://e.com/early', mode: two}\n"
        "jobs:\n"
        "  - *early\n"
        "  - {url: 'https://e.com/a', mode: two, stem: &inner {url: 'https://e.com/b'}}\n"
        "  - *inner\n"
        "  - &late {url: 'https://e.com/c', mode: two}\n"
        "  - *late\n"
        "  - *inner\n"
        "  - *early\n",
        encoding="utf-8",
    )
    problems = checked(path, loader)
    assert [(p.line, p.message) for p in problems] == [
        (2, "unknown key 'x' at the top level"),
        (2, "job 7 is job 1 again (through a YAML alias)"),
        (5, "expected a single value, got a mapping"),
        (5, "job 3 has no 'mode'"),
        (5, "job 6 is job 3 again (through a YAML alias)"),
        (7, "job 5 is job 4 again (through a YAML alias)"),
    ]


@pytest.mark.parametrize("loader", LOADERS, ids=LOADER_IDS)
def test_aliases_cannot_pass_the_job_limit(tmp_path: Path, loader: type[Any]) -> None:
    """Aliases list many jobs in little text: the job limit applies to them too."""
    limits = ManifestLimits(max_jobs=1000)
    path = tmp_path / "jobs.yaml"
    path.write_text(f"version: 1\njobs:\n  - &j {JOB}\n" + "  - *j\n" * 1000, encoding="utf-8")
    (problem,) = checked(path, loader, limits=limits)
    assert (problem.line, problem.column) == (3, 3)
    assert problem.message == "'jobs' lists more than 1,000 jobs, the limit for one manifest"
    assert problem.hint == SPLIT


# -- limits found by counting, before composing ----------------------------------------------


@pytest.fixture(params=["C events", "pure events"])
def event_parser(request: pytest.FixtureRequest) -> type[Any]:
    """Count a large manifest's events with libyaml, or with the pure parser as without it."""
    if request.param == "pure events":
        return EVENT_PARSERS[-1]
    if len(EVENT_PARSERS) == 1:
        pytest.skip("PyYAML was built without libyaml")
    return EVENT_PARSERS[0]


@pytest.mark.parametrize("jobs", [1000, 1001])
def test_job_limit_when_counted_matches_composed(
    tmp_path: Path, event_parser: type[Any], jobs: int
) -> None:
    """Counted from events (a large file) or from the composed list, the limit is the same."""
    limits = ManifestLimits(max_jobs=1000)
    path = tmp_path / "jobs.yaml"
    path.write_text("version: 1\njobs:\n" + "  - a\n" * jobs, encoding="utf-8")
    composed = check_manifest(path, limits=limits, event_parser=event_parser)[1]
    # Count every text, and pass the node limit so that the events are read one by one.
    limits = ManifestLimits(max_jobs=1000, count_first_chars=0, max_nodes=1010)
    counted = check_manifest(path, limits=limits, event_parser=event_parser)[1]
    assert counted == composed
    if jobs > 1000:
        (problem,) = counted
        assert (problem.line, problem.column, problem.hint) == (3, 3, SPLIT)
        assert problem.message == "'jobs' lists more than 1,000 jobs, the limit for one manifest"
    else:
        assert len(counted) == 1000
        assert all("must be a mapping of job fields" in m for m in messages(counted))


def test_a_manifest_at_the_limits_is_counted_and_loaded(
    tmp_path: Path, event_parser: type[Any]
) -> None:
    """Exactly max_jobs jobs in exactly max_nodes nodes pass the count and load."""
    # The root, 'version: 1', 'jobs' and its list, then a mapping and 3 keys and values a job.
    limits = ManifestLimits(count_first_chars=0, max_jobs=100, max_nodes=5 + 100 * 7)
    path = tmp_path / "jobs.yaml"
    lines = (f"  - {{url: 'https://e.com/{i}', mode: two, name: n{i}}}\n" for i in range(100))
    path.write_text("version: 1\njobs:\n" + "".join(lines), encoding="utf-8")
    manifest, problems = check_manifest(path, limits=limits, event_parser=event_parser)
    assert problems == []
    assert manifest is not None and len(manifest.jobs) == 100


def test_node_limit(tmp_path: Path, event_parser: type[Any]) -> None:
    """Too many YAML nodes, even outside 'jobs', are refused before composing."""
    limits = ManifestLimits(max_nodes=10_000, count_first_chars=0)
    path = tmp_path / "jobs.yaml"
    path.write_text(f"version: 1\njobs: [{JOB}]\nx: [" + "1," * 20_000 + "1]\n")
    (problem,) = checked(path, LOADERS[0], limits=limits, event_parser=event_parser)
    # Twelve nodes come before the list's first item (root, keys, values, 'x' and the list).
    assert (problem.line, problem.column) == (3, 5 + 2 * (10_001 - 12 - 1))
    assert problem.message == (
        "the manifest has more than 10,000 YAML nodes (keys, values, lists and mappings), "
        "the limit for one manifest"
    )
    assert problem.hint == SPLIT


def test_counting_stops_at_a_syntax_error(tmp_path: Path, event_parser: type[Any]) -> None:
    """A character YAML refuses, met while counting, is reported as composing finds it."""
    limits = ManifestLimits(count_first_chars=0, max_nodes=20)  # libyaml's count fails
    path = tmp_path / "jobs.yaml"
    path.write_text(f"version: 1\njobs:\n  - {JOB}\n  - {{url: '\x1b', mode: two}}\n")
    (problem,) = checked(path, LOADERS[0], limits=limits, event_parser=event_parser)
    assert (problem.line, problem.column) == (4, 12)
    assert problem.message == "YAML syntax error: character #x001b is not allowed in YAML"
    path.write_text(f"version: 1\njobs:\n  - {JOB}\n  - {{url: 'https://e.com/b', mode: two\n")
    (problem,) = checked(path, LOADERS[0], limits=limits, event_parser=event_parser)
    assert problem.message.startswith("YAML syntax error"), str(problem)


# -- deep nesting -----------------------------------------------------------------------------

NESTING = [
    ("flow lists", "version: 1\njobs: " + "[" * 1_100_000 + "\n", LOADERS),
    ("flow mappings", "version: 1\njobs: " + "{a: " * 400_000 + "\n", LOADERS),
    ("block mappings", "version: 1\njobs:\n" + "".join(f"{'  ' * i}a:\n" for i in range(1500)), LOADERS),  # noqa: E501
    # Counted first (libyaml stops at the nesting), then composed; the pure-Python parser
    # composes the same text as it does "flow lists", only slower after the long comment.
    ("after a megabyte", "version: 1\n# " + "x" * 1_100_000 + "\njobs: " + "[" * 100_000, LOADERS[:1]),  # noqa: E501
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "loader"),
    [
        pytest.param(text, loader, id=f"{name}-{loader.__name__}")
        for name, text, loaders in NESTING
        for loader in loaders
    ],
)
def test_deep_nesting_is_refused(tmp_path: Path, loader: type[Any], text: str) -> None:
    """Nesting past libyaml's 1000 levels (or Python's recursion limit) is one clear problem."""
    path = tmp_path / "deep.yaml"
    path.write_text(text, encoding="utf-8")
    (problem,) = checked(path, loader)
    assert "nest" in problem.message, str(problem)


# -- huge scalars -----------------------------------------------------------------------------


def test_huge_scalar_is_refused_by_the_size_limit_unread(tmp_path: Path) -> None:
    """A 50 MB URL is refused from the file's size alone: nothing is read or parsed."""
    path = tmp_path / "huge.yaml"
    with path.open("w", encoding="ascii") as out:
        out.write("version: 1\njobs:\n  - mode: two\n    url: https://e.com/")
        for _ in range(50):
            out.write("a" * 1_000_000)
        out.write("\n")
    size = path.stat().st_size
    for loader in LOADERS:
        (problem,) = checked(path, loader)
        assert str(problem) == (
            f"{path}: the manifest is {size:,} bytes, {SIZE_LIMIT} "
            f"({SPLIT} of at most {MAX_MANIFEST_BYTES:,} bytes)"
        )
        assert (problem.line, problem.column) == (0, 0)


def test_parse_manifest_applies_the_size_limit(tmp_path: Path) -> None:
    """Text given directly is held to the same limit, counted in UTF-8 bytes."""
    just_over = "#" * MAX_MANIFEST_BYTES + "\n"
    for data in (just_over, just_over.encode(), "é" * (MAX_MANIFEST_BYTES // 2 + 1)):
        manifest, (problem,) = parse_manifest(data, path=tmp_path / "m.yaml")
        assert manifest is None and SIZE_LIMIT in problem.message, str(problem)
    # At the limit it is read (and found empty: it is all one comment).
    at_limit = "#" * (MAX_MANIFEST_BYTES - 1) + "\n"
    (problem,) = parse_manifest(at_limit, path=tmp_path / "m.yaml")[1]
    assert problem.message == "the manifest is empty"


def test_a_stream_past_the_size_limit_is_refused() -> None:
    """A pipe or device has no size to check first: reading stops just past the limit."""
    manifest, (problem,) = check_manifest("/dev/zero")
    assert manifest is None
    assert problem.message == f"the manifest is {SIZE_LIMIT}"


BIG = 8_000_000  # characters: over _COUNT_FIRST_CHARS, and slow to match or print if mishandled
HUGE_SCALARS = [
    ("key", "version: 1\n? {s}\n: 1\njobs:\n  - " + JOB_FORMAT + "\n", "unknown key 'kkk"),
    ("url", "version: 1\njobs:\n  - {{url: 'https://e.com/{s}', mode: two}}\n", "longer than 8192"),
    ("host", "version: 1\njobs:\n  - {{url: 'https://{s}', mode: two}}\n", "longer than 8192"),
    ("mode", "version: 1\njobs:\n  - {{url: 'https://e.com/a', mode: {s}}}\n", "unknown mode"),
    (
        "stem",
        "version: 1\njobs:\n  - {{url: 'https://e.com/a', mode: single, stem: {s}}}\n",
        "unknown stem",
    ),
    ("name", "version: 1\njobs:\n  - {{url: 'https://e.com/a', mode: two, name: .{s}}}\n", "dot"),
    ("file", "version: 1\njobs:\n  - {{file: {s}, mode: two}}\n", "'file' kkk"),
    ("tag", "version: 1\njobs:\n  - {{url: 'https://e.com/a', mode: !{s} two}}\n", "YAML tag !kk"),
    ("int", "version: 1\njobs:\n  - {{url: 'https://e.com/a', mode: two, duration: 9{d}}}\n", "9999"),  # noqa: E501
    ("float", "version: 1\njobs:\n  - {{url: 'https://e.com/a', mode: two, duration: 1.{d}x}}\n", "1.999"),  # noqa: E501
    ("version", "version: 1{d}\njobs:\n  - " + JOB_FORMAT + "\n", "version"),
    ("alias", "version: 1\njobs:\n  - {{url: 'https://e.com/a', mode: *{s}}}\n", "undefined alias"),
    (
        "control characters",
        'version: 1\njobs:\n  - {{url: "https://e.com/a", mode: "\\e[2J{s}\\n"}}\n',
        "unknown mode '\\x1b[2Jkkk",
    ),
]  # fmt: skip


@pytest.mark.parametrize("loader", LOADERS, ids=LOADER_IDS)
@pytest.mark.parametrize(
    ("template", "message"), [h[1:] for h in HUGE_SCALARS], ids=[h[0] for h in HUGE_SCALARS]
)
def test_huge_scalars_under_the_size_limit(
    tmp_path: Path, loader: type[Any], template: str, message: str
) -> None:
    """A scalar of megabytes is refused quickly, and quoted in its message cut short."""
    size = BIG if loader is LOADERS[0] else BIG // 40  # the pure parser reads ~20x slower
    path = tmp_path / "huge.yaml"
    path.write_text(template.format(s="k" * size, d="9" * size), encoding="utf-8")
    problems = checked(path, loader)
    assert any(message in m for m in messages(problems)), messages(problems)


# -- bytes that are not UTF-8 -----------------------------------------------------------------

NOT_UTF8 = [
    ("latin-1", b"version: 1\njobs:\n  - {url: 'https://e.com/caf\xe9', mode: two}\n", 3, 29),
    ("UTF-16", "version: 1\n".encode("utf-16"), 1, 1),
    (
        "surrogate",
        b"version: 1\njobs:\n  - {url: 'https://e.com/\xed\xa0\x80', mode: two}\n",
        3,
        26,
    ),
    ("overlong", b"version: 1\njobs: \xc0\xaf\n", 2, 7),
    ("cut short", b"version: 1\njobs: \xe2\x82", 2, 7),
    ("after a megabyte", b"version: 1\n" + b"# padding\n" * 200_000 + b"jobs: \xff\n", 200_002, 7),
]


@pytest.mark.parametrize(
    ("data", "line", "column"), [n[1:] for n in NOT_UTF8], ids=[n[0] for n in NOT_UTF8]
)
def test_not_utf8_is_one_problem_at_the_bad_byte(
    tmp_path: Path, data: bytes, line: int, column: int
) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_bytes(data)
    for loader in LOADERS:
        (problem,) = checked(path, loader)
        assert (problem.line, problem.column) == (line, column), str(problem)
        assert problem.message.startswith("not UTF-8 text (byte 0x"), str(problem)
        assert problem.hint == "save the manifest as UTF-8"


@pytest.mark.parametrize("loader", LOADERS, ids=LOADER_IDS)
def test_control_characters_are_a_problem_on_one_line(tmp_path: Path, loader: type[Any]) -> None:
    """NUL and escape bytes are valid UTF-8 but not YAML; escaped ones are quoted escaped."""
    path = tmp_path / "jobs.yaml"
    path.write_text("version: 1\njobs:\n  - {url: 'https://e.com/é\x1b\x00', mode: two}\n")
    (problem,) = checked(path, loader)
    assert (problem.line, problem.column) == (3, 27)
    assert problem.message == "YAML syntax error: character #x001b is not allowed in YAML"
    path.write_text('version: 1\n"evil\\nkey\\e[0m": 1\njobs:\n  - ' + JOB + "\n")
    (problem,) = checked(path, loader)
    assert problem.message == "unknown key 'evil\\nkey\\x1b[0m' at the top level"


# -- tags that would construct objects ---------------------------------------------------------

APPLY = "!!python/object/apply:os.system"
TAGS = [
    # (where, manifest text with MARKER for a file the payload would create, message fragment)
    ("root", f"{APPLY}\nversion: 1\njobs:\n  - {JOB}\n", f"unsupported YAML tag tag:yaml.org,2002:{APPLY[2:]}"),  # noqa: E501
    ("jobs list", f"version: 1\njobs: {APPLY}\n  - {JOB}\n", "unsupported YAML tag"),
    ("job mapping", f"version: 1\njobs:\n  - {APPLY} {JOB}\n", "unsupported YAML tag"),
    ("job as a call", f"version: 1\njobs:\n  - {APPLY} ['touch MARKER']\n", "job 1 must be a mapping"),  # noqa: E501
    ("url as a call", f"version: 1\njobs:\n  - {{url: {APPLY} ['touch MARKER'], mode: two}}\n", "expected a single value, got a list"),  # noqa: E501
    ("mode", f"version: 1\njobs:\n  - {{url: 'https://e.com/a', mode: {APPLY} 'touch MARKER'}}\n", "unsupported YAML tag"),  # noqa: E501
    ("new object", "version: 1\njobs:\n  - {url: 'https://e.com/a', mode: !!python/object/new:os.system ['touch MARKER']}\n", "expected a single value"),  # noqa: E501
    ("name", "version: 1\njobs:\n  - {url: 'https://e.com/a', mode: two, name: !!python/name:os.system x}\n", "unsupported YAML tag"),  # noqa: E501
    ("key", f"version: 1\njobs:\n  - {{{APPLY} url: 'https://e.com/a', mode: two}}\n", "keys must be plain names in job 1"),  # noqa: E501
    ("defaults", f"version: 1\ndefaults: {APPLY} {{mode: two}}\njobs:\n  - {{url: 'https://e.com/a'}}\n", "unsupported YAML tag"),  # noqa: E501
    ("budget", f"version: 1\nbudget: !!python/object:batchpod.models.Budget {{max_spend_usd: 1}}\njobs:\n  - {JOB}\n", "unsupported YAML tag"),  # noqa: E501
    ("set", f"version: 1\nbudget: !!set {{? max_spend_usd}}\njobs:\n  - {JOB}\n", "unsupported YAML tag tag:yaml.org,2002:set"),  # noqa: E501
    ("omap", f"version: 1\njobs: !!omap\n  - a: {JOB}\n", "unsupported YAML tag tag:yaml.org,2002:omap"),  # noqa: E501
    ("local tag", f"version: 1\njobs:\n  - !job {JOB}\n", "unsupported YAML tag !job"),
]  # fmt: skip


@pytest.mark.parametrize("loader", LOADERS, ids=LOADER_IDS)
@pytest.mark.parametrize(("text", "message"), [t[1:] for t in TAGS], ids=[t[0] for t in TAGS])
def test_object_tags_are_refused_and_never_run(
    tmp_path: Path, loader: type[Any], text: str, message: str
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "jobs.yaml"
    path.write_text(text.replace("MARKER", str(marker)), encoding="utf-8")
    problems = checked(path, loader)
    assert any(message in m for m in messages(problems)), messages(problems)
    assert not marker.exists()


# -- a million jobs, in a child process with capped memory -----------------------------------

MEMORY_CAP = 600 * 2**20
CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
from batchpod.manifest import LOADERS, check_manifest
for index in sys.argv[2:]:
    manifest, problems = check_manifest(sys.argv[1], loader=LOADERS[int(index)])
    assert manifest is None
    print(f"### {{LOADERS[int(index)].__name__}}")
    for problem in problems:
        print(problem)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"peak RSS {{peak:.0f}} MiB", file=sys.stderr)
"""


def check_capped(path: Path, loaders: tuple[type[Any], ...] = LOADERS) -> list[str]:
    """What ``check_manifest(path)`` reports with each loader, in one child process whose
    address space is capped at MEMORY_CAP: the same lines from each, returned once."""
    indexes = [str(LOADERS.index(loader)) for loader in loaders]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD.format(cap=MEMORY_CAP), str(path), *indexes],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    runs = proc.stdout.split("### ")[1:]
    assert [run.splitlines()[0] for run in runs] == [loader.__name__ for loader in loaders]
    assert len({run.split("\n", 1)[1] for run in runs}) == 1, runs
    return runs[0].splitlines()[1:]


def write_lines(path: Path, head: str, lines: Iterator[str]) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write(head)
        out.writelines(lines)


def test_a_million_typical_jobs_are_refused_by_size(tmp_path: Path) -> None:
    """At ~90 bytes a job, a million jobs are far past the size limit: refused unread."""
    path = tmp_path / "million.yaml"
    chunk = "".join(
        f"  - url: https://media.example.com/catalogue/{i:07d}.mp3\n"
        f"    mode: four\n    duration: {120 + i % 240}\n"
        for i in range(10_000)
    )
    write_lines(path, "version: 1\njobs:\n", (chunk for _ in range(100)))
    size = path.stat().st_size
    (line,) = check_capped(path)
    assert line.startswith(f"{path}: the manifest is {size:,} bytes, {SIZE_LIMIT} ("), line


def test_a_million_short_jobs_are_refused_by_count(tmp_path: Path) -> None:
    """A million jobs in 15 MB pass the size limit; counting stops at the job limit."""
    path = tmp_path / "million.yaml"
    chunk = "".join(f"- {{file: {i}}}\n" for i in range(10_000))
    write_lines(path, "version: 1\njobs:\n", (chunk for _ in range(100)))
    assert path.stat().st_size <= MAX_MANIFEST_BYTES
    assert check_capped(path) == [f"{path}:3:1: {JOBS_LIMIT} ({SPLIT})"]


def test_a_million_aliased_jobs_are_refused_by_count(tmp_path: Path) -> None:
    """A million jobs in 5 MB of aliases are refused by the job limit too.

    (libyaml only: the pure-Python parser takes half a minute to read so many aliases.)
    """
    path = tmp_path / "million.yaml"
    write_lines(path, f"version: 1\njobs:\n- &j {JOB}\n", ("- *j\n" for _ in range(999_999)))
    assert check_capped(path, LOADERS[:1]) == [f"{path}:3:1: {JOBS_LIMIT} ({SPLIT})"]


# -- the command line --------------------------------------------------------------------------


def test_validate_prints_one_line_per_problem_and_exits_2(tmp_path: Path) -> None:
    """`batchpod validate` on a hostile manifest: exit 2, every problem on its own line."""
    path = tmp_path / "hostile.yaml"
    path.write_text(
        f"{APPLY}\nversion: 1\n"
        + '"evil\\nkey\\e[0m": 1\n'
        + laughs()
        + f"jobs:\n  - &j {{url: *l9, mode: {APPLY} two}}\n"
        + "  - *j\n" * 100
        + f"  - {{file: {'k' * 100_000}, mode: two}}\n",
        encoding="utf-8",
    )
    problems = check_manifest(path)[1]
    proc = subprocess.run(
        [sys.executable, "-m", "batchpod", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines == [str(p) for p in problems]
    assert len(lines) == 1 + 1 + 10 + 2 + 100 + 1  # tag, key, l0-l9, job 1, aliases, file
    assert all(line.startswith(f"{path}:") and len(line) < 1000 for line in lines)
