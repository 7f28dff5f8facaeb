"""Reading a results file back: the YAML or JSON that ``results.py`` writes, checked to be one.

A YAML results file is read in pieces of about ``PIECE_BYTES``, each a run of whole entries of
its ``jobs:`` list, so that only one piece's YAML nodes are alive at a time: composing a
100,000-job file whole took 2.5 GiB and 94 s. That needs the layout ``results.py`` writes (a
block-style root mapping whose last key is ``jobs:``, each entry starting ``- `` at one
indentation). A file that has another layout (flow style, keys after ``jobs``, several
documents), any piece that does not read as a list, and JSON are read whole instead, so a
broken file gets the whole reader's error and position.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import IO, Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from batchpod.errors import ConfigError
from batchpod.models import JobStatus
from batchpod.results import RESULTS_VERSION

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: About how many bytes of entries one YAML call reads (whole entries: a piece ends at an entry).
PIECE_BYTES = 1 << 18
#: What the report never shows, and most of a large file: each stem's signed link and score.
REPORT_UNUSED = frozenset({"download_urls", "quality_scores"})
_ENTRY = re.compile(rb"( *)- ")
_BLANK_OR_COMMENT = re.compile(rb"[ \t]*(#.*)?\r?\n?")
# What a piece could read differently than the whole file does: a line break other than the
# line's own (a lone CR, NEL, LS, PS) hides a line from the splitter, and an anchor could be
# repeated in another piece (PyYAML refuses that) or aliased from one. results.py writes none.
# A JSON escape of a UTF-16 surrogate (half of a pair, or alone).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_AWKWARD = re.compile(rb"\r(?!\n)|\xc2\x85|\xe2\x80[\xa8\xa9]|(?:^|[\s\[{,])&[^\s,\[\]{}]")


def load_results(path: Path, *, drop: Collection[str] = ()) -> dict[str, Any]:
    """The data of results file ``path``: YAML, or JSON when it is named ``.json`` or opens
    with ``{``. Checked to be a batchpod results document this version can read: a mapping
    with ``results_version`` 1, a ``run`` mapping and a ``jobs`` list whose entries have a
    ``name`` and a known ``status``. Each entry's keys in ``drop`` are left out (the report
    passes ``REPORT_UNUSED``), and its keys are shared strings, so that a large file's
    entries take as little memory as they can.

    Raises ``ConfigError`` with a one-line message naming ``path`` when the file is missing or
    unreadable, not UTF-8, not YAML/JSON, or not a results document (a jobs manifest given by
    mistake is named as such).
    """
    try:
        with path.open("rb") as stream:
            data = None if path.suffix.lower() == ".json" else _in_pieces(stream, drop)
            if data is None:
                stream.seek(0)
                data = _whole(path, stream.read())
                if drop and isinstance(data, dict) and isinstance(data.get("jobs"), list):
                    data["jobs"] = [_slim(entry, drop) for entry in data["jobs"]]
    except OSError as exc:
        raise ConfigError(f"cannot read the results file {path}: {exc.strerror or exc}") from exc
    _check(path, data)
    document: dict[str, Any] = data
    return document


def _slim(entry: Any, drop: Collection[str]) -> Any:
    if not isinstance(entry, dict):
        return entry  # refused by _check
    return {
        sys.intern(k) if isinstance(k, str) else k: v for k, v in entry.items() if k not in drop
    }


def _in_pieces(stream: IO[bytes], drop: Collection[str]) -> dict[str, Any] | None:
    """The document read a piece at a time, or ``None`` when its layout is not one this can
    read so, or something in it is read differently in pieces (the caller reads it whole)."""
    head: list[bytes] = []
    for line in stream:
        if line.rstrip(b"\r\n") == b"jobs:":
            break
        if line.startswith((b"---", b"...")) and head:
            return None  # a second document, or an end marker: not results.py's layout
        if _AWKWARD.search(line):
            return None
        head.append(line)
    else:
        return None  # no block 'jobs:' key at the root ('jobs: []', flow style, no jobs)
    text = b"".join(head)
    # Parsed alone, the header must not already have 'jobs' (a repeated key would win); parsed
    # with an empty 'jobs' after it, it must still be one mapping (not indented, not flow
    # style, no end marker hidden in it), as it is in the whole file.
    header = _piece(text)
    if not isinstance(header, dict) or "jobs" in header:
        return None
    if _piece(text + b"jobs: []\n") != {**header, "jobs": []}:
        return None
    jobs: list[Any] = []
    for piece in _entry_pieces(stream):
        if piece is None:
            return None
        entries = _piece(piece)
        if not isinstance(entries, list):
            return None
        jobs.extend(_slim(entry, drop) for entry in entries)
    if not jobs:
        return None  # 'jobs:' with nothing after it is null, not a list: the whole reader says so
    header["jobs"] = jobs
    return header


def _entry_pieces(stream: IO[bytes]) -> Iterator[bytes | None]:
    """Runs of whole entries of the 'jobs:' list, about PIECE_BYTES each; ``None`` (and stop)
    at a line that is not an entry's or inside one (a key after 'jobs', another document), or
    that could read differently in a piece than in the whole file (see ``_AWKWARD``)."""
    prefix: bytes | None = None
    piece: list[bytes] = []
    size = 0
    for line in stream:
        if _AWKWARD.search(line):
            yield None
            return
        if prefix is None:
            if not _BLANK_OR_COMMENT.fullmatch(line):
                entry = _ENTRY.match(line)
                if entry is None:
                    yield None
                    return
                prefix = line[: entry.end()]
        elif line.startswith(prefix):
            if size >= PIECE_BYTES:
                yield b"".join(piece)
                piece, size = [], 0
        elif not line.startswith(prefix[:-2] + b" ") and not _BLANK_OR_COMMENT.fullmatch(line):
            yield None  # less indented than the entries' contents: not inside an entry
            return
        piece.append(line)  # blank and comment lines too: they are read, and checked, as text
        size += len(line)
    if piece and prefix is not None:
        yield b"".join(piece)


def _piece(data: bytes) -> Any:
    """One piece of the file, parsed; ``None`` when it cannot be (the whole file is then read,
    which reports where and why, or raises what it raises)."""
    try:
        loader = _LOADER(data.decode("utf-8"))
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            try:
                return _plain(node)
            except _Unusual:
                return loader.construct_document(node)
        finally:
            loader.dispose()
    except Exception:  # any refusal, a constructor's ValueError too: read it whole
        return None


class _Unusual(Exception):
    """A node that ``_plain`` leaves to PyYAML's constructor."""


