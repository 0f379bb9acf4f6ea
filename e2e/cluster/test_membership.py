"""Nodes find each other over QUIC with the cluster secret; a node without it is refused."""

from __future__ import annotations

import secrets

import pytest
import requests

from storaged_proc import wait_until

FAST = {
    "background.ping_interval_ms": 200,
    "background.ping_timeout_ms": 500,
    "background.failures_before_down": 2,
}


def status(srv) -> dict:
    r = requests.get(srv.cfg.admin_endpoint + "/v1/status",
                     headers={"Authorization": f"Bearer {srv.admin_token}"}, timeout=10)
    r.raise_for_status()
    return r.json()


def up_nodes(srv) -> set[str]:
    return {n["node_id"] for n in status(srv)["nodes"] if n["is_up"]}


@pytest.mark.timeout(120)
def test_nodes_discover_each_other_and_refuse_a_wrong_secret(instances):
    secret = secrets.token_hex(32)
    a = instances.server("a", rpc_secret=secret, zone="dc1", **FAST)
    b = instances.server("b", rpc_secret=secret, zone="dc2",
                         bootstrap_peers=[f"127.0.0.1:{a.rpc_port}"], **FAST)
    a_id, b_id = status(a)["node_id"], status(b)["node_id"]
    assert len(a_id) == 64 and a_id != b_id

    # Both see both, up, with the zone each node reports about itself.
    wait_until(lambda: up_nodes(a) == {a_id, b_id} and up_nodes(b) == {a_id, b_id}, 30,
               "a and b to see each other up")
    zones = {n["node_id"]: n["zone"] for n in status(a)["nodes"]}
    assert zones == {a_id: "dc1", b_id: "dc2"}, zones

    # A node with another secret bootstraps to a: it is refused, and a says why.
    intruder = instances.server("intruder", rpc_secret=secrets.token_hex(32),
                                bootstrap_peers=[f"127.0.0.1:{a.rpc_port}"], **FAST)
    intruder_id = status(intruder)["node_id"]
    wait_until(lambda: "cluster secret" in a.log_path.read_text(errors="replace"), 30,
               "a to log the refusal of the intruder")
    assert intruder_id not in {n["node_id"] for n in status(a)["nodes"]}
    assert {n["node_id"] for n in status(intruder)["nodes"]} == {intruder_id}

    # b stops: a sees it down; b restarts (same key, same port): a sees it up again.
    b.stop()
    wait_until(lambda: b_id not in up_nodes(a), 30, "a to see b down")
    b.start()
    assert status(b)["node_id"] == b_id, "the node key persists across restarts"
    wait_until(lambda: up_nodes(a) == {a_id, b_id}, 30, "a to see b up again")
