"""The fleet's tables in PostgreSQL, created and versioned by batchpod.

``batchpod_schema`` holds one row: the application and the schema version. A database whose
row names another version is refused (exit 2), untouched: a newer batchpod's state must not
be read by an older one, nor the reverse. One database serves many manifests: a *fleet* is
the state of one manifest, known by its identity (the manifest's file name), and every
other table is keyed by the fleet.

- ``batchpod_fleets``: per manifest, its *epoch* (a new one begins when a worker starts and
  no worker of the manifest is alive: the next night's run), a fleet-wide stop (the budget
  refused a job: no worker takes another), and the newest wallet read.
- ``batchpod_workers``: each worker's last sign of life (``seen_at``, from the database's
  clock) and its lease; a worker whose last sign is older than its lease is gone, and its
  jobs may be taken over; once one is, the worker is ``evicted_at``: it can renew nothing
  more, and stops if it wakes up.
- ``batchpod_jobs``: the job state machine of ``batchpod.journal``, plus who holds the job
  (``owner``), the epoch it was last settled in, and how it ended for the results.
- ``batchpod_reservations``: the fleet's budget: each job's reserved, held or charged cents.
- ``batchpod_names``: the song names whose submits are under way, and which worker holds
  each (like-named songs are submitted one at a time across the database).
- ``batchpod_file_hashes``: local files' hashes by host and path, size and mtime.
"""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 1
#: The default lease (``batchpod_workers.lease_s``): how long a silent worker's jobs stay its own.
DEFAULT_LEASE_S: Final = 60.0
APPLICATION: Final = "batchpod-fleet"

DDL: Final = """
CREATE TABLE IF NOT EXISTS batchpod_fleets (
    id BIGSERIAL PRIMARY KEY,
    identity TEXT NOT NULL UNIQUE,
    manifest TEXT NOT NULL,
    manifest_sha256 TEXT,
    epoch INTEGER NOT NULL DEFAULT 0,
    epoch_started_at DOUBLE PRECISION,
    stop_reason TEXT,
    stop_message TEXT,
    balance_cents BIGINT,
    balance_read_at DOUBLE PRECISION,
    max_spend_cents BIGINT,
    keep_balance_cents BIGINT,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS batchpod_workers (
    fleet_id BIGINT NOT NULL REFERENCES batchpod_fleets (id),
    worker TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    lease_s DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    seen_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    exit_code INTEGER,
    evicted_at DOUBLE PRECISION,
    PRIMARY KEY (fleet_id, worker)
);
CREATE TABLE IF NOT EXISTS batchpod_jobs (
    fleet_id BIGINT NOT NULL REFERENCES batchpod_fleets (id),
    key TEXT NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    listed_epoch INTEGER NOT NULL,
    state TEXT NOT NULL,
    remote_id TEXT,
    intent_at DOUBLE PRECISION,
    submitted_at DOUBLE PRECISION,
    completed_at DOUBLE PRECISION,
    attempts INTEGER NOT NULL DEFAULT 0,
    cost_cents INTEGER,
    files TEXT,
    quality_scores TEXT,
    error TEXT,
    owner TEXT,
    worked_by TEXT,
    settled_epoch INTEGER,
    status TEXT,
    reason TEXT,
    estimated_cents INTEGER,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (fleet_id, key)
);
CREATE INDEX IF NOT EXISTS batchpod_jobs_order ON batchpod_jobs (fleet_id, position);
CREATE INDEX IF NOT EXISTS batchpod_jobs_remote ON batchpod_jobs (remote_id)
    WHERE remote_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS batchpod_reservations (
    fleet_id BIGINT NOT NULL REFERENCES batchpod_fleets (id),
    key TEXT NOT NULL,
    cents INTEGER NOT NULL,
    state TEXT NOT NULL,
    held_at DOUBLE PRECISION,
    PRIMARY KEY (fleet_id, key)
);
CREATE TABLE IF NOT EXISTS batchpod_names (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batchpod_file_hashes (
    host TEXT NOT NULL,
    path TEXT NOT NULL,
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (host, path)
);
"""

VERSION_TABLE: Final = """
CREATE TABLE IF NOT EXISTS batchpod_schema (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    application TEXT NOT NULL,
    version INTEGER NOT NULL
)
"""
