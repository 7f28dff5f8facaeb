"""Names the shelves share: where done records live, and a stem's file before encoding."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Final

#: The done records, below the output folder or prefix (``runner._outputs``).
RECORDS: Final = PurePosixPath(".batchpod") / "done"


def served_path(dest: Path) -> Path:
    """Where a stem to be encoded is downloaded first, as served."""
    return dest.with_name(f".{dest.name}.part-served")
