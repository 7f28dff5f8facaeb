"""The manifest format (version 1): YAML text -> a validated ``Manifest``, or every problem in it.

This module owns the format: its keys, defaults, and the rules a manifest must follow. It reads
the manifest and checks that local source files exist; it knows nothing of HTTP, state files or
the terminal.

Validation never stops at the first mistake. The YAML is *composed* (parsed into nodes that
remember their line and column) rather than loaded, so that every problem can be reported as
``FILE:LINE:COL: message``. libyaml's C parser is used when PyYAML was built with it; the
pure-Python parser gives the same nodes and positions otherwise.

Hostile input is refused in bounded memory and time. A manifest may be at most
``MAX_MANIFEST_BYTES`` long (checked from the file's size before it is read). Composing keeps
every node alive (some 300 bytes each), so text longer than ``_COUNT_FIRST_CHARS`` is first
counted without composing it: libyaml counts its events in C, and only when that count passes
``MAX_YAML_NODES`` does a Python pass over the events (libyaml's, else the pure parser's) find
which limit (``MAX_JOBS`` items in the top-level ``jobs`` list, or ``MAX_YAML_NODES`` nodes in
all) was passed, stopping there. Aliases share nodes rather than copy them, and a job listed
again through an alias is reported, not checked again, so no work is multiplied. Nothing is
ever constructed from a tag: a tag on a value, mapping or list is reported. Text quoted in
messages is cut short and its control characters escaped, so each problem stays one line.
"""

from __future__ import annotations

import difflib
import gc
import math
import os
import re
import string
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit, urlunsplit

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import (
    CollectionEndEvent,
    CollectionStartEvent,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
    SequenceStartEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver, Resolver
from yaml.scanner import Scanner

from batchpod.budget import dollars_to_cents
from batchpod.errors import ManifestError, Problem
from batchpod.models import Budget, Job, Manifest, Mode, Source, Stem

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_OUTPUT_DIR",
    "MAX_CONCURRENCY",
    "MAX_JOBS",
    "MAX_MANIFEST_BYTES",
    "MAX_YAML_NODES",
    "check_manifest",
    "dump_manifest",
    "load_manifest",
    "normalize_url",
    "parse_manifest",
]

SUPPORTED_VERSION: Final = 1
DEFAULT_OUTPUT_DIR: Final = "stems/"
DEFAULT_CONCURRENCY: Final = 8
MAX_CONCURRENCY: Final = 10_000
MAX_NAME_LENGTH: Final = 100
MAX_URL_LENGTH: Final = 8192
# A 100,000-job manifest of typical lines is 7-10 MB; twice that many jobs still fit.
MAX_MANIFEST_BYTES: Final = 32 * 1024 * 1024
MAX_JOBS: Final = 200_000
# Every key and value is a node: a job has at most 11 (its mapping, five keys and their values),
# so MAX_JOBS of the largest jobs fit. Composing keeps every node (with the checker's own
# records, some 500 bytes each), so this bounds the memory a manifest may take.
MAX_YAML_NODES: Final = 2_500_000
_SPLIT_HINT: Final = "split the catalogue into several manifests"
# Text up to this long is composed straight away: it cannot hold more than ~500,000 nodes.
_COUNT_FIRST_CHARS: Final = 1024 * 1024
# libyaml refuses deeper nesting; the event count stops there and leaves the error to compose.
_MAX_DEPTH: Final = 1000
# User text quoted in a message is cut to this many characters.
_QUOTE_CHARS: Final = 200

TOP_KEYS: Final = ("version", "defaults", "output_dir", "concurrency", "budget", "jobs")
JOB_KEYS: Final = ("url", "file", "mode", "stem", "name", "duration")
BUDGET_KEYS: Final = ("max_spend_usd", "keep_balance_usd")

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
_NOT_SLUG: Final = re.compile(r"[^A-Za-z0-9]+")

# Characters that no output folder name may contain on any common filesystem.
_BAD_NAME_CHARS: Final = re.compile(r'[/\\<>:"|?*\x00-\x1f\x7f]')

# Resolving every plain scalar's type up front (int? bool? date?) costs more than all the rest
# of composing a large manifest, and most scalars are keys and words whose type we never need.
# So the parser tags plain scalars as _PLAIN and `_Checker.scalar` resolves only the ones it reads.
_PLAIN: Final = "batchpod:plain"


class _LazyResolver(BaseResolver):
    def resolve(self, kind: type[Node], value: Any, implicit: tuple[bool, bool] | None) -> str:
        if kind is ScalarNode and implicit is not None and implicit[0]:
            return _PLAIN
        tag: str = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
        return tag