_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_SCALARS: dict[str, Any] = {
    "tag:yaml.org,2002:int": SafeConstructor.construct_yaml_int,
    "tag:yaml.org,2002:float": SafeConstructor.construct_yaml_float,
    "tag:yaml.org,2002:bool": SafeConstructor.construct_yaml_bool,
    "tag:yaml.org,2002:null": SafeConstructor.construct_yaml_null,
}
_CONSTRUCTOR = SafeConstructor()


def _plain(node: Node) -> Any:
    """What PyYAML's safe constructor makes of ``node``, for what results files hold (maps,
    lists, text, numbers, booleans, nulls), without its bookkeeping: most of the time of
    reading a large file went there. Anything else (timestamps, sets, binary, merge keys)
    raises ``_Unusual``, and the piece is constructed by PyYAML. A piece holds no anchors
    (``_AWKWARD``), so no node is met twice."""
    kind = node.__class__
    if kind is ScalarNode:
        if node.tag == _STR:
            return node.value
        construct = _SCALARS.get(node.tag)
        if construct is None:
            raise _Unusual
        return construct(_CONSTRUCTOR, node)
    if kind is MappingNode and node.tag == _MAP:
        out: dict[Any, Any] = {}
        for key, value in node.value:
            if key.__class__ is not ScalarNode or key.tag == _MERGE:
                raise _Unusual
            out[_plain(key)] = _plain(value)
        return out
    if kind is SequenceNode and node.tag == _SEQ:
        return [_plain(item) for item in node.value]
    raise _Unusual


def _whole(path: Path, raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_results(path, "it is not UTF-8 text") from exc
    try:
        if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            data = json.loads(text)
            _unicode(path, text, data)
        else:
            data = yaml.load(text, Loader=_LOADER)  # a safe loader: tags are refused
    except json.JSONDecodeError as exc:
        raise _not_results(path, f"not valid JSON (line {exc.lineno}, column {exc.colno})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise _not_results(path, f"not valid YAML{where}") from exc
    except RecursionError as exc:
        raise _not_results(path, "it is nested too deeply") from exc
    return data


def _unicode(path: Path, text: str, data: object) -> None:
    """Refuse JSON whose text escapes a lone surrogate (``\\ud800``): it is not Unicode, so
    it could not be written again as YAML (a merge) or read back from it. Only text that
    escapes a surrogate at all (a pair is one character, an emoji) is encoded to find out."""
    if not _SURROGATE_ESCAPE.search(text):
        return
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _not_results(path, "it holds a lone surrogate escape, which is not text") from exc


def _check(path: Path, data: object) -> None:
    if not isinstance(data, dict) or "results_version" not in data:
        if isinstance(data, dict) and "version" in data and "jobs" in data:
            hint = f"{path.stem}.results.yaml beside it"
            raise _not_results(path, f"it looks like a jobs manifest; its results are in {hint}")
        raise _not_results(path, "it has no results_version")
    version = data["results_version"]
    if type(version) is not int or version != RESULTS_VERSION:  # not True, not 1.0
        raise ConfigError(
            f"{path}: results_version {version!r} is not one this batchpod "
            f"reads ({RESULTS_VERSION}); use the batchpod that wrote it"
        )
    if not isinstance(data.get("run"), dict):
        raise _not_results(path, "'run' is missing or not a mapping")
    jobs = data.get("jobs")
    if not isinstance(jobs, list):
        raise _not_results(path, "'jobs' is missing or not a list")
    statuses = {status.value for status in JobStatus}
    for index, entry in enumerate(jobs):
        ok = isinstance(entry, dict) and isinstance(entry.get("name"), str)
        status = entry.get("status") if ok else None
        if not isinstance(status, str) or status not in statuses:
            raise _not_results(path, f"jobs[{index}] has no name or no known status")
        if not isinstance(entry.get("meta", {}), dict):
            raise _not_results(path, f"jobs[{index}]'s meta is not a mapping")


def _not_results(path: Path, reason: str) -> ConfigError:
    return ConfigError(f"{path} is not a batchpod results file: {reason}")
