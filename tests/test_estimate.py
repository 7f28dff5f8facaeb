"""Cost estimates: `batchpod estimate`, `run --dry-run`, and song lengths from headers."""

from __future__ import annotations

import io
import os
import shutil
import struct
from pathlib import Path

import pytest

from batchpod.audio import audio_duration_s
from batchpod.cli import main
from batchpod.sandbox import SandboxSettings, SandboxThread

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of jobs.example.yaml and its songs, with no AudioPod variables set."""
    for name in list(os.environ):
        if name.startswith("AUDIOPOD_"):
            monkeypatch.delenv(name)
    shutil.copy(ROOT / "jobs.example.yaml", tmp_path / "jobs.example.yaml")
    shutil.copytree(ROOT / "examples" / "audio", tmp_path / "examples" / "audio")
    return tmp_path / "jobs.example.yaml"


def estimate(*argv: str) -> tuple[int, list[str]]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    assert err.getvalue() == ""
    return code, out.getvalue().splitlines()


def test_estimate_the_example_against_the_sandbox(example: Path) -> None:
    """Per-job lengths (manifest, file header, unknown at 10 min), the worst-case total,
    the price from AudioPod's pricing and the balance: it fits, exit 0."""
    code, lines = estimate("estimate", str(example), "--sandbox")
    assert code == 0
    table = {line.split()[0]: line for line in lines[1:7]}
    assert "0:04" in table["chords"] and "$0.01" in table["chords"]
    assert "file header" in table["chords"]
    assert "3:34" in table["night-drive"] and "$0.36" in table["night-drive"]
    assert "?" in table["dqw4w9wgxcq"] and "$1.00" in table["dqw4w9wgxcq"]
    assert "to run: 6 of 6 jobs, $1.71 at most ($0.71 for 5 of known length, $1.00 for 1 of " \
        "unknown length)" in lines  # fmt: skip
    assert "price: $0.10 per minute (from AudioPod's pricing)" in lines
    assert "balance: $100.00; $98.29 would remain, keeping $1.00: fits" in lines
    assert lines[-1] == "fits: yes"


def test_estimate_over_the_cap_exits_3(example: Path) -> None:
    """--max-spend below the worst case: 'does NOT fit', exit 3."""
    code, lines = estimate("estimate", str(example), "--sandbox", "--max-spend", "0.50")
    assert code == 3
    assert "max spend: $0.50: does NOT fit" in lines and lines[-1] == "fits: no"


def test_assume_duration_changes_the_worst_case(example: Path) -> None:
    """--assume-duration sets the length used for songs of unknown length."""
    code, lines = estimate("estimate", str(example), "--sandbox", "--assume-duration", "2")
    assert code == 0
    assert any(line.startswith("to run: 6 of 6 jobs, $0.91 at most") for line in lines)


def test_estimate_without_a_key_uses_the_documented_price(example: Path) -> None:
    """No key: the documented $0.10/min, the balance unknown, the budget still checked."""
    code, lines = estimate("estimate", str(example))
    assert code == 0
    assert "price: $0.10 per minute (AudioPod's documented price)" in lines
    assert any(line.startswith("balance: unknown (no balance: no API key") for line in lines)


def test_dry_run_submits_nothing_and_done_jobs_are_not_counted(example: Path) -> None:
    """`run --dry-run` sends no submit; after a real run, the estimate counts nothing more."""
    with SandboxThread(SandboxSettings(processing_s=0.05)) as sb:
        os.environ["AUDIOPOD_API_KEY"] = sb.api_key
        try:
            base = ["--base-url", sb.base_url]
            code, lines = estimate("run", str(example), "--dry-run", *base)
            assert code == 0 and lines[-1] == "fits: yes"
            assert sb.stats()["submissions"] == {}
            assert main(["run", str(example), "--quiet", *base], stdout=io.StringIO()) == 0
            code, lines = estimate("estimate", str(example), *base)
        finally:
            os.environ.pop("AUDIOPOD_API_KEY")
    assert code == 0
    assert any(line.startswith("to run: 0 of 6 jobs, $0.00 at most") for line in lines)
    assert any(line.startswith("in the state: 6 done") for line in lines)


def test_lengths_from_headers(tmp_path: Path) -> None:
    """WAV and FLAC lengths come from their headers; an unreadable file has no length."""
    assert audio_duration_s(ROOT / "examples" / "audio" / "chords.wav") == 4.0
    flac = tmp_path / "song.flac"
    # fLaC, then a last-block STREAMINFO of 34 bytes: 44.1 kHz, 2 channels, 16 bits,
    # 441,000 samples (10 s).
    info = struct.pack(">HH", 4096, 4096) + b"\x00" * 6
    packed = (44_100 << 44) | (1 << 41) | (15 << 36) | 441_000
    info += packed.to_bytes(8, "big") + b"\x00" * 16
    flac.write_bytes(b"fLaC" + bytes([0x80, 0, 0, 34]) + info)
    assert audio_duration_s(flac) == pytest.approx(10.0)
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"not audio at all" * 10)
    assert audio_duration_s(junk) is None
    assert audio_duration_s(tmp_path / "missing.ogg") is None
