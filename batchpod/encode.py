"""Stems encoded on the client: the WAV that AudioPod served, written as FLAC, MP3, Ogg
Vorbis, Opus or WAV of another bit depth, in bounded memory.

libsndfile (through ``soundfile``) reads the served file and writes the new one block by
block (``BLOCK_FRAMES`` frames at a time), so memory does not grow with a stem's length.
Lossless output is read and written as 32-bit integers: a 16-bit stem written as 16- or
24-bit FLAC decodes to exactly its samples. Lossy output goes through 32-bit floats; where
the format cannot carry the stem's sample rate (Opus takes 8, 12, 16, 24 or 48 kHz; MP3
the MPEG rates), it is resampled on the way with soxr's streaming resampler.

Defaults a listener accepts: FLAC at 24 bits when the stem has more than 16, else 16; MP3
at 320 kbps constant; Ogg Vorbis at nominal 256 kbps (libvorbis quality 8); Opus at 96 kbps
a channel. A bitrate is turned into libsndfile's compression level by libsndfile's own
mapping (MP3: constant bitrate between the MPEG version's bounds; Opus: 6 to 256 kbps a
channel; Vorbis: libvorbis's table of nominal bitrates for each quality).

Blocking; callers run it in a worker thread. Imports nothing from batchpod but its models.
"""

from __future__ import annotations

import bisect
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from batchpod.models import OutputFormat, OutputSpec

__all__ = ["BLOCK_FRAMES", "EncodeError", "Plan", "encode", "extension", "plan"]

#: Frames read and written at a time: 64k frames of stereo float is 512 KiB.
BLOCK_FRAMES: Final = 65_536

_MP3_RATES: Final = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_OPUS_RATES: Final = (8000, 12000, 16000, 24000, 48000)
# libvorbis's nominal bitrates (kbps, 44.1 kHz stereo) at qualities 0 to 10.
_VORBIS_KBPS: Final = (64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 500)

DEFAULT_MP3_KBPS: Final = 320
DEFAULT_VORBIS_KBPS: Final = 256
DEFAULT_OPUS_KBPS_A_CHANNEL: Final = 96


class EncodeError(Exception):
    """A stem that could not be encoded: unreadable, or not a shape the format takes."""


def extension(spec: OutputSpec) -> str:
    """The file extension of ``spec``'s files, without the dot."""
    return spec.format.value


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """How one stem is written: libsndfile's format, subtype and compression, the rate."""

    format: str
    subtype: str
    samplerate: int
    compression: float | None = None
    bitrate_mode: str | None = None
    dtype: str = "int32"  # what blocks are read as: int32 for lossless, float32 for lossy


def plan(spec: OutputSpec, *, samplerate: int, channels: int, subtype: str) -> Plan:
    """How a stem of this shape is written under ``spec`` (EncodeError if it cannot be)."""
    fmt = spec.format
    if fmt in (OutputFormat.WAV, OutputFormat.FLAC):
        depth = spec.bit_depth or (24 if subtype not in ("PCM_16", "PCM_S8", "PCM_U8") else 16)
        if fmt is OutputFormat.FLAC and samplerate > 655_350:
            raise EncodeError(f"FLAC cannot carry a sample rate of {samplerate} Hz")
        return Plan(format=fmt.value.upper(), subtype=f"PCM_{depth}", samplerate=samplerate)
    if fmt is OutputFormat.MP3:
        if channels > 2:
            raise EncodeError(f"MP3 carries one or two channels, not {channels}")
        rate = _nearest(_MP3_RATES, samplerate)
        kbps = spec.bitrate_kbps or DEFAULT_MP3_KBPS
        low, high = (32, 320) if rate >= 32000 else (8, 160) if rate >= 16000 else (8, 64)
        kbps = min(max(kbps, low), high)
        return Plan(
            format="MP3",
            subtype="MPEG_LAYER_III",
            samplerate=rate,
            compression=(high - kbps) / (high - low),
            bitrate_mode="CONSTANT",
            dtype="float32",
        )
    if fmt is OutputFormat.OPUS:
        rate = samplerate if samplerate in _OPUS_RATES else 48000
        kbps = spec.bitrate_kbps or DEFAULT_OPUS_KBPS_A_CHANNEL * channels
        low, high = 6 * channels, 256 * channels
        kbps = min(max(kbps, low), high)
        return Plan(
            format="OGG",
            subtype="OPUS",
            samplerate=rate,
            compression=(high - kbps) / (high - low),
            dtype="float32",
        )
    kbps = spec.bitrate_kbps or DEFAULT_VORBIS_KBPS
    quality = _vorbis_quality(kbps)
    return Plan(
        format="OGG",
        subtype="VORBIS",
        samplerate=samplerate,
        compression=1.0 - quality / 10.0,
        dtype="float32",
    )


