"""Stems written in the format the manifest asks for: FLAC that decodes to exactly the samples
the sandbox served, MP3 and Opus of the served length and tone, memory that does not grow
with a stem's length, and a crash between a stem's download and its encoding that a re-run
finishes without paying again."""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
import soundfile as sf
from conftest import FAST, results_of, run_cli, write_manifest

from batchpod.cli import main
from batchpod.client import ApiClient
from batchpod.encode import encode, plan
from batchpod.models import OutputFormat, OutputSpec
from batchpod.sandbox import SandboxThread

pytestmark = pytest.mark.usefixtures("clean_env")

MODES = ("single", "two", "four", "six", "producer", "studio", "mastering")
# Two seconds of served audio a stem (16 kHz mono 16-bit), so a tone is told to within 0.5 Hz.
SETTINGS = dataclasses.replace(FAST, stem_bytes=64_000)


def _every_mode(folder: Path, **top: Any) -> Path:
    lines = "".join(
        f"  - {{url: 'https://cdn.example.com/{mode}.mp3', mode: {mode}"
        + (", stem: vocals" if mode == "single" else "")
        + "}\n"
        for mode in MODES
    )
    return write_manifest(folder, lines, **top)


def _served(sb: SandboxThread, remote_id: str, folder: Path) -> dict[str, Path]:
    """Each stem of AudioPod job ``remote_id`` as the sandbox serves it, fetched afresh."""
    folder.mkdir(parents=True, exist_ok=True)

    async def fetch() -> dict[str, Path]:
        async with ApiClient(base_url=sb.base_url, api_key=sb.api_key) as api:
            job = await api.status(remote_id)
            paths = {}
            for stem, url in job.download_urls.items():
                paths[stem] = folder / f"{stem}.wav"
                await api.download(url, paths[stem])
            return paths

    return anyio.run(fetch)


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.fft.rfftfreq(len(mono), 1 / rate)[int(np.argmax(spectrum))])


@pytest.mark.parametrize("depth", [16, 24])
def test_every_mode_as_flac_decodes_to_exactly_the_served_samples(
    tmp_path: Path, depth: int
) -> None:
    path = _every_mode(tmp_path, output_format="flac", output_bit_depth=depth)
    with SandboxThread(SETTINGS) as sb:
        code, _, err = run_cli(sb, path)
        assert code == 0, err
        jobs = results_of(path)["jobs"]
        assert [j["status"] for j in jobs] == ["succeeded"] * len(MODES)
        stems = 0
        for job in jobs:
            served = _served(sb, job["remote_id"], tmp_path / "served" / job["name"])
            assert sorted(served) == sorted(f["stem"] for f in job["files"])
            for entry in job["files"]:
                written = tmp_path / entry["path"]
                assert written.suffix == ".flac" and written.stat().st_size == entry["size"]
                assert entry["format"] == f"flac/{depth}"
                assert entry["served_size"] == served[entry["stem"]].stat().st_size
                info = sf.info(written)
                assert (info.format, info.subtype) == ("FLAC", f"PCM_{depth}")
                got, rate = sf.read(written, dtype="int32")
                want, want_rate = sf.read(served[entry["stem"]], dtype="int32")
                assert rate == want_rate and np.array_equal(got, want)
                stems += 1
    assert stems >= 2 * len(MODES)
    assert not list((tmp_path / "stems").rglob(".*.part*")), "a temporary file was left"


