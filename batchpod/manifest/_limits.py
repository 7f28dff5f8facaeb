"""How much one manifest may cost to read: the ``ManifestLimits`` value object and its defaults.

Hostile input is refused in bounded memory and time. A manifest may be at most ``max_bytes``
long (checked from the file's size before it is read). Whatever is not a job is composed whole
and kept, so text longer than ``count_first_chars`` is first counted without composing it, and
refused once it passes ``max_jobs`` items in the top-level ``jobs`` list or ``max_nodes`` YAML
nodes in all. Text quoted in a message is cut to ``quote_chars`` characters.

Callers (and tests) pass a ``ManifestLimits`` to ``check_manifest``, ``parse_manifest`` or
``load_manifest``; ``DEFAULT_LIMITS`` holds the documented values, which the public constants
below also name. Each limit is quoted in the problem that reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_JOBS",
    "MAX_MANIFEST_BYTES",
    "MAX_YAML_NODES",
    "SPLIT_HINT",
    "ManifestLimits",
]

# A 100,000-job manifest of typical lines is 7-10 MB; twice that many jobs still fit.
MAX_MANIFEST_BYTES: Final = 32 * 1024 * 1024
MAX_JOBS: Final = 200_000
# Every key and value is a node: a job has at most 11 (its mapping, five keys and their values),
# so MAX_JOBS of the largest jobs fit. Nodes outside the jobs are all kept (some 300 bytes
# each), so this bounds the memory a manifest may take.
MAX_YAML_NODES: Final = 2_500_000

#: The hint of every problem that reports a limit passed.
SPLIT_HINT: Final = "split the catalogue into several manifests"


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestLimits:
    """The bounds on one manifest (see the module docstring); the defaults are the documented ones.

    ``count_first_chars`` only decides when the text is counted before it is composed: text up
    to this long is composed straight away, which is safe while it cannot hold more than
    ``max_nodes`` nodes (about two characters a node; 1 MiB holds some 500,000). Lower it with
    ``max_nodes``; 0 counts every text.
    """

    max_bytes: int = MAX_MANIFEST_BYTES
    max_jobs: int = MAX_JOBS
    max_nodes: int = MAX_YAML_NODES
    count_first_chars: int = 1024 * 1024
    quote_chars: int = 200

    def __post_init__(self) -> None:
        if min(self.max_bytes, self.max_jobs, self.max_nodes) < 1:
            raise ValueError("max_bytes, max_jobs and max_nodes must be at least 1")
        if self.count_first_chars < 0:
            raise ValueError("count_first_chars must not be negative")
        if self.quote_chars < 4:  # room for '...' and at least one character of the text
            raise ValueError("quote_chars must be at least 4")


#: The documented limits, used unless a caller passes others.
DEFAULT_LIMITS: Final = ManifestLimits()
