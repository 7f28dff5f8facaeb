"""A catalogue in, a manifest out: ``batchpod init`` reads folders, globs, CSV exports and URL
lists and writes the jobs manifest for them.

Each source gives entries (a file or URL, with the mode, stem, name, duration and metadata
the source says; ``Entry``):

- a folder: every audio file under it, recursively, in a stable order (by path, compared as
  text), told by its content where the extension lies (WAV, FLAC, MP3, M4A, Ogg, AIFF).
  Hidden files and folders are skipped, and so are symbolic links that lead out of the
  folder or back into a folder already walked (a loop); a link to a file or folder inside
  it is followed. What was skipped is counted (``Scan``);
- a glob (``'incoming/**/*.flac'``, ``**`` for any depth): the audio files it matches;
- a CSV file (``.csv``, ``.tsv``; UTF-8 with or without a byte-order mark; comma, semicolon
  or tab) with a header naming ``url`` or ``file``, and optionally ``mode``, ``stem``,
  ``name``, ``duration``; every other column becomes the job's metadata (its header made a
  metadata key: letters, digits and ``_``);
- any other file: a list of URLs, one per line (``#`` starts a comment).

A local file's duration is read from its header. ``render`` writes the manifest text with a
comment header saying how it was made; ``append_text`` adds, to an existing manifest's
text, the jobs whose sources it does not list yet, leaving every byte of it as it was.
Problems are ``errors.Problem`` at the source's line, raised together (``ManifestError``)
before anything is written.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from batchpod.audio import audio_duration_s, audio_kind
from batchpod.errors import ManifestError, Problem
from batchpod.identity import source_key
from batchpod.manifest import name_problem, url_problem
from batchpod.models import MAX_META_KEY, MAX_META_VALUE, META_KEY, Mode, Source, Stem
from batchpod.results import write_atomic

__all__ = ["Entry", "Scan", "append_text", "jobs_indent", "read_sources", "render", "write_text"]

#: The CSV columns that are job fields; every other column is metadata.
CSV_FIELDS = ("url", "file", "mode", "stem", "name", "duration")
_CSV_SUFFIXES = (".csv", ".tsv")
_GLOB_CHARS = re.compile(r"[*?\[]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Entry:
    """One job to write: a file (absolute) or a URL, and what its source said of it."""

    file: Path | None = None
    url: str | None = None
    mode: Mode | None = None
    stem: Stem | None = None
    name: str | None = None
    duration_s: float | None = None
    meta: tuple[tuple[str, str], ...] = ()

    @property
    def source(self) -> Source:
        return Source(file=self.file) if self.file is not None else Source(url=self.url)


@dataclass(slots=True)
class Scan:
    """What the sources gave, and what was left out of them, by why."""

    entries: list[Entry] = field(default_factory=list)
    skipped_hidden: int = 0
    skipped_not_audio: int = 0
    skipped_links: int = 0  # links out of the folder, or back into it (loops)
    skipped_repeats: int = 0  # a file or URL met again

    def summary(self) -> str:
        parts = [
            f"{n} {what}"
            for n, what in (
                (self.skipped_hidden, "hidden"),
                (self.skipped_not_audio, "not audio"),
                (self.skipped_links, "links out of the folder or in a loop"),
                (self.skipped_repeats, "met twice"),
            )
            if n
        ]
        return ", ".join(parts) if parts else "nothing"


def is_audio(path: Path) -> bool:
    """Whether ``path`` holds audio of a kind AudioPod takes, by its first bytes (blocking)."""
    return audio_kind(path) is not None


def read_sources(
    sources: Sequence[str], *, mode: Mode | None, stem: Stem | None, cwd: Path
) -> Scan:
    """The entries of every source, in the order given (see the module docstring).
    ManifestError (every problem, with its place) if any cannot be read."""
    scan = Scan()
    problems: list[Problem] = []
    for text in sources:
        path = cwd / text
        if _GLOB_CHARS.search(text) and not path.exists():
            # An absolute pattern with ** across folders: Path.glob takes relative ones only.
            matched = sorted(glob.glob(str(path), recursive=True))  # noqa: PTH207
            for found in map(Path, matched):
                if found.is_file() and not _hidden(found.relative_to(cwd)):
                    _take_file(found, scan)
            continue
        try:
            is_dir, is_file = path.is_dir(), path.is_file()
        except OSError as exc:
            problems.append(Problem(path=text, line=0, column=0, message=_why(exc)))
            continue
        if is_dir:
            _walk(path, scan)
        elif not is_file:
            problems.append(Problem(path=text, line=0, column=0, message="no such file or folder"))
        elif path.suffix.lower() in _CSV_SUFFIXES:
            problems += _read_csv(path, text, scan)
        elif is_audio(path):
            _take_file(path.resolve(), scan)
        else:
            problems += _read_url_list(path, text, scan)
    if problems:
        raise ManifestError(problems)
    seen: set[str] = set()
    unique = []
    for entry in scan.entries:  # a file reached twice (through a link, or two sources)
        key = source_key(entry.source)
        if key in seen:
            scan.skipped_repeats += 1
            continue
        seen.add(key)
        unique.append(entry)
    scan.entries = unique
    for entry_index, entry in enumerate(scan.entries):
        if entry.mode is None or (entry.mode is Mode.SINGLE and entry.stem is None):
            chosen = entry.mode or mode or Mode.FOUR
            single = chosen is Mode.SINGLE
            scan.entries[entry_index] = dataclasses.replace(
                entry, mode=chosen, stem=(entry.stem or stem) if single else None
            )
    return scan


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts if part not in (".", ".."))


def _take_file(path: Path, scan: Scan) -> None:
    if is_audio(path):
        scan.entries.append(Entry(file=path.resolve(), duration_s=audio_duration_s(path)))
    else:
        scan.skipped_not_audio += 1


def _walk(root: Path, scan: Scan) -> None:
    """Every audio file under ``root`` (see the module docstring), in a stable order."""
    top = root.resolve()
    seen: set[Path] = {top}

    def visit(folder: Path) -> Iterator[Path]:
        try:
            names = sorted(entry.name for entry in folder.iterdir())
        except OSError:
            return
        for name in names:
            path = folder / name
            if name.startswith("."):
                scan.skipped_hidden += 1
                continue
            if path.is_symlink():
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):  # dangling, or a loop of links
                    scan.skipped_links += 1
                    continue
                if not target.is_relative_to(top) or target in seen:
                    scan.skipped_links += 1
                    continue
            else:
                target = path.resolve()
            if target.is_dir():
                seen.add(target)
                yield from visit(path)
            elif target.is_file():
                yield path

    for path in visit(root):
        _take_file(path, scan)


def _why(exc: OSError) -> str:
    return f"cannot read it: {exc.strerror or exc}"


def _read_url_list(path: Path, shown: str, scan: Scan) -> list[Problem]:
    problems: list[Problem] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        why = _why(exc) if isinstance(exc, OSError) else "not UTF-8 text, audio, or a folder"
        return [Problem(path=shown, line=0, column=0, message=why)]
    for number, line in enumerate(text.splitlines(), 1):
        url = line.strip()  # a whole line: a URL's own '#' (its fragment) is kept
        if not url or url.startswith("#"):
            continue
        if (wrong := url_problem(url)) is not None:
            message, hint = wrong
            problem = Problem(path=shown, line=number, column=1, message=message, hint=hint)
            problems.append(problem)
            continue
        scan.entries.append(Entry(url=url))
    return problems


def _meta_key(header: str) -> str:
    """A CSV column's header as a metadata key: letters, digits and ``_``."""
    key = re.sub(r"[^A-Za-z0-9_]+", "_", header.strip()).strip("_")[:MAX_META_KEY]
    if key and key[0].isdigit():
        key = "_" + key
    return key


