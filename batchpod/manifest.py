"""The manifest format (version 1): YAML text -> a validated ``Manifest``, or every problem in it.

This module owns the format: its keys, defaults, and the rules a manifest must follow. It reads
the manifest and checks that local source files exist; it knows nothing of HTTP, state files or
the terminal.

Validation never stops at the first mistake. The YAML is *composed* (parsed into nodes that
remember their line and column) rather than loaded, so that every problem can be reported as
``FILE:LINE:COL: message``. libyaml's C parser is used when PyYAML was built with it; the
pure-Python parser gives the same nodes and positions otherwise. The items of the ``jobs``
list are checked one by one as they are composed, and only a small record of each is kept
(``_Draft``): a node takes some 300 bytes, and a 100,000-job manifest has 800,000 of them.
What a job takes from ``defaults`` is settled once the whole manifest is read, since
``defaults`` may be written after ``jobs``.

Hostile input is refused in bounded memory and time. A manifest may be at most
``MAX_MANIFEST_BYTES`` long (checked from the file's size before it is read). Whatever is not
a job is composed whole and kept, so text longer than ``_COUNT_FIRST_CHARS`` is first
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import SafeConstructor
from yaml.events import (
    CollectionEndEvent,
    CollectionStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver, Resolver
from yaml.scanner import Scanner

from batchpod.budget import dollars_to_cents
from batchpod.errors import ManifestError, Problem
from batchpod.identity import is_simple_url, slug_for, source_key
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
# so MAX_JOBS of the largest jobs fit. Nodes outside the jobs are all kept (some 300 bytes
# each), so this bounds the memory a manifest may take.
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


class _JobStreamComposer(Composer):
    """PyYAML's composer, except that the top-level ``jobs`` list's items are handed on one by one.

    Composing a whole 100,000-job manifest keeps some 800,000 nodes alive at once (about 300 MB).
    Instead, each item of a ``jobs`` list in the root mapping goes to ``take_job`` as soon as it
    is composed, and is not kept in the list: the checker validates it then and keeps only what
    the job needs. Everything else (aliases, anchors, errors and their positions) is composed
    exactly as PyYAML does. With no ``take_job`` set, it composes as PyYAML does.
    """

    take_job: Callable[[SequenceNode, Node], None] | None = None

    if TYPE_CHECKING:  # the parser it is mixed with provides the events

        def get_event(self) -> Any: ...
        def peek_event(self) -> Any: ...
        def check_event(self, *choices: type[Any]) -> bool: ...
        def resolve(self, kind: type[Node], value: Any, implicit: Any) -> str: ...

    def _node(self, parent: Node | None, index: Any) -> Node:
        node: Node | None = self.compose_node(parent, index)
        assert node is not None  # there is a next event: it composes to a node
        return node

    def compose_document(self) -> Node | None:
        self.get_event()  # DOCUMENT-START
        if self.take_job is not None and self.check_event(MappingStartEvent):
            node: Node | None = self._compose_root_mapping(self.take_job)
        else:
            node = self._node(None, None)
        self.get_event()  # DOCUMENT-END
        self.anchors = {}
        return node

    def _compose_root_mapping(self, take_job: Callable[[SequenceNode, Node], None]) -> Node:
        start = self.get_event()
        node = MappingNode(
            self._tag(MappingNode, start), [], start.start_mark, None, start.flow_style
        )
        if start.anchor is not None:  # the first anchor of the document: it cannot be a duplicate
            self.anchors[start.anchor] = node
        while not self.check_event(MappingEndEvent):
            key = self._node(node, None)
            value: Node
            if (
                isinstance(key, ScalarNode)
                and key.value == "jobs"
                and self.check_event(SequenceStartEvent)
            ):
                value = self._compose_jobs(take_job)
            else:
                value = self._node(node, key)
            node.value.append((key, value))
        node.end_mark = self.get_event().end_mark
        return node

    def _compose_jobs(self, take_job: Callable[[SequenceNode, Node], None]) -> SequenceNode:
        start = self.get_event()
        anchor = start.anchor
        if anchor is not None and anchor in self.anchors:
            raise ComposerError(
                f"found duplicate anchor {anchor!r}; first occurrence",
                self.anchors[anchor].start_mark,
                "second occurrence",
                start.start_mark,
            )
        node = SequenceNode(
            self._tag(SequenceNode, start), [], start.start_mark, None, start.flow_style
        )
        if anchor is not None:
            self.anchors[anchor] = node
        index = 0
        while not self.check_event(SequenceEndEvent):
            take_job(node, self._job_node(node, index))
            index += 1
        node.end_mark = self.get_event().end_mark
        return node

    def _job_node(self, parent: Node, index: int) -> Node:
        """`compose_node` for a job item, with a shortcut for the usual one.

        The usual job is a mapping of plain keys and values with no anchors: this composes it
        with half the calls (the same nodes), and leaves everything else to `compose_node`.
        """
        start: Any = self.peek_event()
        if start.__class__ is not MappingStartEvent or start.anchor is not None:
            return self._node(parent, index)
        self.get_event()
        tag, mark = self._tag(MappingNode, start), start.start_mark  # a mark of libyaml's type
        node = MappingNode(tag, [], mark, None, start.flow_style)  # type: ignore[arg-type]
        pairs = node.value
        peek_event, plain = self.peek_event, self._anchorless_scalar
        while (event := peek_event()).__class__ is not MappingEndEvent:
            key: Node | None = (
                plain(event) if event.__class__ is ScalarEvent and not event.anchor else None
            )
            key = key or self._node(node, None)
            event = peek_event()
            value = plain(event) if event.__class__ is ScalarEvent and not event.anchor else None
            pairs.append((key, value or self._node(node, key)))
        node.end_mark = self.get_event().end_mark
        return node

    def _anchorless_scalar(self, event: Any) -> ScalarNode:
        """The scalar node of `event`, the next event (a scalar without an anchor)."""
        self.get_event()
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolve(ScalarNode, event.value, event.implicit)
        return ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)

    def _tag(self, kind: type[Node], event: Any) -> str:
        tag: str | None = event.tag
        if tag is None or tag == "!":
            tag = self.resolve(kind, None, event.implicit)
        assert tag is not None
        return tag


class _PyLoader(Reader, Scanner, Parser, _JobStreamComposer, SafeConstructor, _LazyResolver):
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

    class _CLoader(_JobStreamComposer, CParser, SafeConstructor, _LazyResolver):
        """libyaml's parser (in C) with our composer (so jobs stream) and lazy scalar typing."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _JobStreamComposer.__init__(self)
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


