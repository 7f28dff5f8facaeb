"""Deleting finished jobs at AudioPod after the fact: ``batchpod cleanup``.

A run with ``--delete-remote`` deletes each job at AudioPod as soon as its stems are stored
and that is committed. ``cleanup`` does the same later, for the jobs of one manifest that
earlier runs finished: only jobs whose row in the manifest's own state is ``downloaded``
(never a job of another manifest, and never one AudioPod may still be working on), whose
stems are all still in the output folder as written (checked as a re-run checks them), and,
with ``older_than_s``, that were separated that long ago. Each deleted job is recorded
``cleaned`` at once, so an interrupted cleanup is finished by the next one (a job already
gone counts as deleted). Without ``delete`` it only lists what it would delete. Neither knows
argv or terminals.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import anyio

from batchpod.errors import ApiError, AuthenticationError, JobNotFound
from batchpod.flow import with_retries
from batchpod.journal import JobRecord, JobState, Journal
from batchpod.models import Job
from batchpod.retry import RetryPolicy
from batchpod.runner import intact
from batchpod.storage import Shelf

__all__ = ["Candidate", "Cleanup", "RemoteDeleter", "clean_up"]


class RemoteDeleter(Protocol):
    async def delete_job(self, job_id: str) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """A finished job whose AudioPod job may be deleted."""

    job: str  # its name in the manifest
    remote_id: str
    completed_at: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Cleanup:
    """What ``clean_up`` found, and did."""

    candidates: tuple[Candidate, ...]  # deleted (``delete``), or to be deleted
    failed: tuple[tuple[Candidate, str], ...]  # a delete that did not go through, and why
    too_recent: int  # finished jobs separated less than ``older_than_s`` ago
    not_stored: tuple[str, ...]  # downloaded jobs whose stems are no longer all there: kept
    cleaned_before: int  # jobs already deleted at AudioPod by an earlier run or cleanup


async def clean_up(
    api: RemoteDeleter,
    jobs: Sequence[Job],
    keys: Sequence[str],
    journal: Journal,
    *,
    older_than_s: float,
    now: float,
    delete: bool,
    shelf: Shelf,
    policy: RetryPolicy | None = None,
) -> Cleanup:
    """Find (and with ``delete``, delete) the AudioPod jobs of ``jobs`` (content ``keys``)
    that are done here (see the module docstring)."""
    records = journal.records()
    found: list[tuple[Candidate, JobRecord]] = []
    too_recent = cleaned = 0
    not_stored: list[str] = []
    seen: set[str] = set()
    for job, key in zip(jobs, keys, strict=True):
        record = records.get(key)
        if record is None or key in seen:
            continue
        seen.add(key)
        if record.state is JobState.CLEANED:
            cleaned += 1
            continue
        if record.state is not JobState.DOWNLOADED or record.remote_id is None:
            continue
        finished = record.completed_at
        if older_than_s > 0 and (finished is None or now - finished < older_than_s):
            too_recent += 1
            continue
        if not await anyio.to_thread.run_sync(intact, record, shelf):
            not_stored.append(job.name)
            continue
        found.append(
            (Candidate(job=job.name, remote_id=record.remote_id, completed_at=finished), record)
        )
    failed: list[tuple[Candidate, str]] = []
    done: list[Candidate] = []
    rng = random.Random()
    for candidate, record in found:
        if not delete:
            done.append(candidate)
            continue
        try:
            await with_retries(
                functools.partial(api.delete_job, candidate.remote_id),
                policy=policy or RetryPolicy(),
                rng=rng,
            )
        except JobNotFound:
            pass  # gone already (an interrupted cleanup's delete reached it): deleted
        except AuthenticationError:
            raise
        except ApiError as exc:
            failed.append((candidate, str(exc)))
            continue
        journal.put(replace(record, state=JobState.CLEANED))
        done.append(candidate)
    return Cleanup(
        candidates=tuple(done),
        failed=tuple(failed),
        too_recent=too_recent,
        not_stored=tuple(not_stored),
        cleaned_before=cleaned,
    )