@pytest.mark.parametrize("fmt", ["mp3", "opus", "ogg"])
def test_lossy_stems_keep_the_served_length_and_tone(tmp_path: Path, fmt: str) -> None:
    body = "  - {url: 'https://cdn.example.com/a.mp3', mode: four}\n"
    path = write_manifest(tmp_path, body, output_format=fmt)
    with SandboxThread(SETTINGS) as sb:
        code, _, err = run_cli(sb, path)
        assert code == 0, err
        (job,) = results_of(path)["jobs"]
        served = _served(sb, job["remote_id"], tmp_path / "served")
    tones = set()
    for entry in job["files"]:
        written = tmp_path / entry["path"]
        assert written.suffix == f".{fmt}"
        got, rate = sf.read(written, dtype="float32")
        want, want_rate = sf.read(served[entry["stem"]], dtype="float32")
        # One codec frame at most: MP3's 1152 samples, Opus's 20 ms, Vorbis's 2048 samples.
        frame_s = {"mp3": 1152 / rate, "opus": 0.02, "ogg": 2048 / rate}[fmt]
        assert abs(len(got) / rate - len(want) / want_rate) <= frame_s
        tone = _peak_hz(want, want_rate)
        assert abs(_peak_hz(got, rate) - tone) <= 1.0
        tones.add(tone)
        assert written.stat().st_size < served[entry["stem"]].stat().st_size
    assert len(tones) > 1, "the stems' tones differ, so a mix-up would show"


def test_default_depth_follows_the_source_and_24_bit_stays_exact(tmp_path: Path) -> None:
    """FLAC without a bit depth is 24-bit for a 24-bit stem (and decodes to its samples),
    16-bit for a 16-bit one."""
    rate = 44_100
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
    stereo = np.stack([tone, -tone], axis=1)
    for subtype, depth in (("PCM_24", 24), ("PCM_16", 16)):
        source = tmp_path / f"{subtype}.wav"
        sf.write(source, stereo, rate, subtype=subtype)
        dest = tmp_path / f"{subtype}.flac"
        size = encode(source, dest, OutputSpec(format=OutputFormat.FLAC))
        assert size == dest.stat().st_size
        assert sf.info(dest).subtype == f"PCM_{depth}"
        assert np.array_equal(sf.read(dest, dtype="int32")[0], sf.read(source, dtype="int32")[0])
    assert (
        plan(
            OutputSpec(format=OutputFormat.MP3), samplerate=44_100, channels=2, subtype="PCM_16"
        ).compression
        == 0.0
    )


_MEASURE = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from batchpod.encode import encode
    from batchpod.models import OutputFormat, OutputSpec
    source, dest, fmt = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    encode(source, dest, OutputSpec(format=OutputFormat(fmt)))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def _peak_kib(source: Path, dest: Path, fmt: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(source), str(dest), fmt],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip())


def _stereo_wav(path: Path, minutes: int) -> Path:
    """A 44.1 kHz stereo 16-bit WAV of ``minutes`` minutes, written a second at a time."""
    rate = 44_100
    second = np.arange(rate) / rate
    block = np.stack([np.sin(2 * np.pi * 220 * second), np.sin(2 * np.pi * 330 * second)], 1)
    with sf.SoundFile(path, "w", samplerate=rate, channels=2, subtype="PCM_16") as out:
        for _ in range(60 * minutes):
            out.write(0.4 * block)
    return path


@pytest.mark.parametrize(("fmt", "long_minutes"), [("flac", 8), ("opus", 4)])
def test_memory_does_not_grow_with_the_stem(tmp_path: Path, fmt: str, long_minutes: int) -> None:
    """Peak memory of encoding a 1-minute and a longer stereo stem: the same within a few MB
    (the longer WAV alone is 42-85 MB, so holding it would show). Opus also resamples."""
    short = _stereo_wav(tmp_path / "short.wav", 1)
    long = _stereo_wav(tmp_path / "long.wav", long_minutes)
    small = _peak_kib(short, tmp_path / f"short.{fmt}", fmt)
    large = _peak_kib(long, tmp_path / f"long.{fmt}", fmt)
    assert sf.info(tmp_path / f"long.{fmt}").duration == pytest.approx(60 * long_minutes, abs=0.05)
    assert long.stat().st_size > 40 * 1024**2
    assert abs(large - small) < 4 * 1024, (small, large)  # KiB


