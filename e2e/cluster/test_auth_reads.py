"""Keys, buckets and grants are written to a quorum but read locally first: a node that missed
the write (paused, or without a role, so storing nothing) must still honour a key or bucket
created through another node at once, by falling back to a quorum read; a revocation reaches
the other nodes within the bound the daemon documents (`storaged/src/model/lookup.rs`: at
once when they are reachable, else at their next anti-entropy round). And `/ready` tells
whether a node can serve: a layout role and a quorum for its partitions."""

from __future__ import annotations

import os
import signal
import time

import botocore.exceptions
import pytest
import requests

from storaged_proc import S3Config, boto3_client, wait_until

# No anti-entropy round during the test (each node runs one at start, before anything here
# exists): a write a node missed can only reach it through the quorum fallback.
NO_ANTI_ENTROPY = {"background.anti_entropy_interval_secs": 3600}
# The revocation bound with the anti-entropy interval of the restart below (2 s), plus a
# round over 3 tables x 256 partitions and the restart itself, with slack for a loaded CI.
REVOCATION_BOUND_AFTER_RESTART_S = 30
# A reachable node gets a revocation with the write itself.
REVOCATION_BOUND_REACHABLE_S = 5


def ready(node) -> tuple[int, str]:
    r = requests.get(node.cfg.admin_endpoint + "/ready", timeout=5)
    return r.status_code, r.text


def error_code(exc: botocore.exceptions.ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "") or str(
        exc.response["ResponseMetadata"]["HTTPStatusCode"])


def denied(client, bucket: str) -> bool:
    try:
        client.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 403, exc.response
        return True
    return False


def use_at_once(client, bucket: str, key: str, via: str) -> None:
    """HeadBucket, PUT and GET, each once, no retry: they must succeed at the first try."""
    try:
        client.head_bucket(Bucket=bucket)
        body = f"{key} through {via}".encode()
        client.put_object(Bucket=bucket, Key=key, Body=body)
        got = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except botocore.exceptions.ClientError as exc:
        pytest.fail(f"{via}: {error_code(exc)} on {bucket}/{key}: {exc}")
    assert got == body, via


class Paused:
    """SIGSTOP a node until the others see it down (so writes skip it at once instead of
    reaching it late), SIGCONT on exit and wait until every node sees every node up."""

    def __init__(self, cluster, node):
        self.cluster, self.node = cluster, node
        self.others = [n for n in cluster.nodes if n is not node]

    def __enter__(self) -> "Paused":
        os.kill(self.node.proc.pid, signal.SIGSTOP)
        wait_until(lambda: all(self.node.node_id not in n.up_node_ids() for n in self.others),
                   30, f"{self.node.name} to be seen down")
        return self

    def __exit__(self, *exc: object) -> None:
        os.kill(self.node.proc.pid, signal.SIGCONT)
        self.cluster.wait_all_up(self.cluster.nodes)


