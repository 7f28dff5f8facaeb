"""The worker pool: submit, poll and download every job, ``concurrency`` jobs at a time.

A job that fails becomes a ``JobResult``, never an exception that tears the pool down; only
run-level conditions stop it: a key AudioPod refuses, a budget or wallet that cannot cover the
next job, or a signal. It talks to AudioPod only through the ``StemApi`` protocol (the
``ApiClient`` meets it), reports progress through ``Reporter``, and knows nothing of argv,
terminals or file formats beyond the stems it writes.

Public API::

    Pool(api, jobs, config, budget=, reporter=, content_keys=,
         records=, journal=, rng=, clock=)
        .run() -> list[JobResult]     every job, in manifest order
        .halt(stop, cancel_in_flight=)  take no new jobs (the session's signal handler)
        .results(), .stop, .in_flight, .peak_in_flight, .worked, .retry_counts, .changes
    StemApi, JournalSink, Reporter    what the pool talks to (protocols)
    intact(record)                    whether a job's recorded stems are all still as written
    Stop, StopReason                  why a run stopped early, and its exit code

Modules, one job each:

    _pool.py      scheduling: the feeder, the workers, the halt, each job's outcome and result
    _crew.py      what every step shares: API, config, state sink, retries and their counts
    _live.py      one job's live record: restored from, saved as, read as a result
    _submit.py    the submit path: reserve, intent, send, reconcile, adopt; like-named locks
    _follow.py    after the submit: wait for the end, settle the charge, hand the stems on
    _stems.py     the stems path: downloads, link refresh, safe file names
    _wallet.py    the wallet read again, and completed jobs settled at their real charge
    _resume.py    what earlier runs left: their spend on unfinished jobs, their unknowns
    _outcomes.py  Stop, StopReason, and how steps end early (Halt, JobFailed, Unresolved)
    _ports.py     the protocols above
"""

from __future__ import annotations

from ._outcomes import Stop, StopReason
from ._pool import Pool
from ._ports import JournalSink, Reporter, StemApi
from ._stems import intact

__all__ = ["JournalSink", "Pool", "Reporter", "StemApi", "Stop", "StopReason", "intact"]