class _PyLoader(Reader, Scanner, Parser, Composer, SafeConstructor, _LazyResolver):
    """The pure-Python parser with lazy scalar typing."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        _LazyResolver.__init__(self)


class _PyEvents(Reader, Scanner, Parser):
    """The pure-Python parser's event stream alone (to count nodes without composing)."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)


_Loader: type[Any] = _PyLoader
_CParser: Any = None
try:
    from yaml.cyaml import CParser  # type: ignore[attr-defined]  # stubs omit the C parser

    class _CLoader(CParser, SafeConstructor, _LazyResolver):
        """libyaml's parser with lazy scalar typing."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            SafeConstructor.__init__(self)
            _LazyResolver.__init__(self)

    _Loader = _CLoader
    _CParser = CParser
except ImportError:  # PyYAML built without libyaml: the pure-Python parser gives the same nodes
    pass

#: The parsers available here, fastest first (tests check that they agree).
LOADERS: Final[tuple[type[Any], ...]] = tuple(dict.fromkeys((_Loader, _PyLoader)))

_STR_TAG: Final = "tag:yaml.org,2002:str"
_MAP_TAG: Final = BaseResolver.DEFAULT_MAPPING_TAG
_SEQ_TAG: Final = BaseResolver.DEFAULT_SEQUENCE_TAG
_INT_TAG: Final = "tag:yaml.org,2002:int"
_TEXT_FIRST_CHARS: Final = (
    frozenset(string.ascii_letters) - frozenset(Resolver.yaml_implicit_resolvers)
    if None not in Resolver.yaml_implicit_resolvers  # a catch-all pattern would void the rule
    else frozenset()
)
_BOOL_TAG: Final = "tag:yaml.org,2002:bool"
_NULL_TAG: Final = "tag:yaml.org,2002:null"
_resolver = Resolver()
_constructor = SafeConstructor()


def load_manifest(path: Path | str) -> Manifest:
    """Read and validate the manifest at ``path``; raise ``ManifestError`` listing every problem."""
    manifest, problems = check_manifest(path)
    if problems:
        raise ManifestError(problems)
    assert manifest is not None  # no problems means a manifest was built
    return manifest


def check_manifest(
    path: Path | str, *, loader: type[Any] | None = None
) -> tuple[Manifest | None, list[Problem]]:
    """Read and validate ``path``: the manifest when it is clean, and every problem found."""
    shown = str(path)
    try:
        with Path(path).open("rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            if size > MAX_MANIFEST_BYTES:
                return None, [_too_large(shown, size)]
            # One byte past the limit: a pipe or a device has no size to check beforehand.
            data = stream.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return None, [Problem(path=shown, line=0, column=0, message=f"cannot read: {reason}")]
    if len(data) > MAX_MANIFEST_BYTES:
        return None, [_too_large(shown, None)]
    return parse_manifest(data, path=Path(path), loader=loader)


def parse_manifest(
    data: bytes | str, *, path: Path, loader: type[Any] | None = None
) -> tuple[Manifest | None, list[Problem]]:
    """Validate manifest text that was read from ``path`` (which anchors relative paths)."""
    size = _utf8_size(data)
    if size > MAX_MANIFEST_BYTES:
        return None, [_too_large(str(path), size)]
    checker = _Checker(path)
    # Composing a large manifest creates millions of small objects that all stay alive; the
    # cyclic GC would rescan them again and again (it more than doubles the time). None of
    # them form cycles, so pause it for the duration.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        manifest = checker.run(data, loader or _Loader)
    finally:
        if was_enabled:
            gc.enable()
    problems = sorted(checker.problems, key=lambda p: (p.line, p.column))
    return (None if problems else manifest), problems


def _utf8_size(data: bytes | str) -> int:
    """The data's length in bytes (text counts as UTF-8), without encoding large text needlessly."""
    if isinstance(data, bytes) or len(data) > MAX_MANIFEST_BYTES or data.isascii():
        return len(data)
    if len(data) * 4 <= MAX_MANIFEST_BYTES:  # at most 4 bytes a character: cannot be too large
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))


def _too_large(shown: str, size: int | None) -> Problem:
    measured = f"{size:,} bytes, " if size is not None else ""
    return Problem(
        path=shown,
        line=0,
        column=0,
        message=f"the manifest is {measured}over the {MAX_MANIFEST_BYTES // 2**20} MiB limit",
        hint=f"{_SPLIT_HINT} of at most {MAX_MANIFEST_BYTES:,} bytes",
    )