def encode(source: Path, dest: Path, spec: OutputSpec) -> int:
    """Write the audio of ``source`` to ``dest`` as ``spec`` says, atomically (a temporary
    file beside ``dest``, then a rename); return the size of ``dest``. EncodeError if the
    source cannot be read or the format cannot carry it; OSError if ``dest`` cannot be
    written. Blocking."""
    import soundfile  # imported here: a run that writes WAV as served never loads libsndfile

    try:
        reader = soundfile.SoundFile(source)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise EncodeError(f"the stem AudioPod served cannot be read as audio: {exc}") from exc
    with reader:
        how = plan(
            spec, samplerate=reader.samplerate, channels=reader.channels, subtype=reader.subtype
        )
        fd, temp = tempfile.mkstemp(prefix=f".{dest.name}.part-", dir=dest.parent)
        os.close(fd)
        try:
            _write(reader, Path(temp), how)
            with Path(temp).open("rb+") as written:
                os.fsync(written.fileno())
            Path(temp).replace(dest)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    return dest.stat().st_size


def _write(reader: Any, temp: Path, how: Plan) -> None:
    import soundfile

    options: dict[str, Any] = {}
    if how.compression is not None:
        options["compression_level"] = min(max(how.compression, 0.0), 1.0)
    if how.bitrate_mode is not None:
        options["bitrate_mode"] = how.bitrate_mode
    resampler = None
    if how.samplerate != reader.samplerate:
        import soxr

        resampler = soxr.ResampleStream(
            reader.samplerate, how.samplerate, reader.channels, dtype="float32", quality="HQ"
        )
    try:
        writer = soundfile.SoundFile(
            temp,
            "w",
            samplerate=how.samplerate,
            channels=reader.channels,
            format=how.format,
            subtype=how.subtype,
            **options,
        )
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as exc:
        raise EncodeError(f"libsndfile cannot write {how.subtype}: {exc}") from exc
    with writer:
        try:
            for block in reader.blocks(blocksize=BLOCK_FRAMES, dtype=how.dtype, always_2d=True):
                if resampler is not None:
                    block = resampler.resample_chunk(block, last=False)
                if len(block):
                    writer.write(block)
            if resampler is not None:
                # What the filter still holds back.
                tail = resampler.resample_chunk(_silence(reader.channels), last=True)
                if len(tail):
                    writer.write(tail)
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            raise EncodeError(f"the stem could not be encoded: {exc}") from exc


def _silence(channels: int) -> Any:
    import numpy

    return numpy.zeros((0, channels), dtype="float32")


def _nearest(rates: tuple[int, ...], rate: int) -> int:
    """``rate`` if the format takes it, else the lowest rate above it (or the highest)."""
    if rate in rates:
        return rate
    above = [r for r in rates if r > rate]
    return above[0] if above else rates[-1]


def _vorbis_quality(kbps: int) -> float:
    """The libvorbis quality (0 to 10) whose nominal bitrate is ``kbps``, interpolated."""
    table = _VORBIS_KBPS
    if kbps <= table[0]:
        return 0.0
    if kbps >= table[-1]:
        return 10.0
    upper = bisect.bisect_left(table, kbps)
    lower = upper - 1
    return lower + (kbps - table[lower]) / (table[upper] - table[lower])
