"""Job JSON straight to bytes: the same document as ``Job.to_dict`` encoded by litestar.

``Job.to_dict`` decodes the stored payload and result only for the response encoder to encode
them again. Here they are embedded as they are stored (``msgspec.Raw``): backends keep the
bytes ``monoq.core.codec.json_encode`` made, and msgspec re-encodes a decoded value to the
same bytes, so the output is byte-for-byte what ``encode(job.to_dict())`` gives, at a fraction
of the cost. The field order and names are those of ``Job.to_dict`` (docs/DESIGN.md §3).
"""

from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

from monoq.core.models import Job, rfc3339

_encoder: Final = msgspec.json.Encoder()
_NULL: Final = msgspec.Raw(b"null")


class JobOut(msgspec.Struct):
    """``Job.to_dict`` as a struct (same keys, same order)."""

    id: str
    queue: str
    handler: str
    payload: msgspec.Raw
    priority: int
    state: str
    attempt: int
    max_retries: int
    timeout: float
    run_at: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    idempotency_key: str | None
    schedule_id: str | None
    result: msgspec.Raw
    error: str | None
    progress: dict[str, Any] | None


def job_out(job: Job) -> JobOut:
    """The job's JSON form, ready to encode."""
    return JobOut(
        job.id,
        job.queue,
        job.handler,
        msgspec.Raw(job.payload_json),
        job.priority,
        job.state.value,
        job.attempt,
        job.max_retries,
        job.timeout,
        rfc3339(job.run_at),
        rfc3339(job.created_at),
        None if job.started_at is None else rfc3339(job.started_at),
        None if job.finished_at is None else rfc3339(job.finished_at),
        job.idempotency_key,
        job.schedule_id,
        _NULL if job.result_json is None else msgspec.Raw(job.result_json),
        job.error,
        None if job.progress is None else {"fraction": job.progress,
                                           "message": job.progress_message},
    )


def job_bytes(job: Job) -> bytes:
    """``encode(job.to_dict())``."""
    return _encoder.encode(job_out(job))


def jobs_bytes(jobs: Iterable[Job], extra: Mapping[str, Any] | None = None) -> bytes:
    """``encode({"jobs": [job.to_dict(), ...], **extra})``."""
    return _encoder.encode({"jobs": [job_out(job) for job in jobs], **(extra or {})})
