"""3 nodes in 3 zones: what is written through one node reads back, byte-identical, through
every other node, and every node lists the same objects."""

from __future__ import annotations

import pytest

from .harness import MiB, Ledger, list_keys, random_body, wait_chunks_everywhere


@pytest.mark.timeout(120)
def test_write_through_one_node_read_through_every_other(make_cluster):
    cluster = make_cluster(nodes=3, zones=3)
    n1, n2, n3 = cluster.nodes
    assert [n.zone for n in cluster.nodes] == ["dc1", "dc2", "dc3"]
    roles = {r["node_id"]: r["role"]["zone"] for r in n1.layout()["roles"]}
    assert roles == {n.node_id: n.zone for n in cluster.nodes}, roles

    ledger = Ledger()
    writer = n1.s3()
    for size in (0, 1, 4_000, 8 * 1024, 8 * 1024 + 1, 300_000, MiB, 3 * MiB + 5):
        assert ledger.put(writer, cluster.bucket, f"obj/{size}", random_body(size), via=n1.name)
    # A multipart upload through node 1 too: two parts, the first over the chunk size.
    parts = [random_body(5 * MiB), random_body(123_456)]
    up = writer.create_multipart_upload(Bucket=cluster.bucket, Key="obj/multipart")
    etags = [writer.upload_part(Bucket=cluster.bucket, Key="obj/multipart", PartNumber=i + 1,
                                UploadId=up["UploadId"], Body=p)["ETag"]
             for i, p in enumerate(parts)]
    writer.complete_multipart_upload(
        Bucket=cluster.bucket, Key="obj/multipart", UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
    ledger.written += 1
    ledger.acked["obj/multipart"] = b"".join(parts)
    assert not ledger.errors, ledger.errors

    # Read-after-write through the other nodes, right away (quorum reads), then through all.
    ledger.verify({n2.name: n2.s3(), n3.name: n3.s3()}, cluster.bucket)
    # Every chunk of a single-PUT object ends up on all three nodes (rf 3 over 3 nodes).
    single = Ledger(acked={k: v for k, v in ledger.acked.items() if k != "obj/multipart"})
    wait_chunks_everywhere(cluster.nodes, single.expected_chunks(), timeout=60)

    listings = {n.name: list_keys(n.s3(), cluster.bucket) for n in cluster.nodes}
    expected = sorted(ledger.acked)
    for name, listing in listings.items():
        assert [k for k, _, _ in listing] == expected, (name, listing)
        assert listing == listings[n1.name], f"{name} lists differently from {n1.name}"
    sizes = {k: s for k, s, _ in listings[n1.name]}
    assert sizes == {k: len(v) for k, v in ledger.acked.items()}
