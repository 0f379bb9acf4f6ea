"""Storaged nodes in their own network namespaces, for network-partition tests.

Topology of a `NetLab` of N nodes (all names carry the creating pid and a random token, so
parallel runs do not collide and leftovers of a dead run are recognised and removed):

    root namespace (the test process)
      sp<pid>-<tok><i>  10.X.<i>.1/24  ──veth──  acc   10.X.<i>.2/24   netns sdpart<pid>-<tok>-n<i>
                                                 peer  10.X.0.<i>/24   (storaged node i)
                                                   │
                                                 veth
                                                   │
      netns sdpart<pid>-<tok>-br:  bridge br0 ── port b<i>

* The *peer* network (bridge in its own namespace, no address on it, nothing routed into it)
  carries node-to-node RPC (QUIC/UDP): each node binds and advertises `10.X.0.<i>:3901`.
* The *access* links are point-to-point veths from the root namespace to each node, on
  which the node binds S3 (3900/tcp) and admin (3903/tcp); the test process talks to node i
  at `10.X.<i>.2`. Node namespaces have no default route, so nodes cannot reach each other
  through the access links (and the root namespace does not forward).

`cut(i)` sets node i's bridge port down: from then on every packet between node i and its
peers is silently dropped (no RST, no ICMP: the node's own route stays, its ARP requests go
nowhere), exactly like a cable pulled between sites, while the test process still reaches
node i's S3 and admin APIs over its access link. `heal(i)` sets the port up again.

There is no iptables/nft in the CI image and no `tc netem`: link state is the tool.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from storaged_proc import READY_TIMEOUT_S, wait_until

from .harness import Cluster, ClusterNode

NS_PREFIX = "sdpart"
NS_RE = re.compile(rf"^{NS_PREFIX}(\d+)-[0-9a-f]+-(?:br|n\d+)$")
LINK_RE = re.compile(r"^sp(\d+)-[0-9a-f]{2}\d+$")

S3_PORT = 3900
RPC_PORT = 3901
ADMIN_PORT = 3903


def ip_bin() -> str:
    path = shutil.which("ip")
    if not path:
        pytest.fail("`ip` (iproute2) is required by the network-partition tests")
    return path


def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([ip_bin(), *args], capture_output=True, text=True, timeout=30,
                         stdin=subprocess.DEVNULL)
    if check and res.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` exited {res.returncode}: "
                           f"{res.stderr.strip() or res.stdout.strip()}")
    return res


def require_netns() -> None:
    """Fails (never skips) when the test cannot create network namespaces."""
    if os.geteuid() != 0:
        pytest.fail("the network-partition tests need root (ip netns, veth, bridge)")
    ip_bin()
    probe = f"{NS_PREFIX}{os.getpid()}-probe{secrets.token_hex(2)}"
    res = run_ip("netns", "add", probe, check=False)
    if res.returncode != 0:
        pytest.fail(f"cannot create a network namespace (`ip netns add`): {res.stderr.strip()}")
    run_ip("netns", "delete", probe, check=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_ns_processes(ns: str) -> None:
    """SIGKILLs the processes left in one of our namespaces (storaged nodes a run started)."""
    res = run_ip("netns", "pids", ns, check=False)
    for tok in res.stdout.split():
        try:
            os.kill(int(tok), signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass


def cleanup_stale() -> list[str]:
    """Removes namespaces and root-side links of earlier runs whose process is gone (an
    aborted run cannot clean up after itself). Returns what was removed."""
    removed: list[str] = []
    for line in run_ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = NS_RE.match(name) or (re.match(rf"^{NS_PREFIX}(\d+)-probe", name))
        if m and not _pid_alive(int(m.group(1))):
            _kill_ns_processes(name)
            run_ip("netns", "delete", name, check=False)
            removed.append(name)
    for line in run_ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        link = parts[1].strip().split("@")[0]
        m = LINK_RE.match(link)
        if m and not _pid_alive(int(m.group(1))):
            run_ip("link", "delete", link, check=False)
            removed.append(link)
    return removed


def _free_second_octet() -> int:
    """An X such that nothing in the root namespace uses 10.X.0.0/16."""
    used = run_ip("-4", "-o", "addr", "show", check=False).stdout
    used += run_ip("-4", "route", "show", "table", "all", check=False).stdout
    candidates = [x for x in range(100, 250) if f" 10.{x}." not in used]
    if not candidates:
        raise RuntimeError("no free 10.X.0.0/16 for the partition lab")
    return random.choice(candidates)


class NetLab:
    """N node namespaces joined by a bridge (peer network) plus an access link each."""

    def __init__(self, nodes: int):
        assert 1 <= nodes <= 9
        self.n = nodes
        self.tok = secrets.token_hex(1)
        self.base = f"{NS_PREFIX}{os.getpid()}-{self.tok}"
        self.bridge_ns = f"{self.base}-br"
        self.x = 0
        self.created_ns: list[str] = []
        self.created_links: list[str] = []
        self.down: set[int] = set()

    # -- names and addresses (nodes are 1-based) -------------------------------------------

    def ns(self, i: int) -> str:
        return f"{self.base}-n{i}"

    def root_link(self, i: int) -> str:
        return f"sp{os.getpid()}-{self.tok}{i}"

    def peer_ip(self, i: int) -> str:
        return f"10.{self.x}.0.{i}"

    def access_ip(self, i: int) -> str:
        return f"10.{self.x}.{i}.2"

    # -- lifecycle ----------------------------------------------------------------------------

    def create(self) -> "NetLab":
        cleanup_stale()
        self.x = _free_second_octet()
        try:
            self._netns_add(self.bridge_ns)
            run_ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
            run_ip("-n", self.bridge_ns, "link", "set", "br0", "up")
            for i in range(1, self.n + 1):
                ns = self.ns(i)
                self._netns_add(ns)
                run_ip("-n", ns, "link", "set", "lo", "up")
                # Peer network: node ns `peer` <-> bridge ns `b<i>` (a port of br0).
                run_ip("-n", self.bridge_ns, "link", "add", f"b{i}", "type", "veth",
                       "peer", "name", "peer", "netns", ns)
                run_ip("-n", self.bridge_ns, "link", "set", f"b{i}", "master", "br0")
                run_ip("-n", self.bridge_ns, "link", "set", f"b{i}", "up")
                run_ip("-n", ns, "addr", "add", f"{self.peer_ip(i)}/24", "dev", "peer")
                run_ip("-n", ns, "link", "set", "peer", "up")
                # Access link: root `sp<pid>-<tok><i>` <-> node ns `acc`.
                link = self.root_link(i)
                run_ip("link", "add", link, "type", "veth", "peer", "name", "acc", "netns", ns)
                self.created_links.append(link)
                run_ip("addr", "add", f"10.{self.x}.{i}.1/24", "dev", link)
                run_ip("link", "set", link, "up")
                run_ip("-n", ns, "addr", "add", f"{self.access_ip(i)}/24", "dev", "acc")
                run_ip("-n", ns, "link", "set", "acc", "up")
        except BaseException:
            self.destroy()
            raise
        return self

    def _netns_add(self, name: str) -> None:
        run_ip("netns", "add", name)
        self.created_ns.append(name)

    def destroy(self) -> list[str]:
        """Deletes every namespace and link this lab created (processes still inside its
        namespaces are SIGKILLed: they are nodes this run started). Returns the errors."""
        errors: list[str] = []
        for ns in reversed(self.created_ns):
            _kill_ns_processes(ns)
            res = run_ip("netns", "delete", ns, check=False)
            if res.returncode != 0:
                errors.append(f"netns delete {ns}: {res.stderr.strip()}")
        self.created_ns.clear()
        for link in self.created_links:
            # Normally gone with its peer's namespace.
            if run_ip("link", "show", link, check=False).returncode == 0:
                run_ip("link", "delete", link, check=False)
        self.created_links.clear()
        return errors

    # -- faults -------------------------------------------------------------------------------

    def cut(self, i: int) -> None:
        """Drops all traffic between node i and every other node (access link kept)."""
        run_ip("-n", self.bridge_ns, "link", "set", f"b{i}", "down")
        self.down.add(i)

    def heal(self, i: int) -> None:
        run_ip("-n", self.bridge_ns, "link", "set", f"b{i}", "up")
        self.down.discard(i)


# --------------------------------------------------------------------------------------------
# Nodes and clusters inside a NetLab
# --------------------------------------------------------------------------------------------


class NetnsNode(ClusterNode):
    """A `ClusterNode` run as `ip netns exec <ns> storaged server -c ...`, binding RPC on its
    peer address and S3/admin on its access address (fixed ports: each node has its own IPs).
    `ip netns exec` execs storaged in place, so the process (and its group) is the daemon's."""

    def __init__(self, binary: Path, root: Path, name: str, index: int, zone: str,
                 ns: str, peer_ip: str, access_ip: str, **settings: object):
        settings.update({
            "rpc_bind_addr": f"{peer_ip}:{RPC_PORT}",
            "rpc_public_addr": f"{peer_ip}:{RPC_PORT}",
            "s3_api.api_bind_addr": f"{access_ip}:{S3_PORT}",
            "admin.api_bind_addr": f"{access_ip}:{ADMIN_PORT}",
        })
        super().__init__(binary, root, name, index, zone, **settings)
        self.ns = ns
        self.peer_ip = peer_ip
        self.access_ip = access_ip
        self.s3_port, self.rpc_port, self.admin_port = S3_PORT, RPC_PORT, ADMIN_PORT
        assert self.cfg
        self.cfg.endpoint = f"http://{access_ip}:{S3_PORT}"
        self.cfg.admin_endpoint = f"http://{access_ip}:{ADMIN_PORT}"
        self.args = ["netns", "exec", ns, str(binary), *self.args]
        self.binary = Path(ip_bin())

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> "NetnsNode":
        def ready() -> bool:
            self.check_alive("starting")
            if not self.health_ok():
                return False
            with socket.create_connection((self.access_ip, self.s3_port), timeout=1):
                return True

        wait_until(ready, timeout, f"storaged server {self.name} (netns {self.ns}) to be healthy",
                   on_timeout=self.log_tail)
        return self


