"""How RedisBackend stores a job, a lease, an attempt and a schedule in Redis hashes, and reads
them back: the field names and encodings that the Lua scripts share (``_common.lua``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec
from redis.typing import EncodableT, FieldT

from monoq.core.models import (
    EPOCH,
    Attempt,
    AttemptOutcome,
    Job,
    JobState,
    Lease,
    LeaseStatus,
    MisfirePolicy,
    OverlapPolicy,
    Schedule,
    from_ms,
    to_ms,
)

_EPOCH: Final = EPOCH
_US: Final = timedelta(microseconds=1)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()



_LEASE_STATUS: Final = {
    b"h": LeaseStatus.HELD,
    b"c": LeaseStatus.CANCEL_REQUESTED,
    b"s": LeaseStatus.STACK_REQUESTED,
    b"l": LeaseStatus.LOST,
}


_ms = to_ms
_STATES: Final = {state.value: state for state in JobState}  # faster than JobState(value)


def _dt(ms: bytes | str | float) -> datetime:
    return from_ms(int(ms))


def _us(dt: datetime) -> int:
    """Exact epoch microseconds (schedule times round-trip whole)."""
    return (dt - _EPOCH) // _US


def _dt_us(us: bytes | str) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


def _encode_schedule(s: Schedule) -> dict[FieldT, EncodableT]:
    """A schedule's hash (field names in _keys.SCHEDULE_FIELDS); None fields are left out."""
    fields: dict[FieldT, EncodableT] = {
        "id": s.id,
        "h": s.handler,
        "tz": s.timezone,
        "p": s.payload_json,
        "q": s.queue,
        "pr": s.priority,
        "en": "1" if s.enabled else "0",
        "ov": str(s.overlap),
        "mf": str(s.misfire),
        "or": s.origin,
    }
    if s.cron is not None:
        fields["c"] = s.cron
    if s.every is not None:
        fields["ev"] = repr(float(s.every))
    if s.max_retries is not None:
        fields["mr"] = s.max_retries
    if s.timeout is not None:
        fields["to"] = repr(float(s.timeout))
    for name, value in (("ca", s.created_at), ("ua", s.updated_at), ("lf", s.last_fire_at)):
        if value is not None:
            fields[name] = _us(value)
    return fields


def _decode_schedule(h: Mapping[Any, Any]) -> Schedule:
    f: dict[str, bytes] = {_text(k): _bytes(v) for k, v in h.items()}

    def text(name: str) -> str | None:
        value = f.get(name)
        return None if value is None else value.decode()

    def when(name: str) -> datetime | None:
        value = f.get(name)
        return None if value is None else _dt_us(value)

    every, max_retries, timeout = text("ev"), text("mr"), text("to")
    return Schedule(
        id=f["id"].decode(),
        handler=f["h"].decode(),
        cron=text("c"),
        every=None if every is None else float(every),
        timezone=f["tz"].decode(),
        payload_json=f["p"],
        queue=f["q"].decode(),
        priority=int(f["pr"]),
        max_retries=None if max_retries is None else int(max_retries),
        timeout=None if timeout is None else float(timeout),
        enabled=f["en"] == b"1",
        overlap=OverlapPolicy(f["ov"].decode()),
        misfire=MisfirePolicy(f["mf"].decode()),
        origin=f["or"].decode(),
        created_at=when("ca"),
        updated_at=when("ua"),
        last_fire_at=when("lf"),
    )


def _unpack(reply: Sequence[Any]) -> dict[str, Any]:
    """A job as the scripts answer it (``job_reply`` in _common.lua): the JSON of every field
    but payload and result, the payload, the result or None. Three reply elements instead of
    HGETALL's ~40 keep redis-py's pure-Python reply parser off the hot path."""
    fields: dict[str, Any] = msgspec.json.decode(reply[0])
    fields["p"] = reply[1]
    fields["r"] = reply[2]
    return fields


def _from_hash(h: Mapping[bytes, bytes]) -> dict[str, Any]:
    """A job's HGETALL, in the form ``_unpack`` gives."""
    fields: dict[str, Any] = {k.decode(): v.decode() for k, v in h.items() if k not in (b"p", b"r")}
    fields["p"] = h[b"p"]
    fields["r"] = h.get(b"r")
    return fields


def _decode_job(f: Mapping[str, Any]) -> Job:
    """A Job from its fields (names in _keys.FIELDS)."""
    started = f.get("sa")
    finished = f.get("fa")
    lease = f.get("le")
    progress = f.get("pg")
    stack_at = f.get("sx")
    return Job(
        id=f["id"],
        queue=f["q"],
        handler=f["h"],
        payload_json=f["p"],
        priority=int(f["pr"]),
        state=_STATES[f["st"]],
        attempt=int(f["a"]),
        max_retries=int(f["mr"]),
        timeout=float(f["to"]),
        run_at=_dt(f["ra"]),
        created_at=_dt(f["ca"]),
        started_at=None if started is None else _dt(started),
        finished_at=None if finished is None else _dt(finished),
        idempotency_key=f.get("ik"),
        schedule_id=f.get("si"),
        result_json=f["r"],
        error=f.get("e"),
        cancel_requested=f.get("cr") == "1",
        worker_id=f.get("w"),
        lease_expires_at=None if lease is None else _dt(lease),
        trace_context=f.get("tc"),
        progress=None if progress is None else float(progress),
        progress_message=f.get("pm"),
        stack_requested=f.get("sr") == "1",
        stack=f.get("sk"),
        stack_at=None if stack_at is None else _dt(stack_at),
    )


def _decode_lease(f: Mapping[str, Any]) -> Lease:
    job = _decode_job(f)
    assert job.lease_expires_at is not None  # noqa: S101 - a running job always has a lease
    return Lease(job=job, token=f["tk"], expires_at=job.lease_expires_at)


def _decode_attempt(job_id: str, raw: bytes) -> Attempt:
    rec = msgspec.json.decode(raw)
    finished = rec.get("f")
    return Attempt(
        job_id=job_id,
        attempt=int(rec["n"]),
        worker_id=str(rec["w"]),
        started_at=_dt(rec["s"]),
        finished_at=None if finished is None else _dt(finished),
        outcome=AttemptOutcome(rec.get("o", "running")),
        error_type=rec.get("et"),
        error_message=rec.get("em"),
        traceback=rec.get("tb"),
    )
