"""A real PostgreSQL server for the tests, from the ``pgserver`` wheel's binaries.

``pgserver`` itself serves on a Unix socket with no password; batchpod's fleet is reached over
TCP with a password, so this starts the same binaries by hand: ``initdb`` with SCRAM
passwords, then ``postgres`` on 127.0.0.1 and a free port. As root, PostgreSQL refuses to
run, so the server runs as the ``pgserver`` user that pgserver's own helper creates.

``PgServer.url(db)`` is a ``postgresql://`` URL with the password in it; ``database()`` makes
a fresh database per test so that tests never see each other's fleets. ``scripts/bench.py
fleet`` starts its server with this class too (``drop`` and ``cpu_s`` are for it).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

PASSWORD = "s3cret-Pg-pass-7f3a9c"  # scanned for in everything batchpod writes and prints
USER = "batchpod"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_s(pid: int) -> float:
    """CPU seconds of process `pid` and of its children that it has reaped (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime, stime, cutime, cstime: fields 14-17 of stat, 12-15 after the ")".
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _open_to_all(bin_dir: Path) -> None:
    """Let the server's own user run the wheel's binaries, as pgserver itself does: every
    folder above them traversable, every file readable, the programs executable (a fresh
    install may leave them without an execute bit, and a venv in a 0700 temporary folder)."""
    for folder in bin_dir.parents:
        folder.chmod(folder.stat().st_mode | 0o055)
        if folder == folder.parent:
            break
    for path in (bin_dir.parent, *bin_dir.parent.rglob("*")):
        mode = path.stat().st_mode
        if path.is_dir() or path.parent == bin_dir:
            path.chmod(mode | 0o555)
        else:
            path.chmod(mode | 0o444)


class PgServer:
    """One PostgreSQL server on loopback for a test session."""

    def __init__(self) -> None:
        # The wheel's binaries, found without importing pgserver (its import warns).
        spec = importlib.util.find_spec("pgserver")
        assert spec is not None and spec.submodule_search_locations
        self.bin = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        self.root = Path(tempfile.mkdtemp(prefix="batchpod-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = _free_port()
        self.user: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count()

    def start(self) -> PgServer:
        run_as = {}
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("pgserver")
            except KeyError:
                subprocess.run(["useradd", "-s", "/bin/sh", "pgserver"], check=True)
                entry = pwd.getpwnam("pgserver")
            self.user = "pgserver"
            _open_to_all(self.bin)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            run_as = {"user": "pgserver"}
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **run_as,  # type: ignore[call-overload]
        )
        pwfile.unlink()
        with (self.root / "log").open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root),
                    "-c",
                    "fsync=off",  # a test server: speed over durability
                    "-c",
                    "max_connections=200",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                **run_as,  # type: ignore[call-overload]
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "PostgreSQL did not start: " + (self.root / "log").read_text()
                    ) from None
                time.sleep(0.1)

    def url(self, database: str, *, password: bool = True) -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new, empty database; its name."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop(self, database: str) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def cpu_s(self) -> float:
        """CPU seconds the server has used so far: the postmaster and the backends it reaped
        (a backend's time counts once its connection has closed)."""
        return 0.0 if self._proc is None else cpu_s(self._proc.pid)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
