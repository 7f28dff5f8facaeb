"""Song lengths read from audio file headers, for cost estimates.

mutagen reads the headers of WAV, FLAC, MP3 (including VBR Xing/VBRI frames), M4A/AAC and
OGG files without decoding any audio. A file it cannot read gives ``None``: its length is
then unknown, and estimates cost it at the assumed length.
"""

from __future__ import annotations

import math
from pathlib import Path

import mutagen


def audio_duration_s(path: Path) -> float | None:
    """The length of the audio in ``path`` in seconds, or None if it cannot be read."""
    try:
        parsed = mutagen.File(path)
    except (mutagen.MutagenError, OSError, ValueError, EOFError):
        return None
    length = getattr(getattr(parsed, "info", None), "length", None)
    if not isinstance(length, int | float) or not math.isfinite(length) or length <= 0:
        return None
    return float(length)
