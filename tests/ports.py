"""Free TCP ports of 127.0.0.1 for the servers the tests start.

``bind(("127.0.0.1", 0))`` hands out a port from the kernel's ephemeral range, the range every
outgoing connection of the suite also draws its local port from. Between the moment such a port
is picked and the moment a redis-server or uvicorn binds it, a client connecting anywhere may take
it, and the server then fails to start. ``free_port`` picks below that range instead, where the
kernel never assigns a port by itself, so only another listener can be there, and the check sees
it. No port is handed out twice in one test process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 10000
_given: set[int] = set()


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux's default when unreadable)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(*, companion: int = 0) -> int:
    """A port of 127.0.0.1 that nothing listens on, outside the ephemeral range; with
    ``companion``, ``port + companion`` is free and outside that range too (a Redis Cluster
    node's bus port is its port + 10000)."""
    highest = _ephemeral_low() - 1 - companion
    if highest <= _LOWEST:
        raise RuntimeError(f"the ephemeral port range starts too low ({highest + 1 + companion})"
                           " to leave room for test servers below it")
    for _ in range(1000):
        port = random.randint(_LOWEST, highest)
        if port in _given or (companion and port + companion in _given):
            continue
        if _is_free(port) and (not companion or _is_free(port + companion)):
            _given.update({port, port + companion} if companion else {port})
            return port
    raise RuntimeError("no free port below the ephemeral range")
