"""Durable job state in one SQLite file: what was asked of AudioPod, and what came of it.

This is the only module that touches the state file. Every transition of a job's state
machine is committed before the step it enables, so a crash at any moment leaves a state that
a re-run can finish from without paying twice::

    pending -> submitting -> submitted -> completed -> downloaded -> cleaned
                   |             |            \\-> (download failed: stays completed)
                   v             v
                unknown        failed

- ``submitting`` is committed *before* the submit request is sent (with the time of that
  intent), ``submitted`` as soon as the response names the remote job.
- ``cleaned``: downloaded, and the job then deleted at AudioPod (``run --delete-remote``,
  ``batchpod cleanup``), which is done only once ``downloaded`` is committed.
- ``unknown``: the submit may or may not have reached AudioPod. It is reconciled against
  AudioPod's job list, never blindly sent again.
- Jobs are keyed by content (``identity.content_key``): a hash of the normalised source (a
  URL, or a local file's SHA-256), the mode and the stem. Reordering, renaming or adding jobs
  in the manifest does not change the key of a job already done.

The file uses WAL, so ``batchpod status`` can read it while a run writes. A run holds an
exclusive lock on ``<state>.lock`` for its whole length (``RunLock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread

from batchpod.errors import BatchpodError, StateError, StateLocked
from batchpod.models import ErrorRecord, OutputFile, location

SCHEMA_VERSION: Final = 1
APPLICATION: Final = "batchpod-state"


class JobState(StrEnum):
    """A job's place in the state machine (see the module docstring)."""

    PENDING = "pending"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    COMPLETED = "completed"
    DOWNLOADED = "downloaded"
    CLEANED = "cleaned"  # downloaded, and its AudioPod job deleted since
    FAILED = "failed"
    UNKNOWN = "unknown"

    @property
    def done(self) -> bool:
        """Every stem was stored (its AudioPod job may have been deleted since)."""
        return self in (JobState.DOWNLOADED, JobState.CLEANED)

    @property
    def unsettled(self) -> bool:
        """A submit may have reached AudioPod and nobody knows yet whether it made a job:
        reconcile against the job list, never send blindly again."""
        return self in (JobState.SUBMITTING, JobState.UNKNOWN)

    @property
    def paid_unfinished(self) -> bool:
        """AudioPod holds (or may hold) a charge for the job, and it is not done: the money
        an earlier run spent on it counts against this run's caps, and an estimate does not
        count it again."""
        return self.unsettled or self in (JobState.SUBMITTED, JobState.COMPLETED)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRecord:
    """One job's row in the state file."""

    key: str
    state: JobState
    name: str
    remote_id: str | None = None
    intent_at: float | None = None  # Unix seconds when the submit was about to be sent
    submitted_at: float | None = None
    completed_at: float | None = None
    attempts: int = 0
    cost_cents: int | None = None
    files: tuple[OutputFile, ...] = ()
    quality_scores: Mapping[str, float] = field(default_factory=dict)
    error: ErrorRecord | None = None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    name TEXT NOT NULL,
    remote_id TEXT,
    intent_at REAL,
    submitted_at REAL,
    completed_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cost_cents INTEGER,
    files TEXT,
    quality_scores TEXT,
    error TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
