"""The connection to a fleet's PostgreSQL state: opening it, its schema, and what it reads.

Every statement runs in a transaction of its own on one connection per use (psycopg's async
connection, with ``autocommit`` so that ``transaction()`` blocks are the only transactions),
behind a lock: two tasks of one worker must never interleave statements in one transaction.
A failure of the server or the network is ``DatabaseUnavailable`` (exit 69) naming the
database without its password; the driver's own messages are scrubbed before they are shown.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.from_thread
import psycopg
from psycopg.rows import dict_row

from batchpod.errors import DatabaseUnavailable, FleetStateError
from batchpod.journal import JobRecord, record_from

from ._schema import APPLICATION, DDL, SCHEMA_VERSION, VERSION_TABLE
from ._url import DatabaseUrl

log = logging.getLogger("batchpod")

#: The database's clock, in Unix seconds: leases are judged by one clock, not each machine's.
NOW: Final = "extract(epoch FROM clock_timestamp())::float8"
#: Serialises schema creation between workers starting together (an arbitrary constant).
_SCHEMA_LOCK: Final = 0x62617463_68706F64 & 0x7FFF_FFFF_FFFF_FFFF
#: A worker row ``w`` that is alive: not signed off, not evicted, seen within its lease.
#: Its jobs and name locks are its own; anyone else's may be taken over.
ALIVE: Final = f"(w.finished_at IS NULL AND w.evicted_at IS NULL AND w.seen_at > {NOW} - w.lease_s)"
CONNECT_TIMEOUT_S: Final = 10
IDLE_IN_TRANSACTION_MS: Final = 5_000

Row = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetRow:
    """One manifest's fleet as the database holds it."""

    id: int
    identity: str
    manifest: str
    manifest_sha256: str | None
    epoch: int
    epoch_started_at: float | None
    stop_reason: str | None
    stop_message: str | None
    balance_cents: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRow:
    """A job's row: its record, who holds it, and how it last ended."""

    record: JobRecord
    position: int
    owner: str | None
    worked_by: str | None
    settled_epoch: int | None
    status: str | None
    reason: str | None
    estimated_cents: int | None
    listed_epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRow:
    worker: str
    host: str
    pid: int
    epoch: int
    lease_s: float
    started_at: float
    seen_at: float
    finished_at: float | None
    exit_code: int | None
    evicted_at: float | None  # when others took its jobs over after its lease lapsed
    alive: bool  # seen within its lease and not finished
    jobs_held: int
    jobs_worked: int


class FleetStore:
    """One connection to the state database (see the module docstring)."""

    def __init__(self, url: DatabaseUrl, connection: psycopg.AsyncConnection[Row]) -> None:
        self.url = url
        self._db = connection
        self._lock = anyio.Lock()

    @classmethod
    async def open(cls, url: DatabaseUrl, *, create: bool = True) -> FleetStore:
        """Connect, and create the schema (``create``) or check that it is batchpod's."""
        store = cls(url, await connect(url))
        try:
            await store._schema(create=create)
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            await self._db.close()

    async def __aenter__(self) -> FleetStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def tx(self) -> AsyncIterator[psycopg.AsyncCursor[Row]]:
        """One transaction on this connection, its statements never interleaved with
        another task's."""
        # Shielded: psycopg closes a connection whose query is cancelled, and a worker being
        # stopped still has its jobs to give back. Each transaction is a few statements.
        with anyio.CancelScope(shield=True):
            async with self._lock:
                try:
                    async with self._db.transaction(), self._db.cursor() as cursor:
                        yield cursor
                except psycopg.errors.InsufficientPrivilege as exc:
                    reason = self.reason(exc)
                    raise FleetStateError(where=self.url.where, reason=reason) from None
                except psycopg.Error as exc:
                    raise DatabaseUnavailable(
                        where=self.url.where, reason=self.reason(exc), during_run=True
                    ) from None

    def reason(self, exc: BaseException) -> str:
        return self.url.scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))

    async def _schema(self, *, create: bool) -> None:
        async with self.tx() as cur:
            if not create:
                await cur.execute("SELECT to_regclass('batchpod_schema') IS NOT NULL AS there")
                row = await cur.fetchone()
                if not (row and row["there"]):
                    raise FleetStateError(
                        where=self.url.where,
                        reason="no batchpod state in this database (has this manifest run?)",
                    )
            else:
                await cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                await cur.execute(VERSION_TABLE)
            await cur.execute("SELECT application, version FROM batchpod_schema")
            found = await cur.fetchone()
            if found is None:
                if not create:
                    raise FleetStateError(where=self.url.where, reason="an empty batchpod schema")
                await cur.execute(DDL)
                await cur.execute(
                    "INSERT INTO batchpod_schema (application, version) VALUES (%s, %s)",
                    (APPLICATION, SCHEMA_VERSION),
                )
                return
        if found["application"] != APPLICATION:
            raise FleetStateError(
                where=self.url.where, reason="a batchpod_schema table that is not batchpod's"
            )
        if found["version"] != SCHEMA_VERSION:
            raise FleetStateError(
                where=self.url.where,
                reason=(
                    f"written by another batchpod (schema version {found['version']}; this "
                    f"batchpod reads version {SCHEMA_VERSION})"
                ),
            )

    # -- reading -------------------------------------------------------------------------

    async def fleet(self, identity: str) -> FleetRow | None:
        async with self.tx() as cur:
            await cur.execute("SELECT * FROM batchpod_fleets WHERE identity = %s", (identity,))
            row = await cur.fetchone()
        return None if row is None else fleet_row(row)

    async def jobs(self, fleet_id: int) -> dict[str, JobRow]:
        """Every job row of the fleet, by key."""
        async with self.tx() as cur:
            await cur.execute(
                "SELECT * FROM batchpod_jobs WHERE fleet_id = %s ORDER BY position", (fleet_id,)
            )
            rows = await cur.fetchall()
        return {row["key"]: job_row(row) for row in rows}

    async def workers(self, fleet_id: int) -> list[WorkerRow]:
        """The fleet's workers, newest first, with how many jobs each holds and worked."""
        async with self.tx() as cur:
            await cur.execute(
                f"""
                SELECT w.*, {ALIVE} AS alive,
                       (SELECT count(*) FROM batchpod_jobs j
                         WHERE j.fleet_id = w.fleet_id AND j.owner = w.worker) AS jobs_held,
                       (SELECT count(*) FROM batchpod_jobs j
                         WHERE j.fleet_id = w.fleet_id AND j.worked_by = w.worker)
                         AS jobs_worked
                  FROM batchpod_workers w WHERE w.fleet_id = %s ORDER BY w.started_at DESC
                """,
                (fleet_id,),
            )
            rows = await cur.fetchall()
        return [WorkerRow(**{k: v for k, v in row.items() if k != "fleet_id"}) for row in rows]


