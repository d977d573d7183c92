"""Helpers shared by the api tests: tokens of every scope, job helpers."""

from collections.abc import Callable
from datetime import timedelta

from litestar import Litestar

from monoq.api.tokens import create_token
from monoq.client import Client
from monoq.config import ApiToken
from monoq.core.models import ErrorInfo, Finish, Job, JobQuery, Outcome

TOKENS: dict[str, str] = {}  # scope -> token
API_TOKENS: list[ApiToken] = []
for _scope in ("enqueue", "read", "admin"):
    _token, _line = create_token(_scope)
    _name, _, _digest = _line.split()
    TOKENS[_scope] = _token
    API_TOKENS.append(ApiToken(name=_name, scope=_scope, sha256=_digest))

AppFactory = Callable[..., Litestar]


def auth(scope: str) -> dict[str, str]:
    """The Authorization header of the test token of ``scope``."""
    return {"Authorization": f"Bearer {TOKENS[scope]}"}


async def finish_job(client: Client, job_id: str, outcome: Outcome) -> Job:
    """Claim the (queued) job and end its run with ``outcome``; answers the job afterwards."""
    job = await client.get(job_id)
    now = client.clock()
    leases = await client.backend.claim(
        [job.queue], limit=100, lease_for=timedelta(seconds=30), worker_id="w1", now=now
    )
    [lease] = [lease for lease in leases if lease.job.id == job_id]
    others = [Finish(other, Outcome.RELEASED) for other in leases if other is not lease]
    error = None if outcome is Outcome.COMPLETED else ErrorInfo("RuntimeError", "boom")
    result = b'"ok"' if outcome is Outcome.COMPLETED else None
    applied = await client.backend.finish(
        [Finish(lease, outcome, result_json=result, error=error), *others], now=now
    )
    assert all(applied)
    return await client.get(job_id)


async def count_jobs(client: Client) -> int:
    """How many jobs the backend holds."""
    return len((await client.list_jobs(JobQuery(limit=1000))).jobs)
