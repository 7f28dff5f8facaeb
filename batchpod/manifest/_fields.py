"""A job's fields, one by one: ``url``, ``file``, ``mode``, ``stem``, ``name``, ``duration`` and
``meta``.

Each field's node is parsed into its value (a URL's text, an absolute file path, a ``Mode``,
a ``Stem``, a folder name, seconds) or reported and left out. The same parsers read a job's
own fields and those in 'defaults'. Whether a job has the fields it needs, and how they
combine, is the jobs list's business (``_jobs``); local files are checked to exist here.
"""

from __future__ import annotations

import glob
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from yaml.nodes import MappingNode, Node, ScalarNode

from batchpod.identity import is_simple_url
from batchpod.models import MAX_META_KEY, MAX_META_KEYS, MAX_META_VALUE, META_KEY, Mode, Stem

from ._report import Reporter, close_match
from ._values import INVALID, check_tag, describe, scalar, string
from ._yaml import MAP_TAG, PLAIN, STR_TAG

__all__ = [
    "JOB_KEYS",
    "MAX_NAME_LENGTH",
    "MAX_URL_LENGTH",
    "JobFields",
    "name_problem",
    "url_problem",
]

JOB_KEYS: Final = ("url", "file", "files", "mode", "stem", "name", "duration", "meta")
MAX_NAME_LENGTH: Final = 100
MAX_URL_LENGTH: Final = 8192

# Mode names AudioPod used before July 2026; the API now answers them with 422.
_LEGACY_MODES: Final = {
    "2stem": Mode.TWO,
    "2stems": Mode.TWO,
    "4stem": Mode.FOUR,
    "4stems": Mode.FOUR,
    "6stem": Mode.SIX,
    "6stems": Mode.SIX,
    "8stem": Mode.PRODUCER,
    "12stem": Mode.STUDIO,
    "16stem": Mode.MASTERING,
}

_MODES: Final = {m.value: m for m in Mode}
_STEMS: Final = {s.value: s for s in Stem}
_VALID_MODES: Final = ", ".join(_MODES)
_VALID_STEMS: Final = ", ".join(_STEMS)
_SPACE: Final = re.compile(r"\s")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")

# Characters that no output folder name may contain on any common filesystem.
_BAD_NAME_CHARS: Final = re.compile(r'[/\\<>:"|?*\x00-\x1f\x7f]')


def url_problem(
    text: str, quote: Callable[[str], str] = lambda t: t[:60]
) -> tuple[str, str | None] | None:
    """What is wrong with ``text`` (stripped) as a job's URL: a message and a hint; None if
    AudioPod can be given it."""
    if len(text) > MAX_URL_LENGTH:
        return f"'url' is longer than {MAX_URL_LENGTH} characters", None
    if is_simple_url(text):  # http(s), a host: all that is checked below
        return None
    if _SPACE.search(text):
        return "'url' must not contain spaces", "percent-encode them as %20"
    try:
        parts = urlsplit(text)
    except ValueError:  # an unclosed IPv6 bracket, say: urlsplit refuses it outright
        return f"'url' has no valid host: {quote(text)}", None
    if parts.scheme.lower() not in ("http", "https"):
        if not parts.scheme or "." in parts.scheme:
            return (
                "'url' must start with http:// or https://",
                f"did you mean 'https://{quote(text)}'?",
            )
        return f"'url' scheme '{quote(parts.scheme)}' is not supported", "use http or https"
    try:
        host = parts.hostname
        _ = parts.port
    except ValueError:
        host = None
    if not host:
        return f"'url' has no valid host: {quote(text)}", None
    return None


