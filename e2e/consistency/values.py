"""Object bodies that name the write they came from.

Every body starts with a header `SDCHK1 <value id> <size>\n` followed by bytes drawn from a
PRNG seeded by the value id, so a read can be traced to exactly one write and checked byte
for byte (a torn, truncated or mixed body is caught), and the bytes are incompressible (the
daemon stores them as plain chunk files whose sha256 the test can find on disk).
"""

from __future__ import annotations

import hashlib
import random

MAGIC = b"SDCHK1 "
BLOCK_SIZE = 1024 * 1024  # the daemon's default `block_size`
INLINE_MAX = 8 * 1024  # bodies up to this size live in the metadata, without chunks
PART_SIZE = 5 * 1024 * 1024  # multipart uploads: every part but the last has this size


def make_body(value_id: str, size: int) -> bytes:
    header = MAGIC + f"{value_id} {size}\n".encode()
    assert size >= len(header), (value_id, size)
    rest = random.Random(value_id).randbytes(size - len(header))
    return header + rest


def body_origin(body: bytes) -> str | None:
    """The value id a body names, if the body is exactly what `make_body` made for it."""
    if not body.startswith(MAGIC):
        return None
    end = body.find(b"\n", 0, 200)
    if end < 0:
        return None
    try:
        value_id, size_s = body[len(MAGIC) : end].decode().split(" ")
        size = int(size_s)
    except ValueError:
        return None
    if size != len(body) or make_body(value_id, size) != body:
        return None
    return value_id


def chunk_digests(body: bytes, part_sizes: list[int] | None = None) -> list[str]:
    """sha256 of each chunk the daemon stores for `body`: none when inline, else each part
    (a single PUT is one part) cut into `BLOCK_SIZE` chunks."""
    if part_sizes is None:
        if len(body) <= INLINE_MAX:
            return []
        part_sizes = [len(body)]
    out, at = [], 0
    for size in part_sizes:
        part = body[at : at + size]
        at += size
        out += [hashlib.sha256(part[i : i + BLOCK_SIZE]).hexdigest()
                for i in range(0, len(part), BLOCK_SIZE)]
    return out


def multipart_sizes(size: int) -> list[int]:
    sizes = []
    while size > PART_SIZE:
        sizes.append(PART_SIZE)
        size -= PART_SIZE
    return sizes + [size]
