"""The layout's admin API and CLI refuse what would break the cluster, with a reason: a stale
version, an impossible zone redundancy, a zero capacity, an unknown node; and what they accept
is applied on every node."""

from __future__ import annotations

import pytest

from storaged_proc import wait_until


@pytest.mark.timeout(120)
def test_layout_changes_are_checked_and_spread(make_cluster, cli):
    cluster = make_cluster(nodes=3, zones=3)
    n1, n2, n3 = cluster.nodes
    version = n1.layout()["version"]
    assert version >= 1
    assert {r["node_id"] for r in n1.layout()["roles"]} == {n.node_id for n in cluster.nodes}

    # Applying with a stale version number is refused (two admins cannot both apply).
    r = n1.admin("POST", "/v1/layout/apply", {"version": version}, ok=(409,))
    assert r["code"] == "LayoutVersionMismatch" and str(version + 1) in r["message"], r

    # A node id that is not one, and a capacity of zero, are refused at staging.
    r = n1.admin("POST", "/v1/layout/stage",
                 {"changes": [{"node_id": "zz", "role": {"zone": "dc1", "capacity": 1}}]},
                 ok=(400,))
    assert "node_id" in r["message"], r
    r = n1.admin("POST", "/v1/layout/stage",
                 {"changes": [{"node_id": n3.node_id, "role": {"zone": "dc3", "capacity": 0}}]},
                 ok=(400,))
    assert r["code"] == "InvalidLayout" and "gateway" in r["message"], r

    # More zones than exist: staged, but applying explains why it cannot be done; revert.
    cli.run(n1.cfg, "layout", "zone-redundancy", "4")
    r = n1.admin("POST", "/v1/layout/apply", {"version": version + 1}, ok=(400,))
    assert r["code"] == "InvalidLayout" and "zone redundancy 4" in r["message"], r
    cli.run(n1.cfg, "layout", "revert", "--version", str(version))
    assert n1.layout()["staged"] == [] and n1.layout()["version"] == version

    # An unknown node prefix is a clear CLI error.
    res = cli.run(n1.cfg, "layout", "assign", "ffffffffffff", "--zone", "dc1",
                  "--capacity", "1G", check=False)
    assert res.returncode != 0 and "no known node id" in res.stderr, res.stderr
    res = cli.run(n1.cfg, "layout", "assign", n2.node_id[:12], "--zone", "dc2",
                  "--capacity", "lots", check=False)
    assert res.returncode != 0 and "--capacity" in res.stderr, res.stderr

    # A valid change staged on node 1 and applied there reaches every node.
    cli.run(n1.cfg, "layout", "zone-redundancy", "2")
    cli.run(n1.cfg, "layout", "assign", n2.node_id[:12], "--zone", "dc2", "--capacity", "2G")
    shown = cli.json(n1.cfg, "layout", "show", "--json")
    assert [c["node_id"] for c in shown["staged"]] == [n2.node_id], shown
    applied = cli.json(n1.cfg, "layout", "apply", "--version", str(version + 1), "--json")
    assert applied["layout"]["version"] == version + 1
    assert any("zones" in m for m in applied["messages"]), applied["messages"]
    wait_until(lambda: all(n.layout()["version"] == version + 1 for n in cluster.nodes), 30,
               "every node to get the new layout version")
    for n in cluster.nodes:
        l = n.layout()
        assert l["zone_redundancy"] == 2, (n.name, l)
        caps = {r["node_id"]: r["role"]["capacity"] for r in l["roles"]}
        assert caps[n2.node_id] == 2 * 10**9, (n.name, caps)
    status = cli.json(n3.cfg, "status", "--json")
    assert status["status"]["layout_version"] == version + 1
    roles = {x["node_id"]: x["role"] for x in status["status"]["nodes"]}
    assert roles[n2.node_id]["zone"] == "dc2", roles
    cluster.wait_fully_replicated(60)