# --------------------------------------------------------------------------------------------
# The checker


# A place in the manifest for a message: (line, column), both from 1.
_Position = tuple[int, int]


@dataclass(slots=True)
class _Draft:
    """A job as far as it validated; ``None`` where a field was missing or bad.

    Jobs are checked in two steps. As its item is composed, a job's own fields are parsed into
    ``own`` (the item's nodes are then dropped, so only this small record stays). Once the whole
    manifest is read, ``settle`` merges them with 'defaults' (which may come after 'jobs').
    """

    at: _Position
    number: int
    index: int = -1  # where the job's mapping starts in the text (-1: not a mapping)
    keys: frozenset[str] = frozenset()  # the keys the job sets itself, valid or not
    own: dict[str, Any] | None = None  # the job's own valid fields, until settled
    stem_at: _Position | None = None
    name_at: _Position | None = None
    source: Source | None = None
    source_key: str | None = None
    mode: Mode | None = None
    stem: Stem | None = None
    duration_s: float | None = None
    name: str | None = None
    slug: str = ""
    ok: bool = True
    reported: int = 0  # how many of its list's problems were found by the end of this job


@dataclass(slots=True)
class _Listed:
    """The jobs of one 'jobs' list, checked as its items were composed."""

    drafts: list[_Draft] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    count: int = 0
    # Where each job's mapping starts -> its number, to spot a job listed again through an
    # alias; built only once an item starts no later than the one before (see `list_job`).
    numbers: dict[int, int] | None = None
    last: int = -1


