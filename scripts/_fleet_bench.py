"""A PostgreSQL server for ``bench.py fleet``, from the ``pgserver`` wheel's binaries.

A self-contained copy of the tests' ``tests/pg.py`` start-up (scripts do not import tests):
``initdb`` with SCRAM passwords, then ``postgres`` on 127.0.0.1 and a free port, as the
fleet reaches it in production (TCP and a password). As root, PostgreSQL refuses to run, so
the server then runs as a ``pgserver`` user, created if need be. ``fsync`` is off: the
benchmark measures coordination, not the disk.
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

PASSWORD = "bench-Pg-pass-4e1d"
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
    """One PostgreSQL server on loopback; ``database()`` makes a fresh, empty database."""

    def __init__(self) -> None:
        # The wheel's binaries, found without importing pgserver (its import warns).
        spec = importlib.util.find_spec("pgserver")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(
                "the fleet benchmark needs a PostgreSQL server from the pgserver wheel: "
                "pip install -e '.[bench]'"
            )
        self.bin = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        self.root = Path(tempfile.mkdtemp(prefix="batchpod-bench-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count()

    def start(self) -> PgServer:
        run_as: dict[str, str] = {}
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("pgserver")
            except KeyError:
                subprocess.run(["useradd", "-s", "/bin/sh", "pgserver"], check=True)
                entry = pwd.getpwnam("pgserver")
            _open_to_all(self.bin)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            run_as = {"user": "pgserver"}
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
                    "fsync=off",
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
                    self.stop()
                    raise SystemExit("PostgreSQL did not start") from None
                time.sleep(0.1)

    def url(self, database: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new, empty database; its name."""
        name = f"bench{os.getpid()}_{next(self._names)}"
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