def normalize_url(url: str) -> str:
    """The URL in a canonical form, so that trivially different spellings compare equal.

    Scheme and host are lower-cased, a default port and the fragment are dropped; the path and
    query are kept as written (servers may treat their case as significant).
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    port = parts.port
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}" if userinfo else host
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def dump_manifest(manifest: Manifest) -> str:
    """The manifest as version-1 YAML with every job's name explicit.

    Loading the result (from the same folder) gives the same jobs.
    """
    base = manifest.path.parent
    top: dict[str, Any] = {
        "version": manifest.version,
        "output_dir": _relative_text(manifest.output_dir, base),
        "concurrency": manifest.concurrency,
    }
    budget: dict[str, float] = {}
    if manifest.budget.max_spend_cents is not None:
        budget["max_spend_usd"] = manifest.budget.max_spend_cents / 100
    if manifest.budget.keep_balance_cents is not None:
        budget["keep_balance_usd"] = manifest.budget.keep_balance_cents / 100
    if budget:
        top["budget"] = budget
    jobs: list[dict[str, Any]] = []
    for job in manifest.jobs:
        entry: dict[str, Any] = {"name": job.name}
        if job.source.url is not None:
            entry["url"] = job.source.url
        else:
            assert job.source.file is not None
            entry["file"] = _relative_text(job.source.file, base)
        entry["mode"] = job.mode.value
        if job.stem is not None:
            entry["stem"] = job.stem.value
        if job.duration_s is not None:
            entry["duration"] = job.duration_s
        jobs.append(entry)
    top["jobs"] = jobs
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text: str = yaml.dump(top, Dumper=dumper, sort_keys=False, allow_unicode=True)
    return text


def _relative_text(target: Path, base: Path) -> str:
    try:
        return target.relative_to(base).as_posix() or "."
    except ValueError:
        return str(target)


def slug_for(source: Source) -> str:
    """A readable folder name for a source: the song's file or URL name, as ASCII."""
    if source.file is not None:
        base = source.file.stem
    else:
        assert source.url is not None
        parts = urlsplit(source.url)
        video = parse_qs(parts.query).get("v") if "v=" in parts.query else None  # YouTube
        segments = [s for s in parts.path.split("/") if s]
        if video:
            base = video[0]
        elif segments:
            base = segments[-1].rsplit(".", 1)[0] or segments[-1]
        else:
            base = parts.hostname or ""
    if not base.isascii():
        base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    text = _NOT_SLUG.sub("-", base).strip("-").lower()
    return text[:60].strip("-") or "song"


# --------------------------------------------------------------------------------------------
# The checker


@dataclass(slots=True)
class _Draft:
    """A job's fields as far as they validated; ``None`` where a field was missing or bad."""

    node: Node
    number: int
    source: Source | None = None
    source_key: str | None = None
    mode: Mode | None = None
    stem: Stem | None = None
    duration_s: float | None = None
    name: str | None = None
    name_node: Node | None = None
    slug: str = ""
    ok: bool = True


@dataclass(slots=True)
class _Field:
    """A parsed per-job field and the node it came from (for positions)."""

    value: Any
    node: Node
    from_defaults: bool = False