class _Checker:
    """One validation pass over one manifest, collecting problems as it goes."""

    def __init__(self, path: Path) -> None:
        self.shown = str(path)
        self.base = Path(path).absolute().parent
        self.problems: list[Problem] = []
        # Keys present in 'defaults', valid or not: a job is not told it lacks a field whose
        # default was already reported as bad.
        self.default_keys: frozenset[str] = frozenset()
        # The jobs of each 'jobs' list streamed while composing, by the list node's id.
        self.listed: dict[int, _Listed] = {}
        self.key_sets: dict[frozenset[str], frozenset[str]] = {}  # one copy of each key set
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
        self.report_pos(_position(node) if node else (1, 1), message, hint)

    def report_pos(self, at: _Position, message: str, hint: str | None = None) -> None:
        self.problems.append(
            Problem(path=self.shown, line=at[0], column=at[1], message=message, hint=hint)
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
        parser = None
        try:
            parser = loader(text)  # the pure-Python reader checks the characters here
            parser.take_job = self.take_job
            root: Node | None = parser.get_single_node()  # our loaders are safe ones
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
        finally:
            if parser is not None:
                parser.dispose()
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

    def defaults(self, node: Node | None) -> dict[str, Any]:
        if node is None or _is_null(node):
            return {}
        if not isinstance(node, MappingNode):
            self.report(node, "'defaults' must be a mapping of job fields")
            return {}
        raw = self.mapping(node, JOB_KEYS, "in 'defaults'")
        self.default_keys = frozenset(raw)
        if "name" in raw:
            self.report(raw.pop("name"), "'name' cannot be a default", "every job's name differs")
        return self.job_fields(raw)

    # -- jobs -------------------------------------------------------------------------------

    def jobs(self, node: Node | None, root: Node, defaults: dict[str, Any]) -> list[_Draft]:
        if node is None:
            self.report(root, "missing 'jobs'", "add a 'jobs:' list; see jobs.example.yaml")
            return []
        if not isinstance(node, SequenceNode):
            self.report(node, f"'jobs' must be a list of jobs, got {_describe(node)}")
            return []
        listed = self.listed.get(id(node))
        if listed is None:  # not streamed: written elsewhere and named through an alias
            listed = _Listed()
            for item in node.value:
                self.take_job(node, item, listed)
        if not listed.count:
            self.report(node, "'jobs' is empty", "add at least one job")
            return []
        self.check_tag(node, _SEQ_TAG)
        if listed.count > MAX_JOBS:  # aliases list many jobs in little text
            self.too_many_jobs(node.start_mark)
            return []
        done = 0
        for draft in listed.drafts:  # each job's problems together, as written
            self.problems += listed.problems[done : draft.reported]
            done = draft.reported
            self.settle(draft, defaults)
        self.check_duplicates(listed.drafts)
        return listed.drafts

    def take_job(self, jobs: SequenceNode, item: Node, listed: _Listed | None = None) -> None:
        """Check one item of a 'jobs' list as far as it can be without 'defaults'."""
        if listed is None:
            listed = self.listed.setdefault(id(jobs), _Listed())
        listed.count += 1
        if listed.count > MAX_JOBS:
            return  # reported once the list is complete
        # Its problems are kept with the list: they count only if this is the 'jobs' list
        # used (a duplicate 'jobs' key is reported, not checked).
        problems, self.problems = self.problems, listed.problems
        try:
            self.list_job(listed, item, listed.count)
        finally:
            self.problems = problems

    def list_job(self, listed: _Listed, item: Node, number: int) -> None:
        # A job's mapping listed again (through an alias) can only repeat that job, and checking
        # it again would let a few aliases multiply the work. Mappings written in the list start
        # in increasing order, so only one that starts no later than the last can be a repeat:
        # the map of starts to job numbers is built (and kept) from the first such job on.
        if isinstance(item, MappingNode):
            at = item.start_mark.index
            if listed.numbers is None and at <= listed.last:
                listed.numbers = {d.index: d.number for d in listed.drafts if d.index >= 0}
            listed.last = max(listed.last, at)
            numbers = listed.numbers
            first = numbers.setdefault(at, number) if numbers is not None else number
            if first != number:
                self.report(
                    item,
                    f"job {number} is job {first} again (through a YAML alias)",
                    "list each job once",
                )
                draft = _Draft(at=_position(item), number=number, ok=False)
                draft.reported = len(listed.problems)
                listed.drafts.append(draft)
                return
        draft = self.job(item, number)
        draft.reported = len(listed.problems)
        listed.drafts.append(draft)

    def job(self, node: Node, number: int) -> _Draft:
        """A job's own fields, checked; what depends on 'defaults' waits for `settle`."""
        draft = _Draft(at=_position(node), number=number)
        if not isinstance(node, MappingNode):
            self.report(
                node, f"job {number} must be a mapping of job fields, got {_describe(node)}"
            )
            draft.ok = False
            return draft
        before = len(self.problems)
        raw = self.mapping(node, JOB_KEYS, f"in job {number}")
        keys = frozenset(raw)
        draft.index = node.start_mark.index
        draft.keys = self.key_sets.setdefault(keys, keys)
        draft.own = own = self.job_fields(raw)
        if "stem" in own:
            draft.stem_at = _position(raw["stem"])
        if "name" in own:
            draft.name_at = _position(raw["name"])
        if "url" in raw and "file" in raw:
            self.report(node, f"job {number} has both 'url' and 'file'", "keep exactly one")
        draft.ok = len(self.problems) == before
        return draft

    def settle(self, draft: _Draft, defaults: dict[str, Any]) -> None:
        """Merge a checked job's own fields with the defaults, and check what is missing."""
        own = draft.own
        if own is None:  # not a mapping, or a repeat: already reported
            return
        draft.own = None  # no longer needed: let it go as the jobs are settled
        number = draft.number
        before = len(self.problems)
        given = draft.keys | self.default_keys
        fields = own
        if defaults:
            fields = dict(defaults)
            if "url" in own or "file" in own:  # a job's own source replaces a default source
                fields.pop("url", None)
                fields.pop("file", None)
            fields.update(own)

        if "url" in draft.keys and "file" in draft.keys:
            pass  # reported by `job`
        elif "url" not in given and "file" not in given:
            self.report_pos(
                draft.at, f"job {number} has neither 'url' nor 'file'", "add one of them"
            )
        elif "url" in fields:
            url = fields["url"]
            draft.source = Source(url=url)
            draft.source_key = source_key(draft.source)
        elif "file" in fields:
            draft.source = Source(file=fields["file"])
            draft.source_key = source_key(draft.source)

        draft.mode = fields.get("mode")
        if draft.mode is None and "mode" not in given:
            valid = "|".join(m.value for m in Mode)
            self.report_pos(draft.at, f"job {number} has no 'mode'", f"add 'mode: {valid}'")

        stem = fields.get("stem")
        if draft.mode is Mode.SINGLE:
            if stem is not None:
                draft.stem = stem
            elif "stem" not in given:
                valid = "|".join(s.value for s in Stem)
                self.report_pos(
                    draft.at,
                    f"job {number} has mode 'single' but no 'stem'",
                    f"add 'stem: {valid}'",
                )
        elif draft.mode is not None and draft.stem_at is not None:  # the job's own stem
            self.report_pos(
                draft.stem_at,
                f"'stem' only applies to mode 'single', not '{draft.mode.value}'",
                "remove 'stem' or use 'mode: single'",
            )

        draft.duration_s = fields.get("duration")
        draft.name = fields.get("name")
        if draft.name is None and draft.source is not None:
            draft.slug = slug_for(draft.source)
        draft.ok = draft.ok and len(self.problems) == before

    def job_fields(self, raw: dict[str, Node]) -> dict[str, Any]:
        """Parse each present per-job field; bad ones are reported and left out."""
        fields: dict[str, Any] = {}
        for key, node in raw.items():
            value = self.parsers[key](node)
            if value is not _INVALID:
                fields[key] = value
        return fields

    def url(self, node: Node) -> Any:
        text = self.string(node, "'url'")
        if text is None:
            return _INVALID
        text = text.strip()
        if len(text) > MAX_URL_LENGTH:
            self.report(node, f"'url' is longer than {MAX_URL_LENGTH} characters")
            return _INVALID
        if is_simple_url(text):  # http(s), a host: all that is checked below
            return text
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
        if node.tag in (_PLAIN, _STR_TAG) and node.value in _MODES:
            return _MODES[node.value]  # no mode's name reads as anything but text in YAML
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
                    self.report_pos(
                        draft.at,
                        f"job {draft.number} repeats job {first.number} "
                        f"(line {first.at[0]}): same source, mode and stem",
                        "remove one of them",
                    )
            if draft.name is not None and draft.name_at is not None:
                folded = draft.name.casefold()
                first = seen_names.setdefault(folded, draft)
                if first is not draft:
                    self.report_pos(
                        draft.name_at,
                        f"job {draft.number} uses the name '{draft.name}' of job {first.number} "
                        f"(line {first.at[0]})",
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
                    line=draft.at[0],
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
        value = node.value
        if (
            tag == _INT_TAG
            and len(value) < 19
            and value.isdigit()
            and value.isascii()
            and value[0] != "0"
        ):
            return int(value)  # a short decimal: what the constructor would give, sooner
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


def _position(node: Node) -> _Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


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