"""

#: A job record's columns, in the order of ``record_values`` (shared with the fleet's table).
RECORD_COLUMNS: Final = (
    "key",
    "state",
    "name",
    "remote_id",
    "intent_at",
    "submitted_at",
    "completed_at",
    "attempts",
    "cost_cents",
    "files",
    "quality_scores",
    "error",
)
_COLUMNS: Final = ", ".join(RECORD_COLUMNS)


class Journal:
    """The state file: open it with ``Journal.open(path)`` and use it as a context manager.

    Blocking (sqlite3): each method is one short transaction; the pool calls them through a
    worker thread or accepts the few hundred microseconds a commit takes.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, *, create: bool = True, readonly: bool = False) -> Journal:
        """Open (or create) the state file; a file that is not batchpod's is refused untouched."""
        exists = path.exists()
        if not exists and not create:
            raise StateError(path=path, reason="no state file (has this manifest been run?)")
        if exists:
            _check_header(path)
            if not readonly:
                # Look before touching: switching to WAL would already rewrite the header of
                # someone else's database.
                try:
                    cls.open(path, create=False, readonly=True).close()
                except StateError as exc:
                    # A read-only connection cannot recover the WAL a killed writer left
                    # ("attempt to write a readonly database"); such a file is in WAL mode
                    # already, so nothing of its header changes, and the read-write open
                    # below recovers it, then checks that it is batchpod's.
                    cause = exc.__cause__
                    if not (
                        isinstance(cause, sqlite3.OperationalError) and "readonly" in str(cause)
                    ):
                        raise
        try:
            if readonly:
                db = sqlite3.connect(
                    f"{path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    timeout=5,
                    check_same_thread=False,
                )
            else:
                if not exists:
                    # Owner-only from the first byte: the file names the user's catalogue.
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    os.close(fd)
                # Used from one worker thread at a time (JournalWriter), under self._lock.
                db = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
            db.row_factory = sqlite3.Row
            journal = cls(path, db)
            if readonly:
                journal._check_meta()
            else:
                journal._init_or_check()
            return journal
        except sqlite3.DatabaseError as exc:
            raise StateError(
                path=path, reason=f"not a readable batchpod state file ({exc})"
            ) from exc
        except OSError as exc:
            raise StateError(path=path, reason=exc.strerror or str(exc)) from exc

    def _init_or_check(self) -> None:
        with self._tx():
            tables = {
                r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if tables and "meta" not in tables:
                raise StateError(path=self.path, reason="an SQLite file, but not batchpod's")
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    self._db.execute(statement)
            rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            if not rows:
                self._db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("application", APPLICATION), ("schema_version", str(SCHEMA_VERSION))],
                )
                return
        self._check_meta()

    def _check_meta(self) -> None:
        tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables == 0:
            return  # empty: a run was killed while creating it; it is set up on first write
        try:
            rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise StateError(path=self.path, reason="an SQLite file, but not batchpod's") from exc
        if rows.get("application") != APPLICATION:
            raise StateError(path=self.path, reason="an SQLite file, but not batchpod's")
        if rows.get("schema_version") != str(SCHEMA_VERSION):
            raise StateError(
                path=self.path,
                reason=f"written by another batchpod (schema {rows.get('schema_version')})",
            )

    def close(self) -> None:
        """Close the file (everything is already committed)."""
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                reason = f"cannot write the state ({exc})"
                raise StateError(path=self.path, reason=reason, during_run=True) from exc

    # -- reading ----------------------------------------------------------------------------

    def records(self) -> dict[str, JobRecord]:
        """Every job's record, by key."""
        if not self._has_schema():
            return {}
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs").fetchall()
        return {row["key"]: record_from(row) for row in rows}

    def _has_schema(self) -> bool:
        """Whether the tables exist (a file a killed run left empty has none yet)."""
        row = self._db.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
        ).fetchone()
        return bool(row[0])

    def cached_hash(self, path: Path, size: int, mtime_ns: int) -> str | None:
        """A file's content hash from an earlier run, if the file looks unchanged."""
        if not self._has_schema():
            return None
        row = self._db.execute(
            "SELECT sha256 FROM file_hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
            (str(path), size, mtime_ns),
        ).fetchone()
        return str(row[0]) if row else None

    # -- writing (each call is one committed transaction) ----------------------------------

    def remember_hash(self, path: Path, size: int, mtime_ns: int, sha256: str) -> None:
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO file_hashes (path, size, mtime_ns, sha256) "
                "VALUES (?, ?, ?, ?)",
                (str(path), size, mtime_ns, sha256),
            )

    def put(self, record: JobRecord) -> None:
        """Write the whole record (insert or replace), committed before returning."""
        self.put_many([record])

    def put_many(self, records: Sequence[JobRecord]) -> None:
        """Write several records in one transaction (one commit, one fsync)."""
        now = time.time()
        with self._tx():
            self._db.executemany(
                f"INSERT OR REPLACE INTO jobs ({_COLUMNS}, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*record_values(record), now) for record in records],
            )

    def set_costs(self, costs: Mapping[str, int]) -> None:
        """Record AudioPod's charge for jobs, by key."""
        with self._tx():
            self._db.executemany(
                "UPDATE jobs SET cost_cents = ? WHERE key = ?",
                [(cents, key) for key, cents in costs.items()],
            )


def record_values(record: JobRecord) -> tuple[Any, ...]:
    """The record as column values, in ``RECORD_COLUMNS`` order (lists and maps as JSON)."""
    return (
        record.key,
        record.state.value,
        record.name,
        record.remote_id,
        record.intent_at,
        record.submitted_at,
        record.completed_at,
        record.attempts,
        record.cost_cents,
        json.dumps([_file_json(f) for f in record.files]) if record.files else None,
        json.dumps(dict(record.quality_scores)) if record.quality_scores else None,
        json.dumps(_error_json(record.error)) if record.error else None,
    )


def _check_header(path: Path) -> None:
    """Refuse, without writing to it, a file that is not an SQLite database at all."""
    try:
        with path.open("rb") as stream:
            head = stream.read(16)
    except OSError as exc:
        raise StateError(path=path, reason=exc.strerror or str(exc)) from exc
    if head and head != b"SQLite format 3\x00":
        raise StateError(path=path, reason="not a batchpod state file (not SQLite)")


