"""A fleet on PostgreSQL: workers on one manifest, one state and one budget, killed at will.

Every test talks to a real PostgreSQL server (``tests/pg.py``, from the pgserver wheel) on
loopback with a password, and to the sandbox over real sockets; workers are real
``batchpod run`` processes.
"""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from pg import PASSWORD, PgServer

from batchpod.cli import main
from batchpod.sandbox import SandboxSettings, SandboxThread

pytestmark = pytest.mark.usefixtures("clean_env")


def _manifest(
    folder: Path, count: int, *, name: str = "jobs.yaml", seconds: int = 0, **top: Any
) -> Path:
    head = "".join(f"{key}: {value}\n" for key, value in top.items())
    lines = []
    for i in range(count):
        query = f"?duration={seconds}" if seconds else ""
        length = f", duration: {seconds}" if seconds else ""
        lines.append(f"  - {{url: 'https://cdn.example.com/s{i}.mp3{query}', mode: two{length}}}\n")
    path = folder / name
    path.write_text("version: 1\noutput_dir: stems\n" + head + "jobs:\n" + "".join(lines))
    return path


_STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_worker_outlives_its_test() -> Iterator[None]:
    """A failing test must not leave workers running (or warn about them later)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _worker(
    sb: SandboxThread, path: Path, url: str, *args: str, log: Path
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, AUDIOPOD_API_KEY=sb.api_key)
    argv = [sys.executable, "-m", "batchpod", "run", str(path), "--base-url", sb.base_url]
    argv += ["--state", url, "--lease", "2", *args]
    with log.open("ab") as err:
        proc = subprocess.Popen(argv, env=env, stdout=err, stderr=err, cwd=path.parent)
    _STARTED.append(proc)
    return proc


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def _submitting(url: str, pid: int) -> bool:
    """Whether worker ``pid`` held a job in ``submitting`` (none, if it died too early to
    have made the tables)."""
    try:
        rows = _query(
            url,
            "SELECT count(*) FROM batchpod_jobs WHERE owner LIKE %s AND state = 'submitting'",
            f"%:{pid}:%",
        )
    except psycopg.errors.UndefinedTable:
        return False
    return bool(rows[0][0])


def _submitted(url: str, pid: int) -> bool:
    """Whether worker ``pid`` holds a job that AudioPod has accepted."""
    rows = _query(
        url,
        "SELECT count(*) FROM batchpod_jobs WHERE owner LIKE %s AND state = 'submitted'",
        f"%:{pid}:%",
    )
    return bool(rows[0][0])


def _holds(url: str, pid: int) -> bool:
    """Whether worker ``pid`` holds a job (it has started working)."""
    try:
        rows = _query(url, "SELECT count(*) FROM batchpod_jobs WHERE owner LIKE %s", f"%:{pid}:%")
    except psycopg.errors.UndefinedTable:
        return False
    return bool(rows[0][0])


def _database_text(url: str) -> str:
    """Every row batchpod wrote to the database, as text."""
    tables = [
        row[0]
        for row in _query(url, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'batchpod%%'")
    ]
    assert "batchpod_jobs" in tables
    return "\n".join(str(row) for table in tables for row in _query(url, f"SELECT * FROM {table}"))


def _scan_for_password(folder: Path, *texts: str) -> list[str]:
    """Every file under ``folder`` and every text given that holds the database password."""
    hits = [
        str(p) for p in folder.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()
    ]
    hits += [f"text {i}" for i, text in enumerate(texts) if PASSWORD in text]
    return hits


def test_four_workers_two_killed_at_random_moments_pay_once(tmp_path: Path, pg_url: str) -> None:
    """4 workers on a 200-job manifest; two of them are SIGKILLed at random moments (some
    inside the window between a submit creating its job and its reply) and started again,
    more than once: every song was created exactly once, every stem is a valid WAV, and
    ``batchpod results`` lists all 200 as succeeded."""
    path = _manifest(tmp_path, 200, concurrency=8)
    settings = SandboxSettings(processing_s=(0.2, 0.6), submit_reply_delay_s=0.15)
    rng = random.Random(18)
    log = tmp_path / "workers.log"
    kills = windows = 0
    with SandboxThread(settings) as sb:
        workers = [_worker(sb, path, pg_url, log=log) for _ in range(4)]
        # Two of the four, killed three times each: at a random moment once it works, or
        # (every other kill) at the first moment it holds a submit that has not been answered.
        for turn, victim in enumerate((0, 1, 0, 1, 0, 1)):
            proc = workers[victim]
            deadline = time.monotonic() + 10
            while not _holds(pg_url, proc.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if turn % 2:
                while not _submitting(pg_url, proc.pid) and time.monotonic() < deadline:
                    time.sleep(0.01)
            else:
                time.sleep(rng.uniform(0.0, 0.8))
            if proc.poll() is not None:
                continue  # it finished its share already
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            windows += _submitting(pg_url, proc.pid)
            workers[victim] = _worker(sb, path, pg_url, log=log)
        codes = [proc.wait(timeout=120) for proc in workers]
        stats = sb.stats()
    assert codes == [0, 0, 0, 0], log.read_text()[-3000:]
    assert kills >= 4
    assert windows >= 1, "no kill landed between a submit creating its job and its reply"
    assert stats["jobs"]["created"] == 200
    assert stats["submissions"] == {"URL/two": 200}
    code, out, err = _cli("results", str(path), "--state", pg_url)
    assert code == 0, err
    results = yaml.safe_load(path.with_name("jobs.results.yaml").read_text())
    assert results["run"]["counts"]["succeeded"] == 200
    jobs = results["jobs"]
    assert [j["status"] for j in jobs] == ["succeeded"] * 200
    assert len({j["remote_id"] for j in jobs}) == 200
    for job in jobs:
        assert sorted(f["stem"] for f in job["files"]) == ["no_vocals", "vocals"]
        for entry in job["files"]:
            with wave.open(str(tmp_path / entry["path"])) as audio:
                assert audio.getnframes() == 16_000
    assert not list((tmp_path / "stems").rglob("*.part")), "a temporary file was left behind"
    # Each worker that ran to its end wrote its own results: the jobs it worked, done.
    for proc in workers:
        (own,) = tmp_path.glob(f"jobs.worker-*-{proc.pid}-*.results.yaml")
        mine = yaml.safe_load(own.read_text())
        assert mine["run"]["worker"].split(":")[1] == str(proc.pid)
        assert {j["status"] for j in mine["jobs"]} <= {"succeeded"}
    assert _scan_for_password(tmp_path, out, err, _database_text(pg_url)) == []


def test_a_worker_stopped_past_its_lease_stops_when_it_wakes(tmp_path: Path, pg_url: str) -> None:
    """A worker frozen (SIGSTOP) past its lease while it holds jobs, with more claimed and
    waiting to be submitted: another worker takes them over and finishes the manifest; the
    frozen one, woken, sends nothing more and exits 75. Every song was paid for once.

    It is frozen between two submits: one frozen in the midst of writing a request, for
    longer than its lease, can still complete that request when it wakes (see the README's
    fleet section)."""
    path = _manifest(tmp_path, 30, concurrency=6)
    log = tmp_path / "workers.log"
    with SandboxThread(SandboxSettings(processing_s=(0.5, 1.0), submit_reply_delay_s=0.2)) as sb:
        frozen = _worker(sb, path, pg_url, log=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            _holds(pg_url, frozen.pid) and _submitted(pg_url, frozen.pid)
        ):
            time.sleep(0.01)
        while _submitting(pg_url, frozen.pid) and time.monotonic() < deadline:
            time.sleep(0.002)
        frozen.send_signal(signal.SIGSTOP)
        try:
            assert _submitted(pg_url, frozen.pid), "the worker never came to submit"
            other = _worker(sb, path, pg_url, log=log)
            assert other.wait(timeout=60) == 0, log.read_text()[-2000:]
        finally:
            frozen.send_signal(signal.SIGCONT)
        assert frozen.wait(timeout=30) == 75, log.read_text()[-2000:]
        time.sleep(0.5)  # anything the woken worker might still send would land by now
        stats = sb.stats()
    assert stats["jobs"]["created"] == 30, stats["submissions"]
    assert "its jobs are other workers' to take over" in log.read_text()
    code, _, err = _cli("results", str(path), "--state", pg_url)
    assert code == 0, err
    results = yaml.safe_load(path.with_name("jobs.results.yaml").read_text())
    assert [j["status"] for j in results["jobs"]] == ["succeeded"] * 30
    assert len({j["remote_id"] for j in results["jobs"]}) == 30


def test_four_workers_keep_one_cap_between_them(tmp_path: Path, pg_url: str) -> None:
    """4 workers at once with max_spend below the manifest's cost: the total charged is at
    most the cap, and the rest are skipped with reason budget."""
    path = _manifest(tmp_path, 60, seconds=60, concurrency=10)  # 10 c each, $6.00 in all
    log = tmp_path / "workers.log"
    with SandboxThread(SandboxSettings(processing_s=(0.2, 0.4), balance_cents=10_000)) as sb:
        workers = [
            _worker(sb, path, pg_url, "--no-download", "--max-spend", "2.55", log=log)
            for _ in range(4)
        ]
        codes = [proc.wait(timeout=120) for proc in workers]
        stats = sb.stats()
    charged = sum(e["cents"] for e in stats["wallet_events"] if e["kind"] == "charge")
    assert charged <= 255, charged
    assert charged == 250  # 25 jobs fit: every one reserved was sent, none past the cap
    assert 3 in codes, (codes, log.read_text()[-2000:])  # a worker met the cap
    assert set(codes) <= {0, 3}
    code, _, err = _cli("results", str(path), "--state", pg_url)
    assert code == 1, err
    results = yaml.safe_load(path.with_name("jobs.results.yaml").read_text())
    statuses = [j["status"] for j in results["jobs"]]
    assert statuses.count("completed") == charged // 10
    skipped = [j for j in results["jobs"] if j["status"] == "skipped"]
    assert len(skipped) == 60 - charged // 10
    assert {j["reason"] for j in skipped} == {"budget"}
    assert "max_spend_usd" in results["run"]["stopped"]


def test_schema_version_is_checked_and_manifests_are_kept_apart(
    tmp_path: Path, pg_url: str
) -> None:
    """Two manifests in one database are kept apart (a song both list is each one's job);
    status shows each one's own jobs and workers; an unknown schema version is refused with
    exit 2 and nothing changed."""
    a = _manifest(tmp_path, 3, name="a.yaml", concurrency=2)
    b = _manifest(tmp_path, 5, name="b.yaml", concurrency=2)  # s0..s2 are a's too
    log = tmp_path / "workers.log"
    with SandboxThread(SandboxSettings(processing_s=(0.05, 0.1))) as sb:
        for path in (a, b):
            assert _worker(sb, path, pg_url, "--no-download", log=log).wait(timeout=60) == 0
        created = sb.stats()["jobs"]["created"]
    assert created == 8
    code, out, _ = _cli("status", str(a), "--state", pg_url)
    assert code == 0
    assert out.startswith("a.yaml: 3 jobs: 3 completed")
    assert "finished (exit 0); worked 3" in out
    code, out, _ = _cli("status", str(b), "--state", pg_url, "-v")
    assert out.startswith("b.yaml: 5 jobs: 5 completed")
    assert out.count(": completed id ") == 5
    code, out, _ = _cli(
        "results", str(a), "--state", pg_url, "-o", str(tmp_path / "a.json"), "--format", "json"
    )
    assert code == 0
    assert "3 jobs: 3 completed" in out
    _query(pg_url, "UPDATE batchpod_schema SET version = 99")
    before = _query(pg_url, "SELECT key, state, updated_at FROM batchpod_jobs ORDER BY key")
    code, out, err = _cli("status", str(a), "--state", pg_url)
    assert code == 2
    assert "written by another batchpod (schema version 99; this batchpod reads version 1)" in err
    assert len(err.strip().splitlines()) == 1
    with SandboxThread(SandboxSettings(processing_s=0.05)) as sb:
        proc = _worker(sb, a, pg_url, log=log)
        assert proc.wait(timeout=60) == 2
        assert sb.stats()["jobs"]["created"] == 0
    assert _query(pg_url, "SELECT key, state, updated_at FROM batchpod_jobs ORDER BY key") == before
    assert _scan_for_password(tmp_path, out, err) == []


def test_an_unreachable_database_is_one_line_naming_the_host(
    tmp_path: Path, postgres: PgServer
) -> None:
    """No server at the address: exit 69, one line naming the host and port, never the
    password; nothing is submitted."""
    path = _manifest(tmp_path, 2)
    with socket_port() as port:
        url = f"postgresql://batchpod:{PASSWORD}@127.0.0.1:{port}/nowhere"
        with SandboxThread(SandboxSettings(processing_s=0.05)) as sb:
            env = dict(os.environ, AUDIOPOD_API_KEY=sb.api_key)
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "batchpod",
                    "run",
                    str(path),
                    "--base-url",
                    sb.base_url,
                    "--state",
                    url,
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            created = sb.stats()["jobs"]["created"]
    assert done.returncode == 69, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"postgresql://batchpod@127.0.0.1:{port}/nowhere" in lines[0]
    assert "Traceback" not in done.stderr
    assert created == 0
    # A wrong password is refused as plainly, without repeating either password.
    wrong = postgres.url("postgres").replace(PASSWORD, "not-the-password")
    code, out, err = _cli("status", str(path), "--state", wrong)
    assert code == 69
    assert "password authentication failed" in err
    assert "not-the-password" not in err
    assert _scan_for_password(tmp_path, done.stdout, done.stderr, out, err) == []


def test_the_password_may_come_from_pgpassword_or_pgpass(
    tmp_path: Path, postgres: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL without a password finds it where libpq looks: PGPASSWORD, then ~/.pgpass."""
    database = postgres.database()
    bare = postgres.url(database, password=False)
    path = _manifest(tmp_path, 2, concurrency=2)
    with SandboxThread(SandboxSettings(processing_s=0.05)) as sb:
        monkeypatch.setenv("AUDIOPOD_API_KEY", sb.api_key)
        monkeypatch.setenv("PGPASSWORD", PASSWORD)
        args = ["run", str(path), "--base-url", sb.base_url, "--state", bare, "--no-download"]
        code, out, err = _cli(*args)
        assert code == 0, err
        monkeypatch.delenv("PGPASSWORD")
        home = tmp_path.parent / f"{tmp_path.name}-home"  # outside the folder scanned below
        home.mkdir()
        pgpass = home / ".pgpass"
        pgpass.write_text(f"127.0.0.1:{postgres.port}:{database}:batchpod:{PASSWORD}\n")
        pgpass.chmod(0o600)
        monkeypatch.setenv("PGPASSFILE", str(pgpass))
        code, out, err = _cli("status", str(path), "--state", bare)
    assert code == 0, err
    assert "2 completed" in out
    assert _scan_for_password(tmp_path, out, err, _database_text(postgres.url(database))) == []


class socket_port:
    """A loopback port with nothing listening on it (bound, never listened to)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        port: int = self.sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_a_submit_guard_that_refuses_stops_the_submit_before_it_is_sent() -> None:
    """The guard a fleet worker gives its client runs once the submit has its connection:
    when it refuses (the worker lost its lease), nothing reaches AudioPod; other requests
    are not guarded."""
    import anyio

    from batchpod.client import ApiClient
    from batchpod.errors import LeaseLost

    calls = []

    def refuse() -> None:
        calls.append(1)
        raise LeaseLost(where="postgresql://batchpod@127.0.0.1/t", jobs=0)

    async def go(base_url: str, key: str) -> None:
        async with ApiClient(base_url=base_url, api_key=key, submit_guard=refuse) as api:
            await api.balance()
            with pytest.raises(LeaseLost):
                await api.submit_url("https://cdn.example.com/x.mp3", mode="two", stem=None)

    with SandboxThread(SandboxSettings(processing_s=0.05)) as sb:
        anyio.run(go, sb.base_url, sb.api_key)
        stats = sb.stats()
    assert calls == [1]
    assert stats["jobs"]["created"] == 0
    assert "POST /api/v1/stem-extraction/api/extract" not in str(stats["requests"])


def test_a_peer_takes_over_a_killed_workers_jobs_before_it_leaves(
    tmp_path: Path, pg_url: str
) -> None:
    """Two workers; one is killed while it holds submitted jobs and is not started again:
    the other does not leave when its own work is done, but waits for the lease to lapse,
    takes the dead one's jobs over (following them by their AudioPod ids), and finishes the
    manifest: every song created once."""
    path = _manifest(tmp_path, 12, concurrency=4)
    log = tmp_path / "workers.log"
    with SandboxThread(SandboxSettings(processing_s=(1.0, 1.5))) as sb:
        doomed = _worker(sb, path, pg_url, log=log)
        deadline = time.monotonic() + 20
        while not _submitted(pg_url, doomed.pid) if _holds(pg_url, doomed.pid) else True:
            if time.monotonic() > deadline:
                pytest.fail("the first worker never submitted")
            time.sleep(0.02)
        survivor = _worker(sb, path, pg_url, log=log)
        time.sleep(0.3)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        assert survivor.wait(timeout=60) == 0, log.read_text()[-2000:]
        stats = sb.stats()
    assert stats["jobs"]["created"] == 12, stats["submissions"]
    code, _, err = _cli("results", str(path), "--state", pg_url)
    assert code == 0, err
    results = yaml.safe_load(path.with_name("jobs.results.yaml").read_text())
    assert [j["status"] for j in results["jobs"]] == ["succeeded"] * 12


def test_a_capped_run_counts_what_an_uncapped_one_left_in_flight(
    tmp_path: Path, pg_url: str
) -> None:
    """An uncapped fleet is killed with 10 jobs in flight (10 c each); a run under a $1.00
    cap, started once its lease has lapsed, counts them against the cap, as a single
    machine's re-run does: it follows them, submits nothing more, and stops at the cap."""
    path = _manifest(tmp_path, 20, seconds=60, concurrency=10)
    log = tmp_path / "workers.log"
    with SandboxThread(SandboxSettings(processing_s=2.0, balance_cents=10_000)) as sb:
        first = _worker(sb, path, pg_url, "--no-download", log=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sb.stats()["jobs"]["created"] < 10:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        # While its lease runs, the dead worker's run is the one in progress: other caps wait.
        code = _worker(sb, path, pg_url, "--no-download", "--max-spend", "1.00", log=log).wait(60)
        assert code == 2
        assert "give every worker the same" in log.read_text()
        time.sleep(2.5)
        code = _worker(sb, path, pg_url, "--no-download", "--max-spend", "1.00", log=log).wait(60)
        stats = sb.stats()
    assert code == 3, log.read_text()[-2000:]
    assert stats["jobs"]["created"] == 10
    charged = sum(e["cents"] for e in stats["wallet_events"] if e["kind"] == "charge")
    assert charged == 100


def test_a_url_whose_password_is_not_encoded_is_refused_without_repeating_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """libpq would read ``user:pa/ss@host`` as a host, a port and a database named after the
    rest, and echo them in its errors: such a URL is refused at once, exit 2, and the
    message shows no part of the password; nor does one with a broken %-escape."""
    for url in (
        "postgresql://batchpod:hunter/22@db.example/x",
        "postgresql://batchpod:Pa%41ss%zz@db.example/x",
    ):
        code, out, err = _cli("status", "jobs.yaml", "--state", url)
        captured = capsys.readouterr()  # argparse reports to the process's own stderr
        out, err = out + captured.out, err + captured.err
        assert code == 2
        assert "percent-encode its password" in err
        for part in ("hunter", "22@", "Pa%41ss", "PaAss", "%zz"):
            assert part not in err + out
