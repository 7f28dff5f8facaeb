"""One worker of a fleet: it joins, claims jobs under a lease, writes their state fenced by
that lease, shares the fleet's budget, and serialises like-named submits with the others.

- **Joining.** A worker that starts when no other worker of the manifest is alive begins a
  new *epoch* (the next run of the manifest): last epoch's stop is lifted and the budget
  forgets what finished jobs cost, keeping what jobs left in flight may have cost, as a
  single machine's re-run does. A worker that joins living ones works their epoch.
- **Claims and leases.** ``claim`` takes the next job in manifest order that this epoch has
  not settled, that is not done, and that no living worker holds, with ``FOR UPDATE SKIP
  LOCKED`` so that workers never wait on each other. A worker is alive while its heartbeat
  (every quarter of its lease, on a connection of its own) is younger than its lease; once
  it is older, its jobs go to whoever claims next, in whatever state they were: a job left
  ``submitting`` is reconciled, never sent blindly again.
- **Fencing.** Every state write names its owner and requires the owner's heartbeat to be
  younger than half its lease: a worker that lost its jobs cannot write over their new
  owner's work, and a submit intent is only recorded while at least half a lease remains,
  so the send it allows goes out long before another worker may take the job over. A
  write that finds the job gone is ``LeaseLost`` (exit 75): the worker stops.
- **One budget.** Reservations are rows; ``reserve`` takes the fleet's row lock, adds what
  every worker reserved, holds and was charged, and refuses past ``max_spend`` or below
  ``keep_balance`` (against the newest wallet read any worker made, less what was reserved
  since it was sent).
- **Like-named songs.** ``hold`` takes a lock on the name that reconciliation tells jobs
  apart by (``reconcile.identity``): a row of ``batchpod_names``, held under the holder's
  lease like its jobs, so that a killed or frozen worker's lock passes to the next one
  once its lease lapses (and the frozen one, evicted, sends nothing when it wakes).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

import anyio
import psycopg

from batchpod.budget import Refusal, Refused, usd
from batchpod.errors import DatabaseUnavailable, FleetStateError, LeaseLost
from batchpod.journal import RECORD_COLUMNS, JobRecord, JobState, record_values

from ._schema import DEFAULT_LEASE_S
from ._store import ALIVE, NOW, FleetRow, FleetStore, connect, fleet_row, job_row

log = logging.getLogger("batchpod")

#: States whose job AudioPod holds (or may hold) a charge for and that are not done: their
#: reservations outlive an epoch, as ``JobState.paid_unfinished`` says.
_PAID_UNFINISHED: Final = tuple(s.value for s in JobState if s.paid_unfinished)
_ASSIGN: Final = ", ".join(f"{c} = %s" for c in RECORD_COLUMNS if c != "key")


def _clock() -> float:
    """Seconds that go on while the machine is suspended (``CLOCK_BOOTTIME`` where there is
    one): a suspended VM must not wake believing its lease is still fresh."""
    return time.clock_gettime(_BOOTTIME)


_BOOTTIME: Final = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def worker_name() -> str:
    """This process's name in the fleet: host, pid and a few random characters."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class FleetWorker:
    """This process as a worker of one manifest's fleet (see the module docstring)."""

    def __init__(
        self,
        store: FleetStore,
        fleet: FleetRow,
        *,
        name: str,
        lease_s: float,
        retry_failed: bool,
        beats: psycopg.AsyncConnection[Any],
    ) -> None:
        self.store = store
        self.url = store.url
        self.fleet = fleet
        self.fleet_id = fleet.id
        self.epoch = fleet.epoch
        self.name = name
        self.lease_s = lease_s
        self.retry_failed = retry_failed
        self.capped = False  # set by the session when a cap is in force
        # When the last renewal that the database took was sent (anyio's clock), and whether
        # another worker has taken this one's jobs over (see ``fresh``).
        self._renewed_at = _clock()
        self.evicted = False
        self._beats = beats

    @classmethod
    async def join(
        cls,
        store: FleetStore,
        *,
        name: str,
        identity: str,
        manifest: str,
        manifest_sha256: str,
        jobs: Sequence[tuple[str, str]],
        lease_s: float = DEFAULT_LEASE_S,
        retry_failed: bool = False,
        max_spend_cents: int | None = None,
        keep_balance_cents: int | None = None,
        estimates: Mapping[str, int] | None = None,
    ) -> FleetWorker:
        """Join (or start) the fleet of the manifest known as ``identity``; ``jobs`` are its
        jobs' (content key, name) in manifest order, each key once. The worker owns
        ``store`` from here on (``close`` closes it).

        Every worker of one run must run the same manifest under the same caps: one that
        does not is refused (``FleetStateError``, exit 2) and changes nothing. A run under a
        cap starts by reserving, for each job an earlier run left paid and unfinished, its
        charge (``estimates`` by key, where AudioPod's is not known yet), as a single
        machine's re-run counts them."""
        caps = (max_spend_cents, keep_balance_cents)
        url = store.url
        try:
            async with store.tx() as cur:
                await cur.execute(
                    f"""INSERT INTO batchpod_fleets (identity, manifest, manifest_sha256,
                        created_at) VALUES (%s, %s, %s, {NOW}) ON CONFLICT (identity) DO NOTHING""",
                    (identity, manifest, manifest_sha256),
                )
                await cur.execute(
                    "SELECT * FROM batchpod_fleets WHERE identity = %s FOR UPDATE", (identity,)
                )
                row = await cur.fetchone()
                assert row is not None
                fleet_id = row["id"]
                await cur.execute(
                    f"SELECT count(*) AS n FROM batchpod_workers w WHERE fleet_id = %s AND {ALIVE}",
                    (fleet_id,),
                )
                alive = await cur.fetchone()
                if alive and alive["n"] and row["manifest_sha256"] != manifest_sha256:
                    raise FleetStateError(
                        where=url.where,
                        reason=(
                            f"the workers running {identity} now run another version of it; "
                            "start this one when they have finished"
                        ),
                    )
                if (
                    alive
                    and alive["n"]
                    and (row["max_spend_cents"], row["keep_balance_cents"]) != caps
                ):
                    raise FleetStateError(
                        where=url.where,
                        reason=(
                            f"the workers running {identity} now run under other caps "
                            f"(max spend {_cents(row['max_spend_cents'])}, keep balance "
                            f"{_cents(row['keep_balance_cents'])}); give every worker the same"
                        ),
                    )
                if not alive or alive["n"] == 0:
                    # The next run of the manifest: what finished jobs cost is last run's.
                    # Last run's workers that never signed off are gone; should one be only
                    # frozen, it must not wake into this run.
                    await cur.execute(
                        f"""UPDATE batchpod_workers SET evicted_at = {NOW} WHERE fleet_id = %s
                            AND finished_at IS NULL AND evicted_at IS NULL""",
                        (fleet_id,),
                    )
                    await cur.execute(
                        f"""UPDATE batchpod_fleets SET epoch = epoch + 1,
                            epoch_started_at = {NOW}, stop_reason = NULL, stop_message = NULL,
                            manifest = %s, manifest_sha256 = %s, max_spend_cents = %s,
                            keep_balance_cents = %s WHERE id = %s""",
                        (manifest, manifest_sha256, *caps, fleet_id),
                    )
                    await cur.execute(
                        """DELETE FROM batchpod_reservations r USING batchpod_jobs j
                           WHERE r.fleet_id = %s AND j.fleet_id = r.fleet_id AND j.key = r.key
                             AND NOT (j.state = ANY(%s))""",
                        (fleet_id, list(_PAID_UNFINISHED)),
                    )
                    if max_spend_cents is not None or keep_balance_cents is not None:
                        await _reserve_inherited(cur, fleet_id, estimates or {})
                await cur.execute("SELECT * FROM batchpod_fleets WHERE id = %s", (fleet_id,))
                row = await cur.fetchone()
                assert row is not None
                fleet = fleet_row(row)
                await cur.execute(
                    f"""INSERT INTO batchpod_workers (fleet_id, worker, host, pid, epoch,
                        lease_s, started_at, seen_at) VALUES (%s, %s, %s, %s, %s, %s, {NOW},
                        {NOW})""",
                    (fleet_id, name, socket.gethostname(), os.getpid(), fleet.epoch, lease_s),
                )
            await _list_jobs(store, fleet, jobs)
            beats = await connect(url)
        except BaseException:
            await store.close()
            raise
        return cls(
            store,
            fleet,
            name=name,
            lease_s=lease_s,
            retry_failed=retry_failed,
            beats=beats,
        )

    async def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            await self._beats.close()
        await self.store.close()

    async def leave(self, exit_code: int | None) -> None:
        """Give back every job still held (another worker may take them at once) and sign
        off."""
        async with self.store.tx() as cur:
            await cur.execute(
                "UPDATE batchpod_jobs SET owner = NULL WHERE fleet_id = %s AND owner = %s",
                (self.fleet_id, self.name),
            )
            await cur.execute(
                f"""UPDATE batchpod_workers SET finished_at = {NOW}, seen_at = {NOW},
                    exit_code = %s WHERE fleet_id = %s AND worker = %s""",
                (exit_code, self.fleet_id, self.name),
            )

    # -- the lease -------------------------------------------------------------------------

    async def keep_alive(self) -> None:
        """Renew the lease every quarter of it, until cancelled; a renewal that fails is
        tried again (writes are fenced, so a lapse cannot go unnoticed)."""
        warned = False
        while not self.evicted:
            await anyio.sleep(self.lease_s / 4)
            sent = _clock()
            try:
                # A lease that has lapsed is never renewed: another worker may be taking its
                # jobs over at this very moment (its claim evicts this one just after).
                cursor = await self._beats.execute(
                    f"UPDATE batchpod_workers SET seen_at = {NOW} "
                    "WHERE fleet_id = %s AND worker = %s AND evicted_at IS NULL "
                    f"AND seen_at > {NOW} - lease_s",
                    (self.fleet_id, self.name),
                )
                if cursor.rowcount != 1:
                    self.evicted = True
                    log.warning(
                        "this worker's lease lapsed before it could renew it; other workers "
                        "take its jobs over"
                    )
                    with contextlib.suppress(psycopg.Error):
                        await _evict(self._beats, [self.name])
                else:
                    self._renewed_at = sent
                warned = False
            except psycopg.Error as exc:
                if not warned:
                    log.warning("could not renew the lease: %s", self.store.reason(exc))
                    warned = True
                with contextlib.suppress(psycopg.Error):
                    self._beats = await connect(self.url)

    async def was_evicted(self) -> bool:
        """Whether others took this worker's jobs over (asked on a new connection, when
        this worker's own may have been ended while it was frozen)."""
        if self.evicted:
            return True
        try:
            connection = await connect(self.url)
        except DatabaseUnavailable:
            return False
        try:
            cursor = await connection.execute(
                "SELECT evicted_at FROM batchpod_workers WHERE fleet_id = %s AND worker = %s",
                (self.fleet_id, self.name),
            )
            row = await cursor.fetchone()
        except psycopg.Error:
            return False
        finally:
            with contextlib.suppress(psycopg.Error):
                await connection.close()
        self.evicted = bool(row and row["evicted_at"] is not None)
        return self.evicted

    def fresh(self) -> bool:
        """Whether this worker surely still holds its jobs: not evicted, and its last renewal
        sent less than half a lease ago. A submit is sent only then, however long the
        process may have been stopped (SIGSTOP, a frozen VM) since its intent was recorded."""
        return not self.evicted and _clock() - self._renewed_at < self.lease_s / 2

    def guard(self) -> None:
        """Raise ``LeaseLost`` unless ``fresh``: called as a submit is about to leave."""
        if not self.fresh():
            raise LeaseLost(where=self.url.where, jobs=0)

    # -- claims ----------------------------------------------------------------------------

    @property
    def _open(self) -> str:
        """The condition on a job row ``j`` that it is still to be worked in this epoch."""
        failed = "" if self.retry_failed else "AND j.state <> 'failed'"
        return f"""j.fleet_id = %(fleet)s AND j.listed_epoch = %(epoch)s
                   AND j.settled_epoch IS DISTINCT FROM %(epoch)s
                   AND j.state NOT IN ('downloaded', 'cleaned') {failed}"""

    async def claim(self, limit: int = 1) -> tuple[list[JobRecord], tuple[str, str] | None]:
        """Up to ``limit`` next jobs for this worker, in manifest order, now held by it (none
        when none is free); or, if a worker stopped the fleet in this epoch, no job and that
        stop (its reason and message). One transaction either way."""
        if self.evicted:
            raise LeaseLost(where=self.url.where, jobs=0)
        async with self.store.tx() as cur:
            await cur.execute(
                "SELECT stop_reason, stop_message, epoch FROM batchpod_fleets WHERE id = %s",
                (self.fleet_id,),
            )
            fleet = await cur.fetchone()
            if fleet and fleet["stop_reason"] is not None and fleet["epoch"] == self.epoch:
                return [], (fleet["stop_reason"], fleet["stop_message"] or fleet["stop_reason"])
            await cur.execute(
                f"""
                WITH free AS (
                    SELECT j.key, j.owner AS previous FROM batchpod_jobs j
                     WHERE {self._open}
                       AND (j.owner IS NULL OR NOT EXISTS (
                            SELECT 1 FROM batchpod_workers w
                             WHERE w.fleet_id = j.fleet_id AND w.worker = j.owner AND {ALIVE}))
                     ORDER BY j.position LIMIT %(limit)s FOR UPDATE OF j SKIP LOCKED)
                UPDATE batchpod_jobs j SET owner = %(me)s, worked_by = %(me)s
                  FROM free WHERE j.fleet_id = %(fleet)s AND j.key = free.key
                RETURNING j.*, free.previous
                """,
                {"fleet": self.fleet_id, "epoch": self.epoch, "me": self.name, "limit": limit},
            )
            rows = await cur.fetchall()
            previous = {r["previous"] for r in rows} - {None, self.name}
            if previous:
                await _evict(cur, sorted(previous))
            unsent = sorted(r["key"] for r in rows if r["state"] == JobState.PENDING.value)
            if unsent:
                # Reserved by a worker that then died before recording its intent: nothing
                # was sent, so nothing is held for them.
                await cur.execute(
                    "DELETE FROM batchpod_reservations WHERE fleet_id = %s AND key = ANY(%s)",
                    (self.fleet_id, unsent),
                )
        claimed = sorted((job_row(row) for row in rows), key=lambda r: r.position)
        return [r.record for r in claimed], None

    async def waiting(self) -> bool:
        """Whether this worker should wait for jobs rather than leave, when it could claim
        none: another worker holds jobs still to be done (it may die or be frozen, and its
        jobs come free when its lease lapses), or jobs that nobody holds are locked by a
        transaction still open (a claim under way, or a frozen worker's, which the server
        ends: see ``connect``). So the fleet ends when the work does, all at once."""
        async with self.store.tx() as cur:
            await cur.execute(
                f"""SELECT EXISTS (SELECT 1 FROM batchpod_jobs j
                     WHERE {self._open} AND j.owner IS DISTINCT FROM %(me)s) AS left""",
                {"fleet": self.fleet_id, "epoch": self.epoch, "me": self.name},
            )
            row = await cur.fetchone()
        return bool(row and row["left"])

    async def halt(self, reason: str, message: str) -> None:
        """Stop the fleet: no worker takes another job this epoch (the budget refused one)."""
        async with self.store.tx() as cur:
            await cur.execute(
                """UPDATE batchpod_fleets SET stop_reason = %s, stop_message = %s
                   WHERE id = %s AND epoch = %s AND stop_reason IS NULL""",
                (reason, message, self.fleet_id, self.epoch),
            )

    async def commit(self, records: Sequence[JobRecord]) -> None:
        """Write records of jobs this worker holds, in one transaction (see Fencing)."""
        lost = 0
        async with self.store.tx() as cur:
            # In key order, as every statement that locks several rows takes them: two
            # transactions never wait on each other in a circle.
            for record in sorted(records, key=lambda r: r.key):
                values = record_values(record)
                await cur.execute(
                    f"""UPDATE batchpod_jobs SET {_ASSIGN}, updated_at = {NOW}
                         WHERE fleet_id = %s AND key = %s AND owner = %s AND EXISTS (
                           SELECT 1 FROM batchpod_workers w WHERE w.fleet_id = %s
                              AND w.worker = %s AND w.evicted_at IS NULL
                              AND w.seen_at > {NOW} - w.lease_s / 2)""",
                    (*values[1:], self.fleet_id, record.key, self.name, self.fleet_id, self.name),
                )
                if cur.rowcount != 1:
                    lost += 1
        if lost:
            raise LeaseLost(where=self.url.where, jobs=lost)

    async def settle(
        self, key: str, *, status: str, reason: str | None, estimated_cents: int | None
    ) -> None:
        """The job ended in this worker: give it back, settled for this epoch."""
        async with self.store.tx() as cur:
            await cur.execute(
                """UPDATE batchpod_jobs SET owner = NULL, settled_epoch = %s, status = %s,
                   reason = %s, estimated_cents = %s
                   WHERE fleet_id = %s AND key = %s AND owner = %s""",
                (self.epoch, status, reason, estimated_cents, self.fleet_id, key, self.name),
            )

    async def set_costs(self, costs: dict[str, int]) -> None:
        async with self.store.tx() as cur:
            await cur.executemany(
                "UPDATE batchpod_jobs SET cost_cents = %s WHERE fleet_id = %s AND key = %s",
                [(cents, self.fleet_id, key) for key, cents in costs.items()],
            )

    async def claimed_ids(self) -> set[str]:
        """Every AudioPod job id any job in the database holds: none is adopted again."""
        async with self.store.tx() as cur:
            await cur.execute("SELECT remote_id FROM batchpod_jobs WHERE remote_id IS NOT NULL")
            rows = await cur.fetchall()
        return {row["remote_id"] for row in rows}

    # -- the budget ------------------------------------------------------------------------

    async def reserve(
        self, key: str, cents: int, *, max_spend_cents: int | None, keep_balance_cents: int | None
    ) -> Refused | None:
        """Reserve ``cents`` for the job against the fleet's caps, atomically."""
        async with self.store.tx() as cur:
            await cur.execute(
                "SELECT balance_cents, balance_read_at FROM batchpod_fleets WHERE id = %s "
                "FOR UPDATE",
                (self.fleet_id,),
            )
            fleet = await cur.fetchone()
            assert fleet is not None
            await cur.execute(
                """SELECT coalesce(sum(cents), 0) AS total,
                          coalesce(sum(cents) FILTER (WHERE state = 'pending'
                              OR held_at > coalesce(%s, 'infinity'::float8)), 0) AS unread
                     FROM batchpod_reservations WHERE fleet_id = %s AND key <> %s""",
                (fleet["balance_read_at"], self.fleet_id, key),
            )
            sums = await cur.fetchone()
            assert sums is not None
            if max_spend_cents is not None:
                available = max_spend_cents - sums["total"]
                if cents > available:
                    return Refused(
                        reason=Refusal.MAX_SPEND,
                        needed_cents=cents,
                        available_cents=max(available, 0),
                    )
            if keep_balance_cents is not None and fleet["balance_cents"] is not None:
                available = fleet["balance_cents"] - sums["unread"] - keep_balance_cents
                if cents > available:
                    return Refused(
                        reason=Refusal.KEEP_BALANCE,
                        needed_cents=cents,
                        available_cents=max(available, 0),
                    )
            await cur.execute(
                """INSERT INTO batchpod_reservations (fleet_id, key, cents, state)
                   VALUES (%s, %s, %s, 'pending') ON CONFLICT (fleet_id, key)
                   DO UPDATE SET cents = EXCLUDED.cents, state = 'pending', held_at = NULL""",
                (self.fleet_id, key, cents),
            )
        return None

    async def submitted(self, key: str) -> None:
        """AudioPod accepted the job: it holds the charge from now on."""
        await self._reservation(
            f"UPDATE batchpod_reservations SET state = 'held', held_at = {NOW} "
            "WHERE fleet_id = %s AND key = %s",
            key,
        )

    async def charged(self, key: str, cents: int) -> None:
        """The job completed and AudioPod charged ``cents``."""
        async with self.store.tx() as cur:
            await cur.execute(
                f"""INSERT INTO batchpod_reservations (fleet_id, key, cents, state, held_at)
                    VALUES (%s, %s, %s, 'charged', {NOW}) ON CONFLICT (fleet_id, key)
                    DO UPDATE SET cents = EXCLUDED.cents, state = 'charged',
                    held_at = coalesce(batchpod_reservations.held_at, EXCLUDED.held_at)""",
                (self.fleet_id, key, cents),
            )

    async def release(self, key: str) -> None:
        """Nothing is or will be charged for the job (never sent, or failed and refunded)."""
        await self._reservation(
            "DELETE FROM batchpod_reservations WHERE fleet_id = %s AND key = %s", key
        )

    async def _reservation(self, statement: str, key: str) -> None:
        async with self.store.tx() as cur:
            await cur.execute(statement.encode(), (self.fleet_id, key))

    async def clock(self) -> float:
        """The database's time (a wallet read is stamped with it before it is sent)."""
        async with self.store.tx() as cur:
            await cur.execute(f"SELECT {NOW} AS now")
            row = await cur.fetchone()
        return float(row["now"]) if row else math.inf

    async def balance(self, cents: int, *, sent_at: float) -> None:
        """A wallet read sent at ``sent_at`` arrived: keep it if it is the newest."""
        async with self.store.tx() as cur:
            await cur.execute(
                """UPDATE batchpod_fleets SET balance_cents = %s, balance_read_at = %s
                   WHERE id = %s AND (balance_read_at IS NULL OR balance_read_at < %s)""",
                (cents, sent_at, self.fleet_id, sent_at),
            )

    # -- like-named songs ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def hold(self, identity: str) -> AsyncIterator[None]:
        """Hold the database-wide lock on a song name (see the module docstring)."""
        pause = 0.02
        while not await self._take_name(identity):
            await anyio.sleep(pause)
            pause = min(pause * 2, 0.5)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                async with self.store.tx() as cur:
                    await cur.execute(
                        "DELETE FROM batchpod_names WHERE name = %s AND owner = %s",
                        (identity, self.name),
                    )

    async def _take_name(self, identity: str) -> bool:
        """Take the name's lock if it is free or its holder's lease has lapsed (the holder
        is then evicted, as when its jobs are taken over)."""
        async with self.store.tx() as cur:
            await cur.execute(
                "INSERT INTO batchpod_names (name, owner) VALUES (%s, %s) "
                "ON CONFLICT (name) DO NOTHING",
                (identity, self.name),
            )
            if cur.rowcount == 1:
                return True
            await cur.execute(
                f"""SELECT n.owner, EXISTS (SELECT 1 FROM batchpod_workers w
                        WHERE w.worker = n.owner AND {ALIVE}) AS alive
                      FROM batchpod_names n WHERE n.name = %s FOR UPDATE""",
                (identity,),
            )
            row = await cur.fetchone()
            if row is None or row["alive"]:
                return False
            await _evict(cur, [row["owner"]])
            await cur.execute(
                "UPDATE batchpod_names SET owner = %s WHERE name = %s", (self.name, identity)
            )
        return True


