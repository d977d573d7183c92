"""Prometheus metrics of the worker and scheduler roles.

The metric objects are module-level and registered in **no** registry when created, so importing
this module has no side effect and tests can build as many registries as they like. The api role's
app calls ``register(registry)`` on its own per-app registry, so ``/metrics`` shows these
families next to the api's (requests, enqueues, queue depth); in an all-in-one process they carry
what the worker counted.

The helpers below are what the worker and scheduler call; they are cheap (a dict lookup and a
lock-free-ish increment in prometheus-client) and never raise.

Families (all prefixed ``monoq_``):

- ``jobs_started_total{queue,handler}``: attempts claimed by a worker.
- ``jobs_completed_total{queue,handler}``: attempts that returned.
- ``jobs_failed_total{queue,handler}``: attempts that raised or timed out (retried or not).
- ``jobs_dead_total{queue,handler}``: jobs dead-lettered.
- ``job_duration_seconds{queue,handler}``: histogram of attempt run times, whatever the outcome.
- ``lease_reclaims_total{queue}``: expired leases the scheduler reaped.
- ``stale_acks_total``: finishes refused because the lease token was stale.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = [
    "JOBS_COMPLETED",
    "JOBS_DEAD",
    "JOBS_FAILED",
    "JOBS_STARTED",
    "JOB_DURATION",
    "LEASE_RECLAIMS",
    "STALE_ACKS",
    "job_completed",
    "job_dead",
    "job_failed",
    "job_started",
    "lease_reclaimed",
    "register",
    "stale_ack",
]

_JOB_LABELS: Final = ("queue", "handler")

JOBS_STARTED: Final = Counter(
    "monoq_jobs_started", "Attempts claimed by a worker.", _JOB_LABELS, registry=None
)
JOBS_COMPLETED: Final = Counter(
    "monoq_jobs_completed", "Attempts that completed.", _JOB_LABELS, registry=None
)
JOBS_FAILED: Final = Counter(
    "monoq_jobs_failed",
    "Attempts that failed (raised or timed out), whether or not they will be retried.",
    _JOB_LABELS,
    registry=None,
)
JOBS_DEAD: Final = Counter(
    "monoq_jobs_dead", "Jobs moved to the dead-letter queue.", _JOB_LABELS, registry=None
)
JOB_DURATION: Final = Histogram(
    "monoq_job_duration_seconds",
    "Run time of attempts, whatever their outcome.",
    _JOB_LABELS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
    registry=None,
)
LEASE_RECLAIMS: Final = Counter(
    "monoq_lease_reclaims",
    "Expired leases reaped by the scheduler (each counts as a failed attempt).",
    ("queue",),
    registry=None,
)
STALE_ACKS: Final = Counter(
    "monoq_stale_acks",
    "Finishes refused because the worker's lease token was stale.",
    registry=None,
)

_ALL: Final = (
    JOBS_STARTED,
    JOBS_COMPLETED,
    JOBS_FAILED,
    JOBS_DEAD,
    JOB_DURATION,
    LEASE_RECLAIMS,
    STALE_ACKS,
)


def register(registry: CollectorRegistry) -> None:
    """Add every worker/scheduler family to ``registry``.

    A collector may live in several registries; registering twice into the same one is a no-op.
    """
    for collector in _ALL:
        try:
            registry.register(collector)
        except ValueError:  # "Duplicated timeseries": already registered here
            continue


@functools.lru_cache(maxsize=4096)
def _children(queue: str, handler: str) -> tuple[Any, Any, Any, Any, Any]:
    """The labelled children of one (queue, handler), looked up once: ``labels()`` costs
    microseconds per call, which adds up at thousands of jobs a second."""
    return (
        JOBS_STARTED.labels(queue, handler),
        JOBS_COMPLETED.labels(queue, handler),
        JOBS_FAILED.labels(queue, handler),
        JOBS_DEAD.labels(queue, handler),
        JOB_DURATION.labels(queue, handler),
    )


def job_started(queue: str, handler: str) -> None:
    """A worker claimed an attempt of a ``handler`` job from ``queue``."""
    _children(queue, handler)[0].inc()


def job_completed(queue: str, handler: str, seconds: float) -> None:
    """An attempt returned after ``seconds``."""
    children = _children(queue, handler)
    children[1].inc()
    children[4].observe(seconds)


def job_failed(queue: str, handler: str, seconds: float) -> None:
    """An attempt raised or timed out after ``seconds`` (retried or not)."""
    children = _children(queue, handler)
    children[2].inc()
    children[4].observe(seconds)


def job_dead(queue: str, handler: str) -> None:
    """A job was dead-lettered."""
    _children(queue, handler)[3].inc()


def lease_reclaimed(queue: str, count: int = 1) -> None:
    """The scheduler reaped ``count`` expired leases of ``queue``."""
    LEASE_RECLAIMS.labels(queue).inc(count)


def stale_ack(count: int = 1) -> None:
    """``count`` finishes were refused because their lease token was stale."""
    STALE_ACKS.inc(count)
