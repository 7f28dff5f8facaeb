"""The manifest format (version 1): YAML text -> a validated ``Manifest``, or every problem in it.

This package owns the format: its keys, defaults, and the rules a manifest must follow. It reads
the manifest and checks that local source files exist; it knows nothing of HTTP, state files or
the terminal. Validation never stops at the first mistake: every problem is reported as
``FILE:LINE:COL: message (hint)``, and hostile input is refused in bounded memory and time,
within limits that callers pass as a ``ManifestLimits``.

Public API::

    load_manifest(path, *, limits=)       the Manifest, or raise ManifestError (every problem)
    check_manifest(path, *, limits=,      (Manifest | None, problems sorted by position)
                   loader=, event_parser=)
    parse_manifest(data, *, path=, ...)   the same for text already read from ``path``
    dump_manifest(manifest)               version-1 YAML text with every job's name explicit
    ManifestLimits                        bytes, jobs, YAML nodes, ... (frozen, validated)
    DEFAULT_LIMITS                        the documented limits; MAX_MANIFEST_BYTES, MAX_JOBS
                                          and MAX_YAML_NODES name its values
    LOADERS, EVENT_PARSERS                the YAML parsers here, fastest first: pass one as
                                          ``loader=`` / ``event_parser=`` to choose (tests do)
    DEFAULT_OUTPUT_DIR, DEFAULT_CONCURRENCY, MAX_CONCURRENCY   the format's defaults and bound

Modules (private):

    _load.py      the entry points: a file or text -> a Manifest and its problems
    _limits.py    how much one manifest may cost to read: ManifestLimits and its defaults
    _yaml.py      bounded YAML with positions: text -> root node (jobs streamed), or why not
    _report.py    problems as they are found: placed at a position, user text quoted safely
    _values.py    what a node holds, for the rules: a plain value, text, a mapping by key
    _checker.py   one manifest's check from its root: top-level keys, budget, defaults, jobs
    _jobs.py      the 'jobs' list: each item checked as it is composed, then settled
    _fields.py    a job's fields, one by one: url, file, mode, stem, name, duration
    _naming.py    across the jobs: no work or name twice, a unique name for every job
    _dump.py      a Manifest back to YAML text
"""

from __future__ import annotations

from ._checker import DEFAULT_CONCURRENCY, DEFAULT_OUTPUT_DIR, MAX_CONCURRENCY
from ._dump import dump_manifest
from ._fields import name_problem, url_problem
from ._limits import (
    DEFAULT_LIMITS,
    MAX_JOBS,
    MAX_MANIFEST_BYTES,
    MAX_YAML_NODES,
    ManifestLimits,
)
from ._load import check_manifest, load_manifest, parse_manifest
from ._yaml import EVENT_PARSERS, LOADERS

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_LIMITS",
    "DEFAULT_OUTPUT_DIR",
    "EVENT_PARSERS",
    "LOADERS",
    "MAX_CONCURRENCY",
    "MAX_JOBS",
    "MAX_MANIFEST_BYTES",
    "MAX_YAML_NODES",
    "ManifestLimits",
    "check_manifest",
    "dump_manifest",
    "load_manifest",
    "name_problem",
    "parse_manifest",
    "url_problem",
]
