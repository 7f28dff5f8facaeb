"""A fleet: any number of workers on one manifest, sharing one PostgreSQL state and budget.

``--state postgresql://...`` puts a run's state here instead of the SQLite file. The schema
is batchpod's (``_schema``); ``FleetStore`` is a connection and what status and results read;
``FleetWorker`` is one running worker: its claims, leases, fenced writes, budget and locks.

The driver (psycopg) is imported only when one of those is first used, so that a run on an
SQLite state pays nothing for it (about 0.2 s of start-up and 10 MiB).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._schema import DEFAULT_LEASE_S, SCHEMA_VERSION
from ._url import DatabaseUrl, is_database_url

if TYPE_CHECKING:
    from ._store import FleetRow, FleetStore, HashCache, JobRow, WorkerRow
    from ._worker import FleetWorker, worker_name

_LAZY = {
    "FleetRow": "._store",
    "FleetStore": "._store",
    "HashCache": "._store",
    "JobRow": "._store",
    "WorkerRow": "._store",
    "FleetWorker": "._worker",
    "worker_name": "._worker",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


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
