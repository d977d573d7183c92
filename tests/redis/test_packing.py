"""Commands are packed by hiredis in C; the bytes on the wire must be redis-py's exactly."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio.connection as aioconn
import redis.exceptions as rex

from monoq.backends.redis._connect import _packing_in_c

CASES: list[tuple[Any, ...]] = [
    ("EVALSHA", "d06da559d32ea25aa5c6b7d4243e8d1a1d63c75a", 2, "monoq:q:{mail}:ready", "k2",
     1796095409123, -3, 0.1, 1e20, 1 / 3, "héllo wörld", b"\x00\xff raw bytes", ""),
    ("CONFIG GET", "maxmemory-policy"),  # a two-word command name is sent as two arguments
    (b"CLIENT SETNAME", "monoq-worker"),
    ("SET", "k", "v" * 100_000),  # a large value: one buffer instead of redis-py's chunks
]


@pytest.mark.parametrize("args", CASES, ids=["script", "two-words", "bytes-name", "large"])
@pytest.mark.parametrize("cls", [aioconn.Connection, aioconn.UnixDomainSocketConnection,
                                 aioconn.SSLConnection])
def test_hiredis_packing_sends_the_same_bytes_as_redis_py(cls: type[Any], args: tuple[Any, ...]
                                                         ) -> None:
    fast_cls = _packing_in_c(cls)
    assert issubclass(fast_cls, cls)
    assert _packing_in_c(cls) is fast_cls  # one subclass per connection class
    plain, fast = cls(), fast_cls()
    assert b"".join(fast.pack_command(*args)) == b"".join(plain.pack_command(*args))


def test_arguments_hiredis_cannot_pack_get_redis_pys_error() -> None:
    fast = _packing_in_c(aioconn.Connection)()
    with pytest.raises(rex.DataError):
        fast.pack_command("SET", "k", {"not": "encodable"})
