"""Bounded YAML with positions: manifest text -> its root node (jobs streamed), or why not.

The YAML is *composed* (parsed into nodes that remember their line and column) rather than
loaded, so that every problem can be reported as ``FILE:LINE:COL: message``. libyaml's C parser
is used when PyYAML was built with it; the pure-Python parser gives the same nodes and
positions otherwise (``LOADERS``, fastest first). The items of the root mapping's ``jobs`` list
are handed one by one to a ``take_job`` callback as they are composed and are not kept: a node
takes some 300 bytes, and a 100,000-job manifest has 800,000 of them.

Whatever is not a job is composed whole and kept, so text longer than
``ManifestLimits.count_first_chars`` is first counted without composing it: libyaml counts its
events in C, and only when that count passes ``max_nodes`` does a Python pass over the events
(libyaml's, else the pure parser's: ``EVENT_PARSERS``) find which limit (``max_jobs`` items in
the top-level ``jobs`` list, or ``max_nodes`` nodes in all) was passed, stopping there. Nothing
is constructed here: plain scalars are typed only when a rule reads them (``tag_of``).

This is the one seam where PyYAML's exceptions become problems. It knows nothing of the
format's keys or rules.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

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

from ._limits import SPLIT_HINT
from ._report import Reporter

__all__ = [
    "BOOL_TAG",
    "EVENT_PARSERS",
    "INT_TAG",
    "LOADERS",
    "MAP_TAG",
    "NULL_TAG",
    "PLAIN",
    "SEQ_TAG",
    "STR_TAG",
    "TakeJob",
    "read_root",
    "tag_of",
]

#: Called with the 'jobs' list node and each of its items, as soon as the item is composed.
TakeJob = Callable[[SequenceNode, Node], None]

# Resolving every plain scalar's type up front (int? bool? date?) costs more than all the rest
# of composing a large manifest, and most scalars are keys and words whose type we never need.
# So the parser tags plain scalars as PLAIN and `tag_of` resolves only the ones the rules read.
PLAIN: Final = "batchpod:plain"
STR_TAG: Final = "tag:yaml.org,2002:str"
MAP_TAG: Final = BaseResolver.DEFAULT_MAPPING_TAG
SEQ_TAG: Final = BaseResolver.DEFAULT_SEQUENCE_TAG
INT_TAG: Final = "tag:yaml.org,2002:int"
BOOL_TAG: Final = "tag:yaml.org,2002:bool"
NULL_TAG: Final = "tag:yaml.org,2002:null"

# libyaml refuses deeper nesting (and the pure parser runs out of stack sooner): the event count
# stops there and leaves the error to composing. A fact about the parsers, not a limit to set.
_PARSER_MAX_DEPTH: Final = 1000


class _LazyResolver(BaseResolver):
    def resolve(self, kind: type[Node], value: Any, implicit: tuple[bool, bool] | None) -> str:
        if kind is ScalarNode and implicit is not None and implicit[0]:
            return PLAIN
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

    take_job: TakeJob | None = None

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

    def _compose_root_mapping(self, take_job: TakeJob) -> Node:
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

    def _compose_jobs(self, take_job: TakeJob) -> SequenceNode:
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
#: The event parsers that count a large manifest before it is composed, fastest first:
#: libyaml's when PyYAML has it, then the pure-Python one (tests check that they agree).
EVENT_PARSERS: Final[tuple[type[Any], ...]] = tuple(
    parser for parser in (_CParser, _PyEvents) if parser is not None
)

_TEXT_FIRST_CHARS: Final = (
    frozenset(string.ascii_letters) - frozenset(Resolver.yaml_implicit_resolvers)
    if None not in Resolver.yaml_implicit_resolvers  # a catch-all pattern would void the rule
    else frozenset()
)
_resolver = Resolver()


def tag_of(node: Node) -> str:
    """The node's resolved tag, resolving a plain scalar's type on first use."""
    if node.tag == PLAIN:
        value = node.value
        # Fast paths for the commonest shapes, exact under PyYAML's rules: its resolver only
        # tries the patterns filed under a scalar's first character, so a scalar starting with
        # any other letter is text; digits without a leading zero are an integer.
        if value and value[0] in _TEXT_FIRST_CHARS:
            node.tag = STR_TAG
        elif value.isdigit() and value.isascii() and value[0] != "0":
            node.tag = INT_TAG
        else:
            node.tag = _resolver.resolve(ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
    tag: str = node.tag
    return tag


# -- reading: text -> root node ---------------------------------------------------------------


def read_root(
    data: bytes | str,
    report: Reporter,
    *,
    take_job: TakeJob,
    loader: type[Any] | None = None,
    event_parser: type[Any] | None = None,
) -> Node | None:
    """The manifest's root node, or ``None`` once the problem that stops reading is reported.

    Within ``report.limits``; ``loader`` composes (one of ``LOADERS``) and ``event_parser``
    counts (one of ``EVENT_PARSERS``), the fastest of each by default.
    """
    text = _decode(data, report)
    if text is None or not _within_limits(text, report, event_parser or EVENT_PARSERS[0]):
        return None
    return _compose(text, report, loader or _Loader, take_job)


def _decode(data: bytes | str, report: Reporter) -> str | None:
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        head = data[: exc.start]
        line = head.count(b"\n") + 1
        column = len(head[head.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        report.add(
            line,
            column,
            f"not UTF-8 text (byte 0x{data[exc.start]:02x})",
            "save the manifest as UTF-8",
        )
        return None


def _within_limits(text: str, report: Reporter, event_parser: type[Any]) -> bool:
    """Whether the text is small enough to compose; if not, the one problem saying why."""
    if len(text) <= report.limits.count_first_chars:
        return True
    if event_parser is _CParser:
        try:
            # Events (ends included) are at least as many as nodes; counted in C, fast.
            if _CParser(text).raw_parse() <= report.limits.max_nodes:
                return True
        except yaml.YAMLError:
            pass  # counted below up to the error, which composing then reports
    return _count_events(text, report, event_parser)


def _count_events(text: str, report: Reporter, event_parser: type[Any]) -> bool:
    """Count nodes and top-level jobs from the parser's events; stop at the first limit."""
    max_nodes, max_jobs = report.limits.max_nodes, report.limits.max_jobs
    nodes = depth = jobs = 0
    root_is_mapping = is_key = in_jobs = False
    key: Any = None
    jobs_mark: Any = None
    try:
        get_event = event_parser(text).get_event
        while (event := get_event()) is not None:
            if isinstance(event, NodeEvent):
                nodes += 1
                if nodes > max_nodes:
                    report.at_mark(
                        event.start_mark,
                        f"the manifest has more than {max_nodes:,} YAML nodes "
                        "(keys, values, lists and mappings), the limit for one manifest",
                        SPLIT_HINT,
                    )
                    return False
                if depth == 2 and in_jobs:
                    jobs += 1
                    if jobs > max_jobs:
                        report.too_many_jobs(jobs_mark)
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
                    if depth > _PARSER_MAX_DEPTH:
                        return True  # composing refuses it before going this deep
            elif isinstance(event, CollectionEndEvent):
                depth -= 1
                if depth == 1:
                    in_jobs = False
    except yaml.YAMLError:
        pass  # composing reports it, having composed no more nodes than were counted
    return True


