"""A node's disk fills up (a small tmpfs under its data_dir or metadata_dir): writes through
every node still succeed (the other two replicas make the quorum) or fail with a clean S3
5xx error, never a hang, a crash or a corrupted object; once space returns the node catches
up and every acknowledged object reads back whole through every node."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from storaged_proc import wait_until

from .harness import MiB, Ledger, Load, chunk_digests, missing_chunks, wait_chunks_everywhere

# Bodies of the writes made while a disk is full: inline ones and one- and three-chunk ones.
SIZES = (100, 5_000, 700 * 1024, MiB + 17, 2 * MiB + 12_345)


def fill(directory: Path) -> Path:
    """Fills the filesystem of `directory` with one file until ENOSPC; returns the file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 64 << 10, 4 << 10, 512, 1):
            block = b"\xa5" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    st = os.statvfs(directory)
    assert st.f_bavail * st.f_frsize < 64 << 10, f"{directory} still has room"
    return filler


def bad_failures(ledger: Ledger) -> list[str]:
    """Failed writes that are not a clean S3 5xx answer (an error code in XML)."""
    from botocore.exceptions import ClientError

    bad = []
    for key, via, exc in ledger.failures:
        if isinstance(exc, ClientError):
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            code = exc.response.get("Error", {}).get("Code")
            if 500 <= status < 600 and code:
                continue
        bad.append(f"PUT {key} via {via}: {exc!r}")
    return bad


def assert_chunk_store_intact(node, expected: set[str]) -> None:
    """Every chunk file of `node` holds the bytes of an acknowledged object's chunk (the
    test writes only random bodies: nothing else can be there), and no temporary file of a
    failed write was left behind."""
    stray = [p for p in node.data_dir.rglob("*") if p.is_file() and ".tmp." in p.name]
    assert not stray, f"{node.name} kept temporary chunk files: {stray[:5]}"
    foreign = [str(p) for p in node.chunk_files().values()
               if hashlib.sha256(p.read_bytes()).hexdigest() not in expected]
    assert not foreign, f"{node.name} holds chunk files with unexpected bytes: {foreign[:5]}"


def write_while_full(cluster, ledger: Ledger, prefix: str) -> None:
    clients = [(n.name, n.s3(read_timeout=20)) for n in cluster.nodes]
    Load(ledger, clients, cluster.bucket, threads=3, per_thread=5, prefix=prefix,
         sizes=SIZES).start().join(90)


@pytest.mark.timeout(150)
def test_data_dir_full(mounts, make_cluster):
    cluster = make_cluster(nodes=3, zones=3, start=False)
    n1, n2, n3 = cluster.nodes
    mounts.tmpfs(n3.data_dir, "8m")
    cluster.start()
    ledger = Ledger()
    Load(ledger, [(n.name, n.s3()) for n in cluster.nodes], cluster.bucket, threads=2,
         per_thread=2, prefix="before", sizes=(100, 700 * 1024)).start().join()
    assert not ledger.errors, ledger.errors
    wait_chunks_everywhere(cluster.nodes, ledger.expected_chunks(), timeout=30)
    before = set(ledger.acked)

    filler = fill(n3.data_dir)
    write_while_full(cluster, ledger, "full")
    n3.check_alive("its data_dir was full")
    assert not bad_failures(ledger), "writes failed uncleanly:\n" + "\n".join(
        bad_failures(ledger))
    during = {k: b for k, b in ledger.acked.items() if k not in before}
    assert len(during) >= 10, f"too few writes went through: {ledger.errors}"
    new_chunks = {d for body in during.values() for d in chunk_digests(body)}
    assert missing_chunks(n3, new_chunks), "node 3 stored chunks on a full disk?"
    # Reads through the full node are whole (its peers serve the chunks it lacks).
    ledger.verify({n.name: n.s3() for n in cluster.nodes}, cluster.bucket)

    # Space returns: the node fetches what it missed, and holds nothing corrupt.
    filler.unlink()
    mounts.resize(n3.data_dir, "64m")
    wait_chunks_everywhere([n3], ledger.expected_chunks(), timeout=60)
    assert_chunk_store_intact(n3, ledger.expected_chunks())
    failed = len(ledger.errors)
    write_while_full(cluster, ledger, "after")  # not full any more: every write succeeds
    assert not ledger.errors[failed:], ledger.errors[failed:]
    wait_chunks_everywhere(cluster.nodes, ledger.expected_chunks(), timeout=60)
    ledger.verify({n.name: n.s3() for n in cluster.nodes}, cluster.bucket)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("reserve", ["reserve", "no-reserve"])