async def _list_jobs(store: FleetStore, fleet: FleetRow, jobs: Sequence[tuple[str, str]]) -> None:
    """Make the manifest's jobs rows of the fleet's epoch: new ones inserted, moved or
    renamed ones updated, the rest left alone (a worker joining a running fleet locks no row
    that its peers are writing). Rows are written in key order (see ``commit``)."""
    async with store.tx() as cur:
        await cur.execute(
            "SELECT key, position, name, listed_epoch FROM batchpod_jobs WHERE fleet_id = %s",
            (fleet.id,),
        )
        have = {
            row["key"]: (row["position"], row["name"], row["listed_epoch"])
            for row in await cur.fetchall()
        }
    wanted = sorted(
        (key, position, name)
        for position, (key, name) in enumerate(jobs)
        if have.get(key) != (position, name, fleet.epoch)
    )
    if not wanted:
        return
    async with store.tx() as cur:
        await cur.executemany(
            f"""INSERT INTO batchpod_jobs (fleet_id, key, position, name, listed_epoch, state,
                updated_at) VALUES (%s, %s, %s, %s, %s, 'pending', {NOW})
                ON CONFLICT (fleet_id, key) DO UPDATE SET position = EXCLUDED.position,
                name = EXCLUDED.name, listed_epoch = EXCLUDED.listed_epoch""",
            [(fleet.id, key, position, name, fleet.epoch) for key, position, name in wanted],
        )