def _file_json(f: OutputFile) -> dict[str, Any]:
    data: dict[str, Any] = {"stem": f.stem, "path": str(f.path), "size": f.size}
    if f.sha256 is not None:
        data["sha256"] = f.sha256
        data["mtime_ns"] = f.mtime_ns
    if f.encoding is not None:
        data["served_size"] = f.served_size
        data["encoding"] = f.encoding
    if f.etag is not None:
        data["etag"] = f.etag
    return data


def _error_json(e: ErrorRecord) -> dict[str, Any]:
    return {"type": e.type, "message": e.message, "http_status": e.http_status}


def record_from(row: Mapping[str, Any] | sqlite3.Row) -> JobRecord:
    """A record from its columns (by ``RECORD_COLUMNS`` name), as ``record_values`` wrote them."""
    files: Sequence[dict[str, Any]] = json.loads(row["files"]) if row["files"] else []
    error = json.loads(row["error"]) if row["error"] else None
    return JobRecord(
        key=row["key"],
        state=JobState(row["state"]),
        name=row["name"],
        remote_id=row["remote_id"],
        intent_at=row["intent_at"],
        submitted_at=row["submitted_at"],
        completed_at=row["completed_at"],
        attempts=row["attempts"],
        cost_cents=row["cost_cents"],
        files=tuple(
            OutputFile(
                stem=f["stem"],
                path=location(f["path"]),
                size=int(f["size"]),
                sha256=f.get("sha256"),
                mtime_ns=f.get("mtime_ns"),
                served_size=f.get("served_size"),
                encoding=f.get("encoding"),
                etag=f.get("etag"),
            )
            for f in files
        ),
        quality_scores=json.loads(row["quality_scores"]) if row["quality_scores"] else {},
        error=ErrorRecord(**error) if error else None,
    )


class RunLock:
    """A non-blocking lock on a state file for the length of one run.

    A run holds its own state exclusively. With ``shared``, it holds another layout's state
    for reading (``batchpod.layouts``): any number of readers at once, but never beside a
    run that holds it exclusively, so the shards of one layout may run together while no run
    of an older layout can.
    """

    def __init__(self, state_path: Path, *, shared: bool = False) -> None:
        self.path = state_path.with_name(state_path.name + ".lock")
        self.shared = shared
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(path=self.path, reason=exc.strerror or str(exc)) from exc
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise StateLocked(path=self.path, holder_pid=holder) from None
        if not self.shared:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def _holder(self, fd: int) -> str | None:
        """The pid of the run holding the lock exclusively, or None when readers hold it."""
        if not self.shared:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # an exclusive holder: its pid is in the file
            else:
                return None  # only readers: the pid in the file is an earlier run's
        return os.read(fd, 64).decode(errors="replace").strip() or "unknown"

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock; the file stays for the next run
            self._fd = None


@dataclass(slots=True)
class _Ticket:
    done: anyio.Event = field(default_factory=anyio.Event)
    error: BatchpodError | None = None


class JournalWriter:
    """Group commit: many jobs' transitions in one transaction, each caller waiting for its own.

    A commit costs an fsync (about a millisecond here); with a hundred jobs changing state at
    once, one commit per transition would queue them all behind each other. ``put`` returns
    only once its record is durable, which is what the state machine needs; a commit carries
    every record queued while the previous one was being written. Run ``run()`` in the same
    task group as the callers, and cancel it only after they have finished.

    ``commit`` writes one batch: the SQLite file's ``put_many`` in a worker thread by default,
    or a fleet's shared state (``batchpod.fleet``).
    """

    def __init__(
        self,
        journal: Journal | None = None,
        *,
        commit: Callable[[Sequence[JobRecord]], Awaitable[None]] | None = None,
    ) -> None:
        if commit is None:
            if journal is None:
                raise ValueError("JournalWriter needs a journal or a commit function")
            put_many = journal.put_many

            async def commit(records: Sequence[JobRecord]) -> None:
                await anyio.to_thread.run_sync(put_many, records)

        self.journal = journal
        self._commit = commit
        self.commits = 0
        self._queue: list[tuple[JobRecord, _Ticket]] = []
        self._kick = anyio.Event()

    async def put(self, record: JobRecord) -> None:
        """Queue ``record`` and wait until it is committed."""
        ticket = _Ticket()
        self._queue.append((record, ticket))
        self._kick.set()
        await ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error

    async def run(self) -> None:
        """Commit queued records as they come; runs until cancelled."""
        while True:
            if not self._queue:
                self._kick = anyio.Event()
                await self._kick.wait()
                continue
            batch, self._queue = self._queue, []
            latest = list({record.key: record for record, _ in batch}.values())
            try:
                await self._commit(latest)
            except BatchpodError as exc:  # the state could not be written
                for _, ticket in batch:
                    ticket.error = exc
            self.commits += 1
            for _, ticket in batch:
                ticket.done.set()
