"""A Redis Sentinel setup the tests own: one master, one replica, three sentinels, on free
loopback ports, so that a test can kill the master and watch the failover."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.ports import free_port

SERVICE = "monoq-test"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """redis.asyncio runs on asyncio only."""
    return "asyncio"


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the Sentinel tests", pytrace=False)
        pytest.skip(message)
    return binary


def _ask(port: int, *words: str, timeout: float = 1.0) -> bytes:
    """One inline command to 127.0.0.1:port; the raw reply ('' when nothing answers)."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                 timeout=timeout) as sock:
        sock.sendall((" ".join(words) + "\r\n").encode())
        return sock.recv(65536)
    return b""


def _until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` (a question to a server process) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


class Node:
    """One redis-server process (a data node or a sentinel) that can be killed and restarted
    on the same port."""

    def __init__(self, binary: str, directory: Path, port: int, args: list[str]) -> None:
        self.binary, self.directory, self.port, self.args = binary, directory, port, args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, replica_of: int | None = None) -> None:
        """Start it (again); ``replica_of``: as a replica of the master on that port, the way
        an orchestrator brings back a failed node."""
        self.directory.mkdir(parents=True, exist_ok=True)
        extra = [] if replica_of is None else ["--replicaof", "127.0.0.1", str(replica_of)]
        self.process = subprocess.Popen(
            [self.binary, *self.args, *extra], cwd=self.directory,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _until(lambda: _ask(self.port, "PING").startswith(b"+PONG"),
               f"redis-server on port {self.port} to answer")

    def kill(self) -> None:
        """SIGKILL: the node vanishes without a goodbye, as a crashed host would."""
        process, self.process = self.process, None
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)


class SentinelSetup:
    """Master, replica and three sentinels watching ``SERVICE`` (quorum 2)."""

    def __init__(self, binary: str, root: Path) -> None:
        self.nodes: dict[str, Node] = {}
        master_port, replica_port = free_port(), free_port()
        data = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--repl-diskless-sync-delay", "0"]
        self.nodes["a"] = Node(binary, root / "a", master_port,
                               ["--port", str(master_port), *data])
        self.nodes["b"] = Node(binary, root / "b", replica_port,
                               ["--port", str(replica_port), *data,
                                "--replicaof", "127.0.0.1", str(master_port)])
        self.sentinel_ports = [free_port() for _ in range(3)]
        for n, port in enumerate(self.sentinel_ports):
            directory = root / f"sentinel{n}"
            directory.mkdir(parents=True)
            conf = directory / "sentinel.conf"  # sentinels rewrite their file: one each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 600\n"
                f"sentinel failover-timeout {SERVICE} 4000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n")
            self.nodes[f"s{n}"] = Node(binary, directory, port, [str(conf), "--sentinel"])

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}"

    def start(self) -> None:
        for node in self.nodes.values():
            node.start()
        _until(lambda: b"master_link_status:up" in _ask(self.nodes["b"].port, "INFO",
                                                          "replication"),
               "the replica to sync")
        _until(lambda: all(self._sees_replica(p) and self._field(p, "num-other-sentinels")
                           == b"2" for p in self.sentinel_ports),
               "every sentinel to know the replica and the two other sentinels")

    @staticmethod
    def _field(sentinel_port: int, name: str) -> bytes | None:
        """A field of ``SENTINEL MASTER`` as one sentinel sees it."""
        lines = _ask(sentinel_port, "SENTINEL", "MASTER", SERVICE).split(b"\r\n")
        for n in range(2, len(lines) - 2, 2):
            if lines[n] == name.encode():
                return lines[n + 2]
        return None

    def _sees_replica(self, sentinel_port: int) -> bool:
        return str(self.nodes["b"].port).encode() in _ask(sentinel_port, "SENTINEL",
                                                          "REPLICAS", SERVICE)

    def master_port(self) -> int | None:
        """The master's port when every sentinel names the same one, else None."""
        named = set()
        for port in self.sentinel_ports:
            reply = _ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            lines = reply.split(b"\r\n")
            named.add(int(lines[4]) if len(lines) >= 5 and lines[4].isdigit() else None)
        return named.pop() if len(named) == 1 else None

    def master(self) -> Node:
        port = self.master_port()
        return next(node for node in self.nodes.values() if node.port == port)

    def wait_for_failover(self, old_port: int) -> int:
        """Block until every sentinel names the same master other than ``old_port`` and the
        failover is over; answers the new master's port."""
        _until(lambda: self.master_port() not in (None, old_port)
               and all(b"failover_in_progress" not in (self._field(p, "flags") or b"")
                       for p in self.sentinel_ports),
               "the sentinels to promote the replica")
        port = self.master_port()
        assert port is not None
        _until(lambda: b"role:master" in _ask(port, "INFO", "replication"),
               "the promoted replica to act as master")
        return port

    def wait_for_replica(self, node: Node) -> None:
        """Block until ``node`` (an old master brought back) replicates the current master."""
        _until(lambda: b"master_link_status:up" in _ask(node.port, "INFO", "replication"),
               f"node on port {node.port} to rejoin as a replica", timeout=60)

    def stop(self) -> None:
        for node in self.nodes.values():
            node.kill()


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(_binary(), tmp_path)
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()