async def _reserve_inherited(
    cur: psycopg.AsyncCursor[Any], fleet_id: int, estimates: Mapping[str, int]
) -> None:
    """Reservations for the jobs that earlier runs left paid and unfinished and that hold
    none (an uncapped run keeps no reservations): AudioPod's charge, else the estimate."""
    await cur.execute(
        """SELECT j.key, j.cost_cents FROM batchpod_jobs j WHERE j.fleet_id = %s
             AND j.state = ANY(%s) AND NOT EXISTS (SELECT 1 FROM batchpod_reservations r
                 WHERE r.fleet_id = j.fleet_id AND r.key = j.key)
           ORDER BY j.key""",
        (fleet_id, list(_PAID_UNFINISHED)),
    )
    rows = [(row["key"], row["cost_cents"]) for row in await cur.fetchall()]
    values = [
        (fleet_id, key, cost if cost is not None else estimates.get(key, 0)) for key, cost in rows
    ]
    if values:
        await cur.executemany(
            f"""INSERT INTO batchpod_reservations (fleet_id, key, cents, state, held_at)
                VALUES (%s, %s, %s, 'held', {NOW})""",
            values,
        )


def _cents(cents: int | None) -> str:
    return "none" if cents is None else usd(cents)


async def _evict(
    db: psycopg.AsyncCursor[Any] | psycopg.AsyncConnection[Any], workers: list[str]
) -> None:
    """Mark workers whose leases lapsed as evicted (their jobs or name locks are being taken
    over): should one only be frozen, it can renew and write nothing when it wakes. Worker
    names are unique across fleets (host, pid and random characters)."""
    await db.execute(
        f"UPDATE batchpod_workers SET evicted_at = {NOW} "
        "WHERE worker = ANY(%s) AND evicted_at IS NULL",
        (workers,),
    )
