"""A Redis Cluster the tests own: three masters and three replicas (``redis-cli --cluster
create ... --cluster-replicas 1``) on free loopback ports, started once per session; each test
gets it with every master flushed.

The conformance kit (``monoq.testing``) runs on it exactly as a third-party backend's project
runs it: ``monoq_backend_factory`` below, and ``test_cluster_conformance.py`` importing the
suite. Without redis-server/redis-cli the tests skip locally and fail under ``CI``.
"""

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

from monoq.backends.redis import RedisBackend
from monoq.testing import OpenBackend, connected
from tests.ports import free_port


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """redis.asyncio runs on asyncio only."""
    return "asyncio"


def _binaries() -> tuple[str, str]:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        message = "redis-server and redis-cli are not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the Redis Cluster tests", pytrace=False)
        pytest.skip(message)
    return server, cli


def ask(port: int, *words: str, timeout: float = 1.0) -> bytes:
    """One inline command to 127.0.0.1:port; the raw reply ('' when nothing answers)."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                timeout=timeout) as sock:
        sock.sendall((" ".join(words) + "\r\n").encode())
        reply = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            reply += chunk
            if not chunk or _complete(reply):
                break
        return reply
    return b""


def _complete(reply: bytes) -> bool:
    """Whether a reply to an inline command is whole (simple and bulk replies only)."""
    if reply[:1] == b"$":
        head, _, rest = reply.partition(b"\r\n")
        size = int(head[1:])
        return size < 0 or len(rest) >= size + 2
    return reply.endswith(b"\r\n")


def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` (a question to a server process) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


class ClusterNode:
    """One cluster-enabled redis-server that can be killed and restarted on its port (its
    nodes.conf keeps its identity)."""

    def __init__(self, binary: str, directory: Path, port: int) -> None:
        self.binary, self.directory, self.port = binary, directory, port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", "1000", "--save", "", "--appendonly", "no",
             "--repl-diskless-sync-delay", "0", "--maxmemory-policy", "noeviction",
             "--logfile", "redis.log"],
            cwd=self.directory, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        until(self._answers, f"cluster node on port {self.port} to answer")

    def _answers(self) -> bool:
        """Whether the node answers PING; a node that has exited fails at once, with its log."""
        if self.process is not None and self.process.poll() is not None:
            path = self.directory / "redis.log"
            log = path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"
            raise AssertionError(f"cluster node on port {self.port} exited with code "
                                 f"{self.process.returncode}:\n{log}")
        return ask(self.port, "PING").startswith(b"+PONG")

    def kill(self) -> None:
        """SIGKILL: the node vanishes without a goodbye, as a crashed host would."""
        process, self.process = self.process, None
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def info(self, section: str) -> bytes:
        return ask(self.port, "INFO", section)

    def cluster_info(self) -> bytes:
        return ask(self.port, "CLUSTER", "INFO")

    @property
    def is_master(self) -> bool:
        return b"role:master" in self.info("replication")


class Cluster:
    """Three masters and three replicas, slots spread by ``redis-cli --cluster create``."""

    def __init__(self, server: str, cli: str, root: Path) -> None:
        self.cli = cli
        # A node's cluster bus listens on its port + 10000.
        self.nodes = [ClusterNode(server, root / f"node{n}", free_port(companion=10000))
                      for n in range(6)]

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming every node (any one would do)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes) + "/"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [self.cli, "--cluster", "create",
             *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        self.wait_ok()
        until(lambda: sum(n.is_master for n in self.nodes) == 3
              and all(b"master_link_status:up" in n.info("replication")
                      for n in self.nodes if not n.is_master),
              "three masters, each with a replica in sync")

    def wait_ok(self, nodes: list[ClusterNode] | None = None) -> None:
        """Block until every (running) node says the cluster is ok with every slot served."""
        alive = nodes if nodes is not None else [n for n in self.nodes if n.process]
        until(lambda: all(b"cluster_state:ok" in n.cluster_info()
                          and b"cluster_slots_ok:16384" in n.cluster_info() for n in alive),
              "cluster_state:ok on every node", timeout=60)

    def masters(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.process is not None and n.is_master]

    def flush(self) -> None:
        """Empty every master (the replicas follow)."""
        for node in self.masters():
            assert ask(node.port, "FLUSHALL").startswith(b"+OK")

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


@contextlib.contextmanager
def running_cluster(root: Path) -> Iterator[Cluster]:
    """A started cluster in ``root``, stopped after."""
    server, cli = _binaries()
    cluster = Cluster(server, cli, root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the session; tests get it through ``cluster`` (flushed)."""
    with running_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture
def cluster(redis_cluster: Cluster) -> Cluster:
    """The session's cluster, every master flushed."""
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture
def monoq_backend_factory(cluster: Cluster) -> OpenBackend:
    """The conformance kit's factory: RedisBackend instances on the test's (flushed) cluster,
    through a ``redis+cluster://`` URL."""
    return connected(lambda: RedisBackend(cluster.url))