@pytest.mark.timeout(300)
def test_keys_and_buckets_made_through_one_node_work_through_every_node_at_once(make_cluster):
    c = make_cluster(settings=NO_ANTI_ENTROPY)
    n1, n2, n3 = c.nodes

    # A bucket every node has (node 3 is up and idle for the second its pause takes), on
    # which node 3 will miss a grant: its local copy then denies (the second-look case).
    n1.admin("POST", "/v1/buckets", {"name": "fresh-denial"})
    # Made through node 1 while node 3 is paused: node 3 never receives these writes.
    with Paused(c, n3):
        key = n1.admin("POST", "/v1/keys", {"name": "fresh", "allow_create_bucket": True})
        b = n1.admin("POST", "/v1/buckets", {"name": "fresh-admin"})
        n1.admin("POST", "/v1/permissions/allow", {
            "bucket_id": b["id"], "access_key_id": key["access_key_id"],
            "permissions": {"read": True, "write": True, "owner": False}})
        cfg = S3Config(endpoint=n1.cfg.endpoint, access_key=key["access_key_id"],
                       secret_key=key["secret_access_key"])
        boto3_client(cfg).create_bucket(Bucket="fresh-s3")
        # The cluster key (made before the pause) gets a grant on a bucket node 3 has.
        denial = n1.admin("GET", "/v1/buckets?name=fresh-denial")
        n1.admin("POST", "/v1/permissions/allow", {
            "bucket_id": denial["id"], "access_key_id": c.key.access_key,
            "permissions": {"read": True, "write": True, "owner": False}})

    clients = {n.name: boto3_client(S3Config(endpoint=n.cfg.endpoint,
                                             access_key=key["access_key_id"],
                                             secret_key=key["secret_access_key"]))
               for n in (n3, n2)}
    for via, client in clients.items():
        for bucket in ("fresh-admin", "fresh-s3"):
            use_at_once(client, bucket, f"obj-{via}", via)
    # A grant node 3 has not seen, on a bucket it has, for a key it has: its local copy
    # denies, the second look at a quorum grants (GET, then PUT and HeadBucket).
    n1.s3().put_object(Bucket="fresh-denial", Key="granted", Body=b"g")
    assert n3.s3().get_object(Bucket="fresh-denial", Key="granted")["Body"].read() == b"g"
    use_at_once(n3.s3(), "fresh-denial", "granted-obj", n3.name)
    # The admin API of node 3 finds them too.
    assert n3.admin("GET", f"/v1/keys/{key['access_key_id']}")["access_key_id"] == \
        key["access_key_id"]

    # Revoked through node 1 while every node is up: refused through the others at once.
    n1.admin("POST", "/v1/permissions/deny", {
        "bucket_id": b["id"], "access_key_id": key["access_key_id"],
        "permissions": {"read": True, "write": True, "owner": True}})
    start = time.monotonic()
    for via, client in clients.items():
        wait_until(lambda: denied(client, "fresh-admin"), REVOCATION_BOUND_REACHABLE_S,
                   f"the revoked grant to be refused through {via}")
    print(f"revocation refused everywhere after {time.monotonic() - start:.2f}s")

    # Revoked while node 3 is down: node 3 may honour its stale grant only until its first
    # anti-entropy round once back (it runs one at start; interval 2 s from now on).
    c.stop(n3)
    s3_bucket = n1.admin("GET", "/v1/buckets?name=fresh-s3")
    n1.admin("POST", "/v1/permissions/deny", {
        "bucket_id": s3_bucket["id"], "access_key_id": key["access_key_id"],
        "permissions": {"read": True, "write": True, "owner": True}})
    n3.update_settings(**{"background.anti_entropy_interval_secs": 2})
    c.restart(n3)
    start = time.monotonic()
    wait_until(lambda: denied(clients[n3.name], "fresh-s3"), REVOCATION_BOUND_AFTER_RESTART_S,
               "the grant revoked while node 3 was down to be refused through it")
    print(f"revocation reached the restarted node {time.monotonic() - start:.2f}s after start")


@pytest.mark.timeout(300)
def test_a_node_without_a_role_serves_at_once_and_says_it_is_not_ready(make_cluster):
    c = make_cluster()
    version = c.nodes[0].layout()["version"]
    n4 = c.new_node("dc1", start=True)
    wait_until(lambda: n4.status()["layout_version"] >= version, 30, "node 4 to get the layout")
    c.wait_all_up(c.nodes)
    # Stores nothing (no role): every key and bucket comes from the nodes that have them.
    use_at_once(n4.s3(), c.bucket, "through-node4", n4.name)
    assert c.nodes[0].s3().get_object(Bucket=c.bucket, Key="through-node4")["Body"].read() == \
        f"through-node4 through {n4.name}".encode()
    code, body = ready(n4)
    assert code == 503 and "no role" in body, (code, body)
    assert ready(c.nodes[0]) == (200, "ready\n")

    # As a gateway in the layout it becomes ready, and still serves.
    c.change_layout([(n4, c.role(n4, capacity=None))])
    wait_until(lambda: ready(n4)[0] == 200, 30, "the gateway to be ready")
    use_at_once(n4.s3(), c.bucket, "through-gateway", n4.name)


@pytest.mark.timeout(240)
def test_ready_needs_a_layout_role_and_a_quorum(make_cluster):
    c = make_cluster(start=False)
    c.start_nodes(c.nodes)
    c.wait_all_up(c.nodes)
    for n in c.nodes:
        code, body = ready(n)
        assert code == 503 and "layout" in body, (n.name, code, body)
    c.change_layout([(n, c.role(n)) for n in c.nodes])
    wait_until(lambda: all(ready(n)[0] == 200 for n in c.nodes), 30, "every node to be ready")

    # Two of three down: no partition of the survivor has a quorum.
    n1, n2, n3 = c.nodes
    c.stop(n2)
    c.stop(n3)
    wait_until(lambda: ready(n1)[0] == 503, 30, "the lone survivor to be not ready")
    assert "quorum" in ready(n1)[1]
    c.restart(n2)
    wait_until(lambda: ready(n1)[0] == 200, 30, "a quorum to make node 1 ready again")
