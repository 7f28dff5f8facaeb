"""Where each stem is written inside the output folder: the manifest's ``output_path``.

A template such as ``{name}/{stem}.{ext}`` (the default) or ``{source}/{mode}-{stem}.{ext}``
is parsed once (``PathTemplate.parse``, which refuses what could leave the output folder)
and rendered per job and stem (``render``). Its fields:

- ``{name}``: the job's name (already a safe folder name: the manifest checks it);
- ``{stem}``: the stem's name as AudioPod gives it, made safe (ASCII letters, digits, ``_``,
  ``.``, ``-``; no dot in front; at most 64 characters);
- ``{ext}``: the format's extension (``flac``, ``mp3``, ...; for stems as served, the one
  their link names, ``wav``);
- ``{mode}``: the separation mode (``four``, ``single``, ...);
- ``{source}``: the song's file or URL base name without its extension, made safe;
- ``{meta.KEY}``: the job's metadata value for KEY (``meta:`` in the manifest), made safe
  as ``{source}`` is; every job must have the key (``missing_meta``).

Field values never hold a ``/``, never start with a dot and are never empty, so a rendered
path has exactly the folders the template's literal text has: a template whose literal
parts stay inside the folder (no absolute path, no ``..``, no empty or ``.`` folder, not
``.batchpod/``, where the done records live) renders only paths inside it, and every path
of one template has the same depth, so no job's file is another's folder. What ``clashes``
then checks is that no two stems land on one path, ignoring case (as macOS and Windows
compare names). Pure: nothing here touches the disk.
"""

from __future__ import annotations

import dataclasses
import re
import string
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final
from urllib.parse import unquote

from batchpod.identity import url_parts
from batchpod.models import META_KEY, Job, Mode, Source

__all__ = [
    "DEFAULT_OUTPUT_PATH",
    "DOCUMENTED_STEMS",
    "FIELDS",
    "MAX_COMPONENT_BYTES",
    "Clash",
    "PathTemplate",
    "TemplateError",
    "clashes",
    "missing_meta",
    "safe_stem",
    "source_base",
    "stems_of",
]

DEFAULT_OUTPUT_PATH: Final = "{name}/{stem}.{ext}"
FIELDS: Final = ("name", "stem", "ext", "mode", "source")
#: The longest name a file system takes for one folder or file (bytes, as ext4 and APFS).
MAX_COMPONENT_BYTES: Final = 255

#: The stem names each mode is documented to return (AudioPod's docs: two, four, six; a
#: ``single`` job returns its stem and ``no_<stem>``, see ``stems_of``). Modes not listed
#: ("up to N" stems whose names are not all documented) are checked by the stem names a
#: job would share with every other job only.
DOCUMENTED_STEMS: Final[Mapping[Mode, tuple[str, ...]]] = {
    Mode.TWO: ("vocals", "no_vocals", "instrumental"),
    Mode.FOUR: ("vocals", "drums", "bass", "other"),
    Mode.SIX: ("vocals", "drums", "bass", "other", "guitar", "piano"),
}

_UNSAFE_STEM: Final = re.compile(r"[^A-Za-z0-9_.-]+")
# What no file or folder name may hold on a common file system (and "/" splits folders).
_BAD_CHARS: Final = re.compile(r'[\\<>:"|?*\x00-\x1f\x7f]')
# The same, and "/", in a field's value (a URL's name may hold an encoded "/").
_BAD_VALUE_CHARS: Final = re.compile(r'[/\\<>:"|?*\x00-\x1f\x7f]')
_SOURCE_CHARS: Final = 100
# A stem value no real one can be: it makes a job's path pattern, the same for every stem.
_ANY_STEM: Final = "\x00"


