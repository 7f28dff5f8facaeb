"""A run's Prometheus metrics: a textfile for node_exporter, pushes to a Pushgateway.

Owns the metrics' names, help texts and labels, the file's atomic writing and the pushes.
It knows neither the pool nor the API: the session hands it ``RunFacts``, a snapshot of plain
numbers, every ``interval`` while the run goes on and once at its end. Nothing here may stop
a run: a file that cannot be written or a gateway that does not answer is logged once (the
first time) and the run goes on; the caller never sees an exception from ``write`` or
``push``.

``batchpod_last_success_timestamp_seconds`` is what an alert watches ("no successful run for
a day"): a run that ends with exit code 0 sets it to its end; any other run keeps what the
file said before it (read at the start), and its pushes leave the gateway's value alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client import (
    CollectorRegistry,
    generate_latest,
    push_to_gateway,
    pushadd_to_gateway,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families

from batchpod.results import write_atomic

log = logging.getLogger("batchpod")

#: The Pushgateway's ``job`` label of every push.
PUSH_JOB = "batchpod"
#: Seconds between the metrics file's rewrites while a run goes on.
DEFAULT_INTERVAL_S = 30.0
#: The histogram's buckets for the time a job spent at AudioPod, submit to completion.
WAIT_BUCKETS_S = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
#: How long a push may take before it is given up (the run's end waits for it).
PUSH_TIMEOUT_S = 10.0
LAST_SUCCESS = "batchpod_last_success_timestamp_seconds"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFacts:
    """What a run has done so far (``running``) or did: plain numbers, for the metrics."""

    started_at: float  # Unix seconds
    now: float
    running: bool
    jobs: Mapping[str, int]  # by status: finished jobs while running, every job at the end
    in_flight: int = 0
    spent_cents: int = 0
    estimated_cents: int = 0
    balance_before_cents: int | None = None
    balance_after_cents: int | None = None
    requests: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (endpoint, code)
    retries: Mapping[str, int] = field(default_factory=dict)  # by cause
    stems_written: int = 0
    bytes_written: int = 0
    waits_s: Sequence[float] = ()  # each job's submit-to-completion time at AudioPod
    exit_code: int | None = None  # at the end


class RunMetrics:
    """The metrics of one run: ``labels`` go on every sample of the file (a host's several
    runs, shards or workers each have their own series); pushes carry them as the
    Pushgateway's grouping key instead, with ``job="batchpod"``."""

    def __init__(self, *, labels: Mapping[str, str], last_success: float | None = None) -> None:
        self.labels = dict(labels)
        self.last_success = last_success
        self._warned: set[str] = set()

    def families(self, facts: RunFacts, *, labelled: bool = True) -> list[Metric]:
        """Every metric of ``facts``, as prometheus_client metric families."""
        names = list(self.labels) if labelled else []
        values = list(self.labels.values()) if labelled else []

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=names)
            family.add_metric(values, value)
            return family

        def by(
            kind: type[GaugeMetricFamily] | type[CounterMetricFamily],
            name: str,
            doc: str,
            label: Sequence[str],
            rows: Iterable[tuple[Sequence[str], float]],
        ) -> Metric:
            family = kind(name, doc, labels=[*names, *label])
            for keys, value in rows:
                family.add_metric([*values, *keys], value)
            return family

        out: list[Metric] = [
            gauge(
                "batchpod_running", "1 while the run goes on, 0 once it has ended.", facts.running
            ),
            gauge(
                "batchpod_run_start_timestamp_seconds",
                "When the run started (Unix seconds).",
                facts.started_at,
            ),
            gauge(
                "batchpod_run_duration_seconds",
                "How long the run has gone on, or went on.",
                max(0.0, facts.now - facts.started_at),
            ),
            by(
                GaugeMetricFamily,
                "batchpod_jobs",
                "Jobs by status: those finished while the run goes on; every job's final "
                "status at its end.",
                ["status"],
                (([status], n) for status, n in sorted(facts.jobs.items())),
            ),
            gauge("batchpod_jobs_in_flight", "Jobs being worked on now.", facts.in_flight),
            gauge(
                "batchpod_spent_cents",
                "AudioPod's charges for the run's jobs, read from its usage log (cents).",
                facts.spent_cents,
            ),
            gauge(
                "batchpod_estimated_cents",
                "The worst-case estimate of the jobs the run came to (cents).",
                facts.estimated_cents,
            ),
        ]
        wallet = [
            ([when], cents)
            for when, cents in (
                ("before", facts.balance_before_cents),
                ("after", facts.balance_after_cents),
            )
            if cents is not None
        ]
        out += [
            by(
                GaugeMetricFamily,
                "batchpod_wallet_balance_cents",
                "The wallet's balance before the run and after it (cents).",
                ["when"],
                wallet,
            ),
            by(
                CounterMetricFamily,
                "batchpod_api_requests",
                "API requests sent (stem downloads apart), by endpoint and HTTP status "
                "('error': no answer).",
                ["endpoint", "code"],
                (([e, c], n) for (e, c), n in sorted(facts.requests.items())),
            ),
            by(
                CounterMetricFamily,
                "batchpod_retries",
                "Requests sent again, by cause.",
                ["cause"],
                (([cause], n) for cause, n in sorted(facts.retries.items())),
            ),
            by(
                CounterMetricFamily,
                "batchpod_stems_written",
                "Stems the run stored.",
                [],
                [([], facts.stems_written)],
            ),
            by(
                CounterMetricFamily,
                "batchpod_stem_bytes_written",
                "Bytes of the stems the run stored, as stored.",
                [],
                [([], facts.bytes_written)],
            ),
            _histogram(
                "batchpod_job_wait_seconds",
                "How long each job was at AudioPod, from its submit to its completion.",
                names,
                values,
                facts.waits_s,
            ),
        ]
        if facts.exit_code is not None:
            out.append(gauge("batchpod_exit_code", "The run's exit code.", facts.exit_code))
        success = self.success_at(facts)
        if success is not None:
            out.append(
                gauge(
                    LAST_SUCCESS,
                    "When a run last ended with exit code 0 (Unix seconds).",
                    success,
                )
            )
        return out

    def success_at(self, facts: RunFacts) -> float | None:
        """The last success as of ``facts``: their end if the run ended with 0."""
        return facts.now if facts.exit_code == 0 and not facts.running else self.last_success

    def text(self, facts: RunFacts) -> bytes:
        """The metrics in Prometheus' text format (what the file holds)."""
        return generate_latest(_registry(self.families(facts)))

    def write(self, path: Path, facts: RunFacts) -> bool:
        """Replace the metrics file ``path`` (a temporary file renamed over it, so that
        node_exporter never reads half of one); False, logged the first time, if it could
        not be written. Blocking."""
        try:
            write_atomic(path, self.text(facts), mode=0o644)  # node_exporter reads it
        except OSError as exc:
            self._warn_once(
                "file", f"could not write the metrics file {path}: {exc.strerror or exc}"
            )
            return False
        return True

    def push(self, url: str, facts: RunFacts) -> bool:
        """Push to the Pushgateway at ``url`` under ``job="batchpod"`` and the labels. A
        successful end replaces the group (PUT); the start and any other end replace only
        the metrics they carry (POST), which leaves the gateway's last success as it was.
        False, logged the first time, if the push failed. Blocking."""
        replace = facts.exit_code == 0 and not facts.running
        families = self.families(facts, labelled=False)
        if not replace:
            families = [f for f in families if f.name != LAST_SUCCESS]
        send = push_to_gateway if replace else pushadd_to_gateway
        try:
            send(
                url,
                job=PUSH_JOB,
                registry=_registry(families),
                grouping_key=self.labels,
                timeout=PUSH_TIMEOUT_S,
            )
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
            host = urlsplit(url).hostname or url
            self._warn_once(
                "push", f"could not push the metrics to the Pushgateway at {host}: {exc}"
            )
            return False
        return True

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning("%s (the run goes on; not said again)", message)


