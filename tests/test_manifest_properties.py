"""Properties of the manifest loader: round trips, and no input ever makes it raise."""

from __future__ import annotations

import atexit
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchpod.errors import Problem
from batchpod.identity import (
    is_simple_url,
    normalize_url,
    normalize_url_split,
    url_parts,
    url_parts_split,
)
from batchpod.manifest import LOADERS, dump_manifest, load_manifest, parse_manifest
from batchpod.models import Mode, Stem

# A fixed folder of source files shared by every example (hypothesis forbids function fixtures).
_SONGS = Path(tempfile.mkdtemp(prefix="batchpod-props-"))
atexit.register(shutil.rmtree, _SONGS, ignore_errors=True)
_FILES = ["a.wav", "b b.flac", "sub/c.mp3", "Ünï.ogg"]
for _name in _FILES:
    (_SONGS / _name).parent.mkdir(parents=True, exist_ok=True)
    (_SONGS / _name).write_bytes(b"RIFF")

_host = st.from_regex(r"[a-z][a-z0-9-]{0,10}\.(com|org|io)", fullmatch=True)
_path = st.lists(st.text(string.ascii_letters + string.digits + "-_.~%", min_size=1, max_size=8))
_url = st.builds(
    lambda scheme, host, parts: f"{scheme}://{host}/{'/'.join(parts)}",
    st.sampled_from(["http", "https"]),
    _host,
    _path,
)
_name = st.text(string.ascii_letters + string.digits + " -_", min_size=1, max_size=20).filter(
    lambda s: s == s.strip()
)


@st.composite
def _job(draw: st.DrawFn) -> dict[str, Any]:
    job: dict[str, Any] = {}
    if draw(st.booleans()):
        job["url"] = draw(_url)
    else:
        job["file"] = draw(st.sampled_from(_FILES))
    mode = draw(st.sampled_from(list(Mode)))
    job["mode"] = mode.value
    if mode is Mode.SINGLE:
        job["stem"] = draw(st.sampled_from(list(Stem))).value
    if draw(st.booleans()):
        job["duration"] = draw(
            st.one_of(
                st.integers(1, 36_000),
                st.floats(0.001, 36_000, allow_nan=False, allow_infinity=False),
            )
        )
    if draw(st.booleans()):
        job["name"] = draw(_name)
    return job


def _unique_jobs(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop jobs that repeat earlier work or names: the generator's duplicates are not the point."""
    seen: set[Any] = set()
    names: set[str] = set()
    kept = []
    for job in jobs:
        work = (job.get("url") or job.get("file"), job["mode"], job.get("stem"))
        name = job.get("name", "").casefold()
        if work in seen or (name and name in names):
            continue
        seen.add(work)
        names.add(name)
        kept.append(job)
    return kept


_manifest = st.fixed_dictionaries(
    {
        "version": st.just(1),
        "jobs": st.lists(_job(), min_size=1, max_size=12).map(_unique_jobs),
    },
    optional={
        "output_dir": st.sampled_from(["stems", "out/x", "../elsewhere"]),
        "concurrency": st.integers(1, 500),
        "budget": st.fixed_dictionaries(
            {},
            optional={
                "max_spend_usd": st.integers(0, 10**6).map(lambda c: c / 100),
                "keep_balance_usd": st.integers(0, 10**6).map(lambda c: c / 100),
            },
        ),
        "defaults": st.fixed_dictionaries({}, optional={"duration": st.integers(1, 600)}),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_manifest)
def test_load_dump_load_gives_the_same_jobs(data: dict[str, Any]) -> None:
    """For any valid manifest, load -> dump -> load gives the same jobs and settings."""
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    first, problems = parse_manifest(text, path=_SONGS / "jobs.yaml")
    assert problems == [], [str(p) for p in problems]
    assert first is not None
    assert len(first.jobs) == len(data["jobs"])
    dumped = _SONGS / "dumped.yaml"
    dumped.write_text(dump_manifest(first), encoding="utf-8")
    again = load_manifest(dumped)
    assert again.jobs == first.jobs
    assert [job.name for job in again.jobs] == [job.name for job in first.jobs]
    assert again.output_dir == first.output_dir
    assert again.concurrency == first.concurrency
    assert again.budget == first.budget


def _check_never_raises(data: bytes | str) -> None:
    for loader in LOADERS:
        manifest, problems = parse_manifest(data, path=_SONGS / "fuzz.yaml", loader=loader)
        assert (manifest is None) == bool(problems)
        assert all(isinstance(p, Problem) and p.message for p in problems)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(data: bytes) -> None:
    """Random bytes give a manifest or a list of problems, never an exception."""
    _check_never_raises(data)


_yaml_value = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**30), 10**30),
        st.floats(),
        st.text(max_size=20),
        st.sampled_from(["four", "single", "vocals", "https://e.com/a", "a.wav", "1", "."]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(
                st.sampled_from(["version", "jobs", "url", "file", "mode", "stem", "name"]),
                st.sampled_from(["duration", "defaults", "budget", "concurrency", "output_dir"]),
                st.text(max_size=8),
                st.integers(),
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(_yaml_value)
def test_random_yaml_never_raises(value: Any) -> None:
    """Any YAML document, however wrong as a manifest, gives problems, never an exception."""
    _check_never_raises(yaml.safe_dump(value, allow_unicode=True))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.printable + "ü€{}[]&*!|>'\"%@`", max_size=300))
def test_random_text_never_raises(text: str) -> None:
    """Arbitrary text, mostly broken YAML, gives problems, never an exception."""
    _check_never_raises(text)


_url_char = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
_any_url = st.builds(
    lambda scheme, host, port, path, query, fragment: (
        f"{scheme}://{host}{port}{path}{query}{fragment}"
    ),
    st.sampled_from(["http", "https", "http", "https", "HTTP", "Https", "ftp"]),
    st.one_of(
        st.from_regex(r"[a-z0-9.-]{1,12}", fullmatch=True),
        st.text(string.ascii_letters + string.digits + ".-_@:[]", max_size=12),
    ),
    st.sampled_from(["", "", "", "", ":80", ":443", ":8080", ":x"]),
    st.one_of(st.just(""), st.text(_url_char, max_size=12).map(lambda p: "/" + p)),
    st.one_of(st.just(""), st.text(_url_char, max_size=10).map(lambda q: "?" + q)),
    st.sampled_from(["", "#", "#frag"]),
)


@settings(max_examples=1000, deadline=None)
@given(_any_url)
def test_the_common_url_shortcut_agrees_with_urlsplit(url: str) -> None:
    """URLs of the common shape skip `urlsplit`; for them it gives the same answers."""
    if not is_simple_url(url):
        return  # the long way is the only way for this one
    assert normalize_url(url) == normalize_url_split(url)
    assert url_parts(url) == url_parts_split(url)
    parts = urlsplit(url)  # what `url()` checks the long way: scheme, host and port
    assert parts.scheme in ("http", "https") and parts.hostname and parts.port is None
