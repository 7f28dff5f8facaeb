"""A fleet: any number of workers on one manifest, sharing one PostgreSQL state and budget.

``--state postgresql://...`` puts a run's state here instead of the SQLite file. The schema
is batchpod's (``_schema``); ``FleetStore`` is a connection and what status and results read;
``FleetWorker`` is one running worker: its claims, leases, fenced writes, budget and locks.
"""

from ._schema import SCHEMA_VERSION
from ._store import FleetRow, FleetStore, HashCache, JobRow, WorkerRow
from ._url import DatabaseUrl, is_database_url
from ._worker import DEFAULT_LEASE_S, FleetWorker, worker_name

__all__ = [
    "DEFAULT_LEASE_S",
    "SCHEMA_VERSION",
    "DatabaseUrl",
    "FleetRow",
    "FleetStore",
    "FleetWorker",
    "HashCache",
    "JobRow",
    "WorkerRow",
    "is_database_url",
    "worker_name",
]
