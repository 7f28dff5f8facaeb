"""``batchpod init``: manifests from folders, globs, CSV exports and URL lists, and
``--append``, which adds only what a manifest does not list yet and leaves its bytes alone."""

from __future__ import annotations

import io
import math
import shutil
import struct
import wave
from pathlib import Path

import pytest
import yaml
from conftest import FAST

from batchpod.cli import main
from batchpod.sandbox import SandboxThread

AUDIO = Path(__file__).resolve().parent.parent / "examples" / "audio"


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _jobs(path: Path) -> list[dict[str, object]]:
    jobs: list[dict[str, object]] = yaml.safe_load(path.read_text(encoding="utf-8"))["jobs"]
    return jobs


def _run(sb: SandboxThread, path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.setenv("AUDIOPOD_API_KEY", sb.api_key)
    code, _, err = _cli("run", str(path), "--base-url", sb.base_url)
    return code, err


def _tone(path: Path, seconds: float, hz: int = 440) -> Path:
    """A WAV of ``seconds`` of a sine at ``hz`` (16 kHz mono 16-bit): distinct content for
    each song, as a catalogue's files have (the same bytes twice would be one song)."""
    rate = 16_000
    frames = b"".join(
        struct.pack("<h", int(12_000 * math.sin(2 * math.pi * hz * n / rate)))
        for n in range(int(rate * seconds))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return path


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A catalogue folder with everything a real one holds, and some traps."""
    monkeypatch.chdir(tmp_path)
    lib = tmp_path / "library"
    (lib / "Ünïcode Artist" / "Live at the Hall").mkdir(parents=True)
    (lib / "A folder with spaces").mkdir()
    (lib / ".cache").mkdir()
    (tmp_path / "elsewhere").mkdir()
    _tone(lib / "Ünïcode Artist" / "01 Première chanson.wav", 1.0, 300)
    _tone(lib / "Ünïcode Artist" / "Live at the Hall" / "02 live.wav", 1.5, 400)
    _tone(lib / "A folder with spaces" / "track (final) v2.wav", 2.0, 500)
    _tone(lib / "A folder with spaces" / "really-a-wav.txt", 2.5, 600)
    _tone(lib / ".cache" / "hidden.wav", 1.0, 700)
    _tone(lib / ".hidden.wav", 1.0, 800)
    (lib / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0not audio")
    (lib / "notes.mp3").write_text("an mp3 by name only\n")
    _tone(tmp_path / "elsewhere" / "outside.wav", 1.0, 900)
    (lib / "to elsewhere").symlink_to(tmp_path / "elsewhere")
    (lib / "Ünïcode Artist" / "Live at the Hall" / "up").symlink_to("../..")
    return lib


def test_a_folder_gives_exactly_its_audio_files_and_the_manifest_runs(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = _cli("init", "library", "--mode", "two", "-o", "jobs.yaml")
    assert code == 0, err
    files = [job["file"] for job in _jobs(tmp_path / "jobs.yaml")]
    assert files == [
        "library/A folder with spaces/really-a-wav.txt",  # WAV inside, whatever its name says
        "library/A folder with spaces/track (final) v2.wav",
        "library/Ünïcode Artist/01 Première chanson.wav",
        "library/Ünïcode Artist/Live at the Hall/02 live.wav",
    ]
    # Skipped: .cache/ and .hidden.wav; cover.jpg and notes.mp3; the link out and the loop.
    assert "skipped 2 hidden, 2 not audio, 2 links out of the folder or in a loop" in err, err
    jobs = _jobs(tmp_path / "jobs.yaml")
    assert all(job["mode"] == "two" for job in jobs)
    assert [job["duration"] for job in jobs] == [2.5, 2.0, 1.0, 1.5]  # from each file's header
    text = (tmp_path / "jobs.yaml").read_text(encoding="utf-8")
    assert text.startswith("# Made by batchpod init from: library\n")
    # The same tree gives the same manifest, in the same order, every time.
    code, again, _ = _cli("init", "library", "--mode", "two")
    assert code == 0 and again.splitlines()[3:] == text.splitlines()[3:]
    assert _cli("validate", "jobs.yaml")[0] == 0
    with SandboxThread(FAST) as sb:
        code, err = _run(sb, tmp_path / "jobs.yaml", monkeypatch)
        assert code == 0, err
        assert sb.stats()["jobs"]["created"] == 4


def test_append_keeps_every_byte_and_a_run_pays_only_for_the_new_files(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _cli("init", "library", "-o", "jobs.yaml")[0] == 0
    manifest = tmp_path / "jobs.yaml"
    with manifest.open("a", encoding="utf-8") as stream:
        stream.write("  # a comment of the catalogue owner's, kept\n")
    before = manifest.read_bytes()
    with SandboxThread(FAST) as sb:
        code, err = _run(sb, manifest, monkeypatch)
        assert code == 0, err
        assert sb.stats()["jobs"]["created"] == 4
        (tree / "new").mkdir()
        _tone(tree / "new" / "tonight 1.wav", 1.0, 1000)
        _tone(tree / "new" / "tonight 2.wav", 1.0, 1100)
        code, _, err = _cli("init", "library", "--append", "-o", "jobs.yaml")
        assert code == 0 and "2 new jobs added" in err, err
        after = manifest.read_bytes()
        assert after.startswith(before)
        added = after[len(before) :].decode().splitlines()
        assert added[0].startswith("  # Added by batchpod init --append from: library on ")
        assert [line.split('"')[1] for line in added[1:]] == [
            "library/new/tonight 1.wav",
            "library/new/tonight 2.wav",
        ]
        code, err = _run(sb, manifest, monkeypatch)
        assert code == 0, err
        assert sb.stats()["jobs"]["created"] == 6  # the two new songs only
        # Nothing new: nothing changes, not even the file's time.
        code, _, err = _cli("init", "library", "--append", "-o", "jobs.yaml")
        assert code == 0 and "0 new jobs added" in err
        assert manifest.read_bytes() == after


def test_csv_exports_with_bom_semicolons_tabs_and_quoted_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(AUDIO / "beat.wav", tmp_path / "beat.wav")
    (tmp_path / "excel.csv").write_bytes(
        "\ufeffurl;mode;ISRC;Title\r\n"
        'https://cdn.example.com/a.mp3;two;USRC17607839;"Night; Drive, live"\r\n'
        'https://cdn.example.com/b.mp3;;GBAYE0601498;"Two\r\nlines"\r\n'.encode()
    )
    (tmp_path / "sheet.tsv").write_text(
        'file\tname\tCatalogue No\nbeat.wav\tThe Beat\t"007, side A"\n', encoding="utf-8"
    )
    (tmp_path / "links.txt").write_text(
        "# tonight's links\n\nhttps://cdn.example.com/c.mp3\n", encoding="utf-8"
    )
    code, _, err = _cli(
        "init", "excel.csv", "sheet.tsv", "links.txt", "--mode", "six", "-o", "jobs.yaml"
    )
    assert code == 0, err
    jobs = _jobs(tmp_path / "jobs.yaml")
    assert jobs == [
        {
            "url": "https://cdn.example.com/a.mp3",
            "mode": "two",
            "meta": {"ISRC": "USRC17607839", "Title": "Night; Drive, live"},
        },
        {
            "url": "https://cdn.example.com/b.mp3",
            "mode": "six",
            "meta": {"ISRC": "GBAYE0601498", "Title": "Two lines"},
        },
        {
            "file": "beat.wav",
            "mode": "six",
            "name": "The Beat",
            "duration": 4.0,
            "meta": {"Catalogue_No": "007, side A"},
        },
        {"url": "https://cdn.example.com/c.mp3", "mode": "six"},
    ]
    assert _cli("validate", "jobs.yaml")[0] == 0


def test_a_bad_row_or_source_is_one_line_each_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.csv").write_text(
        "url,mode\n"
        "https://cdn.example.com/a.mp3,two\n"
        '"https://cdn.example.com/b.mp3",seven\n'
        "https://cdn.example.com/c.mp3,two,extra\n",
        encoding="utf-8",
    )
    code, out, err = _cli("init", "bad.csv", "missing-folder", "-o", "jobs.yaml")
    assert code == 2
    assert err.splitlines() == [
        "bad.csv:3:1: unknown mode 'seven' (valid: single, two, four, six, producer, studio, "
        "mastering)",
        "bad.csv:4:1: 3 fields where the header has 2",
        "missing-folder: no such file or folder",
    ]
    assert not (tmp_path / "jobs.yaml").exists() and out == ""
    # A name the manifest would refuse is refused here, at its CSV line.
    (tmp_path / "names.csv").write_text(
        "url,name\nhttps://cdn.example.com/a.mp3,AC/DC\n", encoding="utf-8"
    )
    code, _, err = _cli("init", "names.csv")
    assert code == 2 and err.startswith("names.csv:2:1: 'name' cannot be a folder name"), err
    (tmp_path / "nohead.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    code, _, err = _cli("init", "nohead.csv")
    assert code == 2 and err.startswith("nohead.csv:1:1: the header names neither 'url' nor")
    (tmp_path / "jobs.yaml").write_text("version: 1\n", encoding="utf-8")
    code, _, err = _cli("init", "bad.csv", "-o", "jobs.yaml")
    assert code == 2 and "jobs.yaml exists: --append adds to it" in err
    assert (tmp_path / "jobs.yaml").read_text() == "version: 1\n"
