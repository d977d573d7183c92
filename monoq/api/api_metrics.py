"""The api role's Prometheus families, in a per-app ``CollectorRegistry``.

Each app gets its own registry (or the one it is handed), never prometheus-client's global one,
so tests can build many apps. The worker's and scheduler's families (``monoq.metrics``) are
registered in it too: their objects are module-level, so in an all-in-one process ``/metrics``
shows what the worker counted, and in an api-only process they are present but empty.

Families:

- ``monoq_api_requests_total{method,route,status}``: every HTTP answer, by route template
  (``/api/v1/jobs/{job_id:str}``; ``unmatched`` for paths no route serves).
- ``monoq_jobs_enqueued_total{queue,handler}``: jobs created through this API process
  (idempotent replays are not counted).
- ``monoq_queue_jobs{queue,state}`` and ``monoq_queue_paused{queue}``: read from the backend
  when ``/metrics`` is scraped (one ``stats`` call per scrape).
- ``monoq_backend_up``: 1 if that read succeeded, else 0 (and the queue families are left out).
- ``monoq_queue_memory_bytes{queue}``, ``monoq_backend_memory_used_bytes`` and
  ``monoq_backend_memory_max_bytes`` (0: no limit): on a backend that measures its memory
  (``MemoryUse``: Redis), its estimate per queue and its ``used_memory`` and ``maxmemory``,
  read at scrape time (a report is reused for a few seconds).

A queue-limited token's scrape leaves out every sample labelled with another queue.
"""

from collections.abc import Iterator, Sequence
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import monoq.metrics as worker_metrics
from monoq.core.backend import MemoryReport
from monoq.core.models import JobState, QueueStats

_MAX_CHILDREN: Final = 10_000  # cached label children (the families keep every child anyway)


class QueueDepthCollector(Collector):
    """Yields the queue families from the latest snapshot taken by the /metrics route."""

    def __init__(self) -> None:
        self.snapshot: Sequence[QueueStats] | None = None

    def collect(self) -> Iterator[Metric]:
        """The snapshot as gauges (nothing for the queues when the backend was down)."""
        up = GaugeMetricFamily("monoq_backend_up", "1 if the job store answered the last scrape.")
        up.add_metric([], 0.0 if self.snapshot is None else 1.0)
        yield up
        if self.snapshot is None:
            return
        depth = GaugeMetricFamily(
            "monoq_queue_jobs", "Jobs per queue and state.", labels=["queue", "state"]
        )
        paused = GaugeMetricFamily(
            "monoq_queue_paused", "1 if the queue is paused.", labels=["queue"]
        )
        for stats in self.snapshot:
            for state in JobState:
                depth.add_metric([stats.queue, str(state)], float(stats.counts.get(state, 0)))
            paused.add_metric([stats.queue], 1.0 if stats.paused else 0.0)
        yield depth
        yield paused


class MemoryCollector(Collector):
    """Yields the memory families from the latest report the /metrics route got (nothing on
    a backend that does not measure its memory, or when the read failed)."""

    def __init__(self) -> None:
        self.report: MemoryReport | None = None

    def collect(self) -> Iterator[Metric]:
        """The report as gauges."""
        report = self.report
        if report is None:
            return
        used = GaugeMetricFamily("monoq_backend_memory_used_bytes",
                                 "Memory the job store uses (Redis used_memory).")
        used.add_metric([], float(report.used_bytes))
        limit = GaugeMetricFamily("monoq_backend_memory_max_bytes",
                                  "The job store's memory limit (Redis maxmemory); 0: none.")
        limit.add_metric([], float(report.max_bytes))
        queues = GaugeMetricFamily(
            "monoq_queue_memory_bytes",
            "Estimated memory of each queue's jobs and indexes in the job store (sampled).",
            labels=["queue"])
        for queue, size in sorted(report.queues.items()):
            queues.add_metric([queue], float(size))
        yield used
        yield limit
        yield queues


class ApiMetrics:
    """The api's metric objects, registered in ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "monoq_api_requests",
            "HTTP answers by method, route template and status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.enqueued = Counter(
            "monoq_jobs_enqueued",
            "Jobs created through the API (idempotent replays are not counted).",
            ("queue", "handler"),
            registry=self.registry,
        )
        # label children by label values: ``labels()`` validates and locks on every call
        self._request_children: dict[tuple[str, str, int], Any] = {}
        self._enqueued_children: dict[tuple[str, str], Any] = {}
        self.queues = QueueDepthCollector()
        self.registry.register(self.queues)
        self.memory = MemoryCollector()
        self.registry.register(self.memory)
        # The worker's and scheduler's families: live in an all-in-one process, empty otherwise.
        worker_metrics.register(self.registry)

    def count_request(self, method: str, route: str, status: int) -> None:
        """One HTTP answer for ``monoq_api_requests_total``."""
        key = (method, route, status)
        child = self._request_children.get(key)
        if child is None:
            if len(self._request_children) >= _MAX_CHILDREN:
                self._request_children.clear()
            child = self._request_children[key] = self.requests.labels(method, route, str(status))
        child.inc()

    def count_enqueued(self, labels: tuple[str, str], count: int = 1) -> None:
        """``count`` jobs created on (queue, handler) for ``monoq_jobs_enqueued_total``."""
        child = self._enqueued_children.get(labels)
        if child is None:
            if len(self._enqueued_children) >= _MAX_CHILDREN:
                self._enqueued_children.clear()
            child = self._enqueued_children[labels] = self.enqueued.labels(*labels)
        child.inc(count)

    def render(
        self, snapshot: Sequence[QueueStats] | None, allowed: frozenset[str] | None = None,
        memory: MemoryReport | None = None,
    ) -> bytes:
        """The text exposition format, with queue depths from ``snapshot`` and the memory
        families from ``memory``; with ``allowed`` (a queue-limited token), samples labelled
        with another queue are left out."""
        self.queues.snapshot = snapshot
        self.memory.report = memory
        if allowed is None:
            return generate_latest(self.registry)
        return generate_latest(QueueFilter(self.registry, allowed))


class QueueFilter(Collector):
    """The families of ``source`` without the samples whose ``queue`` label is not allowed."""

    def __init__(self, source: CollectorRegistry, allowed: frozenset[str]) -> None:
        self.source = source
        self.allowed = allowed

    def collect(self) -> Iterator[Metric]:
        """Every family, filtered."""
        for family in self.source.collect():
            kept = Metric(family.name, family.documentation, family.type, family.unit)
            kept.samples = [
                sample for sample in family.samples
                if "queue" not in sample.labels or sample.labels["queue"] in self.allowed
            ]
            yield kept
