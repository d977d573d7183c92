"""One pipelined connection for the backend's script calls: commands are written the moment
they are made and answered in order, parsed by hiredis in the protocol's callback.

redis-py's asyncio client spends about 75 µs of CPU on one awaited command (a pooled
connection taken and given back, a stream read, a timeout scope, its event hooks), which is
most of an awaited enqueue and of a worker's ack call. Here a command costs what packing it,
one transport write and one future cost (about 30 µs). Every caller shares the connection,
so calls made at the same moment travel together (pipelining without a pipeline object).

The connection is opened by redis-py (``make_connection``, from the backend's pool settings),
so the address, TLS, AUTH, SELECT and the client name are redis-py's own; once it is ready the
transport is handed to this module's protocol. Blocking commands never come here (they would
hold up every caller); neither do Sentinel, Cluster or ``replicas_ack`` calls.

Replies are redis-py's: bytes, ints, lists, and an error reply becomes the redis-py exception
its code names (``NOSCRIPT`` → ``NoScriptError``...), returned as the reply's value. A lost
connection fails every call in flight with ``ConnectionError``; when the oldest call is not
answered within ``timeout``, it and every call behind it fail with ``TimeoutError`` and the
connection is closed (a late reply would otherwise be read as the answer to a later call). The next call opens a new one. A caller that is cancelled
leaves its reply to be read and dropped, so the order stays right.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
import redis.exceptions as rex
from redis._parsers import BaseParser

_ERROR = BaseParser.parse_error  # an error reply's text -> the redis-py exception it names


class _Protocol(asyncio.Protocol):
    """Answers each reply to the oldest call still waiting, in the order they were sent.

    One timer watches the oldest call: when it is not answered by its deadline, the connection
    is closed and every call in flight fails with ``TimeoutError`` (the calls behind it would
    wait for it anyway). A timer per call would cost each call more than the rest of its
    bookkeeping."""

    def __init__(self, transport: asyncio.Transport, writer: asyncio.StreamWriter,
                 timeout: float | None) -> None:
        self.transport = transport
        # asyncio closes a StreamWriter's transport when the writer is collected: keep it.
        self._writer = writer
        self.reader = hiredis.Reader(protocolError=rex.InvalidResponse, replyError=_ERROR)
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.deadlines: deque[float] = deque()  # of the calls in ``waiting``
        self.timeout = timeout
        self.timer: asyncio.TimerHandle | None = None
        self.lost: BaseException | None = None

    @property
    def usable(self) -> bool:
        """Neither lost nor closing: calls may be sent on it."""
        return self.lost is None and not self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        reader, waiting, deadlines = self.reader, self.waiting, self.deadlines
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except rex.InvalidResponse as exc:
                self._close(exc)
                return
            if reply is False:  # hiredis: no whole reply yet
                return
            if not waiting:  # a reply nobody asked for: the stream cannot be trusted
                self._close(rex.InvalidResponse("a reply came that no call was waiting for"))
                return
            future = waiting.popleft()
            deadlines.popleft()
            if not future.done():  # a cancelled caller's reply is dropped
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(rex.ConnectionError(f"Connection closed by server ({exc})" if exc else
                                       "Connection closed by server."))

    def _close(self, exc: BaseException) -> None:
        self._fail(exc)
        self.transport.abort()

    def _fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.deadlines.clear()
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)

    def _watch(self) -> None:
        """The timer: fail everything if the oldest call is past its deadline, else look
        again at the deadline of the oldest call then."""
        self.timer = None
        if not self.deadlines:
            return
        loop = asyncio.get_running_loop()
        oldest = self.deadlines[0]
        if loop.time() >= oldest:
            self._close(rex.TimeoutError("Timeout reading from the server"))
        else:
            self.timer = loop.call_at(oldest, self._watch)

    def send(self, payload: bytes, n: int) -> list[asyncio.Future[Any]]:
        """Write ``payload`` (``n`` packed commands); one future per reply."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(n)]
        self.waiting.extend(futures)
        if self.timeout is not None:
            deadline = loop.time() + self.timeout
            self.deadlines.extend([deadline] * n)
            if self.timer is None:
                self.timer = loop.call_at(deadline, self._watch)
        else:
            self.deadlines.extend([0.0] * n)
        self.transport.write(payload)
        return futures


class Wire:
    """A shared, pipelined connection made by ``make_connection`` (a redis-py connection, not
    yet connected); each call waits at most ``timeout`` seconds (None: no limit)."""

    def __init__(self, make_connection: Callable[[], Any], timeout: float | None) -> None:
        self._make = make_connection
        self._timeout = timeout
        self._protocol: _Protocol | None = None
        self._opening: asyncio.Lock | None = None

    async def call(self, *args: Any) -> Any:
        """One command; its reply (an error reply is returned as its exception, not raised).
        An argument that is not str, bytes, int or float raises DataError, and nothing is
        sent."""
        [reply] = await self.calls([args])
        return reply

    async def calls(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Several commands written together, answered in order (as a pipeline without a
        transaction: other clients' commands may run between them)."""
        try:
            payload = b"".join([hiredis.pack_command(tuple(c)) for c in commands])
        except TypeError as exc:  # as redis-py's encoder refuses what it cannot send
            raise rex.DataError(f"cannot send that argument: {exc}") from None
        protocol = self._protocol
        if protocol is None or not protocol.usable:
            protocol = await self._open()
        futures = protocol.send(payload, len(commands))
        await futures[-1]  # the replies come in order: the others are in
        return [f.result() for f in futures]

    async def _open(self) -> _Protocol:
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            protocol = self._protocol
            if protocol is not None and protocol.usable:  # another caller just opened it
                return protocol
            connection = self._make()
            await connection.connect()
            # redis-py has connected, authenticated and selected the database; from here on
            # the transport is this module's, and the connection object lets go of it.
            writer: asyncio.StreamWriter = connection._writer
            connection._writer = connection._reader = None
            transport: asyncio.Transport = writer.transport  # type: ignore[assignment]
            protocol = _Protocol(transport, writer, self._timeout)
            transport.set_protocol(protocol)
            self._protocol = protocol
            return protocol

    async def aclose(self) -> None:
        """Close the connection; calls in flight fail with ConnectionError."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.transport.close()
            await asyncio.sleep(0)


def opener(pool: Any) -> Callable[[], Any]:
    """A redis-py connection made like ``pool``'s (same class and settings)."""
    def make() -> Any:
        return pool.connection_class(**pool.connection_kwargs)
    return make