def test_metadata_dir_full(mounts, make_cluster, reserve):
    """With its free-space reserve the node refuses writes before redb meets the full disk
    and stays up; without it (the test fault `no_metadata_reserve`), redb fails a write and
    the node stops with one error line, then starts again once space returns."""
    cluster = make_cluster(nodes=3, zones=3, start=False)
    n1, n2, n3 = cluster.nodes
    if reserve == "no-reserve":
        n3.extra_env["STORAGED_TEST_FAULT"] = "no_metadata_reserve"
    meta = Path(str(n3.settings["metadata_dir"]))
    mounts.tmpfs(meta, "64m")
    cluster.start()
    ledger = Ledger()
    Load(ledger, [(n.name, n.s3()) for n in cluster.nodes], cluster.bucket, threads=2,
         per_thread=2, prefix="before").start().join()
    assert not ledger.errors, ledger.errors

    filler = fill(meta)
    write_while_full(cluster, ledger, "full")
    if reserve == "no-reserve":
        wait_until(lambda: not n3.alive(), 30, "node 3 to stop on its failed store")
    bad = bad_failures(ledger)
    if reserve == "reserve":
        n3.check_alive("its metadata disk was full")
        assert not bad, "writes failed uncleanly:\n" + "\n".join(bad)
    else:
        # It stops cleanly: one error line naming its metadata store, no panic; writes
        # through it fail cleanly or by a closed connection, the others succeed.
        log = n3.log_path.read_text(errors="replace")
        assert "panicked" not in log, n3.log_tail()
        last = log.strip().splitlines()[-1]
        assert last.startswith("storaged: error: metadata store") and "db.redb" in last, \
            n3.log_tail()
        assert n3.proc and n3.proc.returncode == 1, n3.proc.returncode if n3.proc else None
        via_others = [b for b in bad if f"via {n3.name}" not in b]
        assert not via_others, "writes through the other nodes failed:\n" + "\n".join(via_others)
    n1.check_alive("node 3's metadata disk was full")
    n2.check_alive("node 3's metadata disk was full")
    assert len(ledger.acked) >= 10, f"too few writes went through: {ledger.errors}"
    # Whatever was acknowledged reads back through the nodes that are up.
    ledger.verify({n.name: n.s3() for n in cluster.nodes if n.alive()}, cluster.bucket)

    # Space returns: the node takes writes again (restarted first if it stopped).
    filler.unlink()
    if not n3.alive():
        n3.extra_env.pop("STORAGED_TEST_FAULT", None)
        cluster.restart(n3)
    cluster.wait_all_up(cluster.nodes)

    def n3_takes_writes() -> bool:
        return ledger.put(n3.s3(), cluster.bucket, f"probe/{len(ledger.errors)}", b"p" * 100,
                          via=n3.name)

    wait_until(n3_takes_writes, 30, "node 3 to take writes again once space returned")
    failed = len(ledger.errors)
    write_while_full(cluster, ledger, "after")
    assert not ledger.errors[failed:], ledger.errors[failed:]
    cluster.wait_fully_replicated(60)
    ledger.verify({n.name: n.s3() for n in cluster.nodes}, cluster.bucket)
    # Its metadata store is intact: a clean stop and start opens it and serves the data.
    cluster.stop(n3)
    cluster.restart(n3)
    ledger.verify({n3.name: n3.s3()}, cluster.bucket)
    assert "panicked" not in n3.log_path.read_text(errors="replace"), n3.log_tail()