class TemplateError(ValueError):
    """A template that cannot be used: ``message``, with a ``hint`` of what to write."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """A parsed ``output_path``: its text, and its pieces (literal text, then a field name
    or None), in order."""

    text: str
    pieces: tuple[tuple[str, str | None], ...]
    #: The fields the pieces name (derived from them): only these are worked out for a
    #: job (``_values``).
    fields: frozenset[str] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        used = frozenset(name for _, name in self.pieces if name is not None)
        object.__setattr__(self, "fields", used)

    @classmethod
    def parse(cls, text: str) -> PathTemplate:
        """The template ``text``, or TemplateError saying what is wrong with it (the first
        thing found)."""
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise TemplateError(
                f"'output_path' is not a template: {exc}", "write a literal brace as {{ or }}"
            ) from None
        pieces: list[tuple[str, str | None]] = []
        for literal, field, spec, conversion in parsed:
            if field is not None:
                _check_field(field, spec, conversion)
            pieces.append((literal, field))
        template = cls(text=text, pieces=tuple(pieces))
        used = template.fields
        for needed, why in (
            ("stem", "every stem of a job would be written to one path"),
            ("ext", "a file's extension must say its format"),
        ):
            if needed not in used:
                raise TemplateError(
                    f"'output_path' must contain {{{needed}}}: {why}",
                    f"for example '{DEFAULT_OUTPUT_PATH}'",
                )
        _check_folders(template.render_with(dict.fromkeys(used | set(FIELDS), "x")))
        return template

    @property
    def meta_keys(self) -> tuple[str, ...]:
        """The metadata keys the template uses, in order."""
        fields = (f for _, f in self.pieces if f is not None and f.startswith("meta."))
        return tuple(dict.fromkeys(f.removeprefix("meta.") for f in fields))

    @property
    def is_default(self) -> bool:
        return self.text == DEFAULT_OUTPUT_PATH

    @property
    def by_name(self) -> bool:
        """Whether one folder or file of every path is the job's name alone: then no two
        jobs' paths can meet (names differ ignoring case), only one job's stems."""
        return any(component == "{name}" for component in self.text.replace("{{", "").split("/"))

    def render(self, job: Job, stem: str, ext: str) -> PurePosixPath:
        """Where ``job``'s stem ``stem`` (the value, already made safe) is written, relative
        to the output folder."""
        return PurePosixPath(self.render_with(_values(self, job, stem, ext)))

    def render_with(self, values: Mapping[str, str]) -> str:
        # A job without a metadata key the template uses gets "_" (validate reports it first).
        return "".join(literal + (values.get(f, "_") if f else "") for literal, f in self.pieces)


@dataclass(frozen=True, slots=True)
class Clash:
    """Two jobs (indexes into the list checked) whose stems would be written to one path."""

    first: int
    second: int
    path: str
    stem: str | None  # None: any stem the two jobs share


def clashes(template: PathTemplate, jobs: Iterable[Job], *, ext: str) -> Iterator[Clash | int]:
    """Each later job whose stems would meet an earlier job's (a ``Clash``), and each job
    with a rendered folder or file name too long for a file system (its index).

    Every job's path pattern (its path for any stem) is compared, which covers the stems
    two jobs share whatever AudioPod calls them; where no folder is the job's name alone,
    the paths of every stem a job's mode is documented to return are compared too."""
    by_pattern: dict[str, int] = {}
    by_path: dict[str, tuple[int, str]] = {}
    known: list[bool] = []
    for index, job in enumerate(jobs):
        stems = stems_of(job)
        known.append(bool(stems))
        pattern = template.render_with(_values(template, job, _ANY_STEM, ext))
        if any(
            len(part.encode()) > MAX_COMPONENT_BYTES
            for part in pattern.replace(_ANY_STEM, "s" * 64).split("/")
        ):
            yield index
        first = by_pattern.setdefault(pattern.casefold(), index)
        # Two jobs of one pattern meet on every stem name they share: certain where either
        # one's names are not known; where both are, their names decide (below).
        if first != index and not (known[first] and stems):
            yield Clash(first, index, pattern.replace(_ANY_STEM, "{stem}"), None)
            continue
        if template.by_name:
            continue
        for stem in stems:
            path = template.render_with(_values(template, job, stem, ext))
            earlier, _ = by_path.setdefault(path.casefold(), (index, stem))
            if earlier != index:
                yield Clash(earlier, index, path, stem)
                break


