"""Write the small example songs that jobs.example.yaml refers to.

The files are committed; this script documents how they were made and remakes them exactly
(the output is deterministic). Run from the repository root:

    python scripts/make_example_audio.py
"""

from __future__ import annotations

import math
import struct
import wave
from collections.abc import Callable
from pathlib import Path

RATE = 16_000
OUT = Path(__file__).resolve().parent.parent / "examples" / "audio"


def _write(name: str, seconds: float, voice: Callable[[float], float]) -> None:
    frames = bytearray()
    for i in range(int(seconds * RATE)):
        t = i / RATE
        fade = min(1.0, t * 20, (seconds - t) * 20)  # no clicks at either end
        frames += struct.pack("<h", int(12_000 * fade * voice(t)))
    OUT.mkdir(parents=True, exist_ok=True)
    with wave.open(str(OUT / name), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(bytes(frames))


def _chords(t: float) -> float:
    roots = (261.63, 349.23, 392.00, 261.63)  # C F G C
    root = roots[int(t) % len(roots)]
    return sum(math.sin(2 * math.pi * root * r * t) for r in (1, 1.25, 1.5)) / 3


def _sweep(t: float) -> float:
    return math.sin(2 * math.pi * (220 * t + 110 * t * t))


def _beat(t: float) -> float:
    phase = t % 0.5
    kick = math.sin(2 * math.pi * 60 * phase) * math.exp(-phase * 18)
    bass = 0.4 * math.sin(2 * math.pi * 55 * t)
    return 0.7 * kick + bass


if __name__ == "__main__":
    _write("chords.wav", 4.0, _chords)
    _write("sweep.wav", 3.0, _sweep)
    _write("beat.wav", 4.0, _beat)
    print(f"wrote 3 files to {OUT}")
