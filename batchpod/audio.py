"""Song lengths read from audio file headers, for cost estimates.

mutagen reads the headers of WAV, FLAC, MP3 (including VBR Xing/VBRI frames), M4A/AAC and
OGG files without decoding any audio. A file it cannot read gives ``None``: its length is
then unknown, and estimates cost it at the assumed length.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Final

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


#: Extensions AudioPod reads a file's format from (the upload's name), for the kinds
#: ``audio_kind`` tells apart.
UPLOAD_EXTENSIONS: Final = frozenset(
    {"aac", "aif", "aiff", "flac", "m4a", "mp3", "mp4", "ogg", "opus", "wav", "webm"}
)


def sniff_audio(head: bytes) -> str | None:
    """The kind of audio whose file begins with ``head`` (its first 12 bytes), as the usual
    extension: wav, aiff, flac, ogg, mp3 or m4a; None if it is none of them."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3":
        return "mp3"
    if head[4:8] == b"ftyp":
        return "m4a"
    # An MPEG audio frame: 11 sync bits, then a layer that is not "reserved".
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06:
        return "mp3"
    return None


def audio_kind(path: Path) -> str | None:
    """``sniff_audio`` of the file at ``path`` (blocking); None if it cannot be read."""
    try:
        with path.open("rb") as stream:
            return sniff_audio(stream.read(12))
    except OSError:
        return None