def test_a_kill_between_download_and_encoding_is_finished_without_paying_again(
    tmp_path: Path,
) -> None:
    """SIGKILL once a stem's served WAV is on disk and before its MP3 is: the re-run clears
    the temporary files, fetches the stem again from the same AudioPod job and encodes it;
    nothing is submitted twice."""
    body = "  - {url: 'https://cdn.example.com/long.mp3', mode: two}\n"
    path = write_manifest(tmp_path, body, output_format="mp3")
    # 5 minutes a stem: its MP3 takes long enough to encode for the kill to land in between.
    settings = dataclasses.replace(FAST, stem_bytes=32_000 * 300)
    with SandboxThread(settings) as sb:
        env = dict(os.environ, AUDIOPOD_API_KEY=sb.api_key)
        argv = [sys.executable, "-m", "batchpod", "run", str(path), "--base-url", sb.base_url]
        proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)
        folder = tmp_path / "stems"
        deadline = time.monotonic() + 60
        served: list[Path] = []
        while time.monotonic() < deadline and proc.poll() is None:
            served = [p for p in folder.rglob(".*.part-served") if p.stat().st_size > 0]
            if served:
                break
            time.sleep(0.005)
        assert served, "no stem was downloaded for encoding"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not list(folder.rglob("*.mp3")), "the kill came after the encoding"
        code, _, err = run_cli(sb, path)
        stats = sb.stats()
    assert code == 0, err
    assert stats["jobs"]["created"] == 1
    (job,) = results_of(path)["jobs"]
    assert job["status"] == "succeeded" and len(job["files"]) == 2
    for entry in job["files"]:
        info = sf.info(tmp_path / entry["path"])
        assert info.format == "MP3" and info.duration == pytest.approx(300, abs=0.1)
    assert not list(folder.rglob(".*.part*")), "a temporary file was left"


def test_a_new_format_fetches_done_jobs_again_without_paying(tmp_path: Path) -> None:
    """A job done as WAV, run again with --output-format flac: its stems are fetched from the
    same AudioPod job and written as FLAC; the WAVs stay; nothing is submitted again."""
    path = write_manifest(tmp_path, "  - {url: 'https://cdn.example.com/a.mp3', mode: two}\n")
    with SandboxThread(SETTINGS) as sb:
        assert run_cli(sb, path)[0] == 0
        code, _, err = run_cli(sb, path, "--output-format", "flac")
        again = run_cli(sb, path, "--output-format", "flac")
        stats = sb.stats()
    assert code == 0, err
    assert again[0] == 0 and "submitted" not in again[2]
    assert stats["jobs"]["created"] == 1
    (job,) = results_of(path)["jobs"]
    assert {Path(f["path"]).suffix for f in job["files"]} == {".flac"}
    assert len(list((tmp_path / "stems").rglob("*.wav"))) == 2


@pytest.mark.parametrize(
    ("top", "line", "message"),
    [
        ("output_format: aiff\n", 2, "unknown output_format aiff (use wav, flac"),
        ("output_format: mp3\noutput_bit_depth: 24\n", 3, "applies to wav and flac, not mp3"),
        ("output_format: flac\noutput_bit_depth: 20\n", 3, "must be 16 or 24, got 20"),
        ("output_bitrate_kbps: 128\n", 2, "applies to mp3, ogg and opus, not wav"),
        ("output_format: mp3\noutput_bitrate_kbps: 640\n", 3, "from 32 to 320, got 640"),
        ("output_format: opus\noutput_bitrate_kbps: fast\n", 3, "must be a whole number"),
    ],
)
def test_output_settings_are_checked_with_their_line(
    tmp_path: Path, top: str, line: int, message: str
) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(
        "version: 1\n" + top + "jobs:\n  - {url: 'https://e.com/a.mp3', mode: two}\n",
        encoding="utf-8",
    )
    out, err = io.StringIO(), io.StringIO()
    code = main(["validate", str(path)], stdout=out, stderr=err)
    assert code == 2
    (problem,) = [ln for ln in err.getvalue().splitlines() if ln.startswith(str(path))]
    assert problem.startswith(f"{path}:{line}:") and message in problem, problem
