"""Per-app state shared by the routes: the client, settings, tokens, limiter and counters."""

import math
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Final

import attrs
from litestar.connection import ASGIConnection

from monoq.api.api_metrics import ApiMetrics
from monoq.api.tokens import TokenTable
from monoq.client import Client
from monoq.config import ApiConfig
from monoq.core.models import utcnow
from monoq.registry import Registry

STATE_KEY: Final = "monoq"
WINDOWS: Final = (60, 300, 900)  # seconds: the 1/5/15-minute rates of /stats


class RateLimiter:
    """A token bucket per client key: ``per_minute`` requests, refilled continuously.

    ``check`` answers None when the request may go ahead, else the seconds until it may.
    Memory is bounded: idle, full buckets are dropped when the table grows large.
    """

    MAX_KEYS: Final = 10_000

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated)

    @property
    def enabled(self) -> bool:
        """False when the limit is 0 (off)."""
        return self.capacity > 0

    def check(self, key: str) -> float | None:
        """Take one token for ``key``; None if allowed, else seconds to wait."""
        if not self.enabled:
            return None
        now = self.clock()
        tokens, updated = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - updated) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self.MAX_KEYS:
            self._prune(now)
        return None

    def _prune(self, now: float) -> None:
        full = [
            k for k, (t, u) in self._buckets.items() if t + (now - u) * self.rate >= self.capacity
        ]
        for key in full:
            del self._buckets[key]


class EnqueueCounter:
    """Jobs this process created through the API: a total and per-second buckets for 15 min."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.total = 0
        self._seconds: dict[int, int] = {}
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        """Count ``count`` created jobs now."""
        if count <= 0:
            return
        second = math.floor(self.clock())
        with self._lock:
            self.total += count
            self._seconds[second] = self._seconds.get(second, 0) + count
            if len(self._seconds) > WINDOWS[-1] + 60:
                horizon = second - WINDOWS[-1]
                for old in [s for s in self._seconds if s <= horizon]:
                    del self._seconds[old]

    def recent(self) -> dict[str, int]:
        """Jobs created in the last 1, 5 and 15 minutes: ``{"1m": n, "5m": n, "15m": n}``."""
        now = math.floor(self.clock())
        with self._lock:
            items = list(self._seconds.items())
        return {
            f"{window // 60}m": sum(n for s, n in items if now - s < window) for window in WINDOWS
        }


@attrs.define
class ApiState:
    """Everything a route needs besides the request; one per app."""

    client: Client
    config: ApiConfig
    registry: Registry | None
    tokens: TokenTable
    limiter: RateLimiter
    metrics: ApiMetrics
    enqueued: EnqueueCounter = attrs.field(factory=EnqueueCounter)
    # the same per queue, for the /stats of a queue-limited token
    enqueued_by_queue: dict[str, EnqueueCounter] = attrs.field(factory=dict)
    started_at: datetime = attrs.field(factory=utcnow)
    started_monotonic: float = attrs.field(factory=time.monotonic)
    # path template -> its methods, as an ``Allow`` header (filled by create_app)
    allowed_methods: dict[str, str] = attrs.field(factory=dict)


def enqueued_in(api: ApiState, queues: Iterable[str] | None) -> dict[str, int]:
    """``{"total": n, "1m": n, "5m": n, "15m": n}``: jobs this process created, in every queue
    (``queues`` None) or in ``queues``."""
    if queues is None:
        return {"total": api.enqueued.total, **api.enqueued.recent()}
    out = {"total": 0, **{f"{window // 60}m": 0 for window in WINDOWS}}
    for queue in queues:
        counter = api.enqueued_by_queue.get(queue)
        if counter is not None:
            out["total"] += counter.total
            for key, n in counter.recent().items():
                out[key] += n
    return out


def api_state(connection: ASGIConnection[Any, Any, Any, Any]) -> ApiState:
    """The app's ApiState."""
    state = connection.app.state[STATE_KEY]
    assert isinstance(state, ApiState)  # noqa: S101 - create_app puts it there
    return state
