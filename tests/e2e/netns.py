"""Hosts in network namespaces, joined by a switch, for the remote-device tests
(test_remote_netns.py) and bench/remote.py: real network hops between processes of one machine.

    <tag>-sw     the "switch": a bridge br0 with one veth port p-<host> per host
    <tag>-<host> a host: its end of the veth is eth0, address 10.231.<n>.<i> (i = 1, 2, ... in
                 the order the hosts are named), lo up

The host's own interfaces and routes are never touched. <tag> is "prn" and this process's pid
(and a counter), so concurrent runs never share a name, and namespaces left by a run that died
(its pid gone) are removed by the next one.

A link is cut two ways: cut(host, "drop") disables the host's port of the bridge, so the
network drops its packets both ways in silence (no RST, no ICMP, and the host's link stays up,
as when a router on the path dies); cut(host, "down") sets the host's eth0 down (a pulled
cable, as the host sees it). heal(host) undoes either. (tc's netem would drop packets too, but
not every kernel has it; the bridge needs nothing beyond iproute2.)

Net is a context manager: on leaving it, every process still inside its namespaces is killed
and the namespaces are deleted, whatever happened. Namespaces need root: without it (or
without iproute2) Net() raises NetnsUnavailable, which the tests turn into a failure.
"""
from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

PREFIX = "prn"
_counter = itertools.count()


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no iproute2, or ip netns failed)."""


def ip(*args: str, timeout: float = 10.0) -> str:
    """Runs `ip ARGS`, returning its stdout; a failure raises RuntimeError with ip's message."""
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"$ ip {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def _kill_inside(ns: str):
    """SIGKILLs every process in namespace ns and waits (briefly) for them to go."""
    for _ in range(50):
        p = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
        pids = [int(x) for x in p.stdout.split() if x.isdigit()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def _bridge_port_state(ns: str, port: str, state: int):
    """Sets a bridge port's STP state (`ip link set PORT type bridge_slave state 0` is taken and
    ignored by iproute2 6.1: `bridge link set` does it), and checks that it took."""
    name = {0: "disabled", 3: "forwarding"}[state]
    p = subprocess.run(["bridge", "-n", ns, "link", "set", "dev", port, "state", str(state)], capture_output=True,
                       text=True, timeout=10)
    shown = subprocess.run(["bridge", "-n", ns, "link", "show", "dev", port], capture_output=True, text=True,
                           timeout=10).stdout
    if p.returncode != 0 or f"state {name}" not in shown:
        raise RuntimeError(f"cannot set bridge port {port} {name}: {p.stderr.strip()} {shown.strip()}")


def remove_stale_namespaces():
    """Deletes namespaces named prn<pid>x<n>-* whose pid no longer runs, and what runs in them."""
    try:
        names = ip("netns", "list").split()
    except (RuntimeError, OSError):
        return
    for name in names:
        m = re.fullmatch(rf"{PREFIX}(\d+)x\d+-\w+", name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            _kill_inside(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


class Net:
    """Hosts (names of at most 10 characters) on one switch. Net(("srv", "cli")) makes them;
    close() (or leaving the with block) deletes them."""

    def __init__(self, hosts=("srv", "cli")):
        if os.geteuid() != 0:
            raise NetnsUnavailable("network namespaces (ip netns) need root: run the tests as root (make test does)")
        if not shutil.which("ip"):
            raise NetnsUnavailable("the ip command is missing: install iproute2 (scripts/setup.sh test does)")
        n = next(_counter)
        self.tag = f"{PREFIX}{os.getpid()}x{n}"
        self.subnet = f"10.231.{n % 250}"
        self.hosts = list(hosts)
        self.namespaces: list[str] = []
        remove_stale_namespaces()
        try:
            self._build()
        except RuntimeError as e:
            self.close()
            raise NetnsUnavailable(f"cannot make the test network: {e}") from None

    def _build(self):
        sw = self._ns("sw")
        for name in [sw] + [self.ns(h) for h in self.hosts]:
            ip("netns", "add", name)
            self.namespaces.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        ip("-n", sw, "link", "add", "br0", "type", "bridge")
        ip("-n", sw, "link", "set", "br0", "up")
        for h in self.hosts:
            ip("-n", sw, "link", "add", f"p-{h}", "type", "veth", "peer", "name", "eth0", "netns", self.ns(h))
            ip("-n", sw, "link", "set", f"p-{h}", "master", "br0", "up")
            ip("-n", self.ns(h), "addr", "add", f"{self.addr(h)}/24", "dev", "eth0")
            ip("-n", self.ns(h), "link", "set", "eth0", "up")

    # names
    def _ns(self, role: str) -> str:
        return f"{self.tag}-{role}"

    def ns(self, host: str) -> str:
        if host not in self.hosts:
            raise KeyError(f"no host {host!r} in this network ({self.hosts})")
        return self._ns(host)

    def addr(self, host: str) -> str:
        return f"{self.subnet}.{self.hosts.index(host) + 1}"

    # commands
    def cmd(self, host: str, argv) -> list[str]:
        """argv run inside host's namespace (`ip netns exec` execs it: the pid is argv's)."""
        return ["ip", "netns", "exec", self.ns(host), *[str(a) for a in argv]]

    def popen(self, host: str, argv, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.cmd(host, argv), **kw)

    def run(self, host: str, argv, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(host, argv), **kw)

    # the links
    def cut(self, host: str, how: str = "drop"):
        """Cuts host off: "drop" (its bridge port disabled: every packet to or from it dropped in
        silence) or "down" (its eth0 down)."""
        if how == "drop":
            _bridge_port_state(self._ns("sw"), f"p-{host}", 0)  # disabled
        elif how == "down":
            ip("-n", self.ns(host), "link", "set", "eth0", "down")
        else:
            raise ValueError(f"cut how={how!r}: 'drop' or 'down'")

    def heal(self, host: str):
        ip("-n", self.ns(host), "link", "set", "eth0", "up")
        _bridge_port_state(self._ns("sw"), f"p-{host}", 3)  # forwarding

    # tearing down
    def close(self):
        for name in reversed(self.namespaces):
            _kill_inside(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        self.namespaces.clear()

    def __enter__(self) -> "Net":
        return self

    def __exit__(self, *exc):
        self.close()
        return False
