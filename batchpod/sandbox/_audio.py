"""Audio for the sandbox: the input length of an upload, and the WAV stems it serves.

Pure functions; no I/O. Imports nothing from batchpod.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from collections.abc import Iterator
from functools import lru_cache
from pathlib import PurePosixPath, PureWindowsPath
from typing import Final

# How many leading bytes of an upload are kept to read its header; the rest is only counted.
HEADER_PREFIX_BYTES: Final = 64 * 1024

SUPPORTED_UPLOADS: Final = frozenset(
    {"mp3", "wav", "flac", "m4a", "ogg", "aac", "aif", "aiff", "opus", "webm", "mp4"}
)
# The real service decodes an upload to learn its length; the sandbox has no codecs, so for
# compressed formats it assumes a typical bitrate and derives the length from the byte count.
# That keeps the price a deterministic function of the file, which is what tests need, at the
# cost of exactness. 128 kbps is the common MP3/AAC/Ogg rate; FLAC averages ~800 kbps.
ASSUMED_BITS_PER_SECOND: Final = {"flac": 800_000, "aif": 1_411_200, "aiff": 1_411_200}
DEFAULT_BITS_PER_SECOND: Final = 128_000


class UnreadableAudio(ValueError):
    """An upload the sandbox refuses to price: an unknown format or a broken WAV header."""


def safe_filename(filename: str) -> str:
    """The last path component of a client-supplied filename, whichever separator it used."""
    name = PureWindowsPath(PurePosixPath(filename).name).name
    return name or "upload"


def upload_duration_s(filename: str, prefix: bytes, size: int) -> float:
    """The input length of an uploaded file from its name, first bytes and total size."""
    if size <= 0:
        raise UnreadableAudio("the uploaded file is empty")
    ext = PurePosixPath(filename.lower()).suffix.lstrip(".")
    if ext not in SUPPORTED_UPLOADS:
        supported = ", ".join(sorted(SUPPORTED_UPLOADS))
        raise UnreadableAudio(
            f"unsupported file format {ext or '(none)'!r}; use one of {supported}"
        )
    if ext == "wav":
        return wav_duration_s(prefix, size)
    bits = ASSUMED_BITS_PER_SECOND.get(ext, DEFAULT_BITS_PER_SECOND)
    return max(1.0, size * 8 / bits)


def wav_duration_s(prefix: bytes, size: int) -> float:
    """A WAV file's length from its RIFF header, read from the first bytes of the file.

    When the `data` chunk is not within `prefix` or declares a placeholder size (streamed WAVs
    write 0 or 0xFFFFFFFF), the bytes after the header stand in for it.
    """
    if len(prefix) < 12 or prefix[:4] != b"RIFF" or prefix[8:12] != b"WAVE":
        raise UnreadableAudio("the .wav file has no RIFF/WAVE header")
    byte_rate = 0
    offset = 12
    while offset + 8 <= len(prefix):
        chunk_id = prefix[offset : offset + 4]
        (chunk_size,) = struct.unpack_from("<I", prefix, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt ":
            if body + 16 > len(prefix):
                break
            _, _, _, byte_rate = struct.unpack_from("<HHII", prefix, body)
        elif chunk_id == b"data":
            if byte_rate <= 0:
                break
            remaining = size - body
            data = chunk_size if 0 < chunk_size <= remaining else remaining
            return max(data, 0) / byte_rate
        offset = body + chunk_size + (chunk_size & 1)  # chunks are padded to even sizes
    raise UnreadableAudio("the .wav file has no readable fmt/data chunks")


# Stems the sandbox serves: 16 kHz mono 16-bit PCM, a pure tone whose pitch depends on the job
# and stem so a client that mixes files up can be caught. An integer frequency repeats exactly
# once a second, so one second of samples is rendered (and cached) and then repeated.
SAMPLE_RATE: Final = 16_000
CHANNELS: Final = 1
SAMPLE_WIDTH: Final = 2
WAV_HEADER_BYTES: Final = 44


def wav_header(data_bytes: int) -> bytes:
    """A canonical 44-byte PCM WAV header for `data_bytes` of audio."""
    byte_rate = SAMPLE_RATE * CHANNELS * SAMPLE_WIDTH
    return b"RIFF" + struct.pack(
        "<I4s4sIHHIIHH4sI",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        CHANNELS,
        SAMPLE_RATE,
        byte_rate,
        CHANNELS * SAMPLE_WIDTH,
        SAMPLE_WIDTH * 8,
        b"data",
        data_bytes,
    )


def stem_frequency_hz(job_id: int, stem: str) -> int:
    """The tone of one stem of one job: 110-500 Hz, deterministic."""
    return 110 + (job_id * 31 + sum(stem.encode())) % 40 * 10


@lru_cache(maxsize=64)
def _one_second(frequency_hz: int) -> bytes:
    samples = array(
        "h",
        (
            round(8000 * math.sin(2 * math.pi * frequency_hz * n / SAMPLE_RATE))
            for n in range(SAMPLE_RATE)
        ),
    )
    if sys.byteorder == "big":  # WAV is little-endian
        samples.byteswap()
    return samples.tobytes()


def stem_data_bytes(stem_bytes: int) -> int:
    """The audio bytes of a stem of nominal size `stem_bytes`, rounded down to whole frames."""
    frame = CHANNELS * SAMPLE_WIDTH
    return max(frame, stem_bytes - stem_bytes % frame)


def stem_file_size(stem_bytes: int) -> int:
    """The Content-Length of a served stem."""
    return WAV_HEADER_BYTES + stem_data_bytes(stem_bytes)


def stem_wav_chunks(*, job_id: int, stem: str, stem_bytes: int) -> Iterator[bytes]:
    """The bytes of one stem's WAV file, in chunks of at most one second of audio."""
    data_bytes = stem_data_bytes(stem_bytes)
    yield wav_header(data_bytes)
    second = _one_second(stem_frequency_hz(job_id, stem))
    left = data_bytes
    while left > 0:
        chunk = second[: min(left, len(second))]
        left -= len(chunk)
        yield chunk
