"""``/api/v1/queues``: counts by state, pause and resume."""

from typing import Final

from litestar import Response, get, post
from litestar.params import FromPath

from monoq.api.openapi import GUARDED, QUEUE_NAME, Answer, QueueList, documented
from monoq.api.openapi import Queue as QueueSchema
from monoq.api.problems import Problem
from monoq.api.routes._common import ClientDep, Json, answer, check_name
from monoq.api.scoping import ScopedClient
from monoq.client import Client
from monoq.core.models import QueueStats


async def _find(client: Client, name: str) -> QueueStats:
    check_name("queue", name)
    if isinstance(client, ScopedClient):
        client.check(name)  # 403 rather than 404 for a queue outside the token's
    for stats in await client.queues():
        if stats.queue == name:
            return stats
    raise Problem(404, f"no queue named {name!r}: nothing was ever enqueued into it")


@get("/queues", opt={"scope": "read"}, summary="List queues",
     **documented(GUARDED, answers=[Answer(200, QueueList, "Every known queue.")]))
async def list_queues(client: ClientDep) -> Response[Json]:
    """``{"queues": [{"queue", "paused", "counts": {state: n}}, ...]}`` for every known queue."""
    return answer({"queues": [s.to_dict() for s in await client.queues()]})


@get(
    "/queues/{name:str}",
    opt={"scope": "read"},
    summary="Get a queue",
    **documented(GUARDED, 404, 422, answers=[Answer(200, QueueSchema, "The queue.")],
                 params={"name": QUEUE_NAME}),
)
async def get_queue(name: FromPath[str], client: ClientDep) -> Response[Json]:
    """One queue's counts by state; 404 for a queue nothing was ever enqueued into."""
    return answer((await _find(client, name)).to_dict())


@post(
    "/queues/{name:str}/pause",
    opt={"scope": "admin"},
    status_code=200,
    summary="Pause a queue",
    **documented(GUARDED, 404, 422, answers=[Answer(200, QueueSchema, "The queue, paused.")],
                 params={"name": QUEUE_NAME}),
)
async def pause_queue(name: FromPath[str], client: ClientDep) -> Response[Json]:
    """Workers stop claiming from the queue (enqueue still works). Answers the queue."""
    await client.pause(check_name("queue", name))
    return answer((await _find(client, name)).to_dict())


@post(
    "/queues/{name:str}/resume",
    opt={"scope": "admin"},
    status_code=200,
    summary="Resume a queue",
    **documented(GUARDED, 404, 422, answers=[Answer(200, QueueSchema, "The queue, resumed.")],
                 params={"name": QUEUE_NAME}),
)
async def resume_queue(name: FromPath[str], client: ClientDep) -> Response[Json]:
    """Workers claim from the queue again. Answers the queue."""
    await client.resume(check_name("queue", name))
    return answer((await _find(client, name)).to_dict())


HANDLERS: Final = [list_queues, get_queue, pause_queue, resume_queue]