class _Checker:
    """One validation pass over one manifest, collecting problems as it goes."""

    def __init__(self, path: Path) -> None:
        self.shown = str(path)
        self.base = Path(path).absolute().parent
        self.problems: list[Problem] = []
        # Keys present in 'defaults', valid or not: a job is not told it lacks a field whose
        # default was already reported as bad.
        self.default_keys: frozenset[str] = frozenset()
        self.parsers: dict[str, Callable[[Node], Any]] = {
            "url": self.url,
            "file": self.file,
            "mode": self.mode,
            "stem": self.stem,
            "name": self.name,
            "duration": self.duration,
        }

    # -- reporting --------------------------------------------------------------------------

    def report(self, node: Node | None, message: str, hint: str | None = None) -> None:
        line, column = (node.start_mark.line + 1, node.start_mark.column + 1) if node else (1, 1)
        self.problems.append(
            Problem(path=self.shown, line=line, column=column, message=message, hint=hint)
        )

    # -- top level --------------------------------------------------------------------------

    def run(self, data: bytes | str, loader: type[Any]) -> Manifest | None:
        text = self.decode(data)
        if text is None or not self.within_limits(text):
            return None
        root = self.compose(text, loader)
        if root is None:
            return None
        if not isinstance(root, MappingNode):
            self.report(root, "the manifest must be a mapping with 'version' and 'jobs' keys")
            return None
        top = self.mapping(root, TOP_KEYS, "at the top level")

        version = self.version(top.get("version"), root)
        output_dir = self.output_dir(top.get("output_dir"))
        concurrency = self.concurrency(top.get("concurrency"))
        budget = self.budget(top.get("budget"))
        defaults = self.defaults(top.get("defaults"))
        drafts = self.jobs(top.get("jobs"), root, defaults)

        if self.problems or version is None or output_dir is None or budget is None:
            return None
        if concurrency is None:
            return None
        jobs = self.finish_jobs(drafts)
        return Manifest(
            path=self.base / Path(self.shown).name,
            version=version,
            output_dir=output_dir,
            concurrency=concurrency,
            budget=budget,
            jobs=jobs,
        )

    def decode(self, data: bytes | str) -> str | None:
        if isinstance(data, str):
            return data.removeprefix("\ufeff")
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            head = data[: exc.start]
            line = head.count(b"\n") + 1
            column = len(head[head.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
            self.problems.append(
                Problem(
                    path=self.shown,
                    line=line,
                    column=column,
                    message=f"not UTF-8 text (byte 0x{data[exc.start]:02x})",
                    hint="save the manifest as UTF-8",
                )
            )
            return None

    def within_limits(self, text: str) -> bool:
        """Whether the text is small enough to compose; if not, the one problem saying why."""
        if len(text) <= _COUNT_FIRST_CHARS:
            return True
        if _CParser is not None:
            try:
                # Events (ends included) are at least as many as nodes; counted in C, fast.
                if _CParser(text).raw_parse() <= MAX_YAML_NODES:
                    return True
            except yaml.YAMLError:
                pass  # counted below up to the error, which composing then reports
        return self.count_events(text)

    def count_events(self, text: str) -> bool:
        """Count nodes and top-level jobs from the parser's events; stop at the first limit."""
        nodes = depth = jobs = 0
        root_is_mapping = is_key = in_jobs = False
        key: Any = None
        jobs_mark: Any = None
        try:
            get_event = (_CParser or _PyEvents)(text).get_event
            while (event := get_event()) is not None:
                if isinstance(event, NodeEvent):
                    nodes += 1
                    if nodes > MAX_YAML_NODES:
                        self.report_at(
                            event.start_mark,
                            f"the manifest has more than {MAX_YAML_NODES:,} YAML nodes "
                            "(keys, values, lists and mappings), the limit for one manifest",
                            _SPLIT_HINT,
                        )
                        return False
                    if depth == 2 and in_jobs:
                        jobs += 1
                        if jobs > MAX_JOBS:
                            self.too_many_jobs(jobs_mark)
                            return False
                    elif depth == 1 and root_is_mapping:
                        if is_key:
                            key = event.value if isinstance(event, ScalarEvent) else None
                        elif key == "jobs" and isinstance(event, SequenceStartEvent):
                            in_jobs, jobs, jobs_mark = True, 0, event.start_mark
                        is_key = not is_key
                    if isinstance(event, CollectionStartEvent):
                        if depth == 0:
                            root_is_mapping = is_key = isinstance(event, MappingStartEvent)
                        depth += 1
                        if depth > _MAX_DEPTH:
                            return True  # composing refuses it before going this deep
                elif isinstance(event, CollectionEndEvent):
                    depth -= 1
                    if depth == 1:
                        in_jobs = False
        except yaml.YAMLError:
            pass  # composing reports it, having composed no more nodes than were counted
        return True

    def too_many_jobs(self, mark: Any) -> None:
        self.report_at(
            mark,
            f"'jobs' lists more than {MAX_JOBS:,} jobs, the limit for one manifest",
            _SPLIT_HINT,
        )

    def report_at(self, mark: Any, message: str, hint: str | None = None) -> None:
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        self.problems.append(
            Problem(path=self.shown, line=line, column=column, message=message, hint=hint)
        )

    def compose(self, text: str, loader: type[Any]) -> Node | None:
        try:
            root: Node | None = yaml.compose(text, Loader=loader)  # our loaders are safe ones
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "invalid YAML"
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            message = f"YAML syntax error: {_quote(problem)}"
            if exc.context and exc.problem:
                message = f"YAML syntax error: {_quote(problem)} ({_quote(exc.context)})"
            self.problems.append(
                Problem(path=self.shown, line=line, column=column, message=message)
            )
            return None
        except yaml.reader.ReaderError as exc:
            # Positions differ (libyaml counts UTF-8 bytes): find the character in the text.
            found = Reader.NON_PRINTABLE.search(text)
            at = found.start() if found else 0
            line, column = text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)
            code = ord(text[at]) if found else exc.character
            self.problems.append(
                Problem(
                    path=self.shown,
                    line=line,
                    column=column,
                    message=f"YAML syntax error: character #x{code:04x} is not allowed in YAML",
                    hint="remove it, or write it as an escape (such as \\x1b) in double quotes",
                )
            )
            return None
        except yaml.YAMLError as exc:
            self.problems.append(
                Problem(
                    path=self.shown, line=1, column=1, message=f"YAML error: {_quote(str(exc))}"
                )
            )
            return None
        except RecursionError:
            self.problems.append(
                Problem(path=self.shown, line=1, column=1, message="YAML nested too deeply")
            )
            return None
        if root is None:
            self.problems.append(
                Problem(
                    path=self.shown,
                    line=1,
                    column=1,
                    message="the manifest is empty",
                    hint="start with 'version: 1' and a 'jobs:' list; see jobs.example.yaml",
                )
            )
        return root

    def check_tag(self, node: Node, plain: str) -> None:
        """Report an explicit tag on a mapping or list (``!!python/object:...``, ``!!set``)."""
        if node.tag != plain:
            self.report(node, f"unsupported YAML tag {_quote(node.tag)}", "remove the '!' tag")

    def mapping(self, node: MappingNode, allowed: tuple[str, ...], where: str) -> dict[str, Node]:
        """The mapping's values by key; unknown, duplicate and non-string keys are reported."""
        self.check_tag(node, _MAP_TAG)
        found: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if not (
                isinstance(key_node, ScalarNode)
                and key_node.tag in (_PLAIN, _STR_TAG)  # not '!!python/name:x url'
                and (key_node.value in allowed or _tag_of(key_node) == _STR_TAG)
            ):
                self.report(key_node, f"keys must be plain names {where}")
                continue
            key = key_node.value
            if key in found:
                self.report(key_node, f"duplicate key '{_quote(key)}' {where}")
                continue
            if key not in allowed:
                close = _close_match(key, allowed)
                hint = f"did you mean '{close}'?" if close else f"known keys: {', '.join(allowed)}"
                self.report(key_node, f"unknown key '{_quote(key)}' {where}", hint)
                continue
            found[key] = value_node
        return found

    def version(self, node: Node | None, root: Node) -> int | None:
        if node is None:
            self.report(root, "missing 'version'", "add 'version: 1' at the top")
            return None
        value = self.scalar(node)
        if value is _INVALID:
            return None
        if type(value) is not int:
            self.report(node, f"'version' must be a whole number, got {_describe(node)}")
            return None
        if value != SUPPORTED_VERSION:
            self.report(
                node,
                f"unsupported manifest version {_quote(str(value))}",
                f"this batchpod reads version {SUPPORTED_VERSION}",
            )
            return None
        return value

    def output_dir(self, node: Node | None) -> Path | None:
        if node is None:
            return self.base / DEFAULT_OUTPUT_DIR
        text = self.string(node, "'output_dir'")
        if text is None:
            return None
        if not text.strip() or "\x00" in text:
            self.report(node, "'output_dir' must be a folder path")
            return None
        return Path(os.path.normpath(self.base / Path(text).expanduser()))

    def concurrency(self, node: Node | None) -> int | None:
        if node is None:
            return DEFAULT_CONCURRENCY
        value = self.scalar(node)
        if value is _INVALID:
            return None
        if type(value) is not int or not 1 <= value <= MAX_CONCURRENCY:
            self.report(
                node,
                f"'concurrency' must be a whole number from 1 to {MAX_CONCURRENCY}, "
                f"got {_describe(node)}",
            )
            return None
        return value

    def budget(self, node: Node | None) -> Budget | None:
        if node is None or _is_null(node):
            return Budget()
        if not isinstance(node, MappingNode):
            self.report(node, f"'budget' must be a mapping of {' and '.join(BUDGET_KEYS)}")
            return None
        fields = self.mapping(node, BUDGET_KEYS, "in 'budget'")
        cents = {key: self.usd(value, key) for key, value in fields.items()}
        if any(value is _INVALID for value in cents.values()):
            return None
        return Budget(
            max_spend_cents=cents.get("max_spend_usd"),
            keep_balance_cents=cents.get("keep_balance_usd"),
        )

    def usd(self, node: Node, key: str) -> Any:
        value = self.scalar(node)
        if value is _INVALID:
            return _INVALID
        if value is None:
            return None
        if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
            self.report(
                node, f"'{key}' must be a dollar amount of 0 or more, got {_describe(node)}"
            )
            return _INVALID
        try:
            return dollars_to_cents(Decimal(str(value)))
        except ValueError:  # finite and >= 0 was checked above: only whole cents is left
            self.report(node, f"'{key}' must be in whole cents, got {_quote(node.value)}")
            return _INVALID

    def defaults(self, node: Node | None) -> dict[str, _Field]:
        if node is None or _is_null(node):
            return {}
        if not isinstance(node, MappingNode):
            self.report(node, "'defaults' must be a mapping of job fields")
            return {}
        raw = self.mapping(node, JOB_KEYS, "in 'defaults'")
        self.default_keys = frozenset(raw)
        if "name" in raw:
            self.report(raw.pop("name"), "'name' cannot be a default", "every job's name differs")
        return self.job_fields(raw, from_defaults=True)

    # -- jobs -------------------------------------------------------------------------------

    def jobs(self, node: Node | None, root: Node, defaults: dict[str, _Field]) -> list[_Draft]:
        if node is None:
            self.report(root, "missing 'jobs'", "add a 'jobs:' list; see jobs.example.yaml")
            return []
        if not isinstance(node, SequenceNode):
            self.report(node, f"'jobs' must be a list of jobs, got {_describe(node)}")
            return []
        if not node.value:
            self.report(node, "'jobs' is empty", "add at least one job")
            return []
        self.check_tag(node, _SEQ_TAG)
        if len(node.value) > MAX_JOBS:  # aliases list many jobs in little text
            self.too_many_jobs(node.start_mark)
            return []
        drafts: list[_Draft] = []
        # A job's mapping listed again (through an alias) can only repeat that job, and checking
        # it again would let a few aliases multiply the work. Mappings written in the list start
        # in increasing order, so only one that starts no later than the last can be a repeat:
        # the map of mappings to job numbers is built (and kept) from the first such job on.
        numbers: dict[int, int] | None = None
        last = -1
        for number, item in enumerate(node.value, 1):
            if isinstance(item, MappingNode):
                at = item.start_mark.index
                if numbers is None and at <= last:
                    numbers = {id(draft.node): draft.number for draft in drafts}
                last = max(last, at)
                first = numbers.setdefault(id(item), number) if numbers is not None else number
                if first != number:
                    self.report(
                        item,
                        f"job {number} is job {first} again (through a YAML alias)",
                        "list each job once",
                    )
                    drafts.append(_Draft(node=item, number=number, ok=False))
                    continue
            drafts.append(self.job(item, number, defaults))
        self.check_duplicates(drafts)
        return drafts

    def job(self, node: Node, number: int, defaults: dict[str, _Field]) -> _Draft:
        draft = _Draft(node=node, number=number)
        if not isinstance(node, MappingNode):
            self.report(
                node, f"job {number} must be a mapping of job fields, got {_describe(node)}"
            )
            draft.ok = False
            return draft
        before = len(self.problems)
        raw = self.mapping(node, JOB_KEYS, f"in job {number}")
        given = raw.keys() | self.default_keys
        own = self.job_fields(raw, from_defaults=False)
        fields = dict(defaults)
        if "url" in own or "file" in own:  # a job's own source replaces a default source
            fields.pop("url", None)
            fields.pop("file", None)
        fields.update(own)

        if "url" in raw and "file" in raw:
            self.report(node, f"job {number} has both 'url' and 'file'", "keep exactly one")
        elif "url" not in given and "file" not in given:
            self.report(node, f"job {number} has neither 'url' nor 'file'", "add one of them")
        elif "url" in fields:
            draft.source = Source(url=fields["url"].value)
            draft.source_key = "url:" + normalize_url(fields["url"].value)
        elif "file" in fields:
            draft.source = Source(file=fields["file"].value)
            draft.source_key = "file:" + os.path.normcase(str(fields["file"].value))

        mode_field = fields.get("mode")
        if mode_field is not None:
            draft.mode = mode_field.value
        elif "mode" not in given:
            valid = "|".join(m.value for m in Mode)
            self.report(node, f"job {number} has no 'mode'", f"add 'mode: {valid}'")

        stem_field = fields.get("stem")
        if draft.mode is Mode.SINGLE:
            if stem_field is not None:
                draft.stem = stem_field.value
            elif "stem" not in given:
                valid = "|".join(s.value for s in Stem)
                self.report(
                    node, f"job {number} has mode 'single' but no 'stem'", f"add 'stem: {valid}'"
                )
        elif draft.mode is not None and stem_field is not None and not stem_field.from_defaults:
            self.report(
                stem_field.node,
                f"'stem' only applies to mode 'single', not '{draft.mode.value}'",
                "remove 'stem' or use 'mode: single'",
            )

        if "duration" in fields:
            draft.duration_s = fields["duration"].value
        if "name" in fields:
            draft.name = fields["name"].value
            draft.name_node = fields["name"].node
        elif draft.source is not None:
            # Now, while the URL's split form is still in urllib's small cache.
            draft.slug = slug_for(draft.source)
        draft.ok = len(self.problems) == before
        return draft

    def job_fields(self, raw: dict[str, Node], *, from_defaults: bool) -> dict[str, _Field]:
        """Parse each present per-job field; bad ones are reported and left out."""
        fields: dict[str, _Field] = {}
        for key, node in raw.items():
            value = self.parsers[key](node)
            if value is not _INVALID:
                fields[key] = _Field(value=value, node=node, from_defaults=from_defaults)
        return fields

    def url(self, node: Node) -> Any:
        text = self.string(node, "'url'")
        if text is None:
            return _INVALID
        text = text.strip()
        if len(text) > MAX_URL_LENGTH:
            self.report(node, f"'url' is longer than {MAX_URL_LENGTH} characters")
            return _INVALID
        parts = urlsplit(text) if not _SPACE.search(text) else None
        if parts is None:
            self.report(node, "'url' must not contain spaces", "percent-encode them as %20")
            return _INVALID
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            if not parts.scheme or "." in parts.scheme:
                hint = f"did you mean 'https://{_quote(text)}'?"
                self.report(node, "'url' must start with http:// or https://", hint)
            else:
                self.report(
                    node,
                    f"'url' scheme '{_quote(parts.scheme)}' is not supported",
                    "use http or https",
                )
            return _INVALID
        try:
            host = parts.hostname
            _ = parts.port
        except ValueError:
            host = None
        if not host:
            self.report(node, f"'url' has no valid host: {_quote(text)}")
            return _INVALID
        return text

    def file(self, node: Node) -> Any:
        text = self.string(node, "'file'")
        if text is None:
            return _INVALID
        if not text.strip() or "\x00" in text:
            self.report(node, "'file' must be a file path")
            return _INVALID
        path = Path(os.path.normpath(self.base / Path(text).expanduser()))
        try:
            is_file = path.is_file()
            exists = is_file or path.exists()
        except OSError as exc:
            self.report(node, f"cannot read 'file' {_quote(text)}: {exc.strerror or exc}")
            return _INVALID
        if not exists:
            self.report(node, f"file not found: {_quote(text)}", f"looked for {_quote(str(path))}")
            return _INVALID
        if not is_file:
            self.report(node, f"'file' is not a regular file: {_quote(text)}")
            return _INVALID
        return path

    def mode(self, node: Node) -> Any:
        valid = _VALID_MODES
        text = self.string(node, "'mode'", hint=f"valid modes: {valid}")
        if text is None:
            return _INVALID
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
        self.report(node, f"unknown mode '{_quote(text)}'", hint)
        return _INVALID

    def stem(self, node: Node) -> Any:
        valid = _VALID_STEMS
        text = self.string(node, "'stem'", hint=f"valid stems: {valid}")
        if text is None:
            return _INVALID
        stem = _STEMS.get(text)
        if stem is not None:
            return stem
        close = _close_match(text.lower(), tuple(_STEMS))
        hint = f"did you mean '{close}'? " if close else ""
        self.report(node, f"unknown stem '{_quote(text)}'", f"{hint}valid stems: {valid}")
        return _INVALID

    def name(self, node: Node) -> Any:
        value = self.scalar(node)
        if value is _INVALID:
            return _INVALID
        # A bare number is a fine folder name ("name: 2019"): take the text as written.
        if type(value) not in (str, int, float) or not isinstance(node, ScalarNode):
            self.report(node, f"'name' must be text, got {_describe(node)}")
            return _INVALID
        text = str(node.value)
        hint = "use letters, digits, spaces, '-', '_' or '.'"
        if not text.strip():
            self.report(node, "'name' must not be empty", hint)
        elif text in (".", "..") or text.startswith("."):
            self.report(node, f"'name' cannot start with a dot: {_cut(text)!r}", hint)
        elif _BAD_NAME_CHARS.search(text):
            self.report(node, f"'name' cannot be a folder name: {_cut(text)!r}", hint)
        elif len(text) > MAX_NAME_LENGTH:
            self.report(node, f"'name' is longer than {MAX_NAME_LENGTH} characters")
        elif text != text.strip():
            self.report(node, f"'name' must not start or end with spaces: {_cut(text)!r}")
        else:
            return text
        return _INVALID

    def duration(self, node: Node) -> Any:
        value = self.scalar(node)
        if value is _INVALID:
            return _INVALID
        if type(value) not in (int, float) or not math.isfinite(value) or value <= 0:
            self.report(
                node,
                f"'duration' must be a number of seconds above 0, got {_describe(node)}",
            )
            return _INVALID
        return float(value)

    # -- whole-list checks ------------------------------------------------------------------

    def check_duplicates(self, drafts: list[_Draft]) -> None:
        seen_work: dict[tuple[str, Mode, Stem | None], _Draft] = {}
        seen_names: dict[str, _Draft] = {}
        for draft in drafts:
            if draft.source_key is not None and draft.mode is not None:
                work = (draft.source_key, draft.mode, draft.stem)
                first = seen_work.setdefault(work, draft)
                if first is not draft:
                    self.report(
                        draft.node,
                        f"job {draft.number} repeats job {first.number} "
                        f"(line {first.node.start_mark.line + 1}): same source, mode and stem",
                        "remove one of them",
                    )
            if draft.name is not None:
                folded = draft.name.casefold()
                first = seen_names.setdefault(folded, draft)
                if first is not draft:
                    self.report(
                        draft.name_node,
                        f"job {draft.number} uses the name '{draft.name}' of job {first.number} "
                        f"(line {first.node.start_mark.line + 1})",
                        "names are output folders and must differ, ignoring case",
                    )

    def finish_jobs(self, drafts: list[_Draft]) -> tuple[Job, ...]:
        """Build the jobs, giving unnamed ones a unique slug that no explicit name uses."""
        taken = {d.name.casefold() for d in drafts if d.name is not None}
        jobs: list[Job] = []
        for draft in drafts:
            assert draft.source is not None and draft.mode is not None
            name = draft.name
            if name is None:
                name = _unique(draft.slug, draft, taken)
                taken.add(name.casefold())
            jobs.append(
                Job(
                    name=name,
                    source=draft.source,
                    mode=draft.mode,
                    stem=draft.stem,
                    duration_s=draft.duration_s,
                    line=draft.node.start_mark.line + 1,
                )
            )
        return tuple(jobs)

    # -- scalars ----------------------------------------------------------------------------

    def scalar(self, node: Node) -> Any:
        """The node's plain value (str, int, float, bool, None, ...), or _INVALID if it has none."""
        if not isinstance(node, ScalarNode):
            self.report(node, f"expected a single value, got {_describe(node)}")
            return _INVALID
        tag = _tag_of(node)
        if tag == _STR_TAG:
            return node.value
        construct = _constructor.yaml_constructors.get(tag)
        if construct is None:
            self.report(node, f"unsupported YAML tag {_quote(tag)}", "remove the '!' tag")
            return _INVALID
        try:
            return construct(_constructor, node)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            self.report(node, f"cannot read value {_cut(node.value)!r}: {_quote(str(exc))}")
            return _INVALID

    def string(self, node: Node, what: str, *, hint: str | None = None) -> str | None:
        value = self.scalar(node)
        if value is _INVALID:
            return None
        if not isinstance(value, str):
            self.report(node, f"{what} must be text, got {_describe(node)}", hint)
            return None
        return value


class _Invalid:
    """Marks a value that failed validation (distinct from a YAML null)."""


_INVALID: Final = _Invalid()


def _unique(slug: str, draft: _Draft, taken: set[str]) -> str:
    if slug.casefold() not in taken:
        return slug
    variant = draft.stem.value if draft.stem is not None else draft.mode.value if draft.mode else ""
    candidates: Iterator[str] = (
        f"{slug}-{variant}" if n == 1 else f"{slug}-{variant}-{n}" for n in range(1, 1_000_000)
    )
    return next(c for c in candidates if c.casefold() not in taken)


def _cut(text: str) -> str:
    """The text, cut short for a message if it is long."""
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3] + "..."