class NetnsCluster(Cluster):
    """A `Cluster` whose node i lives in `lab.ns(i)`; every node bootstraps to every other
    node's peer address (all known up front)."""

    def __init__(self, lab: NetLab, *args: object, **kw: object):
        self.lab = lab
        super().__init__(*args, **kw)  # type: ignore[arg-type]

    def new_node(self, zone: str, start: bool = False) -> NetnsNode:
        assert not start and not self.key, "a NetnsCluster's nodes are all made up front"
        index = len(self.nodes) + 1
        assert index <= self.lab.n, f"the lab has {self.lab.n} node namespaces"
        lab = self.lab
        node = NetnsNode(
            self.binary, self.root / f"node{index}", f"{self.name}-node{index}", index, zone,
            ns=lab.ns(index), peer_ip=lab.peer_ip(index), access_ip=lab.access_ip(index),
            replication_factor=self.replication_factor,
            consistency_mode=self.consistency_mode,
            rpc_secret=self.rpc_secret,
            bootstrap_peers=[f"{lab.peer_ip(j)}:{RPC_PORT}"
                             for j in range(1, lab.n + 1) if j != index],
            **{"admin.admin_token": self.admin_token},
            **self.settings,
        )
        self.register(node)
        self.nodes.append(node)
        return node
