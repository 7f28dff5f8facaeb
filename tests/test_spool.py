"""The spool: what it is given comes back byte for byte, from its buffer or its file; it
leaves no file behind; a disk that refuses it loses nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import batchpod.spool as spool_module
from batchpod.spool import Spool, SpooledMapping


@settings(max_examples=60, deadline=None)
@given(pieces=st.lists(st.binary(max_size=300), max_size=40), buffer=st.integers(1, 700))
def test_what_is_put_comes_back(
    tmp_path_factory: pytest.TempPathFactory, pieces: list[bytes], buffer: int
) -> None:
    """With a buffer smaller than some pieces, reads fall in the file, in the buffer, and
    across the two; every piece reads back as it was put."""
    folder = tmp_path_factory.mktemp("spool")
    saved = spool_module.BUFFER_BYTES
    spool_module.BUFFER_BYTES = buffer
    try:
        spool = Spool(folder)
        where = [(spool.put(piece), len(piece)) for piece in pieces]
        assert [spool.get(offset, length) for offset, length in where] == pieces
        assert spool.size == sum(map(len, pieces))
        if pieces:  # any run of neighbours reads back as their concatenation
            assert spool.get(0, spool.size) == b"".join(pieces)
        spool.close()
    finally:
        spool_module.BUFFER_BYTES = saved


def test_the_file_has_no_name(tmp_path: Path) -> None:
    """The file is unlinked from the start: nothing is left in the folder, even while it is
    in use (so a kill -9 leaves nothing either)."""
    spool = Spool(tmp_path)
    spool.put(b"x" * (spool_module.BUFFER_BYTES + 1))  # past the buffer: in the file
    assert list(tmp_path.iterdir()) == []
    assert spool.get(spool_module.BUFFER_BYTES, 1) == b"x"
    spool.close()


def test_spooled_mapping_reads_back_as_the_mapping(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    data = {"vocals": "https://x.example/v.wav?sig=é", "drums": "https://x.example/d.wav"}
    kept = SpooledMapping(spool, data)
    assert dict(kept) == data and len(kept) == 2 and kept["drums"] == data["drums"]
    assert dict(sorted(kept.items())) == dict(sorted(data.items()))
    assert kept == data and "vocals" in kept and "bass" not in kept
    assert SpooledMapping(spool, {"vocals": 0.25}) == {"vocals": 0.25}


def test_a_refused_write_keeps_everything_in_memory(tmp_path: Path) -> None:
    """A file size limit (RLIMIT_FSIZE) makes the disk refuse the spool's writes for real:
    one warning, and every piece still reads back, those written before and those after."""
    script = textwrap.dedent(
        f"""
        import json, logging, resource, signal, sys
        from pathlib import Path
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (3 << 20, 3 << 20))
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        from batchpod.spool import Spool
        spool = Spool(Path({str(tmp_path)!r}))
        pieces = [bytes([n % 251]) * 700_000 for n in range(12)]  # 8.4 MB, past the limit
        where = [(spool.put(p), len(p)) for p in pieces]
        print(json.dumps([spool.get(o, n) == p for (o, n), p in zip(where, pieces)]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(done.stdout) == [True] * 12
    warnings = [line for line in done.stderr.splitlines() if "could not keep" in line]
    assert len(warnings) == 1, done.stderr
    assert "keeping them in memory" in warnings[0]