def name_problem(
    text: str, cut: Callable[[str], str] = lambda t: t[:60]
) -> tuple[str, str | None] | None:
    """What is wrong with ``text`` as a job's name (an output folder): a message and a hint;
    None if it is a fine name."""
    hint = "use letters, digits, spaces, '-', '_' or '.'"
    if not text.strip():
        return "'name' must not be empty", hint
    if text in (".", "..") or text.startswith("."):
        return f"'name' cannot start with a dot: {cut(text)!r}", hint
    if _BAD_NAME_CHARS.search(text):
        return f"'name' cannot be a folder name: {cut(text)!r}", hint
    if len(text) > MAX_NAME_LENGTH:
        return f"'name' is longer than {MAX_NAME_LENGTH} characters", None
    if text != text.strip():
        return f"'name' must not start or end with spaces: {cut(text)!r}", None
    return None


class JobFields:
    """The per-job field parsers for one manifest, whose folder anchors relative 'file' paths."""

    def __init__(self, base: Path, report: Reporter) -> None:
        self.base = base
        self.report = report
        self.parsers: dict[str, Callable[[Node], Any]] = {
            "url": self.url,
            "file": self.file,
            "files": self.files,
            "mode": self.mode,
            "stem": self.stem,
            "name": self.name,
            "duration": self.duration,
            "meta": self.meta,
        }

    def parse(self, raw: dict[str, Node]) -> dict[str, Any]:
        """Parse each present per-job field; bad ones are reported and left out."""
        fields: dict[str, Any] = {}
        for key, node in raw.items():
            value = self.parsers[key](node)
            if value is not INVALID:
                fields[key] = value
        return fields

    def url(self, node: Node) -> Any:
        report = self.report
        text = string(node, "'url'", report)
        if text is None:
            return INVALID
        text = text.strip()
        wrong = url_problem(text, report.quote)
        if wrong is None:
            return text
        report.on(node, *wrong)
        return INVALID

    def file(self, node: Node) -> Any:
        report = self.report
        text = string(node, "'file'", report)
        if text is None:
            return INVALID
        if not text.strip() or "\x00" in text:
            report.on(node, "'file' must be a file path")
            return INVALID
        path = Path(os.path.normpath(self.base / Path(text).expanduser()))
        try:
            is_file = path.is_file()
            exists = is_file or path.exists()
        except OSError as exc:
            report.on(node, f"cannot read 'file' {report.quote(text)}: {exc.strerror or exc}")
            return INVALID
        if not exists:
            report.on(
                node,
                f"file not found: {report.quote(text)}",
                f"looked for {report.quote(str(path))}",
            )
            return INVALID
        if not is_file:
            report.on(node, f"'file' is not a regular file: {report.quote(text)}")
            return INVALID
        return path

    def mode(self, node: Node) -> Any:
        if node.tag in (PLAIN, STR_TAG) and node.value in _MODES:
            return _MODES[node.value]  # no mode's name reads as anything but text in YAML
        report = self.report
        valid = _VALID_MODES
        text = string(node, "'mode'", report, hint=f"valid modes: {valid}")
        if text is None:
            return INVALID
        mode = _MODES.get(text)
        if mode is not None:
            return mode
        legacy = _LEGACY_MODES.get(text.lower())
        if legacy is not None:
            hint = f"'{text}' is AudioPod's old name; use '{legacy.value}'"
        elif text.lower() in _MODES:
            hint = f"modes are lower case: '{text.lower()}'"
        else:
            hint = f"valid modes: {valid}"
        report.on(node, f"unknown mode '{report.quote(text)}'", hint)
        return INVALID

    def stem(self, node: Node) -> Any:
        report = self.report
        valid = _VALID_STEMS
        text = string(node, "'stem'", report, hint=f"valid stems: {valid}")
        if text is None:
            return INVALID
        stem = _STEMS.get(text)
        if stem is not None:
            return stem
        close = close_match(text.lower(), tuple(_STEMS))
        hint = f"did you mean '{close}'? " if close else ""
        report.on(node, f"unknown stem '{report.quote(text)}'", f"{hint}valid stems: {valid}")
        return INVALID

    def name(self, node: Node) -> Any:
        report = self.report
        value = scalar(node, report)
        if value is INVALID:
            return INVALID
        # A bare number is a fine folder name ("name: 2019"): take the text as written.
        if type(value) not in (str, int, float) or not isinstance(node, ScalarNode):
            report.on(node, f"'name' must be text, got {describe(node)}")
            return INVALID
        text = str(node.value)
        wrong = name_problem(text, report.cut)
        if wrong is None:
            return text
        report.on(node, *wrong)
        return INVALID

    def duration(self, node: Node) -> Any:
        value = scalar(node, self.report)
        if value is INVALID:
            return INVALID
        if type(value) not in (int, float) or not math.isfinite(value) or value <= 0:
            self.report.on(
                node,
                f"'duration' must be a number of seconds above 0, got {describe(node)}",
            )
            return INVALID
        return float(value)

    def meta(self, node: Node) -> Any:
        """The job's metadata: a mapping of short text values, by identifier-like keys
        (``isrc: USRC17607839``), as (key, value) pairs in the order written. A number is
        kept as written (``catalogue: 007`` is "007")."""
        report = self.report
        if not isinstance(node, MappingNode):
            report.on(node, f"'meta' must be a mapping of keys to values, got {describe(node)}")
            return INVALID
        check_tag(node, MAP_TAG, report)
        pairs: dict[str, str] = {}
        ok = True
        hint = "keys are letters, digits and '_', not starting with a digit"
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str) or not META_KEY.fullmatch(key):
                shown = report.quote(str(key)) if isinstance(key, str) else describe(key_node)
                report.on(key_node, f"'meta' key {shown!r} is not a name", hint)
                ok = False
                continue
            if len(key) > MAX_META_KEY:
                report.on(key_node, f"'meta' key is longer than {MAX_META_KEY} characters")
                ok = False
                continue
            if key in pairs:
                report.on(key_node, f"duplicate 'meta' key '{key}'")
                ok = False
                continue
            if not isinstance(value_node, ScalarNode):
                report.on(
                    value_node, f"'meta.{key}' must be text or a number, got {describe(value_node)}"
                )
                ok = False
                continue
            value = scalar(value_node, report)
            if value is INVALID:
                ok = False
                continue
            if value is None or isinstance(value, bool) or type(value) not in (str, int, float):
                report.on(
                    value_node,
                    f"'meta.{key}' must be text or a number, got {describe(value_node)}",
                    "quote it to keep it as text",
                )
                ok = False
                continue
            text = str(value_node.value)  # as written: "007", not 7
            if len(text) > MAX_META_VALUE:
                report.on(value_node, f"'meta.{key}' is longer than {MAX_META_VALUE} characters")
                ok = False
            elif _CONTROL.search(text):
                report.on(value_node, f"'meta.{key}' cannot hold control characters or newlines")
                ok = False
            else:
                pairs[key] = text
        if len(pairs) > MAX_META_KEYS:
            report.on(node, f"'meta' has {len(pairs)} keys; at most {MAX_META_KEYS}")
            return INVALID
        return tuple(pairs.items()) if ok else INVALID

    def files(self, node: Node) -> Any:
        """A glob of local files, relative to the manifest (``incoming/**/*.mp3``; ``**``
        for any depth): the job stands for each regular file it matches, hidden ones apart,
        in the order of their paths. Returns (pattern, matched paths)."""
        report = self.report
        text = string(node, "'files'", report)
        if text is None:
            return INVALID
        if not text.strip() or "\x00" in text:
            report.on(node, "'files' must be a glob of file paths, such as 'incoming/*.mp3'")
            return INVALID
        pattern = os.path.normpath(self.base / Path(text).expanduser())
        try:
            # An absolute pattern with ** across folders: Path.glob takes relative ones only.
            found = glob.glob(pattern, recursive=True)  # noqa: PTH207
        except (OSError, ValueError) as exc:
            report.on(node, f"cannot read 'files' {report.quote(text)}: {exc}")
            return INVALID
        paths = sorted(Path(p) for p in found if Path(p).is_file())
        return text, tuple(paths)