def _quote(text: str) -> str:
    """User text for a message: cut short, control characters (newlines too) escaped."""
    text = _cut(text)
    return text if text.isprintable() else _cut(repr(text)[1:-1])


def _close_match(word: str, options: tuple[str, ...], cutoff: float = 0.6) -> str | None:
    """The option most like ``word``, if one is close enough (``difflib``'s ratio)."""
    # The ratio is at most 2*len(option) / (len(word) + len(option)): a word much longer than
    # every option cannot pass the cutoff, and matching it would take time and memory.
    if len(word) * cutoff > (2 - cutoff) * max(map(len, options)):
        return None
    close = difflib.get_close_matches(word, options, n=1, cutoff=cutoff)
    return close[0] if close else None


def _tag_of(node: Node) -> str:
    """The node's resolved tag, resolving a plain scalar's type on first use."""
    if node.tag == _PLAIN:
        value = node.value
        # Fast paths for the commonest shapes, exact under PyYAML's rules: its resolver only
        # tries the patterns filed under a scalar's first character, so a scalar starting with
        # any other letter is text; digits without a leading zero are an integer.
        if value and value[0] in _TEXT_FIRST_CHARS:
            node.tag = _STR_TAG
        elif value.isdigit() and value.isascii() and value[0] != "0":
            node.tag = _INT_TAG
        else:
            node.tag = _resolver.resolve(ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
    tag: str = node.tag
    return tag


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and _tag_of(node) == _NULL_TAG


def _describe(node: Node) -> str:
    """A short description of a node's value for messages: its text, or its kind."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    tag = _tag_of(node)
    if tag == _NULL_TAG:
        return "nothing"
    kinds = {_BOOL_TAG: "true/false ", _STR_TAG: "text "}
    text = node.value if len(node.value) <= 40 else node.value[:37] + "..."
    return f"{kinds.get(tag, '')}{text!r}"