def missing_meta(template: PathTemplate, jobs: Iterable[Job]) -> Iterator[tuple[int, str]]:
    """Each job (its index) that lacks a metadata key the template uses, with the key."""
    keys = template.meta_keys
    if not keys:
        return
    for index, job in enumerate(jobs):
        have = {k for k, _ in job.meta}
        for key in keys:
            if key not in have:
                yield index, key
                break


def stems_of(job: Job) -> tuple[str, ...]:
    """The stem names ``job``'s mode is documented to return (none known: empty)."""
    if job.mode is Mode.SINGLE and job.stem is not None:
        return (job.stem.value, f"no_{job.stem.value}")
    return DOCUMENTED_STEMS.get(job.mode, ())


def safe_stem(stem: str) -> str:
    """A stem name from the server as a file name: no separators, no dots in front."""
    return _UNSAFE_STEM.sub("_", stem).lstrip(".")[:64] or "stem"


def source_base(source: Source) -> str:
    """The song's file or URL base name without its extension, as a safe file name
    (Unicode kept, in NFC; the URL's host where its path names nothing)."""
    if source.file is not None:
        base = source.file.stem
    else:
        assert source.url is not None
        host, path, _ = url_parts(source.url)
        segments = [s for s in path.split("/") if s]
        base = unquote(segments[-1]).rsplit(".", 1)[0] if segments else host
    return _safe_value(base) or "source"


def _safe_value(text: str) -> str:
    """A field's text as one file or folder name: NFC, no separators or characters a file
    system refuses, no dot or space at either end, at most 100 characters ("" if nothing
    is left)."""
    text = _BAD_VALUE_CHARS.sub("_", unicodedata.normalize("NFC", text)).strip().lstrip(".")
    return text[:_SOURCE_CHARS].strip()


def _values(template: PathTemplate, job: Job, stem: str, ext: str) -> dict[str, str]:
    """The values of the fields ``template`` uses, for ``job``'s ``stem``.

    Only the fields used are worked out: ``clashes`` renders every job of a manifest, and a
    song's base name (``source``) is the dearest of them."""
    fields = template.fields
    values = {"name": job.name, "stem": stem, "ext": ext, "mode": job.mode.value}
    if "source" in fields:
        values["source"] = source_base(job.source)
    for key, value in job.meta:
        field = f"meta.{key}"
        if field in fields:
            values[field] = _safe_value(value) or "_"
    return values


def _check_field(field: str, spec: str | None, conversion: str | None) -> None:
    shown = "{" + field + "}"
    if field == "meta" or field.startswith(("meta.", "meta[")):
        if not field.startswith("meta.") or not META_KEY.fullmatch(field.removeprefix("meta.")):
            raise TemplateError(
                f"'output_path' field {shown} names no metadata key",
                "write {meta.KEY}, KEY as in the jobs' 'meta' (letters, digits, '_')",
            )
    elif field not in FIELDS:
        raise TemplateError(
            f"unknown 'output_path' field {shown}",
            f"use {', '.join('{' + f + '}' for f in FIELDS)} or {{meta.KEY}}",
        )
    if spec or conversion:
        raise TemplateError(
            f"'output_path' field {shown} cannot take a format or conversion",
            f"write {{{field}}} alone",
        )


def _check_folders(rendered: str) -> None:
    """Refuse a template whose literal text leaves the output folder or is no file name."""
    if rendered.startswith("/"):
        raise TemplateError(
            "'output_path' must be relative to the output folder", "drop the leading '/'"
        )
    bad = _BAD_CHARS.search(rendered)
    if bad:
        raise TemplateError(
            f"'output_path' cannot hold {bad.group()!r}: no common file system takes it in a name",
            "use letters, digits, spaces, '-', '_', '.' and '/' between folders",
        )
    parts = rendered.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            what = f"a {part!r} folder" if part else "an empty folder ('//', or '/' at the end)"
            raise TemplateError(
                f"'output_path' cannot have {what}",
                "stems are written inside the output folder, by a path without '..'",
            )
        if part != part.strip():
            raise TemplateError(
                f"'output_path' folder or file {part!r} starts or ends with a space"
            )
    if parts[0].startswith("."):
        raise TemplateError(
            "'output_path' cannot start with a hidden folder",
            "batchpod keeps its records in .batchpod/ in the output folder",
        )