def _compose(text: str, report: Reporter, loader: type[Any], take_job: TakeJob) -> Node | None:
    parser = None
    try:
        parser = loader(text)  # the pure-Python reader checks the characters here
        parser.take_job = take_job
        root: Node | None = parser.get_single_node()  # our loaders are safe ones
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"YAML syntax error: {report.quote(problem)}"
        if exc.context and exc.problem:
            message = f"YAML syntax error: {report.quote(problem)} ({report.quote(exc.context)})"
        report.add(line, column, message)
        return None
    except yaml.reader.ReaderError as exc:
        # Positions differ (libyaml counts UTF-8 bytes): find the character in the text.
        found = Reader.NON_PRINTABLE.search(text)
        at = found.start() if found else 0
        line, column = text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)
        code = ord(text[at]) if found else exc.character
        report.add(
            line,
            column,
            f"YAML syntax error: character #x{code:04x} is not allowed in YAML",
            "remove it, or write it as an escape (such as \\x1b) in double quotes",
        )
        return None
    except yaml.YAMLError as exc:
        report.add(1, 1, f"YAML error: {report.quote(str(exc))}")
        return None
    except RecursionError:
        report.add(1, 1, "YAML nested too deeply")
        return None
    finally:
        if parser is not None:
            parser.dispose()
    if root is None:
        report.add(
            1,
            1,
            "the manifest is empty",
            "start with 'version: 1' and a 'jobs:' list; see jobs.example.yaml",
        )
    return root