def read_last_success(path: Path, labels: Mapping[str, str]) -> float | None:
    """The last success that metrics file ``path`` records for ``labels``; None when there
    is no such file, or it holds no such sample (or is not a metrics file)."""
    try:
        text = path.read_text(encoding="utf-8")
        families = list(text_string_to_metric_families(text))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    wanted = dict(labels)
    for family in families:
        for sample in family.samples:
            if sample.name == LAST_SUCCESS and sample.labels == wanted:
                value = float(sample.value)
                return value if math.isfinite(value) else None
    return None


def _histogram(
    name: str, doc: str, names: list[str], values: list[str], observed: Iterable[float]
) -> HistogramMetricFamily:
    counts = [0] * (len(WAIT_BUCKETS_S) + 1)
    total = 0.0
    for seconds in observed:
        total += seconds
        for position, bound in enumerate(WAIT_BUCKETS_S):
            if seconds <= bound:
                counts[position] += 1
                break
        else:
            counts[-1] += 1
    cumulative, buckets = 0, []
    for bound, count in zip((*WAIT_BUCKETS_S, math.inf), counts, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == math.inf else f"{bound:g}", cumulative))
    family = HistogramMetricFamily(name, doc, labels=names)
    family.add_metric(values, buckets, sum_value=total)
    return family


class _Families:
    """A collector of fixed metric families."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _registry(families: list[Metric]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return registry