def _read_csv(path: Path, shown: str, scan: Scan) -> list[Problem]:
    """The jobs of a CSV export (see the module docstring); each bad row one problem."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        return [Problem(path=shown, line=0, column=0, message=_why(exc))]
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 (byte {exc.start + 1}): export the CSV as UTF-8"
        return [Problem(path=shown, line=0, column=0, message=message)]
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return [Problem(path=shown, line=1, column=1, message="the CSV is empty")]
    except csv.Error as exc:
        return [Problem(path=shown, line=1, column=1, message=f"not CSV: {exc}")]
    columns = [h.strip().lower() if h.strip().lower() in CSV_FIELDS else h for h in header]
    if "url" not in columns and "file" not in columns:
        message = "the header names neither 'url' nor 'file'"
        hint = f"the first row must name the columns; found: {', '.join(header)[:120]}"
        return [Problem(path=shown, line=1, column=1, message=message, hint=hint)]
    meta_keys = {c: _meta_key(c) for c in columns if c not in CSV_FIELDS}
    problems: list[Problem] = []
    for column, key in meta_keys.items():
        if not META_KEY.fullmatch(key):
            message = f"column {column!r} cannot be a metadata key"
            problems.append(Problem(path=shown, line=1, column=1, message=message))
    names: dict[str, int] = {}
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(Problem(path=shown, line=start, column=1, message=f"not CSV: {exc}"))
            break
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            message = f"{len(row)} fields where the header has {len(columns)}"
            problems.append(Problem(path=shown, line=start, column=1, message=message))
            continue
        entry, why = _row(dict(zip(columns, row, strict=True)), meta_keys, path.parent)
        if entry is None:
            problems.append(Problem(path=shown, line=start, column=1, message=why))
            continue
        if entry.name is not None:
            earlier = names.setdefault(entry.name.casefold(), start)
            if earlier != start:
                message = f"the name {entry.name!r} is line {earlier}'s too"
                problems.append(Problem(path=shown, line=start, column=1, message=message))
                continue
        scan.entries.append(entry)
    return problems


def _row(cells: dict[str, str], meta_keys: dict[str, str], base: Path) -> tuple[Entry | None, str]:
    url, file = cells.get("url", "").strip(), cells.get("file", "").strip()
    if bool(url) == bool(file):
        return None, "give exactly one of 'url' and 'file'"
    mode_text, stem_text = cells.get("mode", "").strip(), cells.get("stem", "").strip()
    if mode_text and mode_text not in {m.value for m in Mode}:
        return None, f"unknown mode {mode_text!r} (valid: {', '.join(m.value for m in Mode)})"
    if stem_text and stem_text not in {s.value for s in Stem}:
        return None, f"unknown stem {stem_text!r} (valid: {', '.join(s.value for s in Stem)})"
    mode = Mode(mode_text) if mode_text else None
    stem = Stem(stem_text) if stem_text else None
    duration = None
    if cells.get("duration", "").strip():
        try:
            duration = float(cells["duration"])
        except ValueError:
            return None, f"'duration' is not a number of seconds: {cells['duration']!r}"
        if not duration > 0:
            return None, "'duration' must be above 0"
    path = None
    if file:
        path = (base / file).resolve()
        if not path.is_file():
            return None, f"file not found: {file!r}"
        if duration is None:
            duration = audio_duration_s(path)
    elif (wrong := url_problem(url)) is not None:
        message, hint = wrong
        return None, f"{message} ({hint})" if hint else message
    # A cell's line breaks and other control characters become spaces: a manifest's
    # metadata is one line of text.
    meta = tuple(
        (meta_keys[c], " ".join(_CONTROL.sub(" ", v).split()))
        for c, v in cells.items()
        if c in meta_keys and v.strip()
    )
    for key, value in meta:
        if len(value) > MAX_META_VALUE:
            return None, f"column {key!r} holds more than {MAX_META_VALUE} characters"
    name = cells.get("name", "").strip() or None
    if name is not None and (wrong := name_problem(name)) is not None:
        message, hint = wrong
        return None, f"{message} ({hint})" if hint else message
    entry = Entry(
        file=path, url=url or None, mode=mode, stem=stem, name=name, duration_s=duration, meta=meta
    )
    return entry, ""


def render(scan: Scan, *, sources: Sequence[str], home: Path, now: float | None = None) -> str:
    """A whole manifest of ``scan``'s entries, file paths relative to ``home`` (the folder
    the manifest is written to)."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now))
    head = [
        "# Made by batchpod init from: " + " ".join(sources),
        f"# on {when}: {len(scan.entries)} jobs; skipped: {scan.summary()}.",
        "# Check it with `batchpod validate`; add to it with `batchpod init ... --append`.",
        "version: 1",
        "jobs:",
    ]
    return "\n".join([*head, *_lines(scan.entries, home, indent="  ")]) + "\n"