async def connect(url: DatabaseUrl) -> psycopg.AsyncConnection[Row]:
    """A connection to the database (``DatabaseUnavailable`` naming it if there is none)."""
    try:
        connection = await psycopg.AsyncConnection.connect(
            url.url,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name="batchpod",
        )
        # A worker frozen inside a transaction (SIGSTOP, a paused VM) must not hold its row
        # locks until it wakes: the server ends such a session. A transaction's statements
        # follow each other within milliseconds, so this never cuts a living one short.
        await connection.execute(
            f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS}"
        )
        return connection
    except psycopg.Error as exc:
        text = str(exc).strip().splitlines()
        raise DatabaseUnavailable(
            where=url.where, reason=url.scrub(text[0] if text else repr(exc))
        ) from None


def fleet_row(row: Mapping[str, Any]) -> FleetRow:
    return FleetRow(
        id=row["id"],
        identity=row["identity"],
        manifest=row["manifest"],
        manifest_sha256=row["manifest_sha256"],
        epoch=row["epoch"],
        epoch_started_at=row["epoch_started_at"],
        stop_reason=row["stop_reason"],
        stop_message=row["stop_message"],
        balance_cents=row["balance_cents"],
    )


def job_row(row: Mapping[str, Any]) -> JobRow:
    return JobRow(
        record=record_from(row),
        position=row["position"],
        owner=row["owner"],
        worked_by=row["worked_by"],
        settled_epoch=row["settled_epoch"],
        status=row["status"],
        reason=row["reason"],
        estimated_cents=row["estimated_cents"],
        listed_epoch=row["listed_epoch"],
    )


class HashCache:
    """Local files' hashes in the shared state, by this host and the file's path, size and
    mtime (``identity.HashCache``; called from ``content_keys``' worker thread)."""

    def __init__(self, store: FleetStore) -> None:
        self.store = store
        self.host = socket.gethostname()

    def cached_hash(self, path: Path, size: int, mtime_ns: int) -> str | None:
        return anyio.from_thread.run(self._cached, str(path), size, mtime_ns)

    def remember_hash(self, path: Path, size: int, mtime_ns: int, sha256: str) -> None:
        anyio.from_thread.run(self._remember, str(path), size, mtime_ns, sha256)

    async def _cached(self, path: str, size: int, mtime_ns: int) -> str | None:
        async with self.store.tx() as cur:
            await cur.execute(
                """SELECT sha256 FROM batchpod_file_hashes WHERE host = %s AND path = %s
                   AND size = %s AND mtime_ns = %s""",
                (self.host, path, size, mtime_ns),
            )
            row = await cur.fetchone()
        return str(row["sha256"]) if row else None

    async def _remember(self, path: str, size: int, mtime_ns: int, sha256: str) -> None:
        async with self.store.tx() as cur:
            await cur.execute(
                """INSERT INTO batchpod_file_hashes (host, path, size, mtime_ns, sha256)
                   VALUES (%s, %s, %s, %s, %s) ON CONFLICT (host, path) DO UPDATE
                   SET size = EXCLUDED.size, mtime_ns = EXCLUDED.mtime_ns,
                   sha256 = EXCLUDED.sha256""",
                (self.host, path, size, mtime_ns, sha256),
            )
