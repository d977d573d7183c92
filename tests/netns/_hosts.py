"""Hosts on a private network, built from Linux network namespaces.

Each host is a namespace with one veth link to a switch namespace that holds a bridge; the
test process itself (in the root namespace) gets a link to the switch too, so that it can talk
to every host. Faults are the ones a real network has: a host's link goes down, a route to one
peer becomes a black hole (packets vanish, connections hang until their timeouts), a process
dies. Everything is removed on ``close``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO


class NamespacesUnavailable(RuntimeError):
    """Network namespaces cannot be built here (not root, or no ``ip`` with netns)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def check_namespaces() -> None:
    """Raise ``NamespacesUnavailable`` with the reason when this process cannot build hosts."""
    if shutil.which("ip") is None:
        raise NamespacesUnavailable("the ip command (iproute2) is not installed")
    if os.geteuid() != 0:
        raise NamespacesUnavailable("building network namespaces needs root")
    probe = f"mqprobe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except RuntimeError as exc:
        raise NamespacesUnavailable(f"ip netns is not permitted here: {exc}") from exc
    _ip("netns", "del", probe)


class Host:
    """One namespace with an address on the network."""

    def __init__(self, network: Network, name: str, index: int) -> None:
        self.network, self.name, self.index = network, name, index
        self.ns = f"mq{network.tag}{name}"
        self.ip = f"{network.prefix}.{index}"
        self.link = f"mqs{network.tag}{index}"  # its veth end on the switch
        self.processes: list[subprocess.Popen[bytes]] = []

    def popen(self, argv: Sequence[str], *, env: Mapping[str, str], log: Path,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Run ``argv`` inside this host, its output appended to ``log``."""
        out: IO[bytes]
        with log.open("ab") as out:
            process = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], env=dict(env),
                                       stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        self.processes.append(process)
        return process

    def link_down(self) -> None:
        """Unplug the host: nothing goes in or out, connections hang (no reset is sent)."""
        _ip("-n", self.network.switch, "link", "set", self.link, "down")

    def link_up(self) -> None:
        _ip("-n", self.network.switch, "link", "set", self.link, "up")

    def cut_from(self, other: Host) -> None:
        """Drop everything this host sends to ``other`` (a black-hole route): the way a
        broken firewall or a partition between two racks looks from inside."""
        _ip("-n", self.ns, "route", "add", "blackhole", f"{other.ip}/32")

    def reconnect_to(self, other: Host) -> None:
        _ip("-n", self.ns, "route", "del", "blackhole", f"{other.ip}/32")


class Network:
    """A /24 of hosts behind one bridge, plus a link from the root namespace."""

    def __init__(self) -> None:
        check_namespaces()
        self.tag = secrets.token_hex(2)
        self.prefix = f"10.213.{secrets.randbelow(200) + 20}"
        self.switch = f"mq{self.tag}sw"
        self.root_link = f"mqr{self.tag}"
        self.root_ip = f"{self.prefix}.250"
        self.hosts: dict[str, Host] = {}
        _ip("netns", "add", self.switch)
        try:
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            _ip("link", "add", self.root_link, "type", "veth", "peer", "name", "mqup",
                "netns", self.switch)
            _ip("-n", self.switch, "link", "set", "mqup", "master", "br0", "up")
            _ip("addr", "add", f"{self.root_ip}/24", "dev", self.root_link)
            _ip("link", "set", self.root_link, "up")
        except BaseException:
            self.close()
            raise

    def add_host(self, name: str) -> Host:
        host = Host(self, name, len(self.hosts) + 2)
        _ip("netns", "add", host.ns)
        self.hosts[name] = host
        _ip("-n", host.ns, "link", "set", "lo", "up")
        _ip("-n", host.ns, "link", "add", "eth0", "type", "veth", "peer", "name", host.link,
            "netns", self.switch)
        _ip("-n", host.ns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        _ip("-n", host.ns, "link", "set", "eth0", "up")
        _ip("-n", self.switch, "link", "set", host.link, "master", "br0", "up")
        return host

    def close(self) -> None:
        """Kill every process, delete every namespace and link. Safe to call twice."""
        for host in self.hosts.values():
            for process in host.processes:
                if process.poll() is None:
                    process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
        for ns in [*(h.ns for h in self.hosts.values()), self.switch]:
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", ns)
        with contextlib.suppress(RuntimeError):
            _ip("link", "del", self.root_link)
        self.hosts.clear()