def append_text(
    existing: str,
    listed: Iterable[Source],
    scan: Scan,
    *,
    sources: Sequence[str],
    home: Path,
    indent: str,
    now: float | None = None,
) -> tuple[str, int]:
    """What to add to a manifest whose text is ``existing`` and which lists ``listed``: the
    entries whose sources it does not list yet, after a comment; and how many."""
    have = {source_key(s) for s in listed}
    new: list[Entry] = []
    for entry in scan.entries:
        key = source_key(entry.source)
        if key not in have:
            have.add(key)
            new.append(entry)
    if not new:
        return "", 0
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now))
    lead = "" if existing.endswith("\n") or not existing else "\n"
    comment = f"{indent}# Added by batchpod init --append from: {' '.join(sources)} on {when}"
    return lead + "\n".join([comment, *_lines(new, home, indent=indent)]) + "\n", len(new)


def _lines(entries: Iterable[Entry], home: Path, *, indent: str) -> Iterator[str]:
    for entry in entries:
        parts: list[str] = []
        if entry.file is not None:
            parts.append(f"file: {_quoted(Path(os.path.relpath(entry.file, home)).as_posix())}")
        else:
            assert entry.url is not None
            parts.append(f"url: {_quoted(entry.url)}")
        assert entry.mode is not None
        parts.append(f"mode: {entry.mode.value}")
        if entry.stem is not None:
            parts.append(f"stem: {entry.stem.value}")
        if entry.name is not None:
            parts.append(f"name: {_quoted(entry.name)}")
        if entry.duration_s is not None:
            parts.append(f"duration: {round(entry.duration_s, 3)}")
        if entry.meta:
            inner = ", ".join(f"{k}: {_quoted(v)}" for k, v in entry.meta)
            parts.append(f"meta: {{{inner}}}")
        yield f"{indent}- {{{', '.join(parts)}}}"


def _quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar (JSON's string syntax is YAML's)."""
    return json.dumps(text, ensure_ascii=False)


def jobs_indent(text: str) -> str | None:
    """The indentation of the items of the manifest's 'jobs' list, where new items can be
    added at the end of the text: None unless 'jobs' is the manifest's last key and a block
    list ("- " per item)."""
    try:
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return None
    if not isinstance(root, MappingNode) or not root.value:
        return None
    key, jobs = root.value[-1]
    if not (isinstance(key, ScalarNode) and key.value == "jobs"):
        return None
    if not isinstance(jobs, SequenceNode) or jobs.flow_style or not jobs.value:
        return None
    return " " * jobs.start_mark.column


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (a temporary file beside it, synced, then
    renamed), keeping the file's permissions if it exists (blocking)."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644 & ~_umask()
    write_atomic(path, text, mode=mode)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
